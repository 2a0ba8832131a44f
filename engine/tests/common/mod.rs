//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use engine::{Db, Options, StoreLocation, TreeConfig};
use std::path::Path;

/// Options for tests: tiny nodes so splits and merges happen constantly.
pub fn small_opts() -> Options {
    Options {
        background_interval: None,
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
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut s = RedisServer { child: None, port };
        s.restart();
        s
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
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && &buf == b"+PONG\r\n"
                {
                    return;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("redis-server did not start on port {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
