//! A fault-injecting JSON-RPC proxy in front of a bundler, to test what the client does when the
//! bundler lacks a method, answers 503, or the answer to a request that *did* reach it is lost.
//!
//! Two ways to script it: standing [`Fault`]s per method (given at start), and a queue of
//! [`Step`]s per method ([`Proxy::script`], at any time): each request of the method takes the
//! next step (answer a scripted JSON-RPC error or result, 503, forward and then lie, forward and
//! drop the answer, stall); once the queue is empty the standing fault, else pass-through.
//!
//! Minimal HTTP/1.1: one request per connection (`connection: close`), `content-length` bodies,
//! which is what `reqwest` sends to it. Every request is recorded ([`Proxy::seen`]).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// One scripted answer to one request of a method (see [`Proxy::script`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Forward it and pass the bundler's answer back.
    Pass,
    /// Answer HTTP 503 without forwarding.
    Unavailable,
    /// Forward it, then answer HTTP 503 (the bundler acted; the client cannot know).
    ForwardThenUnavailable,
    /// Forward it, then close the connection without answering.
    ForwardThenDrop,
    /// Answer this JSON-RPC error without forwarding.
    Error {
        /// JSON-RPC code.
        code: i64,
        /// Message.
        message: String,
    },
    /// Forward it, then answer this JSON-RPC error instead of the bundler's answer.
    ForwardThenError {
        /// JSON-RPC code.
        code: i64,
        /// Message.
        message: String,
    },
    /// Answer this JSON-RPC result without forwarding.
    Result(Value),
    /// Forward it, then answer this JSON-RPC result instead of the bundler's.
    ForwardThenResult(Value),
    /// Hold the connection this long without forwarding, then close it (a timeout for a client
    /// with a shorter one).
    Stall(Duration),
}

impl Step {
    /// The bundler's "already known" (Alto's words and code).
    pub fn already_known() -> Self {
        Step::Error {
            code: -32602,
            message: "Already known".into(),
        }
    }

    /// An AA25 refusal (Alto's words and code).
    pub fn aa25() -> Self {
        Step::Error {
            code: -32500,
            message: "UserOperation failed validation with reason: AA25 invalid account nonce"
                .into(),
        }
    }
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
    /// The scripted step it took, if any.
    pub step: Option<Step>,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Debug, Default)]
struct State {
    faults: HashMap<String, Fault>,
    counts: HashMap<String, u32>,
    scripts: HashMap<String, VecDeque<Step>>,
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

    /// Appends `steps` to the queue of `method`: its next requests take them in order (then the
    /// standing fault, else pass-through).
    pub fn script(&self, method: &str, steps: impl IntoIterator<Item = Step>) {
        if let Ok(mut st) = self.state.lock() {
            st.scripts
                .entry(method.to_owned())
                .or_default()
                .extend(steps);
        }
    }

    /// Forgets the steps of `method` not taken yet.
    pub fn clear_script(&self, method: &str) {
        if let Ok(mut st) = self.state.lock() {
            st.scripts.remove(method);
        }
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
    Scripted(Step),
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
        let scripted = st.scripts.get_mut(&method).and_then(VecDeque::pop_front);
        let action = match (scripted, st.faults.get(&method)) {
            (Some(step), _) => Action::Scripted(step),
            (None, Some(Fault::Hide)) => Action::Hide,
            (None, Some(Fault::Unavailable(k))) if n <= *k => Action::Unavailable,
            (None, Some(Fault::LoseAnswer(k))) if n <= *k => Action::Forward { answer: false },
            _ => Action::Forward { answer: true },
        };
        let forwarded = match &action {
            Action::Forward { .. } => true,
            Action::Scripted(step) => matches!(
                step,
                Step::Pass
                    | Step::ForwardThenUnavailable
                    | Step::ForwardThenDrop
                    | Step::ForwardThenError { .. }
                    | Step::ForwardThenResult(_)
            ),
            _ => false,
        };
        st.seen.push(Seen {
            method: method.clone(),
            params: json["params"].clone(),
            forwarded,
            step: match &action {
                Action::Scripted(step) => Some(step.clone()),
                _ => None,
            },
            at: Instant::now(),
        });
        action
    };
    let error_reply = |code: i64, message: &str| {
        serde_json::json!({
            "jsonrpc": "2.0", "id": json["id"],
            "error": {"code": code, "message": message}
        })
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
            let (status, bytes) = forward(&http, upstream, body).await?;
            if answer {
                write_response(&mut sock, status, &bytes).await
            } else {
                // The bundler has acted on it; the client gets nothing.
                drop(sock);
                Ok(())
            }
        }
        Action::Scripted(step) => {
            let forwarded = match &step {
                Step::Pass
                | Step::ForwardThenUnavailable
                | Step::ForwardThenDrop
                | Step::ForwardThenError { .. }
                | Step::ForwardThenResult(_) => Some(forward(&http, upstream, body).await?),
                _ => None,
            };
            match step {
                Step::Pass => {
                    let (status, bytes) = forwarded.unwrap_or_default();
                    write_response(&mut sock, status, &bytes).await
                }
                Step::Unavailable | Step::ForwardThenUnavailable => {
                    write_response(&mut sock, 503, b"busy").await
                }
                Step::ForwardThenDrop => {
                    drop(sock);
                    Ok(())
                }
                Step::Error { code, message } | Step::ForwardThenError { code, message } => {
                    let reply = error_reply(code, &message);
                    write_response(&mut sock, 200, &serde_json::to_vec(&reply)?).await
                }
                Step::Result(result) | Step::ForwardThenResult(result) => {
                    let reply =
                        serde_json::json!({"jsonrpc": "2.0", "id": json["id"], "result": result});
                    write_response(&mut sock, 200, &serde_json::to_vec(&reply)?).await
                }
                Step::Stall(d) => {
                    tokio::time::sleep(d).await;
                    drop(sock);
                    Ok(())
                }
            }
        }
    }
}

async fn forward(
    http: &reqwest::Client,
    upstream: reqwest::Url,
    body: Vec<u8>,
) -> std::io::Result<(u16, Vec<u8>)> {
    let response = http
        .post(upstream)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(std::io::Error::other)?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await.map_err(std::io::Error::other)?;
    Ok((status, bytes.to_vec()))
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
