//! `DroppingUpstream`: a minimal MCP server over raw HTTP/1.1 (keep-alive) that counts every
//! request and, for chosen methods, closes the connection after reading it without answering.
//!
//! axum cannot drop a connection from inside a handler, so this one speaks HTTP by hand; it
//! is what an upstream that ran a `tools/call` and then crashed looks like to the gateway.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::util::{self, lock};

/// The one tool the upstream lists.
pub const DROPPING_TOOL: &str = "updateAccountStatus";

#[derive(Debug, Default)]
struct State {
    /// Requests received, by JSON-RPC method (`DELETE` for session ends).
    counts: HashMap<String, usize>,
    /// Method → how many more of its requests are dropped unanswered.
    drops: HashMap<String, usize>,
}

/// A raw HTTP/1.1 MCP upstream on `http://127.0.0.1:PORT/mcp`. Stops when dropped.
#[derive(Debug)]
pub struct DroppingUpstream {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for DroppingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DroppingUpstream {
    /// Starts on a free port; `drops` = (JSON-RPC method, how many of its requests are read,
    /// counted and answered by closing the connection). Everything else is answered normally.
    pub async fn start(drops: &[(&str, usize)]) -> DroppingUpstream {
        let listener = util::bind(0).await;
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("testkit: listener has no local address: {e}"));
        let state = Arc::new(Mutex::new(State {
            counts: HashMap::new(),
            drops: drops.iter().map(|(m, n)| ((*m).to_owned(), *n)).collect(),
        }));
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((s, _)) = listener.accept().await {
                conns.spawn(serve(s, Arc::clone(&st)));
            }
        });
        DroppingUpstream { addr, state, task }
    }

    /// `http://127.0.0.1:PORT/mcp`.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// How many requests with JSON-RPC `method` arrived (answered or not).
    pub fn count(&self, method: &str) -> usize {
        lock(&self.state).counts.get(method).copied().unwrap_or(0)
    }
}

/// One request: its HTTP method and body.
struct Req {
    method: String,
    body: Vec<u8>,
}

/// Reads one request off `buf`/`s`; `None` when the peer closed or sent something unusable.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Req> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let method = head.split(' ').next()?.to_owned();
            let len = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
                .map_or(Some(0), |(_, v)| v.trim().parse::<usize>().ok())?;
            let start = end + 4;
            while buf.len() < start + len {
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[start..start + len].to_vec();
            buf.drain(..start + len);
            return Some(Req { method, body });
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn serve(mut s: TcpStream, state: Arc<Mutex<State>>) {
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut s, &mut buf).await {
        let msg: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let rpc = if req.method == "DELETE" {
            "DELETE".to_owned()
        } else {
            msg.get("method")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let drop_it = {
            let mut st = lock(&state);
            *st.counts.entry(rpc.clone()).or_default() += 1;
            match st.drops.get_mut(&rpc) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            }
        };
        if drop_it {
            // Read, counted, never answered: the connection just closes.
            return;
        }
        let answer = answer(&rpc, msg.get("id"));
        if s.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// The HTTP response to one request.
fn answer(rpc: &str, id: Option<&Value>) -> Vec<u8> {
    let id = id.cloned().unwrap_or(Value::Null);
    let result = match rpc {
        "initialize" => json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}, "resources": {}},
            "serverInfo": {"name": "dropping-upstream", "version": "1"},
        }),
        "tools/list" => json!({"tools": [{
            "name": DROPPING_TOOL,
            "description": "Changes an account's status (not idempotent).",
            "inputSchema": {"type": "object"},
        }]}),
        "resources/list" => json!({"resources": [{"uri": "mem://one", "name": "one"}]}),
        "tools/call" => json!({"content": [{"type": "text", "text": "done"}]}),
        "DELETE" => return b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(),
        m if m.starts_with("notifications/") => {
            return b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n".to_vec();
        }
        _ => json!({}),
    };
    let body = json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nmcp-session-id: s1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
