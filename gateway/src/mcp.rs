//! The gateway's MCP server side: a [`ServerHandler`] over the registry's catalog, and
//! the `/mcp` entry point that serves both kinds of client on one path:
//!
//! - MCP clients with sessions (`initialize`, then `Mcp-Session-Id`), SSE streams, and
//!   the stateless 2026-07-28 revision: rmcp's streamable-HTTP service in session mode.
//! - Sessionless JSON-RPC posts (curl): a POST without `Mcp-Session-Id` that is not an
//!   `initialize` goes to a second rmcp service in stateless JSON mode, after an absent
//!   `Accept` or `Content-Type` header is filled in, so
//!   `curl -d '{"jsonrpc":"2.0","id":1,"method":"tools/list"}'` gets plain JSON back.
//!
//! Invariant: this codec decides no policy: every proxied request is planned by `proxy`,
//! and every refusal is rendered by it.

use std::sync::Arc;

use axum::{
    body::{Body, to_bytes},
    extract::{Request, State},
    response::{IntoResponse, Response},
};
use http::{HeaderValue, Method, StatusCode, header};
use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequest, CallToolRequestParams, CallToolResponse, ClientRequest, CompleteRequest,
        CompleteRequestParams, CompleteResult, GetPromptRequest, GetPromptRequestParams,
        GetPromptResponse, Implementation, InitializeResult, JsonObject, ListPromptsResult,
        ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, LoggingLevel,
        PaginatedRequestParams, PromptsCapability, ReadResourceRequest, ReadResourceRequestParams,
        ReadResourceResponse, Reference, ResourceContents, ResourcesCapability, ServerCapabilities,
        ServerConfig, ServerNotification, ServerResult, SetLevelRequestParams, SubscribeRequest,
        SubscribeRequestParams, SubscriptionFilter, Tool, UnsubscribeRequest,
        UnsubscribeRequestParams,
    },
    service::{NotificationContext, RequestContext, SubscriptionContext},
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
        session::{ServerSseMessage, local::LocalSessionManager},
    },
};
use serde_json::json;
use service_kit::sse_resume::{self, Resumptions};
use tokio_util::sync::CancellationToken;

use crate::{
    catalog::Lookup,
    jsonrpc::{Envelope, Parsed},
    mrtr::{Opened, Round, Rounds},
    observe::CallTicket,
    observe::{Caller, Outcome},
    passthrough::Passthrough,
    proxy::{
        Planned, Target, call_error, legacy_questions, page, prompt_visible, resource_visible,
        tool_visible, visible,
    },
    refusal::{MetadataUrl, insufficient_scope},
    registry::{Changed, Registry, Subscriber},
    sessions::Tagged,
    store::{Change, StoreError, postgres::Event},
    upstream::{BoxFuture, CallError, ClientLink, Downstream, PrivateSessions, Service, Sink, Via},
    vocab::{Allow, Identity, Scopes},
};

/// What the gateway keeps per client session: its log level, its subscriptions and, if
/// it declared sampling, elicitation or roots, its own upstream sessions. Dropped (and
/// cleaned up) when rmcp drops the session's handler.
pub struct SessionState {
    id: u64,
    registry: Arc<Registry>,
    /// The session's `Mcp-Session-Id` (known from `notifications/initialized`), so the
    /// pass-through path forgets the session when it ends.
    key: std::sync::OnceLock<(Arc<Passthrough>, String)>,
    level: std::sync::Mutex<Option<LoggingLevel>>,
    private: std::sync::OnceLock<Option<PrivateSessions>>,
    /// A cluster's replica: the session copies its handlers hold, which this one joins
    /// when its key is known, and its client (to subscribe it where another replica
    /// says).
    held: Option<Arc<Held>>,
    peer: std::sync::OnceLock<rmcp::Peer<RoleServer>>,
    /// Held while the row's settings are applied (one change at a time).
    following: tokio::sync::Mutex<()>,
}

/// Most resources one client session follows (`resources/subscribe`); past it, the
/// subscription is refused.
const MAX_SUBSCRIPTIONS_PER_SESSION: usize = 1024;

/// The shared sessions whose copies a cluster's replica holds, by `Mcp-Session-Id`:
/// what another replica changes of one (level, subscriptions) is applied to its copy
/// here.
type Held = crate::vocab::FastDashMap<String, std::sync::Weak<SessionState>>;

impl Drop for SessionState {
    fn drop(&mut self) {
        // Only sessions (a stateless request's handler has no key): their memory is
        // worth a trim.
        if let Some((passthrough, key)) = self.key.get() {
            passthrough.end(key);
            crate::trim::session_ended();
            if let Some(held) = &self.held {
                held.remove_if(key, |_, weak| weak.strong_count() == 0);
            }
        }
        self.registry.remove_client(self.id);
        let emptied = self.registry.forget_session(self.id);
        if emptied.is_empty() {
            return;
        }
        let registry = Arc::clone(&self.registry);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                for uri in emptied {
                    unsubscribe_upstream(&registry, &uri).await;
                }
            });
        }
    }
}

impl SessionState {
    /// Applies what the session's row says its client set (on another replica, or
    /// before this replica adopted it): the level, and the subscriptions, made here as
    /// the row lists them, and (`prune`: the row was read just now) ended here when it
    /// no longer does. A row read earlier (at adoption) only adds: a subscription this
    /// copy made since is newer than it.
    async fn follow(&self, settings: crate::sessions::SessionSettings, prune: bool) {
        let _one_at_a_time = self.following.lock().await;
        *self.level.lock().unwrap_or_else(|p| p.into_inner()) = settings.level;
        if let Some((passthrough, key)) = self.key.get() {
            passthrough.set_level(key, settings.level);
        }
        let Some(peer) = self.peer.get() else {
            return;
        };
        let held = self.registry.subscriptions_of(self.id);
        let wanted = settings
            .subscriptions
            .iter()
            .take(MAX_SUBSCRIPTIONS_PER_SESSION);
        for uri in wanted.filter(|u| !held.contains(u)) {
            // The replica that accepted it checked the client's allow-list.
            let subscriber = Subscriber::Session(peer.clone());
            if let Err(e) = subscribe_as(&self.registry, self.id, uri, subscriber, None).await {
                tracing::debug!(%uri, "a shared session's subscription not made here: {}", e.message);
            }
        }
        for uri in held
            .iter()
            .filter(|u| prune && !settings.subscriptions.contains(u))
        {
            if self.registry.unsubscribe(uri, self.id) {
                unsubscribe_upstream(&self.registry, uri).await;
            }
        }
    }
}

/// Subscribes client session (or listen stream) `session` to `uri`'s updates: the first
/// subscriber of a URI subscribes upstream, where `subscribe_route` says.
async fn subscribe_as(
    registry: &Registry,
    session: u64,
    uri: &str,
    subscriber: Subscriber,
    allow: Option<&Allow>,
) -> Result<(), ErrorData> {
    let Planned {
        service, original, ..
    } = crate::proxy::find(registry, allow, Target::Subscription(uri))?;
    if registry.subscribe(uri, session, subscriber) {
        let upstream = ClientRequest::SubscribeRequest(SubscribeRequest::new(
            SubscribeRequestParams::new(original.to_string()),
        ));
        if let Err(e) = service.request_plain(upstream).await {
            registry.unsubscribe(uri, session);
            return Err(call_error(e));
        }
    }
    Ok(())
}

async fn unsubscribe_upstream(registry: &Registry, uri: &str) {
    let route = registry.catalog().subscribe_route(uri);
    if let Some((service, original)) = route {
        let request = ClientRequest::UnsubscribeRequest(UnsubscribeRequest::new(
            UnsubscribeRequestParams::new(original),
        ));
        if let Err(e) = service.request_plain(request).await {
            tracing::debug!(%uri, "upstream unsubscribe failed: {e}");
        }
    }
}

/// One per session (or per stateless request): the shared registry plus the session's
/// own state.
#[derive(Clone)]
pub struct GatewayHandler {
    registry: Arc<Registry>,
    page_size: usize,
    session: Arc<SessionState>,
    /// For sessions whose request streams can be closed and resumed.
    streams: Option<Arc<Streams>>,
    passthrough: Option<Arc<Passthrough>>,
    /// The calls of 2026-07-28 requests, which may take several rounds.
    rounds: Option<Arc<Rounds>>,
    /// A cluster's shared sessions (a replica's handler only).
    shared: Option<Arc<crate::sessions::Shared>>,
    /// The streams of a session's requests in flight.
    calls: Option<Arc<crate::sessions::CallStreams>>,
}

/// The gateway's instructions, with those of each service the caller sees (all, when
/// `allow` is `None`).
fn instructions(catalog: &crate::catalog::Catalog, allow: Option<&Allow>) -> String {
    let mut text = String::from(
        "MCP federation gateway: the tools, prompts and resources of every registered \
         service in one place. A name offered by several services is qualified as \
         <service>__<name>.",
    );
    for (service, own) in catalog.instructions() {
        if allow.is_none_or(|a| a.service(service)) {
            text.push_str(&format!("\n\n## {service}\n{own}"));
        }
    }
    text
}

/// What one composite step came to: its result (structured, else its content), or why
/// it failed.
fn step_outcome(
    outcome: Result<Result<CallToolResponse, ErrorData>, String>,
) -> Result<serde_json::Value, String> {
    match outcome {
        Err(why) => Err(why),
        Ok(Err(e)) => Err(e.message.to_string()),
        Ok(Ok(CallToolResponse::Complete(r))) => {
            let failed = r.is_error == Some(true);
            let value = match r.structured_content {
                Some(v) => v,
                None => serde_json::to_value(&r.content).unwrap_or(serde_json::Value::Null),
            };
            if failed {
                let text: Vec<String> = r
                    .content
                    .iter()
                    .filter_map(|c| c.as_text().map(|t| t.text.clone()))
                    .collect();
                Err(if text.is_empty() {
                    value.to_string()
                } else {
                    text.join(" ")
                })
            } else {
                Ok(value)
            }
        }
        Ok(Ok(CallToolResponse::InputRequired(_))) => {
            Err("the tool asked the client for input, which a composite cannot pass on".into())
        }
        Ok(Ok(_)) => Err("the tool answered with a task, which a composite cannot wait for".into()),
    }
}

/// What a `tools/call` of a meta-tool of tool search comes to.
enum Meta {
    /// Answered by the gateway.
    Answered(Result<CallToolResponse, ErrorData>),
    /// The call of a catalog tool (the request itself, or what `call_tool` named).
    Call(CallToolRequestParams),
}

/// The session manager of resumable sessions and who waits for their streams to resume.
pub struct Streams {
    sessions: Arc<LocalSessionManager>,
    resumptions: Arc<Resumptions>,
}

impl GatewayHandler {
    pub fn new(registry: Arc<Registry>, page_size: usize) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let session = Arc::new(SessionState {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            registry: Arc::clone(&registry),
            key: std::sync::OnceLock::new(),
            level: std::sync::Mutex::new(None),
            private: std::sync::OnceLock::new(),
            held: None,
            peer: std::sync::OnceLock::new(),
            following: tokio::sync::Mutex::new(()),
        });
        Self {
            registry,
            page_size: page_size.max(1),
            session,
            streams: None,
            passthrough: None,
            rounds: None,
            shared: None,
            calls: None,
        }
    }

    /// A handler whose requests' own streams are found in `calls`.
    fn with_call_streams(mut self, calls: Arc<crate::sessions::CallStreams>) -> Self {
        self.calls = Some(calls);
        self
    }

    /// A cluster's replica's handler: what its session's client sets is written to the
    /// session's row, and its copy joins `held`.
    fn in_cluster(mut self, shared: Arc<crate::sessions::Shared>, held: Arc<Held>) -> Self {
        if let Some(state) = Arc::get_mut(&mut self.session) {
            state.held = Some(held);
        }
        self.shared = Some(shared);
        self
    }

    /// A handler whose 2026-07-28 requests' calls are driven in rounds, so a backend
    /// may ask their client for input (multi round-trip requests).
    pub fn with_rounds(mut self, rounds: Arc<Rounds>) -> Self {
        self.rounds = Some(rounds);
        self
    }

    /// A handler whose requests' streams can be closed and resumed.
    fn resumable(mut self, streams: Arc<Streams>) -> Self {
        self.streams = Some(streams);
        self
    }

    /// A handler of sessions whose calls may take the pass-through path.
    fn with_passthrough(mut self, passthrough: Arc<Passthrough>) -> Self {
        self.passthrough = Some(passthrough);
        self
    }

    /// Counts one answered request of `method` in the metrics.
    /// Tool search's meta-tools while search is not `off`: `search_tools` and
    /// `describe_tools` answered for what the caller may see, `call_tool` unwrapped
    /// into the call it names. A caller not in search mode who names a backend's tool
    /// of a meta-tool's name calls that tool; every other request passes unchanged.
    fn meta_tool(
        &self,
        request: CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Meta {
        let allow = allow_of(context);
        if !crate::proxy::is_meta_tool(&self.registry, allow.as_deref(), &request.name) {
            return Meta::Call(request);
        }
        let catalog = self.registry.catalog();
        let view = crate::proxy::search_view(&self.registry, &catalog, allow.as_deref());
        if !view.engaged
            && matches!(
                crate::proxy::as_allowed(
                    catalog.lookup(&request.name),
                    allow.as_deref(),
                    tool_visible
                ),
                Lookup::Found(_)
            )
        {
            return Meta::Call(request);
        }
        if request.name != crate::search::CALL
            && let Some(who) = context
                .extensions
                .get::<http::request::Parts>()
                .and_then(|p| p.extensions.get::<Identity>())
            && !who.scopes.contains(crate::vocab::Scopes::LIST)
        {
            // Searching and describing show the catalog: what `tools/list` needs.
            return Meta::Answered(Err(ErrorData::new(
                rmcp::model::ErrorCode::INVALID_REQUEST,
                format!(
                    "credential \"{}\" lacks the \"list\" scope {} needs (it shows the catalog)",
                    who.name, request.name
                ),
                Some(json!({"scope": "list"})),
            )));
        }
        let arguments = request.arguments.as_ref();
        let answer = match request.name.as_ref() {
            crate::search::SEARCH => {
                crate::search::search_arguments(arguments).map(|(query, limit)| {
                    crate::proxy::search_tools(&catalog, &view, allow.as_deref(), &query, limit)
                })
            }
            crate::search::DESCRIBE => crate::search::describe_arguments(arguments).map(|names| {
                crate::proxy::describe_tools(&self.registry, &catalog, allow.as_deref(), &names)
            }),
            _ => match crate::search::call_arguments(arguments) {
                Ok((name, arguments)) => {
                    let mut call = request;
                    call.name = name.into();
                    call.arguments = arguments;
                    return Meta::Call(call);
                }
                Err(bad) => Err(bad),
            },
        };
        Meta::Answered(Ok(CallToolResponse::Complete(match answer {
            Ok(value) => rmcp::model::CallToolResult::structured(value),
            Err(crate::search::BadArguments(why)) => {
                rmcp::model::CallToolResult::error(vec![rmcp::model::ContentBlock::text(why)])
            }
        })))
    }

    /// The composite tool `name` of the virtual server whose endpoint the call came to.
    fn composite_of(
        &self,
        name: &str,
        context: &RequestContext<RoleServer>,
    ) -> Option<(Arc<crate::servers::VirtualServer>, usize)> {
        crate::proxy::composite(&self.registry, allow_of(context).as_deref(), name)
    }

    /// Runs the composite's steps at once, each a direct call (allow-list, rate limit,
    /// call log, trace as a child of the composite's span), each within its deadline; a
    /// client's cancel reaches every step. The result holds one entry per step; it is
    /// an error only when a required step failed.
    async fn run_composite(
        &self,
        server: &crate::servers::VirtualServer,
        index: usize,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let composite = &server.definition.composites[index];
        let input = request.arguments.clone().unwrap_or_default();
        let missing: Vec<&str> = composite
            .required()
            .into_iter()
            .filter(|p| !input.contains_key(*p))
            .collect();
        if !missing.is_empty() {
            return Ok(CallToolResponse::Complete(
                rmcp::model::CallToolResult::error(vec![rmcp::model::ContentBlock::text(format!(
                    "missing argument(s): {}",
                    missing.join(", ")
                ))]),
            ));
        }
        // The composite's own entry in the call log, under its virtual server (its
        // request is counted by `call_tool`, as answered); its steps' entries carry the
        // same request id.
        let caller = Caller {
            counted: true,
            ..caller_of(&context)
        };
        let ticket = self.registry.observer().start(
            &caller,
            &Arc::from(format!(
                "{}{}",
                crate::servers::COMPOSITE_SERVICE,
                server.definition.name
            )),
            &composite.name,
            || serde_json::to_string(&input).ok(),
        );
        let span = tracing::info_span!(parent: &caller.span, "composite", tool = %composite.name);
        let catalog = self.registry.catalog();
        let steps = composite.steps.iter().map(|step| {
            let (service, tool) = step.target();
            // Called (and logged) by the name a direct caller would use.
            let name = catalog
                .tools_of(service)
                .find(|(_, original)| *original == tool)
                .map(|(t, _)| t.name.to_string())
                .unwrap_or_else(|| crate::catalog::qualify(service, tool));
            let mut call = CallToolRequestParams::new(name);
            call.arguments = Some(step.arguments_from(&input));
            // Its call log entry and upstream span: a child of the composite's.
            let mut context = context.clone();
            if let Some(parts) = context.extensions.get_mut::<http::request::Parts>() {
                parts.extensions.remove::<crate::proxy::Admitted>();
                if let Some(caller) = parts.extensions.get_mut::<Caller>() {
                    caller.span = span.clone();
                    caller.counted = true;
                }
            }
            let deadline = step.timeout_ms.map(std::time::Duration::from_millis);
            async move {
                let call = Box::pin(self.direct_call(call, context));
                let outcome = match deadline {
                    Some(d) => tokio::time::timeout(d, call)
                        .await
                        .map_err(|_| format!("timed out after {} ms", d.as_millis())),
                    None => Ok(call.await),
                };
                (step, step_outcome(outcome))
            }
        });
        let results = futures::future::join_all(steps).await;
        let mut failed_required = false;
        let mut entries = serde_json::Map::new();
        for (step, outcome) in results {
            let entry = match outcome {
                Ok(value) => json!({"ok": true, "result": value}),
                Err(why) => {
                    failed_required |= step.required;
                    json!({"ok": false, "error": why})
                }
            };
            entries.insert(step.name.clone(), entry);
        }
        let value = json!({ "steps": entries });
        let result = if failed_required {
            rmcp::model::CallToolResult::structured_error(value)
        } else {
            rmcp::model::CallToolResult::structured(value)
        };
        let (outcome, error) = if failed_required {
            (
                Outcome::ToolError,
                Some("a required step failed".to_string()),
            )
        } else {
            (Outcome::Ok, None)
        };
        let recorded = json_text(ticket.wants_result(), &result);
        ticket.finish(outcome, error, recorded);
        Ok(CallToolResponse::Complete(result))
    }

    /// A `tools/call` of a catalog tool: planned by the policy core (lookup,
    /// allow-list, rate limit), logged, traced and forwarded, in rounds for a 2026-07-28
    /// client.
    async fn direct_call(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        // A call the pass-through path handed over has its token already.
        let admitted = context
            .extensions
            .get::<http::request::Parts>()
            .is_some_and(|p| p.extensions.get::<crate::proxy::Admitted>().is_some());
        let target = Target::Tool(&request.name);
        let allow = allow_of(&context);
        let planned = if admitted {
            crate::proxy::find(&self.registry, allow.as_deref(), target)
        } else {
            crate::proxy::plan(&self.registry, allow.as_deref(), target)
        };
        let planned = match planned {
            Ok(planned) => planned,
            Err(refusal) => {
                let refused = Err(refusal.error());
                if !caller_of(&context).counted {
                    self.count("tools/call", &refused);
                }
                return refused;
            }
        };
        let service = Arc::clone(&planned.service);
        let rounds = self.rounds_of(&context);
        let binding = rounds.as_ref().map(|_| {
            crate::mrtr::binding(
                &caller_of(&context).identity,
                "tools/call",
                &registered(&request.name, &service),
                request.arguments.as_ref(),
            )
        });
        let mut request = request;
        // A retry continues what its requestState names.
        let opened = self.reopen(
            &rounds,
            binding.as_deref().unwrap_or_default(),
            &mut request.request_state,
            &mut request.input_responses,
        );
        let affinity = match (opened, &rounds, &binding) {
            (Ok(Some(Opened::Parked(parked))), Some(rounds), Some(binding)) => {
                let answer = rounds
                    .resume(
                        binding,
                        parked,
                        request.input_responses.take(),
                        self.round(&context),
                    )
                    .await
                    .and_then(tool_response);
                self.count("tools/call", &answer);
                return answer;
            }
            (Err(e), _, _) => {
                let refused = Err(e);
                self.count("tools/call", &refused);
                return refused;
            }
            // The backend's own: the request goes back to it with its state.
            (Ok(opened), _, _) => upstream_affinity(opened),
        };
        let caller = caller_of(&context);
        let (mut ticket, span) =
            crate::proxy::start(&self.registry, &caller, &planned, &request.name, || {
                serde_json::to_string(&request.arguments).ok()
            });
        let retry_safe = planned.retry_safe;
        let mut forwarded = request;
        forwarded.name = planned.original.to_string().into();
        // W3C trace context for the backend (SEP-414); `WatchedHttp` copies it into the
        // request's `traceparent` header.
        if let Some(traceparent) = crate::observe::traces::traceparent(&span) {
            forwarded
                .meta
                .get_or_insert_default()
                .0
                .set_traceparent(traceparent);
        }
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(forwarded));
        ticket.upstream_starts();
        // The upstream span when traces are on, else the request's own (for its id).
        let scope = if span.is_none() {
            caller.span.clone()
        } else {
            span
        };
        if let (Some(rounds), Some(binding)) = (&rounds, binding) {
            let answer = self
                .forward_in_rounds(
                    rounds,
                    &service,
                    request,
                    &context,
                    retry_safe,
                    binding,
                    affinity,
                    Some(ticket),
                    scope,
                )
                .await;
            // Counted by its ticket, when the call ends.
            return answer.and_then(tool_response);
        }
        let answer = tracing::Instrument::instrument(
            self.forward_call(&service, request, &context, retry_safe, Some(&ticket)),
            scope,
        )
        .await;
        settle(ticket, &answer);
        tool_response(answer.map_err(call_error)?)
    }

    fn count<T>(&self, method: &str, result: &Result<T, ErrorData>) {
        self.registry
            .observer()
            .metrics
            .request(method, result.is_ok());
    }

    /// `work`'s answer, counted as a request of `method`.
    async fn counted<T>(
        &self,
        method: &str,
        work: impl std::future::Future<Output = Result<T, ErrorData>>,
    ) -> Result<T, ErrorData> {
        let result = work.await;
        self.count(method, &result);
        result
    }

    /// Where relayed messages of this request go.
    fn downstream<'a>(&'a self, context: &'a RequestContext<RoleServer>) -> Downstream<'a> {
        let private = self
            .session
            .private
            .get_or_init(|| {
                let caps = context.peer.peer_info().map(|i| i.capabilities.clone())?;
                let needs_own =
                    caps.sampling.is_some() || caps.elicitation.is_some() || caps.roots.is_some();
                // Only these: the gateway relays nothing else for such a client (a task
                // of the 2026-07-28 extension could not reach it).
                let mut declared = rmcp::model::ClientCapabilities::default();
                (declared.sampling, declared.elicitation, declared.roots) =
                    (caps.sampling, caps.elicitation, caps.roots);
                needs_own.then(|| PrivateSessions::new(declared, Arc::new(context.peer.clone())))
            })
            .as_ref();
        // A 2026-07-28 request says in its `_meta` whether it wants log messages, and
        // from which level; without it, none (SEP-2575). Older clients: the session's
        // level, all messages until they set one.
        let (logs, min_log_level) = if context.meta.protocol_version().is_some() {
            let level = context.meta.log_level();
            (level.is_some(), level)
        } else {
            (
                true,
                *self.session.level.lock().unwrap_or_else(|p| p.into_inner()),
            )
        };
        let parts = context.extensions.get::<http::request::Parts>();
        // The request's own stream, for what rmcp would send on the session's GET
        // stream (see `sessions::CallStreams`).
        let aside = self.calls.as_ref().and_then(|calls| {
            let session = parts?
                .headers
                .get(crate::vocab::MCP_SESSION_ID)?
                .to_str()
                .ok()?;
            calls.of(session, &context.id)
        });
        Downstream {
            sink: Sink::Stream(Box::new(RequestStream {
                peer: &context.peer,
                parts,
                streams: self.streams.as_deref(),
                aside,
            })),
            ct: &context.ct,
            progress_token: context.meta.get_progress_token(),
            logs,
            min_log_level,
            via: private.map_or(Via::Shared, Via::Private),
            ticket: None,
        }
    }

    /// Forwards `request` to `service`, mapping gateway failures to JSON-RPC errors.
    /// Runs in the request's span (rmcp's session task is not), so its log lines carry
    /// the request id.
    async fn forward(
        &self,
        service: &Arc<Service>,
        request: ClientRequest,
        context: &RequestContext<RoleServer>,
        retry_safe: bool,
    ) -> Result<ServerResult, ErrorData> {
        let span = caller_of(context).span;
        tracing::Instrument::instrument(
            self.forward_call(service, request, context, retry_safe, None),
            span,
        )
        .await
        .map_err(call_error)
    }

    /// [`Self::forward`] with the gateway's own error, telling `ticket` which instance
    /// served the call.
    async fn forward_call(
        &self,
        service: &Arc<Service>,
        request: ClientRequest,
        context: &RequestContext<RoleServer>,
        retry_safe: bool,
        ticket: Option<&crate::observe::CallTicket>,
    ) -> Result<ServerResult, CallError> {
        // A client with an MCP session stays on one instance of each service; so do the
        // rounds of a request a 2026-07-28 backend answers with `input_required`.
        let random;
        let affinity = match context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.headers.get(crate::vocab::MCP_SESSION_ID))
            .and_then(|v| v.to_str().ok())
        {
            Some(session) => Some(session),
            None if service.modern() => {
                random = random_affinity();
                Some(random.as_str())
            }
            None => None,
        };
        let _in_flight = self.registry.call_started();
        tracing::debug!(service = %service.name, "forwarding to the upstream");
        let mut down = self.downstream(context);
        down.ticket = ticket;
        let mut request = request;
        let mut rounds = 0;
        loop {
            // Boxed: rmcp copies the handler's future into each task it spawns, and this
            // one is large.
            let mut answer =
                Box::pin(service.request(request.clone(), &down, affinity, retry_safe)).await;
            match &mut answer {
                // A 2026-07-28 backend asks its questions in its result; this (older)
                // client is asked them as requests on its session, and the request goes
                // back with the answers.
                Ok(ServerResult::InputRequiredResult(asked)) => {
                    rounds += 1;
                    if rounds > MAX_INPUT_ROUNDS {
                        return Err(CallError::Upstream(ErrorData::internal_error(
                            format!(
                                "the backend still asked for input after {MAX_INPUT_ROUNDS} rounds"
                            ),
                            None,
                        )));
                    }
                    let questions = asked.input_requests.take().unwrap_or_default();
                    // The client's answers, within the call's own deadline.
                    let responses = tokio::time::timeout(
                        service.call_timeout(),
                        ask_legacy_client(&context.peer, questions),
                    )
                    .await
                    .map_err(|_| CallError::Timeout {
                        service: service.name.to_string(),
                        ms: service.call_timeout().as_millis() as u64,
                    })?
                    .map_err(CallError::Upstream)?;
                    if !with_input(&mut request, responses, asked.request_state.take()) {
                        return Err(CallError::Upstream(ErrorData::internal_error(
                            "the backend asked for input on a request that cannot carry the answers",
                            None,
                        )));
                    }
                }
                Ok(result) => {
                    mark_complete(result);
                    return answer;
                }
                Err(_) => return answer,
            }
        }
    }

    /// This handler's session is `key` (its client `peer`): the pass-through path's
    /// session forgets it when it ends, and (a cluster's replica) its copy joins `held`,
    /// where what other replicas change of it is applied.
    fn know(&self, key: &str, peer: &rmcp::Peer<RoleServer>) {
        if let Some(passthrough) = &self.passthrough {
            let _ = self
                .session
                .key
                .set((Arc::clone(passthrough), key.to_string()));
        }
        let _ = self.session.peer.set(peer.clone());
        if let Some(held) = &self.session.held {
            held.insert(key.to_string(), Arc::downgrade(&self.session));
        }
    }

    /// Writes what this session's client set to its row, so every replica serving the
    /// session holds it (a cluster's replica only).
    async fn share(
        &self,
        write: impl AsyncFnOnce(
            &crate::sessions::Shared,
            &str,
            crate::store::Ack,
        ) -> Result<bool, StoreError>,
    ) -> Result<(), ErrorData> {
        let (Some(shared), Some((_, key))) = (&self.shared, self.session.key.get()) else {
            return Ok(());
        };
        // Answered once the other live replicas' copies took it (up to a second): a
        // request that follows the answer to any of them sees it.
        let followers = crate::sessions::Followers::of(&self.registry);
        let announced = write(shared, key, followers.ack()).await.map_err(|e| {
            ErrorData::internal_error(
                format!("applied on this replica only: the cluster's store did not take it ({e}); send it again"),
                None,
            )
        })?;
        // A session whose row is gone (ended meanwhile) was announced to nobody.
        if announced {
            followers.wait(key).await;
        }
        Ok(())
    }

    /// The rounds of a 2026-07-28 request (see `mrtr`); none for older clients.
    fn rounds_of(&self, context: &RequestContext<RoleServer>) -> Option<Arc<Rounds>> {
        let modern = context
            .meta
            .protocol_version()
            .is_some_and(|v| crate::upstream::is_modern(v.as_str()));
        modern.then(|| self.rounds.clone()).flatten()
    }

    /// Opens a 2026-07-28 retry's `requestState` (taken out of the request; a backend's
    /// own goes back in, to travel on). An older client's `requestState` and
    /// `inputResponses` are dropped: those members are not of its revision.
    fn reopen(
        &self,
        rounds: &Option<Arc<Rounds>>,
        binding: &[u8],
        state: &mut Option<String>,
        responses: &mut Option<rmcp::model::InputResponses>,
    ) -> Result<Option<Opened>, ErrorData> {
        let Some(rounds) = rounds else {
            // Those are 2026-07-28 members: an older client's reach no backend.
            (*state, *responses) = (None, None);
            return Ok(None);
        };
        let Some(sealed) = state.take() else {
            return Ok(None);
        };
        let opened = rounds.open(binding, &sealed)?;
        if let Opened::Upstream { state: theirs, .. } = &opened {
            state.clone_from(theirs);
        }
        Ok(Some(opened))
    }

    /// A `prompts/get` or `resources/read` sent on (retry-safe): a 2026-07-28 retry
    /// continues the call its `requestState` names; otherwise the request goes upstream,
    /// in rounds for a 2026-07-28 client.
    async fn forward_resumable<P: Resumes>(
        &self,
        context: &RequestContext<RoleServer>,
        service: &Arc<Service>,
        binding: Vec<u8>,
        mut params: P,
    ) -> Result<ServerResult, ErrorData> {
        let rounds = self.rounds_of(context);
        let (state, responses) = params.members();
        let opened = self.reopen(&rounds, &binding, state, responses)?;
        match (&rounds, opened) {
            (Some(rounds), Some(Opened::Parked(parked))) => {
                let responses = params.members().1.take();
                let round = self.round(context);
                rounds.resume(&binding, parked, responses, round).await
            }
            (Some(rounds), opened) => {
                let affinity = upstream_affinity(opened);
                let span = caller_of(context).span;
                let request = params.into_request();
                self.forward_in_rounds(
                    rounds, service, request, context, true, binding, affinity, None, span,
                )
                .await
            }
            (None, _) => {
                self.forward(service, params.into_request(), context, true)
                    .await
            }
        }
    }

    /// `tasks/get`, `tasks/update` or `tasks/cancel` of a task this gateway handed
    /// out: sent to the backend that runs it (its own id), the answer as it came.
    async fn forward_task(
        &self,
        context: &RequestContext<RoleServer>,
        id: &str,
        request: impl FnOnce(String) -> ClientRequest,
        retry_safe: bool,
    ) -> Result<ServerResult, ErrorData> {
        let Some(rounds) = self.rounds.as_ref() else {
            return Err(ErrorData::invalid_params(
                format!("unknown task: {id}"),
                None,
            ));
        };
        let route = rounds.open_task(&caller_of(context).identity, id)?;
        let service = self
            .registry
            .upstream(&route.service)
            .filter(|s| allow_of(context).is_none_or(|a| a.service(&s.name)))
            // The registration that made the task, not whoever holds the name now.
            .filter(|s| registered("", s) == route.registration)
            .ok_or_else(|| {
                ErrorData::invalid_params(
                    format!(
                        "unknown task: {id} (its service \"{}\" is gone)",
                        route.service
                    ),
                    None,
                )
            })?;
        let binding = crate::mrtr::binding(&caller_of(context).identity, "tasks", id, None);
        let span = caller_of(context).span;
        self.forward_in_rounds(
            rounds,
            &service,
            request(route.task),
            context,
            retry_safe,
            binding,
            Some(route.affinity),
            None,
            span,
        )
        .await
    }

    /// [`Self::forward_task`] of a method answered with an empty acknowledgement.
    async fn acknowledged_task(
        &self,
        method: &'static str,
        context: &RequestContext<RoleServer>,
        id: &str,
        request: impl FnOnce(String) -> ClientRequest,
        retry_safe: bool,
    ) -> Result<(), ErrorData> {
        self.counted(method, async {
            self.forward_task(context, id, request, retry_safe)
                .await
                .map(|_| ())
        })
        .await
    }

    /// The client side of one round of a 2026-07-28 request.
    fn round<'a>(&self, context: &'a RequestContext<RoleServer>) -> Round<'a> {
        Round {
            peer: &context.peer,
            ct: &context.ct,
            progress_token: context.meta.get_progress_token(),
            log_level: context.meta.log_level(),
            capabilities: context.meta.client_capabilities().unwrap_or_default(),
        }
    }

    /// [`Self::forward_call`] for a 2026-07-28 request: the call runs in a task of its
    /// own, and this round returns its answer, or the backend's questions for the client
    /// (`input_required`). `ticket` is settled when the call ends, whichever round that is.
    #[allow(clippy::too_many_arguments)]
    async fn forward_in_rounds(
        &self,
        rounds: &Arc<Rounds>,
        service: &Arc<Service>,
        request: ClientRequest,
        context: &RequestContext<RoleServer>,
        retry_safe: bool,
        binding: Vec<u8>,
        affinity: Option<String>,
        ticket: Option<CallTicket>,
        span: tracing::Span,
    ) -> Result<ServerResult, ErrorData> {
        // A 2026-07-28 backend may answer `input_required` itself: the retry must find
        // the same instance, so the request picks it by a key the state carries.
        let affinity = affinity.or_else(|| service.modern().then(random_affinity));
        let level = context.meta.log_level();
        // The backend sees the capabilities the client declared for its questions.
        let declared = context.meta.client_capabilities().and_then(|c| {
            let mut d = rmcp::model::ClientCapabilities::default();
            // The tasks extension too: a backend makes a task only for a request that
            // declares it.
            if c.supports_tasks() {
                d.extensions = Some(
                    [(TASKS_EXTENSION.to_string(), JsonObject::new())]
                        .into_iter()
                        .collect(),
                );
            }
            (d.sampling, d.elicitation, d.roots) = (c.sampling, c.elicitation, c.roots);
            (d != Default::default()).then_some(d)
        });
        let owner = caller_of(context).identity;
        let (tx, relays) = tokio::sync::mpsc::channel(64);
        let cancel = CancellationToken::new();
        let work = {
            let (registry, service, cancel, rounds, sealing, owner) = (
                Arc::clone(&self.registry),
                Arc::clone(service),
                cancel.clone(),
                Arc::clone(rounds),
                binding.clone(),
                Arc::clone(&owner),
            );
            async move {
                let _in_flight = registry.call_started();
                tracing::debug!(service = %service.name, "forwarding to the upstream, in rounds");
                let down = Downstream {
                    sink: Sink::Rounds(tx),
                    ct: &cancel,
                    progress_token: None,
                    logs: level.is_some(),
                    min_log_level: level,
                    via: declared.as_ref().map_or(Via::Shared, Via::Declaring),
                    ticket: ticket.as_ref(),
                };
                let mut answer =
                    Box::pin(service.request(request, &down, affinity.as_deref(), retry_safe))
                        .await;
                if let Ok(result) = &mut answer {
                    mark_complete(result);
                }
                drop(down);
                if let Some(ticket) = ticket {
                    settle(ticket, &answer);
                }
                match answer.map_err(call_error)? {
                    ServerResult::InputRequiredResult(theirs) => {
                        let affinity = affinity.unwrap_or_default();
                        rounds
                            .seal_upstream(&sealing, &affinity, theirs)
                            .map(ServerResult::InputRequiredResult)
                    }
                    // A backend's task: the client gets an id that names where it lives.
                    ServerResult::CreateTaskResult(mut created) => {
                        let route = crate::mrtr::TaskRoute {
                            service: service.name.to_string(),
                            registration: registered("", &service),
                            affinity: affinity.unwrap_or_default(),
                            task: std::mem::take(&mut created.task.task_id),
                        };
                        created.task.task_id = rounds.seal_task(&owner, &route)?;
                        Ok(ServerResult::CreateTaskResult(created))
                    }
                    other => Ok(other),
                }
            }
        };
        rounds
            .start(
                owner,
                binding,
                self.round(context),
                relays,
                cancel,
                tracing::Instrument::instrument(work, span),
            )
            .await
    }
}

/// The tasks extension's capability key (SEP-2663).
const TASKS_EXTENSION: &str = "io.modelcontextprotocol/tasks";

/// Rounds of questions a 2026-07-28 backend may ask a 2025-era client within one request.
const MAX_INPUT_ROUNDS: usize = 10;

/// Asks a 2025-era client a 2026-07-28 backend's questions, as requests on its session
/// (all at once); its answers, by the backend's keys (see [`legacy_questions`] for what
/// is refused first).
async fn ask_legacy_client(
    peer: &rmcp::Peer<RoleServer>,
    questions: rmcp::model::InputRequests,
) -> Result<rmcp::model::InputResponses, ErrorData> {
    let declared = peer
        .peer_info()
        .map(|i| i.capabilities.clone())
        .unwrap_or_default();
    let requests = legacy_questions(questions, &declared)?;
    let mut asks = Vec::with_capacity(requests.len());
    for (key, request) in requests {
        asks.push(async move {
            let answer = peer.send_request(request).await.map_err(|e| match e {
                rmcp::ServiceError::McpError(e) => e,
                other => ErrorData::internal_error(
                    format!("the client did not answer the backend's \"{key}\": {other}"),
                    None,
                ),
            })?;
            let value = serde_json::to_value(answer)
                .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
            Ok::<_, ErrorData>((key, value))
        });
    }
    futures::future::try_join_all(asks)
        .await
        .map(|answers| answers.into_iter().collect())
}

/// `request` again, with the client's answers and the backend's state; false for a
/// request that has no place for them.
fn with_input(
    request: &mut ClientRequest,
    responses: rmcp::model::InputResponses,
    state: Option<String>,
) -> bool {
    let (slot, request_state) = match request {
        ClientRequest::CallToolRequest(r) => {
            (&mut r.params.input_responses, &mut r.params.request_state)
        }
        ClientRequest::GetPromptRequest(r) => {
            (&mut r.params.input_responses, &mut r.params.request_state)
        }
        ClientRequest::ReadResourceRequest(r) => {
            (&mut r.params.input_responses, &mut r.params.request_state)
        }
        _ => return false,
    };
    *slot = Some(responses);
    *request_state = state;
    true
}

/// `name` as routed to `service`, the registration included (its owner and when it was
/// registered): a state or task id issued for it does not open for whoever registers
/// that name after it.
fn registered(name: &str, service: &Service) -> String {
    let instances = service.instances();
    let first = instances.iter().min_by_key(|i| i.registered_at_ms);
    format!(
        "{name}\u{1f}{}\u{1f}{}",
        first.and_then(|i| i.owner.as_deref()).unwrap_or_default(),
        first.map_or(0, |i| i.registered_at_ms)
    )
}

/// The instance a retry of a backend's own `input_required` goes back to.
fn upstream_affinity(opened: Option<Opened>) -> Option<String> {
    match opened {
        Some(Opened::Upstream { affinity, .. }) => Some(affinity),
        _ => None,
    }
}

/// A fresh rendezvous key: the first request lands on a random instance, and its
/// retries, carrying the key in their state, on that same one.
fn random_affinity() -> String {
    format!("mrtr-{:016x}", rand::random::<u64>())
}

/// Books a finished tool call in the call log.
/// A client's session, as `upstream` reaches it (its own upstream sessions' messages
/// outside any call). It has no request stream to close.
impl ClientLink for rmcp::Peer<RoleServer> {
    fn progress(&self, params: rmcp::model::ProgressNotificationParam) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.notify_progress(params).await;
        })
    }

    fn log(&self, params: rmcp::model::LoggingMessageNotificationParam) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.notify_logging_message(params).await;
        })
    }

    fn ask(
        &self,
        request: rmcp::model::ServerRequest,
    ) -> BoxFuture<'_, Result<rmcp::model::ClientResult, ErrorData>> {
        Box::pin(async move {
            match self.send_request(request).await {
                Ok(result) => Ok(result),
                Err(rmcp::ServiceError::McpError(e)) => Err(e),
                Err(e) => Err(ErrorData::internal_error(
                    format!("the client did not answer: {e}"),
                    None,
                )),
            }
        })
    }

    fn close_stream(
        &self,
        _retry: std::time::Duration,
    ) -> BoxFuture<'_, Result<tokio::sync::oneshot::Receiver<()>, String>> {
        Box::pin(async { Err("a session, not a request's stream".to_string()) })
    }
}

/// One client request's stream, as `upstream` reaches it: its session, and (for a
/// session at 2025-11-25 or later, tracked by `sse_resume`) the stream to close and
/// resume.
struct RequestStream<'a> {
    peer: &'a rmcp::Peer<RoleServer>,
    parts: Option<&'a http::request::Parts>,
    streams: Option<&'a Streams>,
    /// The request's own SSE stream, while it is open (a session's POST).
    aside: Option<tokio::sync::mpsc::Sender<ServerSseMessage>>,
}

impl ClientLink for RequestStream<'_> {
    fn progress(&self, params: rmcp::model::ProgressNotificationParam) -> BoxFuture<'_, ()> {
        self.peer.progress(params)
    }

    fn log(&self, params: rmcp::model::LoggingMessageNotificationParam) -> BoxFuture<'_, ()> {
        let Some(aside) = &self.aside else {
            return self.peer.log(params);
        };
        Box::pin(async move {
            let message = rmcp::model::ServerJsonRpcMessage::notification(
                ServerNotification::LoggingMessageNotification(
                    rmcp::model::LoggingMessageNotification::new(params),
                ),
            );
            // The stream closed meanwhile: the client has gone, as for rmcp's own.
            let _ = aside.send(ServerSseMessage::from_message(message)).await;
        })
    }

    fn ask(
        &self,
        request: rmcp::model::ServerRequest,
    ) -> BoxFuture<'_, Result<rmcp::model::ClientResult, ErrorData>> {
        self.peer.ask(request)
    }

    fn close_stream(
        &self,
        retry: std::time::Duration,
    ) -> BoxFuture<'_, Result<tokio::sync::oneshot::Receiver<()>, String>> {
        Box::pin(async move {
            let (Some(parts), Some(streams)) = (self.parts, self.streams) else {
                return Err("the client's session cannot resume a stream".to_string());
            };
            sse_resume::close_request_stream(parts, &streams.sessions, &streams.resumptions, retry)
                .await
        })
    }
}

/// The params of a request a 2026-07-28 client may retry with a `requestState`
/// ([`GatewayHandler::forward_resumable`]).
/// A request's `requestState` and `inputResponses`, to open and take.
type RetryMembers<'a> = (
    &'a mut Option<String>,
    &'a mut Option<rmcp::model::InputResponses>,
);

trait Resumes {
    /// Its `requestState` and `inputResponses`.
    fn members(&mut self) -> RetryMembers<'_>;
    fn into_request(self) -> ClientRequest;
}

impl Resumes for GetPromptRequestParams {
    fn members(&mut self) -> RetryMembers<'_> {
        (&mut self.request_state, &mut self.input_responses)
    }

    fn into_request(self) -> ClientRequest {
        ClientRequest::GetPromptRequest(GetPromptRequest::new(self))
    }
}

impl Resumes for ReadResourceRequestParams {
    fn members(&mut self) -> RetryMembers<'_> {
        (&mut self.request_state, &mut self.input_responses)
    }

    fn into_request(self) -> ClientRequest {
        ClientRequest::ReadResourceRequest(ReadResourceRequest::new(self))
    }
}

fn settle(ticket: CallTicket, answer: &Result<ServerResult, CallError>) {
    let wanted = ticket.wants_result();
    match answer {
        Ok(ServerResult::CallToolResult(r)) => {
            let outcome = if r.is_error == Some(true) {
                Outcome::ToolError
            } else {
                Outcome::Ok
            };
            ticket.finish(outcome, None, json_text(wanted, r));
        }
        Ok(other) => ticket.finish(Outcome::Ok, None, json_text(wanted, other)),
        Err(e) => ticket.finish(e.outcome(), Some(e.to_string()), None),
    }
}

/// A `tools/call` answer as the client gets it.
fn tool_response(result: ServerResult) -> Result<CallToolResponse, ErrorData> {
    match result {
        ServerResult::CallToolResult(r) => Ok(CallToolResponse::Complete(r)),
        ServerResult::InputRequiredResult(r) => Ok(CallToolResponse::InputRequired(r)),
        ServerResult::CreateTaskResult(r) => Ok(CallToolResponse::Task(r)),
        _ => Err(unexpected("tools/call")),
    }
}

/// An upstream's result as the gateway's own: a 2025-era upstream sends no
/// `resultType`, which the 2026-07-28 revision requires on every result (rmcp fills in
/// the caching hints for such peers, and strips `resultType: "complete"` again for older
/// ones, so the mark costs nothing to them).
fn mark_complete(result: &mut ServerResult) {
    let slot = match result {
        ServerResult::CallToolResult(r) => &mut r.result_type,
        ServerResult::GetPromptResult(r) => &mut r.result_type,
        ServerResult::ReadResourceResult(r) => &mut r.result_type,
        ServerResult::CompleteResult(r) => &mut r.result_type,
        _ => return,
    };
    slot.get_or_insert(rmcp::model::ResultType::COMPLETE);
}

fn unexpected(method: &str) -> ErrorData {
    ErrorData::internal_error(
        format!("the upstream answered {method} with an unexpected result"),
        None,
    )
}

/// `value` as JSON text, when `wanted`.
fn json_text<T: serde::Serialize>(wanted: bool, value: &T) -> Option<String> {
    wanted.then(|| serde_json::to_string(value).ok()).flatten()
}

/// Who sent the request (see `entry`).
fn caller_of(context: &RequestContext<RoleServer>) -> Caller {
    context
        .extensions
        .get::<http::request::Parts>()
        .and_then(|p| p.extensions.get::<Caller>())
        .cloned()
        .unwrap_or_else(Caller::anonymous)
}

/// The allow-list of the credential that sent the request, if it has one.
fn allow_of(context: &RequestContext<RoleServer>) -> Option<Arc<Allow>> {
    context
        .extensions
        .get::<http::request::Parts>()?
        .extensions
        .get::<Identity>()?
        .allow
        .clone()
}

impl ServerHandler for GatewayHandler {
    fn get_info(&self) -> ServerConfig {
        let catalog = self.registry.catalog();
        let offered = catalog.offered();
        let caps = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .build();
        let mut caps = caps;
        if offered.prompts {
            let mut p = PromptsCapability::default();
            p.list_changed = Some(true);
            caps.prompts = Some(p);
        }
        if offered.resources {
            let mut r = ResourcesCapability::default();
            r.list_changed = Some(true);
            r.subscribe = offered.subscribe.then_some(true);
            caps.resources = Some(r);
        }
        if offered.completions {
            caps.completions = Some(JsonObject::new());
        }
        // The gateway answers logging/setLevel itself (it filters what it relays).
        caps.logging = Some(JsonObject::new());
        if offered.tasks {
            // Passed through to the backends that run tasks (see `forward_task`).
            caps.extensions = Some(
                [(TASKS_EXTENSION.to_string(), JsonObject::new())]
                    .into_iter()
                    .collect(),
            );
        }
        InitializeResult::new(caps)
            .with_server_info(Implementation::new(
                "mcp-gateway",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(instructions(&catalog, None))
    }

    async fn initialize(
        &self,
        request: rmcp::model::InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        context.peer.set_peer_info(request.clone());
        // A cluster's replica knows its copy by id from the start: the client's later
        // requests (its `notifications/initialized` too) may all reach other replicas.
        if self.shared.is_some()
            && let Some(crate::sessions::SessionKey(key)) = context.extensions.get()
        {
            self.know(key, &context.peer);
        }
        let mut result = self.negotiate_initialize(&request)?;
        // On a virtual server, only the instructions of the services it shows.
        let catalog = self.registry.catalog();
        result.instructions = Some(instructions(&catalog, allow_of(&context).as_deref()));
        Ok(result)
    }

    async fn discover(
        &self,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::DiscoverResult, ErrorData> {
        let mut info = self.get_info();
        let catalog = self.registry.catalog();
        info.instructions = Some(instructions(&catalog, allow_of(&context).as_deref()));
        Ok(rmcp::model::DiscoverResult::from_server_info(
            self.supported_protocol_versions().into_owned(),
            info,
        ))
    }

    async fn get_task(
        &self,
        request: rmcp::model::GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::GetTaskResult, ErrorData> {
        self.counted("tasks/get", async {
            let id = request.task_id.clone();
            let result = self
                .forward_task(
                    &context,
                    &id,
                    |task| {
                        let mut forwarded = request;
                        forwarded.task_id = task;
                        ClientRequest::GetTaskRequest(rmcp::model::GetTaskRequest::new(forwarded))
                    },
                    true,
                )
                .await?;
            match result {
                ServerResult::GetTaskResult(mut r) => {
                    r.task.task.task_id = id;
                    Ok(r)
                }
                _ => Err(unexpected("tasks/get")),
            }
        })
        .await
    }

    async fn update_task(
        &self,
        request: rmcp::model::UpdateTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let id = request.task_id.clone();
        let update = |task| {
            let mut forwarded = request;
            forwarded.task_id = task;
            ClientRequest::UpdateTaskRequest(rmcp::model::UpdateTaskRequest::new(forwarded))
        };
        self.acknowledged_task("tasks/update", &context, &id, update, false)
            .await
    }

    async fn cancel_task(
        &self,
        request: rmcp::model::CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let id = request.task_id.clone();
        let cancel = |task| {
            let mut forwarded = request;
            forwarded.task_id = task;
            ClientRequest::CancelTaskRequest(rmcp::model::CancelTaskRequest::new(forwarded))
        };
        self.acknowledged_task("tasks/cancel", &context, &id, cancel, true)
            .await
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.counted("tools/list", async {
            let catalog = self.registry.catalog();
            let allow = allow_of(&context);
            // Too many tools for an agent to hold: the meta-tools of tool search instead.
            let view = crate::proxy::search_view(&self.registry, &catalog, allow.as_deref());
            if let Some(why) = view.refused {
                return Err(ErrorData::invalid_request(
                    why,
                    Some(json!({"reason": "too_many_tools"})),
                ));
            }
            if view.engaged {
                let meta = crate::search::meta_tools(catalog.search().describe(|i| view.sees(i)));
                let (tools, next) = page(
                    &meta,
                    request.and_then(|r| r.cursor).as_deref(),
                    self.page_size,
                )?;
                let mut result = ListToolsResult::with_all_items(tools.to_vec());
                result.next_cursor = next;
                return Ok(result);
            }
            let tools = crate::proxy::listed_tools(&self.registry, &catalog, allow.as_deref());
            let (tools, next) = page(
                &tools,
                request.and_then(|r| r.cursor).as_deref(),
                self.page_size,
            )?;
            let mut result = ListToolsResult::with_all_items(tools.to_vec());
            result.next_cursor = next;
            Ok(result)
        })
        .await
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.registry.catalog().tool(name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        // Tool search's meta-tools: answered here, or (`call_tool`) the call of the tool
        // they name, which takes the rest of this way like any direct call.
        let request = match self.meta_tool(request, &context) {
            Meta::Answered(answer) => {
                self.count("tools/call", &answer);
                return answer;
            }
            Meta::Call(request) => request,
        };
        // A virtual server's composite tool: several of its tools at once.
        if let Some((server, index)) = self.composite_of(&request.name, &context) {
            let answer = self.run_composite(&server, index, request, context).await;
            self.count("tools/call", &answer);
            return answer;
        }
        self.direct_call(request, context).await
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        self.counted("prompts/list", async {
            let catalog = self.registry.catalog();
            let allow = allow_of(&context);
            let prompts = visible(
                catalog.prompts().items(),
                allow.as_deref(),
                |a, p| matches!(catalog.prompts().lookup(&p.name), Lookup::Found(r) if prompt_visible(a, r)),
            );
            let (items, next) = page(
                &prompts,
                request.and_then(|r| r.cursor).as_deref(),
                self.page_size,
            )?;
            let mut result = ListPromptsResult::with_all_items(items.to_vec());
            result.next_cursor = next;
            Ok(result)
        })
        .await
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        self.counted("prompts/get", async {
            let Planned {
                service, original, ..
            } = crate::proxy::plan(
                &self.registry,
                allow_of(&context).as_deref(),
                Target::Prompt(&request.name),
            )?;
            let binding = crate::mrtr::binding(
                &caller_of(&context).identity,
                "prompts/get",
                &registered(&request.name, &service),
                request.arguments.as_ref(),
            );
            let mut forwarded = request;
            forwarded.name = original.to_string();
            let result = self
                .forward_resumable(&context, &service, binding, forwarded)
                .await?;
            match result {
                ServerResult::GetPromptResult(r) => Ok(GetPromptResponse::Complete(r)),
                ServerResult::InputRequiredResult(r) => Ok(GetPromptResponse::InputRequired(r)),
                _ => Err(unexpected("prompts/get")),
            }
        })
        .await
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        self.counted("resources/list", async {
            let catalog = self.registry.catalog();
            let allow = allow_of(&context);
            let resources = visible(
                catalog.resources().items(),
                allow.as_deref(),
                |a, r| matches!(catalog.resources().lookup(&r.uri), Lookup::Found(route) if resource_visible(a, route)),
            );
            let (items, next) = page(
                &resources,
                request.and_then(|r| r.cursor).as_deref(),
                self.page_size,
            )?;
            let mut result = ListResourcesResult::with_all_items(items.to_vec());
            result.next_cursor = next;
            Ok(result)
        })
        .await
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        self.counted("resources/templates/list", async {
            let catalog = self.registry.catalog();
            let allow = allow_of(&context);
            let templates = visible(catalog.templates(), allow.as_deref(), |a, (s, t)| {
                a.resource(&s.name, &t.uri_template)
            });
            let (items, next) = page(
                &templates,
                request.and_then(|r| r.cursor).as_deref(),
                self.page_size,
            )?;
            let mut result = ListResourceTemplatesResult::with_all_items(
                items.iter().map(|(_, t)| t.clone()).collect(),
            );
            result.next_cursor = next;
            Ok(result)
        })
        .await
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        self.counted("resources/read", async {
            let Planned {
                service, original, ..
            } = crate::proxy::plan(
                &self.registry,
                allow_of(&context).as_deref(),
                Target::Resource(&request.uri),
            )?;
            let original = original.to_string();
            let public = request.uri.clone();
            let binding = crate::mrtr::binding(
                &caller_of(&context).identity,
                "resources/read",
                &registered(&public, &service),
                None,
            );
            let mut forwarded = request;
            forwarded.uri = original.clone();
            let result = self
                .forward_resumable(&context, &service, binding, forwarded)
                .await?;
            match result {
                ServerResult::ReadResourceResult(mut r) => {
                    // Contents name the URI the client asked for.
                    if public != original {
                        for c in &mut r.contents {
                            rename_contents(c, &original, &public);
                        }
                    }
                    Ok(ReadResourceResponse::Complete(r))
                }
                ServerResult::InputRequiredResult(r) => Ok(ReadResourceResponse::InputRequired(r)),
                _ => Err(unexpected("resources/read")),
            }
        })
        .await
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.counted("resources/subscribe", async {
            let subscriber = Subscriber::Session(context.peer.clone());
            let allow = allow_of(&context);
            let held = self.registry.subscriptions_of(self.session.id);
            if held.len() >= MAX_SUBSCRIPTIONS_PER_SESSION && !held.contains(&request.uri) {
                return Err(ErrorData::invalid_params(
                    format!("a session follows at most {MAX_SUBSCRIPTIONS_PER_SESSION} resources: unsubscribe from some first"),
                    None,
                ));
            }
            subscribe_as(
                &self.registry,
                self.session.id,
                &request.uri,
                subscriber,
                allow.as_deref(),
            )
            .await?;
            self.share(async |shared, key, ack| {
                shared.set_subscription(key, &request.uri, true, ack).await
            })
            .await
        })
        .await
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.counted("resources/unsubscribe", async {
            if self.registry.unsubscribe(&request.uri, self.session.id) {
                unsubscribe_upstream(&self.registry, &request.uri).await;
            }
            self.share(async |shared, key, ack| {
                shared.set_subscription(key, &request.uri, false, ack).await
            })
            .await
        })
        .await
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        self.counted("completion/complete", async {
            let mut forwarded = request;
            let allow = allow_of(&context);
            let service = match &mut forwarded.r#ref {
                Reference::Prompt(p) => {
                    let target = Target::Prompt(&p.name);
                    let planned = crate::proxy::find(&self.registry, allow.as_deref(), target)?;
                    p.name = planned.original.to_string();
                    planned.service
                }
                Reference::Resource(t) => {
                    let target = Target::Template(&t.uri);
                    crate::proxy::find(&self.registry, allow.as_deref(), target)?.service
                }
                _ => {
                    return Err(ErrorData::invalid_params(
                        "unsupported completion reference",
                        None,
                    ));
                }
            };
            let request = ClientRequest::CompleteRequest(CompleteRequest::new(forwarded));
            match self.forward(&service, request, &context, true).await? {
                ServerResult::CompleteResult(r) => Ok(r),
                _ => Err(unexpected("completion/complete")),
            }
        })
        .await
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.counted("logging/setLevel", async {
            *self.session.level.lock().unwrap_or_else(|p| p.into_inner()) = Some(request.level);
            self.share(async |shared, key, ack| shared.set_level(key, request.level, ack).await)
                .await
        })
        .await
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        if let Some(passthrough) = &self.passthrough
            && let Some(key) = context
                .extensions
                .get::<http::request::Parts>()
                .and_then(|p| p.headers.get(crate::vocab::MCP_SESSION_ID))
                .and_then(|v| v.to_str().ok())
        {
            passthrough.confirm(key);
            // A session restored from its `initialize` parameters has its copy now.
            passthrough.woke(key);
            self.know(key, &context.peer);
            if let Some(shared) = &self.shared {
                // A copy restored here (the session was opened on another replica): what
                // its client set there holds here too.
                let restored = context
                    .extensions
                    .get::<rmcp::transport::streamable_http_server::session::SessionRestoreMarker>()
                    .is_some();
                if restored && let Some(settings) = shared.adopted_settings(key) {
                    *self.session.level.lock().unwrap_or_else(|p| p.into_inner()) = settings.level;
                    let session = Arc::clone(&self.session);
                    tokio::spawn(async move { session.follow(settings, false).await });
                }
            }
        }
        self.registry.add_client(self.session.id, context.peer);
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let mut accepted = SubscriptionFilter::default();
        accepted.tools_list_changed = requested.tools_list_changed;
        accepted.prompts_list_changed = requested.prompts_list_changed;
        accepted.resources_list_changed = requested.resources_list_changed;
        // The URIs a subscription can go to (a limited credential's request was narrowed
        // to what it sees in `entry`: this hook does not know who asks).
        let catalog = self.registry.catalog();
        accepted.resource_subscriptions = requested.resource_subscriptions.as_ref().map(|uris| {
            uris.iter()
                .filter(|uri| catalog.subscribe_route(uri).is_some())
                .take(MAX_LISTEN_URIS)
                .cloned()
                .collect()
        });
        Some(accepted)
    }

    /// `subscriptions/listen` (2026-07-28): list changes for clients without a session.
    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let mut changes = self.registry.watch_changes();
        let uris = context
            .accepted()
            .resource_subscriptions
            .clone()
            .unwrap_or_default();
        let allow = allow_of(context.request_context());
        for uri in &uris {
            let subscriber = Subscriber::Listen(context.sink().clone());
            if let Err(e) = subscribe_as(
                &self.registry,
                self.session.id,
                uri,
                subscriber,
                allow.as_deref(),
            )
            .await
            {
                tracing::debug!(%uri, "subscriptions/listen: upstream subscribe failed: {}", e.message);
            }
        }
        // Its subscriptions end with the stream (the handler's `SessionState` forgets
        // them too when it is dropped).
        let _unsubscribe = Unsubscribe {
            registry: Arc::clone(&self.registry),
            session: self.session.id,
            uris,
        };
        loop {
            let changed = tokio::select! {
                _ = context.cancelled() => return Ok(()),
                c = changes.recv() => match c {
                    Ok(c) => c,
                    // Missed some: say everything may have changed.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Changed {
                        tools: true,
                        prompts: true,
                        resources: true,
                    },
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
                },
            };
            let accepted = context.accepted();
            let sink = context.sink();
            if changed.tools && accepted.tools_list_changed == Some(true) {
                let _ = sink
                    .send(ServerNotification::ToolListChangedNotification(
                        Default::default(),
                    ))
                    .await;
            }
            if changed.prompts && accepted.prompts_list_changed == Some(true) {
                let _ = sink
                    .send(ServerNotification::PromptListChangedNotification(
                        Default::default(),
                    ))
                    .await;
            }
            if changed.resources && accepted.resources_list_changed == Some(true) {
                let _ = sink
                    .send(ServerNotification::ResourceListChangedNotification(
                        Default::default(),
                    ))
                    .await;
            }
        }
    }
}

/// Most resources one `subscriptions/listen` stream may follow; past it, the rest are not
/// acknowledged.
pub const MAX_LISTEN_URIS: usize = 256;

/// Ends a listen stream's resource subscriptions, upstream too when it was the last.
struct Unsubscribe {
    registry: Arc<Registry>,
    session: u64,
    uris: Vec<String>,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let emptied: Vec<String> = self
            .uris
            .iter()
            .filter(|uri| self.registry.unsubscribe(uri, self.session))
            .cloned()
            .collect();
        if emptied.is_empty() {
            return;
        }
        let registry = Arc::clone(&self.registry);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                for uri in emptied {
                    unsubscribe_upstream(&registry, &uri).await;
                }
            });
        }
    }
}

/// Gives resource contents read under a qualified URI the URI the client asked for.
fn rename_contents(c: &mut ResourceContents, original: &str, public: &str) {
    match c {
        ResourceContents::TextResourceContents { uri, .. }
        | ResourceContents::BlobResourceContents { uri, .. }
            if uri == original =>
        {
            *uri = public.to_string();
        }
        _ => {}
    }
}

/// The two rmcp services behind `/mcp`.
#[derive(Clone)]
pub struct McpEndpoint {
    /// Sessions of clients at protocol 2025-11-25 or later: SSE streams open with a
    /// priming event (an id and empty data) so they can be resumed.
    sessions: Arc<StreamableHttpService<GatewayHandler, Tagged>>,
    streams: Arc<Streams>,
    /// Sessions of older clients, which choke on an event with empty data: no priming.
    legacy: Arc<StreamableHttpService<GatewayHandler, Tagged>>,
    /// The session managers of `sessions` and of `legacy` ([`Self::manager`]).
    managers: [Arc<Tagged>; 2],
    sessionless: Arc<StreamableHttpService<GatewayHandler, Tagged>>,
    /// `tools/call` past rmcp's typed pipeline, when nothing about the call needs it.
    passthrough: Arc<Passthrough>,
    limits: Arc<crate::limits::Limits>,
    registry: Arc<Registry>,
    max_body_bytes: usize,
    max_sessions_per_credential: usize,
    max_sessions: usize,
    /// A cluster's shared sessions (a PostgreSQL store): rows any replica adopts.
    shared: Option<Arc<crate::sessions::Shared>>,
    /// The copies of shared sessions this replica's handlers hold.
    held: Arc<Held>,
    /// Passes a resumed stream to the replica holding it (plain HTTP, no timeout: it
    /// carries a stream).
    relay: Option<reqwest::Client>,
}

impl McpEndpoint {
    /// The session manager of sessions that resume their streams (2025-11-25 and
    /// later), or of older ones.
    fn manager(&self, resumable: bool) -> &Tagged {
        &self.managers[usize::from(!resumable)]
    }

    /// rmcp's session maps, of both managers.
    fn session_maps(&self) -> [&Arc<LocalSessionManager>; 2] {
        [&self.managers[0].inner, &self.managers[1].inner]
    }

    /// The Prometheus text exposition, with the live gauges.
    pub fn metrics(&self) -> String {
        let mut now = self.registry.metrics_snapshot();
        // Every session this replica serves, with or without rmcp's copy.
        now.sessions = self.passthrough.session_count();
        now.dormant_sessions = self.passthrough.dormant_count();
        self.registry.observer().metrics.render(now)
    }

    /// The refusal of one more session for `identity`, when it or the gateway holds as
    /// many as allowed.
    fn session_cap(&self, identity: Option<&Identity>) -> Option<Response> {
        let owner = identity.map_or("anonymous", |i| &*i.name);
        if self.passthrough.sessions_of(owner) >= self.max_sessions_per_credential {
            return Some(self.owner_cap(owner));
        }
        if self.passthrough.session_count() >= self.max_sessions {
            return Some(self.total_cap());
        }
        None
    }

    /// 429: `owner` holds `max_sessions_per_credential` sessions.
    fn owner_cap(&self, owner: &str) -> Response {
        crate::refusal::error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_sessions",
            format!(
                "credential \"{owner}\" already holds {} open sessions (max_sessions_per_credential); end some (DELETE /mcp) or let them expire",
                self.max_sessions_per_credential
            ),
        )
    }

    /// 503: the gateway (or its cluster) holds `max_sessions` sessions.
    fn total_cap(&self) -> Response {
        let mut refusal = crate::refusal::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_sessions",
            format!(
                "the gateway holds {} open sessions (max_sessions); try again later",
                self.max_sessions
            ),
        );
        refusal
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        refusal
    }

    /// This replica's copy of session `id` is closed (rmcp's and the pass-through
    /// path's); in a cluster the session may go on elsewhere.
    async fn close_local(&self, id: &str) {
        let session_id: rmcp::transport::streamable_http_server::session::SessionId = id.into();
        for manager in self.session_maps() {
            use rmcp::transport::streamable_http_server::session::SessionManager;
            let _ = manager.close_session(&session_id).await;
        }
        // Tells the memory trimmer too.
        self.passthrough.end(id);
        if let Some(shared) = &self.shared {
            shared.forget(id);
        }
    }

    /// A cluster's sessions, until `stop`: writes this replica's uses and confirmations
    /// and ends idle sessions (every `idle.min(pending) / 10`, 1 to 30 s), closes the
    /// copies of sessions other replicas ended and applies what they changed of the
    /// others, saying so to the replica that waits for it (the change's `Ack`).
    pub async fn follow_cluster(
        self,
        idle: std::time::Duration,
        pending: std::time::Duration,
        stop: CancellationToken,
    ) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let mut news = self.registry.watch_sessions();
        let every = (idle.min(pending) / 10).clamp(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(30),
        );
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => match shared.sweep(idle, pending).await {
                    Ok(ids) => {
                        for id in ids {
                            self.close_local(&id).await;
                            tracing::debug!(session = %id, "a shared session expired");
                        }
                    }
                    Err(e) => tracing::debug!("shared sessions not swept: {e}"),
                },
                event = news.recv() => match event {
                    Ok(Event::Change(Change::SessionsEnded { ids, ack })) => {
                        for id in ids.iter() {
                            self.close_local(id).await;
                        }
                        // The replica that ended it by a DELETE answers once told.
                        if let Some(ack) = ack {
                            announce_followed(&shared, ack);
                        }
                    }
                    Ok(Event::Change(Change::Answers(_))) => self.take_answers(&shared).await,
                    Ok(Event::Change(Change::Session { id, ack })) => {
                        self.follow_session(&shared, id, Some(ack));
                    }
                    Ok(Event::Change(_)) => {}
                    // Notifications may have been missed: every copy's settings read again.
                    Ok(Event::Resync) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        self.take_answers(&shared).await;
                        let held: Vec<String> = self.held.iter().map(|e| e.key().clone()).collect();
                        for id in held {
                            self.follow_session(&shared, id, None);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }

    /// Passes the answers other replicas relayed here to the sessions' copies.
    async fn take_answers(&self, shared: &crate::sessions::Shared) {
        use rmcp::transport::streamable_http_server::session::SessionManager;
        let answers = match shared.take_answers().await {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!("relayed answers not read: {e}");
                return;
            }
        };
        for (session, body) in answers {
            let Ok(message) = serde_json::from_str::<rmcp::model::ClientJsonRpcMessage>(&body)
            else {
                continue;
            };
            let id: rmcp::transport::streamable_http_server::session::SessionId =
                session.as_str().into();
            for manager in self.session_maps() {
                if matches!(manager.has_session(&id).await, Ok(true)) {
                    if let Err(e) = manager.accept_message(&id, message).await {
                        tracing::debug!(%session, "a relayed answer not taken: {e}");
                    }
                    break;
                }
            }
        }
    }

    /// Applies what another replica changed of session `id` (its level, its
    /// subscriptions) to the copies here, in a task of its own (subscribing upstream
    /// may take a while; the session loop goes on); then, given the change's `ack`,
    /// says so (a replica holding no copy at once): the replica that made the change
    /// answers its client once every replica has.
    fn follow_session(
        &self,
        shared: &Arc<crate::sessions::Shared>,
        id: String,
        ack: Option<crate::store::Ack>,
    ) {
        let state = self.held.get(&id).and_then(|w| w.upgrade());
        let held = state.is_some() || self.passthrough.owner(&id).is_some();
        let (shared, passthrough) = (Arc::clone(shared), Arc::clone(&self.passthrough));
        tokio::spawn(async move {
            if held {
                match shared.settings(&id).await {
                    Ok(Some(settings)) => {
                        passthrough.set_level(&id, settings.level);
                        if let Some(state) = state {
                            state.follow(settings, true).await;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(session = %id, "a shared session's settings not read: {e}");
                    }
                }
            }
            if let Some(ack) = ack
                && let Err(e) = shared.followed(ack).await
            {
                tracing::debug!(session = %id, "a session's change not announced as followed: {e}");
            }
        });
    }

    /// Closes sessions unused for longer than `idle` (or never confirmed with
    /// `notifications/initialized` within `pending`), until `stop`.
    pub async fn expire_idle(
        self,
        idle: std::time::Duration,
        pending: std::time::Duration,
        stop: CancellationToken,
    ) {
        let every = (idle.min(pending) / 4).clamp(
            std::time::Duration::from_millis(50),
            std::time::Duration::from_secs(30),
        );
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
            self.limits.prune();
            for id in self.passthrough.idle_sessions(idle, pending) {
                self.close_local(&id).await;
                tracing::debug!(session = %id, "closed an idle session");
            }
        }
    }

    /// Gives back the room of session maps (rmcp's and ours) that once held many more
    /// sessions than now; called before memory is returned to the system.
    pub async fn shrink(&self) {
        for manager in self.session_maps() {
            manager.sessions.write().await.shrink_to_fit();
        }
        self.passthrough.shrink();
    }
}

/// How long `initialize` waits for the copy of a session that goes on without it to end
/// (`Tagged::retire`; it takes about a millisecond).
const RETIRE_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The first protocol revision whose clients expect SSE priming events.
const PRIMING_SINCE: &str = "2025-11-25";

impl McpEndpoint {
    pub fn new(
        registry: Arc<Registry>,
        config: &crate::Config,
        shutdown: CancellationToken,
    ) -> Self {
        let (max_body_bytes, page_size) = (config.max_body_bytes, config.list_page_size);
        let mut base = origin_policy(
            host_policy(
                StreamableHttpServerConfig::default()
                    .with_cancellation_token(shutdown)
                    .with_max_request_body_bytes(max_body_bytes),
                &config.allowed_hosts,
            ),
            &config.allowed_origins,
        );
        // A cluster's sessions: rmcp restores a copy of one another replica opened from
        // the parameters `adopt` read from its row.
        let shared = registry
            .cluster_store()
            .map(|pg| crate::sessions::Shared::new(Arc::clone(pg)));
        let registry_limits = &Arc::clone(registry.limits());
        let shared_registry = Arc::clone(&registry);
        let passthrough = Arc::new(Passthrough::new(
            Arc::clone(&registry),
            page_size,
            &config.allowed_hosts,
            &config.allowed_origins,
        ));
        // Else a session that went without rmcp's copy after `initialize`: rmcp restores
        // one from the parameters the pass-through path kept.
        base.session_store = Some(match &shared {
            Some(shared) => Arc::new(crate::sessions::RestoreFrom(Arc::clone(shared))),
            None => Arc::new(crate::passthrough::Restore(Arc::clone(&passthrough))),
        });
        // A cluster's replicas seal alike: a `requestState` or task id one handed out
        // opens on every other (a parked call still lives on the replica that parked it).
        let sealing = shared.as_ref().and_then(|_| {
            config
                .cluster_key
                .as_ref()
                .map(|k| crate::store::cipher::derive(k.expose(), b"requestState and task ids"))
        });
        let rounds = Rounds::new(
            crate::mrtr::Limits {
                timeout: std::time::Duration::from_millis(config.input_timeout_ms),
                max: config.max_waiting_calls,
                max_per_credential: config.max_waiting_calls_per_credential,
            },
            sealing,
        );
        let rounds = Arc::new(match &shared {
            Some(_) => rounds.in_cluster(registry.replica()),
            None => rounds,
        });
        let held: Arc<Held> = Arc::default();
        // A cluster's replica passes some requests to another (`relay`).
        let relay = shared.as_ref().map(|_| {
            service_kit::client::ensure_tls_provider();
            reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(3))
                .no_proxy()
                .build()
                .expect("a plain HTTP client builds")
        });
        let calls: Arc<crate::sessions::CallStreams> = Arc::default();
        let factory = {
            let (passthrough, shared, held, calls) = (
                Arc::clone(&passthrough),
                shared.clone(),
                Arc::clone(&held),
                Arc::clone(&calls),
            );
            move || {
                let handler = GatewayHandler::new(Arc::clone(&registry), page_size)
                    .with_passthrough(Arc::clone(&passthrough))
                    .with_rounds(Arc::clone(&rounds))
                    .with_call_streams(Arc::clone(&calls));
                Ok(match &shared {
                    Some(shared) => handler.in_cluster(Arc::clone(shared), Arc::clone(&held)),
                    None => handler,
                })
            }
        };
        // Idle sessions are closed by `expire_idle`, which also sees the pass-through
        // path's calls; rmcp's own timer would close a session busy only with those.
        let mut modern_manager = LocalSessionManager::default();
        modern_manager.session_config.keep_alive = None;
        let streams = Arc::new(Streams {
            sessions: Arc::new(modern_manager),
            resumptions: Arc::default(),
        });
        // A replica of a cluster never closes a client's stream for it to resume: the
        // `Last-Event-ID` could reach another replica, which does not hold the call (the
        // gateway resumes the backend's stream itself and keeps the client's open).
        let modern = {
            let (factory, streams) = (factory.clone(), Arc::clone(&streams));
            let clustered = shared.is_some();
            move || {
                factory().map(|h| {
                    if clustered {
                        h
                    } else {
                        h.resumable(Arc::clone(&streams))
                    }
                })
            }
        };
        let mut legacy_manager = LocalSessionManager::default();
        legacy_manager.session_config.sse_retry = None;
        legacy_manager.session_config.keep_alive = None;
        let tagged = |manager: Arc<LocalSessionManager>| {
            Arc::new(Tagged::new(manager, shared.as_ref(), Arc::clone(&calls)))
        };
        let managers = [
            tagged(Arc::clone(&streams.sessions)),
            tagged(Arc::new(legacy_manager)),
        ];
        let sessions = StreamableHttpService::new(modern, Arc::clone(&managers[0]), base.clone());
        let legacy = StreamableHttpService::new(
            factory.clone(),
            Arc::clone(&managers[1]),
            base.clone().with_sse_retry(None),
        );
        let sessionless = StreamableHttpService::new(
            factory,
            Arc::new(Tagged::new(Arc::default(), None, Arc::default())),
            base.with_legacy_session_mode(false)
                .with_json_response(true)
                .with_sse_retry(None),
        );
        Self {
            sessions: Arc::new(sessions),
            streams,
            legacy: Arc::new(legacy),
            managers,
            sessionless: Arc::new(sessionless),
            passthrough,
            limits: Arc::clone(registry_limits),
            registry: shared_registry,
            max_body_bytes,
            max_sessions_per_credential: config.max_sessions_per_credential,
            max_sessions: config.max_sessions,
            shared,
            held,
            relay,
        }
    }
}

fn host_policy(
    config: StreamableHttpServerConfig,
    allowed_hosts: &[String],
) -> StreamableHttpServerConfig {
    if allowed_hosts.iter().any(|h| h == "*") {
        return config.disable_allowed_hosts();
    }
    let hosts = service_kit::mcp::LOOPBACK_HOSTS
        .iter()
        .map(|h| h.to_string())
        .chain(allowed_hosts.iter().cloned());
    config.with_allowed_hosts(hosts)
}

fn origin_policy(
    config: StreamableHttpServerConfig,
    allowed_origins: &[String],
) -> StreamableHttpServerConfig {
    if allowed_origins.iter().any(|o| o == "*") {
        return config.disable_allowed_origins();
    }
    let origins = crate::origins::LOOPBACK_ORIGINS
        .iter()
        .map(|o| o.to_string())
        .chain(allowed_origins.iter().cloned());
    config
        .with_allowed_origins(origins)
        .enforce_origin_validation()
}

/// The request's `Origin` is its own `Host` (scheme aside).
fn same_origin(headers: &http::HeaderMap) -> bool {
    let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST))
    else {
        return false;
    };
    let (Ok(origin), Ok(host)) = (origin.to_str(), host.to_str()) else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|authority| authority.eq_ignore_ascii_case(host))
}

/// `/mcp`, every method.
/// The virtual server whose endpoint a request came to (absent: `/mcp`).
#[derive(Clone)]
pub struct OnServer(pub Arc<str>);

/// `/servers/{name}/mcp`: the virtual server's endpoint, everything `/mcp` offers, seen
/// through its view (on top of the credential's own allow-list).
pub async fn virtual_entry(
    State(endpoint): State<McpEndpoint>,
    axum::extract::Path(name): axum::extract::Path<String>,
    mut request: Request,
) -> Response {
    // A credential limited to other virtual servers learns nothing of this name.
    if let Some(refusal) = endpoint_refusal(request.extensions().get::<Identity>(), Some(&name)) {
        return refusal;
    }
    let Some(server) = endpoint.registry.virtual_server(&name) else {
        return crate::jsonrpc::error_response(
            StatusCode::NOT_FOUND,
            serde_json::Value::Null,
            crate::vocab::INVALID_REQUEST,
            format!("no virtual server {name:?} (GET /virtual-servers lists them)"),
        );
    };
    if let Some(identity) = request.extensions_mut().get_mut::<Identity>() {
        let within = Allow::within(identity.allow.as_deref(), Arc::clone(&server.view));
        identity.allow = Some(Arc::new(within));
    }
    request
        .extensions_mut()
        .insert(OnServer(Arc::from(name.as_str())));
    entry(State(endpoint), request).await
}

/// 403 when `who` is limited to virtual servers and `server` (`None`: `/mcp`) is not
/// one of them.
fn endpoint_refusal(who: Option<&Identity>, server: Option<&str>) -> Option<Response> {
    let who = who?;
    if who.allow.as_deref().is_none_or(|a| a.endpoint(server)) {
        return None;
    }
    let message = match server {
        Some(s) => format!(
            "credential \"{}\" may not use the virtual server {s:?}",
            who.name
        ),
        None => format!(
            "credential \"{}\" is limited to virtual servers (/servers/{{name}}/mcp), not /mcp",
            who.name
        ),
    };
    Some(crate::refusal::error(
        StatusCode::FORBIDDEN,
        "endpoint_not_allowed",
        &message,
    ))
}

/// The large steps below are awaited boxed: axum moves the handler's future several
/// times before it first runs, and a future holds its largest step inline (the session
/// path's was ~10 KiB, ~11k instructions of copying per call).
pub async fn entry(State(endpoint): State<McpEndpoint>, mut request: Request) -> Response {
    let identity = request.extensions().get::<Identity>().cloned();
    let server = request
        .extensions()
        .get::<OnServer>()
        .map(|s| Arc::clone(&s.0));
    // A credential limited to some virtual servers uses their endpoints only.
    if let Some(refusal) = endpoint_refusal(identity.as_ref(), server.as_deref()) {
        return refusal;
    }
    let caller = Caller {
        identity: identity
            .as_ref()
            .map_or_else(|| Arc::from("anonymous"), |i| Arc::clone(&i.name)),
        request_id: request
            .headers()
            .get(&crate::refusal::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(Arc::from),
        arrived: std::time::Instant::now(),
        span: tracing::Span::current(),
        counted: false,
    };
    request.extensions_mut().insert(caller.clone());
    // A same-origin request (the dashboard at /ui) is not a cross-origin one: the Host
    // check (allowed_hosts) is what guards against DNS rebinding then.
    if same_origin(request.headers()) {
        request.headers_mut().remove(header::ORIGIN);
    }
    // A credential with an allow-list sees filtered lists: the typed path does that.
    // A credential's allow-list: the policy core applies it on either path.
    let allow = identity.as_ref().and_then(|i| i.allow.clone());
    let session = request
        .headers()
        .get(crate::vocab::MCP_SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if request.method() != Method::POST {
        if let Some(who) = &identity
            && let Err(wait) = endpoint.limits.credential(&who.name)
        {
            let error = crate::limits::rate_limited(&format!("credential \"{}\"", who.name), wait);
            return crate::refusal::too_many_requests(&error.message, wait);
        }
        if session.is_some()
            && let Some(response) = resume_elsewhere(&endpoint, &mut request).await
        {
            return response;
        }
        if let Some(id) = &session
            && let Some(refusal) = adopt(&endpoint, id).await
        {
            return refusal;
        }
        return match session {
            Some(id) => match owner_refusal(&endpoint, &id, identity.as_ref(), server.as_deref()) {
                Some(refusal) => refusal,
                None => {
                    endpoint.passthrough.touch(&id);
                    // A new GET stream of a cluster's session: its first event (rmcp's
                    // priming, added past the session manager) names this replica too.
                    let fresh = endpoint.shared.is_some()
                        && request.method() == Method::GET
                        && !request.headers().contains_key(crate::vocab::LAST_EVENT_ID);
                    let (parts, body) = request.into_parts();
                    let response = Box::pin(in_session(
                        &endpoint,
                        parts,
                        Posted::Other(body),
                        id,
                        allow.as_deref(),
                        &caller,
                    ))
                    .await;
                    if fresh {
                        tag_priming(response, endpoint.registry.replica())
                    } else {
                        response
                    }
                }
            },
            None => into_axum(Box::pin(endpoint.sessions.handle(request)).await).await,
        };
    }
    // The body is read once and its envelope with it; every step below uses that.
    let (mut parts, body) = request.into_parts();
    let bytes = match read_body(body, endpoint.max_body_bytes).await {
        Ok(b) => b,
        Err(too_large) => return too_large,
    };
    let parsed = Parsed::of(&bytes);
    // The body is JSON whatever the client's tooling called it (`curl -d` says
    // application/x-www-form-urlencoded): rmcp reads it as what it is.
    if !crate::vocab::labelled_json(&parts.headers) && !matches!(parsed, Parsed::NotJson(_)) {
        parts
            .headers
            .insert(header::CONTENT_TYPE, crate::vocab::APPLICATION_JSON);
    }
    // Over the credential's rate limit: a JSON-RPC error for a request (it has an id to
    // answer), 429 for anything else.
    if let Some(who) = &identity
        && let Err(wait) = endpoint.limits.credential(&who.name)
    {
        let error = crate::limits::rate_limited(&format!("credential \"{}\"", who.name), wait);
        return match parsed.message().and_then(Envelope::request_id) {
            Some(id) => (
                StatusCode::OK,
                axum::Json(json!({"jsonrpc": "2.0", "id": id, "error": error})),
            )
                .into_response(),
            None => crate::refusal::too_many_requests(&error.message, wait),
        };
    }
    // What the gateway cannot classify exactly goes no further, whoever sends it.
    if let Some(refusal) = refuse_unclassified(&parsed, identity.as_ref()) {
        return refusal;
    }
    // What the JSON-RPC method needs of a credential with only some scopes.
    if let Some(who) = identity.as_ref().filter(|i| i.scopes != Scopes::ALL)
        && let Some(refusal) = refuse_by_scope(who, &parts, &parsed)
    {
        return refusal;
    }
    if session.is_none()
        && let Some(response) = continue_elsewhere(&endpoint, &parts, &bytes, &parsed).await
    {
        return response;
    }
    if let Some(id) = session {
        if let Some(refusal) = adopt(&endpoint, &id).await {
            return refusal;
        }
        if let Some(refusal) = owner_refusal(&endpoint, &id, identity.as_ref(), server.as_deref()) {
            return refusal;
        }
        if let Some(shared) = &endpoint.shared
            && parsed.method() == Some("notifications/initialized")
        {
            shared.confirmed(&id);
        }
        endpoint.passthrough.touch(&id);
        let posted = Posted::Json {
            bytes: &bytes,
            parsed: &parsed,
        };
        return Box::pin(in_session(
            &endpoint,
            parts,
            posted,
            id,
            allow.as_deref(),
            &caller,
        ))
        .await;
    }
    if let Some(envelope) = parsed.message()
        && let Some(response) = Box::pin(endpoint.passthrough.sessionless_post(
            &parts.headers,
            envelope,
            &caller,
            allow.as_deref(),
        ))
        .await
    {
        return response;
    }
    if parsed.method() == Some("initialize") {
        return Box::pin(initialize(
            &endpoint,
            server.clone(),
            parts,
            &bytes,
            &parsed,
            identity.as_ref(),
        ))
        .await;
    }
    // A plain JSON-RPC post: answer in JSON whatever the client's tooling sent.
    let h = &mut parts.headers;
    if !crate::vocab::accepts_json_and_sse(h) {
        h.insert(header::ACCEPT, crate::vocab::ACCEPT_BOTH);
    }
    if !h.contains_key(header::CONTENT_TYPE) {
        h.insert(header::CONTENT_TYPE, crate::vocab::APPLICATION_JSON);
    }
    // A limited credential follows only the resources it sees: the rest of its
    // `subscriptions/listen` is dropped before rmcp acknowledges what it accepts.
    let bytes = match identity.as_ref().and_then(|i| i.allow.as_deref()) {
        Some(allow) if parsed.method() == Some("subscriptions/listen") => {
            narrow_listen(&endpoint.registry, allow, &bytes).unwrap_or(bytes)
        }
        _ => bytes,
    };
    let request = Request::from_parts(parts, Body::from(bytes));
    into_axum(Box::pin(endpoint.sessionless.handle(request)).await).await
}

/// A `subscriptions/listen` body without the resources `allow` does not let its
/// credential see (None: nothing to drop, or not a body this can read).
fn narrow_listen(registry: &Registry, allow: &Allow, bytes: &[u8]) -> Option<bytes::Bytes> {
    let mut body: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let uris = body
        .pointer_mut("/params/notifications/resourceSubscriptions")?
        .as_array_mut()?;
    let catalog = registry.catalog();
    let before = uris.len();
    uris.retain(|uri| {
        uri.as_str()
            .and_then(|u| catalog.subscribe_route(u))
            .is_some_and(|(service, uri)| allow.resource(&service.name, &uri))
    });
    (uris.len() != before).then(|| serde_json::to_vec(&body).ok().map(Into::into))?
}

/// In a cluster, a session this replica has not met: adopted from its row in the shared
/// store (then checked like one opened here), unknown (rmcp answers 404 as for any
/// ended session), or 503 when the store cannot say. Elsewhere, nothing.
async fn adopt(endpoint: &McpEndpoint, id: &str) -> Option<Response> {
    let shared = endpoint.shared.as_ref()?;
    if endpoint.passthrough.owner(id).is_some() {
        shared.used(id);
        return None;
    }
    // Boxed: every session POST awaits this function inline, and the store's lookup is
    // most of its size (~1.7 KiB, copied with `entry`'s future on each request).
    match Box::pin(shared.adopt(id)).await {
        Ok(Some(adopted)) => {
            endpoint
                .passthrough
                .adopt(id, &adopted.init_text, adopted.owner, adopted.server);
            endpoint.passthrough.set_level(id, adopted.state.level);
            shared.used(id);
            None
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(session = %id, "a session of the cluster could not be read: {e}");
            Some(store_unavailable(
                "this session is kept in the cluster's store, which does not answer; retry shortly",
            ))
        }
    }
}

/// A session's new GET stream with its priming event's id (rmcp's `0`) tagged with
/// `replica`, as `sessions::Tagged` tags every other event: a client that lost the
/// stream before any other event resumes where the stream is.
fn tag_priming(response: Response, replica: &str) -> Response {
    let sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"));
    if !sse {
        return response;
    }
    let (parts, body) = response.into_parts();
    let (plain, tagged) = ("\nid: 0\n", format!("\nid: 0@{replica}\n"));
    let mut first = true;
    let body = futures::StreamExt::map(body.into_data_stream(), move |chunk| match chunk {
        Ok(bytes) if std::mem::take(&mut first) => {
            let text = String::from_utf8_lossy(&bytes);
            let at = text.find(plain).filter(|at| !text[..*at].contains("\n\n"));
            Ok(match at {
                Some(at) => bytes::Bytes::from(format!(
                    "{}{tagged}{}",
                    &text[..at],
                    &text[at + plain.len()..]
                )),
                None => bytes,
            })
        }
        other => other,
    });
    Response::from_parts(parts, Body::from_stream(body))
}

/// Headers of one HTTP hop (RFC 9110 7.6.1, and those older proxies use).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Marks a request one replica passed to another (never passed on again).
const RELAYED: &str = "x-mcp-gateway-relayed";

/// A GET resuming a stream (`Last-Event-ID`) in a cluster: the event id names the
/// replica holding the stream ([`crate::sessions::Tagged`]). This replica's own: the
/// id is given back as rmcp wrote it and the request goes on here. Another live
/// replica's: the request is passed to it and its answer streamed back. A replica no
/// longer live: its streams went with it; a session's own stream (GET) starts afresh
/// here, a call's stream is refused (410): its call was lost with the replica.
async fn resume_elsewhere(endpoint: &McpEndpoint, request: &mut Request) -> Option<Response> {
    endpoint.shared.as_ref()?;
    let last = request
        .headers()
        .get(crate::vocab::LAST_EVENT_ID)?
        .to_str()
        .ok()?;
    let Some((event, replica)) = crate::sessions::untag_event(last) else {
        // An id no replica named (a lone gateway's, from before it joined): whose stream
        // it was cannot be told, so the stream starts afresh here rather than replay
        // another stream's events.
        request.headers_mut().remove("last-event-id");
        return None;
    };
    let (event, replica) = (event.to_string(), replica.to_string());
    if replica == endpoint.registry.replica() {
        let event = HeaderValue::from_str(&event).ok()?;
        request.headers_mut().insert("last-event-id", event);
        return None;
    }
    let address = endpoint.registry.replica_address(&replica);
    let relayed = request.headers().contains_key(RELAYED);
    match address {
        Some(address) if !relayed => {
            let path = request
                .uri()
                .path_and_query()
                .map_or_else(|| "/mcp".to_string(), |p| p.to_string());
            Some(
                relay(
                    endpoint,
                    Method::GET,
                    &path,
                    request.headers(),
                    None,
                    &address,
                )
                .await,
            )
        }
        _ if !event.contains('/') => {
            request.headers_mut().remove("last-event-id");
            None
        }
        _ => Some(crate::refusal::error(
            StatusCode::GONE,
            "stream_gone",
            "the gateway replica that held this stream has left the cluster, and the call it answered with it: send the request again",
        )),
    }
}

/// A 2026-07-28 client's retry of a call parked on another replica of the cluster (a
/// 2025-era backend asked it mid-call, and its `requestState` names where the call
/// waits): passed to that replica, which continues the call, and its answer streamed
/// back. `None`: the retry is this replica's (or no live replica holds the call: opening
/// the state here says so).
async fn continue_elsewhere(
    endpoint: &McpEndpoint,
    parts: &http::request::Parts,
    body: &bytes::Bytes,
    parsed: &Parsed<'_>,
) -> Option<Response> {
    endpoint.shared.as_ref()?;
    let params = parsed.message()?.params?;
    if !params.get().contains("\"requestState\"") || parts.headers.contains_key(RELAYED) {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Retry<'a> {
        #[serde(rename = "requestState", borrow)]
        request_state: Option<std::borrow::Cow<'a, str>>,
    }
    let retry: Retry<'_> = serde_json::from_str(params.get()).ok()?;
    let state = retry.request_state?;
    let replica = crate::mrtr::parked_on(&state)?;
    if replica == endpoint.registry.replica() {
        return None;
    }
    let address = endpoint.registry.replica_address(replica)?;
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| "/mcp".to_string(), |p| p.to_string());
    Some(
        relay(
            endpoint,
            Method::POST,
            &path,
            &parts.headers,
            Some(body.clone()),
            &address,
        )
        .await,
    )
}

/// Passes a request to the replica at `address` (the one holding what it continues) and
/// streams its answer back.
async fn relay(
    endpoint: &McpEndpoint,
    method: Method,
    path: &str,
    headers: &http::HeaderMap,
    body: Option<bytes::Bytes>,
    address: &str,
) -> Response {
    // Only a cluster's replica relays, and each has its client.
    let Some(client) = &endpoint.relay else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let mut forwarded = client
        .request(method, format!("http://{address}{path}"))
        .header(RELAYED, "1");
    // Hop-by-hop headers (RFC 9110 7.6.1), and those the client's `Connection` names,
    // stay on this hop; the rest goes on unchanged (`Host`, `Authorization` too).
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    for (name, value) in headers {
        let hop = HOP_BY_HOP.contains(&name.as_str()) || named.iter().any(|n| n == name.as_str());
        if !hop && name != header::CONTENT_LENGTH {
            forwarded = forwarded.header(name, value);
        }
    }
    if let Some(body) = body {
        forwarded = forwarded.body(body);
    }
    let answer = match forwarded.send().await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(%address, "a request could not be passed to the replica holding what it continues: {e}");
            return crate::refusal::error(
                StatusCode::BAD_GATEWAY,
                "replica_unreachable",
                "the gateway replica holding what this request continues does not answer; retry shortly",
            );
        }
    };
    let mut response = Response::builder().status(answer.status().as_u16());
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
        header::CACHE_CONTROL,
        header::WWW_AUTHENTICATE,
        header::RETRY_AFTER,
    ]
    .into_iter()
    .chain([crate::vocab::MCP_SESSION_ID])
    {
        if let Some(value) = answer.headers().get(&name) {
            response = response.header(name, value.as_bytes());
        }
    }
    let body = futures::stream::unfold(answer, |mut answer| async move {
        match answer.chunk().await {
            Ok(Some(chunk)) => Some((Ok::<_, std::io::Error>(chunk), answer)),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e)), answer)),
        }
    });
    response
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

/// 503 (retry in 2 s): the cluster's store, which keeps sessions, does not answer.
fn store_unavailable(message: &str) -> Response {
    let mut refusal = crate::refusal::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        message,
    );
    refusal
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    refusal
}

/// 403 when session `id` was opened by another credential than `who` (a session id is
/// no proof of identity).
fn owner_refusal(
    endpoint: &McpEndpoint,
    id: &str,
    who: Option<&Identity>,
    server: Option<&str>,
) -> Option<Response> {
    let owner = endpoint.passthrough.owner(id)?;
    // A session is its endpoint's: elsewhere it does not exist.
    if endpoint.passthrough.server_of(id).as_deref() != server {
        return Some(crate::jsonrpc::error_response(
            StatusCode::NOT_FOUND,
            serde_json::Value::Null,
            crate::vocab::INVALID_REQUEST,
            "no such session on this endpoint (a session belongs to the endpoint that opened it)",
        ));
    }
    (who?.name != owner).then(|| {
        crate::refusal::error(
            StatusCode::FORBIDDEN,
            "session_owner_mismatch",
            "this session was opened with another credential",
        )
    })
}

/// An `initialize` without a session: a new session, within the caps on sessions.
async fn initialize(
    endpoint: &McpEndpoint,
    server: Option<Arc<str>>,
    parts: http::request::Parts,
    bytes: &bytes::Bytes,
    parsed: &Parsed<'_>,
    identity: Option<&Identity>,
) -> Response {
    if let Some(refusal) = endpoint.session_cap(identity) {
        return refusal;
    }
    let modern = parsed
        .message()
        .and_then(Envelope::protocol_version)
        .is_some_and(|v| v.as_str() >= PRIMING_SINCE);
    let service = if modern {
        &endpoint.sessions
    } else {
        &endpoint.legacy
    };
    let request = Request::from_parts(parts, Body::from(bytes.clone()));
    let response = into_axum(service.handle(request).await).await;
    endpoint
        .registry
        .observer()
        .metrics
        .request("initialize", response.status().is_success());
    if let Some(envelope) = parsed.message() {
        endpoint.passthrough.initialized(envelope, &response);
    }
    if let Some(id) = response
        .headers()
        .get(crate::vocab::MCP_SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    {
        let owner = identity.map_or_else(|| Arc::from("anonymous"), |i| Arc::clone(&i.name));
        endpoint
            .passthrough
            .bind(&id, Arc::clone(&owner), server.clone());
        // A session that needs nothing of rmcp's copy yet goes without it (its channels
        // and task are most of an idle session's memory): rmcp restores it for the first
        // request that needs it, from the parameters kept here.
        let init = parsed
            .message()
            .and_then(|e| e.params)
            .map_or("{}", |p| p.get());
        if let Some(resumable) = endpoint.passthrough.hibernates(&id, init) {
            endpoint.passthrough.hibernate(&id, init, resumable);
            let manager = endpoint.manager(resumable);
            // Before the client hears of the session, so no copy is restored before the
            // first is gone for good.
            if !manager.retire(&id.as_str().into(), RETIRE_WITHIN).await {
                tracing::warn!(session = %id, "rmcp's copy of a session did not end within {} s of its close", RETIRE_WITHIN.as_secs());
            }
        }
        // In a cluster the session is the cluster's: its row, within the cluster's caps,
        // before the client hears of it; else it is closed again.
        if let Some(shared) = &endpoint.shared {
            let caps = (endpoint.max_sessions_per_credential, endpoint.max_sessions);
            let refused = match shared
                .open(&id, &owner, server.as_deref(), init, caps)
                .await
            {
                // Its `notifications/initialized` may reach another replica: the cluster's
                // sweep, not this copy's timer, ends it if it never comes.
                Ok(()) => {
                    endpoint.passthrough.confirm(&id);
                    None
                }
                Err(crate::sessions::Refused::Cap(crate::store::postgres::SessionCap::Owner(
                    _,
                ))) => Some(endpoint.owner_cap(&owner)),
                Err(crate::sessions::Refused::Cap(_)) => Some(endpoint.total_cap()),
                Err(crate::sessions::Refused::TooLarge) => Some(crate::refusal::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "initialize_too_large",
                    format!(
                        "initialize parameters over {} bytes cannot be shared by the cluster's replicas",
                        crate::sessions::MAX_INIT_BYTES
                    ),
                )),
                Err(crate::sessions::Refused::Store(e)) => {
                    tracing::warn!("a session could not be opened: {e}");
                    Some(store_unavailable(
                        "sessions are kept in the cluster's store, which does not answer; retry shortly",
                    ))
                }
            };
            if let Some(refusal) = refused {
                endpoint.close_local(&id).await;
                return refusal;
            }
        }
    }
    response
}

/// What a request in a session carries: a JSON-RPC POST, read and parsed, or the body of
/// any other method.
enum Posted<'a> {
    Json {
        bytes: &'a bytes::Bytes,
        parsed: &'a Parsed<'a>,
    },
    Other(Body),
}

impl Posted<'_> {
    fn into_body(self) -> Body {
        match self {
            Posted::Json { bytes, .. } => Body::from(bytes.clone()),
            Posted::Other(body) => body,
        }
    }
}

/// A request in session `id`: the pass-through path for the calls it carries, else the
/// rmcp service the session belongs to.
async fn in_session(
    endpoint: &McpEndpoint,
    mut parts: http::request::Parts,
    posted: Posted<'_>,
    id: String,
    allow: Option<&Allow>,
    caller: &Caller,
) -> Response {
    let fast = endpoint.passthrough.session(&id);
    let dormant = endpoint.passthrough.dormant(&id);
    // Whether rmcp holds no copy of the session yet, and restores one for this request.
    let mut restores = dormant.is_some();
    if let Some(fast) = &fast {
        let manager = &endpoint.manager(fast.resumable()).inner;
        let alive = manager.sessions.read().await.contains_key(id.as_str());
        let adopted = endpoint.shared.as_ref().is_some_and(|s| s.is_adopted(&id));
        restores |= adopted && !alive;
        if !alive && !adopted && dormant.is_none() {
            endpoint.passthrough.end(&id);
        } else if let Posted::Json { parsed, .. } = &posted {
            // An adopted session whose copy rmcp has not restored yet is served here as
            // well (its row was read), and so is one that went without its copy after
            // `initialize` (`Passthrough::hibernate`): rmcp restores it for the first
            // request this path does not carry, and a call carried here gets its log
            // messages on its own stream as on the replica that opened the session.
            if let Some(envelope) = parsed.message() {
                if let Some(response) = Box::pin(
                    endpoint
                        .passthrough
                        .session_post(&mut parts, envelope, &id, fast, caller, allow),
                )
                .await
                {
                    return response;
                }
                // Without rmcp's copy, the notifications this path follows are
                // acknowledged here: nothing else would be done with them.
                if !alive
                    && dormant.is_some()
                    && let Some(response) =
                        endpoint
                            .passthrough
                            .noted(&parts.headers, envelope, &id, fast)
                {
                    return response;
                }
            }
        } else if (alive || dormant.is_some())
            && parts.method == Method::GET
            && let Some(last) = parts
                .headers
                .get(crate::vocab::LAST_EVENT_ID)
                .and_then(|v| v.to_str().ok())
            && let Some(response) = endpoint.passthrough.resume(&id, last)
        {
            return response;
        }
    }
    // A DELETE ends the session once rmcp has ended it (it may refuse, 400 or 405): only
    // then is it forgotten here (its owner, endpoint and place in the session caps).
    let deleting = parts.method == Method::DELETE;
    let legacy = match (&fast, dormant) {
        (Some(f), _) => !f.resumable(),
        (None, Some(resumable)) => !resumable,
        // An adopted session rmcp has not restored yet: by the revision its client asked
        // for, as at its `initialize`.
        (None, None) => match endpoint.shared.as_ref().and_then(|s| s.revision(&id)) {
            Some(revision) => revision.as_str() < PRIMING_SINCE,
            None => endpoint
                .manager(false)
                .inner
                .sessions
                .read()
                .await
                .contains_key(id.as_str()),
        },
    };
    let request = Request::from_parts(parts, posted.into_body());
    // A session without rmcp's copy (gone after `initialize`, or adopted from the
    // cluster's store): one request at a time reaches rmcp until the copy is restored
    // (see `Passthrough::waking`).
    let _waking = if restores {
        Some(endpoint.passthrough.waking(&id).await)
    } else {
        None
    };
    let response = if legacy {
        into_axum(Box::pin(endpoint.legacy.handle(request)).await).await
    } else {
        // Resumable streams: note which stream a POST rides on and when one is resumed.
        let sessions = &endpoint.sessions;
        Box::pin(sse_resume::tracked(
            &endpoint.streams.resumptions,
            request,
            |r| async move { into_axum(sessions.handle(r).await).await },
        ))
        .await
    };
    let mut response = response;
    if deleting && response.status().is_success() {
        // rmcp says 202; the SDKs' clients expect 200 or 204 (the official Python SDK
        // logs any other answer as a failed termination).
        if response.status() == StatusCode::ACCEPTED {
            *response.status_mut() = StatusCode::OK;
        }
        endpoint.passthrough.end(&id);
        if let Some(shared) = &endpoint.shared {
            shared.forget(&id);
            // A cluster's session ends for every replica: its row goes, and the answer
            // waits (up to a second) for the other live replicas to close their copies,
            // so that a request following it to any of them gets the 404. Until the end
            // is recorded the session goes on elsewhere, and its owner is told to send
            // the DELETE again.
            let followers = crate::sessions::Followers::of(&endpoint.registry);
            if let Err(e) = Box::pin(shared.end(&id, followers)).await {
                tracing::warn!(session = %id, "a session's end could not be recorded: {e}");
                return store_unavailable(
                    "the session's end could not be recorded in the cluster's store, which does not answer; send the DELETE again shortly",
                );
            }
        }
    }
    response
}

/// Tells the replica waiting for it that this one followed the change `ack` names, in a
/// task of its own (the store may be slow to lend a connection; the session loop goes
/// on).
fn announce_followed(shared: &Arc<crate::sessions::Shared>, ack: crate::store::Ack) {
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        if let Err(e) = shared.followed(ack).await {
            tracing::debug!("an ended session's closing not announced: {e}");
        }
    });
}

/// The scopes a JSON-RPC method needs beyond a valid token: all of them, or (for
/// `initialize`) any one of them. Fails closed: a method the gateway does not know needs
/// `call`, the data plane's strongest scope.
fn method_scope(method: &str) -> Option<(Scopes, bool)> {
    const ALL_OF: bool = false;
    const ANY_OF: bool = true;
    match method {
        "ping"
        | "logging/setLevel"
        | "server/discover"
        | "notifications/initialized"
        | "notifications/cancelled"
        | "notifications/progress"
        | "notifications/roots/list_changed" => None,
        // A session is for listing or calling: a credential that may do neither (only
        // register or operate) has no use for one.
        "initialize" => Some((Scopes::LIST.with(Scopes::CALL), ANY_OF)),
        "tools/list"
        | "prompts/list"
        | "resources/list"
        | "resources/templates/list"
        | "subscriptions/listen" => Some((Scopes::LIST, ALL_OF)),
        _ => Some((Scopes::CALL, ALL_OF)),
    }
}

/// The JSON-RPC refusal of a body the gateway cannot classify exactly: not JSON (-32700),
/// or not a single request, notification or response (-32600). A batch is passed on
/// only for a credential with every scope (each of its messages would need a check).
fn refuse_unclassified(parsed: &Parsed<'_>, who: Option<&Identity>) -> Option<Response> {
    let (code, message) = match parsed {
        Parsed::NotJson(why) => (crate::vocab::PARSE_ERROR, why.clone()),
        Parsed::Invalid(why) => (crate::vocab::INVALID_REQUEST, why.clone()),
        Parsed::Batch if who.is_some_and(|w| w.scopes != Scopes::ALL) => (
            crate::vocab::INVALID_REQUEST,
            "JSON-RPC batches are not accepted from a credential with limited scopes".into(),
        ),
        Parsed::Batch => return None,
        Parsed::Message(m) if m.method.is_none() && !m.is_response() => (
            crate::vocab::INVALID_REQUEST,
            "invalid JSON-RPC message: neither a request, a notification nor a response".into(),
        ),
        Parsed::Message(_) => return None,
    };
    let id = parsed
        .message()
        .and_then(|m| m.id)
        .and_then(|id| serde_json::from_str::<serde_json::Value>(id.get()).ok())
        .filter(|id| id.is_string() || id.is_number())
        .unwrap_or(serde_json::Value::Null);
    Some(crate::jsonrpc::error_response(
        StatusCode::BAD_REQUEST,
        id,
        code,
        message,
    ))
}

/// 403 when `who` lacks the scope the message in `parsed` needs (a classified message:
/// see [`refuse_unclassified`]).
fn refuse_by_scope(
    who: &Identity,
    parts: &http::request::Parts,
    parsed: &Parsed<'_>,
) -> Option<Response> {
    let (needed, any_of) = match parsed {
        Parsed::Message(m) => match m.method.as_deref() {
            Some(method) => method_scope(method)?,
            // A response to a request of the server's: nothing is asked of the gateway.
            None if m.is_response() => return None,
            None => (Scopes::ALL, false),
        },
        // Never passed on for a limited credential (see `refuse_unclassified`).
        _ => (Scopes::ALL, false),
    };
    let allowed = if any_of {
        who.scopes.intersects(needed)
    } else {
        who.scopes.contains(needed)
    };
    if allowed {
        return None;
    }
    let metadata = parts
        .extensions
        .get::<MetadataUrl>()
        .map(|m| m.0.document_url(&parts.headers, parts.uri.path()))
        .unwrap_or_default();
    Some(insufficient_scope(who, needed, &metadata))
}

/// A request body of at most `limit` bytes, or the refusal: 413 for a larger one, 408
/// for one that did not arrive in time (`body_read_timeout_ms`) or broke off.
async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, Response> {
    to_bytes(body, limit).await.map_err(|e| {
        let cause = e.into_inner();
        let over =
            std::iter::successors(Some(&*cause as &(dyn std::error::Error + 'static)), |e| {
                e.source()
            })
            .any(|e| e.is::<http_body_util::LengthLimitError>());
        if over {
            return too_large(limit);
        }
        crate::jsonrpc::error_response(
            StatusCode::REQUEST_TIMEOUT,
            serde_json::Value::Null,
            crate::vocab::INVALID_REQUEST,
            format!("the request body did not arrive whole in time: {cause}"),
        )
    })
}

fn too_large(limit: usize) -> Response {
    crate::jsonrpc::error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        serde_json::Value::Null,
        crate::vocab::INVALID_REQUEST,
        format!("request body exceeds the limit of {limit} bytes"),
    )
}

/// rmcp's answer as axum's; a refusal rmcp words in plain text (406, 415, an unknown
/// session's 404, ...) becomes a JSON-RPC error with the same status and text: every
/// refusal on `/mcp` is JSON-RPC.
async fn into_axum<B>(response: http::Response<B>) -> Response
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    let response = response.map(Body::new);
    if !(status.is_client_error() || status.is_server_error()) || json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let read = tokio::time::timeout(std::time::Duration::from_secs(1), to_bytes(body, 4096));
    let text = match read.await {
        Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).trim().to_string(),
        _ => String::new(),
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("refused").to_string()
    } else {
        text
    };
    let code = if status.is_server_error() {
        crate::vocab::INTERNAL_ERROR
    } else {
        crate::vocab::INVALID_REQUEST
    };
    parts
        .headers
        .insert(header::CONTENT_TYPE, crate::vocab::APPLICATION_JSON);
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = crate::jsonrpc::error_body(serde_json::Value::Null, code, message);
    Response::from_parts(parts, Body::from(body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::{header, page, same_origin};

    #[test]
    fn same_origin_means_the_requests_own_host() {
        let headers = |origin: &str, host: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(header::ORIGIN, origin.parse().expect("origin"));
            h.insert(header::HOST, host.parse().expect("host"));
            h
        };
        assert!(same_origin(&headers(
            "https://gw.example.com",
            "gw.example.com"
        )));
        assert!(same_origin(&headers(
            "http://gw.example.com:3001",
            "GW.example.com:3001"
        )));
        assert!(!same_origin(&headers(
            "http://evil.example",
            "gw.example.com"
        )));
        assert!(!same_origin(&headers(
            "http://gw.example.com:1",
            "gw.example.com:3001"
        )));
        assert!(!same_origin(&headers("null", "gw.example.com")));
        assert!(!same_origin(&http::HeaderMap::new()));
    }

    #[test]
    fn pages_walk_the_whole_list_once() {
        let items: Vec<u32> = (0..250).collect();
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let (chunk, next) = page(&items, cursor.as_deref(), 100).expect("page");
            seen.extend_from_slice(chunk);
            match next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, items);
        assert!(page(&items, Some("garbage"), 100).is_err());
        assert!(page(&items, Some("o999"), 100).is_err());
        let (empty, next) = page::<u32>(&[], None, 100).expect("empty");
        assert!(empty.is_empty() && next.is_none());
    }
}
