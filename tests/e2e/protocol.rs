//! Protocol strictness on `/mcp`: Host and Origin checks, sessions, versions, methods,
//! malformed bodies.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

async fn post(gateway: &Running, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut rb = http()
        .post(gateway.mcp_url())
        .bearer_auth(TOKEN)
        .header("content-type", "application/json");
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let resp = rb.body(body.to_string()).send().await.expect("send");
    (resp.status().as_u16(), resp.text().await.expect("body"))
}

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_origin_are_checked_against_the_allow_lists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.allowed_hosts = vec!["gateway.internal".into()];
    config.allowed_origins = vec!["https://app.example.com".into()];
    let gw = start_gateway(config).await;
    let port = gw.addr.port().to_string();
    let cases: Vec<(Vec<(&str, String)>, u16)> = vec![
        (vec![("host", "evil.example.com".into())], 403),
        (vec![("host", format!("gateway.internal:{port}"))], 200),
        (vec![("origin", "http://evil.example.com".into())], 403),
        (vec![("origin", format!("http://localhost:{port}"))], 200),
        (vec![("origin", "https://app.example.com".into())], 200),
        (vec![], 200),
    ];
    for (headers, expected) in cases {
        let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body) = post(&gw, &hs, LIST).await;
        assert_eq!(status, expected, "{headers:?}: {body}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_versions_methods_and_bodies_get_the_specified_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start_gateway(gateway_config(&dir.path().join("gw.db"))).await;
    let sse = ("accept", "application/json, text/event-stream");
    // An unknown session is 404, on POST and GET.
    let (status, _) = post(&gw, &[sse, ("mcp-session-id", "no-such-session")], LIST).await;
    assert_eq!(status, 404);
    let r = http()
        .get(gw.mcp_url())
        .bearer_auth(TOKEN)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", "no-such-session")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 404);
    // An unsupported protocol version is 400.
    let (status, body) = post(&gw, &[("mcp-protocol-version", "1999-01-01")], LIST).await;
    assert_eq!(status, 400, "{body}");
    // Methods the endpoint does not serve are 405.
    for method in [reqwest::Method::PUT, reqwest::Method::PATCH] {
        let r = http()
            .request(method.clone(), gw.mcp_url())
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 405, "{method}");
    }
    // Malformed JSON is a JSON-RPC parse error, not a hang or a crash.
    let (status, body) = post(&gw, &[], r#"{"jsonrpc":"2.0","id":1,"method":"tools/li"#).await;
    assert_eq!(status, 400);
    let v: Value = serde_json::from_str(&body).expect("JSON error");
    assert_eq!(v["error"]["code"], -32700, "{v}");
    // A notification without a session is accepted with 202 and no body.
    let (status, body) = post(
        &gw,
        &[],
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    )
    .await;
    assert_eq!((status, body.as_str()), (202, ""));
    // A plain post with no Accept header gets plain JSON.
    let r = http()
        .post(gw.mcp_url())
        .bearer_auth(TOKEN)
        .json(&json!({"jsonrpc":"2.0","id":"x","method":"ping"}))
        .send()
        .await
        .expect("ping");
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["id"], "x");
    assert!(v["result"].is_object(), "{v}");
    // An oversized body is refused.
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"x","arguments":{{"pad":"{}"}}}}}}"#,
        "a".repeat(5 * 1024 * 1024)
    );
    let (status, _) = post(&gw, &[], &huge).await;
    assert_eq!(status, 413);
    gw.stop().await;
}

/// POSTs `body` with both Accept types; returns (status, session id, body text).
async fn post_mcp(
    gw: &Running,
    headers: &[(&str, &str)],
    body: serde_json::Value,
) -> (u16, Option<String>, String) {
    let mut rb = http()
        .post(gw.mcp_url())
        .bearer_auth(TOKEN)
        .header("accept", "application/json, text/event-stream")
        .json(&body);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let resp = rb.send().await.expect("send");
    let session = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (
        resp.status().as_u16(),
        session,
        resp.text().await.expect("body"),
    )
}

/// The JSON-RPC message in a JSON or SSE body (the last `data:` line that holds one).
fn message(body: &str) -> Value {
    if let Ok(v) = serde_json::from_str(body) {
        return v;
    }
    body.lines()
        .rev()
        .filter_map(|l| l.strip_prefix("data:"))
        .find_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .unwrap_or_else(|| panic!("no JSON-RPC message in {body}"))
}

fn initialize(version: &str) -> Value {
    json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion": version, "capabilities": {},
        "clientInfo": {"name": format!("client-{version}"), "version": "1"}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_priming_events_only_for_clients_at_2025_11_25_or_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start_gateway(gateway_config(&dir.path().join("gw.db"))).await;
    for (version, primed) in [
        ("2025-03-26", false),
        ("2025-06-18", false),
        ("2025-11-25", true),
    ] {
        let (status, session, body) = post_mcp(&gw, &[], initialize(version)).await;
        assert_eq!(status, 200, "{version}: {body}");
        assert!(session.is_some(), "{version}: a session id");
        assert_eq!(body.contains("retry:"), primed, "{version}: {body}");
        assert_eq!(
            message(&body)["result"]["protocolVersion"],
            version,
            "{body}"
        );
        // Later requests of that session stay on its own kind of stream.
        let session = session.expect("session");
        let (status, _, body) = post_mcp(
            &gw,
            &[
                ("mcp-session-id", &session),
                ("mcp-protocol-version", version),
            ],
            json!({"jsonrpc":"2.0","id":2,"method":"ping"}),
        )
        .await;
        assert_eq!(status, 200, "{version}: {body}");
        assert_eq!(body.contains("retry:"), primed, "{version}: {body}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2026_07_28_client_and_a_2025_06_18_client_use_one_gateway_together() {
    let stack = Stack::start().await;
    let gw = &stack.gateway;
    // The session-era client: initialize, initialized, then calls in its session.
    let (_, session, body) = post_mcp(gw, &[], initialize("2025-06-18")).await;
    let session = session.unwrap_or_else(|| panic!("no session: {body}"));
    let old = [
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", "2025-06-18"),
    ];
    let (status, _, _) = post_mcp(
        gw,
        &old,
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
    )
    .await;
    assert_eq!(status, 202);
    // The stateless client: discovery, then self-contained requests with _meta.
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "stateless", "version": "1"}
    });
    let new = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "server/discover"),
    ];
    let (status, session_header, body) = post_mcp(
        gw,
        &new,
        json!({"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta": meta}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(session_header.is_none(), "2026-07-28 has no sessions");
    let discovered = message(&body);
    assert!(
        discovered.to_string().contains("2026-07-28"),
        "discovery names the version: {discovered}"
    );
    // Both call tools at the same time.
    let new_call = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "getUserById"),
    ];
    let (a, b) = tokio::join!(
        post_mcp(
            gw,
            &old,
            json!({"jsonrpc":"2.0","id":3,"method":"tools/call",
                   "params":{"name":"getProductById","arguments":{"id":"123"}}}),
        ),
        post_mcp(
            gw,
            &new_call,
            json!({"jsonrpc":"2.0","id":4,"method":"tools/call",
                   "params":{"name":"getUserById","arguments":{"id":"456"},"_meta": meta}}),
        ),
    );
    assert_eq!(
        message(&a.2)["result"]["structuredContent"]["id"],
        "123",
        "{}",
        a.2
    );
    assert_eq!(
        message(&b.2)["result"]["structuredContent"]["id"],
        "456",
        "{}",
        b.2
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_client_listens_for_list_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start_gateway(gateway_config(&dir.path().join("gw.db"))).await;
    let body = json!({"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{
    "notifications": {"toolsListChanged": true},
    "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "listener", "version": "1"}
    }}});
    let mut resp = http()
        .post(gw.mcp_url())
        .bearer_auth(TOKEN)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "subscriptions/listen")
        .json(&body)
        .send()
        .await
        .expect("listen");
    assert_eq!(resp.status().as_u16(), 200);
    let mut seen = String::new();
    // Acknowledged first.
    read_until(
        &mut resp,
        &mut seen,
        "notifications/subscriptions/acknowledged",
    )
    .await;
    // A registration changes the tool list: the listener hears it.
    let extra = start_fixture("news", &["fresh"]).await;
    let (status, body) = register(&gw, "news", &extra.mcp_url()).await;
    assert_eq!(status, 201, "{body}");
    read_until(&mut resp, &mut seen, "notifications/tools/list_changed").await;
    drop(resp);
    extra.stop().await;
    gw.stop().await;
}

/// A 2026-07-28 `subscriptions/listen` stream with `notifications`, sent with `token`.
async fn listen(gw: &Running, token: &str, notifications: Value) -> reqwest::Response {
    let body = json!({"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{
    "notifications": notifications,
    "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "listener", "version": "1"}
    }}});
    let resp = http_no_timeout()
        .post(gw.mcp_url())
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "subscriptions/listen")
        .json(&body)
        .send()
        .await
        .expect("listen");
    assert_eq!(resp.status().as_u16(), 200);
    resp
}

/// The resources a listen stream's acknowledgement accepted.
fn acknowledged(seen: &str) -> Vec<String> {
    let ack = seen
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|m| m["method"] == "notifications/subscriptions/acknowledged")
        .unwrap_or_else(|| panic!("no acknowledgement in {seen}"));
    ack["params"]["notifications"]["resourceSubscriptions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| u.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A 2026-07-28 client follows resources on its listen stream: listed ones, and one
/// nobody lists when exactly one backend takes subscriptions; the gateway subscribes
/// upstream for it and unsubscribes when the stream ends. A limited credential follows
/// only what it sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_client_listening_hears_of_the_resources_it_follows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    let mut limited = credential("limited", &["list", "call"]);
    limited.services = Some(vec!["elsewhere".into()]);
    config.credentials = vec![limited];
    let gw = start_gateway(config).await;
    let watcher = fixture::Fixture::new("watcher", &["touch"]).watching("fixture://watched");
    let up = serve_fixture(watcher.clone()).await;
    assert_eq!(register(&gw, "watcher", &up.mcp_url()).await.0, 201);
    let follow = json!({"resourceSubscriptions": ["fixture://watched", "fixture://unlisted"]});
    let mut resp = listen(&gw, TOKEN, follow.clone()).await;
    let mut seen = String::new();
    read_until(
        &mut resp,
        &mut seen,
        "notifications/subscriptions/acknowledged",
    )
    .await;
    assert_eq!(
        acknowledged(&seen),
        ["fixture://watched", "fixture://unlisted"],
        "{seen}"
    );
    wait_until("subscribed upstream", Duration::from_secs(10), || {
        let subscribed = watcher.subscribed();
        async move { subscribed.len() == 2 }
    })
    .await;
    for uri in ["fixture://watched", "fixture://unlisted"] {
        let (status, body) = rpc(
            &gw,
            "tools/call",
            json!({"name": "touch", "arguments": {"uri": uri}}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        read_until(&mut resp, &mut seen, &format!("\"uri\":\"{uri}\"")).await;
    }
    assert!(seen.contains("notifications/resources/updated"), "{seen}");
    drop(resp);
    wait_until("unsubscribed upstream", Duration::from_secs(10), || {
        let subscribed = watcher.subscribed();
        async move { subscribed.is_empty() }
    })
    .await;

    // A credential limited to other services follows nothing of this one.
    let mut resp = listen(&gw, &credential_token("limited"), follow.clone()).await;
    let mut seen = String::new();
    read_until(
        &mut resp,
        &mut seen,
        "notifications/subscriptions/acknowledged",
    )
    .await;
    assert!(acknowledged(&seen).is_empty(), "{seen}");
    drop(resp);

    // A second backend taking subscriptions: an unlisted URI has no one place to go.
    let other = fixture::Fixture::new("other", &["touch2"]).watching("fixture://other");
    let up2 = serve_fixture(other).await;
    assert_eq!(register(&gw, "other", &up2.mcp_url()).await.0, 201);
    let mut resp = listen(&gw, TOKEN, follow).await;
    let mut seen = String::new();
    read_until(
        &mut resp,
        &mut seen,
        "notifications/subscriptions/acknowledged",
    )
    .await;
    assert_eq!(acknowledged(&seen), ["fixture://watched"], "{seen}");
    drop(resp);
    up2.stop().await;
    up.stop().await;
    gw.stop().await;
}

/// The JSON-RPC message in an answer that may be plain JSON or an SSE stream.
fn message_of(text: &str) -> Value {
    let body = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .rfind(|d| !d.is_empty())
        .unwrap_or(text.trim());
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A 2026-07-28 client (no session: the protocol version and the client's capabilities
/// in each request's `_meta`) in front of a 2025-era upstream gets results shaped as
/// its revision requires (`resultType`, and caching hints on lists); a 2025-era client
/// keeps the legacy shape, without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_take_the_shape_of_the_clients_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start_gateway(gateway_config(&dir.path().join("gw.db"))).await;
    let up = start_fixture("legacy", &["lookup"]).await;
    assert_eq!(register(&gw, "legacy", &up.mcp_url()).await.0, 201);
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "modern", "version": "1"}
    });
    let modern = [
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2026-07-28"),
    ];
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "lookup", "arguments": {"id": "1"}, "_meta": meta}});
    let (status, text) = post(
        &gw,
        &[
            modern[0],
            modern[1],
            ("mcp-method", "tools/call"),
            ("mcp-name", "lookup"),
        ],
        &call.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let answer = message_of(&text);
    assert_eq!(answer["result"]["resultType"], "complete", "{answer}");
    assert_eq!(
        answer["result"]["structuredContent"]["server"], "legacy",
        "{answer}"
    );
    let list =
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": meta}});
    let (status, text) = post(
        &gw,
        &[modern[0], modern[1], ("mcp-method", "tools/list")],
        &list.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let answer = message_of(&text);
    assert_eq!(answer["result"]["resultType"], "complete", "{answer}");
    assert!(answer["result"]["ttlMs"].is_number(), "{answer}");
    assert!(answer["result"]["cacheScope"].is_string(), "{answer}");
    // The 2025-era shape for a 2025-era client, through the same gateway.
    let (status, text) = post(
        &gw,
        &[("accept", "application/json, text/event-stream")],
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"lookup","arguments":{"id":"1"}}}"#,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let answer = message_of(&text);
    assert!(answer["result"].is_object(), "{answer}");
    assert!(answer["result"].get("resultType").is_none(), "{answer}");
    up.stop().await;
    gw.stop().await;
}

/// The conformance fixture (logging, sampling, ... tools) on an ephemeral port.
async fn conformance_fixture() -> (std::net::SocketAddr, tokio_util::sync::CancellationToken) {
    start_conformance_fixture(legacy_fixture()).await
}

/// A 2026-07-28 request gets the backend's log messages only when its `_meta` asks for
/// them (`io.modelcontextprotocol/logLevel`), and only from that level up; headers that
/// disagree with the body are refused with the revision's -32020.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2026_request_opts_in_to_log_messages_and_its_headers_must_match() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start_gateway(gateway_config(&dir.path().join("gw.db"))).await;
    let (fixture, stop) = conformance_fixture().await;
    let (status, body) = register(&gw, "conformance", &format!("http://{fixture}/mcp")).await;
    assert_eq!(status, 201, "{body}");
    let call = |level: Option<&str>, name_header: &'static str| {
        let mut meta = json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "modern", "version": "1"}
        });
        if let Some(level) = level {
            meta["io.modelcontextprotocol/logLevel"] = json!(level);
        }
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "test_tool_with_logging", "arguments": {}, "_meta": meta}});
        let gw = &gw;
        async move {
            post(
                gw,
                &[
                    ("accept", "application/json, text/event-stream"),
                    ("mcp-protocol-version", "2026-07-28"),
                    ("mcp-method", "tools/call"),
                    ("mcp-name", name_header),
                ],
                &body.to_string(),
            )
            .await
        }
    };
    let logs = |text: &str| text.matches("notifications/message").count();
    let (status, text) = call(None, "test_tool_with_logging").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(logs(&text), 0, "log messages nobody asked for: {text}");
    assert_eq!(
        message_of(&text)["result"]["resultType"],
        "complete",
        "{text}"
    );
    let (status, text) = call(Some("info"), "test_tool_with_logging").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(logs(&text), 3, "{text}");
    let (status, text) = call(Some("error"), "test_tool_with_logging").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(logs(&text), 0, "info messages under an error level: {text}");
    // The routing headers must say what the body says.
    let (status, text) = call(Some("info"), "test_simple_text").await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(message_of(&text)["error"]["code"], -32020, "{text}");
    stop.cancel();
    gw.stop().await;
}

/// A 2026-07-28 backend's health is probed with `server/discover` (that revision has no
/// `ping`, which such servers refuse, -32601, and log every interval).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modern_backends_health_is_probed_with_server_discover_not_ping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.health_interval_ms = 100;
    let gw = start_gateway(config).await;
    // The conformance fixture (2026-07-28 too), every JSON-RPC method it is sent noted.
    let methods: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let router = conformance::fixture::router(&Default::default(), stop.clone())
        .expect("the fixture's router")
        .layer(axum::middleware::from_fn({
            let methods = std::sync::Arc::clone(&methods);
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let methods = std::sync::Arc::clone(&methods);
                async move {
                    let (parts, body) = request.into_parts();
                    let bytes = axum::body::to_bytes(body, 1 << 20)
                        .await
                        .unwrap_or_default();
                    if let Ok(message) = serde_json::from_slice::<Value>(&bytes)
                        && let Some(method) = message["method"].as_str()
                    {
                        methods.lock().expect("lock").push(method.to_string());
                    }
                    let request = axum::extract::Request::from_parts(parts, bytes.into());
                    next.run(request).await
                }
            }
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
    let server = tokio::spawn(service_kit::serve::serve(listener, router, stop.clone()));
    assert_eq!(register(&gw, "modern", &url).await.0, 201);
    let probes = || {
        methods
            .lock()
            .expect("lock")
            .iter()
            .filter(|m| *m == "server/discover")
            .count()
    };
    let at_registration = probes();
    wait_until("health probes", Duration::from_secs(10), || {
        let n = probes();
        async move { n >= at_registration + 3 }
    })
    .await;
    let seen = methods.lock().expect("lock").clone();
    assert!(!seen.iter().any(|m| m == "ping"), "{seen:?}");
    stop.cancel();
    let _ = server.await;
    gw.stop().await;
}
