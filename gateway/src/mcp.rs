//! The gateway's MCP server side: a [`ServerHandler`] over the registry's catalog, and
//! the `/mcp` entry point that serves both kinds of client on one path:
//!
//! - MCP clients with sessions (`initialize`, then `Mcp-Session-Id`), SSE streams, and
//!   the stateless 2026-07-28 revision: rmcp's streamable-HTTP service in session mode.
//! - Sessionless JSON-RPC posts (curl): a POST without `Mcp-Session-Id` that is not an
//!   `initialize` goes to a second rmcp service in stateless JSON mode, after an absent
//!   `Accept` or `Content-Type` header is filled in, so
//!   `curl -d '{"jsonrpc":"2.0","id":1,"method":"tools/list"}'` gets plain JSON back.

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
        CallToolRequestParams, CallToolResponse, ErrorCode, Implementation, InitializeResult,
        ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    },
    service::{NotificationContext, RequestContext},
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{catalog::Lookup, registry::Registry, upstream::CallError};

/// JSON-RPC code for "the service behind this tool is unavailable" (implementation range).
pub const UPSTREAM_UNAVAILABLE: i32 = -32000;
/// JSON-RPC code for "the service behind this tool did not answer in time".
pub const UPSTREAM_TIMEOUT: i32 = -32001;
/// JSON-RPC code for "the service's circuit breaker is open" (-32002 is taken by the
/// specification for "resource not found").
pub const CIRCUIT_OPEN: i32 = -32003;

/// One per session (or per stateless request): a cheap handle on the shared registry.
#[derive(Clone)]
pub struct GatewayHandler {
    registry: Arc<Registry>,
    page_size: usize,
}

impl GatewayHandler {
    pub fn new(registry: Arc<Registry>, page_size: usize) -> Self {
        Self {
            registry,
            page_size: page_size.max(1),
        }
    }
}

/// One page of a merged list. Cursors are opaque to clients (`o<offset>`); the list is
/// the current snapshot, so a page boundary never repeats or skips an entry unless the
/// table changed in between (clients are told with `list_changed`).
fn page<'a, T>(
    items: &'a [T],
    cursor: Option<&str>,
    size: usize,
) -> Result<(&'a [T], Option<String>), ErrorData> {
    let start = match cursor {
        None => 0,
        Some(c) => c
            .strip_prefix('o')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n <= items.len())
            .ok_or_else(|| ErrorData::invalid_params(format!("invalid cursor: {c:?}"), None))?,
    };
    let end = (start + size).min(items.len());
    let next = (end < items.len()).then(|| format!("o{end}"));
    Ok((&items[start..end], next))
}

impl ServerHandler for GatewayHandler {
    fn get_info(&self) -> ServerConfig {
        InitializeResult::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new(
            "mcp-gateway",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(
            "MCP federation gateway: the tools of every registered service in one table. \
             A tool name offered by several services is qualified as <service>__<tool>.",
        )
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let catalog = self.registry.catalog();
        let (tools, next) = page(
            catalog.tools(),
            request.and_then(|r| r.cursor).as_deref(),
            self.page_size,
        )?;
        let mut result = ListToolsResult::with_all_items(tools.to_vec());
        result.next_cursor = next;
        Ok(result)
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.registry.catalog().tool(name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let (service, original, retry_safe) = {
            let catalog = self.registry.catalog();
            match catalog.lookup(&request.name) {
                Lookup::Found(route) => (
                    Arc::clone(&route.service),
                    Arc::clone(&route.original),
                    route.retry_safe,
                ),
                Lookup::Ambiguous(choices) => {
                    return Err(ErrorData::invalid_params(
                        format!(
                            "tool \"{}\" is offered by several services; call one of: {}",
                            request.name,
                            choices.join(", ")
                        ),
                        Some(json!({ "tool": request.name, "candidates": choices })),
                    ));
                }
                Lookup::Unknown => {
                    return Err(ErrorData::invalid_params(
                        format!("unknown tool: {}", request.name),
                        Some(json!({ "tool": request.name })),
                    ));
                }
            }
        };
        // A client with an MCP session stays on one instance of each service.
        let affinity = context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.headers.get("mcp-session-id"))
            .and_then(|v| v.to_str().ok());
        let _in_flight = self.registry.call_started();
        let mut forwarded = request;
        forwarded.name = original.to_string().into();
        service
            .call_tool(forwarded, affinity, retry_safe)
            .await
            .map_err(|e| match e {
                CallError::Upstream(e) => e,
                CallError::Unavailable { ref service, .. } => ErrorData::new(
                    ErrorCode(UPSTREAM_UNAVAILABLE),
                    e.to_string(),
                    Some(json!({ "service": service, "reason": "unavailable" })),
                ),
                CallError::Timeout { ref service, ms } => ErrorData::new(
                    ErrorCode(UPSTREAM_TIMEOUT),
                    e.to_string(),
                    Some(json!({ "service": service, "reason": "timeout", "timeoutMs": ms })),
                ),
                CallError::CircuitOpen {
                    ref service,
                    retry_in_ms,
                } => ErrorData::new(
                    ErrorCode(CIRCUIT_OPEN),
                    e.to_string(),
                    Some(json!({ "service": service, "reason": "circuit_open", "retryInMs": retry_in_ms })),
                ),
            })
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        self.registry.add_client(context.peer);
    }
}

/// The two rmcp services behind `/mcp`.
#[derive(Clone)]
pub struct McpEndpoint {
    sessions: Arc<StreamableHttpService<GatewayHandler, LocalSessionManager>>,
    sessionless: Arc<StreamableHttpService<GatewayHandler, LocalSessionManager>>,
    max_body_bytes: usize,
}

impl McpEndpoint {
    pub fn new(
        registry: Arc<Registry>,
        config: &crate::Config,
        shutdown: CancellationToken,
    ) -> Self {
        let (max_body_bytes, page_size) = (config.max_body_bytes, config.list_page_size);
        let base = origin_policy(
            host_policy(
                StreamableHttpServerConfig::default()
                    .with_cancellation_token(shutdown)
                    .with_max_request_body_bytes(max_body_bytes),
                &config.allowed_hosts,
            ),
            &config.allowed_origins,
        );
        let handler = GatewayHandler::new(registry, page_size);
        let factory = {
            let h = handler.clone();
            move || Ok(h.clone())
        };
        let sessions = StreamableHttpService::new(
            factory.clone(),
            Arc::new(LocalSessionManager::default()),
            base.clone(),
        );
        let sessionless = StreamableHttpService::new(
            factory,
            Arc::new(LocalSessionManager::default()),
            base.with_legacy_session_mode(false)
                .with_json_response(true)
                .with_sse_retry(None),
        );
        Self {
            sessions: Arc::new(sessions),
            sessionless: Arc::new(sessionless),
            max_body_bytes,
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

/// Origins of pages served from this machine, any port.
const LOOPBACK_ORIGINS: &[&str] = &[
    "http://localhost:*",
    "http://127.0.0.1:*",
    "http://[::1]:*",
    "https://localhost:*",
    "https://127.0.0.1:*",
    "https://[::1]:*",
];

fn origin_policy(
    config: StreamableHttpServerConfig,
    allowed_origins: &[String],
) -> StreamableHttpServerConfig {
    if allowed_origins.iter().any(|o| o == "*") {
        return config.disable_allowed_origins();
    }
    let origins = LOOPBACK_ORIGINS
        .iter()
        .map(|o| o.to_string())
        .chain(allowed_origins.iter().cloned());
    config
        .with_allowed_origins(origins)
        .enforce_origin_validation()
}

/// `/mcp`, every method.
pub async fn entry(State(endpoint): State<McpEndpoint>, request: Request) -> Response {
    let sessionless_post =
        request.method() == Method::POST && !request.headers().contains_key("mcp-session-id");
    if !sessionless_post {
        return into_axum(endpoint.sessions.handle(request).await);
    }
    let (mut parts, body) = request.into_parts();
    let bytes = match to_bytes(body, endpoint.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(json!({
                    "jsonrpc": "2.0", "id": null,
                    "error": { "code": -32600, "message": format!(
                        "request body exceeds the limit of {} bytes", endpoint.max_body_bytes) }
                })),
            )
                .into_response();
        }
    };
    let method = match probe_method(&bytes) {
        Ok(m) => m,
        Err(why) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({
                    "jsonrpc": "2.0", "id": null,
                    "error": { "code": -32700, "message": why }
                })),
            )
                .into_response();
        }
    };
    if method.as_deref() == Some("initialize") {
        let request = Request::from_parts(parts, Body::from(bytes));
        return into_axum(endpoint.sessions.handle(request).await);
    }
    // A plain JSON-RPC post: answer in JSON whatever the client's tooling sent.
    let h = &mut parts.headers;
    let accept_ok = h
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json") && v.contains("text/event-stream"));
    if !accept_ok {
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
    }
    if !h.contains_key(header::CONTENT_TYPE) {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    let request = Request::from_parts(parts, Body::from(bytes));
    into_axum(endpoint.sessionless.handle(request).await)
}

/// The `method` of a JSON-RPC message, or a parse-error message for a body that is not
/// JSON at all. A JSON value of another shape is left for rmcp to judge.
fn probe_method(body: &[u8]) -> Result<Option<String>, String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        method: Option<String>,
    }
    match serde_json::from_slice::<Probe>(body) {
        Ok(p) => Ok(p.method),
        Err(e) if e.is_syntax() || e.is_eof() => Err(format!("parse error: {e}")),
        Err(_) => Ok(None),
    }
}

fn into_axum<B>(response: http::Response<B>) -> Response
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    response.map(Body::new)
}

#[cfg(test)]
mod tests {
    use super::page;

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
