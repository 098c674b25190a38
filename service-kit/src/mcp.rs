//! What the demo services' MCP servers share: their HTTP surface (`/mcp` behind a
//! Bearer token and an open `GET /health`), the rmcp streamable-HTTP server
//! configuration (with its `Host` allow-list), the shape of a tool definition, and the
//! small shapes of their resources and completions (a JSON resource, resource-not-found,
//! completion values matched by prefix).

use std::{convert::Infallible, sync::Arc};

use axum::{Json, Router, extract::Request, middleware, response::IntoResponse, routing::get};
use rmcp::{
    ErrorData, ServerHandler,
    model::{
        CompleteResult, CompletionInfo, JsonObject, ReadResourceResult, ResourceContents, Tool,
    },
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::auth::{BearerAuth, require_bearer};

/// Host names accepted in the `Host` header by default (DNS-rebinding protection):
/// loopback only. Deployments behind other names add theirs (`--allowed-hosts`).
pub const LOOPBACK_HOSTS: &[&str] = &["localhost", "127.0.0.1", "::1", "[::1]"];

/// Session-mode server config with the given extra allowed hosts. An entry `*`
/// disables the Host check altogether (for deployments that do it at their edge).
pub fn server_config(
    allowed_hosts: &[String],
    shutdown: CancellationToken,
) -> StreamableHttpServerConfig {
    let config = StreamableHttpServerConfig::default().with_cancellation_token(shutdown);
    if allowed_hosts.iter().any(|h| h == "*") {
        return config.disable_allowed_hosts();
    }
    let hosts = LOOPBACK_HOSTS
        .iter()
        .map(|h| h.to_string())
        .chain(allowed_hosts.iter().cloned());
    config.with_allowed_hosts(hosts)
}

/// A demo service's HTTP surface: its MCP server at `/mcp` behind `auth` (one
/// `make_server()` per rmcp session, sessions ending when `shutdown` is cancelled, `Host`
/// checked as [`server_config`] says) and `GET /health`, open to anyone, answering
/// `health()` as JSON.
pub fn service_router<S>(
    make_server: impl Fn() -> S + Send + Sync + 'static,
    health: fn() -> Value,
    allowed_hosts: &[String],
    auth: BearerAuth,
    shutdown: CancellationToken,
) -> Router
where
    S: ServerHandler + Send + 'static,
{
    let mcp = StreamableHttpService::new(
        move || Ok(make_server()),
        Arc::new(LocalSessionManager::default()),
        server_config(allowed_hosts, shutdown),
    );
    protected_mcp(mcp, auth).route("/health", get(move || async move { Json(health()) }))
}

/// `/mcp` (every method, and any path below it) served by `mcp` once [`require_bearer`]
/// has accepted the request's token; nothing else. Routes the caller adds to the
/// returned router are not behind the check.
pub fn protected_mcp<M>(mcp: M, auth: BearerAuth) -> Router
where
    M: Service<Request, Error = Infallible> + Clone + Send + Sync + 'static,
    M::Response: IntoResponse,
    M::Future: Send + 'static,
{
    Router::new()
        .nest_service("/mcp", mcp)
        // A route layer: it wraps the routes above only, and an unknown path stays 404.
        .route_layer(middleware::from_fn_with_state(auth, require_bearer))
}

/// The MCP URL of a server listening on `addr`, as this machine reaches it: an
/// unspecified bind address (`0.0.0.0`, `::`) becomes loopback (a gateway refuses to
/// connect to an unspecified address).
pub fn local_mcp_url(addr: std::net::SocketAddr) -> String {
    let mut reachable = addr;
    if reachable.ip().is_unspecified() {
        reachable.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{reachable}/mcp")
}

/// The `--allowed-hosts` values as given on the command line, trimmed, blanks dropped.
pub fn allowed_hosts(raw: Vec<String>) -> Vec<String> {
    raw.into_iter()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .collect()
}

/// A tool definition with a title and input and output JSON Schemas; annotations are
/// the caller's to add.
///
/// # Panics
/// When a schema is not a JSON object: the tool tables are static, so that is a bug.
pub fn tool(
    name: &'static str,
    title: &str,
    description: &'static str,
    input: Value,
    output: Value,
) -> Tool {
    Tool::new(name, description, schema_object(input))
        .with_title(title)
        .with_raw_output_schema(schema_object(output))
}

/// The MIME type of the demo services' resources.
pub const JSON_MIME: &str = "application/json";

/// A `resources/read` result: `value` as pretty-printed JSON text at `uri`.
pub fn json_resource(uri: &str, value: &Value) -> ReadResourceResult {
    ReadResourceResult::new(vec![json_contents(uri, value)])
}

/// `value` as the JSON text contents of `uri` (also for a prompt's embedded resource).
pub fn json_contents(uri: &str, value: &Value) -> ResourceContents {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    ResourceContents::text(text, uri).with_mime_type(JSON_MIME)
}

/// The JSON-RPC error for a resource that does not exist (-32002, as the MCP
/// specification says; rmcp turns it into -32602 for 2026-07-28 peers), saying `why`.
pub fn resource_not_found(uri: &str, why: &str) -> ErrorData {
    ErrorData::resource_not_found(
        format!("resource not found: {uri}: {why}"),
        Some(serde_json::json!({ "uri": uri })),
    )
}

/// A `completion/complete` result: the `candidates` that start with `prefix` (ASCII
/// case-insensitively), in the order given, at most the 100 the specification allows,
/// with the total count and whether more matched.
pub fn completion<'a>(
    candidates: impl IntoIterator<Item = &'a str>,
    prefix: &str,
) -> CompleteResult {
    let prefix = prefix.trim().to_ascii_lowercase();
    let mut matches = candidates
        .into_iter()
        .filter(|c| c.to_ascii_lowercase().starts_with(&prefix));
    let values: Vec<String> = matches
        .by_ref()
        .take(CompletionInfo::MAX_VALUES)
        .map(str::to_string)
        .collect();
    let more = matches.count();
    let total = u32::try_from(values.len() + more).unwrap_or(u32::MAX);
    // At most MAX_VALUES values: the constructor cannot refuse them.
    let info = CompletionInfo::with_pagination(values, Some(total), more > 0).unwrap_or_default();
    CompleteResult::new(info)
}

fn schema_object(schema: Value) -> Arc<JsonObject> {
    match schema {
        Value::Object(map) => Arc::new(map),
        other => panic!("a tool schema must be a JSON object, got {other}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn completions_match_by_prefix_and_stop_at_one_hundred() {
        let ids: Vec<String> = (1..=500).map(|n| n.to_string()).collect();
        let done = super::completion(ids.iter().map(String::as_str), "4");
        let c = &done.completion;
        // 4, 40-49, 400-499.
        assert_eq!(c.total, Some(111));
        assert_eq!(c.values.len(), 100);
        assert_eq!(c.has_more, Some(true));
        assert_eq!(c.values[..3], ["4", "40", "41"]);
        let few = super::completion(["Books", "Beauty", "Grocery"], "b");
        assert_eq!(few.completion.values, ["Books", "Beauty"]);
        assert_eq!(few.completion.has_more, Some(false));
        assert!(
            super::completion(["Books"], "x")
                .completion
                .values
                .is_empty()
        );
    }

    #[test]
    fn unspecified_addresses_become_loopback() {
        let url = |a: &str| super::local_mcp_url(a.parse().expect("addr"));
        assert_eq!(url("0.0.0.0:3002"), "http://127.0.0.1:3002/mcp");
        assert_eq!(url("[::]:3002"), "http://[::1]:3002/mcp");
        assert_eq!(url("10.0.0.5:3002"), "http://10.0.0.5:3002/mcp");
    }
}
