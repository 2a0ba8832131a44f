//! A private `redis-server` on a free loopback port: plain, with a
//! password, or speaking only TLS (a self-signed certificate made by
//! openssl); SIGKILLed and restarted on the same port at will, killed on drop.

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running redis-server.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port on 127.0.0.1 (the TLS port for a TLS server).
    pub port: u16,
    password: Option<String>,
    tls: bool,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// A server with no persistence and no password.
    pub fn start() -> RedisServer {
        Self::launch(None, false).expect("redis-server did not start on any free port")
    }

    /// A server that requires `password` (its URL carries it).
    pub fn with_password(password: &str) -> RedisServer {
        Self::launch(Some(password), false).expect("redis-server did not start on any free port")
    }

    /// A server speaking only TLS and requiring `password`; None when
    /// openssl is missing or redis-server was built without TLS.
    pub fn tls(password: &str) -> Option<RedisServer> {
        Self::launch(Some(password), true)
    }

    fn launch(password: Option<&str>, tls: bool) -> Option<RedisServer> {
        let dir = tempfile::tempdir().expect("tempdir");
        if tls && !make_certificate(&dir) {
            return None;
        }
        let mut s = RedisServer {
            child: None,
            port: 0,
            password: password.map(str::to_string),
            tls,
            dir,
        };
        // Parallel tests can pick one free port twice: the server that lost
        // it exits, so a server counts only once it answers as itself.
        for _ in 0..20 {
            s.port = crate::free_port();
            if s.spawn() {
                return Some(s);
            }
        }
        None
    }

    /// The URL clients use: `redis://` (or `rediss://...#insecure` for TLS,
    /// which trusts the self-signed certificate), with the password.
    pub fn url(&self) -> String {
        let auth = self
            .password
            .as_ref()
            .map(|p| format!(":{p}@"))
            .unwrap_or_default();
        if self.tls {
            format!("rediss://{auth}127.0.0.1:{}/#insecure", self.port)
        } else {
            format!("redis://{auth}127.0.0.1:{}/", self.port)
        }
    }

    /// The certificate of a TLS server (its own CA).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
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
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        if self.tls {
            let (cert, key) = (self.ca_file(), self.dir.path().join("key.pem"));
            cmd.args([
                "--port",
                "0",
                "--tls-port",
                &port,
                "--tls-auth-clients",
                "no",
            ])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&cert);
        } else {
            cmd.args(["--port", &port, "--protected-mode", "yes"]);
        }
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| c.try_wait().ok().flatten().is_some());
            if exited {
                self.child = None;
                return false;
            }
            let ours = if self.tls {
                // No TLS client here: a listener on the port while our
                // child lives is taken as ours.
                std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            } else {
                answering_pid(self.port, self.password.as_deref()) == Some(pid)
            };
            if ours {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A self-signed certificate for 127.0.0.1 in `dir` (cert.pem, key.pem).
fn make_certificate(dir: &tempfile::TempDir) -> bool {
    Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(dir.path().join("key.pem"))
        .arg("-out")
        .arg(dir.path().join("cert.pem"))
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The process id of the plain redis-server answering on `port`.
fn answering_pid(port: u16, password: Option<&str>) -> Option<u32> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    if let Some(p) = password {
        s.write_all(format!("AUTH {p}\r\n").as_bytes()).ok()?;
        let mut ok = [0u8; 5];
        s.read_exact(&mut ok).ok()?;
        if &ok != b"+OK\r\n" {
            return None;
        }
    }
    s.write_all(b"INFO server\r\n").ok()?;
    std::io::BufReader::new(s)
        .lines()
        .map_while(|l| l.ok())
        .find_map(|l| l.strip_prefix("process_id:")?.trim().parse().ok())
}
