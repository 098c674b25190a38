//! `tools/call` and `tools/list` without rmcp's typed pipeline: the calls every client
//! makes most, carried as JSON text from the client's POST to the backend and back. It
//! also answers a session's `GET` that resumes a stream it closed (`Last-Event-ID:
//! fp/<n>`), notes `logging/setLevel` (the session leaves this path) and
//! `notifications/cancelled` (the backend is told), and keeps every session's owner,
//! activity and confirmation for the endpoint's caps and expiry. A session that needs
//! nothing of rmcp's copy goes without one until a request does
//! ([`Passthrough::hibernate`]); rmcp then restores it from the client's `initialize`
//! parameters kept here ([`Restore`]).
//!
//! Routing a call needs its `id`, its tool `name` and nothing else; the arguments and
//! the result are the client's and the backend's business. So when a call is one this
//! path can carry exactly as the typed path would, [`Passthrough`] takes it before rmcp
//! does: it reads the envelope (borrowing the arguments as raw JSON), looks the tool up
//! in the catalog, builds the backend's request around the raw arguments, and sends it
//! over the instance's own session (`upstream::raw`). The backend's result goes back
//! inside a response with the client's id, byte for byte.
//!
//! A call takes this path only when nothing about it needs the typed machinery:
//!
//! - it is a `tools/call` request with a string or number id, `params` holding only
//!   `name` and an object `arguments` (no `_meta`: no progress token, no per-request
//!   protocol metadata of the 2026-07-28 revision), for a tool the catalog knows;
//! - the request's `Host` and `Origin` are plainly allowed (anything doubtful is left to
//!   rmcp's own checks); a credential's allow-list is applied by the policy core, as on
//!   the typed path (its `tools/list` is left to rmcp's handler, which filters it);
//! - sessionless, it carries no protocol version or one before the stateless revision; in a
//!   session, the session is one this module saw initialized, by a client that declared
//!   no sampling, elicitation or roots (those need the client's own upstream sessions),
//!   and the request carries that session's protocol version and the media types rmcp
//!   would demand. A level the client set (`logging/setLevel`) is noted here: the
//!   backend's log messages below it are not passed on, as on the typed path.
//!
//! A call the policy core refuses (an unknown tool, a rate limit) is refused here with
//! the core's error. Everything else (bad input, every other method) goes to rmcp, which
//! answers it as before. In a session the answer is JSON when the backend sent nothing
//! else first; otherwise an SSE stream relays what the backend sends (its log messages)
//! and then the answer. If the backend closes the call's stream mid-call (SEP-1699), a
//! client at 2025-11-25 or later sees its stream closed the same way (event id
//! `fp/<n>`) and resumes it here with `Last-Event-ID`; others never notice. A client's
//! `notifications/cancelled` for a call on this path reaches the backend.
//!
//! Invariant: this codec decides no policy: it carries a call the core planned, byte for
//! byte, and otherwise leaves the request to rmcp unchanged.

use std::{
    borrow::Cow,
    collections::VecDeque,
    convert::Infallible,
    sync::{
        Arc, LazyLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwapOption;
use axum::{body::Body, response::Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use memchr::memmem;
use rmcp::{
    model::LoggingLevel,
    transport::streamable_http_server::session::store::{
        SessionState, SessionStore, SessionStoreError,
    },
};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::{
    catalog::Catalog,
    jsonrpc::Envelope,
    observe::{CallTicket, Caller, Outcome},
    proxy::Target,
    registry::{CallGuard, Registry},
    upstream::{
        CallError, Service,
        raw::{Answer, Event, Exchange, next_request_id},
    },
    vocab::{APPLICATION_JSON, Allow, EVENT_STREAM, FastDashMap},
};

/// The first revision whose clients resume SSE streams (priming events, SEP-1699).
const RESUMABLE_SINCE: &str = "2025-11-25";
/// Revisions this path serves (those before the stateless 2026-07-28 revision, whose
/// requests carry their protocol metadata in `_meta`).
const SESSION_VERSIONS: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// Event ids of streams this module closed: `fp/<n>`.
const PARKED_PREFIX: &str = "fp/";
/// The most a client's declared sampling, elicitation and roots may take as JSON for its
/// calls to take this path (they travel in each call's `_meta`).
const MAX_DECLARED_BYTES: usize = 4096;
/// How long a call of a client that can be asked holds the backend's messages while it
/// waits for the answer: an `input_required` answer within it is handed to the typed
/// path; after it, the messages stream as they come (and a later `input_required` is
/// an error, since the client has had part of the answer's stream).
const HOLD_FOR: Duration = Duration::from_secs(2);
/// What a call of a client that can be asked holds of the backend's messages until the
/// answer (see `Live::gather`): at most this many bytes; later messages are dropped.
const MAX_HELD_BYTES: usize = 1 << 20;
/// An SSE answer's `Cache-Control`, made once (as `vocab`'s media types).
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
/// How long a closed stream waits for its client after the call's own deadline.
const PARK_GRACE: Duration = Duration::from_secs(5);

/// A session whose calls may take this path.
#[derive(Clone)]
pub struct FastSession {
    version: Arc<str>,
    resumable: bool,
    /// The level the client set (`logging/setLevel`); every message before it does.
    level: Option<LoggingLevel>,
    /// What the client declared of sampling, elicitation and roots (a JSON object), if
    /// any: its calls take this path to backends that speak 2026-07-28 only.
    declared: Option<Arc<str>>,
}

impl FastSession {
    /// Whether the session lives with the resumable (2025-11-25+) rmcp service.
    pub fn resumable(&self) -> bool {
        self.resumable
    }
}

/// The pass-through path (see the module documentation).
pub struct Passthrough {
    registry: Arc<Registry>,
    page_size: usize,
    /// `tools/list` pages of the current catalog, serialized once per catalog.
    pages: ArcSwapOption<Pages>,
    /// Allowed `Host` and `Origin` values.
    origins: crate::origins::Origins,
    sessions: FastDashMap<String, FastSession>,
    /// Every session's owner: the credential that opened it (a session id is no proof
    /// of identity).
    owners: FastDashMap<String, Arc<str>>,
    /// The virtual server of each session opened on one's endpoint: it is that
    /// endpoint's alone.
    servers: FastDashMap<String, Arc<str>>,
    /// When each session was last used (ms since `epoch`), for idle expiry: rmcp's own
    /// idle timer does not see the calls this path answers.
    activity: FastDashMap<String, u64>,
    /// Open sessions per credential.
    per_owner: FastDashMap<Arc<str>, usize>,
    /// Sessions whose client has not sent `notifications/initialized` yet, with when
    /// they were opened (ms since `epoch`): they are closed `session_init_timeout_ms`
    /// after that, whatever else they send.
    pending: FastDashMap<String, u64>,
    epoch: std::time::Instant,
    /// Calls in flight on this path in a session, by [`call_key`].
    calls: FastDashMap<String, CancellationToken>,
    parked: FastDashMap<u64, Parked>,
    /// Sessions without rmcp's copy (see [`Self::hibernate`]), with what rmcp needs to
    /// make one.
    dormant: FastDashMap<String, Dormant>,
    /// Held while a request goes to rmcp for a session without its copy ([`Self::waking`]),
    /// one of them per session id's hash.
    waking: [tokio::sync::Mutex<()>; WAKING_LOCKS],
    /// A replica of a cluster: a client's stream is never closed for it to resume (its
    /// `Last-Event-ID` could reach another replica, which does not hold the call).
    clustered: bool,
}

/// A session rmcp holds no copy of: its client's `initialize` parameters (JSON), which
/// rmcp replays to restore one ([`Restore`]), and which of rmcp's services it belongs to.
struct Dormant {
    init: Arc<str>,
    resumable: bool,
}

/// Locks that order the requests reaching rmcp for sessions without a copy (see
/// `Passthrough::waking`): sessions share one when their ids' hashes meet.
const WAKING_LOCKS: usize = 64;

/// The most a session's `initialize` parameters may take as JSON for it to hibernate
/// (the same bound as a cluster's shared sessions: each is held until the session ends).
pub const MAX_DORMANT_INIT_BYTES: usize = crate::sessions::MAX_INIT_BYTES;

struct Pages {
    /// Held so its address cannot be reused by a later catalog while compared.
    catalog: Arc<Catalog>,
    results: Vec<Bytes>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams<'a> {
    #[serde(borrow)]
    cursor: Option<Cow<'a, str>>,
}

struct Parked {
    session: String,
    /// A mutex only to make the parking lot `Sync` (the backend's stream is not).
    live: std::sync::Mutex<Live>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallParams<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    arguments: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct CancelParams<'a> {
    #[serde(borrow, rename = "requestId")]
    request_id: Option<&'a RawValue>,
}

/// What the pass-through path does with a POST ([`Passthrough::carries`]).
enum Carry {
    /// A `tools/call`: routed, then carried or refused here.
    Call,
    /// A `tools/list`: a page of the serialized catalog.
    List,
    /// A session's `logging/setLevel`: noted, answered by rmcp.
    SetLevel,
    /// A session's `notifications/cancelled`: the call is cancelled upstream.
    Cancel,
}

/// A routed call, ready to send.
struct Call {
    client_id: String,
    service: Arc<Service>,
    upstream_id: Arc<str>,
    body: Bytes,
    retry_safe: bool,
    ticket: CallTicket,
    /// The upstream part's span (`none` when traces are off) and its W3C context.
    span: tracing::Span,
    traceparent: Option<HeaderValue>,
    mcp_name: Option<HeaderValue>,
    /// Its `Mcp-Param-*` headers (2026-07-28).
    param_headers: Vec<(HeaderName, HeaderValue)>,
    min_log_level: Option<LoggingLevel>,
    /// The client declared sampling, elicitation or roots: a backend's questions
    /// (`input_required`) are the typed path's to ask it.
    capable: bool,
    /// The backend speaks 2026-07-28: it has no session, so whatever it says of the call
    /// comes on the call's own stream and nothing is relayed from elsewhere.
    modern: bool,
}

/// The `_meta` members a 2026-07-28 request on this path carries (see `route`).
const MODERN_META: &str = concat!(
    r#""io.modelcontextprotocol/protocolVersion":"2026-07-28","#,
    r#""io.modelcontextprotocol/clientInfo":{"name":"mcp-gateway","version":""#,
    env!("CARGO_PKG_VERSION"),
    r#""},"io.modelcontextprotocol/clientCapabilities":"#
);
/// The `_meta` member naming the client's log level (its value follows).
const LOG_LEVEL: &str = r#""io.modelcontextprotocol/logLevel":"#;

impl Passthrough {
    pub fn new(
        registry: Arc<Registry>,
        page_size: usize,
        allowed_hosts: &[String],
        allowed_origins: &[String],
    ) -> Self {
        Self {
            clustered: registry.cluster_store().is_some(),
            registry,
            page_size: page_size.max(1),
            pages: ArcSwapOption::empty(),
            origins: crate::origins::Origins::new(allowed_hosts, allowed_origins),
            sessions: FastDashMap::default(),
            owners: FastDashMap::default(),
            servers: FastDashMap::default(),
            activity: FastDashMap::default(),
            per_owner: FastDashMap::default(),
            pending: FastDashMap::default(),
            epoch: std::time::Instant::now(),
            calls: FastDashMap::default(),
            parked: FastDashMap::default(),
            dormant: FastDashMap::default(),
            waking: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
        }
    }

    /// The session `id`, if its calls may take this path.
    pub fn session(&self, id: &str) -> Option<FastSession> {
        self.sessions.get(id).map(|s| s.clone())
    }

    /// The session has ended (or is not what this module thought).
    pub fn forget(&self, id: &str) {
        self.sessions.remove(id);
    }

    /// Session `id` belongs to the credential `owner`, on the virtual server `server`
    /// (`None`: `/mcp`).
    pub fn bind(&self, id: &str, owner: Arc<str>, server: Option<Arc<str>>) {
        match server {
            Some(server) => {
                self.servers.insert(id.to_string(), server);
            }
            None => {
                self.servers.remove(id);
            }
        }
        *self.per_owner.entry(Arc::clone(&owner)).or_insert(0) += 1;
        if let Some(previous) = self.owners.insert(id.to_string(), owner) {
            self.release(&previous);
        }
        self.pending.insert(id.to_string(), self.now_ms());
        self.touch_new(id);
    }

    /// The client of session `id` sent `notifications/initialized`.
    pub fn confirm(&self, id: &str) {
        self.pending.remove(id);
    }

    /// How many sessions `owner` holds open.
    pub fn sessions_of(&self, owner: &str) -> usize {
        self.per_owner.get(owner).map(|n| *n).unwrap_or(0)
    }

    /// How many sessions are open in all.
    pub fn session_count(&self) -> usize {
        self.owners.len()
    }

    fn release(&self, owner: &Arc<str>) {
        if let Some(mut n) = self.per_owner.get_mut(owner) {
            *n = n.saturating_sub(1);
        }
        self.per_owner.remove_if(owner, |_, n| *n == 0);
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn touch_new(&self, id: &str) {
        self.activity.insert(id.to_string(), self.now_ms());
    }

    /// Session `id` was just used.
    pub fn touch(&self, id: &str) {
        let now = self.now_ms();
        if let Some(mut last) = self.activity.get_mut(id) {
            *last = now;
        }
    }

    /// Sessions unused for longer than `idle`, and sessions not confirmed with
    /// `notifications/initialized` within `pending` of their opening (a client that
    /// initializes and never goes on holds memory for nothing).
    pub fn idle_sessions(&self, idle: Duration, pending: Duration) -> Vec<String> {
        let now = self.now_ms();
        let (idle, pending) = (idle.as_millis() as u64, pending.as_millis() as u64);
        let mut out: Vec<String> = self
            .activity
            .iter()
            .filter(|e| now.saturating_sub(*e.value()) > idle)
            .map(|e| e.key().clone())
            .collect();
        out.extend(
            self.pending
                .iter()
                .filter(|e| now.saturating_sub(*e.value()) > pending)
                .map(|e| e.key().clone()),
        );
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The credential that opened session `id`, if known.
    pub fn owner(&self, id: &str) -> Option<Arc<str>> {
        self.owners.get(id).map(|o| Arc::clone(&o))
    }

    /// The virtual server whose endpoint opened session `id` (`None`: `/mcp`).
    pub fn server_of(&self, id: &str) -> Option<Arc<str>> {
        self.servers.get(id).map(|s| Arc::clone(&s))
    }

    /// Session `id` has ended: forget everything about it.
    pub fn end(&self, id: &str) {
        self.sessions.remove(id);
        if let Some((_, owner)) = self.owners.remove(id) {
            self.release(&owner);
            // Its memory is free (a session without rmcp's copy has nothing else to
            // drop, whose end would say so).
            crate::trim::session_ended();
        }
        self.servers.remove(id);
        self.activity.remove(id);
        self.pending.remove(id);
        self.dormant.remove(id);
    }

    /// Gives back the room of maps that once held many more entries than now.
    pub fn shrink(&self) {
        self.sessions.shrink_to_fit();
        self.owners.shrink_to_fit();
        self.activity.shrink_to_fit();
        self.pending.shrink_to_fit();
        self.calls.shrink_to_fit();
        self.parked.shrink_to_fit();
        self.dormant.shrink_to_fit();
    }

    /// Session `id`, just opened, may go without rmcp's copy until a request needs it:
    /// `Some(resumable)` (which of rmcp's services held it) when this path follows it
    /// and nothing in it needs rmcp's session before then. Its client declared no
    /// sampling, elicitation or roots (whose requests go on the session's stream), its
    /// `initialize` parameters `init` are small, and the gateway is not a cluster's
    /// replica (another replica's changes to a session reach its copy here).
    pub fn hibernates(&self, id: &str, init: &str) -> Option<bool> {
        let fast = self.sessions.get(id)?;
        (!self.clustered && fast.declared.is_none() && init.len() <= MAX_DORMANT_INIT_BYTES)
            .then_some(fast.resumable)
    }

    /// Session `id` goes on without rmcp's copy (its caller closes that copy): the
    /// calls this path carries and the notifications it notes are all it takes until a
    /// request needs rmcp, which then restores a copy from `init` ([`Restore`]). An idle
    /// session costs this module's tables, not rmcp's session (its channels and task).
    pub fn hibernate(&self, id: &str, init: &str, resumable: bool) {
        self.dormant.insert(
            id.to_string(),
            Dormant {
                init: Arc::from(init),
                resumable,
            },
        );
    }

    /// `Some(resumable)` while rmcp holds no copy of session `id` (it went without one
    /// and no request restored it yet).
    pub fn dormant(&self, id: &str) -> Option<bool> {
        self.dormant.get(id).map(|d| d.resumable)
    }

    /// rmcp restored its copy of session `id` (its handler heard the replayed
    /// `notifications/initialized`, after rmcp made the copy findable): from now on the
    /// session is rmcp's as any other, and ends with its copy.
    pub fn woke(&self, id: &str) {
        self.dormant.remove(id);
    }

    /// To be held while a request of session `id`, which has no copy, goes to rmcp
    /// (until rmcp's answer begins): rmcp restores the copy for the first, and a second
    /// that reached rmcp once the copy was findable but before rmcp replayed its
    /// `initialize` would be taken as the session's first message, and end it. Those
    /// that follow find the copy restored.
    pub async fn waking(&self, id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let hash = id
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
        self.waking[hash % WAKING_LOCKS].lock().await
    }

    /// How many sessions rmcp holds no copy of.
    pub fn dormant_count(&self) -> usize {
        self.dormant.len()
    }

    /// After rmcp answered an `initialize` (`body`) with `response`: remembers the new
    /// session if its calls may take this path.
    pub fn initialized(&self, envelope: &Envelope, response: &Response) {
        if response.status() != StatusCode::OK {
            return;
        }
        let Some(id) = response
            .headers()
            .get(crate::vocab::MCP_SESSION_ID)
            .and_then(|v| v.to_str().ok())
        else {
            return;
        };
        if let Some(session) = envelope.params.and_then(|p| fast_session(p.get())) {
            self.sessions.insert(id.to_string(), session);
        }
    }

    /// A session another replica opened (a cluster's, [`crate::sessions`]): known here
    /// as if opened here, its client's `initialize` parameters `init` (JSON) read the
    /// same way, confirmed (its own replica saw to that).
    pub fn adopt(&self, id: &str, init: &str, owner: Arc<str>, server: Option<Arc<str>>) {
        self.bind(id, owner, server);
        self.confirm(id);
        match fast_session(init) {
            Some(session) => {
                self.sessions.insert(id.to_string(), session);
            }
            None => {
                self.sessions.remove(id);
            }
        }
    }

    /// Session `id`'s log level (its client's `logging/setLevel`, here or, in a
    /// cluster, on another replica).
    pub fn set_level(&self, id: &str, level: Option<LoggingLevel>) {
        if let Some(mut session) = self.sessions.get_mut(id) {
            session.level = level;
        }
    }

    /// Allowed `Host` and `Origin`, by the same lists rmcp checks; `false` when in doubt.
    fn trusted(&self, headers: &HeaderMap) -> bool {
        self.origins.trusted(headers)
    }

    /// What this path does with a POST, decided from the request alone: the one place
    /// that says which requests this codec serves (what the catalog decides is
    /// [`Self::route`]'s). `session` is the request's session, if it has one this path
    /// follows; `None` for a POST without a session.
    fn carries(
        &self,
        headers: &HeaderMap,
        envelope: &Envelope<'_>,
        session: Option<&FastSession>,
    ) -> Option<Carry> {
        let method = envelope.method.as_deref()?;
        if session.is_some() && method == "notifications/cancelled" {
            return Some(Carry::Cancel);
        }
        // Allowed Host and Origin by the same lists rmcp checks; `false` when in doubt.
        if !self.trusted(headers) {
            return None;
        }
        let version = headers
            .get(crate::vocab::MCP_PROTOCOL_VERSION)
            .map(|v| v.to_str());
        let version_ok = match (session, version) {
            // The session's own version, as rmcp demands.
            (Some(fast), Some(Ok(v))) => v == &*fast.version,
            (Some(_), _) => false,
            // No version, or one rmcp serves without the stateless revision's metadata
            // (an unknown one is rmcp's to refuse).
            (None, None) => true,
            (None, Some(Ok(v))) => SESSION_VERSIONS.contains(&v),
            (None, Some(Err(_))) => false,
        };
        if !version_ok {
            return None;
        }
        match method {
            "tools/list" => Some(Carry::List),
            // Noted here (rmcp answers it); one without an id rmcp refuses.
            "logging/setLevel" if session.is_some() && envelope.id.is_some() => {
                Some(Carry::SetLevel)
            }
            "tools/call" => (session.is_none() || session_media(headers)).then_some(Carry::Call),
            _ => None,
        }
    }

    /// A notification in session `id` that this path follows (`notifications/initialized`,
    /// which confirms the session, and `notifications/cancelled`, which
    /// [`Self::session_post`] passed on), acknowledged as rmcp would (202, no body), for
    /// a session rmcp holds no copy of ([`Self::hibernate`]): nothing else would be done
    /// with it. Anything else, or what rmcp might refuse, is rmcp's, which restores its
    /// copy for it.
    pub fn noted(
        &self,
        headers: &HeaderMap,
        envelope: &Envelope<'_>,
        id: &str,
        fast: &FastSession,
    ) -> Option<Response> {
        let plain = envelope.id.is_none()
            && envelope.jsonrpc.as_deref() == Some("2.0")
            && envelope
                .params
                .is_none_or(|p| p.get().trim_start().starts_with('{'));
        let version_ok = match headers.get(crate::vocab::MCP_PROTOCOL_VERSION) {
            None => true,
            Some(v) => v.to_str().is_ok_and(|v| v == &*fast.version),
        };
        if !plain || !version_ok || !self.trusted(headers) || !session_media(headers) {
            return None;
        }
        match envelope.method.as_deref()? {
            "notifications/initialized" => self.confirm(id),
            "notifications/cancelled" => {}
            _ => return None,
        }
        Some(
            Response::builder()
                .status(StatusCode::ACCEPTED)
                .body(Body::empty())
                .expect("static response parts"),
        )
    }

    /// A POST in session `session_id`, body read: answered here when it is a call this
    /// path carries. Also notes what changes the session's level or cancels a call.
    pub async fn session_post(
        self: &Arc<Self>,
        parts: &mut http::request::Parts,
        envelope: &Envelope<'_>,
        session_id: &str,
        fast: &FastSession,
        caller: &Caller,
        allow: Option<&Allow>,
    ) -> Option<Response> {
        match self.carries(&parts.headers, envelope, Some(fast))? {
            Carry::List => return self.list_tools(envelope, allow),
            Carry::SetLevel => {
                // Noted for this path's calls; rmcp answers it (and the typed handler
                // notes it for the methods it serves). A level this cannot read leaves
                // the session to the typed path.
                #[derive(Deserialize)]
                struct Level {
                    level: LoggingLevel,
                }
                let level = envelope
                    .params
                    .and_then(|p| serde_json::from_str::<Level>(p.get()).ok());
                match level {
                    Some(Level { level }) => self.set_level(session_id, Some(level)),
                    None => self.forget(session_id),
                }
                return None;
            }
            Carry::Cancel => {
                let params = envelope.params?;
                let cancel = serde_json::from_str::<CancelParams>(params.get()).ok()?;
                let key = call_key(session_id, cancel.request_id?.get());
                if let Some((_, token)) = self.calls.remove(&key) {
                    token.cancel();
                }
                return None;
            }
            Carry::Call => {}
        }
        let call = match self.route(
            envelope,
            caller,
            allow,
            fast.level,
            fast.declared.as_deref(),
        )? {
            Ok(call) => call,
            Err(refusal) => return Some(self.carried(json_response(refusal))),
        };
        let key = call_key(session_id, &call.client_id);
        let cancel = CancellationToken::new();
        self.calls.insert(key.clone(), cancel.clone());
        let slot = CallSlot {
            passthrough: Arc::clone(self),
            key,
        };
        let answered = self
            .run(
                call,
                Some(Streamed {
                    session: session_id.to_string(),
                    resumable: fast.resumable,
                    cancel,
                    _slot: slot,
                }),
            )
            .await;
        if answered.is_none() {
            // Handed to the typed path, which must not take the tool's token again.
            parts.extensions.insert(crate::proxy::Admitted);
        }
        answered
    }

    /// A POST without a session, body read: answered here when it is a call this path
    /// carries. Always answered in JSON, as the sessionless rmcp service does.
    pub async fn sessionless_post(
        self: &Arc<Self>,
        headers: &HeaderMap,
        envelope: &Envelope<'_>,
        caller: &Caller,
        allow: Option<&Allow>,
    ) -> Option<Response> {
        match self.carries(headers, envelope, None)? {
            Carry::List => self.list_tools(envelope, allow),
            Carry::Call => match self.route(envelope, caller, allow, None, None)? {
                Ok(call) => self.run(call, None).await,
                Err(refusal) => Some(self.carried(json_response(refusal))),
            },
            Carry::SetLevel | Carry::Cancel => None,
        }
    }

    /// A `tools/list` answered from the current catalog's serialized pages, if it asks
    /// for one of them (anything else, including a bad cursor, is rmcp's to answer).
    fn list_tools(&self, envelope: &Envelope, allow: Option<&Allow>) -> Option<Response> {
        // The pages are the whole catalog: a credential with an allow-list sees its part,
        // which rmcp's handler filters; so does a caller that gets tool search's
        // meta-tools instead, or a refusal of a list past the limits.
        if allow.is_some() {
            return None;
        }
        let catalog = self.registry.catalog();
        let search = crate::proxy::search_view(&self.registry, &catalog, None);
        if search.engaged || search.refused.is_some() {
            return None;
        }
        let id = self.plain_id(envelope)?;
        let cursor = match envelope.params {
            None => None,
            Some(p) => serde_json::from_str::<ListParams>(p.get()).ok()?.cursor,
        };
        let index = match cursor {
            None => 0,
            Some(c) => {
                let offset: usize = c.strip_prefix('o')?.parse().ok()?;
                offset
                    .is_multiple_of(self.page_size)
                    .then_some(offset / self.page_size)?
            }
        };
        let current = self
            .pages
            .load()
            .as_ref()
            .filter(|p| Arc::ptr_eq(&p.catalog, &catalog))
            .cloned();
        let pages = match current {
            Some(p) => p,
            None => {
                let pages = Arc::new(Pages {
                    results: crate::proxy::tool_pages(&catalog, self.page_size)
                        .into_iter()
                        .map(Bytes::from)
                        .collect(),
                    catalog: Arc::clone(&catalog),
                });
                self.pages.store(Some(Arc::clone(&pages)));
                pages
            }
        };
        let page = pages.results.get(index)?.clone();
        let metrics = &self.registry.observer().metrics;
        metrics.request("tools/list", true);
        metrics.passthrough_request("tools/list");
        // The page itself is not copied: the body is three pieces.
        let head = Bytes::from(format!(r#"{{"jsonrpc":"2.0","id":{id},"result":"#));
        let body = Pieces(vec![head, page, Bytes::from_static(b"}")]);
        Some(
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, APPLICATION_JSON)
                .body(Body::new(body))
                .expect("static response parts"),
        )
    }

    /// The request's id as JSON text, if the envelope is a plain JSON-RPC 2.0 request
    /// with a string or number id.
    fn plain_id<'a>(&self, envelope: &Envelope<'a>) -> Option<&'a str> {
        if envelope.jsonrpc.as_deref() != Some("2.0") {
            return None;
        }
        let id = envelope.id?.get();
        let plain = id.starts_with('"')
            || id.starts_with('-')
            || id.starts_with(|c: char| c.is_ascii_digit());
        plain.then_some(id)
    }

    /// The call in `envelope`, routed, if this path carries it; a refusal the core
    /// decided is this path's to write (`Err`: the client's id and the error).
    fn route(
        &self,
        envelope: &Envelope,
        caller: &Caller,
        allow: Option<&Allow>,
        level: Option<LoggingLevel>,
        declared: Option<&str>,
    ) -> Option<Result<Call, String>> {
        let id = self.plain_id(envelope)?;
        let params = serde_json::from_str::<CallParams>(envelope.params?.get()).ok()?;
        if params
            .arguments
            .is_some_and(|a| !a.get().trim_start().starts_with('{'))
        {
            return None;
        }
        // Tool search's meta-tools and virtual servers' composites are the typed path's.
        if crate::proxy::typed_only(&self.registry, allow, &params.name) {
            return None;
        }
        let target = Target::Tool(&params.name);
        let route = match crate::proxy::find(&self.registry, allow, target) {
            Ok(route) => route,
            Err(refusal) => return Some(Err(self.refusal(id, refusal))),
        };
        // A service whose instances speak one revision: the request is built for it. A
        // 2026-07-28 one gets that revision's `_meta` and headers, `Mcp-Param-*` ones
        // included. A stdio server's one session is rmcp's (its stdin and stdout): typed
        // path.
        if route.service.stdio() {
            return None;
        }
        let modern = route.service.era()?;
        let param_headers = match &route.param_headers {
            Some(annotated) if modern => {
                let args = params.arguments.map_or(Ok(Default::default()), |a| {
                    serde_json::from_str::<serde_json::Map<_, _>>(a.get())
                });
                annotated.headers(&args.ok()?)
            }
            _ => Vec::new(),
        };
        // A client that declared sampling, elicitation or roots, with a backend of the
        // older revision: that backend asks its questions as requests on the client's
        // own upstream session, which the typed path keeps and relays.
        if declared.is_some() && !modern {
            return None;
        }
        let mcp_name = if modern {
            // As SEP-2243 has it: base64 when it cannot travel bare.
            Some(route.name_header.clone()?)
        } else {
            None
        };
        let upstream_id = next_request_id();
        let name = &*route.json_name;
        // Last: a token taken here is a call this path makes.
        if let Err(refusal) = crate::proxy::admit(&self.registry, &route, &params.name) {
            return Some(Err(self.refusal(id, refusal)));
        }
        let (ticket, span) =
            crate::proxy::start(&self.registry, caller, &route, &params.name, || {
                params.arguments.map(|a| a.get().to_string())
            });
        let traceparent = crate::observe::traces::traceparent(&span);
        // Appended piece by piece: `format!` cost ~2k instructions here, per call.
        let args = params.arguments.map(|a| a.get());
        let mut body = String::with_capacity(
            80 + upstream_id.len()
                + name.len()
                + args.map_or(0, str::len)
                + if modern {
                    MODERN_META.len() + LOG_LEVEL.len() + declared.map_or(2, str::len) + 32
                } else {
                    0
                }
                + traceparent.as_ref().map_or(0, |t| t.len() + 32),
        );
        body.push_str(r#"{"jsonrpc":"2.0","id":""#);
        body.push_str(&upstream_id);
        body.push_str(r#"","method":"tools/call","params":{"name":"#);
        body.push_str(name);
        if let Some(args) = args {
            body.push_str(r#","arguments":"#);
            body.push_str(args);
        }
        // What the typed path's request would declare, for a 2026-07-28 backend: the
        // gateway as the client, what the client declared of sampling, elicitation and
        // roots, and the client's log level (every message, as an older client gets,
        // until it sets one). The trace context in `_meta` too (SEP-414), so the
        // backend's spans join the trace.
        if modern || traceparent.is_some() {
            body.push_str(r#","_meta":{"#);
            if modern {
                body.push_str(MODERN_META);
                body.push_str(declared.unwrap_or("{}"));
                body.push(',');
                body.push_str(LOG_LEVEL);
                body.push('"');
                body.push_str(level_name(level.unwrap_or(LoggingLevel::Debug)));
                body.push('"');
            }
            if let Some(t) = traceparent.as_deref() {
                if modern {
                    body.push(',');
                }
                body.push_str(r#""traceparent":""#);
                body.push_str(t);
                body.push('"');
            }
            body.push('}');
        }
        body.push_str("}}");
        Some(Ok(Call {
            client_id: id.to_string(),
            service: Arc::clone(&route.service),
            upstream_id,
            body: Bytes::from(body),
            retry_safe: route.retry_safe,
            ticket,
            span,
            traceparent: traceparent.and_then(|t| HeaderValue::from_str(&t).ok()),
            mcp_name,
            param_headers,
            min_log_level: level,
            capable: declared.is_some(),
            modern,
        }))
    }

    /// `refusal` as the JSON-RPC error response to the request `client_id`, counted as a
    /// failed request (its caller counts it as carried, like every answer of this path).
    fn refusal(&self, client_id: &str, refusal: crate::proxy::Refusal) -> String {
        self.registry
            .observer()
            .metrics
            .request("tools/call", false);
        jsonrpc_error(client_id, &refusal.error())
    }

    /// Carries `call` to its backend and answers the client: JSON when the answer is all
    /// the backend sent, otherwise (in a session) an SSE stream. `None`: the backend
    /// asked a client that can be asked (`Call::capable`) for input, which the typed
    /// path does; it sends the call again and asks.
    async fn run(self: &Arc<Self>, call: Call, streamed: Option<Streamed>) -> Option<Response> {
        let guard = self.registry.call_started();
        let mut ticket = call.ticket;
        ticket.upstream_starts();
        // Pinned where it is, in a block that ends its borrows: the future is ~3 KiB, and
        // `select!` or `.await` would otherwise copy it once more.
        let opened = {
            let affinity = streamed.as_ref().map(|s| s.session.as_str());
            let open = call.service.open_raw(
                Arc::clone(&call.upstream_id),
                crate::upstream::raw::Outgoing {
                    body: call.body.clone(),
                    traceparent: call.traceparent.clone(),
                    mcp_name: call.mcp_name.clone(),
                    param_headers: call.param_headers.clone(),
                    min_log_level: call.min_log_level,
                },
                affinity,
                call.retry_safe,
                // A relay (a channel and a place in the service's relay tables) for each call
                // of a session: only an older backend can send what belongs to it elsewhere
                // (its session's GET stream).
                streamed.is_some() && !call.modern,
            );
            tokio::pin!(open);
            match &streamed {
                Some(s) => tokio::select! {
                    r = &mut open => r,
                    _ = s.cancel.cancelled() => {
                        return Some(self.carried(json_response(cancelled(&call.client_id))));
                    }
                },
                None => open.await,
            }
        };
        let (exchange, first) = match opened {
            Ok(pair) => pair,
            Err(e) => {
                ticket.finish(e.outcome(), Some(e.to_string()), None);
                return Some(self.carried(json_response(error_message(&call.client_id, e))));
            }
        };
        ticket.served_by(exchange.instance_id());
        let capable = call.capable;
        let mut live = Live {
            exchange,
            service: call.service,
            client_id: call.client_id,
            streamed,
            capable,
            ticket: Some(ticket),
            _span: call.span,
            _guard: guard,
        };
        let response = match first {
            Event::Answer(answer) if capable && asks_input(&answer) => return live.hand_over(),
            Event::Answer(answer) => {
                live.settle(&answer);
                json_response(answer_message(&live.client_id, &answer))
            }
            // A client that can be asked: what the backend sends is held until its
            // answer shows whether it asks for input (then the typed path sends the call
            // again, and the backend sends it all again).
            first if capable => match live.gather(first).await {
                Gathered::Answer(_, answer) if asks_input(&answer) => return live.hand_over(),
                Gathered::Answer(held, answer) => {
                    live.settle(&answer);
                    let last = answer_message(&live.client_id, &answer);
                    messages_response(held, last)
                }
                Gathered::Ended(mut held) => {
                    let last = held.pop().unwrap_or_default();
                    messages_response(held, last)
                }
                Gathered::Cancelled => json_response(cancelled(&live.client_id)),
                // No answer yet: the client gets what the backend sent, as it comes.
                Gathered::Streaming(held) if live.streamed.is_some() => {
                    self.stream(live, held.into_iter().map(Event::Message).collect())
                }
                Gathered::Streaming(_) => json_response(live.finish_quietly().await),
            },
            first if live.streamed.is_some() => self.stream(live, VecDeque::from([first])),
            // Sessionless: nothing but the answer is sent, as rmcp's JSON mode does.
            _ => json_response(live.finish_quietly().await),
        };
        Some(self.carried(response))
    }

    /// `response`, counted as a request this path answered.
    fn carried(&self, response: Response) -> Response {
        self.registry
            .observer()
            .metrics
            .passthrough_request("tools/call");
        response
    }

    /// The rest of the call as an SSE stream, starting with the `pending` events.
    fn stream(self: &Arc<Self>, live: Live, pending: VecDeque<Event>) -> Response {
        let state = (Arc::clone(self), Some(live), pending);
        let events = futures::stream::unfold(state, |(pt, live, pending)| async move {
            let mut live = live?;
            let mut pending = pending;
            loop {
                let event = match pending.pop_front() {
                    Some(e) => Ok(e),
                    None => match live.next().await {
                        Some(r) => r,
                        None => return None,
                    },
                };
                let bytes = match event {
                    Ok(Event::Message(m)) => sse_data(&m),
                    Ok(Event::Answer(a)) if live.capable && asks_input(&a) => {
                        // Too late to hand the call over: the client has had part of
                        // this answer's stream.
                        let message = error_message(
                            &live.client_id,
                            CallError::Upstream(rmcp::ErrorData::internal_error(
                                "the backend asked for input after the call's log messages had begun to stream; the gateway can ask only before: call again",
                                None,
                            )),
                        );
                        live.settle(&a);
                        let bytes = sse_data(&message);
                        return Some((Ok::<_, Infallible>(bytes), (pt, None, VecDeque::new())));
                    }
                    Ok(Event::Answer(a)) => {
                        live.settle(&a);
                        let bytes = sse_data(&answer_message(&live.client_id, &a));
                        return Some((Ok::<_, Infallible>(bytes), (pt, None, VecDeque::new())));
                    }
                    Ok(Event::Closed(retry))
                        if live.resumable() && !live.capable && !pt.clustered =>
                    {
                        return Some((Ok(pt.park(live, retry)), (pt, None, VecDeque::new())));
                    }
                    // The client cannot resume: the call goes on, as the backend's does.
                    Ok(Event::Closed(_)) => continue,
                    Err(message) => {
                        return Some((Ok(sse_data(&message)), (pt, None, VecDeque::new())));
                    }
                };
                return Some((Ok(bytes), (pt, Some(live), pending)));
            }
        });
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, EVENT_STREAM)
            .header(header::CACHE_CONTROL, NO_CACHE)
            .body(Body::from_stream(events))
            .expect("static response parts")
    }

    /// The backend closed the call's stream and the client can resume: closes the
    /// client's stream too (returning its last event) and keeps the call for the
    /// resumption.
    fn park(self: &Arc<Self>, live: Live, retry: Option<Duration>) -> Bytes {
        let session = live
            .streamed
            .as_ref()
            .map(|s| s.session.clone())
            .unwrap_or_default();
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let retry = retry.unwrap_or(Duration::from_secs(1));
        let until = live.exchange.deadline() + PARK_GRACE;
        self.parked.insert(
            n,
            Parked {
                session,
                live: std::sync::Mutex::new(live),
            },
        );
        let pt = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep_until(until).await;
            // Never resumed: dropping the call tells the backend.
            pt.parked.remove(&n);
        });
        Bytes::from(format!(
            "id: {PARKED_PREFIX}{n}\nretry: {}\ndata: \n\n",
            retry.as_millis()
        ))
    }

    /// A `GET` resuming a stream this module closed (`Last-Event-ID: fp/<n>`).
    pub fn resume(self: &Arc<Self>, session_id: &str, last_event_id: &str) -> Option<Response> {
        let n: u64 = last_event_id.strip_prefix(PARKED_PREFIX)?.parse().ok()?;
        let (_, parked) = self.parked.remove_if(&n, |_, p| p.session == session_id)?;
        let live = parked.live.into_inner().unwrap_or_else(|p| p.into_inner());
        Some(self.stream(live, VecDeque::new()))
    }
}

/// What a call in a session has that a sessionless one does not.
struct Streamed {
    session: String,
    resumable: bool,
    cancel: CancellationToken,
    _slot: CallSlot,
}

/// A call in flight, after its first event.
struct Live {
    exchange: Exchange,
    service: Arc<Service>,
    client_id: String,
    streamed: Option<Streamed>,
    /// The client declared sampling, elicitation or roots (`Call::capable`).
    capable: bool,
    /// Finished with the answer (or error); dropped unfinished, the call was cancelled.
    ticket: Option<CallTicket>,
    /// Ends (for the trace) when the call does.
    _span: tracing::Span,
    _guard: CallGuard,
}

impl Live {
    /// The client's stream can be closed and resumed.
    fn resumable(&self) -> bool {
        self.streamed.as_ref().is_some_and(|s| s.resumable)
    }

    /// The next event, or the error message that ends the call; `None` when the client
    /// cancelled (no answer is due then).
    async fn next(&mut self) -> Option<Result<Event, String>> {
        let advance = self.exchange.advance();
        let result = match &self.streamed {
            Some(s) => tokio::select! {
                r = advance => r,
                _ = s.cancel.cancelled() => {
                    self.exchange.cancel_reason("cancelled by the client");
                    return None;
                }
            },
            None => advance.await,
        };
        Some(result.map_err(|f| {
            let e = self.service.raw_error(f);
            if let Some(ticket) = self.ticket.take() {
                ticket.finish(e.outcome(), Some(e.to_string()), None);
            }
            error_message(&self.client_id, e)
        }))
    }

    /// Books the backend's answer.
    fn settle(&mut self, answer: &Answer) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let (outcome, error) = classify(answer);
        let result = ticket
            .wants_result()
            .then(|| answer.payload().map(|(_, p)| p.to_string()))
            .flatten();
        ticket.finish(outcome, error, result);
    }

    /// The call given back to the typed path: not booked here (its ticket is dropped
    /// unrecorded; the typed path books the call it sends).
    fn hand_over(mut self) -> Option<Response> {
        if let Some(ticket) = self.ticket.take() {
            ticket.abandon();
        }
        None
    }

    /// Follows the call from `first` to its answer, holding the messages to pass on (up
    /// to [`MAX_HELD_BYTES`]: log messages past it are dropped), for [`HOLD_FOR`] at most.
    async fn gather(&mut self, first: Event) -> Gathered {
        let until = tokio::time::Instant::now() + HOLD_FOR;
        let mut held = Vec::new();
        let mut bytes = 0usize;
        let mut dropped = 0usize;
        let mut event = Some(Ok(first));
        loop {
            match event {
                Some(Ok(Event::Answer(a))) => {
                    if dropped > 0 {
                        tracing::debug!(
                            dropped,
                            "a backend's messages past {MAX_HELD_BYTES} bytes were dropped"
                        );
                    }
                    return Gathered::Answer(held, a);
                }
                Some(Ok(Event::Message(m))) if bytes + m.len() > MAX_HELD_BYTES => dropped += 1,
                Some(Ok(Event::Message(m))) => {
                    bytes += m.len();
                    held.push(m);
                }
                // The client is not told of a stream the backend closed: the call goes
                // on (as for a client that cannot resume).
                Some(Ok(Event::Closed(_))) => {}
                Some(Err(message)) => {
                    held.push(message);
                    return Gathered::Ended(held);
                }
                None => return Gathered::Cancelled,
            }
            // Waiting for the next event is cancel-safe (`Exchange::advance` keeps its
            // place in the backend's stream).
            event = match tokio::time::timeout_at(until, self.next()).await {
                Ok(event) => event,
                Err(_) => return Gathered::Streaming(held),
            };
        }
    }

    /// Follows the call to its answer, dropping everything else; the response message.
    async fn finish_quietly(mut self) -> String {
        loop {
            match self.next().await {
                Some(Ok(Event::Answer(a))) => {
                    self.settle(&a);
                    return answer_message(&self.client_id, &a);
                }
                Some(Ok(_)) => continue,
                Some(Err(message)) => return message,
                None => return cancelled(&self.client_id),
            }
        }
    }
}

/// Unregisters a session call's cancellation token when the call ends.
struct CallSlot {
    passthrough: Arc<Passthrough>,
    key: String,
}

/// A call's key among the calls in flight: its session's id, a line feed, and the
/// client's id as JSON. A session id is a header value, which holds no line feed, so no
/// two (session, id) pairs share a key.
fn call_key(session: &str, client_id: &str) -> String {
    let mut key = String::with_capacity(session.len() + 1 + client_id.len());
    key.push_str(session);
    key.push('\n');
    key.push_str(client_id);
    key
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.passthrough.calls.remove(&self.key);
    }
}

/// A body of a few ready pieces, with its exact length (so it is sent with
/// `Content-Length`, not chunked).
struct Pieces(Vec<Bytes>);

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let next = (!self.0.is_empty()).then(|| self.0.remove(0));
        std::task::Poll::Ready(next.map(|b| Ok(http_body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.iter().map(|b| b.len() as u64).sum())
    }
}

/// A level's name on the wire.
fn level_name(level: LoggingLevel) -> &'static str {
    match level {
        LoggingLevel::Debug => "debug",
        LoggingLevel::Info => "info",
        LoggingLevel::Notice => "notice",
        LoggingLevel::Warning => "warning",
        LoggingLevel::Error => "error",
        LoggingLevel::Critical => "critical",
        LoggingLevel::Alert => "alert",
        LoggingLevel::Emergency => "emergency",
    }
}

/// What [`Live::gather`] found.
enum Gathered {
    /// The answer, after the messages held before it.
    Answer(Vec<String>, Answer),
    /// The call failed: the held messages, the error message last.
    Ended(Vec<String>),
    /// The client cancelled the call.
    Cancelled,
    /// No answer within [`HOLD_FOR`]: the messages held so far; the call goes on.
    Streaming(Vec<String>),
}

/// The media types rmcp demands of a POST in a session: JSON, answered in JSON or SSE.
fn session_media(headers: &HeaderMap) -> bool {
    crate::vocab::accepts_json_and_sse(headers) && crate::vocab::labelled_json(headers)
}

/// Whether the backend's answer asks the client for input (`input_required`).
fn asks_input(answer: &Answer) -> bool {
    matches!(answer.payload(), Some(("result", text)) if matches!(translate(text), Translated::Refused(_)))
}

/// `held` messages then `last`, as one SSE response (JSON when `last` is all).
fn messages_response(held: Vec<String>, last: String) -> Response {
    if held.is_empty() {
        return json_response(last);
    }
    let mut body = Vec::with_capacity(held.len() + 1);
    for m in held.iter().chain(std::iter::once(&last)) {
        body.push(sse_data(m));
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, EVENT_STREAM)
        .header(header::CACHE_CONTROL, NO_CACHE)
        .body(Body::new(Pieces(body)))
        .expect("static response parts")
}

fn json_response(message: String) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, APPLICATION_JSON)
        .body(Body::from(message))
        .expect("static response parts")
}

/// One SSE event carrying `message` (a `data:` line per line of it).
fn sse_data(message: &str) -> Bytes {
    let mut out = String::with_capacity(message.len() + 8);
    for line in message.split('\n') {
        out.push_str("data: ");
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// How a call answered: a result (failed if `isError`), or a JSON-RPC error and its
/// message. Reads only the members it needs.
fn classify(answer: &Answer) -> (Outcome, Option<String>) {
    #[derive(Deserialize)]
    struct Error {
        message: Option<String>,
    }
    match answer.payload() {
        Some(("result", text)) if let Translated::Refused(e) = translate(text) => {
            (Outcome::Error, Some(e.message.to_string()))
        }
        Some(("result", text)) if says_is_error(text) => (Outcome::ToolError, None),
        Some(("result", _)) => (Outcome::Ok, None),
        Some((_, text)) => (
            Outcome::Error,
            serde_json::from_str::<Error>(text)
                .ok()
                .and_then(|e| e.message),
        ),
        None => (
            Outcome::Error,
            Some("the backend's response has neither result nor error".into()),
        ),
    }
}

/// A result's `"isError": true`, found without parsing the result: inside JSON strings
/// quotes are escaped, so an unescaped `"isError"` is a member name. (One nested in the
/// result's own data would count too; tools rarely name a member so.)
fn says_is_error(result: &str) -> bool {
    const KEY: &[u8] = b"\"isError\"";
    // memchr's SIMD search (the result is all of the tool's output), its searcher built
    // once.
    static FINDER: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(KEY));
    FINDER.find_iter(result.as_bytes()).any(|at| {
        result[at + KEY.len()..]
            .trim_start()
            .strip_prefix(':')
            .is_some_and(|rest| rest.trim_start().starts_with("true"))
    })
}

/// A 2026-07-28 backend's result as a client of this path (a 2025-era one) gets it:
/// without the `resultType` that revision adds; or, when the backend asks for input
/// (`input_required`), the error such a client gets, having declared no capability.
enum Translated<'a> {
    /// The result: all of it, or (`"{"` then this) without a leading `resultType`.
    Result(&'a str),
    Trimmed(&'a str),
    Refused(rmcp::ErrorData),
}

fn translate(result: &str) -> Translated<'_> {
    // rmcp writes `resultType` first; anywhere else it stays (an extra member an older
    // client ignores).
    const COMPLETE: &str = r#"{"resultType":"complete","#;
    if let Some(rest) = result.strip_prefix(COMPLETE) {
        return Translated::Trimmed(rest);
    }
    // memchr's SIMD search (the answer is all of the tool's output), built once.
    static FINDER: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"input_required"));
    if FINDER.find(result.as_bytes()).is_none() {
        return Translated::Result(result);
    }
    // Only a result that is one, however it is spaced (a member of that name deeper
    // inside is the tool's). One whose questions cannot be read is refused all the same.
    #[derive(Deserialize)]
    struct Kind<'a> {
        #[serde(rename = "resultType", borrow, default)]
        result_type: Option<std::borrow::Cow<'a, str>>,
    }
    let asks = serde_json::from_str::<Kind<'_>>(result)
        .is_ok_and(|k| k.result_type.as_deref() == Some("input_required"));
    if !asks {
        return Translated::Result(result);
    }
    let asked = serde_json::from_str::<rmcp::model::InputRequiredResult>(result)
        .ok()
        .and_then(|r| r.input_requests)
        .unwrap_or_default();
    // This path's clients declared nothing: the typed path's refusal for them.
    match crate::proxy::legacy_questions(asked, &Default::default()) {
        Err(e) => Translated::Refused(e),
        // Questions that need nothing (there are none today), or none that could be read.
        Ok(_) => Translated::Refused(rmcp::ErrorData::internal_error(
            "the backend asked for input this client cannot be asked for",
            None,
        )),
    }
}

/// The client's response: the backend's result or error under the client's id.
fn answer_message(client_id: &str, answer: &Answer) -> String {
    match answer.payload() {
        Some(("result", payload)) => match translate(payload) {
            Translated::Result(result) => wrap(client_id, "result", &["", result]),
            Translated::Trimmed(rest) => wrap(client_id, "result", &["{", rest]),
            Translated::Refused(e) => error_message(client_id, CallError::Upstream(e)),
        },
        Some((member, payload)) => wrap(client_id, member, &["", payload]),
        None => error_message(
            client_id,
            CallError::Upstream(rmcp::ErrorData::internal_error(
                "the backend's response has neither result nor error",
                None,
            )),
        ),
    }
}

/// The `payload` (its parts, joined) as the `member` of a response with the client's id.
fn wrap(client_id: &str, member: &str, payload: &[&str; 2]) -> String {
    let len = payload[0].len() + payload[1].len();
    let mut out = String::with_capacity(len + client_id.len() + 32);
    out.push_str(r#"{"jsonrpc":"2.0","id":"#);
    out.push_str(client_id);
    out.push_str(",\"");
    out.push_str(member);
    out.push_str("\":");
    out.push_str(payload[0]);
    out.push_str(payload[1]);
    out.push('}');
    out
}

fn error_message(client_id: &str, e: CallError) -> String {
    jsonrpc_error(client_id, &crate::proxy::call_error(e))
}

/// The JSON-RPC error response with `error` to the request `client_id`.
fn jsonrpc_error(client_id: &str, error: &rmcp::ErrorData) -> String {
    let error = serde_json::to_string(error).unwrap_or_default();
    format!(r#"{{"jsonrpc":"2.0","id":{client_id},"error":{error}}}"#)
}

fn cancelled(client_id: &str) -> String {
    error_message(
        client_id,
        CallError::Upstream(rmcp::ErrorData::internal_error(
            "request cancelled by the client",
            None,
        )),
    )
}

/// The pass-through path's record of a session whose client sent `params` (its
/// `initialize` parameters, JSON), if its calls may take this path.
fn fast_session(params: &str) -> Option<FastSession> {
    #[derive(Deserialize)]
    struct Params {
        #[serde(rename = "protocolVersion")]
        protocol_version: String,
        #[serde(default)]
        capabilities: serde_json::Map<String, serde_json::Value>,
    }
    let params = serde_json::from_str::<Params>(params).ok()?;
    let version = params.protocol_version;
    if !SESSION_VERSIONS.contains(&version.as_str()) {
        return None;
    }
    // What the typed path would declare for the client: its sampling, elicitation and
    // roots as rmcp reads them (a `null` is not declared, unknown members dropped).
    let capabilities = serde_json::from_value::<rmcp::model::ClientCapabilities>(
        serde_json::Value::Object(params.capabilities),
    )
    .ok()?;
    let mut declared = rmcp::model::ClientCapabilities::default();
    (declared.sampling, declared.elicitation, declared.roots) = (
        capabilities.sampling,
        capabilities.elicitation,
        capabilities.roots,
    );
    let declared = if declared == Default::default() {
        None
    } else {
        match serde_json::to_string(&declared) {
            // Copied into every call's `_meta`: a large one stays with the typed path.
            Ok(text) if text.len() <= MAX_DECLARED_BYTES => Some(Arc::from(text)),
            _ => return None,
        }
    };
    let resumable = version.as_str() >= RESUMABLE_SINCE;
    Some(FastSession {
        version: version.into(),
        resumable,
        level: None,
        declared,
    })
}

/// rmcp's restore of a session that went without its copy ([`Passthrough::hibernate`]):
/// the parameters its client sent to `initialize`, replayed by rmcp under the same id
/// (with `notifications/initialized`) for the first request that needs the copy. Nothing
/// is written through it: the pass-through path keeps the session's record.
pub struct Restore(pub Arc<Passthrough>);

#[async_trait::async_trait]
impl SessionStore for Restore {
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        let Some(init) = self.0.dormant.get(session_id).map(|d| Arc::clone(&d.init)) else {
            return Ok(None);
        };
        serde_json::from_str(&init)
            .map(|params| Some(SessionState::new(params)))
            .map_err(|e| SessionStoreError::from(format!("a dormant session's parameters: {e}")))
    }

    async fn store(&self, _: &str, _: &SessionState) -> Result<(), SessionStoreError> {
        Ok(())
    }

    async fn delete(&self, _: &str) -> Result<(), SessionStoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Translated, translate};

    #[test]
    fn a_2026_result_reaches_an_older_client_in_its_shape() {
        // The leading resultType goes; the rest is the backend's, byte for byte.
        let Translated::Trimmed(rest) = translate(r#"{"resultType":"complete","content":[]}"#)
        else {
            panic!("not trimmed");
        };
        assert_eq!(format!("{{{rest}"), r#"{"content":[]}"#);
        // A 2025 result, or a tool's own member of that name deeper inside, is untouched.
        for plain in [
            r#"{"content":[]}"#,
            r#"{"content":[],"structuredContent":{"resultType":"input_required"}}"#,
        ] {
            assert!(matches!(translate(plain), Translated::Result(r) if r == plain));
        }
        // A question for a client that declared nothing: the error naming what it needs.
        let asked = r#"{"resultType":"input_required","inputRequests":{"r":{"method":"roots/list"},"e":{"method":"elicitation/create","params":{"mode":"form","message":"name?","requestedSchema":{"type":"object","properties":{}}}}}}"#;
        // However it is spaced.
        let spaced = r#"{ "resultType": "input_required", "inputRequests": {} }"#;
        assert!(matches!(translate(spaced), Translated::Refused(_)));
        let Translated::Refused(e) = translate(asked) else {
            panic!("not refused");
        };
        assert_eq!(e.code.0, -32021);
        let needed = e.data.expect("data")["requiredCapabilities"].clone();
        assert!(needed.get("roots").is_some() && needed.get("elicitation").is_some());
        assert!(needed.get("sampling").is_none(), "{needed}");
        // More questions than the typed path passes on: its refusal, word for word.
        let many: String = (0..9)
            .map(|i| format!(r#""q{i}":{{"method":"roots/list"}}"#))
            .collect::<Vec<_>>()
            .join(",");
        let many = format!(r#"{{"resultType":"input_required","inputRequests":{{{many}}}}}"#);
        let Translated::Refused(e) = translate(&many) else {
            panic!("not refused");
        };
        assert_eq!(e.code.0, -32603);
        assert!(e.message.contains("at most 8"), "{e:?}");
    }

    #[test]
    fn is_error_is_read_from_the_member_not_from_text() {
        assert!(super::says_is_error(r#"{"content":[],"isError": true}"#));
        assert!(super::says_is_error(r#"{"isError":true,"content":[]}"#));
        assert!(!super::says_is_error(r#"{"content":[],"isError":false}"#));
        assert!(!super::says_is_error(
            r#"{"content":[{"type":"text","text":"{\"isError\": true}"}]}"#
        ));
        assert!(!super::says_is_error(r#"{"content":[]}"#));
    }
}
