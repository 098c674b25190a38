//! Upstreams fail; the gateway does not. Real processes where a crash matters
//! (SIGKILL), bounded loads, and no wall-clock assertions beyond generous sanity limits:
//! the latencies are printed for the record.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::support::{procs, *};

/// A bounded closed-loop load: `workers` tasks each make `calls` calls of `tool`, with
/// `pause` between two calls of a task (the load's pace, not a synchronization), counting
/// every answered call in `answered` as it comes. Returns (successes, failures as
/// (latency, error JSON)).
async fn load(
    gateway: String,
    tool: &'static str,
    args: Value,
    workers: usize,
    calls: usize,
    pause: Duration,
    answered: Arc<AtomicUsize>,
) -> (usize, Vec<(Duration, Value)>) {
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (gateway, args) = (gateway.clone(), args.clone());
        let answered = Arc::clone(&answered);
        tasks.push(tokio::spawn(async move {
            let client = http();
            let mut ok = 0;
            let mut failed = Vec::new();
            for _ in 0..calls {
                let started = Instant::now();
                let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
                    "params":{"name": tool, "arguments": args}});
                let resp: Value = client
                    .post(format!("{gateway}/mcp"))
                    .bearer_auth(TOKEN)
                    .json(&body)
                    .send()
                    .await
                    .expect("gateway answers")
                    .json()
                    .await
                    .expect("JSON");
                answered.fetch_add(1, Ordering::SeqCst);
                if resp["result"].is_object() && resp["result"]["isError"] != true {
                    ok += 1;
                } else {
                    failed.push((started.elapsed(), resp));
                }
                tokio::time::sleep(pause).await;
            }
            (ok, failed)
        }));
    }
    let mut ok = 0;
    let mut failed = Vec::new();
    for t in tasks {
        let (o, f) = t.await.expect("load task");
        ok += o;
        failed.extend(f);
    }
    (ok, failed)
}

fn p50_max(latencies: &mut [Duration]) -> (Duration, Duration) {
    latencies.sort();
    (
        latencies
            .get(latencies.len() / 2)
            .copied()
            .unwrap_or_default(),
        latencies.last().copied().unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_service_fails_fast_the_other_keeps_answering_and_recovery_needs_no_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gp = procs::free_port();
    let mut gateway = procs::gateway(gp, &dir.path().join("gw.db"), &[]).await;
    let _shop = procs::service("shopping-service", procs::free_port(), gp, true).await;
    let user_port = procs::free_port();
    let mut user = procs::service("user-service", user_port, gp, true).await;
    wait_for_services(&gateway, &["shopping-service", "user-service"]).await;

    // Load on both services; user-service is killed while it runs.
    let base = gateway.base();
    let shop_answered = Arc::new(AtomicUsize::new(0));
    let shop_load = tokio::spawn(load(
        base.clone(),
        "getProductById",
        json!({"id": "123"}),
        4,
        60,
        Duration::from_millis(10),
        Arc::clone(&shop_answered),
    ));
    wait_until(
        "the load to be under way",
        Duration::from_secs(20),
        || async { shop_answered.load(Ordering::SeqCst) >= 20 },
    )
    .await;
    user.kill9().await;
    let at_kill = shop_answered.load(Ordering::SeqCst);
    let (user_ok, user_failed) = load(
        base.clone(),
        "getUserById",
        json!({"id": "456"}),
        2,
        20,
        Duration::from_millis(10),
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    let (shop_ok, shop_failed) = shop_load.await.expect("shopping load");
    assert!(
        shop_failed.is_empty(),
        "calls to the healthy service failed: {shop_failed:?}"
    );
    assert_eq!(shop_ok, 240);
    assert!(at_kill < 240, "the kill came while the load was running");
    assert_eq!(user_ok, 0, "the dead service cannot answer");
    let mut latencies: Vec<Duration> = user_failed.iter().map(|(d, _)| *d).collect();
    for (_, e) in &user_failed {
        assert_eq!(e["error"]["code"], -32000, "{e}");
        assert_eq!(e["error"]["data"]["service"], "user-service", "{e}");
    }
    for (d, e) in user_failed
        .iter()
        .filter(|(d, _)| *d > Duration::from_millis(100))
    {
        eprintln!("slow failure after {d:?}: {e}");
    }
    let (p50, max) = p50_max(&mut latencies);
    eprintln!(
        "dead service: {} calls failed, p50 {p50:?}, max {max:?}; healthy service: {shop_ok} ok, 0 failed",
        user_failed.len()
    );
    assert!(
        max < Duration::from_secs(4),
        "fail fast, not at the 5 s call timeout: {max:?}"
    );
    assert!(
        tool_names(&gateway)
            .await
            .contains(&"getUserById".to_string())
    );
    wait_until(
        "user-service down in /services",
        Duration::from_secs(5),
        || async { service_state(&gateway, "user-service").await.as_deref() == Some("down") },
    )
    .await;

    // Restart it without self-registration: the gateway's own supervisor finds it.
    let started = Instant::now();
    let _user = procs::service("user-service", user_port, gp, false).await;
    wait_for_services(&gateway, &["user-service"]).await;
    eprintln!(
        "user-service back in the gateway {:?} after its restart",
        started.elapsed()
    );
    let r = call(&gateway, "getUserById", json!({"id": "456"})).await;
    assert_eq!(r["result"]["structuredContent"]["id"], "456", "{r}");
    assert!(
        tool_names(&gateway)
            .await
            .contains(&"getUserById".to_string())
    );
    assert_eq!(gateway.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_with_one_killed_callers_see_no_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gp = procs::free_port();
    let gateway = procs::gateway(gp, &dir.path().join("gw.db"), &[]).await;
    let _a = procs::service("shopping-service", procs::free_port(), gp, true).await;
    let mut b = procs::service("shopping-service", procs::free_port(), gp, true).await;
    wait_until(
        "two shopping-service instances",
        Duration::from_secs(20),
        || async {
            let s = services(&gateway).await;
            s["services"][0]["instances"].as_array().map(Vec::len) == Some(2)
                && s["services"][0]["state"] == "healthy"
        },
    )
    .await;

    let base = gateway.base();
    let answered = Arc::new(AtomicUsize::new(0));
    let running = tokio::spawn(load(
        base,
        "getProductById",
        json!({"id": "123"}),
        4,
        80,
        Duration::from_millis(5),
        Arc::clone(&answered),
    ));
    wait_until(
        "the load to be under way",
        Duration::from_secs(20),
        || async { answered.load(Ordering::SeqCst) >= 20 },
    )
    .await;
    b.kill9().await;
    let at_kill = answered.load(Ordering::SeqCst);
    let (ok, failed) = running.await.expect("load");
    assert!(
        failed.is_empty(),
        "{} callers saw errors: {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(ok, 320);
    assert!(at_kill < 320, "the kill came while the load was running");
    wait_until(
        "the killed instance marked down",
        Duration::from_secs(5),
        || async {
            let s = services(&gateway).await;
            s["services"][0]["state"] == "degraded"
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_comes_back_with_every_registration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("gw.db");
    let gp = procs::free_port();
    let mut gateway = procs::gateway(gp, &store, &[]).await;
    let _shop = procs::service("shopping-service", procs::free_port(), gp, true).await;
    let _user = procs::service("user-service", procs::free_port(), gp, true).await;
    let extra = start_fixture("extra", &["extraTool"]).await;
    let (status, _) = register(&gateway, "extra", &extra.mcp_url()).await;
    assert_eq!(status, 201);
    wait_for_services(&gateway, &["shopping-service", "user-service", "extra"]).await;
    gateway.kill9().await;

    let gateway = procs::gateway(gp, &store, &[]).await;
    wait_for_services(&gateway, &["shopping-service", "user-service", "extra"]).await;
    let r = call(&gateway, "extraTool", json!({})).await;
    assert_eq!(r["result"]["structuredContent"]["server"], "extra", "{r}");
    let r = call(&gateway, "getProductById", json!({"id": "123"})).await;
    assert_eq!(r["result"]["structuredContent"]["id"], "123", "{r}");
    extra.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_backend_times_out_by_name_is_cancelled_and_then_short_circuited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.breaker_failures = 2;
    config.breaker_cooldown_ms = 60_000;
    let gateway = start_gateway(config).await;
    let shop = start_shopping(Some(&gateway)).await;
    wait_for_services(&gateway, &["shopping-service"]).await;
    let fixture = fixture::Fixture::new("stuck", &["hangForever"]);
    let stuck = serve_fixture(fixture.clone()).await;
    let (status, body) = register_with(
        &gateway,
        json!({"name": "stuck", "url": stuck.mcp_url(), "callTimeoutMs": 400}),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    // While a call hangs, the other service answers: "waiting" answers its call only when
    // cancelled, under a deadline far beyond this part of the test, so each of the ten
    // calls below must complete while that call is still pending at the gateway.
    let waiting_fixture = fixture::Fixture::new("waiting", &["hangUntilCancelled"]);
    let waiting = serve_fixture(waiting_fixture.clone()).await;
    let (status, body) = register_with(
        &gateway,
        json!({"name": "waiting", "url": waiting.mcp_url(), "callTimeoutMs": 300_000}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let g = gateway.base();
    let hung = tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()
            .expect("client");
        client
            .post(format!("{g}/mcp"))
            .bearer_auth(TOKEN)
            .json(&json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"hangUntilCancelled","arguments":{}}}))
            .send()
            .await
            .map(|r| r.status())
    });
    wait_until(
        "the hanging call to reach its backend",
        Duration::from_secs(10),
        || async { waiting_fixture.calls.load(Ordering::SeqCst) == 1 },
    )
    .await;
    let others = async {
        for _ in 0..10 {
            let r = call(&gateway, "getProductById", json!({"id": "123"})).await;
            assert_eq!(r["result"]["structuredContent"]["id"], "123", "{r}");
        }
    };
    tokio::time::timeout(Duration::from_secs(15), others)
        .await
        .expect("the other service did not answer while a call was hanging");
    if hung.is_finished() {
        panic!(
            "the hanging call ended before the ten calls were answered: {:?}",
            hung.await
        );
    }
    assert_eq!(
        waiting_fixture.cancelled.load(Ordering::SeqCst),
        0,
        "the hanging call was still running at its backend"
    );
    // The client gives up: its call is cancelled at the backend.
    hung.abort();
    wait_until(
        "the abandoned call to be cancelled at its backend",
        Duration::from_secs(10),
        || async { waiting_fixture.cancelled.load(Ordering::SeqCst) == 1 },
    )
    .await;
    waiting.stop().await;

    // A call to a backend that does not answer times out, naming it.
    let started = Instant::now();
    let r = call(&gateway, "hangForever", json!({})).await;
    let took = started.elapsed();
    eprintln!("hanging backend: timed out after {took:?}: {r}");
    assert_eq!(r["error"]["code"], -32001, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("\"stuck\""),
        "{r}"
    );
    // The backend was told to stop working on it.
    wait_until(
        "notifications/cancelled at the backend",
        Duration::from_secs(5),
        || async { fixture.cancelled.load(Ordering::SeqCst) >= 1 },
    )
    .await;

    // A second timeout opens the circuit: further calls fail at once, naming it.
    let r = call(&gateway, "hangForever", json!({})).await;
    assert_eq!(r["error"]["code"], -32001, "{r}");
    let before = fixture.calls.load(Ordering::SeqCst);
    let started = Instant::now();
    let r = call(&gateway, "hangForever", json!({})).await;
    eprintln!("circuit open answer after {:?}: {r}", started.elapsed());
    assert_eq!(r["error"]["code"], -32003, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("circuit open"),
        "{r}"
    );
    assert_eq!(
        fixture.calls.load(Ordering::SeqCst),
        before,
        "nothing reached the backend"
    );
    assert_eq!(
        service_state(&gateway, "stuck").await.as_deref(),
        Some("down")
    );
    stuck.stop().await;
    shop.stop().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_closes_again_after_a_successful_probe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.breaker_failures = 1;
    config.breaker_cooldown_ms = 300;
    let gateway = start_gateway(config).await;
    let stuck = start_fixture("flaky", &["hangOnce", "fine"]).await;
    let (status, _) = register_with(
        &gateway,
        json!({"name": "flaky", "url": stuck.mcp_url(), "callTimeoutMs": 300}),
    )
    .await;
    assert_eq!(status, 201);
    let r = call(&gateway, "hangOnce", json!({})).await;
    assert_eq!(r["error"]["code"], -32001, "{r}");
    let r = call(&gateway, "fine", json!({})).await;
    assert_eq!(
        r["error"]["code"], -32003,
        "open right after the failure: {r}"
    );
    // After the cool-down a probe goes through (a call or the health ping) and closes it.
    wait_until("the circuit to close", Duration::from_secs(10), || async {
        call(&gateway, "fine", json!({})).await["result"]["structuredContent"]["tool"] == "fine"
    })
    .await;
    assert_eq!(
        service_state(&gateway, "flaky").await.as_deref(),
        Some("healthy")
    );
    stuck.stop().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_backend_new_session_is_used_and_nothing_is_silently_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = start_gateway(gateway_config(&dir.path().join("gw.db"))).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let first = fixture::Fixture::new("phoenix", &["readThing", "writeThing"]);
    let backend = serve_fixture_on(listener, first.clone());
    let (status, _) = register(&gateway, "phoenix", &backend.mcp_url()).await;
    assert_eq!(status, 201);
    let r = call(&gateway, "writeThing", json!({"id": "1"})).await;
    assert_eq!(
        r["result"]["structuredContent"]["tool"], "writeThing",
        "{r}"
    );

    // The backend restarts on the same address: the gateway's session id is unknown
    // there now (404). Both kinds of call must succeed on a new session, each exactly
    // once: a 404 means the request was not processed, so repeating it is safe.
    backend.stop().await;
    let listener = tokio::net::TcpListener::bind(addr).await.expect("rebind");
    let second = fixture::Fixture::new("phoenix", &["readThing", "writeThing", "newTool"]);
    let backend = serve_fixture_on(listener, second.clone());
    let r = call(&gateway, "writeThing", json!({"id": "2"})).await;
    assert_eq!(
        r["result"]["structuredContent"]["tool"], "writeThing",
        "{r}"
    );
    let r = call(&gateway, "readThing", json!({"id": "3"})).await;
    assert_eq!(r["result"]["structuredContent"]["tool"], "readThing", "{r}");
    assert_eq!(
        second.calls.load(Ordering::SeqCst),
        2,
        "each call ran exactly once"
    );
    // The new session's tool list is read again by itself.
    wait_until(
        "the restarted backend's new tool",
        Duration::from_secs(5),
        || async { tool_names(&gateway).await.contains(&"newTool".to_string()) },
    )
    .await;
    backend.stop().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stops_unregister_services_and_drain_calls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gp = procs::free_port();
    let gateway = procs::gateway(gp, &dir.path().join("gw.db"), &[]).await;
    let mut user = procs::service("user-service", procs::free_port(), gp, true).await;
    wait_for_services(&gateway, &["user-service"]).await;
    // SIGTERM: the service removes itself from the gateway on the way out.
    assert_eq!(user.terminate().await, Some(0));
    wait_until(
        "user-service unregistered",
        Duration::from_secs(5),
        || async { service_state(&gateway, "user-service").await.is_none() },
    )
    .await;
    assert!(
        !tool_names(&gateway)
            .await
            .contains(&"getUserById".to_string())
    );

    // DELETE /services/{name} by an operator, and its errors.
    let extra = start_fixture("extra", &["x1"]).await;
    register(&gateway, "extra", &extra.mcp_url()).await;
    let c = http();
    let r = c
        .delete(format!("{}/services/nope", gateway.base()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status().as_u16(), 404);
    let r = c
        .delete(format!("{}/services/extra", gateway.base()))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status().as_u16(), 401, "unregistering needs the token");
    let r = c
        .delete(format!("{}/services/extra", gateway.base()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status().as_u16(), 200);
    assert!(service_state(&gateway, "extra").await.is_none());
    extra.stop().await;
    drop(gateway);

    // The gateway drains: a call in flight when shutdown starts still gets its answer.
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = start_gateway(gateway_config(&dir.path().join("gw.db"))).await;
    let slow_fixture = fixture::Fixture::new("slowpoke", &["slowAnswer"]);
    let slow = serve_fixture(slow_fixture.clone()).await;
    let (status, body) = register(&gateway, "slowpoke", &slow.mcp_url()).await;
    assert_eq!(status, 201, "{body}");
    let g = gateway.base();
    let in_flight = tokio::spawn(async move {
        let r: Value = http()
            .post(format!("{g}/mcp"))
            .bearer_auth(TOKEN)
            .json(&json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"slowAnswer","arguments":{}}}))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        r
    });
    // The call is at the backend (which answers 800 ms after it arrives) when the
    // gateway is told to stop.
    wait_until(
        "the call to reach its backend",
        Duration::from_secs(10),
        || async { slow_fixture.calls.load(Ordering::SeqCst) == 1 },
    )
    .await;
    let addr = gateway.addr;
    gateway.stop().await;
    let r = in_flight.await.expect("call");
    assert_eq!(
        r["result"]["structuredContent"]["tool"], "slowAnswer",
        "{r}"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the gateway no longer accepts connections"
    );
    slow.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_plain_calls_and_a_session_stays_on_its_instance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = start_gateway(gateway_config(&dir.path().join("gw.db"))).await;
    let a = start_fixture("pool-a", &["whoAmI"]).await;
    let b = start_fixture("pool-b", &["whoAmI"]).await;
    for f in [&a, &b] {
        let (status, body) = register(&gateway, "pool", &f.mcp_url()).await;
        assert_eq!(status, 201, "{body}");
    }
    wait_for_services(&gateway, &["pool"]).await;
    // Plain calls (no session) are spread over both instances.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let r = call(&gateway, "whoAmI", json!({})).await;
        seen.insert(
            r["result"]["structuredContent"]["server"]
                .as_str()
                .expect("server")
                .to_string(),
        );
    }
    assert_eq!(seen.len(), 2, "round robin reached {seen:?}");
    // A client with a session gets the same instance every time.
    let client = mcp_client(&gateway).await;
    let mut pinned = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let r = client
            .call_tool(rmcp::model::CallToolRequestParams::new("whoAmI"))
            .await
            .expect("call");
        pinned.insert(r.structured_content.expect("structured")["server"].to_string());
    }
    assert_eq!(
        pinned.len(),
        1,
        "a session moved between instances: {pinned:?}"
    );
    client.cancel().await.expect("close");
    a.stop().await;
    b.stop().await;
    gateway.stop().await;
}

/// An upstream answer over `max_response_bytes` fails that one call with an error that
/// says so, on both paths and both answer forms (SSE stream, JSON body); the service
/// stays healthy and the next call of normal size goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_upstream_answer_fails_only_that_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.max_response_bytes = 16 * 1024;
    let gw = start_gateway(config).await;
    let sse = start_fixture("streamed", &["bigStreamed"]).await;
    let json =
        serve_fixture(crate::support::fixture::Fixture::new("plain", &["bigPlain"]).json()).await;
    for (name, backend) in [("streamed", &sse), ("plain", &json)] {
        let (status, body) = register(&gw, name, &backend.mcp_url()).await;
        assert_eq!(status, 201, "{body}");
    }
    for tool in ["bigStreamed", "bigPlain"] {
        for meta in [None, Some(json!({"progressToken": 3}))] {
            let call = |size: u64| {
                let mut params = json!({"name": tool, "arguments": {"size": size}});
                if let Some(meta) = &meta {
                    params["_meta"] = meta.clone();
                }
                params
            };
            let what = format!(
                "{tool} {}",
                if meta.is_some() {
                    "typed"
                } else {
                    "pass-through"
                }
            );
            let (status, small) = rpc(&gw, "tools/call", call(8 * 1024)).await;
            assert_eq!(status, 200, "{what}");
            assert_eq!(
                small["result"]["content"][0]["text"].as_str().map(str::len),
                Some(8 * 1024),
                "{what}: {small}"
            );
            let (status, big) = rpc(&gw, "tools/call", call(64 * 1024)).await;
            assert_eq!(status, 200, "{what}");
            let message = big["error"]["message"].as_str().unwrap_or_default();
            assert!(
                big["result"].is_null()
                    && message.contains(
                        "answered with more than 16384 bytes (the gateway's max_response_bytes)"
                    ),
                "{what}: {big}"
            );
            let (_, again) = rpc(&gw, "tools/call", call(100)).await;
            assert!(
                again["result"]["content"].is_array(),
                "{what} after: {again}"
            );
        }
    }
    for name in ["streamed", "plain"] {
        assert_eq!(
            service_state(&gw, name).await.as_deref(),
            Some("healthy"),
            "{name}"
        );
    }
    gw.stop().await;
    sse.stop().await;
    json.stop().await;
}

/// ARCHITECTURE promises that a call is repeated at most once. With three instances that
/// each answer "unknown session" (a failure that is safe to repeat), one call reaches two
/// of them, never the third.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_repeated_at_most_once_whatever_the_number_of_instances() {
    use crate::support::hostile::Hostile;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start_gateway(gateway_config(&dir.path().join("gw.db"))).await;
    let mut counters = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..3 {
        let h = Hostile::new(&["expired"]);
        counters.push(std::sync::Arc::clone(&h.calls));
        let up = serve_hostile(h).await;
        let (status, body) = register(&gw, "forgetful", &up.mcp_url()).await;
        assert!(status == 201 || status == 200, "{body}");
        servers.push(up);
    }
    let reply = call(&gw, "expired", serde_json::json!({})).await;
    assert!(reply["error"].is_object(), "{reply}");
    let sent: usize = counters
        .iter()
        .map(|c| c.load(std::sync::atomic::Ordering::SeqCst))
        .sum();
    assert_eq!(sent, 2, "the call went out {sent} times");
    for up in servers {
        up.stop().await;
    }
    gw.stop().await;
}
