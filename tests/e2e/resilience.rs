//! A registered service that stops: its tools stay listed, calls fail fast by name.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_service_fails_fast_with_its_name_and_keeps_its_tools_listed() {
    let stack = Stack::start().await;
    let Stack {
        gateway,
        shopping,
        user,
        dir,
    } = stack;
    user.stop().await;

    let names = tool_names(&gateway).await;
    assert!(names.contains(&"getUserById".to_string()), "{names:?}");

    let started = Instant::now();
    let r = call(&gateway, "getUserById", json!({"id": "456"})).await;
    let took = started.elapsed();
    eprintln!("call to the stopped service failed after {took:?}: {r}");
    assert_eq!(r["error"]["code"], -32000, "{r}");
    let msg = r["error"]["message"].as_str().expect("message");
    assert!(msg.contains("user-service"), "{msg}");
    assert_eq!(r["error"]["data"]["service"], "user-service");
    // A generous sanity bound (the call timeout is 5 s): it must not wait for it.
    assert!(took < Duration::from_secs(4), "took {took:?}");

    // The healthy service is unaffected.
    let ok = call(&gateway, "getProductById", json!({"id": "123"})).await;
    assert_eq!(ok["result"]["structuredContent"]["id"], "123", "{ok}");

    // /services tells the truth within a health interval or two.
    wait_until(
        "user-service to be marked down",
        Duration::from_secs(10),
        || async { service_state(&gateway, "user-service").await.as_deref() == Some("down") },
    )
    .await;
    let again = call(&gateway, "getUserById", json!({"id": "456"})).await;
    assert_eq!(again["error"]["code"], -32000, "{again}");
    assert!(
        tool_names(&gateway)
            .await
            .contains(&"getUserById".to_string())
    );

    shopping.stop().await;
    gateway.stop().await;
    drop(dir);
}
