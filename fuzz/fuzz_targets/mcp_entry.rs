//! The gateway's HTTP entry, in process: a whole router (auth, body limit, `/mcp` with
//! its envelope probe, pass-through path and rmcp's typed path) answering one request
//! per input. The first byte picks headers (session id, protocol version, Accept,
//! method, token); the rest is the body. Every request must get an answer: a panic
//! anywhere, in a spawned task too, aborts (libFuzzer's panic hook).

#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct Harness {
    runtime: tokio::runtime::Runtime,
    router: gateway::http::App,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let store = std::env::temp_dir().join(format!("gateway-fuzz-{}.db", std::process::id()));
        let config = gateway::Config {
            store,
            max_body_bytes: 64 * 1024,
            ..gateway::Config::default()
        };
        let router = runtime.block_on(async {
            // Never cancelled: the harness lives as long as the process.
            let shutdown = tokio_util::sync::CancellationToken::new();
            let registry = gateway::registry::Registry::start(
                &config,
                config.listen.clone(),
                shutdown.clone(),
            )
            .await
            .expect("registry");
            let endpoint =
                gateway::mcp::McpEndpoint::new(std::sync::Arc::clone(&registry), &config, shutdown);
            gateway::http::app(gateway::http::router(registry, endpoint, &config), &config)
        });
        Harness { runtime, router }
    })
}

const METHODS: [&str; 4] = ["POST", "GET", "DELETE", "PUT"];
const VERSIONS: [&str; 4] = ["2025-06-18", "2025-11-25", "2026-07-28", "1999-01-01"];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let h = harness();
    let mut request = axum::http::Request::builder()
        .method(METHODS[usize::from(flags & 3)])
        .uri("/mcp")
        .header("host", "127.0.0.1:3001")
        .header("content-type", "application/json");
    if flags & 4 == 0 {
        request = request.header("authorization", "Bearer mcp-token-123");
    }
    if flags & 8 != 0 {
        request = request.header("accept", "application/json, text/event-stream");
    }
    if flags & 16 != 0 {
        request = request.header("mcp-session-id", "fuzz-session");
    }
    if flags & 32 != 0 {
        request = request.header("mcp-protocol-version", VERSIONS[usize::from(flags >> 6)]);
    }
    let request = request.body(Body::from(body.to_vec())).expect("request");
    h.runtime.block_on(async {
        let response = h.router.clone().oneshot(request).await.expect("infallible");
        // Read what is there without waiting on an open SSE stream.
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            response.into_body().collect(),
        )
        .await;
    });
});
