//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

pub mod faulty;

use engine::{Db, Options, StoreLocation, TreeConfig};
use std::path::Path;

/// Options for tests: no background pass, and log segments of a few
/// records so sealing and starting segments happen constantly.
pub fn small_opts() -> Options {
    Options {
        background_interval: None,
        segment_bytes: 16 << 10,
        ..Options::default()
    }
}

/// A tree config with `slots` per node and a low inline threshold.
pub fn small_tree(slots: u32) -> TreeConfig {
    TreeConfig {
        slots,
        inline_max: 48,
    }
}

/// Opens a volume in a local folder.
pub fn open_local(dir: &Path) -> Db {
    Db::open(StoreLocation::Local(dir.to_path_buf()), small_opts()).expect("open volume")
}

/// A private redis-server on a free loopback port, killed on drop.
pub struct RedisServer {
    child: Option<std::process::Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl RedisServer {
    /// Starts a server with no persistence and waits until it answers.
    /// Parallel tests can pick one free port twice: the server that lost it
    /// exits, so a server is accepted only when it answers with its own pid.
    pub fn start() -> RedisServer {
        for _ in 0..20 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let mut s = RedisServer { child: None, port };
            if s.spawn() {
                return s;
            }
        }
        panic!("redis-server did not start on any free port");
    }

    /// The URL workers connect to.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// SIGKILLs the server.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty: nothing was persisted).
    pub fn restart(&mut self) {
        assert!(
            self.spawn(),
            "redis-server did not start again on port {}",
            self.port
        );
    }

    /// Starts the server on `self.port`; true once it answers as itself.
    fn spawn(&mut self) -> bool {
        self.kill();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        let pid = child.id();
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| c.try_wait().ok().flatten().is_some());
            if exited {
                self.child = None;
                return false;
            }
            if answering_pid(self.port) == Some(pid) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.kill();
        false
    }
}

/// The process id of the redis-server answering on `port`.
fn answering_pid(port: u16) -> Option<u32> {
    use std::io::{BufRead, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .ok()?;
    s.write_all(b"INFO server\r\n").ok()?;
    std::io::BufReader::new(s)
        .lines()
        .map_while(|l| l.ok())
        .find_map(|l| l.strip_prefix("process_id:")?.trim().parse().ok())
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A local S3 server (moto, from PyPI) on a free loopback port, shared by
/// every test of one test binary; killed when the binary exits.
pub struct MotoServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// Bucket every S3 test uses (each test takes its own prefix).
pub const S3_BUCKET: &str = "sopfs-test";

/// Starts moto once per test binary, creates the bucket, and points the AWS
/// environment (inherited by worker processes) at it.
pub fn moto() -> &'static MotoServer {
    static SERVER: std::sync::OnceLock<MotoServer> = std::sync::OnceLock::new();
    SERVER.get_or_init(|| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = std::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto_server must be installed (pip install 'moto[server]')");
        // Reap the server when the test binary exits: moto is killed with it.
        KILL_AT_EXIT.lock().expect("lock").push(child);
        extern "C" fn kill_children() {
            if let Ok(mut children) = KILL_AT_EXIT.lock() {
                for c in children.iter_mut() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
        unsafe_atexit(kill_children);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            // Creating the bucket doubles as the readiness probe.
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::{Read, Write};
                let req = format!(
                    "PUT /{S3_BUCKET} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let mut resp = String::new();
                if s.write_all(req.as_bytes()).is_ok() && s.read_to_string(&mut resp).is_ok() && resp.starts_with("HTTP/1.1 200") {
                    break;
                }
            }
            assert!(std::time::Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        for (k, v) in [
            ("AWS_ACCESS_KEY_ID", "testing".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
        ] {
            // Set once, before any S3 store is opened in this process.
            std::env::set_var(k, v);
        }
        MotoServer { port }
    })
}

static KILL_AT_EXIT: std::sync::Mutex<Vec<std::process::Child>> = std::sync::Mutex::new(Vec::new());

fn unsafe_atexit(f: extern "C" fn()) {
    // libc's atexit is the only hook that runs when the test harness exits.
    #[allow(unsafe_code)]
    // SAFETY: registers a plain function with no captured state.
    unsafe {
        libc::atexit(f);
    }
}
