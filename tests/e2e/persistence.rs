//! Registrations survive a gateway restart.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateway_keeps_its_registrations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("gw.db");
    let gw = start_gateway(gateway_config(&store)).await;
    let fixture = start_fixture("kept", &["keepMe"]).await;
    let (status, body) = register(&gw, "kept", &fixture.mcp_url()).await;
    assert_eq!(status, 201, "{body}");
    gw.stop().await;

    // Restart on the same store: the service is back without re-registering.
    let gw = start_gateway(gateway_config(&store)).await;
    wait_for_services(&gw, &["kept"]).await;
    let r = call(&gw, "keepMe", json!({"id": "1"})).await;
    assert_eq!(r["result"]["structuredContent"]["server"], "kept", "{r}");
    gw.stop().await;

    // With the service down at restart, its last-known tools are still listed and a call
    // fails fast with its name.
    fixture.stop().await;
    let gw = start_gateway(gateway_config(&store)).await;
    let names = tool_names(&gw).await;
    assert_eq!(names, vec!["keepMe".to_string()]);
    wait_until(
        "kept to be marked down",
        Duration::from_secs(10),
        || async { service_state(&gw, "kept").await.as_deref() == Some("down") },
    )
    .await;
    let r = call(&gw, "keepMe", json!({})).await;
    assert_eq!(r["error"]["code"], -32000, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("kept")
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_upstreams_connect_at_start_and_are_retried_until_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Reserve a port for a service that is not running yet.
    let reserved = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = reserved.local_addr().expect("addr");
    drop(reserved);
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.upstreams = vec![gateway::config::UpstreamSpec {
        name: "late".into(),
        url: format!("http://{addr}"),
        ..Default::default()
    }];
    let gw = start_gateway(config).await;
    // The gateway is up although its upstream is not.
    let health = http()
        .get(format!("{}/health", gw.base()))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status().as_u16(), 200);
    // It is listed, and down once its first connection is refused (`starting` until then).
    wait_until(
        "late to be listed as down",
        Duration::from_secs(10),
        || async { service_state(&gw, "late").await.as_deref() == Some("down") },
    )
    .await;
    // Start the upstream on the reserved port: the gateway finds it by itself.
    let listener = tokio::net::TcpListener::bind(addr).await.expect("rebind");
    let fixture = crate::support::fixture::Fixture::new("late", &["lateTool"]);
    let token = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(fixture.serve(listener, token.clone()));
    wait_for_services(&gw, &["late"]).await;
    let r = call(&gw, "lateTool", json!({})).await;
    assert_eq!(r["result"]["structuredContent"]["server"], "late", "{r}");
    token.cancel();
    let _ = task.await;
    gw.stop().await;
}
