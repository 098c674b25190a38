//! Fail-closed authorization, as an invariant: whatever body and headers a credential
//! without the `call` scope sends to `/mcp` (sessionless, or in a session it opened),
//! no `tools/call` reaches the backend. The harness runs a whole gateway in process with
//! one upstream on loopback that counts the calls it receives; any call counted aborts
//! the run (libFuzzer reports it as a crash).
//!
//! Input: the first byte picks the credential (list-only, register-only, operate-only),
//! the session (the list-only credential's own, a made-up one, none), the protocol
//! version header and the media-type headers; the rest is the body.

#![no_main]

use std::sync::{
    OnceLock,
    atomic::{AtomicUsize, Ordering},
};

use axum::{Router, body::Body, routing::post};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

/// `tools/call` requests the upstream received.
static CALLS: AtomicUsize = AtomicUsize::new(0);

struct Harness {
    runtime: tokio::runtime::Runtime,
    router: gateway::http::App,
    session: String,
}

const TOKENS: [&str; 3] = [
    "lister-token-0123456789",
    "registrar-token-0123456789",
    "operator-token-0123456789",
];

/// The upstream: just enough MCP to be registered, and a counter of calls.
async fn upstream(body: axum::body::Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    let message: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = message["id"].clone();
    let result = match message["method"].as_str().unwrap_or_default() {
        "initialize" => serde_json::json!({
            "protocolVersion": message["params"]["protocolVersion"].as_str().unwrap_or("2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "counter", "version": "0"}
        }),
        "tools/list" => serde_json::json!({"tools": [
            {"name": "writeOrder", "inputSchema": {"type": "object"}}
        ]}),
        "tools/call" => {
            CALLS.fetch_add(1, Ordering::SeqCst);
            serde_json::json!({"content": []})
        }
        "ping" => serde_json::json!({}),
        m if m.starts_with("notifications/") || m.is_empty() => {
            return axum::http::StatusCode::ACCEPTED.into_response();
        }
        _ => {
            return axum::Json(serde_json::json!({
                "jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "no"}
            }))
            .into_response();
        }
    };
    let mut response =
        axum::Json(serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result}))
            .into_response();
    response.headers_mut().insert(
        "mcp-session-id",
        axum::http::HeaderValue::from_static("counter-session"),
    );
    response
}

fn request(token: &str, session: Option<&str>, body: Vec<u8>) -> axum::http::Request<Body> {
    let mut r = axum::http::Request::post("/mcp")
        .header("host", "127.0.0.1:3001")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .header("authorization", format!("Bearer {token}"));
    if let Some(s) = session {
        r = r.header("mcp-session-id", s);
    }
    r.body(Body::from(body)).expect("request")
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (router, session) = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
            tokio::spawn(async move {
                let app = Router::new().route("/mcp", post(upstream));
                let _ = axum::serve(listener, app).await;
            });
            let credential = |name: &str, scope: &str| gateway::config::Credential {
                name: name.into(),
                token: format!("{name}-token-0123456789"),
                scopes: vec![scope.into()],
                services: None,
                tools: None,
                virtual_servers: None,
            };
            let store = std::env::temp_dir().join(format!("gateway-fuzz-scope-{}.db", std::process::id()));
            let config = gateway::Config {
                store,
                max_body_bytes: 64 * 1024,
                credentials: vec![
                    credential("lister", "list"),
                    credential("registrar", "register"),
                    credential("operator", "operate"),
                ],
                upstreams: vec![gateway::config::UpstreamSpec {
                    name: "inventory".into(),
                    url,
                    ..Default::default()
                }],
                // Every attempt is looked at (no throttling of the fuzzer's 401s).
                auth_failures_per_second: 1_000_000,
                ..gateway::Config::default()
            };
            let shutdown = tokio_util::sync::CancellationToken::new();
            let registry =
                gateway::registry::Registry::start(&config, config.listen.clone(), shutdown.clone())
                    .await
                    .expect("registry");
            let endpoint = gateway::mcp::McpEndpoint::new(
                std::sync::Arc::clone(&registry),
                &config,
                shutdown,
            );
            let router = gateway::http::app(
                gateway::http::router(std::sync::Arc::clone(&registry), endpoint, &config),
                &config,
            );
            // Wait for the upstream's tool in the catalog (the target must be routable).
            for _ in 0..500 {
                if !registry.catalog().tools().is_empty() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            assert!(!registry.catalog().tools().is_empty(), "the upstream never connected");
            // The list-only credential's own session.
            let init = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"fuzz","version":"1"}}}"#;
            let response = router
                .clone()
                .oneshot(request(TOKENS[0], None, init.to_vec()))
                .await
                .expect("infallible");
            let session = response.headers()["mcp-session-id"]
                .to_str()
                .expect("ascii")
                .to_string();
            let initialized = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
            let _ = router
                .clone()
                .oneshot(request(TOKENS[0], Some(&session), initialized.to_vec()))
                .await;
            // The harness can tell a call: the right credential's call is counted.
            let call = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"writeOrder","arguments":{}}}"#;
            let _ = router
                .clone()
                .oneshot(request("mcp-token-123", None, call.to_vec()))
                .await
                .expect("infallible")
                .into_body()
                .collect()
                .await;
            assert_eq!(CALLS.swap(0, Ordering::SeqCst), 1, "the harness cannot see calls");
            (router, session)
        });
        Harness {
            runtime,
            router,
            session,
        }
    })
}

const VERSIONS: [&str; 4] = ["2025-06-18", "2025-11-25", "2026-07-28", "bogus"];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let h = harness();
    let token = TOKENS[usize::from(flags & 3) % 3];
    let session = match (flags >> 2) & 3 {
        0 | 1 => Some(h.session.as_str()),
        2 => Some("made-up-session"),
        _ => None,
    };
    let mut request = request(token, session, body.to_vec());
    let headers = request.headers_mut();
    headers.insert(
        "mcp-protocol-version",
        axum::http::HeaderValue::from_static(VERSIONS[usize::from((flags >> 4) & 3)]),
    );
    if flags & 64 != 0 {
        headers.remove("accept");
    }
    if flags & 128 != 0 {
        headers.remove("content-type");
    }
    h.runtime.block_on(async {
        let response = h.router.clone().oneshot(request).await.expect("infallible");
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            response.into_body().collect(),
        )
        .await;
    });
    assert_eq!(
        CALLS.load(Ordering::SeqCst),
        0,
        "a credential without `call` reached a tool; input: {:?}",
        String::from_utf8_lossy(data)
    );
});
