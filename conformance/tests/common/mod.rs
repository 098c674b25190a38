//! What the conformance crate's integration tests share: a router (the fixture, say) on
//! an ephemeral loopback port, and a 2026-07-28 request to it.

#![allow(dead_code)] // each test crate uses its own part

use std::net::SocketAddr;

use conformance::fixture::{self, Config, Revision};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The fixture serving `revision` on an ephemeral loopback port until `shutdown`.
pub async fn start(revision: Revision, shutdown: &CancellationToken) -> SocketAddr {
    service_kit::client::ensure_tls_provider();
    let config = Config {
        revision,
        ..Config::default()
    };
    let router = fixture::router(&config, shutdown.clone()).expect("router");
    serve(router, shutdown).await
}

/// `router` served on an ephemeral loopback port until `shutdown`.
pub async fn serve(router: axum::Router, shutdown: &CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(service_kit::serve::serve(
        listener,
        router,
        shutdown.clone(),
    ));
    addr
}

/// A 2026-07-28 `method` request (stateless: the lifecycle in `_meta`, the SEP-2243
/// headers, `Mcp-Name` from the params' `name` or `taskId`) declaring `capabilities`:
/// the HTTP status and the JSON-RPC message answering it.
pub async fn modern(
    addr: SocketAddr,
    method: &str,
    mut params: Value,
    capabilities: Value,
) -> (u16, Value) {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": capabilities,
        "io.modelcontextprotocol/clientInfo": {"name": "conformance-test", "version": "1"}
    });
    let mut request = reqwest::Client::new()
        .post(format!("http://{addr}/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method);
    let name = params
        .get("name")
        .or_else(|| params.get("taskId"))
        .and_then(Value::as_str);
    if let Some(name) = name {
        request = request.header("mcp-name", name);
    }
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let response = request.body(body.to_string()).send().await.expect("send");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    // A JSON body, or the SSE event carrying the response.
    let message = serde_json::from_str(&text).ok().or_else(|| {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .find(|m| m.get("id") == Some(&json!(1)))
    });
    (
        status,
        message.unwrap_or_else(|| panic!("no response in {text:?}")),
    )
}
