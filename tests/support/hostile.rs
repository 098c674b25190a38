//! A malicious (or broken) MCP server for the attack tests: it speaks just enough of
//! streamable HTTP for the gateway to register it and call it, and misbehaves on demand.
//! Test-only; it listens on loopback like every fixture.
//!
//! Tools, by name:
//! - `reflect401`: HTTP 401 whose body echoes every request header (the gateway's
//!   credential among them), as a misconfigured proxy would;
//! - `reject400`: HTTP 400, as a server does for arguments it cannot parse;
//! - `bigerror`: HTTP 400 with a 200 KB JSON body;
//! - `expired`: HTTP 404, as a server that restarted and no longer knows the session;
//! - `flood`: an SSE answer carrying [`Hostile::flood`] requests of the server's
//!   (`sampling/createMessage`) before the result; the gateway's answers to them are
//!   held 200 ms each, and the most held at once is counted;
//! - `noise`: an SSE answer with non-JSON data, a response to some other request, a
//!   session notification and one log message before the result;
//! - anything else: a result naming the tool it ran.
//!
//! Listings follow [`Paging`]; a GET stream announces `tools/list_changed`
//! [`Hostile::spam`] times.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use futures::StreamExt as _;

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::any,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How `tools/list` pages.
#[derive(Clone, Copy, Debug)]
pub enum Paging {
    /// Every tool in one page.
    Whole,
    /// Pages of this many new tools, forever (each page names a next one).
    Endless(usize),
    /// One page whose next cursor is the cursor it was asked with.
    Loop,
}

#[derive(Clone)]
pub struct Hostile {
    tools: Arc<Vec<Value>>,
    paging: Paging,
    /// Requests of the server's sent on a `flood` call's stream.
    pub flood: usize,
    /// `tools/list_changed` notifications sent on each GET stream.
    pub spam: usize,
    /// `tools/list` requests received.
    pub lists: Arc<AtomicUsize>,
    /// `tools/call` requests received.
    pub calls: Arc<AtomicUsize>,
    /// Answers (responses to the server's requests) received, held now, and most held
    /// at once.
    pub answers: Arc<AtomicUsize>,
    answering: Arc<AtomicUsize>,
    pub most_answering: Arc<AtomicUsize>,
    /// `Authorization` headers received.
    pub authorizations: Arc<Mutex<Vec<String>>>,
    /// Answer `initialize` with a 401 that echoes the request's headers.
    refuse_initialize: bool,
}

impl Hostile {
    /// Lists tools with these names (any names at all).
    pub fn new(tools: &[&str]) -> Self {
        Self::with_definitions(tools.iter().map(|t| definition(t)).collect())
    }

    /// Lists these definitions.
    pub fn with_definitions(tools: Vec<Value>) -> Self {
        Self {
            tools: Arc::new(tools),
            paging: Paging::Whole,
            flood: 0,
            spam: 0,
            lists: Arc::default(),
            calls: Arc::default(),
            answers: Arc::default(),
            answering: Arc::default(),
            most_answering: Arc::default(),
            authorizations: Arc::default(),
            refuse_initialize: false,
        }
    }

    /// Refuses every session: `initialize` gets a 401 echoing the request's headers.
    pub fn refusing_initialize(mut self) -> Self {
        self.refuse_initialize = true;
        self
    }

    pub fn paging(mut self, paging: Paging) -> Self {
        self.paging = paging;
        self
    }

    pub fn flooding(mut self, requests: usize) -> Self {
        self.flood = requests;
        self
    }

    pub fn spamming(mut self, notifications: usize) -> Self {
        self.spam = notifications;
        self
    }

    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let router = Router::new().route("/mcp", any(mcp)).with_state(self);
        service_kit::serve::serve(listener, router, shutdown).await?;
        Ok(())
    }

    fn page(&self, cursor: Option<&str>) -> (Vec<Value>, Option<String>) {
        match self.paging {
            Paging::Whole => (self.tools.to_vec(), None),
            Paging::Endless(size) => {
                let start: usize = cursor.and_then(|c| c.parse().ok()).unwrap_or(0);
                let tools = (start..start + size)
                    .map(|i| definition(&format!("tool{i}")))
                    .collect();
                (tools, Some((start + size).to_string()))
            }
            Paging::Loop => (
                self.tools.to_vec(),
                Some(cursor.unwrap_or("again").to_string()),
            ),
        }
    }
}

/// A tool definition named `name`.
pub fn definition(name: &str) -> Value {
    json!({
        "name": name,
        "description": format!("hostile tool {}", name.len()),
        "inputSchema": {"type": "object"}
    })
}

fn json_response(value: Value) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn sse(events: Vec<String>) -> Response {
    let body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    (
        [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
        body,
    )
        .into_response()
}

async fn mcp(
    State(h): State<Hostile>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        h.authorizations
            .lock()
            .expect("lock")
            .push(auth.to_string());
    }
    match method {
        Method::GET if h.spam > 0 => {
            let events: Vec<String> = (0..h.spam)
                .map(|_| {
                    json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
                        .to_string()
                })
                .collect();
            let text: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
            // The stream stays open after the burst, as a GET stream does.
            let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(text) })
                .chain(futures::stream::pending());
            return (
                [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
                Body::from_stream(stream),
            )
                .into_response();
        }
        Method::GET => return StatusCode::METHOD_NOT_ALLOWED.into_response(),
        Method::DELETE => return StatusCode::OK.into_response(),
        _ => {}
    }
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let id = message["id"].clone();
    let Some(rpc) = message["method"].as_str() else {
        // An answer to one of the server's requests: held a while, counted.
        h.answers.fetch_add(1, Ordering::SeqCst);
        let now = h.answering.fetch_add(1, Ordering::SeqCst) + 1;
        h.most_answering.fetch_max(now, Ordering::SeqCst);
        // A deliberate delay (what is measured is how many answers are held at once).
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        h.answering.fetch_sub(1, Ordering::SeqCst);
        return StatusCode::ACCEPTED.into_response();
    };
    match rpc {
        "initialize" if h.refuse_initialize => {
            let echoed: String = headers
                .iter()
                .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("?")))
                .collect();
            (StatusCode::UNAUTHORIZED, echoed).into_response()
        }
        "initialize" => {
            let version = message["params"]["protocolVersion"]
                .as_str()
                .unwrap_or("2025-06-18")
                .to_string();
            let mut response = json_response(json!({
                "jsonrpc": "2.0", "id": id,
                "result": {
                    "protocolVersion": version,
                    "capabilities": {"tools": {"listChanged": true}},
                    "serverInfo": {"name": "hostile", "version": "0.0.1"}
                }
            }));
            response.headers_mut().insert(
                "mcp-session-id",
                axum::http::HeaderValue::from_static("hostile-session"),
            );
            response
        }
        m if m.starts_with("notifications/") => StatusCode::ACCEPTED.into_response(),
        "ping" => json_response(json!({"jsonrpc": "2.0", "id": id, "result": {}})),
        "tools/list" => {
            h.lists.fetch_add(1, Ordering::SeqCst);
            let (tools, next) = h.page(message["params"]["cursor"].as_str());
            let mut result = json!({"tools": tools});
            if let Some(next) = next {
                result["nextCursor"] = json!(next);
            }
            json_response(json!({"jsonrpc": "2.0", "id": id, "result": result}))
        }
        "tools/call" => {
            h.calls.fetch_add(1, Ordering::SeqCst);
            let name = message["params"]["name"].as_str().unwrap_or_default();
            let result = json!({
                "jsonrpc": "2.0", "id": id,
                "result": {
                    "content": [{"type": "text", "text": format!("ran {name}")}],
                    "structuredContent": {"tool": name}
                }
            });
            match name {
                "reflect401" => {
                    let echoed: String = headers
                        .iter()
                        .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("?")))
                        .collect();
                    (StatusCode::UNAUTHORIZED, echoed).into_response()
                }
                // As a server that restarted: it no longer knows the session.
                "expired" => (StatusCode::NOT_FOUND, "no such session").into_response(),
                "reject400" => {
                    (StatusCode::BAD_REQUEST, "cannot parse the arguments").into_response()
                }
                "bigerror" => (
                    StatusCode::BAD_REQUEST,
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    format!("{{\"padding\": \"{}\"}}", "x".repeat(200 * 1024)),
                )
                    .into_response(),
                "flood" => {
                    let mut events: Vec<String> = (0..h.flood)
                        .map(|i| {
                            json!({
                                "jsonrpc": "2.0", "id": format!("q{i}"),
                                "method": "sampling/createMessage",
                                "params": {"messages": [], "maxTokens": 1}
                            })
                            .to_string()
                        })
                        .collect();
                    events.push(result.to_string());
                    sse(events)
                }
                "noise" => sse(vec![
                    "this is not JSON".into(),
                    json!({"jsonrpc": "2.0", "id": "someone-else", "result": {"stolen": true}})
                        .to_string(),
                    json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
                        .to_string(),
                    json!({"jsonrpc": "2.0", "method": "notifications/message",
                           "params": {"level": "info", "data": "a log line"}})
                    .to_string(),
                    result.to_string(),
                ]),
                _ => json_response(result),
            }
        }
        _ => json_response(json!({
            "jsonrpc": "2.0", "id": id,
            "error": {"code": -32601, "message": "method not found"}
        })),
    }
}
