//! A local S3 server (moto, from PyPI) on a free loopback port, shared by
//! every test of one test binary and killed when the binary exits.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// The running S3 server.
pub struct MotoServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl MotoServer {
    /// Its endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Bucket every S3 test uses (each test takes its own prefix).
pub const S3_BUCKET: &str = "sopfs-test";

/// Starts moto once per test binary, creates the bucket, and points the AWS
/// environment (inherited by child processes) at it.
pub fn moto() -> &'static MotoServer {
    static SERVER: std::sync::OnceLock<MotoServer> = std::sync::OnceLock::new();
    SERVER.get_or_init(|| {
        let port = crate::free_port();
        let child = std::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto_server must be installed (pip install 'moto[server]')");
        crate::kill_at_exit(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        // Creating the bucket doubles as the readiness probe.
        while !create_bucket(port) {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
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

fn create_bucket(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let req = format!(
        "PUT /{S3_BUCKET} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let mut resp = String::new();
    s.write_all(req.as_bytes()).is_ok()
        && s.read_to_string(&mut resp).is_ok()
        && resp.starts_with("HTTP/1.1 200")
}
