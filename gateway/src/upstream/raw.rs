//! The backend half of the pass-through path (`crate::passthrough`): one `tools/call`
//! sent to a backend as the bytes the gateway built, over the instance's own MCP session
//! (its session id, its negotiated protocol version, its pooled HTTP client), and the
//! answer read back as JSON text, never as typed structs.
//!
//! What the backend sends on the call's stream comes out of [`Exchange::next`] as
//! [`Event`]s: messages to pass on, the backend closing the stream mid-call (SEP-1699; the
//! exchange resumes it with `Last-Event-ID` on the next `next`), and the answer. A
//! request the backend makes of the client (`ping`, or a capability this client did not
//! declare, which is why the call is on this path) is answered here. Health, breaker and
//! in-flight counts are booked as for the typed path; an exchange dropped before its
//! answer tells the backend `notifications/cancelled`.
//!
//! Invariant: a raw call is answered within its deadline and its read is capped at
//! `max_response_bytes`; dropped, it is cancelled at the backend.

use std::{
    borrow::Cow,
    collections::VecDeque,
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use crate::sse::Sse;
use crate::vocab::{ACCEPT_BOTH, APPLICATION_JSON};
use bytes::Bytes;
use futures::{FutureExt, Stream, StreamExt, stream::BoxStream};
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rmcp::model::{CancelledNotificationParam, NumberOrString, ProgressToken, RequestId};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::{sync::mpsc, time::Instant};

use super::{
    Failure, Instance, Session,
    health::Admission,
    relay::{RelayGuard, RelayMsg},
};

use crate::vocab::{MCP_METHOD, MCP_NAME, MCP_PROTOCOL_VERSION, MCP_SESSION_ID, TRACEPARENT};
/// How often one call follows the backend to a resumed stream.
const MAX_RESUMES: u32 = 8;
/// Requests of the backend's (made of the client during a call) answered at once for one
/// call; more arriving meanwhile are left unanswered (the backend's own timeouts end
/// them), so a backend cannot make the gateway open connections without bound.
pub const MAX_SERVER_REQUESTS_PER_CALL: usize = 4;

/// Where one upstream session's raw requests go. Shared with its [`super::resume::WatchedHttp`],
/// which learns the session id from the `initialize` answer.
pub struct RawTarget {
    /// For the rare requests (resuming a stream, answering the backend).
    http: reqwest::Client,
    url: Option<reqwest::Url>,
    /// For the calls: HTTP/1 connections of hyper's, kept here and driven by the call
    /// that uses them (see [`Link`]), without reqwest's layers (URL re-parsing, redirect
    /// and retry policies) that cost a call more than the gateway's own work.
    links: std::sync::Mutex<Vec<Link>>,
    /// `host`, `port`, the `Host` header, and the origin-form request target.
    endpoint: Option<(String, u16, HeaderValue, http::Uri)>,
    /// For an `https` URL: TLS towards `host`.
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
    /// Where connections may go.
    guard: Arc<super::guard::Guard>,
    session_id: OnceLock<HeaderValue>,
    protocol_version: OnceLock<Option<HeaderValue>>,
    /// The gateway's credential towards this upstream (a sensitive header).
    auth: Option<(http::HeaderName, HeaderValue)>,
}

impl RawTarget {
    pub fn new(
        http: reqwest::Client,
        url: &str,
        guard: Arc<super::guard::Guard>,
        auth: Option<(http::HeaderName, HeaderValue)>,
        tls: Arc<rustls::ClientConfig>,
    ) -> Self {
        let tls = reqwest::Url::parse(url)
            .ok()
            .filter(|u| u.scheme() == "https")
            .and_then(|u| {
                let host = u.host_str()?.trim_matches(['[', ']']).to_string();
                let name = rustls_pki_types::ServerName::try_from(host).ok()?;
                Some((tokio_rustls::TlsConnector::from(tls), name))
            });
        let endpoint = reqwest::Url::parse(url).ok().and_then(|u| {
            let host = u.host_str()?.trim_matches(['[', ']']).to_string();
            let port = u.port_or_known_default()?;
            let authority = match u.port() {
                Some(p) => format!("{}:{p}", u.host_str()?),
                None => u.host_str()?.to_string(),
            };
            let target = match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_string(),
            };
            Some((
                host,
                port,
                HeaderValue::from_str(&authority).ok()?,
                target.parse().ok()?,
            ))
        });
        Self {
            http,
            links: std::sync::Mutex::new(Vec::new()),
            endpoint,
            tls,
            guard,
            url: reqwest::Url::parse(url).ok(),
            session_id: OnceLock::new(),
            protocol_version: OnceLock::new(),
            auth,
        }
    }

    /// Remembers the session id the backend assigned (first one wins).
    pub fn note_session(&self, id: &str) {
        if self.session_id.get().is_none()
            && let Ok(v) = HeaderValue::from_str(id)
        {
            let _ = self.session_id.set(v);
        }
    }

    fn version(&self, session: &Session) -> Option<&HeaderValue> {
        self.protocol_version
            .get_or_init(|| {
                let info = session.peer().peer_info()?;
                HeaderValue::from_str(info.protocol_version.as_str()).ok()
            })
            .as_ref()
    }

    /// An idle connection of the pool, ready for a request, or a new one; and whether it
    /// was reused.
    async fn link(&self) -> Result<(Link, bool), Failure> {
        loop {
            let idle = self.lock_links().pop();
            let Some(mut link) = idle else { break };
            let Link { sender, conn } = &mut link;
            if conn.is_none() || sender.is_closed() {
                continue;
            }
            if drive(conn, sender.ready()).await.is_ok() {
                return Ok((link, true));
            }
        }
        let Some((host, port, _, _)) = &self.endpoint else {
            return Err(Failure::NotDelivered("not an http:// URL".into()));
        };
        // Resolved and filtered at every connection, not only at registration.
        let addrs = self
            .guard
            .resolve(host, *port)
            .await
            .map_err(|r| Failure::NotDelivered(r.to_string()))?;
        let tcp = tokio::net::TcpStream::connect(&addrs[..])
            .await
            .map_err(|e| Failure::NotDelivered(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let stream = match &self.tls {
            None => Wire::Plain(tcp),
            Some((connector, name)) => Wire::Tls(Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| Failure::NotDelivered(format!("TLS: {e}")))?,
            )),
        };
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::NotDelivered(service_kit::client::root_cause(&e)))?;
        Ok((
            Link {
                sender,
                conn: Some(Box::pin(conn)),
            },
            false,
        ))
    }

    /// Back to the pool, if still usable.
    fn checkin(&self, link: Link) {
        if link.conn.is_some() && !link.sender.is_closed() {
            let mut links = self.lock_links();
            if links.len() < MAX_IDLE_LINKS {
                links.push(link);
            }
        }
    }

    fn lock_links(&self) -> std::sync::MutexGuard<'_, Vec<Link>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session's headers on a call, and the gateway's credential.
    fn session_headers(&self, session: &Session, headers: &mut http::HeaderMap) {
        if let Some((name, value)) = &self.auth {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(id) = self.session_id.get() {
            headers.insert(MCP_SESSION_ID, id.clone());
        }
        if let Some(v) = self.version(session) {
            headers.insert(MCP_PROTOCOL_VERSION, v.clone());
        }
    }

    fn with_session(
        &self,
        rb: reqwest::RequestBuilder,
        session: &Session,
    ) -> reqwest::RequestBuilder {
        let mut headers = http::HeaderMap::new();
        self.session_headers(session, &mut headers);
        rb.headers(headers)
    }
}

/// The largest error body of a 2026-07-28 backend's 400 or 404 read (rmcp's own bound).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Whether `body` is a JSON-RPC error response to the request `id` (and nothing else):
/// an error object with an integer code and a string message.
fn error_for(body: &[u8], id: &str) -> bool {
    #[derive(Deserialize)]
    struct Error {
        #[allow(dead_code)]
        code: i64,
        #[allow(dead_code)]
        message: String,
    }
    #[derive(Deserialize)]
    struct Response<'a> {
        jsonrpc: &'a str,
        #[serde(borrow)]
        id: Option<&'a RawValue>,
        error: Option<Error>,
        result: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Response<'_>>(body).is_ok_and(|r| {
        r.jsonrpc == "2.0"
            && r.error.is_some()
            && r.result.is_none()
            && r.id
                .is_some_and(|v| serde_json::from_str::<&str>(v.get()).is_ok_and(|v| v == id))
    })
}

/// A fresh id for a request the gateway sends upstream on this path; distinct from
/// rmcp's own (numbers) on the same session.
pub fn next_request_id() -> Arc<str> {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    // itoa, not `format!`: this is on every call's path (`format!` cost ~500 instructions).
    // Written on the stack and copied once into the `Arc`: a `String` first would be a
    // second allocation.
    let mut digits = itoa::Buffer::new();
    let n = digits
        .format(NEXT.fetch_add(1, Ordering::Relaxed))
        .as_bytes();
    let mut id = [0u8; 3 + 20];
    id[..3].copy_from_slice(b"gw-");
    id[3..3 + n.len()].copy_from_slice(n);
    Arc::from(std::str::from_utf8(&id[..3 + n.len()]).unwrap_or("gw-"))
}

/// What the backend sent on the call's stream.
#[derive(Debug)]
pub enum Event {
    /// A notification (log message, progress, ...) as JSON text.
    Message(String),
    /// The backend closed the stream mid-call, with this reconnection hint; the next
    /// `next` resumes it.
    Closed(Option<Duration>),
    /// The JSON-RPC response to the call (its `id` is the gateway's).
    Answer(Answer),
}

enum Phase {
    Json(Bytes),
    Events(BoxStream<'static, Result<Sse, sse_stream::Error>>),
    Resume(Option<Duration>),
    Done,
}

/// What a pass-through call sends: the request's bytes, and the W3C trace context the
/// backend hears of in a header (when traces are on).
#[derive(Clone)]
pub struct Outgoing {
    pub body: Bytes,
    pub traceparent: Option<HeaderValue>,
    /// For a 2026-07-28 instance: the `Mcp-Name` of the call (its `Mcp-Method` is
    /// `tools/call`); that revision's requests carry both.
    pub mcp_name: Option<HeaderValue>,
    /// Its `Mcp-Param-*` headers (SEP-2243), for a 2026-07-28 instance.
    pub param_headers: Vec<(http::HeaderName, HeaderValue)>,
    /// The client's log level: log messages below it are not passed on.
    pub min_log_level: Option<rmcp::model::LoggingLevel>,
}

/// How a call failed after its first event (not retried); `Service::raw_error` words it.
#[derive(Debug)]
pub struct Failed(pub(super) Failure);

/// One call in flight on the pass-through path.
pub struct Exchange {
    instance: Arc<Instance>,
    session: Arc<Session>,
    target: Arc<RawTarget>,
    id: Arc<str>,
    phase: Phase,
    last_event_id: Option<String>,
    retry: Option<Duration>,
    resumes: u32,
    deadline: Instant,
    timeout_ms: u64,
    settled: bool,
    cancel_reason: &'static str,
    /// What the session's client handler relays for this call (log messages a backend
    /// sends on its standalone stream), when the client wants them.
    relay: Option<(RelayGuard, mpsc::Receiver<RelayMsg>)>,
    /// Relayed messages that arrived with the answer, to pass on before it.
    queued: VecDeque<String>,
    held: Option<Answer>,
    cap: Arc<Cap>,
    traceparent: Option<HeaderValue>,
    mcp_name: Option<HeaderValue>,
    param_headers: Vec<(http::HeaderName, HeaderValue)>,
    /// The client's log level, as `level_rank` orders it.
    min_level: Option<u8>,
    /// Answers to the backend's requests in flight (see [`MAX_SERVER_REQUESTS_PER_CALL`]).
    answering: OnceLock<Arc<tokio::sync::Semaphore>>,
}

impl Instance {
    /// Sends `body` (a request whose id is `id`) and reads up to the first event, within
    /// `deadline`. One attempt for `Service::with_failover`.
    pub(super) async fn open_raw(
        self: &Arc<Self>,
        id: Arc<str>,
        out: Outgoing,
        admission: Admission,
        deadline: Instant,
        timeout_ms: u64,
        relay: bool,
    ) -> Result<(Exchange, Event), Failure> {
        let Some(session) = self.session.load_full() else {
            if admission == Admission::Probe {
                self.health().release_probe();
            }
            return Err(Failure::NotDelivered(self.last_error_or("no session")));
        };
        let Some(target) = session.service().raw.clone() else {
            // The pass-through path never routes a stdio server's calls (see
            // `Service::stdio`); refused without touching the instance's health.
            return Err(Failure::Refused(0));
        };
        // Registered before sending, so nothing the backend says can come too early.
        let relay = relay.then(|| {
            let (tx, rx) = mpsc::channel(64);
            let request = RequestId::from(NumberOrString::String(Arc::clone(&id)));
            let token = ProgressToken(NumberOrString::String(Arc::clone(&id)));
            (session.service().relays.register(request, token, tx), rx)
        });
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let mut exchange = Exchange {
            instance: Arc::clone(self),
            session,
            target,
            id,
            phase: Phase::Done,
            last_event_id: None,
            retry: None,
            resumes: 0,
            deadline,
            timeout_ms,
            settled: false,
            cancel_reason: "the gateway's client went away",
            relay,
            queued: VecDeque::new(),
            held: None,
            cap: Cap::new(self.options.max_response_bytes),
            traceparent: out.traceparent,
            mcp_name: out.mcp_name,
            param_headers: out.param_headers,
            min_level: out.min_log_level.map(super::level_rank),
            answering: OnceLock::new(),
        };
        let sent = match tokio::time::timeout_at(deadline, exchange.send(out.body)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Timeout(timeout_ms)),
        };
        if let Err(f) = sent {
            if matches!(f, Failure::Timeout(_)) {
                exchange.cancel("timed out at the gateway");
            }
            exchange.settle(Err(&f));
            return Err(f);
        }
        let first = exchange.next().await?;
        Ok((exchange, first))
    }
}

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    /// Read only for a log message's level (anything else in it is the client's).
    #[serde(borrow)]
    params: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "crate::jsonrpc::optional_str")]
    method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

/// A log message's `params`, for its level: one this cannot read is passed on unfiltered.
#[derive(Deserialize)]
struct LevelOnly {
    level: rmcp::model::LoggingLevel,
}

/// The backend's response to a call, read once: its text and where in it the result
/// (or error) is.
#[derive(Debug)]
pub struct Answer {
    text: String,
    span: Option<(bool, std::ops::Range<usize>)>,
}

impl Answer {
    /// `("result" | "error", its JSON)`, or `None` for a response with neither.
    pub fn payload(&self) -> Option<(&'static str, &str)> {
        let (error, range) = self.span.as_ref()?;
        let member = if *error { "error" } else { "result" };
        Some((member, self.text.get(range.clone())?))
    }
}

/// How many idle connections to a backend are kept.
const MAX_IDLE_LINKS: usize = 256;

type Conn = hyper::client::conn::http1::Connection<TokioIo<Wire>, Full<Bytes>>;

/// A connection to a backend: plain TCP, or TLS over it for an `https` URL.
enum Wire {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

impl tokio::io::AsyncRead for Wire {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Wire::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Wire::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Wire {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Wire::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Wire::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Wire::Plain(s) => Pin::new(s).poll_flush(cx),
            Wire::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Wire::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Wire::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One HTTP/1 connection to the backend. hyper's pooled clients drive each connection in
/// a task of its own, so every request and every chunk of its answer crosses between two
/// tasks (often two threads); here the call that holds the connection drives it, in its
/// own task ([`drive`], [`Driven`]).
struct Link {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    /// `None` once the connection has ended.
    conn: Option<Pin<Box<Conn>>>,
}

/// Polls `fut` while driving the connection's I/O.
async fn drive<F: Future>(conn: &mut Option<Pin<Box<Conn>>>, fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        if let Some(c) = conn
            && c.as_mut().poll(cx).is_ready()
        {
            *conn = None;
        }
        fut.as_mut().poll(cx)
    })
    .await
}

/// A call's SSE answer, read while driving its connection; the connection goes back to
/// the pool when the answer ends.
struct Driven {
    body: BoxStream<'static, Result<Sse, sse_stream::Error>>,
    link: Option<Link>,
    target: Arc<RawTarget>,
}

/// How much an answer may weigh (`max_response_bytes`): a JSON body in all, an SSE
/// stream per message. Shared by a call's stream and the exchange that reads it, which
/// tells an oversized message from a broken stream.
struct Cap {
    max: usize,
    /// Bytes received since the last complete SSE message.
    pending: std::sync::atomic::AtomicUsize,
    exceeded: std::sync::atomic::AtomicBool,
}

impl Cap {
    fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            pending: Default::default(),
            exceeded: Default::default(),
        })
    }

    fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Acquire)
    }

    fn failure(&self, service: &str) -> Failure {
        Failure::Upstream(super::oversized(service, self.max))
    }

    /// SSE messages parsed from `bytes`, each at most `max` bytes: the stream fails
    /// once more than that arrives without a message completing.
    fn events<S, E>(
        self: &Arc<Self>,
        bytes: S,
    ) -> BoxStream<'static, Result<Sse, sse_stream::Error>>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        self.pending.store(0, Ordering::Relaxed);
        let counted = Arc::clone(self);
        let bytes = bytes.map(move |chunk| -> Result<Bytes, std::io::Error> {
            let chunk = chunk.map_err(std::io::Error::other)?;
            let pending = counted.pending.fetch_add(chunk.len(), Ordering::Relaxed) + chunk.len();
            if pending > counted.max {
                counted.exceeded.store(true, Ordering::Release);
                return Err(std::io::Error::other(
                    "an SSE message exceeded max_response_bytes",
                ));
            }
            Ok(chunk)
        });
        let reset = Arc::clone(self);
        crate::sse::events(bytes)
            .inspect(move |event| {
                if event.is_ok() {
                    reset.pending.store(0, Ordering::Relaxed);
                }
            })
            .boxed()
    }
}

impl Stream for Driven {
    type Item = Result<Sse, sse_stream::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(link) = &mut this.link
            && let Some(c) = &mut link.conn
            && c.as_mut().poll(cx).is_ready()
        {
            link.conn = None;
        }
        let item = ready!(Pin::new(&mut this.body).poll_next(cx));
        if item.is_none()
            && let Some(link) = this.link.take()
        {
            this.target.checkin(link);
        }
        Poll::Ready(item)
    }
}
const TOOLS_CALL: HeaderValue = HeaderValue::from_static("tools/call");
/// The most headers a call's request carries besides its `Mcp-Param-*` ones: `Host`,
/// `Content-Type`, `Accept`, `traceparent`, `Mcp-Method`, `Mcp-Name`, the credential,
/// the session id and the protocol version.
const REQUEST_HEADERS: usize = 9;

impl Exchange {
    async fn send(&mut self, body: Bytes) -> Result<(), Failure> {
        let Some((_, _, host, target)) = &self.target.endpoint else {
            return Err(Failure::NotDelivered(format!(
                "{} is not an http:// URL",
                self.instance.url
            )));
        };
        let mut request = http::Request::post(target.clone())
            .body(Full::new(body))
            .map_err(|e| Failure::NotDelivered(e.to_string()))?;
        let headers = request.headers_mut();
        // Room for every header below at once: grown one at a time, the map reallocates
        // and rehashes twice per call.
        headers.reserve(REQUEST_HEADERS + self.param_headers.len());
        headers.insert(header::HOST, host.clone());
        headers.insert(header::CONTENT_TYPE, APPLICATION_JSON);
        headers.insert(header::ACCEPT, ACCEPT_BOTH);
        if let Some(traceparent) = &self.traceparent {
            headers.insert(TRACEPARENT, traceparent.clone());
        }
        if let Some(name) = &self.mcp_name {
            headers.insert(MCP_METHOD, TOOLS_CALL);
            headers.insert(MCP_NAME, name.clone());
        }
        for (name, value) in &self.param_headers {
            headers.insert(name, value.clone());
        }
        self.target.session_headers(&self.session, headers);
        let (mut link, reused) = self.target.link().await?;
        let Link { sender, conn } = &mut link;
        let response = drive(conn, sender.send_request(request))
            .await
            .map_err(|e| {
                let cause = service_kit::client::root_cause(&e);
                // A pooled connection the backend had closed: the request never left.
                if e.is_canceled() || (reused && e.is_closed()) {
                    Failure::NotDelivered(cause)
                } else {
                    Failure::Lost(cause)
                }
            })?;
        let phase = self.answer_phase(response, link).await?;
        self.phase = phase;
        Ok(())
    }

    async fn answer_phase(
        &mut self,
        response: http::Response<Incoming>,
        mut link: Link,
    ) -> Result<Phase, Failure> {
        let status = response.status();
        if status == StatusCode::NOT_FOUND && self.target.session_id.get().is_some() {
            return Err(Failure::Expired(
                "the backend no longer knows the session (HTTP 404)".into(),
            ));
        }
        // A 2026-07-28 backend answers some JSON-RPC errors with HTTP 400 or 404 (a
        // missing capability, a header mismatch, an unknown method): that answer, when
        // it is one for this request, is the call's.
        if self.mcp_name.is_some()
            && matches!(status, StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND)
            && response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|k| k.starts_with("application/json"))
        {
            let body = http_body_util::Limited::new(response.into_body(), MAX_ERROR_BODY);
            let bytes = drive(&mut link.conn, body.collect())
                .await
                .map(|c| c.to_bytes())
                .map_err(|_| Failure::Refused(status.as_u16()))?;
            self.target.checkin(link);
            if error_for(&bytes, &self.id) {
                return Ok(Phase::Json(bytes));
            }
            return Err(Failure::Refused(status.as_u16()));
        }
        // The request reached the backend and failed there: that call alone fails (its
        // body is not read: it may reflect the gateway's credential).
        if status.is_client_error() {
            return Err(Failure::Refused(status.as_u16()));
        }
        if !status.is_success() || status == StatusCode::ACCEPTED {
            return Err(Failure::Lost(format!(
                "the backend answered HTTP {status} instead of a response"
            )));
        }
        let kind = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if kind.starts_with("text/event-stream") {
            return Ok(Phase::Events(Box::pin(Driven {
                body: self.cap.events(response.into_body().into_data_stream()),
                link: Some(link),
                target: Arc::clone(&self.target),
            })));
        }
        let body = http_body_util::Limited::new(response.into_body(), self.cap.max);
        let bytes = match drive(&mut link.conn, body.collect()).await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(self.cap.failure(&self.instance.service));
            }
            Err(e) => return Err(Failure::Lost(service_kit::client::root_cause(&*e))),
        };
        self.target.checkin(link);
        Ok(Phase::Json(bytes))
    }

    /// The next thing the backend sent after the first, within the call's deadline.
    pub async fn advance(&mut self) -> Result<Event, Failed> {
        self.next().await.map_err(Failed)
    }

    async fn next(&mut self) -> Result<Event, Failure> {
        match tokio::time::timeout_at(self.deadline, self.next_event()).await {
            Ok(Ok(event)) => {
                if matches!(event, Event::Answer(_)) {
                    self.settle(Ok(()));
                }
                Ok(event)
            }
            Ok(Err(f)) => {
                self.settle(Err(&f));
                Err(f)
            }
            Err(_) => {
                let f = Failure::Timeout(self.timeout_ms);
                self.cancel("timed out at the gateway");
                self.settle(Err(&f));
                Err(f)
            }
        }
    }

    fn wanted(&self, level: Option<rmcp::model::LoggingLevel>) -> bool {
        at_least(level, self.min_level)
    }

    async fn next_event(&mut self) -> Result<Event, Failure> {
        loop {
            if let Some(message) = self.queued.pop_front() {
                return Ok(Event::Message(message));
            }
            if let Some(answer) = self.held.take() {
                return Ok(Event::Answer(answer));
            }
            match &mut self.phase {
                Phase::Done => return Err(Failure::Lost("the call has ended".into())),
                Phase::Json(bytes) => {
                    let bytes = std::mem::take(bytes);
                    self.phase = Phase::Done;
                    let text = String::from_utf8(bytes.into())
                        .map_err(|_| Failure::Lost("the backend's answer is not UTF-8".into()))?;
                    return match self.classify(&text) {
                        Kind::Answer(span) => Ok(self.answer(Answer { text, span })),
                        _ => Err(Failure::Lost(
                            "the backend answered with something other than the response".into(),
                        )),
                    };
                }
                Phase::Events(stream) => match match &mut self.relay {
                    Some((_, rx)) => tokio::select! {
                        biased;
                        Some(msg) = rx.recv() => {
                            if let Some(message) = relayed(msg, self.min_level) {
                                return Ok(Event::Message(message));
                            }
                            continue;
                        }
                        event = stream.next() => event,
                    },
                    None => stream.next().await,
                } {
                    Some(Ok(event)) => {
                        if let Some(id) = event.id {
                            self.last_event_id = Some(id);
                        }
                        if let Some(ms) = event.retry {
                            self.retry = Some(Duration::from_millis(ms));
                        }
                        let Some(data) = event.data.filter(|d| !d.trim().is_empty()) else {
                            continue;
                        };
                        match self.classify(&data) {
                            Kind::Ignored => continue,
                            Kind::Answer(span) => {
                                // Read the stream's end so its connection goes back to
                                // the pool; a stream that lingers is drained aside.
                                if let Phase::Events(mut rest) =
                                    std::mem::replace(&mut self.phase, Phase::Done)
                                    && rest.next().now_or_never().is_none()
                                {
                                    tokio::spawn(async move {
                                        let drain = async { while rest.next().await.is_some() {} };
                                        let _ = tokio::time::timeout(Duration::from_secs(5), drain)
                                            .await;
                                    });
                                }
                                return Ok(self.answer(Answer { text: data, span }));
                            }
                            Kind::Request(id, method) => self.decline(&id, &method),
                            Kind::Log(level) if self.wanted(level) => {
                                return Ok(Event::Message(data));
                            }
                            Kind::Log(_) => continue,
                        }
                    }
                    Some(Err(_)) if self.cap.exceeded() => {
                        return Err(self.cap.failure(&self.instance.service));
                    }
                    Some(Err(e)) if !self.can_resume() => {
                        return Err(Failure::Lost(format!("the response stream broke: {e}")));
                    }
                    // Broken, not closed on purpose: resumed without a word downstream.
                    Some(Err(_)) => self.phase = Phase::Resume(None),
                    None if !self.can_resume() => {
                        return Err(Failure::Lost(
                            "the backend ended the response stream without an answer".into(),
                        ));
                    }
                    None => {
                        self.phase = Phase::Resume(self.retry);
                        return Ok(Event::Closed(self.retry));
                    }
                },
                Phase::Resume(wait) => {
                    let wait = wait.unwrap_or_default().min(Duration::from_secs(5));
                    tokio::time::sleep(wait).await;
                    self.resumes += 1;
                    let phase = self.resume().await?;
                    self.phase = phase;
                }
            }
        }
    }

    /// The answer, after whatever was relayed for the call in the meantime.
    fn answer(&mut self, answer: Answer) -> Event {
        if let Some((_, rx)) = &mut self.relay {
            while let Ok(msg) = rx.try_recv() {
                self.queued.extend(relayed(msg, self.min_level));
            }
        }
        match self.queued.pop_front() {
            Some(first) => {
                self.held = Some(answer);
                Event::Message(first)
            }
            None => Event::Answer(answer),
        }
    }

    fn can_resume(&self) -> bool {
        self.last_event_id.is_some() && self.resumes < MAX_RESUMES
    }

    /// `GET` with `Last-Event-ID`: the rest of the call's stream.
    async fn resume(&mut self) -> Result<Phase, Failure> {
        let (Some(url), Some(last)) = (&self.target.url, &self.last_event_id) else {
            return Err(Failure::Lost("nothing to resume from".into()));
        };
        let rb = self
            .target
            .http
            .get(url.clone())
            .header(header::ACCEPT, "text/event-stream")
            .header("last-event-id", last.as_str());
        let response = self
            .target
            .with_session(rb, &self.session)
            .send()
            .await
            .map_err(|e| Failure::Lost(service_kit::client::root_cause(&e)))?;
        if !response.status().is_success() {
            return Err(Failure::Lost(format!(
                "resuming the response stream failed: HTTP {}",
                response.status()
            )));
        }
        Ok(Phase::Events(self.cap.events(response.bytes_stream())))
    }

    /// What one message of the backend's is to this call. Only the answer, requests of
    /// the backend's and log messages matter; anything else (not JSON, responses to
    /// other requests, notifications about the session) is not the client's.
    fn classify(&self, text: &str) -> Kind {
        let Ok(probe) = serde_json::from_str::<Probe>(text) else {
            return Kind::Ignored;
        };
        match (probe.id, probe.method) {
            (Some(id), None) if is_our_id(id.get(), &self.id) => {
                let member = |raw: &RawValue| {
                    let start = raw.get().as_ptr() as usize - text.as_ptr() as usize;
                    start..start + raw.get().len()
                };
                Kind::Answer(match (probe.result, probe.error) {
                    (Some(result), _) => Some((false, member(result))),
                    (None, Some(error)) => Some((true, member(error))),
                    (None, None) => None,
                })
            }
            (Some(id), Some(method)) => Kind::Request(id.get().to_string(), method.into_owned()),
            (None, Some(method)) if method == "notifications/message" => Kind::Log(
                probe
                    .params
                    .and_then(|p| serde_json::from_str::<LevelOnly>(p.get()).ok())
                    .map(|p| p.level),
            ),
            _ => Kind::Ignored,
        }
    }

    /// Answers a request the backend made of the client: this path only carries calls of
    /// clients that declared no sampling, elicitation or roots, so only `ping` succeeds.
    fn decline(&self, id: &str, method: &str) {
        let body = if method == "ping" {
            format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#)
        } else {
            let message = serde_json::to_string(&format!(
                "{method}: the client did not declare this capability"
            ))
            .unwrap_or_default();
            format!(
                r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-32601,"message":{message}}}}}"#
            )
        };
        let Some(url) = self.target.url.clone() else {
            return;
        };
        let rb = self
            .target
            .http
            .post(url)
            .header(header::CONTENT_TYPE, APPLICATION_JSON)
            .header(header::ACCEPT, ACCEPT_BOTH);
        let request = self.target.with_session(rb, &self.session).body(body);
        let answering = self
            .answering
            .get_or_init(|| Arc::new(tokio::sync::Semaphore::new(MAX_SERVER_REQUESTS_PER_CALL)));
        let Ok(permit) = Arc::clone(answering).try_acquire_owned() else {
            tracing::debug!(service = %self.instance.service, %method,
                "a request of the backend's left unanswered: too many at once for one call");
            return;
        };
        let within = self.instance.options.connect_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(within, request.send()).await;
        });
    }

    /// The instance the call went to.
    pub fn instance_id(&self) -> &str {
        &self.instance.id
    }

    /// When the call times out.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// From now on, ending early tells the backend this reason.
    pub fn cancel_reason(&mut self, reason: &'static str) {
        self.cancel_reason = reason;
    }

    fn cancel(&mut self, reason: &'static str) {
        if self.settled {
            return;
        }
        let peer = self.session.peer().clone();
        let id = RequestId::from(NumberOrString::String(Arc::clone(&self.id)));
        let params = CancelledNotificationParam::new(Some(id), Some(reason.to_string()));
        tokio::spawn(async move {
            let _ = peer.notify_cancelled(params).await;
        });
    }

    fn settle(&mut self, outcome: Result<(), &Failure>) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        self.instance.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.instance.settle(outcome, &self.session);
    }
}

/// A log message of `level` is passed on to a client whose level is `min` (a message
/// without a readable level is: the client decides).
fn at_least(level: Option<rmcp::model::LoggingLevel>, min: Option<u8>) -> bool {
    match (level, min) {
        (Some(level), Some(min)) => super::level_rank(level) >= min,
        _ => true,
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if !self.settled {
            self.cancel(self.cancel_reason);
            self.settle(Err(&Failure::Cancelled));
        }
    }
}

/// A relayed message as the JSON text to pass on, if it is one to pass on. Requests of
/// the backend's are declined: this path only carries calls of clients that declared no
/// sampling, elicitation or roots.
fn relayed(msg: RelayMsg, min_level: Option<u8>) -> Option<String> {
    match msg {
        RelayMsg::Log(params) if !at_least(Some(params.level), min_level) => None,
        RelayMsg::Log(params) => serde_json::to_string(&serde_json::json!({
            "jsonrpc": "2.0", "method": "notifications/message", "params": params
        }))
        .ok(),
        RelayMsg::Request(_, reply) => {
            let _ = reply.send(Err(rmcp::ErrorData::new(
                rmcp::model::ErrorCode::METHOD_NOT_FOUND,
                "the client did not declare this capability",
                None,
            )));
            None
        }
        RelayMsg::Progress(_) | RelayMsg::StreamClosed(_) => None,
    }
}

enum Kind {
    /// The call's response: whether it is an error, and where its result or error is.
    Answer(Option<(bool, std::ops::Range<usize>)>),
    /// A request of the backend's: its id (JSON text) and method.
    Request(String, String),
    /// A log message (`notifications/message`) and its level, passed on to the client
    /// when at its level or above.
    Log(Option<rmcp::model::LoggingLevel>),
    /// Nothing for the client.
    Ignored,
}

/// `raw` (JSON text of an id) is the string `ours`.
fn is_our_id(raw: &str, ours: &str) -> bool {
    raw.len() == ours.len() + 2
        && raw.starts_with('"')
        && raw.ends_with('"')
        && &raw[1..raw.len() - 1] == ours
}

#[cfg(test)]
mod tests {
    use super::{is_our_id, next_request_id};

    #[test]
    fn request_ids_are_gw_and_a_new_number() {
        let (a, b) = (next_request_id(), next_request_id());
        for id in [&a, &b] {
            let n = id.strip_prefix("gw-").expect("gw- prefix");
            assert!(
                !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()),
                "{id}"
            );
        }
        let number = |id: &str| id[3..].parse::<u64>().expect("a number");
        assert!(number(&b) > number(&a), "{a} {b}");
    }

    #[test]
    fn ids_match_as_json_strings_only() {
        assert!(is_our_id(r#""gw-7""#, "gw-7"));
        assert!(!is_our_id(r#""gw-70""#, "gw-7"));
        assert!(!is_our_id("7", "7"));
        assert!(!is_our_id(r#""gw-7"#, "gw-7"));
    }
}
