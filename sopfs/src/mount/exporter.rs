//! The Prometheus endpoint of a mount (`--metrics 127.0.0.1:PORT`): a
//! small HTTP/1.0 responder on its own thread that serves `/metrics` (and
//! `/`) with the same text as `/.sopfs/stats`.

use crate::fs::Fs;
use crate::mount::metrics::Metrics;
use anyhow::Context;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Binds `addr` now (so a taken port fails the mount) and serves scrapes
/// until the filesystem is gone.
pub fn start(addr: &str, fs: &Arc<Fs>, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("metrics address {addr}"))?;
    let fs = Arc::downgrade(fs);
    std::thread::Builder::new()
        .name("sopfs-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                if fs.strong_count() == 0 {
                    return;
                }
                if let Err(e) = answer(conn, &fs, &metrics) {
                    tracing::debug!(error = %e, "metrics scrape");
                }
            }
        })
        .context("metrics thread")?;
    Ok(())
}

fn answer(mut conn: TcpStream, fs: &Weak<Fs>, metrics: &Metrics) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    // Read the request head only; a scrape has no body.
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > 16 << 10 {
            return respond(&mut conn, "431 Request Header Fields Too Large", "");
        }
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if method != "GET" {
        return respond(&mut conn, "405 Method Not Allowed", "only GET\n");
    }
    if path != "/metrics" && path != "/" {
        return respond(&mut conn, "404 Not Found", "try /metrics\n");
    }
    let Some(fs) = fs.upgrade() else {
        return respond(&mut conn, "503 Service Unavailable", "unmounted\n");
    };
    let body = metrics.render(&fs.db().stats(), fs.db().seq());
    respond(&mut conn, "200 OK", &body)
}

fn respond(conn: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())?;
    conn.flush()
}
