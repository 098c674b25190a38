//! Backends. A [`Service`] is one name in the registry; it has one or more
//! [`Instance`]s (the same MCP server at several URLs). An instance owns its client
//! session, its health ([`health`]) and its last-known tools; this module is the only
//! place that talks to a backend.
//!
//! Each instance has a supervisor task that keeps its session alive: connect (capped,
//! jittered backoff while unreachable), list tools, ping on an interval, re-list on
//! `tools/list_changed`, reconnect when a call or ping finds the session gone. A backend
//! that restarted answers the old session id with 404: that never turns into an empty
//! success; the call fails over or is retried once on the new session (a 404 means the
//! request was not processed, so repeating it is safe).
//!
//! A call picks an instance ([`balance`]), takes a clone of its session handle (no lock
//! is held across an upstream await) and classifies the outcome: success, the backend's
//! own JSON-RPC error (passed through), or a failure that feeds the health state and the
//! circuit breaker. Failures are retried on another instance only when repeating is
//! safe: the request was never delivered, or the tool is annotated read-only or
//! idempotent.
//!
//! Invariant: the only code that talks to a backend; a call fails over only when
//! repeating it is safe.

pub mod balance;
pub mod client;
pub mod guard;
pub mod health;
pub mod raw;
pub mod relay;
pub mod resume;
pub mod secret;
pub mod stdio;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::{ArcSwap, ArcSwapOption};
use rand::Rng;
use rmcp::{
    Peer, RoleClient, ServiceError,
    model::{
        CancelledNotificationParam, ClientCapabilities, ClientRequest, ClientResult, LoggingLevel,
        LoggingMessageNotificationParam, PaginatedRequestParams, PingRequest,
        ProgressNotificationParam, ProgressToken, Prompt, Resource, ResourceTemplate,
        ServerCapabilities, ServerRequest, ServerResult, Tool,
    },
    service::{PeerRequestOptions, RunningService},
    transport::streamable_http_client::StreamableHttpError,
};
use serde::Serialize;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::vocab::ParamHeaders;

use self::{
    balance::{Candidate, Strategy},
    client::UpstreamClient,
    health::{Admission, Health, Policy, State},
    relay::{RelayMsg, Relays},
};

/// Where an instance came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `POST /register` (persisted in the store).
    Registered,
    /// The gateway's configuration file or environment.
    Config,
}

/// Where an instance came from and who stands behind it.
#[derive(Debug, Clone)]
pub struct Origin {
    pub source: Source,
    pub registered_at_ms: u64,
    /// The identity that registered it; `None` for configured upstreams (and
    /// registrations stored before owners were recorded): only operators change those.
    pub owner: Option<Arc<str>>,
    /// The gateway's own credential towards the upstream.
    pub auth: Option<secret::UpstreamAuth>,
    /// A stdio server's command: the gateway runs it (`url` is then `stdio:NAME/N`).
    pub command: Option<stdio::Command>,
}

/// Knobs shared by every upstream.
#[derive(Debug, Clone)]
pub struct Options {
    pub connect_timeout: Duration,
    pub call_timeout: Duration,
    pub health_interval: Duration,
    /// Whether this gateway pings its upstreams every `health_interval`: in a cluster
    /// only its health checker does (the others follow its verdicts, [`Instance::agree`]),
    /// and every replica while it cannot hear the cluster.
    pub pings: Arc<std::sync::atomic::AtomicBool>,
    pub policy: Policy,
    pub strategy: Strategy,
    /// Largest JSON answer or SSE message an upstream may send for one request.
    pub max_response_bytes: usize,
    /// Where upstreams may be (checked before connecting and at every connection).
    pub guard: Arc<guard::Guard>,
    /// How much one listing of an upstream's tools (prompts, ...) may take.
    pub list_bounds: ListBounds,
    /// The longest call deadline a registration may ask for.
    pub max_call_timeout: Duration,
    /// TLS towards `https` upstreams: Mozilla's roots and the configured CAs.
    pub tls: Arc<rustls::ClientConfig>,
}

/// The shortest time between two re-lists of one instance (a backend announcing
/// `list_changed` in a loop gets one re-list a second).
pub const RELIST_EVERY: Duration = Duration::from_secs(1);

/// Bounds on one upstream listing (all its pages): a backend cannot make the gateway
/// hold an endless table.
#[derive(Debug, Clone, Copy)]
pub struct ListBounds {
    /// Entries in all.
    pub items: usize,
    /// Pages.
    pub pages: usize,
    /// Bytes of the entries, as JSON.
    pub bytes: usize,
}

/// Reads a paginated list with `page` (one request per cursor) within `bounds`, all of
/// it within `within`. A listing past a bound, or one that repeats a cursor, fails with
/// the reason.
async fn list_bounded<T, F, Fut>(
    what: &str,
    bounds: ListBounds,
    within: Duration,
    mut page: F,
) -> Result<Vec<T>, String>
where
    T: Serialize,
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, Option<String>), ServiceError>>,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    let (mut cursor, mut pages, mut bytes) = (None, 0usize, 0usize);
    let mut cursors = std::collections::HashSet::new();
    loop {
        pages += 1;
        if pages > bounds.pages {
            return Err(format!(
                "{what} takes more than {} pages (max_list_pages)",
                bounds.pages
            ));
        }
        let (items, next) = tokio::time::timeout_at(deadline, page(cursor.take()))
            .await
            .map_err(|_| format!("{what} did not answer within {} ms", within.as_millis()))?
            .map_err(|e| format!("{what} failed: {}", service_kit::client::describe(&e)))?;
        if out.len() + items.len() > bounds.items {
            return Err(format!(
                "{what} lists more than {} entries (max_list_items)",
                bounds.items
            ));
        }
        bytes += items.iter().map(resume::json_len).sum::<usize>();
        if bytes > bounds.bytes {
            return Err(format!(
                "{what} takes more than {} bytes (max_list_bytes)",
                bounds.bytes
            ));
        }
        out.extend(items);
        match next {
            None => return Ok(out),
            Some(next) if !cursors.insert(next.clone()) => {
                return Err(format!("{what} repeats the cursor {next:?}"));
            }
            Some(next) => cursor = Some(next),
        }
    }
}

/// `tools` without those whose `x-mcp-header` annotations break SEP-2243's rules (a
/// client leaves them out; see [`ParamHeaders::of`]), and the table of those whose
/// arguments travel in `Mcp-Param-*` headers.
fn screen_tools(
    service: &str,
    tools: Vec<Tool>,
) -> (Vec<Tool>, HashMap<String, Arc<ParamHeaders>>) {
    let mut params = HashMap::new();
    let tools = tools
        .into_iter()
        .filter(|t| match ParamHeaders::of(&t.input_schema) {
            Ok(annotated) => {
                if let Some(annotated) = annotated {
                    params.insert(t.name.to_string(), Arc::new(annotated));
                }
                true
            }
            Err(why) => {
                tracing::warn!(service, tool = %t.name, "tool left out: {why}");
                false
            }
        })
        .collect();
    (tools, params)
}

/// Every tool of an upstream session, within `bounds`.
async fn list_tools(
    session: &Session,
    bounds: ListBounds,
    within: Duration,
) -> Result<Vec<Tool>, String> {
    list_bounded("tools/list", bounds, within, |cursor| async move {
        let r = session
            .peer()
            .list_tools(Some(PaginatedRequestParams::default().with_cursor(cursor)))
            .await?;
        Ok((r.tools, r.next_cursor))
    })
    .await
}

/// Why a proxied call failed at the gateway. A backend's own tool errors are results,
/// and its JSON-RPC errors pass through as [`CallError::Upstream`].
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("service \"{service}\" is unavailable: {cause}")]
    Unavailable { service: String, cause: String },
    #[error("service \"{service}\" did not answer within {ms} ms")]
    Timeout { service: String, ms: u64 },
    #[error(
        "service \"{service}\" is failing: circuit open after repeated failures, next attempt in {retry_in_ms} ms"
    )]
    CircuitOpen { service: String, retry_in_ms: u64 },
    /// The backend refused the request at the HTTP level (a 4xx other than an expired
    /// session's 404): the request reached it, and repeating it would change nothing.
    #[error("service \"{service}\" refused the request: {}", status_text(*.status))]
    Refused { service: String, status: u16 },
    #[error("{0}")]
    Upstream(rmcp::ErrorData),
}

impl CallError {
    /// How the call log and the metrics label a call that ended with this error.
    pub fn outcome(&self) -> crate::observe::Outcome {
        use crate::observe::Outcome;
        match self {
            CallError::Upstream(_) | CallError::Refused { .. } => Outcome::Error,
            CallError::Timeout { .. } => Outcome::Timeout,
            CallError::Unavailable { .. } => Outcome::Unavailable,
            CallError::CircuitOpen { .. } => Outcome::CircuitOpen,
        }
    }
}

/// How one attempt on one instance failed.
#[derive(Debug)]
enum Failure {
    /// Not sent or not processed (no session, refused connection).
    NotDelivered(String),
    /// The backend answered 404 for the session: it restarted, did not process the
    /// request, and a new session is worth waiting for.
    Expired(String),
    /// The session broke while the request was in flight: it may have run.
    Lost(String),
    Timeout(u64),
    /// The downstream client cancelled its request; the backend was told.
    Cancelled,
    /// The backend answered this request with an HTTP 4xx (not an expired session's
    /// 404): it was delivered, it failed, and it says nothing about the session.
    Refused(u16),
    Upstream(rmcp::ErrorData),
}

impl Failure {
    /// The session the attempt went over is unusable afterwards.
    fn broke_session(&self) -> bool {
        matches!(
            self,
            Self::NotDelivered(_) | Self::Lost(_) | Self::Expired(_)
        )
    }
}

type Session = RunningService<RoleClient, UpstreamClient>;

/// Everything a backend offers besides tools, as last read, and what it declared.
#[derive(Default)]
pub struct Extras {
    pub prompts: Vec<Prompt>,
    pub resources: Vec<Resource>,
    pub templates: Vec<ResourceTemplate>,
    pub capabilities: ServerCapabilities,
    pub instructions: Option<String>,
}

/// The error a request gets when its upstream's answer is over `max_response_bytes`.
pub(crate) fn oversized(service: &str, max: usize) -> rmcp::ErrorData {
    rmcp::ErrorData::internal_error(
        format!(
            "service \"{service}\" answered with more than {max} bytes (the gateway's max_response_bytes)"
        ),
        None,
    )
}

/// A boxed future, as [`ClientLink`]'s methods return them.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A client as this module reaches it: where a backend's messages about a call (or, for
/// a client's own sessions, outside any call) go. The server side implements it (`mcp`,
/// over its rmcp session); this module knows no server-side type.
pub trait ClientLink: Send + Sync {
    /// `notifications/progress`.
    fn progress(&self, params: ProgressNotificationParam) -> BoxFuture<'_, ()>;
    /// `notifications/message`.
    fn log(&self, params: LoggingMessageNotificationParam) -> BoxFuture<'_, ()>;
    /// A request of the backend's (sampling, elicitation, roots), asked of the client.
    fn ask(&self, request: ServerRequest) -> BoxFuture<'_, Result<ClientResult, rmcp::ErrorData>>;
    /// Closes the client's stream of this request so that it resumes it, the way the
    /// backend closed its own (SEP-1699), with `retry` as the reconnection hint; resolves
    /// once the client is back. `Err(why)`: it cannot be (the stream stays open).
    fn close_stream(&self, retry: Duration)
    -> BoxFuture<'_, Result<oneshot::Receiver<()>, String>>;
}

/// Where what a backend sends during a call goes.
pub enum Sink<'a> {
    /// The client's request stream (inside the request's task).
    Stream(Box<dyn ClientLink + 'a>),
    /// A 2026-07-28 request's rounds (multi round-trip requests): progress, log messages
    /// and server-to-client requests go, untouched, to whichever round of the call is
    /// waiting, which filters and asks as that round's request says.
    Rounds(mpsc::Sender<RelayMsg>),
}

/// Which upstream session carries a request.
pub enum Via<'a> {
    /// The instance's shared session, which declares no client capabilities.
    Shared,
    /// The client's own sessions: a session-mode client that declared sampling,
    /// elicitation or roots.
    Private(&'a PrivateSessions),
    /// A session shared by the 2026-07-28 requests that declare these capabilities
    /// (sampling, elicitation, roots), so the backend sees what the client declared.
    Declaring(&'a ClientCapabilities),
}

/// The downstream side of one request: where relayed messages go.
pub struct Downstream<'a> {
    /// Where the backend's messages about the call go.
    pub sink: Sink<'a>,
    /// Cancelled when the client cancels the request or goes away.
    pub ct: &'a CancellationToken,
    /// The client's own progress token, if it asked for progress.
    pub progress_token: Option<ProgressToken>,
    /// Relay the backend's log messages at all: a 2026-07-28 client opts in per request
    /// (`_meta` `io.modelcontextprotocol/logLevel`), an older one gets them unless
    /// filtered by `logging/setLevel`.
    pub logs: bool,
    /// Log messages below this level are not relayed (`logging/setLevel`, or the
    /// request's own level).
    pub min_log_level: Option<LoggingLevel>,
    /// The upstream session that carries the request.
    pub via: Via<'a>,
    /// The call's record, told which instance served it.
    pub ticket: Option<&'a crate::observe::CallTicket>,
}

/// A client's own upstream sessions, one per instance it used; closed when dropped.
pub struct PrivateSessions {
    capabilities: ClientCapabilities,
    /// The client's session: what a backend sends outside any call goes there.
    owner: Arc<dyn ClientLink>,
    sessions: Mutex<std::collections::HashMap<String, Arc<Session>>>,
}

impl PrivateSessions {
    pub fn new(capabilities: ClientCapabilities, owner: Arc<dyn ClientLink>) -> Self {
        Self {
            capabilities,
            owner,
            sessions: Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn get(&self, key: &str) -> Option<Arc<Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn put(&self, key: String, session: Arc<Session>) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, session);
    }

    fn forget(&self, key: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// What the supervisors report to the registry.
pub trait Listener: Send + Sync + 'static {
    /// An instance's lists were (re)read; the service's tools, prompts or resources may
    /// have changed.
    fn tools_changed(&self, service: &str, instance: &Arc<Instance>);
    /// A backend announced `notifications/resources/updated` for `uri`.
    fn resource_updated(&self, service: &str, uri: &str);
}

fn now_ms() -> u64 {
    crate::vocab::now_ms() as u64
}

/// A short stable id for an instance URL, shown in `/services` and usable in
/// `DELETE /services/{name}/instances/{id}`.
pub fn instance_id(url: &str) -> String {
    let h = balance::fnv1a(url.bytes());
    format!("{:08x}", (h >> 32) as u32 ^ h as u32)
}

// ---------------------------------------------------------------------------------------
// Instance

pub struct Instance {
    pub id: String,
    pub url: Arc<str>,
    pub weight: u32,
    pub source: Source,
    pub registered_at_ms: u64,
    pub owner: Option<Arc<str>>,
    /// The header carrying the gateway's credential, and what may be shown of it.
    auth: Option<(http::HeaderName, http::HeaderValue)>,
    auth_kind: Option<String>,
    service: Arc<str>,
    options: Options,
    health: Mutex<Health>,
    /// Set while the health is anything but a clean `healthy`, so the call path can skip
    /// the health lock when all is well.
    dirty: AtomicBool,
    session: ArcSwapOption<Session>,
    /// Bumped each time a new session is installed.
    generation: watch::Sender<u64>,
    tools: ArcSwap<Vec<Tool>>,
    /// Those of `tools` whose arguments travel in `Mcp-Param-*` headers too.
    params: resume::ParamTable,
    /// When the tools were last read from the backend (0: only known from the store).
    tools_at_ms: AtomicU64,
    in_flight: AtomicUsize,
    wake: Notify,
    relist: AtomicBool,
    cancel: CancellationToken,
    extras: ArcSwap<Extras>,
    /// Relays of the shared session's calls in flight.
    relays: Arc<Relays>,
    /// Sessions shared by 2026-07-28 requests, one per set of declared capabilities
    /// (most recently used last; at most [`MAX_DECLARING_SESSIONS`]).
    declaring: Mutex<Vec<(String, Arc<Session>)>>,
    /// The protocol revision its current session speaks (negotiated at connect).
    revision: ArcSwapOption<String>,
    events: std::sync::OnceLock<Arc<dyn Listener>>,
    /// Resources whose updates the gateway follows on a 2026-07-28 backend's listen
    /// stream (that revision has no `resources/subscribe`); the stream reopens with
    /// the new set when `rewatch` fires.
    watched: Mutex<std::collections::BTreeSet<String>>,
    rewatch: watch::Sender<u64>,
    /// A stdio server's process (`None`: an HTTP upstream).
    process: Option<stdio::Process>,
    /// An HTTP upstream an operator stopped (a stdio one's process says so itself).
    parked: AtomicBool,
}

/// Resources one instance's listen stream follows (those clients subscribed to).
pub const MAX_WATCHED: usize = 1024;

/// How often a listen stream reopens for a changed set of resources at most: changes
/// in between are taken together.
const REWATCH_EVERY: Duration = Duration::from_millis(200);

/// How many sets of client capabilities an instance keeps a session open for; past
/// that, the least recently used is closed once its calls end.
pub const MAX_DECLARING_SESSIONS: usize = 8;

/// What `/services` shows of an instance.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    pub id: String,
    pub url: String,
    pub weight: u32,
    pub source: Source,
    pub registered_at_ms: u64,
    /// Who registered it (absent: configured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// How the gateway authenticates to it (`bearer`, `header x-api-key`), never the
    /// secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    pub in_flight: usize,
    /// The protocol revision the gateway speaks with it (`server/discover` at connect:
    /// 2026-07-28 with a backend that answers it, else what `initialize` agreed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// A stdio server's process: pid, uptime, restarts, last exit, CPU, memory, stderr.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<stdio::ProcessView>,
    #[serde(flatten)]
    pub health: health::Snapshot,
}

impl Instance {
    pub fn new(
        service: &str,
        url: &str,
        weight: u32,
        origin: Origin,
        tools: Vec<Tool>,
        options: Options,
        parent: &CancellationToken,
    ) -> Arc<Self> {
        let auth = origin.auth.as_ref().and_then(|a| match a.header() {
            Ok(h) => Some(h),
            Err(why) => {
                // Validated at registration and in the configuration; only a store
                // edited by hand gets here.
                tracing::warn!(service, url, "upstream credential ignored: {why}");
                None
            }
        });
        let (tools, params) = screen_tools(service, tools);
        Arc::new(Self {
            id: instance_id(url),
            url: url.into(),
            weight: weight.max(1),
            source: origin.source,
            registered_at_ms: origin.registered_at_ms,
            owner: origin.owner,
            auth_kind: auth.as_ref().and(origin.auth.map(|a| a.describe())),
            auth,
            service: service.into(),
            health: Mutex::new(Health::new(options.policy)),
            options,
            dirty: AtomicBool::new(true),
            session: ArcSwapOption::empty(),
            generation: watch::Sender::new(0),
            params: Arc::new(ArcSwap::from_pointee(params)),
            tools: ArcSwap::from_pointee(tools),
            tools_at_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            wake: Notify::new(),
            relist: AtomicBool::new(false),
            watched: Mutex::new(Default::default()),
            rewatch: watch::Sender::new(0),
            cancel: parent.child_token(),
            extras: ArcSwap::from_pointee(Extras::default()),
            relays: Arc::new(Relays::default()),
            declaring: Mutex::new(Vec::new()),
            revision: ArcSwapOption::empty(),
            events: std::sync::OnceLock::new(),
            process: origin.command.map(stdio::Process::new),
            parked: AtomicBool::new(false),
        })
    }

    /// Prompts, resources, templates and capabilities as last read.
    pub fn extras(&self) -> Arc<Extras> {
        self.extras.load_full()
    }

    /// Asks the supervisor to read the lists again (the backend said they changed).
    pub fn request_relist(&self) {
        self.relist.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn resource_updated(&self, uri: &str) {
        if let Some(events) = self.events.get() {
            events.resource_updated(&self.service, uri);
        }
    }

    fn client_options(&self, name: &str) -> service_kit::client::ClientOptions {
        service_kit::client::ClientOptions {
            client_name: name.into(),
            bearer: None,
            connect_timeout: self.options.connect_timeout,
            max_concurrent_requests: 1024,
            reinit_on_expired_session: false,
            // A response stream that breaks is resumed briefly; a dead backend must
            // fail the call fast, not after seconds of backoff.
            sse_retries: 2,
            sse_retry_base: Duration::from_millis(50),
            max_response_bytes: Some(self.options.max_response_bytes),
            discover: true,
        }
    }

    /// The HTTP client of one upstream session (pooled reqwest, its SSE streams watched
    /// for the backend closing them mid-call), and where the pass-through path sends that
    /// session's raw calls, over the same connections.
    fn http(
        &self,
        options: &service_kit::client::ClientOptions,
        relays: &Arc<Relays>,
    ) -> (resume::WatchedHttp, Arc<raw::RawTarget>) {
        let mut headers = http::HeaderMap::new();
        if let Some((name, value)) = &self.auth {
            headers.insert(name.clone(), value.clone());
        }
        let tls = Arc::clone(&self.options.tls);
        let client = service_kit::client::http_client_builder_with(
            options.connect_timeout,
            Arc::clone(&tls),
        )
        .dns_resolver(self.options.guard.resolver())
        .default_headers(headers)
        .build()
        .unwrap_or_else(|_| service_kit::client::http_client(options.connect_timeout));
        let target = Arc::new(raw::RawTarget::new(
            client.clone(),
            &self.url,
            Arc::clone(&self.options.guard),
            self.auth.clone(),
            tls,
        ));
        let http = resume::WatchedHttp::new(
            client,
            Arc::clone(relays),
            Arc::clone(&target),
            self.options.max_response_bytes,
            oversized(&self.service, self.options.max_response_bytes),
            Arc::clone(&self.params),
        );
        (http, target)
    }

    /// A session declaring `capabilities`, whose calls' messages `relays` routes.
    async fn open_declaring(
        self: &Arc<Self>,
        capabilities: &ClientCapabilities,
        relays: Arc<Relays>,
    ) -> Result<Session, String> {
        let options = self.client_options("mcp-gateway");
        let mut info = service_kit::client::client_config(&options);
        info.capabilities = capabilities.clone();
        let (http, raw) = self.http(&options, &relays);
        let handler = UpstreamClient {
            info,
            instance: Arc::downgrade(self),
            relays,
            raw: Some(raw),
        };
        // The `Mcp-Param-*` headers of its calls come from the instance's tool list
        // (`resume::ParamTable`): it need not list them again.
        service_kit::client::connect_via(&self.url, &options, handler, http)
            .await
            .map_err(|e| service_kit::client::without_response_body(&format!("{e:#}")))
    }

    /// Reads prompts, resources and templates, as far as the backend declared them.
    async fn read_extras(&self, session: &Session) -> Result<Extras, String> {
        let info = session.peer().peer_info();
        let capabilities = info
            .as_ref()
            .map(|i| i.capabilities.clone())
            .unwrap_or_default();
        let instructions = info.as_ref().and_then(|i| i.instructions.clone());
        let t = self.options.connect_timeout;
        let bounds = self.options.list_bounds;
        let peer = session.peer();
        let params = |cursor| Some(PaginatedRequestParams::default().with_cursor(cursor));
        let prompts = if capabilities.prompts.is_some() {
            list_bounded("prompts/list", bounds, t, |cursor| async move {
                let r = peer.list_prompts(params(cursor)).await?;
                Ok((r.prompts, r.next_cursor))
            })
            .await?
        } else {
            Vec::new()
        };
        let (resources, templates) = if capabilities.resources.is_some() {
            (
                list_bounded("resources/list", bounds, t, |cursor| async move {
                    let r = peer.list_resources(params(cursor)).await?;
                    Ok((r.resources, r.next_cursor))
                })
                .await?,
                list_bounded("resources/templates/list", bounds, t, |cursor| async move {
                    let r = peer.list_resource_templates(params(cursor)).await?;
                    Ok((r.resource_templates, r.next_cursor))
                })
                .await?,
            )
        } else {
            (Vec::new(), Vec::new())
        };
        Ok(Extras {
            prompts,
            resources,
            templates,
            capabilities,
            instructions,
        })
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `f` to the health, logging a state change and keeping `dirty` true to it.
    fn update_health(&self, f: impl FnOnce(&mut Health) -> bool) {
        let mut h = self.health();
        let before = h.state();
        if f(&mut h) {
            let snap = h.snapshot();
            tracing::info!(service = %self.service, instance = %self.url, from = ?before,
                to = ?snap.state, error = snap.last_error.as_deref().unwrap_or(""),
                "upstream state changed");
        }
        let clean = h.state() == State::Healthy && h.snapshot().consecutive_failures == 0;
        self.dirty.store(!clean, Ordering::Release);
    }

    pub fn state(&self) -> State {
        self.health().state()
    }

    /// When the health state last changed (Unix ms).
    pub fn health_since_ms(&self) -> u64 {
        self.health().since_ms()
    }

    pub fn view(&self) -> InstanceView {
        InstanceView {
            id: self.id.clone(),
            url: self.url.to_string(),
            weight: self.weight,
            source: self.source,
            registered_at_ms: self.registered_at_ms,
            owner: self.owner.as_deref().map(String::from),
            auth: self.auth_kind.clone(),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            protocol_version: self.revision.load_full().map(|r| r.to_string()),
            process: self.process.as_ref().map(stdio::Process::view),
            health: self.health().snapshot(),
        }
    }

    /// Speaks the 2026-07-28 revision (or later): no session; per-request metadata;
    /// questions come back as `input_required` results.
    pub fn modern(&self) -> bool {
        self.revision
            .load()
            .as_deref()
            .is_some_and(|r| is_modern(r))
    }

    /// Last-known tool definitions, exactly as the backend sent them.
    pub fn tools(&self) -> Arc<Vec<Tool>> {
        self.tools.load_full()
    }

    pub fn tools_at_ms(&self) -> u64 {
        self.tools_at_ms.load(Ordering::Acquire)
    }

    /// Can take a call now: a session is open and the breaker is not refusing.
    fn available(&self, now: Instant) -> bool {
        self.session.load().is_some()
            && (!self.dirty.load(Ordering::Acquire) || !self.health().is_open(now))
    }

    /// Connects and lists tools once, within the connect deadline. Used by `/register`
    /// (which must answer with the tools or a clear error) and by the supervisor.
    pub async fn connect(self: &Arc<Self>) -> Result<Vec<Tool>, String> {
        if let Some(process) = &self.process {
            let session = self.start_process(process).await?;
            let installed = self.install(session).await;
            if installed.is_err() {
                process.kill().await;
            }
            return installed;
        }
        // An address literal never reaches the resolver's filter: checked here.
        self.options
            .guard
            .check_url(&self.url)
            .await
            .map_err(|r| r.to_string())?;
        let options = self.client_options("mcp-gateway");
        let (http, raw) = self.http(&options, &self.relays);
        let handler = UpstreamClient {
            info: service_kit::client::client_config(&options),
            instance: Arc::downgrade(self),
            relays: Arc::clone(&self.relays),
            raw: Some(raw),
        };
        let session = service_kit::client::connect_via(&self.url, &options, handler, http)
            .await
            .map_err(|e| service_kit::client::without_response_body(&format!("{e:#}")))?;
        self.install(session).await
    }

    /// Keeps `tools` as the instance's tool list, read from the backend now (without
    /// the ones [`screen_tools`] leaves out), and returns it.
    fn store_tools(&self, tools: Vec<Tool>) -> Arc<Vec<Tool>> {
        let (tools, params) = screen_tools(&self.service, tools);
        let tools = Arc::new(tools);
        self.params.store(Arc::new(params));
        self.tools.store(Arc::clone(&tools));
        self.tools_at_ms.store(now_ms(), Ordering::Release);
        tools
    }

    /// Reads a new session's lists and makes it the instance's.
    async fn install(self: &Arc<Self>, session: Session) -> Result<Vec<Tool>, String> {
        if let Some((_, why)) = self.parked() {
            // Stopped while it connected.
            session.cancellation_token().cancel();
            return Err(why);
        }
        let tools = list_tools(
            &session,
            self.options.list_bounds,
            self.options.connect_timeout,
        )
        .await?;
        let extras = self.read_extras(&session).await?;
        self.extras.store(Arc::new(extras));
        let tools = self.store_tools(tools);
        let revision = session
            .peer()
            .peer_info()
            .map(|i| i.protocol_version.as_str().to_string());
        if let Some((_, why)) = self.parked() {
            // Stopped while it listed.
            session.cancellation_token().cancel();
            return Err(why);
        }
        self.revision.store(revision.map(Arc::new));
        self.session.store(Some(Arc::new(session)));
        self.generation.send_modify(|g| *g += 1);
        self.update_health(Health::success);
        Ok(tools.to_vec())
    }

    /// Starts a stdio server's child and opens the gateway's one session with it over
    /// its stdin and stdout. The gateway probes with `server/discover` and speaks
    /// 2026-07-28 to a server that answers it: every request then carries its caller's
    /// own capabilities, and a question comes back inside the call's answer
    /// (`input_required`), so it always reaches the call that caused it. A server that
    /// answers the probe with an error gets `initialize` (2025-11-25) on the same child;
    /// one that offers no revision the gateway speaks, or ignores the probe, gets it on a
    /// fresh child (and, having ignored it, at once on every later one). A child that
    /// exits ends the session at once.
    async fn start_process(self: &Arc<Self>, process: &stdio::Process) -> Result<Session, String> {
        use rmcp::service::ClientLifecycleMode;
        if process.legacy() {
            return self
                .spawn_session(process, ClientLifecycleMode::Initialize, true)
                .await
                .map_err(Unopened::into_reason);
        }
        let probe = ClientLifecycleMode::Auto {
            preferred_versions: vec![rmcp::model::ProtocolVersion::V_2026_07_28],
            legacy_version: Some(rmcp::model::ProtocolVersion::V_2025_11_25),
        };
        let why = match self.spawn_session(process, probe, true).await {
            Ok(session) => return Ok(session),
            Err(Unopened::Retry(why)) if process.parked().is_none() => why,
            Err(unopened) => return Err(unopened.into_reason()),
        };
        let session = self
            .spawn_session(process, ClientLifecycleMode::Initialize, false)
            .await
            .map_err(|again| format!("{why}; then with initialize: {}", again.into_reason()))?;
        tracing::info!(
            service = %self.service,
            "{why}; it answered initialize, so the gateway speaks 2025-11-25 to it from now on"
        );
        process.set_legacy();
        Ok(session)
    }

    /// One child and its session opened with `lifecycle` (`counted`: as a start of the
    /// restart budget). On failure the child is gone.
    async fn spawn_session(
        self: &Arc<Self>,
        process: &stdio::Process,
        lifecycle: rmcp::service::ClientLifecycleMode,
        counted: bool,
    ) -> Result<Session, Unopened> {
        use rmcp::{
            service::{ClientInitializeError, ClientServiceExt},
            transport::async_rw::AsyncRwTransport,
        };
        let spawned = if counted {
            process.spawn(&self.service)
        } else {
            process.respawn(&self.service)
        };
        let spawned = spawned.map_err(Unopened::Failed)?;
        let child = Arc::clone(&spawned.child);
        // The child's end ends its session: the instance is `down` at once, and the
        // supervisor starts the next child (within the restart budget).
        let watched = Arc::downgrade(self);
        let ended = Arc::clone(&child);
        tokio::spawn(async move {
            let status = ended.wait().await;
            if let Some(instance) = watched.upgrade()
                && let Some(process) = &instance.process
            {
                process.exited(&ended, &status);
                if process.child().is_none()
                    && let Some(session) = instance.session.load_full()
                {
                    instance.lost(&session, &format!("the process exited ({status})"));
                }
            }
        });
        let options = self.client_options("mcp-gateway");
        let mut info = service_kit::client::client_config(&options);
        // What a 2025-11-25 session declares once for every caller; a 2026-07-28 request
        // carries its caller's own (`forward`).
        info.capabilities = stdio_capabilities();
        let handler = UpstreamClient {
            info,
            instance: Arc::downgrade(self),
            relays: Arc::clone(&self.relays),
            raw: None,
        };
        // A line longer than a response may be is dropped, never buffered whole.
        let transport = AsyncRwTransport::new(spawned.stdout, spawned.stdin)
            .with_max_line_length(self.options.max_response_bytes);
        let handshake = handler.serve_with_lifecycle(transport, lifecycle);
        let (why, retry) = match tokio::time::timeout(self.options.connect_timeout, handshake).await
        {
            Ok(Ok(session)) => return Ok(session),
            // Its discover result lists no revision the gateway speaks.
            Ok(Err(e @ ClientInitializeError::NoCompatibleProtocolVersion { .. })) => {
                (format!("MCP handshake over stdio failed: {e}"), true)
            }
            Ok(Err(e)) => (format!("MCP handshake over stdio failed: {e}"), false),
            // It may have ignored the probe.
            Err(_) => (
                format!(
                    "no MCP answer on stdout within {} ms",
                    self.options.connect_timeout.as_millis()
                ),
                true,
            ),
        };
        if retry {
            // Another child follows at once: this one's end is not the last exit.
            process.quiet(&child);
        }
        process.kill().await;
        let status = child.wait().await;
        let why = format!("{why} (the process: {status})");
        Err(if retry {
            Unopened::Retry(why)
        } else {
            Unopened::Failed(why)
        })
    }

    /// A stdio server's process, if this instance runs one.
    pub fn process(&self) -> Option<&stdio::Process> {
        self.process.as_ref()
    }

    /// An operator's stop: the session ends (the child's stdin closes), the child is
    /// stopped, and the instance stays `stopped` until started. HTTP upstreams: the
    /// session ends and no new one is opened until started.
    pub async fn stop(&self) {
        if let Some(process) = &self.process {
            process.park();
        } else {
            self.parked.store(true, Ordering::Release);
        }
        if let Some(session) = self.session.swap(None) {
            session.cancellation_token().cancel();
        }
        if let Some(process) = &self.process {
            process.kill().await;
        }
        self.update_health(|h| h.park(State::Stopped, stdio::Parked::Stopped.to_string()));
        self.generation.send_modify(|g| *g += 1);
    }

    /// An operator's start: a stopped or failed instance connects again (a stdio
    /// server with a fresh restart budget). Returns once it has a session, or after
    /// the connect deadline.
    pub async fn start(&self) {
        if self.parked().is_none() && self.session.load().is_some() {
            return;
        }
        let seen = *self.generation.borrow();
        if let Some(process) = &self.process {
            process.unpark();
        }
        self.parked.store(false, Ordering::Release);
        self.update_health(Health::restart);
        self.wake.notify_one();
        self.await_new_session(seen).await;
    }

    /// Why the instance does not connect now, if it does not: stopped or failed.
    fn parked(&self) -> Option<(State, String)> {
        let parked = self
            .process
            .as_ref()
            .and_then(stdio::Process::parked)
            .or_else(|| {
                self.parked
                    .load(Ordering::Acquire)
                    .then_some(stdio::Parked::Stopped)
            })?;
        let state = match parked {
            stdio::Parked::Stopped => State::Stopped,
            stdio::Parked::Failed(_) => State::Failed,
        };
        Some((state, parked.to_string()))
    }

    /// One attempt of a request on this instance, relaying what the backend sends back
    /// meanwhile to `down`.
    async fn call(
        self: &Arc<Self>,
        request: ClientRequest,
        down: &Downstream<'_>,
        timeout: Duration,
        admission: Admission,
    ) -> Result<ServerResult, Failure> {
        let Some(shared) = self.session.load_full() else {
            if admission == Admission::Probe {
                self.health().release_probe();
            }
            return Err(Failure::NotDelivered(self.last_error_or("no session")));
        };
        let session = match &down.via {
            // A stdio server has one session (its stdin and stdout): every call shares
            // it, and what the server sends is routed by the call it belongs to.
            _ if self.process.is_some() => Arc::clone(&shared),
            Via::Shared => Arc::clone(&shared),
            Via::Private(private) => match self.private_session(private).await {
                Ok(s) => s,
                Err(cause) => return Err(Failure::NotDelivered(cause)),
            },
            Via::Declaring(capabilities) => match self.declaring_session(capabilities).await {
                Ok(s) => s,
                Err(cause) => return Err(Failure::NotDelivered(cause)),
            },
        };
        if let Some(ticket) = down.ticket {
            ticket.served_by(&self.id);
        }
        let mut request = request;
        if down.logs && self.modern() {
            // A 2026-07-28 backend logs about a request only when its `_meta` asks.
            rmcp::model::GetMeta::get_meta_mut(&mut request)
                .set_log_level(down.min_log_level.unwrap_or(LoggingLevel::Debug));
        }
        let options = if self.process.is_some() && self.modern() {
            // A 2026-07-28 stdio server's one session carries every caller's requests:
            // each says what its own caller declared (the session declared nothing).
            let mut meta = rmcp::model::RequestMetaObject::new();
            meta.set_client_capabilities(match &down.via {
                Via::Shared => ClientCapabilities::default(),
                Via::Private(private) => private.capabilities.clone(),
                Via::Declaring(capabilities) => (*capabilities).clone(),
            });
            let mut options = PeerRequestOptions::no_options();
            options.meta = Some(meta);
            options
        } else {
            PeerRequestOptions::no_options()
        };
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let result = forward(&session, request, options, down, timeout).await;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Err(f) = &result
            && f.broke_session()
        {
            match &down.via {
                Via::Shared => {}
                Via::Private(private) => private.forget(&self.private_key()),
                Via::Declaring(_) => self
                    .lock_declaring()
                    .retain(|(_, s)| !Arc::ptr_eq(s, &session)),
            }
        }
        self.settle(result.as_ref().map(|_| ()), &shared);
        result
    }

    /// This instance's key among a client's own sessions.
    fn private_key(self: &Arc<Self>) -> String {
        format!("{}@{:p}", self.id, Arc::as_ptr(self))
    }

    /// The client's own session with this instance, opened on first use.
    async fn private_session(
        self: &Arc<Self>,
        private: &PrivateSessions,
    ) -> Result<Arc<Session>, String> {
        let key = self.private_key();
        if let Some(s) = private.get(&key) {
            return Ok(s);
        }
        let relays = Arc::new(Relays::for_one_client(private.owner.clone()));
        let s = Arc::new(self.open_declaring(&private.capabilities, relays).await?);
        private.put(key, Arc::clone(&s));
        Ok(s)
    }

    fn lock_declaring(&self) -> std::sync::MutexGuard<'_, Vec<(String, Arc<Session>)>> {
        self.declaring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session shared by requests that declare `capabilities`, opened on first use.
    /// Its calls come from many clients: what the backend sends is routed by the call
    /// it belongs to, never guessed.
    async fn declaring_session(
        self: &Arc<Self>,
        capabilities: &ClientCapabilities,
    ) -> Result<Arc<Session>, String> {
        let key = serde_json::to_string(capabilities).unwrap_or_default();
        {
            let mut sessions = self.lock_declaring();
            if let Some(at) = sessions.iter().position(|(k, _)| *k == key) {
                let entry = sessions.remove(at);
                let session = Arc::clone(&entry.1);
                sessions.push(entry);
                return Ok(session);
            }
        }
        let s = Arc::new(
            self.open_declaring(capabilities, Arc::new(Relays::default()))
                .await?,
        );
        let mut sessions = self.lock_declaring();
        // Another request may have opened one meanwhile: keep the first.
        if let Some((_, first)) = sessions.iter().find(|(k, _)| *k == key) {
            return Ok(Arc::clone(first));
        }
        if sessions.len() >= MAX_DECLARING_SESSIONS {
            sessions.remove(0);
        }
        sessions.push((key, Arc::clone(&s)));
        Ok(s)
    }

    /// Books the outcome of one call on `session`: health and breaker, and a broken
    /// session handed to the supervisor.
    fn settle(&self, outcome: Result<(), &Failure>, session: &Arc<Session>) {
        match outcome {
            Ok(()) | Err(Failure::Upstream(_) | Failure::Cancelled | Failure::Refused(_)) => {
                if self.dirty.load(Ordering::Acquire) {
                    self.update_health(Health::success);
                }
            }
            Err(Failure::Timeout(ms)) => {
                let why = format!("call timed out after {ms} ms");
                self.update_health(|h| h.failure(why, Instant::now()));
            }
            Err(Failure::NotDelivered(cause) | Failure::Lost(cause) | Failure::Expired(cause)) => {
                self.lost(session, cause)
            }
        }
    }

    fn last_error_or(&self, default: &str) -> String {
        self.health()
            .snapshot()
            .last_error
            .unwrap_or_else(|| default.to_string())
    }

    /// A call or ping found `session` broken: drop it (unless another task already
    /// installed a fresh one), mark the instance down, and wake the supervisor.
    fn lost(&self, session: &Arc<Session>, cause: &str) {
        let current = self.session.load();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, session)) {
            self.session.store(None);
        }
        self.update_health(|h| h.lost(cause.to_string()));
        self.wake.notify_one();
    }

    /// Waits (bounded by the connect deadline) for the supervisor to install a new
    /// session after `seen`; returns whether one arrived.
    async fn await_new_session(&self, seen: u64) -> bool {
        let mut rx = self.generation.subscribe();
        let wait = rx.wait_for(|g| *g > seen);
        matches!(
            tokio::time::timeout(self.options.connect_timeout, wait).await,
            Ok(Ok(_))
        )
    }

    /// Stops the supervisor and closes the session (the backend gets its DELETE).
    pub async fn close(&self) {
        self.cancel.cancel();
        if let Some(session) = self.session.swap(None) {
            match Arc::try_unwrap(session) {
                Ok(session) => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), session.cancel()).await;
                }
                // A call still holds it: its loop ends now all the same (a stdio
                // server's stdin closes with it).
                Err(shared) => shared.cancellation_token().cancel(),
            }
        }
        if let Some(process) = &self.process {
            // Parked first: a supervisor between its last check and its next spawn
            // starts nothing after this.
            process.park();
            process.kill().await;
        }
    }

    /// Runs until the instance is closed: connect, watch, reconnect.
    pub async fn supervise(self: Arc<Self>, listener: Arc<dyn Listener>) {
        let _ = self.events.set(Arc::clone(&listener));
        const MIN_BACKOFF: Duration = Duration::from_millis(200);
        const MAX_BACKOFF: Duration = Duration::from_secs(30);
        let mut backoff = MIN_BACKOFF;
        let mut last_relist = tokio::time::Instant::now();
        // Connected at registration already: its listen stream starts with supervision.
        if let Some(session) = self.session.load_full()
            && session_is_modern(&session)
        {
            tokio::spawn(Arc::clone(&self).listen(session));
        }
        loop {
            if self.cancel.is_cancelled() {
                return;
            }
            let Some(session) = self.session.load_full() else {
                if let Some((state, why)) = self.parked() {
                    self.update_health(|h| h.park(state, why));
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = self.cancel.cancelled() => return,
                    }
                    backoff = MIN_BACKOFF;
                    continue;
                }
                let result = tokio::select! {
                    r = self.connect() => r,
                    _ = self.cancel.cancelled() => return,
                };
                match result {
                    Ok(_) => {
                        backoff = MIN_BACKOFF;
                        if let Some(session) = self.session.load_full()
                            && session_is_modern(&session)
                        {
                            tokio::spawn(Arc::clone(&self).listen(session));
                        }
                        listener.tools_changed(&self.service, &self);
                    }
                    Err(_) if self.parked().is_some() => continue, // its budget is spent
                    Err(e) => {
                        self.update_health(|h| h.lost(e));
                        let delay = backoff.mul_f64(rand::rng().random_range(0.75..1.25));
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = self.wake.notified() => {}
                            _ = self.cancel.cancelled() => return,
                        }
                    }
                }
                continue;
            };
            tokio::select! {
                _ = tokio::time::sleep(self.options.health_interval) => {}
                _ = self.wake.notified() => {}
                _ = self.cancel.cancelled() => return,
            }
            if self.session.load().is_none() {
                continue; // a failed call dropped it: reconnect now
            }
            if self.relist.swap(false, Ordering::AcqRel) {
                // At most one re-list per RELIST_EVERY, however often the backend says
                // its lists changed.
                let next = last_relist + RELIST_EVERY;
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    _ = self.cancel.cancelled() => return,
                }
                last_relist = tokio::time::Instant::now();
                self.relist(&session, &*listener).await;
                continue;
            }
            if self.options.pings.load(Ordering::Relaxed) {
                self.ping(&session).await;
            }
        }
    }

    /// The cluster's health checker's verdict on this instance, for a replica that does
    /// not ping: found down, the session is dropped (the supervisor reconnects with
    /// backoff); found up while this replica has no session, the supervisor tries now.
    /// A stdio server is each replica's own child: no verdict applies to it.
    pub fn agree(&self, state: &str, why: Option<&str>) {
        if self.process.is_some() {
            return;
        }
        match state {
            "down" => {
                if let Some(session) = self.session.load_full() {
                    self.lost(
                        &session,
                        &format!("the cluster's health check: {}", why.unwrap_or("down")),
                    );
                }
            }
            "healthy" | "degraded" if self.session.load().is_none() => self.wake.notify_one(),
            _ => {}
        }
    }

    /// The last error the health saw, if any.
    pub fn last_error(&self) -> Option<String> {
        self.health().snapshot().last_error
    }

    /// Follows (or stops following) `uri`'s updates on the listen stream; false when
    /// it already follows [`MAX_WATCHED`] others.
    fn watch(&self, uri: &str, on: bool) -> bool {
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        if on && watched.len() >= MAX_WATCHED && !watched.contains(uri) {
            return false;
        }
        let changed = if on {
            watched.insert(uri.to_string())
        } else {
            watched.remove(uri)
        };
        if changed {
            self.rewatch.send_modify(|g| *g += 1);
        }
        true
    }

    /// The resources followed on the listen stream.
    fn watched(&self) -> Vec<String> {
        let watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        watched.iter().cloned().collect()
    }

    /// A 2026-07-28 backend announces list changes only on a `subscriptions/listen`
    /// stream: one is kept open on `session` for the lists it says change, and reopened
    /// (backing off) when it ends, until the session is replaced or the instance closed.
    async fn listen(self: Arc<Self>, session: Arc<Session>) {
        let capabilities = session
            .peer()
            .peer_info()
            .map(|i| i.capabilities.clone())
            .unwrap_or_default();
        let mut filter = rmcp::model::SubscriptionFilter::default();
        if capabilities
            .tools
            .as_ref()
            .is_some_and(|c| c.list_changed == Some(true))
        {
            filter.tools_list_changed = Some(true);
        }
        if capabilities
            .prompts
            .as_ref()
            .is_some_and(|c| c.list_changed == Some(true))
        {
            filter.prompts_list_changed = Some(true);
        }
        if capabilities
            .resources
            .as_ref()
            .is_some_and(|c| c.list_changed == Some(true))
        {
            filter.resources_list_changed = Some(true);
        }
        let subscribes = capabilities
            .resources
            .as_ref()
            .is_some_and(|c| c.subscribe == Some(true));
        let current = |me: &Self| {
            me.session
                .load()
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, &session))
        };
        let mut rewatch = self.rewatch.subscribe();
        // Ends when the session is replaced (a new one has a listener of its own).
        let mut generation = self.generation.subscribe();
        generation.mark_unchanged();
        let mut backoff = Duration::from_millis(500);
        while !self.cancel.is_cancelled() && current(&self) {
            rewatch.mark_unchanged();
            let mut filter = filter.clone();
            if subscribes {
                let watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
                if !watched.is_empty() {
                    filter.resource_subscriptions = Some(watched.iter().cloned().collect());
                }
            }
            if filter == Default::default() {
                // Nothing to hear of yet: wait for a resource to follow.
                tokio::select! {
                    _ = rewatch.changed() => continue,
                    _ = generation.changed() => return,
                    _ = self.cancel.cancelled() => return,
                }
            }
            let opened = tokio::select! {
                r = tokio::time::timeout(self.options.connect_timeout, session.peer().listen(filter)) => r,
                _ = self.cancel.cancelled() => return,
            };
            let mut reopen = false;
            match opened {
                Ok(Ok(mut subscription)) => {
                    backoff = Duration::from_millis(500);
                    // What changed while no stream was open.
                    self.request_relist();
                    loop {
                        let next = tokio::select! {
                            n = subscription.next() => n,
                            // The resources to follow changed: reopened with them.
                            _ = rewatch.changed() => {
                                reopen = true;
                                break;
                            }
                            _ = generation.changed() => return,
                            _ = self.cancel.cancelled() => return,
                        };
                        match next {
                            Ok(Some(
                                rmcp::model::ServerNotification::ToolListChangedNotification(_),
                            ))
                            | Ok(Some(
                                rmcp::model::ServerNotification::PromptListChangedNotification(_),
                            ))
                            | Ok(Some(
                                rmcp::model::ServerNotification::ResourceListChangedNotification(_),
                            )) => {
                                tracing::debug!(instance = %self.url, "list changed (listen stream)");
                                self.request_relist();
                            }
                            Ok(Some(
                                rmcp::model::ServerNotification::ResourceUpdatedNotification(n),
                            )) => {
                                self.resource_updated(&n.params.uri);
                            }
                            Ok(Some(_)) => {}
                            Ok(None) | Err(_) => break,
                        }
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(instance = %self.url, "subscriptions/listen refused: {e}");
                }
                Err(_) => tracing::debug!(instance = %self.url, "subscriptions/listen timed out"),
            }
            if reopen {
                // Subscriptions arriving together reopen the stream once.
                tokio::select! {
                    _ = tokio::time::sleep(REWATCH_EVERY) => {}
                    _ = generation.changed() => return,
                    _ = self.cancel.cancelled() => return,
                }
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = generation.changed() => return,
                _ = self.cancel.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// Reads the lists again; tells the registry only when they changed.
    async fn relist(self: &Arc<Self>, session: &Arc<Session>, listener: &dyn Listener) {
        let tools = match list_tools(
            session,
            self.options.list_bounds,
            self.options.connect_timeout,
        )
        .await
        {
            Ok(tools) => tools,
            Err(e) => {
                self.update_health(|h| h.failure(e, Instant::now()));
                return;
            }
        };
        let tools_before = self.tools.load_full();
        let mut changed = false;
        match self.read_extras(session).await {
            Ok(extras) => {
                let before = self.extras.load();
                changed |= before.prompts != extras.prompts
                    || before.resources != extras.resources
                    || before.templates != extras.templates
                    || before.capabilities != extras.capabilities
                    || before.instructions != extras.instructions;
                self.extras.store(Arc::new(extras));
            }
            Err(e) => tracing::debug!(service = %self.service, "re-reading lists: {e}"),
        }
        changed |= *tools_before != *self.store_tools(tools);
        if changed {
            listener.tools_changed(&self.service, self);
        }
    }

    async fn ping(&self, session: &Arc<Session>) {
        // A 2026-07-28 session is probed with `server/discover` (its servers may not
        // answer `ping`, and log the -32601 every interval).
        let modern = self
            .revision
            .load()
            .as_deref()
            .is_some_and(|r| is_modern(r));
        let request = if modern {
            ClientRequest::DiscoverRequest(rmcp::model::DiscoverRequest::new(
                rmcp::model::DiscoverRequestParams::default(),
            ))
        } else {
            ClientRequest::PingRequest(PingRequest {
                method: Default::default(),
                extensions: Default::default(),
            })
        };
        let ping = session.peer().send_request(request);
        match tokio::time::timeout(self.options.connect_timeout, ping).await {
            Ok(Ok(_)) => self.update_health(|h| h.ping_ok(Instant::now())),
            Ok(Err(e)) => match classify(e) {
                Failure::Upstream(_) | Failure::Refused(_) => {
                    self.update_health(|h| h.ping_ok(Instant::now()))
                }
                Failure::NotDelivered(c) | Failure::Lost(c) | Failure::Expired(c) => {
                    self.lost(session, &format!("ping failed: {c}"))
                }
                other => self.update_health(|h| {
                    h.failure(format!("ping failed: {other:?}"), Instant::now())
                }),
            },
            Err(_) => {
                let why = format!(
                    "ping not answered within {} ms",
                    self.options.connect_timeout.as_millis()
                );
                self.update_health(|h| h.failure(why, Instant::now()))
            }
        }
    }
}

impl Candidate for Arc<Instance> {
    fn key(&self) -> &str {
        &self.id
    }
    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
    fn weight(&self) -> u32 {
        self.weight
    }
}

/// Sends `request` on `session` (with `options`' `_meta`) and waits for its answer,
/// relaying progress, log messages and server-to-client requests to the downstream
/// request meanwhile. On timeout or when
/// the downstream client cancels, the backend gets `notifications/cancelled`.
async fn forward(
    session: &Session,
    request: ClientRequest,
    options: PeerRequestOptions,
    down: &Downstream<'_>,
    timeout: Duration,
) -> Result<ServerResult, Failure> {
    let relays = Arc::clone(&session.service().relays);
    let peer = session.peer().clone();
    let handle = peer
        .send_request_with_option(request, options)
        .await
        .map_err(classify)?;
    let (tx, mut rx) = mpsc::channel(64);
    // A client that declared sampling, elicitation or roots may be asked; so may a
    // 2026-07-28 client's call, whose rounds refuse what it did not declare with that
    // revision's own error.
    let may_ask = !matches!(down.via, Via::Shared) || matches!(down.sink, Sink::Rounds(_));
    let _relay = relays.register_call(
        handle.id.clone(),
        handle.progress_token.clone(),
        tx,
        may_ask,
    );
    let mut abandon = CancelOnDrop {
        peer: Some(peer.clone()),
        id: handle.id.clone(),
        reason: "the gateway's client went away",
    };
    let response = handle.await_response();
    tokio::pin!(response);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    // Fires when the client resumes a stream the gateway closed.
    let mut resumed = None;
    // The backend sent something about this call before its answer.
    let mut chatty = false;
    let outcome = loop {
        tokio::select! {
            r = &mut response => {
                // rmcp hands notifications to the client handler on tasks of their own,
                // so ones sent just before the answer may still be on their way: when the
                // client wants any (progress, log messages, its own session), let them
                // land, then pass on whatever arrived.
                if down.progress_token.is_some() || down.logs || !matches!(down.via, Via::Shared) {
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                }
                while let Ok(msg) = rx.try_recv() {
                    // The answer is here: a closed stream has nothing left to resume for.
                    relay_down(msg, down, &mut Some(None)).await;
                }
                // A backend that reported on the call may have a last report in flight
                // on a busy machine: a few milliseconds more for it, for such calls only.
                if chatty {
                    while let Ok(Some(msg)) = tokio::time::timeout(STRAGGLER_WAIT, rx.recv()).await {
                        relay_down(msg, down, &mut Some(None)).await;
                    }
                }
                break r.map_err(classify);
            }
            Some(msg) = rx.recv() => {
                chatty = true;
                relay_down(msg, down, &mut resumed).await
            }
            _ = &mut deadline => {
                abandon.reason = "timed out at the gateway";
                return Err(Failure::Timeout(timeout.as_millis() as u64));
            }
            _ = down.ct.cancelled() => {
                abandon.reason = "cancelled by the client";
                return Err(Failure::Cancelled);
            }
        }
    };
    abandon.peer = None;
    if let Some(Some(resumed)) = resumed {
        // The answer goes out on the resumed stream: rmcp keeps no copy of an answer
        // sent while the client is away, so wait for it to come back.
        tokio::select! {
            _ = resumed => {}
            _ = &mut deadline => tracing::debug!("the client did not resume its stream in time"),
            _ = down.ct.cancelled() => {}
        }
    }
    outcome
}

/// Whether `revision` is 2026-07-28 or later: no session, the lifecycle in each
/// request's `_meta`, questions as `input_required` (revisions are dates, so they order
/// as text).
pub fn is_modern(revision: &str) -> bool {
    revision >= "2026-07-28"
}

/// Whether `session` speaks the 2026-07-28 revision (or later).
fn session_is_modern(session: &Session) -> bool {
    session
        .peer()
        .peer_info()
        .is_some_and(|i| is_modern(i.protocol_version.as_str()))
}

/// How long, after its answer, a call whose backend reported on it waits for a last
/// report still on its way (see `forward`).
const STRAGGLER_WAIT: Duration = Duration::from_millis(5);

/// Sends `notifications/cancelled` for a request abandoned before its answer.
struct CancelOnDrop {
    peer: Option<Peer<RoleClient>>,
    id: rmcp::model::RequestId,
    reason: &'static str,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(peer) = self.peer.take() {
            let params = CancelledNotificationParam::new(
                Some(self.id.clone()),
                Some(self.reason.to_string()),
            );
            tokio::spawn(async move {
                let _ = peer.notify_cancelled(params).await;
            });
        }
    }
}

/// Delivers one relayed message on the downstream request's stream (this runs inside
/// the downstream request's task, which is what ties it to that stream).
#[allow(deprecated)] // logging and sampling are deprecated by SEP-2577 but still spoken
async fn relay_down(
    msg: RelayMsg,
    down: &Downstream<'_>,
    resumed: &mut Option<Option<oneshot::Receiver<()>>>,
) {
    // A stdio server's one session declares every capability the gateway relays, so
    // it may ask a client that declared none of them: refused here, never sent (a
    // 2026-07-28 client's rounds refuse it themselves, with that revision's error).
    let msg = match msg {
        RelayMsg::Request(request, reply) if matches!(down.sink, Sink::Stream(_)) => {
            match undeclared(&request, &down.via) {
                Some(capability) => {
                    let _ = reply.send(Err(rmcp::ErrorData::new(
                        rmcp::model::ErrorCode::METHOD_NOT_FOUND,
                        format!("the client did not declare the {capability} capability"),
                        None,
                    )));
                    return;
                }
                None => RelayMsg::Request(request, reply),
            }
        }
        other => other,
    };
    let peer = match &down.sink {
        Sink::Stream(client) => client.as_ref(),
        Sink::Rounds(rounds) => {
            match msg {
                // No stream of the client's to close: the rounds wait for the answer.
                RelayMsg::StreamClosed(_) => *resumed = Some(None),
                request @ RelayMsg::Request(..) => {
                    if let Err(refused) = rounds.try_send(request)
                        && let RelayMsg::Request(_, reply) = refused.into_inner()
                    {
                        let _ = reply.send(Err(rmcp::ErrorData::internal_error(
                            "the gateway cannot pass this request on to its client now",
                            None,
                        )));
                    }
                }
                // Dropped when the waiting round has a backlog: these are advisory.
                other => {
                    let _ = rounds.try_send(other);
                }
            }
            return;
        }
    };
    match msg {
        RelayMsg::StreamClosed(retry) => {
            // Once per call; a backend that closes again is followed upstream only.
            if resumed.is_some() {
                return;
            }
            let retry = retry.unwrap_or(DEFAULT_RESUME_RETRY);
            *resumed = Some(match peer.close_stream(retry).await {
                Ok(rx) => Some(rx),
                Err(why) => {
                    tracing::debug!("the client's stream stays open: {why}");
                    None
                }
            });
        }
        RelayMsg::Progress(mut p) => {
            if let Some(token) = &down.progress_token {
                p.progress_token = token.clone();
                peer.progress(p).await;
            }
        }
        RelayMsg::Log(l) => {
            if down.logs
                && down
                    .min_log_level
                    .is_none_or(|min| level_rank(l.level) >= level_rank(min))
            {
                peer.log(l).await;
            }
        }
        RelayMsg::Request(request, reply) => {
            let _ = reply.send(peer.ask(request).await);
        }
    }
}

/// The capability a server's request needs that the request's client did not declare.
fn undeclared(request: &ServerRequest, via: &Via<'_>) -> Option<&'static str> {
    let declared = match via {
        Via::Shared => None,
        Via::Private(private) => Some(&private.capabilities),
        Via::Declaring(capabilities) => Some(*capabilities),
    };
    let (needed, has) = match request {
        ServerRequest::CreateMessageRequest(_) => {
            ("sampling", declared.is_some_and(|c| c.sampling.is_some()))
        }
        ServerRequest::ElicitRequest(_) => (
            "elicitation",
            declared.is_some_and(|c| c.elicitation.is_some()),
        ),
        ServerRequest::ListRootsRequest(_) => {
            ("roots", declared.is_some_and(|c| c.roots.is_some()))
        }
        _ => return None,
    };
    (!has).then_some(needed)
}

/// What the gateway's one session with a stdio server declares: every capability it
/// relays, since its calls come from every client (each request is checked against its
/// own client's declaration before it is relayed, see [`undeclared`]).
fn stdio_capabilities() -> ClientCapabilities {
    serde_json::from_value(serde_json::json!({"sampling": {}, "elicitation": {}, "roots": {}}))
        .unwrap_or_default()
}

/// Why a stdio child's session did not open.
enum Unopened {
    /// The probe found no revision in common, or no answer at all: `initialize` on a
    /// fresh child may still work.
    Retry(String),
    Failed(String),
}

impl Unopened {
    fn into_reason(self) -> String {
        match self {
            Unopened::Retry(why) | Unopened::Failed(why) => why,
        }
    }
}

/// The reconnection hint passed on when the backend closed its stream without one.
const DEFAULT_RESUME_RETRY: Duration = Duration::from_secs(1);

pub(crate) fn level_rank(l: LoggingLevel) -> u8 {
    match l {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

/// Sorts an rmcp client error into what the gateway does about it. What the backend
/// sent back with an HTTP error status is never quoted: a body may reflect the request's
/// headers, the gateway's credential among them.
fn classify(e: ServiceError) -> Failure {
    match e {
        ServiceError::McpError(e) if is_transport_closed(&e) => {
            Failure::Lost(e.message.to_string())
        }
        ServiceError::McpError(e) => Failure::Upstream(e),
        ServiceError::TransportClosed => Failure::NotDelivered("session closed".into()),
        ServiceError::TransportSend(d) => {
            match d
                .error
                .downcast_ref::<StreamableHttpError<reqwest::Error>>()
            {
                Some(StreamableHttpError::SessionExpired) => {
                    Failure::Expired(service_kit::client::root_cause(&d))
                }
                Some(StreamableHttpError::Client(inner)) if inner.is_connect() => {
                    Failure::NotDelivered(service_kit::client::root_cause(&d))
                }
                Some(StreamableHttpError::HttpStatus(e)) => by_status(e.status),
                Some(StreamableHttpError::UnexpectedServerResponse(text))
                    if text == OVERSIZED_ERROR_BODY =>
                {
                    Failure::Refused(0)
                }
                Some(StreamableHttpError::UnexpectedServerResponse(text)) => {
                    match http_status_of(text) {
                        Some(status) => by_status(status),
                        None => {
                            Failure::Lost("the backend's answer is not a JSON-RPC message".into())
                        }
                    }
                }
                Some(StreamableHttpError::AuthRequired(_)) => Failure::Refused(401),
                Some(StreamableHttpError::InsufficientScope(_)) => Failure::Refused(403),
                _ => Failure::Lost(service_kit::client::root_cause(&d)),
            }
        }
        other => Failure::Lost(service_kit::client::describe(&other)),
    }
}

/// The status in a refusal's message; 0 stands for a 4xx whose exact status rmcp did not
/// pass on (an error body over its size limit).
fn status_text(status: u16) -> String {
    match status {
        0 => "an HTTP client error (4xx) with an error body too large to read".into(),
        s => format!("HTTP {s}"),
    }
}

/// rmcp's text for a 4xx whose error body was over its size limit (see `resume`).
pub(crate) const OVERSIZED_ERROR_BODY: &str = "a 4xx answer with an oversized error body";

/// What an HTTP error status from the backend means for the request: a 4xx refuses it
/// alone; anything else may have run and broke the exchange.
fn by_status(status: u16) -> Failure {
    if (400..500).contains(&status) {
        Failure::Refused(status)
    } else {
        Failure::Lost(format!("the backend answered HTTP {status}"))
    }
}

/// The status rmcp puts first in its "unexpected server response" text
/// (`HTTP 401 Unauthorized: <body>`); the body is left out.
fn http_status_of(text: &str) -> Option<u16> {
    let rest = text.strip_prefix("HTTP ")?;
    let digits = rest.get(..3)?;
    digits
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| digits.parse().ok())
        .flatten()
}

/// rmcp reports a response stream that closed before its answer as an internal error
/// carrying a marker in `data`; for the gateway that is a lost backend, not a backend's
/// own error.
fn is_transport_closed(e: &rmcp::ErrorData) -> bool {
    e.data
        .as_ref()
        .and_then(|d| d.get("io.modelcontextprotocol/transportClosed"))
        .is_some()
}

// ---------------------------------------------------------------------------------------
// Service

pub struct Service {
    pub name: Arc<str>,
    instances: ArcSwap<Vec<Arc<Instance>>>,
    turn: AtomicUsize,
    strategy: Strategy,
    call_timeout_ms: AtomicU64,
}

/// What `/services` shows of a service.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceView {
    pub name: String,
    /// URL of the first instance (the only one for most services).
    pub url: String,
    pub state: State,
    pub call_timeout_ms: u64,
    pub instances: Vec<InstanceView>,
}

impl Service {
    pub fn new(name: &str, options: &Options, call_timeout: Option<Duration>) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            instances: ArcSwap::from_pointee(Vec::new()),
            turn: AtomicUsize::new(0),
            strategy: options.strategy,
            call_timeout_ms: AtomicU64::new(
                call_timeout.unwrap_or(options.call_timeout).as_millis() as u64,
            ),
        })
    }

    pub fn instances(&self) -> Arc<Vec<Arc<Instance>>> {
        self.instances.load_full()
    }

    /// Some instance speaks the 2026-07-28 revision (the pass-through path, which
    /// speaks the 2025 one over an instance's session, leaves such a service alone).
    pub fn modern(&self) -> bool {
        self.instances.load().iter().any(|i| i.modern())
    }

    /// Whether every instance speaks 2026-07-28 (`Some(true)`) or none does
    /// (`Some(false)`); `None` when they differ or there is none.
    pub fn era(&self) -> Option<bool> {
        let instances = self.instances.load();
        let first = instances.first()?.modern();
        instances
            .iter()
            .all(|i| i.modern() == first)
            .then_some(first)
    }

    pub fn set_instances(&self, instances: Vec<Arc<Instance>>) {
        // The resources followed on the old instances' listen streams are followed on
        // the new ones' (a replaced or added instance starts with none).
        let followed: std::collections::BTreeSet<String> = self
            .instances
            .load()
            .iter()
            .flat_map(|i| i.watched())
            .collect();
        for instance in &instances {
            for uri in &followed {
                instance.watch(uri, true);
            }
        }
        self.instances.store(Arc::new(instances));
    }

    /// Runs stdio servers (then every instance does: a name is one kind of upstream).
    pub fn stdio(&self) -> bool {
        self.instances.load().iter().any(|i| i.process.is_some())
    }

    pub fn set_call_timeout(&self, t: Duration) {
        self.call_timeout_ms
            .store(t.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms.load(Ordering::Relaxed))
    }

    /// Prompts, resources, templates and capabilities of the instance read last.
    pub fn extras(&self) -> Arc<Extras> {
        self.instances()
            .iter()
            .max_by_key(|i| i.tools_at_ms())
            .map(|i| i.extras())
            .unwrap_or_default()
    }

    /// The service's tools: those most recently read from any of its instances.
    pub fn tools(&self) -> Arc<Vec<Tool>> {
        self.instances()
            .iter()
            .max_by_key(|i| (i.tools_at_ms(), !i.tools().is_empty()))
            .map(|i| i.tools())
            .unwrap_or_default()
    }

    pub fn state(&self) -> State {
        health::aggregate(self.instances().iter().map(|i| i.state()))
    }

    pub fn view(&self) -> ServiceView {
        let instances = self.instances();
        ServiceView {
            name: self.name.to_string(),
            url: instances
                .first()
                .map(|i| i.url.to_string())
                .unwrap_or_default(),
            state: health::aggregate(instances.iter().map(|i| i.state())),
            call_timeout_ms: self.call_timeout().as_millis() as u64,
            instances: instances.iter().map(|i| i.view()).collect(),
        }
    }

    /// Proxies one request (names already translated to the backend's), choosing an
    /// instance, failing over once when that is safe. `affinity` pins a client session
    /// to an instance; `retry_safe` says the tool declares itself read-only/idempotent.
    pub async fn request(
        &self,
        request: ClientRequest,
        down: &Downstream<'_>,
        affinity: Option<&str>,
        retry_safe: bool,
    ) -> Result<ServerResult, CallError> {
        let timeout = self.call_timeout();
        self.with_failover(affinity, retry_safe, |instance, admission| {
            let request = request.clone();
            async move { instance.call(request, down, timeout, admission).await }
        })
        .await
    }

    /// Runs `attempt` on an instance chosen for `affinity`, and again on another (or on
    /// the same one's next session) when the failure says that is safe.
    async fn with_failover<T, F, Fut>(
        &self,
        affinity: Option<&str>,
        retry_safe: bool,
        mut attempt: F,
    ) -> Result<T, CallError>
    where
        F: FnMut(Arc<Instance>, Admission) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut tried: Vec<Arc<Instance>> = Vec::new();
        let mut waited = false;
        // A call is repeated at most once, however many instances there are.
        let mut attempts = 0;
        loop {
            let (instance, admission) = self.choose(affinity, &tried)?;
            let generation = *instance.generation.borrow();
            attempts += 1;
            let failure = match attempt(Arc::clone(&instance), admission).await {
                Ok(response) => return Ok(response),
                Err(f) => f,
            };
            let retry = attempts < 2
                && match &failure {
                    Failure::NotDelivered(_) | Failure::Expired(_) => true,
                    Failure::Lost(_) => retry_safe,
                    _ => false,
                };
            if !retry {
                return Err(self.error(failure, retry_safe));
            }
            tracing::debug!(service = %self.name, instance = %instance.url, ?failure, "retrying call");
            // With no other instance to go to, an expired session is worth one short wait
            // for the supervisor's reconnect (the backend restarted and is answering).
            let others = self.instances().iter().any(|i| {
                !Arc::ptr_eq(i, &instance)
                    && !tried.iter().any(|t| Arc::ptr_eq(t, i))
                    && i.available(Instant::now())
            });
            if !others && !waited && matches!(failure, Failure::Expired(_)) {
                waited = true;
                if instance.await_new_session(generation).await {
                    continue;
                }
                return Err(self.error(failure, retry_safe));
            }
            if !others {
                return Err(self.error(failure, retry_safe));
            }
            tried.push(instance);
        }
    }

    /// Opens a pass-through call (see `raw`): `body` with upstream id `id`, on an
    /// instance chosen as for [`Self::request`], failing over while nothing has come
    /// back yet. `relay`: pass on the log messages the backend sends for it elsewhere
    /// than on the call's stream. Returns the exchange and its first event.
    pub async fn open_raw(
        &self,
        id: Arc<str>,
        out: raw::Outgoing,
        affinity: Option<&str>,
        retry_safe: bool,
        relay: bool,
    ) -> Result<(raw::Exchange, raw::Event), CallError> {
        let timeout = self.call_timeout();
        let deadline = tokio::time::Instant::now() + timeout;
        let ms = timeout.as_millis() as u64;
        self.with_failover(affinity, retry_safe, |instance, admission| {
            let (id, out) = (Arc::clone(&id), out.clone());
            async move {
                instance
                    .open_raw(id, out, admission, deadline, ms, relay)
                    .await
            }
        })
        .await
    }

    /// The error a pass-through call's failure after its first event becomes.
    pub fn raw_error(&self, failure: raw::Failed) -> CallError {
        self.error(failure.0, false)
    }

    /// A request with no relaying and no failover (subscriptions): the shared session of
    /// an instance that can take it.
    pub async fn request_plain(&self, request: ClientRequest) -> Result<ServerResult, CallError> {
        // A 2026-07-28 backend has no `resources/subscribe`: the resource joins (or
        // leaves) what every instance's listen stream follows.
        let watch = match &request {
            ClientRequest::SubscribeRequest(r) => Some((r.params.uri.clone(), true)),
            ClientRequest::UnsubscribeRequest(r) => Some((r.params.uri.clone(), false)),
            _ => None,
        };
        if let Some((uri, on)) = watch
            && self.modern()
        {
            for instance in self.instances().iter() {
                if !instance.watch(&uri, on) {
                    return Err(CallError::Upstream(rmcp::ErrorData::internal_error(
                        format!(
                            "the gateway follows at most {MAX_WATCHED} resources of service \"{}\"",
                            self.name
                        ),
                        None,
                    )));
                }
            }
            return Ok(ServerResult::empty(()));
        }
        let (instance, admission) = self.choose(None, &[])?;
        if admission == Admission::Probe {
            instance.health().release_probe();
        }
        let Some(session) = instance.session.load_full() else {
            return Err(self.unavailable(&self.instances(), Instant::now()));
        };
        let timeout = self.call_timeout();
        match tokio::time::timeout(timeout, session.peer().send_request(request)).await {
            Err(_) => Err(CallError::Timeout {
                service: self.name.to_string(),
                ms: timeout.as_millis() as u64,
            }),
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(self.error(classify(e), false)),
        }
    }

    /// An instance that can take a call now, skipping `tried`.
    fn choose(
        &self,
        affinity: Option<&str>,
        tried: &[Arc<Instance>],
    ) -> Result<(Arc<Instance>, Admission), CallError> {
        let now = Instant::now();
        let instances = self.instances();
        let usable =
            |i: &Arc<Instance>| !tried.iter().any(|t| Arc::ptr_eq(t, i)) && i.available(now);
        // One instance, the common case: no list of candidates to build.
        let picked = if let [only] = &instances[..] {
            if !usable(only) {
                return Err(self.unavailable(&instances, now));
            }
            Arc::clone(only)
        } else {
            let candidates: Vec<Arc<Instance>> =
                instances.iter().filter(|i| usable(i)).cloned().collect();
            if candidates.is_empty() {
                return Err(self.unavailable(&instances, now));
            }
            let i = balance::pick(self.strategy, &candidates, affinity, &self.turn);
            Arc::clone(&candidates[i])
        };
        let admission = if picked.dirty.load(Ordering::Acquire) {
            picked.health().admit(now)
        } else {
            Admission::Allowed
        };
        match admission {
            Admission::Refused(d) => Err(CallError::CircuitOpen {
                service: self.name.to_string(),
                retry_in_ms: d.as_millis() as u64,
            }),
            a => Ok((picked, a)),
        }
    }

    /// The error for "no instance can take this call", naming each one's cause.
    fn unavailable(&self, instances: &[Arc<Instance>], now: Instant) -> CallError {
        if instances.is_empty() {
            return CallError::Unavailable {
                service: self.name.to_string(),
                cause: "no instance registered".into(),
            };
        }
        // All refused by open breakers: say so, with the soonest retry.
        let open: Vec<Duration> = instances
            .iter()
            .filter(|i| i.session.load().is_some())
            .filter_map(|i| i.health().refusing(now))
            .collect();
        if open.len() == instances.len() {
            return CallError::CircuitOpen {
                service: self.name.to_string(),
                retry_in_ms: open.iter().min().copied().unwrap_or_default().as_millis() as u64,
            };
        }
        let causes: Vec<String> = instances
            .iter()
            .map(|i| {
                let cause = i.last_error_or(match i.state() {
                    State::Starting => "not connected yet",
                    _ => "no session",
                });
                if instances.len() == 1 {
                    cause
                } else {
                    format!("{}: {cause}", i.url)
                }
            })
            .collect();
        CallError::Unavailable {
            service: self.name.to_string(),
            cause: causes.join("; "),
        }
    }

    fn error(&self, failure: Failure, retry_safe: bool) -> CallError {
        let service = self.name.to_string();
        match failure {
            Failure::Upstream(e) => CallError::Upstream(e),
            Failure::Refused(status) => CallError::Refused { service, status },
            Failure::Timeout(ms) => CallError::Timeout { service, ms },
            Failure::Cancelled => CallError::Upstream(rmcp::ErrorData::internal_error(
                "request cancelled by the client",
                None,
            )),
            Failure::NotDelivered(cause) | Failure::Expired(cause) => {
                CallError::Unavailable { service, cause }
            }
            Failure::Lost(cause) if !retry_safe => CallError::Unavailable {
                service,
                cause: format!(
                    "{cause} (the call may have run; not retried because the tool is not declared read-only or idempotent)"
                ),
            },
            Failure::Lost(cause) => CallError::Unavailable { service, cause },
        }
    }
}

#[cfg(test)]
mod tests {
    //! Failover and instance choice (`Service::with_failover` with scripted attempts on
    //! instances connected to a minimal MCP server on loopback), and how rmcp's errors
    //! are classified.

    use std::{collections::VecDeque, sync::Mutex};

    use rmcp::{
        ServerHandler,
        model::{InitializeResult, ServerConfig},
        transport::streamable_http_server::StreamableHttpService,
    };

    use super::*;

    #[test]
    fn a_tool_whose_header_annotations_break_the_rules_is_left_out() {
        let tool = |name: &str, header: &str| {
            let schema = serde_json::json!({"type": "object", "properties": {
                "region": {"type": "string", "x-mcp-header": header}}});
            Tool::new(
                name.to_string(),
                "t",
                Arc::new(schema.as_object().cloned().unwrap()),
            )
        };
        let plain = Tool::new("plain", "t", Arc::new(serde_json::Map::new()));
        let (kept, params) = screen_tools(
            "s",
            vec![tool("good", "Region"), tool("bad", "no token"), plain],
        );
        let kept: Vec<&str> = kept.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(kept, ["good", "plain"]);
        assert_eq!(params.keys().collect::<Vec<_>>(), ["good"]);
    }

    /// An MCP server with no tools: enough for an instance to hold a session.
    #[derive(Clone)]
    struct Empty;

    impl ServerHandler for Empty {
        fn get_info(&self) -> ServerConfig {
            InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
        }
    }

    /// Serves [`Empty`] on loopback until `stop`; its MCP URL.
    async fn backend(stop: &CancellationToken) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let service = StreamableHttpService::new(
            || Ok(Empty),
            Arc::new(
                rmcp::transport::streamable_http_server::session::local::LocalSessionManager::default(),
            ),
            service_kit::mcp::server_config(&[], stop.clone()),
        );
        let router = axum::Router::new().nest_service("/mcp", service);
        tokio::spawn(service_kit::serve::serve(listener, router, stop.clone()));
        format!("http://{addr}/mcp")
    }

    fn options() -> Options {
        let mut options = crate::Config::default().upstream_options();
        options.connect_timeout = Duration::from_secs(2);
        options
    }

    fn instance(url: &str, stop: &CancellationToken) -> Arc<Instance> {
        Instance::new(
            "svc",
            url,
            1,
            Origin {
                source: Source::Registered,
                registered_at_ms: 0,
                owner: None,
                auth: None,
                command: None,
            },
            Vec::new(),
            options(),
            stop,
        )
    }

    /// A service of `connected` instances with a session and `idle` ones without.
    async fn service(
        connected: usize,
        idle: usize,
        stop: &CancellationToken,
    ) -> (Arc<Service>, Vec<Arc<Instance>>) {
        let mut instances = Vec::new();
        for _ in 0..connected {
            let i = instance(&backend(stop).await, stop);
            i.connect().await.expect("connects to the loopback backend");
            instances.push(i);
        }
        for n in 0..idle {
            instances.push(instance(&format!("http://127.0.0.1:9/idle-{n}"), stop));
        }
        let service = Service::new("svc", &options(), None);
        service.set_instances(instances.clone());
        (service, instances)
    }

    /// Runs one call whose attempts answer as `script` says, in order (an attempt past
    /// the script's end fails as not delivered); returns the outcome and the id of the
    /// instance of each attempt.
    async fn run(
        service: &Service,
        affinity: Option<&str>,
        retry_safe: bool,
        script: Vec<Result<u32, Failure>>,
    ) -> (Result<u32, CallError>, Vec<String>) {
        let script = Mutex::new(VecDeque::from(script));
        let tried = Mutex::new(Vec::new());
        let result = service
            .with_failover(affinity, retry_safe, |instance, _admission| {
                tried.lock().expect("lock").push(instance.id.clone());
                let next = script
                    .lock()
                    .expect("lock")
                    .pop_front()
                    .unwrap_or_else(|| Err(Failure::NotDelivered("unplanned attempt".into())));
                async move { next }
            })
            .await;
        (result, tried.into_inner().expect("lock"))
    }

    fn lost() -> Failure {
        Failure::Lost("stream closed mid-call".into())
    }

    fn not_delivered() -> Failure {
        Failure::NotDelivered("connection refused".into())
    }

    #[tokio::test]
    async fn a_call_not_delivered_is_retried_on_another_instance() {
        let stop = CancellationToken::new();
        let (service, _) = service(2, 0, &stop).await;
        for retry_safe in [false, true] {
            let (result, tried) = run(
                &service,
                None,
                retry_safe,
                vec![Err(not_delivered()), Ok(7)],
            )
            .await;
            assert_eq!(result.expect("the second attempt answers"), 7);
            assert_eq!(tried.len(), 2, "{tried:?}");
            assert_ne!(tried[0], tried[1], "another instance");
        }
        // An expired session (the backend restarted, the request was not processed) too.
        let (result, tried) = run(
            &service,
            None,
            false,
            vec![Err(Failure::Expired("404".into())), Ok(8)],
        )
        .await;
        assert_eq!(result.expect("the second attempt answers"), 8);
        assert_ne!(tried[0], tried[1], "{tried:?}");
        stop.cancel();
    }

    #[tokio::test]
    async fn a_call_lost_in_flight_is_retried_only_when_the_tool_is_retry_safe() {
        let stop = CancellationToken::new();
        let (service, _) = service(2, 0, &stop).await;
        let (result, tried) = run(&service, None, true, vec![Err(lost()), Ok(1)]).await;
        assert_eq!(result.expect("retried"), 1);
        assert_eq!(tried.len(), 2);
        assert_ne!(tried[0], tried[1]);

        let (result, tried) = run(&service, None, false, vec![Err(lost()), Ok(1)]).await;
        assert_eq!(tried.len(), 1, "not repeated: it may have run");
        match result {
            Err(CallError::Unavailable { cause, .. }) => assert!(
                cause.contains("stream closed mid-call") && cause.contains("not retried"),
                "{cause}"
            ),
            other => panic!("{other:?}"),
        }
        stop.cancel();
    }

    #[tokio::test]
    async fn answers_timeouts_and_refusals_are_never_retried() {
        let stop = CancellationToken::new();
        let (service, _) = service(2, 0, &stop).await;
        for retry_safe in [false, true] {
            let (result, tried) = run(
                &service,
                None,
                retry_safe,
                vec![
                    Err(Failure::Upstream(rmcp::ErrorData::invalid_params(
                        "bad id", None,
                    ))),
                    Ok(1),
                ],
            )
            .await;
            assert_eq!(tried.len(), 1);
            assert!(
                matches!(&result, Err(CallError::Upstream(e)) if e.message == "bad id"),
                "{result:?}"
            );

            let (result, tried) = run(
                &service,
                None,
                retry_safe,
                vec![Err(Failure::Refused(400)), Ok(1)],
            )
            .await;
            assert_eq!(tried.len(), 1);
            assert!(
                matches!(result, Err(CallError::Refused { status: 400, .. })),
                "{result:?}"
            );

            let (result, tried) = run(
                &service,
                None,
                retry_safe,
                vec![Err(Failure::Timeout(250)), Ok(1)],
            )
            .await;
            assert_eq!(tried.len(), 1);
            assert!(
                matches!(result, Err(CallError::Timeout { ms: 250, .. })),
                "{result:?}"
            );

            let (result, tried) = run(
                &service,
                None,
                retry_safe,
                vec![Err(Failure::Cancelled), Ok(1)],
            )
            .await;
            assert_eq!(tried.len(), 1);
            assert!(matches!(result, Err(CallError::Upstream(_))), "{result:?}");
        }
        stop.cancel();
    }

    #[tokio::test]
    async fn a_call_is_repeated_at_most_once_whatever_the_number_of_instances() {
        let stop = CancellationToken::new();
        let (service, _) = service(3, 0, &stop).await;
        for first in [not_delivered(), lost()] {
            let (result, tried) = run(
                &service,
                None,
                true,
                vec![Err(first), Err(not_delivered()), Ok(1)],
            )
            .await;
            assert_eq!(tried.len(), 2, "{tried:?}");
            assert_ne!(tried[0], tried[1]);
            assert!(
                matches!(result, Err(CallError::Unavailable { .. })),
                "{result:?}"
            );
        }
        stop.cancel();
    }

    #[tokio::test]
    async fn with_no_other_instance_a_failure_is_final_but_an_expired_session_waits_for_the_next() {
        let stop = CancellationToken::new();
        let (service, instances) = service(1, 0, &stop).await;
        let (result, tried) = run(&service, None, true, vec![Err(not_delivered()), Ok(1)]).await;
        assert_eq!(tried.len(), 1);
        assert!(
            matches!(&result, Err(CallError::Unavailable { cause, .. }) if cause == "connection refused"),
            "{result:?}"
        );
        // Expired, and the supervisor installs a new session meanwhile: once more on it.
        let only = Arc::clone(&instances[0]);
        let script = Mutex::new(VecDeque::from([Err(Failure::Expired("404".into())), Ok(2)]));
        let attempts = AtomicUsize::new(0);
        let result = service
            .with_failover(None, false, |instance, _| {
                attempts.fetch_add(1, Ordering::SeqCst);
                assert!(Arc::ptr_eq(&instance, &only));
                let next = script
                    .lock()
                    .expect("lock")
                    .pop_front()
                    .unwrap_or_else(|| Err(not_delivered()));
                if next.is_err() {
                    instance.generation.send_modify(|g| *g += 1);
                }
                async move { next }
            })
            .await;
        assert_eq!(result.expect("the new session answers"), 2);
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
        // Expired and no new session within the connect deadline: final.
        let (result, tried) = run(
            &service,
            None,
            false,
            vec![Err(Failure::Expired("404".into())), Ok(3)],
        )
        .await;
        assert_eq!(tried.len(), 1);
        assert!(
            matches!(result, Err(CallError::Unavailable { .. })),
            "{result:?}"
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn only_instances_with_a_session_and_a_closed_breaker_are_chosen() {
        let stop = CancellationToken::new();
        let (service, instances) = service(2, 1, &stop).await;
        let (a, b, idle) = (&instances[0], &instances[1], &instances[2]);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..6 {
            let (result, tried) = run(&service, None, false, vec![Ok(1)]).await;
            result.expect("answered");
            seen.extend(tried);
        }
        assert!(!seen.contains(&idle.id), "never the one without a session");
        assert_eq!(seen.len(), 2, "round robin over both connected: {seen:?}");

        // A client session sticks to one instance.
        let (_, first) = run(&service, Some("session-1"), false, vec![Ok(1)]).await;
        for _ in 0..4 {
            let (_, again) = run(&service, Some("session-1"), false, vec![Ok(1)]).await;
            assert_eq!(again, first);
        }

        // Open a's breaker: every call goes to b.
        let threshold = options().policy.failure_threshold;
        a.update_health(|h| {
            for _ in 0..threshold {
                h.failure("timed out".into(), Instant::now());
            }
            true
        });
        for affinity in [None, Some("session-1"), Some("session-2")] {
            let (result, tried) = run(&service, affinity, false, vec![Ok(1)]).await;
            result.expect("answered");
            assert_eq!(tried, vec![b.id.clone()], "{affinity:?}");
        }
        // Both open: no attempt is made; unavailable, naming each instance's cause...
        b.update_health(|h| {
            for _ in 0..threshold {
                h.failure("timed out".into(), Instant::now());
            }
            true
        });
        let (result, tried) = run(&service, None, false, vec![Ok(1)]).await;
        assert!(tried.is_empty(), "{tried:?}");
        match result {
            Err(CallError::Unavailable { cause, .. }) => assert_eq!(
                cause,
                format!(
                    "{}: timed out; {}: timed out; {}: not connected yet",
                    a.url, b.url, idle.url
                )
            ),
            other => panic!("{other:?}"),
        }
        // ...or, when every instance is refused by its open breaker, saying so.
        service.set_instances(vec![Arc::clone(a), Arc::clone(b)]);
        let (result, tried) = run(&service, None, false, vec![Ok(1)]).await;
        assert!(tried.is_empty(), "{tried:?}");
        assert!(
            matches!(result, Err(CallError::CircuitOpen { retry_in_ms, .. }) if retry_in_ms > 0),
            "{result:?}"
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn a_service_without_a_connected_instance_names_each_cause() {
        let stop = CancellationToken::new();
        let (service, _) = service(0, 2, &stop).await;
        let (result, tried) = run(&service, None, false, vec![Ok(1)]).await;
        assert!(tried.is_empty());
        match result {
            Err(CallError::Unavailable { cause, .. }) => assert_eq!(
                cause,
                "http://127.0.0.1:9/idle-0: not connected yet; http://127.0.0.1:9/idle-1: not connected yet"
            ),
            other => panic!("{other:?}"),
        }
        let empty = Service::new("none", &options(), None);
        let (result, _) = run(&empty, None, false, vec![Ok(1)]).await;
        assert!(
            matches!(&result, Err(CallError::Unavailable { cause, .. }) if cause == "no instance registered"),
            "{result:?}"
        );
    }

    fn transport(e: StreamableHttpError<reqwest::Error>) -> ServiceError {
        ServiceError::TransportSend(rmcp::transport::DynamicTransportError::from_parts(
            "test",
            std::any::TypeId::of::<()>(),
            Box::new(e),
        ))
    }

    fn kind(f: &Failure) -> String {
        match f {
            Failure::NotDelivered(_) => "not delivered".into(),
            Failure::Expired(_) => "expired".into(),
            Failure::Lost(_) => "lost".into(),
            Failure::Timeout(ms) => format!("timeout {ms}"),
            Failure::Cancelled => "cancelled".into(),
            Failure::Refused(s) => format!("refused {s}"),
            Failure::Upstream(e) => format!("upstream {}", e.message),
        }
    }

    #[test]
    fn http_statuses_are_read_from_rmcps_text_and_sorted() {
        assert_eq!(http_status_of("HTTP 401 Unauthorized: nope"), Some(401));
        assert_eq!(http_status_of("HTTP 503"), Some(503));
        for text in ["HTTP 40", "HTTP abc", "http 401 x", "401", "", "HTTP -01"] {
            assert_eq!(http_status_of(text), None, "{text:?}");
        }
        for status in [400, 401, 403, 413, 422, 429, 499] {
            assert_eq!(kind(&by_status(status)), format!("refused {status}"));
        }
        for status in [302, 399, 500, 502, 503, 504] {
            assert_eq!(kind(&by_status(status)), "lost", "{status}");
        }
    }

    #[tokio::test]
    async fn rmcp_errors_are_classified_by_what_they_say_about_the_request() {
        let marker = rmcp::ErrorData::internal_error(
            "stream closed",
            Some(serde_json::json!({"io.modelcontextprotocol/transportClosed": true})),
        );
        let cases: Vec<(ServiceError, &str)> = vec![
            (ServiceError::McpError(marker), "lost"),
            (
                ServiceError::McpError(rmcp::ErrorData::invalid_params("no such id", None)),
                "upstream no such id",
            ),
            (ServiceError::TransportClosed, "not delivered"),
            (transport(StreamableHttpError::SessionExpired), "expired"),
            (
                transport(StreamableHttpError::HttpStatus(
                    rmcp::transport::streamable_http_client::HttpStatusError::new(503, None),
                )),
                "lost",
            ),
            (
                transport(StreamableHttpError::HttpStatus(
                    rmcp::transport::streamable_http_client::HttpStatusError::new(429, None),
                )),
                "refused 429",
            ),
            (
                transport(StreamableHttpError::UnexpectedServerResponse(
                    OVERSIZED_ERROR_BODY.into(),
                )),
                "refused 0",
            ),
            (
                transport(StreamableHttpError::UnexpectedServerResponse(
                    "HTTP 403 Forbidden: go away".into(),
                )),
                "refused 403",
            ),
            (
                transport(StreamableHttpError::UnexpectedServerResponse(
                    "HTTP 502 Bad Gateway: x".into(),
                )),
                "lost",
            ),
            (
                transport(StreamableHttpError::UnexpectedServerResponse(
                    "<html>".into(),
                )),
                "lost",
            ),
            (
                transport(StreamableHttpError::UnexpectedEndOfStream),
                "lost",
            ),
        ];
        for (error, expected) in cases {
            let shown = format!("{error:?}");
            assert_eq!(kind(&classify(error)), expected, "{shown}");
        }
        // A refused connection was never delivered; its cause is named.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = closed.local_addr().expect("addr").port();
        drop(closed);
        let refused = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .expect_err("nothing listens there");
        assert!(refused.is_connect(), "{refused:?}");
        let failure = classify(transport(StreamableHttpError::Client(refused)));
        assert!(
            matches!(&failure, Failure::NotDelivered(cause) if !cause.is_empty()),
            "{}",
            kind(&failure)
        );
    }
}
