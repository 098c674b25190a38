//! A lean MCP client over streamable HTTP, just enough for load: `initialize` (reading
//! `Mcp-Session-Id`), `notifications/initialized`, `tools/call`, `tools/list` and session
//! `DELETE`, or sessionless plain-JSON posts. Answers may be `application/json` or
//! `text/event-stream` (the JSON-RPC response is found in the event stream's `data:`
//! lines). Every answer is checked: a call "succeeds" only when it got a JSON-RPC
//! `result` without `isError`.
//!
//! The HTTP client is shared, pooled (keep-alive) and sets `TCP_NODELAY`, so a call costs
//! one request on a warm connection, the same for the direct and the proxied target.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use reqwest::{
    Response, Url,
    header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue},
};
use serde::{Deserialize, de::IgnoredAny};

/// The protocol revision the client announces.
pub const PROTOCOL_VERSION: &str = "2025-06-18";
/// Upper bound on `tools/list` pages followed for one listing.
const MAX_PAGES: usize = 1_000;
const SESSION_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");
const VERSION_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");

/// The HTTP client every virtual client shares: pooled keep-alive connections (enough
/// idle ones kept for `max_idle` concurrent clients), `TCP_NODELAY`, bounded waits.
pub fn http_client(max_idle: usize) -> Result<reqwest::Client> {
    service_kit::client::ensure_tls_provider();
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(max_idle)
        .pool_idle_timeout(Duration::from_secs(90))
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .build()
        .context("building the load generator's HTTP client")
}

/// Where to send MCP traffic.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The MCP endpoint, e.g. `http://127.0.0.1:3001/mcp`.
    pub url: String,
    /// Bearer token, sent when set.
    pub bearer: Option<String>,
}

/// Session mode (initialize, then `Mcp-Session-Id` on every request) or sessionless
/// plain-JSON posts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Session,
    /// A session whose client declares sampling, elicitation and roots and then sets the
    /// log level (`logging/setLevel` info): what agent hosts with callbacks open.
    Capable,
    Sessionless,
}

/// The capabilities a [`Mode::Capable`] client declares.
pub const CAPABLE_CAPABILITIES: &str =
    r#"{"sampling":{},"elicitation":{},"roots":{"listChanged":true}}"#;

/// What a request asks for; the body is rendered per request (fresh id).
#[derive(Clone, Debug)]
pub enum Call {
    /// `tools/call` with the tool name and its arguments (a JSON object, as text).
    Tool { name: String, arguments: String },
    /// `tools/list` of a server offering `expect_tools` tools: with `all_pages`, every
    /// page (following `nextCursor`) must add up to exactly that many; without, one
    /// request, whose page must be the whole list unless it names a next cursor.
    List {
        expect_tools: usize,
        all_pages: bool,
    },
    /// `ping`: on the gateway, a request only rmcp's copy of the session answers (a
    /// session without one gets it restored, as an SDK client's GET stream does).
    Ping,
}

impl Call {
    pub fn tool(name: &str, arguments: &str) -> Self {
        Call::Tool {
            name: name.to_string(),
            arguments: arguments.to_string(),
        }
    }

    fn body(&self, id: u64, cursor: Option<&str>) -> String {
        match self {
            Call::Tool { name, arguments } => format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{name}","arguments":{arguments}}}}}"#
            ),
            Call::List { .. } => match cursor {
                None => {
                    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list","params":{{}}}}"#)
                }
                Some(c) => format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list","params":{{"cursor":{}}}}}"#,
                    serde_json::Value::from(c)
                ),
            },
            Call::Ping => format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#),
        }
    }
}

/// One virtual client: a session (or none, sessionless) on the shared HTTP client.
pub struct McpClient {
    http: reqwest::Client,
    url: Url,
    headers: HeaderMap,
    next_id: u64,
    session: bool,
}

impl McpClient {
    /// A client in `mode`; in session mode this performs the whole handshake
    /// (`initialize`, then `notifications/initialized`).
    pub async fn connect(http: &reqwest::Client, endpoint: &Endpoint, mode: Mode) -> Result<Self> {
        let mut client = Self::new(http, endpoint)?;
        if mode != Mode::Sessionless {
            client.initialize(mode == Mode::Capable).await?;
        }
        Ok(client)
    }

    fn new(http: &reqwest::Client, endpoint: &Endpoint) -> Result<Self> {
        let url = Url::parse(&endpoint.url)
            .with_context(|| format!("invalid MCP endpoint URL {:?}", endpoint.url))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(token) = &endpoint.bearer {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the bearer token is not a valid header value")?;
            headers.insert(AUTHORIZATION, value);
        }
        Ok(Self {
            http: http.clone(),
            url,
            headers,
            next_id: 1,
            session: false,
        })
    }

    async fn initialize(&mut self, capable: bool) -> Result<()> {
        let capabilities = if capable { CAPABLE_CAPABILITIES } else { "{}" };
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"{PROTOCOL_VERSION}","capabilities":{capabilities},"clientInfo":{{"name":"mcp-bench","version":"{}"}}}}}}"#,
            env!("CARGO_PKG_VERSION")
        );
        let resp = self.post(body).await.context("initialize")?;
        let session = resp
            .headers()
            .get(SESSION_HEADER)
            .cloned()
            .ok_or_else(|| anyhow!("the initialize answer carries no Mcp-Session-Id header"))?;
        let reply = read_reply(resp).await.context("initialize")?;
        let result = reply.into_result().context("initialize")?;
        let version = result
            .protocol_version
            .ok_or_else(|| anyhow!("the initialize result has no protocolVersion"))?;
        self.headers.insert(SESSION_HEADER, session);
        self.headers.insert(
            VERSION_HEADER,
            HeaderValue::from_str(&version)
                .with_context(|| format!("protocolVersion {version:?} is not a header value"))?,
        );
        self.session = true;
        let resp = self
            .post(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_string())
            .await
            .context("notifications/initialized")?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            bail!("notifications/initialized answered HTTP {status}: {text}");
        }
        if capable {
            // A JSON-RPC error (a server without the logging capability) leaves the
            // session as it is; anything else fails it.
            let id = self.next_id;
            self.next_id += 1;
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"logging/setLevel","params":{{"level":"info"}}}}"#
            );
            let resp = self.post(body).await.context("logging/setLevel")?;
            let reply = read_reply(resp).await.context("logging/setLevel")?;
            if reply.id != Some(id) {
                bail!(
                    "logging/setLevel: answer carries id {:?}, expected {id}",
                    reply.id
                );
            }
        }
        Ok(())
    }

    async fn post(&self, body: String) -> Result<Response> {
        self.http
            .post(self.url.clone())
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await
            .with_context(|| format!("POST {}", self.url))
    }

    /// Sends the request (for a paginated `tools/list` with `all_pages`, one per page)
    /// and checks the answer: `Ok` only for a `result` without `isError` and, for
    /// `tools/list`, with the expected number of tools.
    pub async fn call(&mut self, call: &Call) -> Result<()> {
        let mut cursor: Option<String> = None;
        let mut listed = 0;
        for _page in 0..MAX_PAGES {
            let id = self.next_id;
            self.next_id += 1;
            let resp = self.post(call.body(id, cursor.as_deref())).await?;
            let reply = read_reply(resp).await?;
            if reply.id != Some(id) {
                bail!("answer carries id {:?}, expected {id}", reply.id);
            }
            let result = reply.into_result()?;
            if result.is_error == Some(true) {
                bail!("the tool answered isError: true");
            }
            let Call::List {
                expect_tools,
                all_pages,
            } = call
            else {
                return Ok(());
            };
            listed += result.tools.as_ref().map_or(0, Vec::len);
            let more = if result.next_cursor.is_some() {
                "a next cursor"
            } else {
                "no next cursor"
            };
            match result.next_cursor {
                Some(next) if *all_pages && listed < *expect_tools => cursor = Some(next),
                Some(_) if !*all_pages && listed > 0 && listed <= *expect_tools => return Ok(()),
                None if listed == *expect_tools => return Ok(()),
                _ => {
                    bail!("tools/list returned {listed} tools and {more}, expected {expect_tools}")
                }
            }
        }
        bail!("tools/list did not end within {MAX_PAGES} pages")
    }

    /// Ends the session (`DELETE` with its id); a no-op for a sessionless client.
    pub async fn close(self) -> Result<()> {
        if !self.session {
            return Ok(());
        }
        let resp = self
            .http
            .delete(self.url.clone())
            .headers(self.headers.clone())
            .send()
            .await
            .with_context(|| format!("DELETE {}", self.url))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            bail!("DELETE {} answered HTTP {status}: {text}", self.url);
        }
        Ok(())
    }
}

/// The parts of a JSON-RPC message the benchmark checks.
#[derive(Deserialize, Debug)]
pub(crate) struct Reply {
    id: Option<u64>,
    result: Option<ResultProbe>,
    error: Option<RpcError>,
    method: Option<String>,
}

#[derive(Deserialize, Debug)]
pub(crate) struct ResultProbe {
    #[serde(rename = "isError")]
    pub(crate) is_error: Option<bool>,
    #[serde(rename = "protocolVersion")]
    pub(crate) protocol_version: Option<String>,
    tools: Option<Vec<IgnoredAny>>,
    #[serde(rename = "nextCursor")]
    next_cursor: Option<String>,
}

#[derive(Deserialize, Debug)]
struct RpcError {
    code: i64,
    message: String,
}

impl Reply {
    fn is_response(&self) -> bool {
        self.method.is_none() && (self.result.is_some() || self.error.is_some())
    }

    pub(crate) fn into_result(self) -> Result<ResultProbe> {
        match (self.result, self.error) {
            (Some(r), _) => Ok(r),
            (None, Some(e)) => bail!("JSON-RPC error {}: {}", e.code, e.message),
            (None, None) => bail!("the answer has neither result nor error"),
        }
    }
}

/// Reads the JSON-RPC response from an answer, JSON or SSE. For SSE, events are parsed
/// as they arrive; once the response is found the rest of the stream is drained briefly
/// so the connection can go back to the pool.
pub(crate) async fn read_reply(mut resp: Response) -> Result<Reply> {
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        bail!(
            "HTTP {status}: {}",
            text.chars().take(300).collect::<String>()
        );
    }
    let sse = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !sse {
        let bytes = resp.bytes().await.context("reading the JSON answer")?;
        return serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "the answer is not a JSON-RPC message: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            )
        });
    }
    let mut parser = SseParser::default();
    loop {
        let chunk = resp.chunk().await.context("reading the event stream")?;
        let Some(chunk) = chunk else {
            bail!("the event stream ended without a JSON-RPC response");
        };
        if let Some(reply) = parser.feed(&chunk)? {
            let drain = async { while let Ok(Some(_)) = resp.chunk().await {} };
            let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
            return Ok(reply);
        }
    }
}

/// Incremental `text/event-stream` parser: accumulates `data:` lines per event and
/// yields the first event whose data is a JSON-RPC response. Empty events (the priming
/// event) and notifications are skipped.
#[derive(Default)]
struct SseParser {
    buf: Vec<u8>,
    /// Start of the first line not yet consumed.
    pos: usize,
    data: Vec<u8>,
}

impl SseParser {
    fn feed(&mut self, chunk: &[u8]) -> Result<Option<Reply>> {
        self.buf.extend_from_slice(chunk);
        while let Some(nl) = self.buf[self.pos..].iter().position(|b| *b == b'\n') {
            let end = self.pos + nl;
            let line = &self.buf[self.pos..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                if !self.data.is_empty() {
                    let reply: Reply = serde_json::from_slice(&self.data).with_context(|| {
                        format!(
                            "an SSE event's data is not a JSON-RPC message: {}",
                            String::from_utf8_lossy(&self.data[..self.data.len().min(200)])
                        )
                    })?;
                    self.data.clear();
                    if reply.is_response() {
                        self.pos = end + 1;
                        return Ok(Some(reply));
                    }
                }
            } else if let Some(value) = line.strip_prefix(b"data:") {
                let value = value.strip_prefix(b" ").unwrap_or(value);
                if !self.data.is_empty() {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
            }
            self.pos = end + 1;
        }
        // Keep the buffer from growing without bound: drop consumed lines.
        if self.pos > 64 * 1024 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_skips_priming_and_notifications_and_finds_the_response() {
        let mut p = SseParser::default();
        let stream = b"id: 0\nretry: 3000\ndata: \n\n\
            data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n\
            id: 1\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"content\":[],\"isError\":false}}\r\n\r\n";
        // Fed in awkward pieces, as TCP may deliver it.
        let mut found = None;
        for piece in stream.chunks(7) {
            if let Some(r) = p.feed(piece).expect("valid stream") {
                found = Some(r);
                break;
            }
        }
        let reply = found.expect("a response");
        assert_eq!(reply.id, Some(7));
        assert_eq!(reply.into_result().expect("result").is_error, Some(false));
    }

    #[test]
    fn errors_and_multiline_data_are_understood() {
        let mut p = SseParser::default();
        let stream = b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\ndata: \"error\":{\"code\":-32602,\"message\":\"unknown tool: x\"}}\n\n";
        let reply = p.feed(stream).expect("valid").expect("a response");
        let err = reply.into_result().expect_err("an error");
        assert_eq!(err.to_string(), "JSON-RPC error -32602: unknown tool: x");
    }

    #[test]
    fn request_bodies_are_json() {
        let call = Call::tool("getProductById", r#"{"id":"123"}"#);
        let v: serde_json::Value = serde_json::from_str(&call.body(5, None)).expect("JSON");
        assert_eq!(v["params"]["arguments"]["id"], "123");
        assert_eq!(v["id"], 5);
        let list = Call::List {
            expect_tools: 1,
            all_pages: true,
        };
        let first: serde_json::Value = serde_json::from_str(&list.body(6, None)).expect("JSON");
        assert_eq!(first["method"], "tools/list");
        let next: serde_json::Value =
            serde_json::from_str(&list.body(7, Some("a\"b"))).expect("JSON");
        assert_eq!(next["params"]["cursor"], "a\"b");
    }
}
