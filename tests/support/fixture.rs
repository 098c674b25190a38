//! A small MCP server for tests: offers the tools it is given; each answers with which
//! server and tool ran and the arguments it got, so routing is visible in the result.
//! Tools named `hang*` never answer (until cancelled: the fixture counts cancellations);
//! tools named `slow*` answer after 800 ms; tools named `big*` answer with a text of
//! `arguments.size` bytes; tools named `fail*` answer with an `isError` result; tools
//! named `roots*` ask the client for its roots (`roots/list`, during the call) and answer
//! with their URIs, or with an `isError` result when the client did not declare `roots`;
//! tools named `pending*` ask for the roots too, then wait until cancelled (counted);
//! tools named `touch*` announce an update of `arguments.uri` to its subscribers (see
//! [`Fixture::watching`]).
//! Every call is counted.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, InitializeResult,
        ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    },
    service::RequestContext,
    transport::streamable_http_server::{
        StreamableHttpService, session::local::LocalSessionManager,
    },
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// An upstream subscription: the URI, and the session that subscribed.
pub type Subscription = (String, rmcp::Peer<RoleServer>);

#[derive(Clone)]
pub struct Fixture {
    name: Arc<str>,
    tools: Arc<Vec<Tool>>,
    /// Calls received.
    pub calls: Arc<AtomicUsize>,
    /// `hang*` calls that were cancelled by the client (`notifications/cancelled`).
    pub cancelled: Arc<AtomicUsize>,
    /// Serve `tools/list` in pages of this size (cursor = offset).
    page: Option<usize>,
    /// Answer 401 unless this header has this value.
    require: Option<(&'static str, Arc<str>)>,
    /// The `Authorization` header of every HTTP request received ("" when absent).
    pub authorizations: Arc<std::sync::Mutex<Vec<String>>>,
    /// Serve without sessions, answering plain JSON bodies instead of SSE streams.
    json: bool,
    /// W3C trace context received: `traceparent` headers, and `_meta.traceparent` of
    /// tool calls.
    pub traceparent_headers: Arc<std::sync::Mutex<Vec<String>>>,
    pub traceparent_metas: Arc<std::sync::Mutex<Vec<String>>>,
    /// The root URIs each `roots*` call got from its client.
    pub roots: Arc<std::sync::Mutex<Vec<Vec<String>>>>,
    /// Offers resources with subscriptions: this one listed (see [`Self::watching`]).
    watched: Option<Arc<str>>,
    /// Upstream subscriptions now: (URI, the subscribing session's peer).
    pub subscriptions: Arc<std::sync::Mutex<Vec<Subscription>>>,
    /// Speaks 2026-07-28 as well (answers `server/discover`); by default only the 2025
    /// revisions, as the server-to-client requests of its `roots*` tools need.
    modern: bool,
}

impl Fixture {
    pub fn new(name: &str, tools: &[&str]) -> Self {
        let tools = tools
            .iter()
            .map(|t| {
                serde_json::from_value(json!({
                    "name": t,
                    "description": format!("{t} of {name}"),
                    "inputSchema": {
                        "$schema": "https://json-schema.org/draft/2020-12/schema",
                        "type": "object",
                        "properties": {"id": {"type": "string"}},
                        "$defs": {"unused": {"type": "integer"}},
                        "additionalProperties": false
                    },
                    "annotations": if t.starts_with("write") {
                        json!({"readOnlyHint": false, "destructiveHint": true})
                    } else {
                        json!({"readOnlyHint": true})
                    }
                }))
                .expect("tool definition")
            })
            .collect();
        Self {
            name: name.into(),
            tools: Arc::new(tools),
            calls: Arc::new(AtomicUsize::new(0)),
            cancelled: Arc::new(AtomicUsize::new(0)),
            page: None,
            require: None,
            authorizations: Arc::default(),
            json: false,
            traceparent_headers: Arc::default(),
            traceparent_metas: Arc::default(),
            roots: Arc::default(),
            watched: None,
            subscriptions: Arc::default(),
            modern: false,
        }
    }

    /// Speaks the 2026-07-28 revision too (see the field).
    pub fn modern(mut self) -> Self {
        self.modern = true;
        self
    }

    /// Declares `resources` with `subscribe` and lists `uri`; any URI may be subscribed
    /// to (listed or not), and a call of a `touch*` tool announces
    /// `notifications/resources/updated` for `arguments.uri` to its subscribers.
    pub fn watching(mut self, uri: &str) -> Self {
        self.watched = Some(uri.into());
        self
    }

    /// The URIs subscribed to upstream now.
    pub fn subscribed(&self) -> Vec<String> {
        let subs = self.subscriptions.lock().expect("lock");
        subs.iter().map(|(u, _)| u.clone()).collect()
    }

    /// Gives `tool` this description instead of the default one.
    pub fn describing(mut self, tool: &str, description: &str) -> Self {
        for t in Arc::make_mut(&mut self.tools) {
            if t.name == tool {
                t.description = Some(description.to_string().into());
            }
        }
        self
    }

    /// Gives `tool` this input schema instead of the default one.
    pub fn with_schema(mut self, tool: &str, schema: Value) -> Self {
        for t in Arc::make_mut(&mut self.tools) {
            if t.name == tool {
                t.input_schema = Arc::new(schema.as_object().cloned().expect("an object schema"));
            }
        }
        self
    }

    /// Sessionless, answering each call with a JSON body (not an SSE stream).
    pub fn json(mut self) -> Self {
        self.json = true;
        self
    }

    /// Refuses (401) every HTTP request without `header: value`, like a backend that
    /// has credentials of its own.
    pub fn requiring(mut self, header: &'static str, value: &str) -> Self {
        self.require = Some((header, value.into()));
        self
    }

    /// Lists its tools `size` at a time, like a server with a long list.
    pub fn paged(mut self, size: usize) -> Self {
        self.page = Some(size);
        self
    }

    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let router = self.router(shutdown.clone());
        service_kit::serve::serve(listener, router, shutdown).await?;
        Ok(())
    }

    /// The fixture's HTTP surface (`/mcp`), to serve however a test likes (over TLS).
    pub fn router(self, shutdown: CancellationToken) -> axum::Router {
        let mut config = service_kit::mcp::server_config(&[], shutdown);
        if self.json {
            config.legacy_session_mode = false;
            config.json_response = true;
        }
        let (require, seen) = (self.require.clone(), Arc::clone(&self.authorizations));
        let traced = Arc::clone(&self.traceparent_headers);
        let service = StreamableHttpService::new(
            move || Ok(self.clone()),
            Arc::new(LocalSessionManager::default()),
            config,
        );
        axum::Router::new()
            .nest_service("/mcp", service)
            .layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    let header = |name: &str| {
                        request
                            .headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string()
                    };
                    seen.lock().expect("lock").push(header("authorization"));
                    let traceparent = header("traceparent");
                    if !traceparent.is_empty() {
                        traced.lock().expect("lock").push(traceparent);
                    }
                    let allowed = require
                        .as_ref()
                        .is_none_or(|(name, value)| header(name) == **value);
                    async move {
                        if allowed {
                            next.run(request).await
                        } else {
                            use axum::response::IntoResponse;
                            (
                                axum::http::StatusCode::UNAUTHORIZED,
                                "fixture: credential required",
                            )
                                .into_response()
                        }
                    }
                },
            ))
    }
}

impl ServerHandler for Fixture {
    fn supported_protocol_versions(
        &self,
    ) -> std::borrow::Cow<'static, [rmcp::model::ProtocolVersion]> {
        if self.modern {
            std::borrow::Cow::Borrowed(rmcp::model::ProtocolVersion::KNOWN_VERSIONS)
        } else {
            std::borrow::Cow::Borrowed(rmcp::model::ProtocolVersion::known_up_to(
                &rmcp::model::ProtocolVersion::V_2025_11_25,
            ))
        }
    }

    fn get_info(&self) -> ServerConfig {
        let mut capabilities = ServerCapabilities::builder().enable_tools().build();
        if self.watched.is_some() {
            let mut resources = rmcp::model::ResourcesCapability::default();
            resources.subscribe = Some(true);
            capabilities.resources = Some(resources);
        }
        InitializeResult::new(capabilities)
            .with_server_info(Implementation::new(self.name.to_string(), "0.0.1"))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourcesResult, ErrorData> {
        let resources = self
            .watched
            .iter()
            .map(|uri| {
                serde_json::from_value(json!({"uri": &**uri, "name": "watched"})).expect("resource")
            })
            .collect();
        Ok(rmcp::model::ListResourcesResult::with_all_items(resources))
    }

    #[allow(deprecated)] // resources/subscribe is the 2025 revision's, which this speaks
    async fn subscribe(
        &self,
        request: rmcp::model::SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.subscriptions
            .lock()
            .expect("lock")
            .push((request.uri, context.peer));
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: rmcp::model::UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let mut subs = self.subscriptions.lock().expect("lock");
        if let Some(at) = subs.iter().position(|(u, _)| *u == request.uri) {
            subs.remove(at);
        }
        Ok(())
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let Some(size) = self.page else {
            return Ok(ListToolsResult::with_all_items(self.tools.to_vec()));
        };
        let start: usize = request
            .and_then(|r| r.cursor)
            .map(|c| {
                c.parse()
                    .map_err(|_| ErrorData::invalid_params("bad cursor", None))
            })
            .transpose()?
            .unwrap_or(0);
        let end = (start + size).min(self.tools.len());
        let mut result = ListToolsResult::with_all_items(self.tools[start.min(end)..end].to_vec());
        result.next_cursor = (end < self.tools.len()).then(|| end.to_string());
        Ok(result)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let traceparent = request
            .meta
            .as_ref()
            .and_then(|m| m.get_traceparent())
            .or_else(|| context.meta.get_traceparent());
        if let Some(t) = traceparent {
            self.traceparent_metas
                .lock()
                .expect("lock")
                .push(t.to_string());
        }
        // The fixture's deliberate delays (`hang*`, `slow*`), the behaviour under test.
        if request.name.starts_with("hang") {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                _ = context.ct.cancelled() => {
                    self.cancelled.fetch_add(1, Ordering::SeqCst);
                    return Err(ErrorData::internal_error("cancelled", None));
                }
            }
        }
        if request.name.starts_with("slow") {
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
        if request.name.starts_with("roots") {
            return self.roots_of_client(&request, &context).await;
        }
        if request.name.starts_with("pending") {
            // Asks, then waits (whatever the answer) until the call is cancelled.
            #[allow(deprecated)] // roots/list is deprecated by SEP-2577 but still spoken
            let ask = context.peer.list_roots();
            tokio::select! {
                _ = async {
                    let _ = ask.await;
                    std::future::pending::<()>().await
                } => {}
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                _ = context.ct.cancelled() => {
                    self.cancelled.fetch_add(1, Ordering::SeqCst);
                    return Err(ErrorData::internal_error("cancelled", None));
                }
            }
        }
        if request.name.starts_with("touch") {
            let uri = request
                .arguments
                .as_ref()
                .and_then(|a| a.get("uri"))
                .and_then(|u| u.as_str())
                .unwrap_or_default()
                .to_string();
            let peers: Vec<rmcp::Peer<RoleServer>> = {
                let subs = self.subscriptions.lock().expect("lock");
                subs.iter()
                    .filter(|(u, _)| *u == uri)
                    .map(|(_, p)| p.clone())
                    .collect()
            };
            for peer in &peers {
                let _ = peer
                    .notify_resource_updated(rmcp::model::ResourceUpdatedNotificationParam::new(
                        uri.clone(),
                    ))
                    .await;
            }
            return Ok(CallToolResult::structured(json!({"told": peers.len()})).into());
        }
        if request.name.starts_with("fail") {
            return Ok(
                CallToolResult::error(vec![rmcp::model::ContentBlock::text(format!(
                    "{} failed on purpose",
                    request.name
                ))])
                .into(),
            );
        }
        if request.name.starts_with("big") {
            let size = request
                .arguments
                .as_ref()
                .and_then(|a| a.get("size"))
                .and_then(|s| s.as_u64())
                .unwrap_or(65536);
            return Ok(
                CallToolResult::success(vec![rmcp::model::ContentBlock::text(
                    "x".repeat(size as usize),
                )])
                .into(),
            );
        }
        if !self.tools.iter().any(|t| t.name == request.name) {
            return Err(ErrorData::invalid_params(
                format!("fixture {} has no tool {}", self.name, request.name),
                None,
            ));
        }
        Ok(CallToolResult::structured(json!({
            "server": &*self.name,
            "tool": request.name,
            "arguments": request.arguments,
        }))
        .into())
    }
}

impl Fixture {
    /// A `roots*` call: the client's roots, asked for on the call's own stream.
    #[allow(deprecated)] // roots/list is deprecated by SEP-2577 but still spoken
    async fn roots_of_client(
        &self,
        request: &CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let declared = context
            .peer
            .peer_info()
            .is_some_and(|info| info.capabilities.roots.is_some());
        if !declared {
            return Ok(CallToolResult::error(vec![rmcp::model::ContentBlock::text(
                "the client did not declare the roots capability",
            )])
            .into());
        }
        let listed = context
            .peer
            .list_roots()
            .await
            .map_err(|e| ErrorData::internal_error(format!("roots/list failed: {e}"), None))?;
        let uris: Vec<String> = listed.roots.iter().map(|r| r.uri.to_string()).collect();
        self.roots.lock().expect("lock").push(uris.clone());
        Ok(CallToolResult::structured(json!({
            "server": &*self.name,
            "tool": request.name,
            "roots": uris,
        }))
        .into())
    }
}
