//! `gateway stdio`: an MCP server on stdin/stdout that relays every message to a
//! gateway's `/mcp` and every message of the gateway back, so a desktop client with one
//! `mcpServers` entry reaches the whole federation.
//!
//! A byte-level JSON-RPC relay, not a typed rmcp proxy. A typed proxy (an rmcp server on
//! stdio in front of an rmcp client of the gateway) carries only what rmcp's model
//! knows, re-encodes every message, and has to re-implement each feature by hand
//! (progress, cancellation, sampling, elicitation, roots, tasks, the next revision's
//! members): whatever it forgets is silently lost. The relay reads only the envelope
//! (`method`, `id`, for the session and headers) and passes the client's line as the
//! POST body unchanged, so whatever the two ends speak goes through, and the gateway's
//! policy (auth, scopes, allow-lists, rate limits) decides as for any HTTP client.
//!
//! How it carries a message:
//! - A client's line is POSTed to `/mcp` with `Authorization: Bearer`, `Accept:
//!   application/json, text/event-stream`, the `Mcp-Session-Id` the gateway returned at
//!   `initialize`, `MCP-Protocol-Version` once negotiated (before that, the version a
//!   2026-07-28 request names in its `_meta`), and `Mcp-Method`/`Mcp-Name`.
//! - Requests run concurrently (at most [`MAX_IN_FLIGHT`]; stdin waits for a free slot);
//!   `initialize` runs alone, and notifications and the client's answers to the
//!   gateway's requests are POSTed in order (`notifications/initialized` reaches the
//!   gateway before the requests after it; 202 expected).
//! - Every JSON-RPC message of an answer (a JSON body, or the `data` of SSE events) is
//!   written to stdout as one line: the response, and before it the progress, log
//!   messages and server-to-client requests (sampling, elicitation, roots) of the call.
//!   A stream that closes before the response (SEP-1699) is resumed with
//!   `Last-Event-ID`. After `initialize` a GET `/mcp` stream stays open for what the
//!   gateway sends outside any call (list changes, resource updates), reopened with
//!   capped backoff and `Last-Event-ID`.
//! - A session the gateway expired (404: idle for `session_idle_timeout_ms`, or the
//!   gateway restarted) is opened again with the client's own `initialize` and the
//!   message sent once more; the client does not notice (its subscriptions are gone).
//! - An HTTP failure becomes a JSON-RPC error for the request's id saying what went
//!   wrong: 401 names the token, an unreachable gateway names the URL.
//! - On stdin EOF, requests in flight get [`EXIT_GRACE`] to finish, the session is
//!   DELETEd, and the process exits 0.
//!
//! Bounds: a line of stdin (longer ones are skipped with a log line), a JSON body or one
//! SSE message of the gateway ([`MAX_MESSAGE_BYTES`], the gateway's 16 MiB), requests in
//! flight, the queue to stdout ([`OUT_QUEUE`] messages), the time an in-order POST may
//! hold stdin ([`ORDERED_TIMEOUT`]), the GET stream's reconnect delay.
//!
//! Invariant: stdout carries only JSON-RPC messages, one per line (what is not JSON is
//! never written; logs go to stderr); the client's bytes reach the gateway unchanged.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt},
    sync::{Semaphore, mpsc, watch},
};
use tokio_util::sync::CancellationToken;

use crate::vocab;

/// The longest line read from stdin, and the largest message taken from the gateway (a
/// JSON body or one SSE message): the gateway's own `max_response_bytes` default.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Requests POSTed at once.
pub const MAX_IN_FLIGHT: usize = 64;
/// Requests waiting for one of those slots, and notifications and answers waiting to be
/// POSTed in order. Stdin is read on meanwhile (a client's answer to the gateway's
/// question must get through while its requests wait); past this, a request is refused
/// at once and ordered messages hold stdin back.
pub const MAX_QUEUED: usize = 256;
/// Messages waiting for stdout; the HTTP streams wait while it is full.
pub const OUT_QUEUE: usize = 256;
/// How long requests in flight may still finish after stdin closed.
pub const EXIT_GRACE: Duration = Duration::from_secs(5);
/// How long `initialize`, a notification or a client's answer may take.
pub const ORDERED_TIMEOUT: Duration = Duration::from_secs(30);
/// Resumptions of one request's stream that closed before its response.
const RESUMPTIONS: usize = 3;

/// Runs the bridge on the process's stdin and stdout until stdin closes; the exit
/// status (0 after EOF).
pub async fn run(url: &str, token: &str) -> i32 {
    service_kit::logging::init_to(false, service_kit::logging::Output::Stderr);
    let input = tokio::io::BufReader::with_capacity(64 * 1024, tokio::io::stdin());
    serve(url, token, input, tokio::io::stdout()).await
}

/// [`run`] on any input and output.
pub async fn serve<R, W>(url: &str, token: &str, input: R, output: W) -> i32
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let endpoint = match endpoint(url) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("gateway stdio: {e}");
            return 2;
        }
    };
    let (out, queue) = mpsc::channel(OUT_QUEUE);
    let stop = CancellationToken::new();
    let done = CancellationToken::new();
    let writer = tokio::spawn(write_out(output, queue, stop.clone(), done.clone()));
    let bridge = Arc::new(Bridge {
        http: service_kit::client::http_client(Duration::from_secs(5)),
        endpoint,
        token: token.to_string(),
        session: Mutex::default(),
        generation: watch::channel(0).0,
        reinit: tokio::sync::Mutex::new(()),
        reinits: AtomicU64::new(0),
        out,
        stop: stop.clone(),
        listening: std::sync::atomic::AtomicBool::new(false),
        in_flight: Mutex::default(),
    });
    tracing::info!(endpoint = %bridge.endpoint, "relaying stdin/stdout to the gateway");
    let status = Arc::clone(&bridge).relay(input).await;
    bridge.end_session().await;
    stop.cancel();
    drop(bridge);
    done.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    status
}

/// `url` as the gateway's MCP endpoint: `/mcp` appended when it has no path.
pub fn endpoint(url: &str) -> Result<String, String> {
    let mut parsed =
        url::Url::parse(url).map_err(|e| format!("--url {url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("--url {url:?} must be an http:// or https:// URL"));
    }
    if parsed.path().is_empty() || parsed.path() == "/" {
        parsed.set_path("/mcp");
    }
    Ok(parsed.to_string())
}

#[derive(Default)]
struct Session {
    /// `Mcp-Session-Id`, from the gateway's answer to `initialize`.
    id: Option<String>,
    /// The negotiated `protocolVersion`.
    version: Option<String>,
    /// The client's `initialize` params, to open an expired session again.
    init: Option<Value>,
}

struct Bridge {
    http: reqwest::Client,
    endpoint: String,
    token: String,
    session: Mutex<Session>,
    /// Bumped each time a session is opened.
    generation: watch::Sender<u64>,
    /// Held while an expired session is opened again (once for all who noticed).
    reinit: tokio::sync::Mutex<()>,
    reinits: AtomicU64,
    out: mpsc::Sender<String>,
    /// Cancelled when stdout is gone or the bridge ends.
    stop: CancellationToken,
    listening: std::sync::atomic::AtomicBool,
    /// Requests in flight (by their id's JSON), and whether the client cancelled each:
    /// a cancelled request's missing answer is no error to report.
    in_flight: Mutex<std::collections::HashMap<String, bool>>,
}

/// Why a request got no answer from the gateway: rendered as its JSON-RPC error.
#[derive(Debug)]
struct Problem {
    code: i32,
    message: String,
    status: Option<u16>,
}

impl Problem {
    fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            status: None,
        }
    }
}

/// What a message is, by its envelope.
enum Kind {
    Initialize,
    Request,
    /// A notification or a client's answer: POSTed in order, nothing expected back.
    Ordered,
}

fn kind(value: &Value) -> Kind {
    match (value.get("method").and_then(Value::as_str), value.get("id")) {
        (Some("initialize"), Some(_)) => Kind::Initialize,
        (Some(_), Some(_)) => Kind::Request,
        // A batch: its answers come back like a request's.
        _ if value.is_array() => Kind::Request,
        _ => Kind::Ordered,
    }
}

impl Bridge {
    /// Reads stdin until EOF, relaying each line; the exit status.
    async fn relay<R: AsyncBufRead + Unpin>(self: Arc<Self>, mut input: R) -> i32 {
        let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut tasks = tokio::task::JoinSet::new();
        // Notifications and the client's answers, POSTed in order by a task of their own.
        let (ordered, mut queue) = mpsc::channel::<(Bytes, Value)>(MAX_QUEUED);
        let sender = Arc::clone(&self);
        let ordered_task = tokio::spawn(async move {
            while let Some((body, value)) = queue.recv().await {
                sender.send_ordered(&body, &value).await;
            }
        });
        let mut line = Vec::new();
        let mut status = 0;
        loop {
            let read = tokio::select! {
                r = read_line(&mut input, &mut line, MAX_MESSAGE_BYTES) => r,
                _ = self.stop.cancelled() => break,
            };
            match read {
                Ok(Line::Eof) => break,
                Ok(Line::TooLong(n)) => {
                    tracing::warn!(
                        bytes = n,
                        limit = MAX_MESSAGE_BYTES,
                        "skipped a line of stdin longer than the limit"
                    );
                    continue;
                }
                Ok(Line::Read) => {}
                Err(e) => {
                    tracing::error!("cannot read stdin: {e}");
                    status = 1;
                    break;
                }
            }
            let text = line.trim_ascii();
            if text.is_empty() {
                continue;
            }
            let value: Value = match serde_json::from_slice(text) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!("skipped a line of stdin that is not JSON: {e}");
                    continue;
                }
            };
            let body = Bytes::copy_from_slice(text);
            match kind(&value) {
                Kind::Initialize => {
                    let bridge = Arc::clone(&self);
                    let id = value["id"].clone();
                    match tokio::time::timeout(ORDERED_TIMEOUT, bridge.initialize(body, &value))
                        .await
                    {
                        Ok(Ok(())) => self.listen(),
                        Ok(Err(p)) => self.emit(error_line(&id, &p)).await,
                        Err(_) => {
                            let p = Problem::new(
                                vocab::UPSTREAM_TIMEOUT,
                                format!(
                                    "the gateway at {} did not answer initialize within {} s",
                                    self.endpoint,
                                    ORDERED_TIMEOUT.as_secs()
                                ),
                            );
                            self.emit(error_line(&id, &p)).await
                        }
                    }
                }
                Kind::Request => {
                    let id = value.get("id").cloned().unwrap_or(Value::Null);
                    if tasks.len() >= MAX_IN_FLIGHT + MAX_QUEUED {
                        let p = Problem::new(
                            vocab::UPSTREAM_UNAVAILABLE,
                            format!(
                                "the bridge has {} requests in flight or waiting; try again when some have finished",
                                tasks.len()
                            ),
                        );
                        self.emit(error_line(&id, &p)).await;
                        continue;
                    }
                    let bridge = Arc::clone(&self);
                    let permits = Arc::clone(&permits);
                    let key = id.to_string();
                    self.in_flight().insert(key.clone(), false);
                    tasks.spawn(async move {
                        let Ok(permit) = permits.acquire_owned().await else {
                            return;
                        };
                        // Cancelled by the client while it waited: never sent.
                        if bridge.in_flight().get(&key) == Some(&true) {
                            bridge.in_flight().remove(&key);
                            return;
                        }
                        let sent = bridge.exchange(&body, &value, true).await;
                        let cancelled = bridge.in_flight().remove(&key).unwrap_or(false);
                        if let Err(p) = sent
                            && !cancelled
                        {
                            bridge.emit(error_line(&id, &p)).await;
                        }
                        drop(permit);
                    });
                }
                Kind::Ordered => {
                    if value["method"] == "notifications/cancelled"
                        && let Some(id) = value.pointer("/params/requestId")
                        && let Some(cancelled) = self.in_flight().get_mut(&id.to_string())
                    {
                        *cancelled = true;
                    }
                    if ordered.send((body, value)).await.is_err() {
                        break;
                    }
                }
            }
            while tasks.try_join_next().is_some() {}
        }
        // Stdin is closed: what was sent in order goes out, and requests in flight may
        // still finish (bounded).
        drop(ordered);
        let _ = tokio::time::timeout(EXIT_GRACE, async {
            let _ = ordered_task.await;
            while tasks.join_next().await.is_some() {}
        })
        .await;
        tasks.abort_all();
        status
    }

    /// POSTs a notification or an answer of the client's, within [`ORDERED_TIMEOUT`].
    async fn send_ordered(&self, body: &Bytes, value: &Value) {
        let what = value
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("a response")
            .to_string();
        match tokio::time::timeout(ORDERED_TIMEOUT, self.exchange(body, value, false)).await {
            Ok(Ok(())) => {}
            Ok(Err(p)) => tracing::warn!("the gateway did not take {what}: {}", p.message),
            Err(_) => tracing::warn!("the gateway did not take {what} in time"),
        }
    }

    /// Queues one line for stdout (waits while the queue is full).
    async fn emit(&self, line: String) {
        let _ = self.out.send(line).await;
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, bool>> {
        self.in_flight.lock().expect("in-flight lock")
    }

    fn session_id(&self) -> Option<String> {
        self.session.lock().expect("session lock").id.clone()
    }

    /// A request to the endpoint with the session's headers.
    fn request(&self, method: reqwest::Method, with_session: bool) -> reqwest::RequestBuilder {
        let mut rb = self
            .http
            .request(method, &self.endpoint)
            .header(reqwest::header::ACCEPT, crate::vocab::ACCEPT_BOTH);
        if !self.token.is_empty() {
            rb = rb.bearer_auth(&self.token);
        }
        if with_session {
            let session = self.session.lock().expect("session lock");
            if let Some(id) = &session.id {
                rb = rb.header("Mcp-Session-Id", id);
            }
            if let Some(v) = &session.version {
                rb = rb.header("MCP-Protocol-Version", v);
            }
        }
        rb
    }

    /// A POST of `body` (the client's bytes), with the headers its envelope gives.
    fn post(&self, body: &Bytes, value: &Value, with_session: bool) -> reqwest::RequestBuilder {
        let mut rb = self
            .request(reqwest::Method::POST, with_session)
            .header(
                reqwest::header::CONTENT_TYPE,
                crate::vocab::APPLICATION_JSON,
            )
            .body(body.clone());
        let negotiated =
            with_session && self.session.lock().expect("session lock").version.is_some();
        if !negotiated
            && let Some(v) = value
                .pointer("/params/_meta")
                .and_then(|m| m.get("io.modelcontextprotocol/protocolVersion"))
                .and_then(Value::as_str)
        {
            rb = rb.header("MCP-Protocol-Version", v);
        }
        for (name, header) in standard_headers(value) {
            rb = rb.header(name, header);
        }
        rb
    }

    /// `initialize`: opens a session (the old one, if any, is left to expire), relays the
    /// answer and notes the session id and negotiated version.
    async fn initialize(&self, body: Bytes, value: &Value) -> Result<(), Problem> {
        self.open(&body, value, true).await?;
        self.session.lock().expect("session lock").init = value.get("params").cloned();
        self.generation.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Sends an `initialize` and notes the session id and version it got; `emit`: relays
    /// the answer to the client (not for a reopening the client never asked for).
    async fn open(&self, body: &Bytes, value: &Value, emit: bool) -> Result<(), Problem> {
        let id = value.get("id").cloned().unwrap_or(Value::Null);
        let response = self
            .post(body, value, false)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        if !response.status().is_success() {
            return Err(self.refusal(response).await);
        }
        let session_id = session_header(&response);
        let answer = self.answer(response, Some(&id), emit).await?;
        let mut session = self.session.lock().expect("session lock");
        session.id = session_id;
        session.version = answer
            .as_ref()
            .and_then(|a| a.pointer("/result/protocolVersion"))
            .and_then(Value::as_str)
            .map(String::from);
        Ok(())
    }

    /// POSTs one message and relays its answer; a 404 on an expired session opens it
    /// again and sends once more. `expect`: the message is a request whose response
    /// must come.
    async fn exchange(&self, body: &Bytes, value: &Value, expect: bool) -> Result<(), Problem> {
        let id = expect.then(|| value.get("id").cloned().unwrap_or(Value::Null));
        let mut again = true;
        loop {
            let generation = *self.generation.borrow();
            let response = self
                .post(body, value, true)
                .send()
                .await
                .map_err(|e| self.unreachable(&e))?;
            let status = response.status();
            if status == reqwest::StatusCode::NOT_FOUND && again && self.session_id().is_some() {
                again = false;
                self.reopen(generation).await?;
                continue;
            }
            if !status.is_success() {
                return Err(self.refusal(response).await);
            }
            let answer = self.answer(response, id.as_ref(), true).await?;
            if expect && answer.is_none() && !value.is_array() {
                return Err(Problem::new(
                    vocab::UPSTREAM_UNAVAILABLE,
                    "the gateway closed the stream before it answered this request",
                ));
            }
            return Ok(());
        }
    }

    /// Opens the session again with the client's `initialize`, unless that happened since
    /// `seen` (another message noticed first).
    async fn reopen(&self, seen: u64) -> Result<(), Problem> {
        let _one = self.reinit.lock().await;
        if *self.generation.borrow() != seen {
            return Ok(());
        }
        let params = self.session.lock().expect("session lock").init.clone();
        let Some(params) = params else {
            return Err(Problem::new(
                vocab::UPSTREAM_UNAVAILABLE,
                "the gateway no longer knows this session",
            ));
        };
        let n = self.reinits.fetch_add(1, Ordering::Relaxed) + 1;
        let id = json!(format!("gateway-stdio-reopen-{n}"));
        let message = json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": params});
        let body = Bytes::from(message.to_string());
        self.open(&body, &message, false).await?;
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let body = Bytes::from(initialized.to_string());
        let _ = self.post(&body, &initialized, true).send().await;
        self.generation.send_modify(|g| *g += 1);
        tracing::info!("the gateway had expired the session: opened a new one");
        Ok(())
    }

    /// Relays a successful answer's messages (when `emit`); the response to `id`, if it
    /// came. A stream that ends before it is resumed with `Last-Event-ID`.
    async fn answer(
        &self,
        response: reqwest::Response,
        id: Option<&Value>,
        emit: bool,
    ) -> Result<Option<Value>, Problem> {
        let sse = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.trim_start().starts_with("text/event-stream"));
        if !sse {
            let body = read_bounded(response, MAX_MESSAGE_BYTES).await?;
            if body.trim_ascii().is_empty() {
                return Ok(None);
            }
            let value: Value = serde_json::from_slice(&body).map_err(|e| {
                Problem::new(
                    vocab::INTERNAL_ERROR,
                    format!("the gateway answered with something that is not JSON: {e}"),
                )
            })?;
            let answer = match &value {
                Value::Array(items) => items.iter().find(|m| answers(m, id)).cloned(),
                one => answers(one, id).then(|| one.clone()),
            };
            if emit {
                if is_jsonrpc(&value) {
                    self.emit(value.to_string()).await;
                } else {
                    tracing::warn!("skipped an answer of the gateway that is not JSON-RPC");
                }
            }
            return Ok(answer.or_else(|| value.is_array().then_some(Value::Null)));
        }
        let mut cursor = Cursor::default();
        if let Some(found) = self.events(response, &mut cursor, id, emit).await? {
            return Ok(Some(found));
        }
        let Some(id) = id else { return Ok(None) };
        for _ in 0..RESUMPTIONS {
            let Some(last) = cursor.last_id.clone() else {
                break;
            };
            let wait = Duration::from_millis(cursor.retry_ms.unwrap_or(500).min(10_000));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop.cancelled() => return Ok(None),
            }
            let resumed = self
                .request(reqwest::Method::GET, true)
                .header("Last-Event-ID", &last)
                .send()
                .await;
            match resumed {
                Ok(r) if r.status().is_success() => {
                    if let Some(found) = self.events(r, &mut cursor, Some(id), emit).await? {
                        return Ok(Some(found));
                    }
                }
                Ok(r) => {
                    tracing::warn!(status = %r.status(), "could not resume a request's stream");
                    break;
                }
                Err(e) => tracing::warn!("could not resume a request's stream: {e}"),
            }
        }
        Ok(None)
    }

    /// Relays the SSE messages of `response` until it ends or carries the response to
    /// `id` (returned).
    async fn events(
        &self,
        response: reqwest::Response,
        cursor: &mut Cursor,
        id: Option<&Value>,
        emit: bool,
    ) -> Result<Option<Value>, Problem> {
        let pending = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&pending);
        let bytes = response.bytes_stream().map(move |chunk| {
            let chunk = chunk.map_err(std::io::Error::other)?;
            let now = counted.fetch_add(chunk.len(), Ordering::Relaxed) + chunk.len();
            if now > MAX_MESSAGE_BYTES {
                return Err(std::io::Error::other(format!(
                    "an SSE message of the gateway exceeded {MAX_MESSAGE_BYTES} bytes"
                )));
            }
            Ok::<_, std::io::Error>(chunk)
        });
        let mut stream = crate::sse::events(bytes);
        loop {
            let next = tokio::select! {
                n = stream.next() => n,
                _ = self.stop.cancelled() => return Ok(None),
            };
            let event = match next {
                None => return Ok(None),
                Some(Ok(e)) => e,
                Some(Err(e)) => {
                    // A broken stream is resumed (or reported) by the caller.
                    tracing::warn!("a stream of the gateway broke: {e}");
                    return Ok(None);
                }
            };
            pending.store(0, Ordering::Relaxed);
            if let Some(last) = event.id.filter(|i| !i.is_empty()) {
                cursor.last_id = Some(last);
            }
            if let Some(retry) = event.retry {
                cursor.retry_ms = Some(retry);
            }
            if event.event.as_deref().is_some_and(|e| e != "message") {
                continue;
            }
            let Some(data) = event.data.filter(|d| !d.trim().is_empty()) else {
                continue; // a priming event
            };
            let value: Value = match serde_json::from_str(&data) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!("skipped an SSE message of the gateway that is not JSON: {e}");
                    continue;
                }
            };
            let found = answers(&value, id);
            if emit {
                if is_jsonrpc(&value) {
                    self.emit(value.to_string()).await;
                } else {
                    tracing::warn!("skipped an SSE message of the gateway that is not JSON-RPC");
                }
            }
            if found {
                return Ok(Some(value));
            }
        }
    }

    /// Keeps a GET stream open for the gateway's messages outside any call, from the
    /// first session on (once).
    fn listen(self: &Arc<Self>) {
        if self.listening.swap(true, Ordering::SeqCst) {
            return;
        }
        let bridge = Arc::clone(self);
        tokio::spawn(async move { bridge.listen_loop().await });
    }

    async fn listen_loop(self: Arc<Self>) {
        const FIRST: Duration = Duration::from_millis(500);
        const CAP: Duration = Duration::from_secs(30);
        let mut generations = self.generation.subscribe();
        let mut generation = *generations.borrow_and_update();
        let mut cursor = Cursor::default();
        let mut backoff = FIRST;
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            let now = *generations.borrow_and_update();
            if now != generation {
                (generation, cursor, backoff) = (now, Cursor::default(), FIRST);
            }
            if self.session_id().is_none() {
                tokio::select! {
                    _ = generations.changed() => continue,
                    _ = self.stop.cancelled() => return,
                }
            }
            let mut rb = self.request(reqwest::Method::GET, true);
            if let Some(last) = &cursor.last_id {
                rb = rb.header("Last-Event-ID", last);
            }
            let sent = tokio::select! {
                r = rb.send() => r,
                _ = self.stop.cancelled() => return,
            };
            match sent {
                Ok(r) if r.status().is_success() => {
                    let before = cursor.last_id.clone();
                    let opened = tokio::time::Instant::now();
                    let _ = self.events(r, &mut cursor, None, true).await;
                    if cursor.last_id != before || opened.elapsed() > CAP {
                        backoff = FIRST;
                    }
                }
                Ok(r) if r.status() == reqwest::StatusCode::METHOD_NOT_ALLOWED => {
                    tracing::info!("the gateway offers no stream outside calls");
                    return;
                }
                Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {
                    // The session expired: the next message opens a new one.
                    tokio::select! {
                        _ = generations.changed() => continue,
                        _ = self.stop.cancelled() => return,
                    }
                }
                Ok(r) => {
                    tracing::debug!(status = %r.status(), "the gateway refused the GET stream");
                    cursor.last_id = None;
                }
                Err(e) => tracing::debug!("the GET stream could not open: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = generations.changed() => {}
                _ = self.stop.cancelled() => return,
            }
            backoff = (backoff * 2).min(CAP);
        }
    }

    /// Ends the gateway's session (DELETE), if one is open.
    async fn end_session(&self) {
        if self.session_id().is_none() {
            return;
        }
        let sent = self
            .request(reqwest::Method::DELETE, true)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        match sent {
            Ok(r) => tracing::debug!(status = %r.status(), "ended the session"),
            Err(e) => tracing::debug!("could not end the session: {e}"),
        }
    }

    fn unreachable(&self, e: &reqwest::Error) -> Problem {
        Problem::new(
            vocab::UPSTREAM_UNAVAILABLE,
            format!(
                "cannot reach the gateway at {}: {}",
                self.endpoint,
                service_kit::client::root_cause(e)
            ),
        )
    }

    /// The problem an HTTP error answer describes.
    async fn refusal(&self, response: reqwest::Response) -> Problem {
        let status = response.status();
        let body = read_bounded(response, 64 * 1024).await.unwrap_or_default();
        let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let said = parsed
            .pointer("/error/message")
            .or_else(|| parsed.get("message"))
            .and_then(Value::as_str)
            .map(String::from)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
        let code = parsed
            .pointer("/error/code")
            .and_then(Value::as_i64)
            .and_then(|c| i32::try_from(c).ok());
        let message = match status.as_u16() {
            401 => format!(
                "the gateway at {} refused the token (HTTP 401): set MCP_BEARER_TOKEN (or --token) to a token the gateway accepts",
                self.endpoint
            ),
            404 if self.session_id().is_some() => format!(
                "the gateway at {} no longer knows this session (HTTP 404), and opening it again failed",
                self.endpoint
            ),
            404 => format!(
                "the gateway at {} answered 404: is --url the gateway's base URL or its /mcp?",
                self.endpoint
            ),
            s => format!("the gateway at {} answered HTTP {s}: {said}", self.endpoint),
        };
        Problem {
            code: code.unwrap_or(if status.is_server_error() {
                vocab::UPSTREAM_UNAVAILABLE
            } else {
                vocab::UPSTREAM_REFUSED
            }),
            message,
            status: Some(status.as_u16()),
        }
    }
}

/// Where a stream was: the last event id and the server's retry delay.
#[derive(Default)]
struct Cursor {
    last_id: Option<String>,
    retry_ms: Option<u64>,
}

/// Whether `message` is the response to `id`.
fn answers(message: &Value, id: Option<&Value>) -> bool {
    id.is_some_and(|id| {
        message.get("id") == Some(id)
            && message.get("method").is_none()
            && (message.get("result").is_some() || message.get("error").is_some())
    })
}

fn session_header(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

/// The JSON-RPC error line for `id`.
fn error_line(id: &Value, problem: &Problem) -> String {
    let mut error = json!({"code": problem.code, "message": problem.message});
    if let Some(status) = problem.status {
        error["data"] = json!({"httpStatus": status});
    }
    json!({"jsonrpc": "2.0", "id": id, "error": error}).to_string()
}

/// `Mcp-Method` and `Mcp-Name` (SEP-2243) of a request or notification.
fn standard_headers(value: &Value) -> Vec<(&'static str, String)> {
    let Some(method) = value.get("method").and_then(Value::as_str) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if reqwest::header::HeaderValue::from_str(method).is_ok() {
        out.push(("Mcp-Method", method.to_string()));
    }
    let key = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => "uri",
        "tasks/get" | "tasks/update" | "tasks/cancel" => "taskId",
        _ => return out,
    };
    if let Some(name) = value
        .pointer(&format!("/params/{key}"))
        .and_then(Value::as_str)
    {
        out.push(("Mcp-Name", vocab::header_value(name).into_owned()));
    }
    out
}

/// A body of at most `max` bytes.
async fn read_bounded(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, Problem> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        Problem::new(
            vocab::UPSTREAM_UNAVAILABLE,
            format!(
                "the gateway's answer broke off: {}",
                service_kit::client::root_cause(&e)
            ),
        )
    })? {
        if body.len() + chunk.len() > max {
            return Err(Problem::new(
                vocab::INTERNAL_ERROR,
                format!("the gateway's answer exceeded {max} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// What [`read_line`] read.
#[derive(Debug, PartialEq)]
enum Line {
    /// A line is in the buffer (without its newline).
    Read,
    /// A line longer than the limit was skipped; its length.
    TooLong(usize),
    Eof,
}

/// Reads one line into `line` (cleared first), never holding more than `max` bytes: a
/// longer line is read to its end and dropped. A last line without newline counts.
async fn read_line<R: AsyncBufRead + Unpin>(
    input: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    line.clear();
    let mut seen = 0usize;
    loop {
        let available = input.fill_buf().await?;
        if available.is_empty() {
            return Ok(match seen {
                0 => Line::Eof,
                n if n > max => Line::TooLong(n),
                _ => Line::Read,
            });
        }
        let (taken, end) = match memchr(available) {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let content = if end {
            &available[..taken - 1]
        } else {
            available
        };
        seen += content.len();
        if seen <= max {
            line.extend_from_slice(content);
        } else {
            line.clear();
        }
        input.consume(taken);
        if end {
            return Ok(if seen > max {
                Line::TooLong(seen)
            } else {
                Line::Read
            });
        }
    }
}

fn memchr(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|b| *b == b'\n')
}

/// Writes queued lines to `output`, one message a line, flushed each; stops the bridge
/// when `output` is gone, and drains what is queued once `done`.
/// One JSON-RPC 2.0 message (request, notification or response), or a batch of them:
/// nothing else reaches the client's stdout.
fn is_jsonrpc(value: &Value) -> bool {
    let one = |m: &Value| {
        m.get("jsonrpc").and_then(Value::as_str) == Some("2.0")
            && (m.get("method").is_some_and(Value::is_string)
                || m.get("result").is_some()
                || m.get("error").is_some_and(Value::is_object))
    };
    match value {
        Value::Array(items) => !items.is_empty() && items.iter().all(one),
        other => one(other),
    }
}

async fn write_out<W: AsyncWrite + Unpin>(
    mut output: W,
    mut queue: mpsc::Receiver<String>,
    stop: CancellationToken,
    done: CancellationToken,
) {
    loop {
        let line = tokio::select! {
            biased;
            l = queue.recv() => l,
            _ = done.cancelled() => queue.try_recv().ok(),
        };
        let Some(line) = line else { break };
        let written = async {
            output.write_all(line.as_bytes()).await?;
            output.write_all(b"\n").await?;
            output.flush().await
        }
        .await;
        if let Err(e) = written {
            tracing::warn!("stdout is gone ({e}): stopping");
            stop.cancel();
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_json_rpc_reaches_stdout() {
        for ok in [
            json!({"jsonrpc": "2.0", "id": 1, "result": {}}),
            json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -1, "message": "x"}}),
            json!({"jsonrpc": "2.0", "method": "notifications/progress"}),
            json!([{"jsonrpc": "2.0", "id": 1, "result": 1}]),
        ] {
            assert!(is_jsonrpc(&ok), "{ok}");
        }
        for bad in [
            json!([]),
            json!("text"),
            json!({}),
            json!({"jsonrpc": "1.0", "id": 1, "result": {}}),
            json!({"jsonrpc": "2.0", "id": 1}),
            json!([{"jsonrpc": "2.0", "id": 1, "result": 1}, 5]),
        ] {
            assert!(!is_jsonrpc(&bad), "{bad}");
        }
    }

    #[test]
    fn the_endpoint_is_mcp_unless_a_path_is_given() {
        assert_eq!(
            endpoint("http://127.0.0.1:3001").unwrap(),
            "http://127.0.0.1:3001/mcp"
        );
        assert_eq!(endpoint("http://h:1/").unwrap(), "http://h:1/mcp");
        assert_eq!(endpoint("https://h/gw/mcp").unwrap(), "https://h/gw/mcp");
        assert!(endpoint("ftp://h").is_err());
        assert!(endpoint("not a url").is_err());
    }

    #[tokio::test]
    async fn lines_are_bounded_and_a_long_one_is_skipped_whole() {
        let input = format!("{}\nshort\n\n{}\nlast", "x".repeat(20), "y".repeat(11));
        let mut reader = tokio::io::BufReader::with_capacity(4, input.as_bytes());
        let mut line = Vec::new();
        let mut got = Vec::new();
        loop {
            let r = read_line(&mut reader, &mut line, 10).await.unwrap();
            if r == Line::Eof {
                break;
            }
            got.push((r, String::from_utf8(line.clone()).unwrap()));
        }
        assert_eq!(
            got,
            vec![
                (Line::TooLong(20), String::new()),
                (Line::Read, "short".into()),
                (Line::Read, String::new()),
                (Line::TooLong(11), String::new()),
                (Line::Read, "last".into()),
            ]
        );
    }

    #[test]
    fn names_that_cannot_travel_bare_are_base64() {
        let h = standard_headers(&json!({"method": "tools/call", "params": {"name": " t"}}));
        assert_eq!(h[1], ("Mcp-Name", "=?base64?IHQ=?=".into()));
        let h = standard_headers(&json!({"method": "tools/call", "params": {"name": "t"}}));
        assert_eq!(
            h,
            vec![
                ("Mcp-Method", "tools/call".into()),
                ("Mcp-Name", "t".into())
            ]
        );
        assert!(standard_headers(&json!({"id": 1, "result": {}})).is_empty());
    }

    #[test]
    fn errors_are_json_rpc_for_the_request_id() {
        let mut p = Problem::new(vocab::UPSTREAM_REFUSED, "no");
        p.status = Some(401);
        let v: Value = serde_json::from_str(&error_line(&json!(7), &p)).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["error"]["code"], vocab::UPSTREAM_REFUSED);
        assert_eq!(v["error"]["data"]["httpStatus"], 401);
    }
}
