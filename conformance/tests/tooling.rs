//! The conformance tooling against real HTTP on ephemeral loopback ports: the fixture
//! through an rmcp client session, and the auth proxy in front of an echo server.

use std::{net::SocketAddr, time::Duration};

use axum::{
    Json, Router,
    body::Body,
    extract::Request,
    response::{IntoResponse, Response},
    routing::any,
};
use conformance::{fixture, proxy};
use serde_json::{Value, json};
use service_kit::client::ClientOptions;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod common;

use common::serve;

async fn start_fixture(shutdown: &CancellationToken) -> SocketAddr {
    common::start(fixture::Config::default().revision, shutdown).await
}

fn value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("serializes")
}

#[tokio::test]
async fn fixture_serves_the_suite_fixtures_over_mcp() {
    let shutdown = CancellationToken::new();
    let addr = start_fixture(&shutdown).await;
    let session =
        service_kit::client::connect(&format!("http://{addr}/mcp"), &ClientOptions::default())
            .await
            .expect("connect");
    let peer = session.peer().clone();

    let caps = value(&peer.peer_info().expect("server info").capabilities);
    for capability in ["tools", "resources", "prompts", "logging", "completions"] {
        assert!(caps.get(capability).is_some(), "{capability} in {caps}");
    }

    let tools = peer.list_all_tools().await.expect("tools/list");
    let names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(names, fixture::content::TOOL_NAMES);

    let call = |name: &str| {
        serde_json::from_value(json!({"name": name, "arguments": {}})).expect("params")
    };
    let text = value(
        &peer
            .call_tool(call("test_simple_text"))
            .await
            .expect("call"),
    );
    assert_eq!(
        text["content"][0]["text"],
        "This is a simple text response for testing."
    );
    let error = value(
        &peer
            .call_tool(call("test_error_handling"))
            .await
            .expect("call"),
    );
    assert_eq!(error["isError"], true);

    // SEP-1699: the fixture closes the call's stream; rmcp's client resumes it with
    // Last-Event-ID and the result arrives on the resumed stream.
    let reconnected = tokio::time::timeout(
        Duration::from_secs(20),
        peer.call_tool(call("test_reconnection")),
    )
    .await
    .expect("test_reconnection answers")
    .expect("call");
    assert!(
        value(&reconnected)["content"][0]["text"]
            .as_str()
            .expect("text")
            .contains("reconnected")
    );

    let read = peer
        .read_resource(serde_json::from_value(json!({"uri": "test://template/42/data"})).unwrap())
        .await
        .expect("resources/read");
    assert!(
        value(&read)["contents"][0]["text"]
            .as_str()
            .expect("text")
            .contains("\"id\":\"42\"")
    );

    let prompt = peer
        .get_prompt(
            serde_json::from_value(json!({
                "name": "test_prompt_with_arguments",
                "arguments": {"arg1": "hello", "arg2": "world"}
            }))
            .unwrap(),
        )
        .await
        .expect("prompts/get");
    assert_eq!(
        value(&prompt)["messages"][0]["content"]["text"],
        "Prompt with arguments: arg1='hello', arg2='world'"
    );

    let unknown = peer.call_tool(call("no_such_tool")).await;
    assert!(unknown.is_err(), "{unknown:?}");

    session.cancel().await.expect("close");
    shutdown.cancel();
}

/// Answers every request with what it received; `/sse` streams three events 100 ms apart.
async fn echo(request: Request) -> Response {
    if request.uri().path() == "/sse" {
        let events = futures::stream::unfold(0, |i| async move {
            if i == 3 {
                return None;
            }
            // The echo server's deliberate pace (the proxy must stream, not buffer).
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((Ok::<_, std::io::Error>(format!("data: {i}\n\n")), i + 1))
        });
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(events))
            .expect("response");
    }
    let headers: serde_json::Map<String, Value> = request
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or_default())))
        .collect();
    let method = request.method().to_string();
    let uri = request.uri().to_string();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .expect("body");
    let mut response = (
        http::StatusCode::IM_A_TEAPOT,
        Json(json!({
            "method": method,
            "uri": uri,
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        })),
    )
        .into_response();
    response
        .headers_mut()
        .insert("x-upstream", http::HeaderValue::from_static("yes"));
    response
}

#[tokio::test]
async fn proxy_adds_the_token_and_passes_everything_else_through() {
    let shutdown = CancellationToken::new();
    let upstream = serve(Router::new().fallback(any(echo)), &shutdown).await;
    let config = proxy::Config::new(&format!("http://{upstream}"), "secret-token").expect("config");
    let addr = serve(proxy::router(&config).expect("router"), &shutdown).await;
    service_kit::client::ensure_tls_provider();
    let client = reqwest::Client::new();

    let response = client
        .delete(format!("http://{addr}/mcp?x=1&y=two"))
        .header("host", "evil.example.com")
        .header("origin", "http://evil.example.com")
        .header("authorization", "Bearer client-token")
        .header("mcp-session-id", "abc")
        .body("payload")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), http::StatusCode::IM_A_TEAPOT);
    assert_eq!(response.headers()["x-upstream"], "yes");
    let echoed: Value = response.json().await.expect("json");
    assert_eq!(echoed["method"], "DELETE");
    assert_eq!(echoed["uri"], "/mcp?x=1&y=two");
    assert_eq!(echoed["body"], "payload");
    let headers = &echoed["headers"];
    assert_eq!(headers["host"], "evil.example.com");
    assert_eq!(headers["origin"], "http://evil.example.com");
    assert_eq!(headers["authorization"], "Bearer secret-token");
    assert_eq!(headers["mcp-session-id"], "abc");

    // SSE arrives event by event, not when the upstream body ends.
    let started = tokio::time::Instant::now();
    let mut sse = client
        .get(format!("http://{addr}/sse"))
        .send()
        .await
        .expect("sse");
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let first = sse.chunk().await.expect("chunk").expect("first event");
    let first_at = started.elapsed();
    assert_eq!(&first[..], b"data: 0\n\n");
    let mut rest = Vec::new();
    while let Some(chunk) = sse.chunk().await.expect("chunk") {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(&rest[..], b"data: 1\n\ndata: 2\n\n");
    assert!(
        first_at < started.elapsed() - Duration::from_millis(150),
        "first event at {first_at:?}, stream ended at {:?}",
        started.elapsed()
    );

    // An upstream that is gone is a 502, not a hang.
    let dead = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let config = proxy::Config::new(&format!("http://{dead_addr}"), "t").expect("config");
    let addr = serve(proxy::router(&config).expect("router"), &shutdown).await;
    let response = client
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), http::StatusCode::BAD_GATEWAY);

    shutdown.cancel();
}
