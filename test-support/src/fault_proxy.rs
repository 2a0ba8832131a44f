//! An HTTP proxy in front of the local S3 server that misbehaves as S3 and
//! networks do, one request in `every`: 503 SlowDown, 500, a connection
//! reset before the request reaches the server, a reset after the server
//! carried it out (the client never learns that its PUT landed: the
//! ambiguous write), a slow answer, or a full outage (every connection
//! dropped). Each request is forwarded on its own upstream connection and
//! answered with `Connection: close`, so a fault never leaks into the next
//! request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the proxy does to the requests it picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Every request passes.
    None = 0,
    /// 503 with S3's SlowDown body.
    SlowDown,
    /// 500 InternalError.
    ServerError,
    /// The connection is closed before the request is forwarded.
    ResetBefore,
    /// The request is carried out, then the connection is closed unanswered.
    ResetAfter,
    /// The answer comes after two seconds.
    Slow,
    /// Every request fails: the connection is closed at once.
    Outage,
    /// Requests pass with their conditions (`If-None-Match`, `If-Match`)
    /// removed: a server that ignores them, and overwrites.
    NoConditions,
}

impl Fault {
    /// Every fault that hits one request in `every`.
    pub const INTERMITTENT: [Fault; 5] = [
        Fault::SlowDown,
        Fault::ServerError,
        Fault::ResetBefore,
        Fault::ResetAfter,
        Fault::Slow,
    ];

    fn from_u8(v: u8) -> Fault {
        match v {
            1 => Fault::SlowDown,
            2 => Fault::ServerError,
            3 => Fault::ResetBefore,
            4 => Fault::ResetAfter,
            5 => Fault::Slow,
            6 => Fault::Outage,
            7 => Fault::NoConditions,
            _ => Fault::None,
        }
    }
}

struct State {
    upstream: u16,
    fault: AtomicU8,
    every: u64,
    requests: AtomicU64,
    faulted: AtomicU64,
}

/// A running proxy (its threads live as long as the test binary).
pub struct FaultProxy {
    /// The port clients use (as the S3 endpoint).
    pub port: u16,
    state: Arc<State>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to 127.0.0.1:`upstream`,
    /// faulting one request in `every` once a fault is set.
    pub fn start(upstream: u16, every: u64) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(State {
            upstream,
            fault: AtomicU8::new(0),
            every: every.max(1),
            requests: AtomicU64::new(0),
            faulted: AtomicU64::new(0),
        });
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = serve(&s, conn);
                });
            }
        });
        FaultProxy { port, state }
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sets the fault from now on.
    pub fn set(&self, fault: Fault) {
        self.state.fault.store(fault as u8, Ordering::SeqCst);
    }

    /// Requests seen, and requests faulted.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.state.requests.load(Ordering::SeqCst),
            self.state.faulted.load(Ordering::SeqCst),
        )
    }
}

/// Reads one HTTP/1.1 request (head and Content-Length body).
fn read_request(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<(Vec<String>, Vec<u8>)>> {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            break;
        }
        head.push(line);
    }
    let len = head
        .iter()
        .find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(Some((head, body)))
}

/// `head` with any `Connection` header replaced by `Connection: close`.
fn closing(head: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for h in head {
        let is_conn = h
            .split_once(':')
            .is_some_and(|(k, _)| k.eq_ignore_ascii_case("connection"));
        if !is_conn {
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

fn error_reply(status: &str, code: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected</Message></Error>"
    );
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn serve(s: &State, client: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    let Some((head, body)) = read_request(&mut reader)? else {
        return Ok(());
    };
    let n = s.requests.fetch_add(1, Ordering::SeqCst);
    let fault = Fault::from_u8(s.fault.load(Ordering::SeqCst));
    let hit = match fault {
        Fault::None | Fault::NoConditions => false,
        Fault::Outage => true,
        _ => n.is_multiple_of(s.every),
    };
    if hit {
        s.faulted.fetch_add(1, Ordering::SeqCst);
        match fault {
            Fault::SlowDown => {
                return client.write_all(&error_reply("503 Slow Down", "SlowDown"));
            }
            Fault::ServerError => {
                return client
                    .write_all(&error_reply("500 Internal Server Error", "InternalError"));
            }
            Fault::ResetBefore | Fault::Outage => {
                let _ = client.shutdown(std::net::Shutdown::Both);
                return Ok(());
            }
            Fault::Slow => std::thread::sleep(Duration::from_secs(2)),
            Fault::ResetAfter | Fault::None | Fault::NoConditions => {}
        }
    }
    let head: Vec<String> = if fault == Fault::NoConditions {
        head.into_iter()
            .filter(|h| {
                !h.split_once(':').is_some_and(|(k, _)| {
                    k.eq_ignore_ascii_case("if-none-match") || k.eq_ignore_ascii_case("if-match")
                })
            })
            .collect()
    } else {
        head
    };
    let mut up = TcpStream::connect(("127.0.0.1", s.upstream))?;
    up.write_all(&closing(&head))?;
    up.write_all(&body)?;
    let mut reply = Vec::new();
    up.read_to_end(&mut reply)?;
    if hit && fault == Fault::ResetAfter {
        let _ = client.shutdown(std::net::Shutdown::Both);
        return Ok(());
    }
    // The upstream was asked to close, so its answer is complete at EOF;
    // the client is told the same.
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(reply.len());
    let text = String::from_utf8_lossy(&reply[..split]).into_owned();
    let lines: Vec<String> = text.split("\r\n").map(str::to_string).collect();
    client.write_all(&closing(&lines))?;
    client.write_all(reply.get(split + 4..).unwrap_or(&[]))?;
    Ok(())
}
