//! A fault-injecting JSON-RPC proxy in front of a bundler, to test what the client does when the
//! bundler lacks a method, answers 503, or the answer to a request that *did* reach it is lost.
//!
//! Minimal HTTP/1.1: one request per connection (`connection: close`), `content-length` bodies,
//! which is what `reqwest` sends to it. Every request is recorded ([`Proxy::seen`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What to do with requests of one JSON-RPC method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer JSON-RPC -32601 "method not found" without forwarding.
    Hide,
    /// Answer HTTP 503 without forwarding, for the first `n` requests of the method.
    Unavailable(u32),
    /// Forward the first `n` requests of the method, then close the connection without
    /// answering (the bundler acted; the client cannot know).
    LoseAnswer(u32),
}

/// A request the proxy saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// The JSON-RPC method.
    pub method: String,
    /// Its params.
    pub params: Value,
    /// Whether it was forwarded to the bundler.
    pub forwarded: bool,
}

#[derive(Debug, Default)]
struct State {
    faults: HashMap<String, Fault>,
    counts: HashMap<String, u32>,
    seen: Vec<Seen>,
}

/// A running proxy (stopped when dropped).
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `upstream` on a free port of 127.0.0.1 with the given faults.
    pub async fn start(upstream: &str, faults: &[(&str, Fault)]) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            faults: faults.iter().map(|(m, f)| ((*m).to_owned(), *f)).collect(),
            ..State::default()
        }));
        let upstream: reqwest::Url = upstream
            .parse()
            .map_err(|e| std::io::Error::other(format!("{e}")))?;
        let http = reqwest::Client::new();
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (st, http, upstream) = (Arc::clone(&st), http.clone(), upstream.clone());
                tokio::spawn(async move {
                    let _ = serve(sock, st, http, upstream).await;
                });
            }
        });
        Ok(Self { addr, state, task })
    }

    /// The proxy's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state
            .lock()
            .map(|s| s.seen.clone())
            .unwrap_or_default()
    }

    /// The requests of `method` seen so far.
    pub fn seen_of(&self, method: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == method)
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum Action {
    Hide,
    Unavailable,
    Forward { answer: bool },
}

async fn serve(
    mut sock: TcpStream,
    state: Arc<Mutex<State>>,
    http: reqwest::Client,
    upstream: reqwest::Url,
) -> std::io::Result<()> {
    let body = read_request(&mut sock).await?;
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let method = json["method"].as_str().unwrap_or("").to_owned();
    let action = {
        let mut st = state
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        let n = {
            let c = st.counts.entry(method.clone()).or_insert(0);
            *c += 1;
            *c
        };
        let action = match st.faults.get(&method) {
            Some(Fault::Hide) => Action::Hide,
            Some(Fault::Unavailable(k)) if n <= *k => Action::Unavailable,
            Some(Fault::LoseAnswer(k)) if n <= *k => Action::Forward { answer: false },
            _ => Action::Forward { answer: true },
        };
        st.seen.push(Seen {
            method: method.clone(),
            params: json["params"].clone(),
            forwarded: matches!(action, Action::Forward { .. }),
        });
        action
    };
    match action {
        Action::Hide => {
            let reply = serde_json::json!({
                "jsonrpc": "2.0", "id": json["id"],
                "error": {"code": -32601, "message": format!("Method {method} not found")}
            });
            write_response(&mut sock, 200, &serde_json::to_vec(&reply)?).await
        }
        Action::Unavailable => write_response(&mut sock, 503, b"busy").await,
        Action::Forward { answer } => {
            let response = http
                .post(upstream)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map_err(std::io::Error::other)?;
            let status = response.status().as_u16();
            let bytes = response.bytes().await.map_err(std::io::Error::other)?;
            if answer {
                write_response(&mut sock, status, &bytes).await
            } else {
                // The bundler has acted on it; the client gets nothing.
                drop(sock);
                Ok(())
            }
        }
    }
}

async fn read_request(sock: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(split) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= split + 4 + len {
                return Ok(buf[split + 4..split + 4 + len].to_vec());
            }
        }
    }
}

async fn write_response(sock: &mut TcpStream, status: u16, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(body).await?;
    sock.shutdown().await
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
