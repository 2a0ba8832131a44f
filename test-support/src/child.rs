//! Worker processes for crash tests: the test binary re-run as a child that
//! runs one entry test (a no-op unless its environment variable is set),
//! prints `ACK n` after each commit that returned, and is SIGKILLed at will.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

/// Tells the parent that commit `n` returned (a line on standard output).
pub fn ack(n: u64) {
    let out = std::io::stdout();
    let mut o = out.lock();
    let _ = writeln!(o, "ACK {n}");
    let _ = o.flush();
}

/// A running worker and the acks it prints.
pub struct Worker {
    /// The child process.
    pub child: Child,
    /// Each `ACK n` it printed, as it prints it.
    pub acks: mpsc::Receiver<u64>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    /// Re-runs this test binary with only test `entry`, with `env` set (the
    /// entry's cue that it is the child).
    pub fn spawn(entry: &str, env: &[(&str, String)]) -> Worker {
        let exe = std::env::current_exe().expect("test binary");
        let mut cmd = Command::new(exe);
        cmd.args(["--exact", entry, "--nocapture", "--test-threads=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn worker");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, acks) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The first ack shares a line with the test harness's banner.
                if let Some(n) = line
                    .rsplit_once("ACK ")
                    .and_then(|(_, n)| n.parse::<u64>().ok())
                {
                    let _ = tx.send(n);
                }
            }
        });
        Worker {
            child,
            acks,
            reader: Some(reader),
        }
    }

    /// SIGKILLs it and waits until every ack it printed has been received.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}
