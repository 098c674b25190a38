//! The attacks of the hardening review (#17), each reproduced against the real gateway
//! and checked to fail: hostile clients, registrants and upstreams (the test-only
//! [`Hostile`] server), on loopback.

use std::{sync::atomic::Ordering, time::Duration};

use proptest::prelude::{any, prop};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{
    hostile::{Hostile, Paging},
    *,
};

/// A gateway with a credential of each single scope besides the default token.
async fn gateway_with_roles(
    dir: &tempfile::TempDir,
    tune: impl FnOnce(&mut gateway::Config),
) -> Running {
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.credentials = vec![
        credential("lister", &["list"]),
        credential("caller", &["call"]),
        credential("registrar", &["register"]),
        credential("operator", &["operate"]),
    ];
    tune(&mut config);
    start_gateway(config).await
}

/// A POST of `body` (as given, byte for byte) to `/mcp` with `token` and extra headers:
/// (status, body text).
async fn post_raw(
    gw: &Running,
    token: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut rb = http()
        .post(gw.mcp_url())
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let resp = rb.body(body.to_string()).send().await.expect("POST /mcp");
    (resp.status().as_u16(), resp.text().await.expect("body"))
}

/// Opens a session for `token` (initialize, then notifications/initialized): its id.
async fn open_session(gw: &Running, token: &str, capabilities: Value) -> String {
    let resp = http()
        .post(gw.mcp_url())
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
            "protocolVersion":"2025-06-18","capabilities":capabilities,
            "clientInfo":{"name":"attacker","version":"1"}}}),
        )
        .send()
        .await
        .expect("initialize");
    assert_eq!(resp.status().as_u16(), 200, "initialize");
    let id = resp.headers()["mcp-session-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    let _ = resp.text().await;
    let (status, _) = post_raw(
        gw,
        token,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        &[
            ("mcp-session-id", &id),
            ("mcp-protocol-version", "2025-06-18"),
        ],
    )
    .await;
    assert_eq!(status, 202);
    id
}

/// Finding 1: the method-scope check read the envelope with a weaker parser than rmcp's
/// and let through what it could not read. Every credential without `call` tries to call
/// a tool with bodies built to confuse a reader; the backend must never see a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_without_call_never_reaches_a_tool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = gateway_with_roles(&dir, |_| {}).await;
    let fixture = fixture::Fixture::new("inventory", &["writeOrder"]);
    let calls = std::sync::Arc::clone(&fixture.calls);
    let up = serve_fixture(fixture).await;
    assert_eq!(register(&gw, "inventory", &up.mcp_url()).await.0, 201);
    // Each body, and the gateway's own refusal of it: 403 for a call (the scope it
    // lacks is `call`, whatever the params hold), 400 with -32600 for what it cannot
    // classify exactly (a member given twice, a member of the wrong type, a batch).
    const SCOPE: &str = "scope";
    const INVALID: &str = "invalid";
    let bodies = [
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"writeOrder","arguments":{},"protocolVersion":5}}"#,
            SCOPE,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"writeOrder","protocolVersion":{"x":[1]}}}"#,
            SCOPE,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"writeOrder"}}"#,
            INVALID,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"writeOrder"},"params":{"name":"writeOrder"}}"#,
            INVALID,
        ),
        (
            r#"{"jsonrpc":2,"id":1,"method":"tools/call","params":{"name":"writeOrder"}}"#,
            INVALID,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools\/call","params":{"name":"writeOrder"}}"#,
            SCOPE,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/\u0063all","params":{"name":"writeOrder"}}"#,
            SCOPE,
        ),
        (
            r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"writeOrder"}}]"#,
            INVALID,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"writeOrder","_meta":{"progressToken":"p"}}}"#,
            SCOPE,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"x"}}"#,
            SCOPE,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"some/unknown","params":{"name":"writeOrder"}}"#,
            SCOPE,
        ),
    ];
    let refused_as = |status: u16, text: &str, expected: &str| -> Result<(), String> {
        let body: Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON ({e}): {text}"))?;
        let ok = match expected {
            SCOPE => {
                status == 403 && body["error"] == "insufficient_scope" && body["scope"] == "call"
            }
            _ => status == 400 && body["error"]["code"] == -32600,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("{status} {text}"))
        }
    };
    for who in ["lister", "registrar", "operator"] {
        let token = credential_token(who);
        for (body, expected) in bodies {
            let (status, text) = post_raw(&gw, &token, body, &[]).await;
            if let Err(got) = refused_as(status, &text, expected) {
                panic!("{who}: {body} should be refused ({expected}), got {got}");
            }
        }
    }
    // In a session too (a list-only credential may open one).
    let session = open_session(&gw, &credential_token("lister"), json!({})).await;
    for (body, expected) in bodies {
        let (status, text) = post_raw(
            &gw,
            &credential_token("lister"),
            body,
            &[
                ("mcp-session-id", &session),
                ("mcp-protocol-version", "2025-06-18"),
            ],
        )
        .await;
        if let Err(got) = refused_as(status, &text, expected) {
            panic!("in a session: {body} should be refused ({expected}), got {got}");
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "a call got through");
    // A credential that may neither list nor call gets no session at all.
    let resp = http()
        .post(gw.mcp_url())
        .bearer_auth(credential_token("registrar"))
        .json(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
            "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}))
        .send()
        .await
        .expect("initialize");
    assert_eq!(resp.status().as_u16(), 403);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["error"], "insufficient_scope", "{body}");
    assert_eq!(body["scope"], "list call", "{body}");
    // The right scope still calls: the checks above refused for the right reason.
    let (status, text) = post_raw(
        &gw,
        &credential_token("caller"),
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"writeOrder","arguments":{}}}"#,
        &[],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    up.stop().await;
    gw.stop().await;
}

/// The invariant behind finding 1, for generated bodies and headers: whatever a
/// credential without `call` sends, sessionless or in its session, no `tools/call`
/// reaches the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_bodies_from_credentials_without_call_never_reach_a_tool() {
    use proptest::{
        strategy::{Strategy, ValueTree},
        test_runner::TestRunner,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = gateway_with_roles(&dir, |_| {}).await;
    let fixture = fixture::Fixture::new("inventory", &["writeOrder"]);
    let calls = std::sync::Arc::clone(&fixture.calls);
    let up = serve_fixture(fixture).await;
    assert_eq!(register(&gw, "inventory", &up.mcp_url()).await.0, 201);
    let session = open_session(&gw, &credential_token("lister"), json!({})).await;
    // Bodies built around a real call (so a good share of them would run if the
    // gateway let them through: the control below shows it), varied where readers might
    // disagree: the method's spelling, members of every type in params (a non-string
    // protocolVersion was the original bypass), _meta, key order, whitespace, a member
    // given twice, a batch, trailing bytes.
    let method = prop::sample::select(vec![
        r#""method":"tools/call""#,
        r#""method":"tools\/call""#,
        r#""method":"tools/\u0063all""#,
        r#""method":"tools/call","method":"tools/list""#,
        r#""method":"tools/list","method":"tools/call""#,
    ]);
    let id = prop::sample::select(vec![r#""id":1"#, r#""id":"x""#, r#""id":-7"#]);
    let extra = prop::collection::vec(
        prop::sample::select(vec![
            r#""protocolVersion":5"#,
            r#""protocolVersion":{"x":[1]}"#,
            r#""protocolVersion":"2025-06-18""#,
            r#""_meta":{"progressToken":1}"#,
            r#""_meta":{"protocolVersion":"2026-07-28"}"#,
            r#""capabilities":{}"#,
            r#""task":{"ttl":1}"#,
            r#""name":"writeOrder""#,
        ]),
        0..3,
    );
    let body = (
        method,
        id,
        extra,
        any::<bool>(),
        0u8..10,
        prop::sample::select(vec![" ", "\n", "\t"]),
    )
        .prop_map(|(method, id, extra, reorder, shape, space)| {
            let mut params = vec![r#""name":"writeOrder""#, r#""arguments":{}"#];
            params.extend(extra);
            let params = format!(r#""params":{{{}}}"#, params.join(","));
            let mut members = [
                r#""jsonrpc":"2.0""#.to_string(),
                id.to_string(),
                method.to_string(),
                params,
            ];
            if reorder {
                members.reverse();
            }
            let object = format!("{{{}}}", members.join(&format!(",{space}")));
            match shape {
                0 => format!("[{object}]"),
                1 => format!("{object} trailing"),
                2 => format!("{space}{object}{space}"),
                _ => object,
            }
        });
    let headers = (0u8..4, any::<bool>());
    let mut runner = TestRunner::deterministic();
    let mut cases = Vec::new();
    for _ in 0..300 {
        let body = body.new_tree(&mut runner).expect("body").current();
        let (variant, in_session) = headers.new_tree(&mut runner).expect("headers").current();
        cases.push((body, variant, in_session));
    }
    for (body, variant, in_session) in &cases {
        let version = ["2025-06-18", "2025-11-25", "2026-07-28", "garbage"][usize::from(*variant)];
        let mut extra = vec![("mcp-protocol-version", version)];
        if *in_session {
            extra.push(("mcp-session-id", session.as_str()));
        }
        for who in ["lister", "registrar", "operator"] {
            let _ = post_raw(&gw, &credential_token(who), body, &extra).await;
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "a call got through");
    // The control: the same sessionless bodies from a credential with `call` run often
    // (so the bodies above were calls the backend would have run).
    for (body, _, _) in &cases {
        let _ = post_raw(&gw, &credential_token("caller"), body, &[]).await;
    }
    let ran = calls.load(Ordering::SeqCst);
    assert!(
        ran >= cases.len() / 4,
        "only {ran} of {} generated bodies were calls",
        cases.len()
    );
    up.stop().await;
    gw.stop().await;
}

/// Finding 2: `/health` (public) and `/services` were quadratic in the tool count (at
/// 50,000 tools, 8.6 s for one `/health` in a release build). With 100,000 tools both
/// answer within the test client's timeout (a quadratic one takes minutes in this
/// debug build) with the right counts, while another service's calls go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_services_answer_a_huge_catalog_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = gateway_with_roles(&dir, |c| {
        c.max_list_items = 100_000;
        c.connect_timeout_ms = 60_000;
    })
    .await;
    let names: Vec<String> = (0..100_000).map(|i| format!("t{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let big = serve_hostile(Hostile::new(&names)).await;
    assert_eq!(register(&gw, "big", &big.mcp_url()).await.0, 201);
    let other = start_fixture("other", &["ping"]).await;
    assert_eq!(register(&gw, "other", &other.mcp_url()).await.0, 201);
    let health = || async {
        let h: Value = http()
            .get(format!("{}/health", gw.base()))
            .send()
            .await
            .expect("health")
            .json()
            .await
            .expect("JSON");
        h
    };
    let (h1, h2, reply, listed) = tokio::join!(
        health(),
        health(),
        call(&gw, "ping", json!({})),
        services(&gw)
    );
    let big_listed = listed["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "big"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(big_listed["toolCount"], 100_000);
    assert_eq!(
        reply["result"]["structuredContent"]["server"], "other",
        "{reply}"
    );
    for h in [h1, h2] {
        assert_eq!(h["tools"], 100_001, "{h}");
        let big = h["services"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "big"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(big["tools"], 100_000, "{big}");
    }
    let s = services(&gw).await;
    let big_entry = s["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "big"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(big_entry["toolCount"], 100_000);
    big.stop().await;
    other.stop().await;
    gw.stop().await;
}

/// Finding 3: each request a backend sent on a pass-through call's stream made the
/// gateway open a connection to answer it, without bound. A backend sending 300 of them
/// gets at most a few answers at once, and the call still ends with its result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_flooding_requests_during_a_call_gets_few_answers_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = gateway_with_roles(&dir, |_| {}).await;
    let hostile = Hostile::new(&["flood"]).flooding(300);
    let (most, answers) = (
        std::sync::Arc::clone(&hostile.most_answering),
        std::sync::Arc::clone(&hostile.answers),
    );
    let up = serve_hostile(hostile).await;
    assert_eq!(register(&gw, "flooder", &up.mcp_url()).await.0, 201);
    let reply = call(&gw, "flood", json!({})).await;
    assert_eq!(
        reply["result"]["structuredContent"]["tool"], "flood",
        "{reply}"
    );
    // Some requests were answered (refused: the client declared no sampling). Once the
    // answers have settled (none new for half a second; each is held 200 ms), never
    // more than the bound were held at once, and the rest were left unanswered rather
    // than queued.
    wait_until(
        "the gateway to answer some of the backend's requests",
        Duration::from_secs(10),
        || async { answers.load(Ordering::SeqCst) > 0 },
    )
    .await;
    let mut seen = answers.load(Ordering::SeqCst);
    let mut quiet = 0;
    while quiet < 5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = answers.load(Ordering::SeqCst);
        quiet = if now == seen { quiet + 1 } else { 0 };
        seen = now;
    }
    let bound = gateway::upstream::raw::MAX_SERVER_REQUESTS_PER_CALL;
    let most = most.load(Ordering::SeqCst);
    assert!((1..=bound).contains(&most), "{most} answers at once");
    assert!(seen <= 2 * bound, "{seen} of 300 requests were answered");
    up.stop().await;
    gw.stop().await;
}

/// Finding 4: a 4xx to one call (arguments the backend cannot parse, a lone surrogate)
/// was taken for "never delivered": the gateway dropped the upstream session, marked the
/// instance down and reconnected, failing everyone's calls. Now that call fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_call_fails_alone_and_the_backend_stays_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = gateway_with_roles(&dir, |_| {}).await;
    let up = serve_hostile(Hostile::new(&["reject400", "get"])).await;
    assert_eq!(register(&gw, "picky", &up.mcp_url()).await.0, 201);
    let real = fixture::Fixture::new("strict", &["lookup"]);
    let real_calls = std::sync::Arc::clone(&real.calls);
    let strict = serve_fixture(real).await;
    assert_eq!(register(&gw, "strict", &strict.mcp_url()).await.0, 201);
    for _ in 0..10 {
        let refused = call(&gw, "reject400", json!({})).await;
        assert_eq!(refused["error"]["code"], -32005, "{refused}");
        assert_eq!(refused["error"]["data"]["status"], 400, "{refused}");
        let fine = call(&gw, "get", json!({})).await;
        assert_eq!(fine["result"]["structuredContent"]["tool"], "get", "{fine}");
        // A lone surrogate in the arguments: the real server refuses the request.
        let (status, text) = post_raw(
            &gw,
            TOKEN,
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"lookup","arguments":{"id":"\ud800"}}}"#,
            &[],
        )
        .await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("\"error\""), "{text}");
        let fine = call(&gw, "lookup", json!({"id": "1"})).await;
        assert_eq!(
            fine["result"]["structuredContent"]["server"], "strict",
            "{fine}"
        );
    }
    assert_eq!(real_calls.load(Ordering::SeqCst), 10);
    for name in ["picky", "strict"] {
        let s = services(&gw).await;
        let entry = s["services"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == name))
            .cloned()
            .unwrap_or_default();
        assert_eq!(entry["state"], "healthy", "{entry}");
        assert_eq!(entry["instances"][0]["consecutiveFailures"], 0, "{entry}");
    }
    up.stop().await;
    strict.stop().await;
    gw.stop().await;
}

/// Finding 5: a registrant offering a tool literally named like another service's
/// qualified name took every call made by that name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_named_like_another_services_qualified_name_never_takes_its_calls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = gateway_with_roles(&dir, |_| {}).await;
    let inventory = start_fixture("inventory", &["get"]).await;
    assert_eq!(
        register(&gw, "inventory", &inventory.mcp_url()).await.0,
        201
    );
    let evil = Hostile::new(&["inventory__get"]);
    let evil_calls = std::sync::Arc::clone(&evil.calls);
    let evil_up = serve_hostile(evil).await;
    let (status, body) = register_as(
        &gw,
        &credential_token("registrar"),
        json!({"name": "evil", "url": evil_up.mcp_url()}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let names = tool_names(&gw).await;
    assert!(
        names.contains(&"evil__inventory__get".to_string()),
        "{names:?}"
    );
    assert!(!names.contains(&"inventory__get".to_string()), "{names:?}");
    for name in ["inventory__get", "get"] {
        let reply = call(&gw, name, json!({"id": "1"})).await;
        assert_eq!(
            reply["result"]["structuredContent"]["server"], "inventory",
            "{name}: {reply}"
        );
    }
    assert_eq!(evil_calls.load(Ordering::SeqCst), 0);
    inventory.stop().await;
    evil_up.stop().await;
    gw.stop().await;
}

/// Finding 6: a service that unregistered (SIGTERM) could be claimed in the gap by any
/// registrant, and the real service's next registration was then merged silently into
/// the attacker's service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_name_is_not_taken_over_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = gateway_with_roles(&dir, |_| {}).await;
    let accounts = start_fixture("accounts", &["getUser"]).await;
    let rogue = start_fixture("rogue", &["getUser"]).await;
    assert_eq!(register(&gw, "accounts", &accounts.mcp_url()).await.0, 201);
    // The service stops and unregisters itself, as the demo services do on SIGTERM.
    let r = http()
        .delete(format!("{}/services/accounts", gw.base()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status().as_u16(), 200);
    let (status, body) = register_as(
        &gw,
        &credential_token("registrar"),
        json!({"name": "accounts", "url": rogue.mcp_url()}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "name_reserved", "{body}");
    // The reservation survives a restart of the gateway (it is in the store).
    gw.stop().await;
    let gw = gateway_with_roles(&dir, |_| {}).await;
    let (status, body) = register_as(
        &gw,
        &credential_token("registrar"),
        json!({"name": "accounts", "url": rogue.mcp_url()}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    // Its owner takes it back.
    assert_eq!(register(&gw, "accounts", &accounts.mcp_url()).await.0, 201);
    // A name an attacker holds is never merged with an operator's registration.
    let (status, _) = register_as(
        &gw,
        &credential_token("registrar"),
        json!({"name": "claimed", "url": rogue.mcp_url()}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, body) = register(&gw, "claimed", &accounts.mcp_url()).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "owner_conflict", "{body}");
    let claimed = http()
        .get(format!("{}/services/claimed", gw.base()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET")
        .json::<Value>()
        .await
        .expect("JSON");
    assert_eq!(
        claimed["instances"].as_array().map(Vec::len),
        Some(1),
        "{claimed}"
    );
    assert_eq!(claimed["instances"][0]["owner"], "registrar", "{claimed}");
    // An operator may take it over, explicitly.
    let (status, body) = register_with(
        &gw,
        json!({"name": "claimed", "url": accounts.mcp_url(), "replace": true}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    accounts.stop().await;
    rogue.stop().await;
    gw.stop().await;
}

/// Reads from `stream` until the peer closes it (or `limit` passes): what arrived.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> Option<String> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read).await.ok()?;
    Some(String::from_utf8_lossy(&got).into_owned())
}

/// Finding 7: trickling and idle connections were never closed, a half-sent header
/// could hold ~400 KB, and connections had no cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_idle_and_oversized_clients_are_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = gateway_with_roles(&dir, |c| {
        c.header_read_timeout_ms = 300;
        c.body_read_timeout_ms = 300;
        c.max_header_bytes = 16 * 1024;
    })
    .await;
    let connect = || tokio::net::TcpStream::connect(gw.addr);
    // A header that never ends.
    let mut s = connect().await.expect("connect");
    s.write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .expect("write");
    let seen = read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(seen.is_some(), "a trickling header was never cut off");
    // A connection that sends nothing, and one idle after its request.
    let mut s = connect().await.expect("connect");
    assert!(
        read_until_closed(&mut s, Duration::from_secs(10))
            .await
            .is_some(),
        "an idle connection stayed"
    );
    let mut s = connect().await.expect("connect");
    s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let seen = read_until_closed(&mut s, Duration::from_secs(10))
        .await
        .expect("closed after idling");
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    // A body that never arrives whole.
    let mut s = connect().await.expect("connect");
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"jsonrpc\""
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let seen = read_until_closed(&mut s, Duration::from_secs(10))
        .await
        .expect("cut off");
    assert!(seen.starts_with("HTTP/1.1 408"), "{seen}");
    // A header over the limit.
    let big = format!(
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(32 * 1024)
    );
    let mut s = connect().await.expect("connect");
    s.write_all(big.as_bytes()).await.expect("write");
    let seen = read_until_closed(&mut s, Duration::from_secs(10))
        .await
        .unwrap_or_default();
    assert!(seen.starts_with("HTTP/1.1 431"), "{seen}");
    gw.stop().await;

    // Connections have a cap: past it, a new one waits until one closes.
    let gw = gateway_with_roles(&dir, |c| c.max_connections = 2).await;
    let held = [
        tokio::net::TcpStream::connect(gw.addr).await.expect("1"),
        tokio::net::TcpStream::connect(gw.addr).await.expect("2"),
    ];
    let health = || {
        http_no_timeout()
            .get(format!("{}/health", gw.base()))
            .timeout(Duration::from_millis(700))
            .send()
    };
    assert!(
        health().await.is_err(),
        "a third connection was served past max_connections"
    );
    drop(held);
    wait_until(
        "a connection slot to free up",
        Duration::from_secs(10),
        || async { health().await.is_ok() },
    )
    .await;
    gw.stop().await;
}

/// Finding 8: sessions were cheap to open for anyone with a token and never returned
/// when their client did not go on after `initialize`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_bounded_in_all_and_half_open_ones_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = gateway_with_roles(&dir, |c| {
        c.max_sessions = 3;
        c.session_init_timeout_ms = 300;
    })
    .await;
    let init = || {
        http()
            .post(gw.mcp_url())
            .bearer_auth(TOKEN)
            .header("accept", "application/json, text/event-stream")
            .json(
                &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
                "protocolVersion":"2025-06-18","capabilities":{},
                "clientInfo":{"name":"x","version":"1"}}}),
            )
            .send()
    };
    let kept = open_session(&gw, TOKEN, json!({})).await;
    let half: Vec<String> = {
        let mut ids = Vec::new();
        for _ in 0..2 {
            let r = init().await.expect("initialize");
            assert_eq!(r.status().as_u16(), 200);
            ids.push(
                r.headers()["mcp-session-id"]
                    .to_str()
                    .expect("ascii")
                    .to_string(),
            );
        }
        ids
    };
    let r = init().await.expect("initialize");
    assert_eq!(r.status().as_u16(), 503, "a session past max_sessions");
    // Sessions never confirmed with notifications/initialized go away; the other stays.
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    for id in &half {
        wait_until(
            "a half-open session to expire",
            Duration::from_secs(10),
            || async {
                post_raw(
                    &gw,
                    TOKEN,
                    list,
                    &[
                        ("mcp-session-id", id),
                        ("mcp-protocol-version", "2025-06-18"),
                    ],
                )
                .await
                .0 == 404
            },
        )
        .await;
    }
    let (status, text) = post_raw(
        &gw,
        TOKEN,
        list,
        &[
            ("mcp-session-id", &kept),
            ("mcp-protocol-version", "2025-06-18"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    // Room again for new sessions.
    assert_eq!(init().await.expect("initialize").status().as_u16(), 200);
    gw.stop().await;
}

/// Finding 9: an upstream's 4xx body was quoted in the client's error, the call log and
/// the log; a backend reflecting headers leaked the credential the gateway presents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_upstream_credential_never_reaches_a_client() {
    const SECRET: &str = "upstream-secret-0123456789";
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = gateway_with_roles(&dir, |_| {}).await;
    let hostile = Hostile::new(&["reflect401", "bigerror"]);
    let seen = std::sync::Arc::clone(&hostile.authorizations);
    let up = serve_hostile(hostile).await;
    let (status, body) = register_with(
        &gw,
        json!({"name": "mirror", "url": up.mcp_url(), "auth": {"bearer": SECRET}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // Both paths: pass-through (plain call) and typed (a call with _meta).
    let plain = call(&gw, "reflect401", json!({})).await;
    let (_, typed) = rpc(
        &gw,
        "tools/call",
        json!({"name": "reflect401", "arguments": {}, "_meta": {"progressToken": "p1"}}),
    )
    .await;
    for reply in [&plain, &typed] {
        assert!(reply["error"].is_object(), "{reply}");
        assert!(!reply.to_string().contains(SECRET), "leaked: {reply}");
        assert!(reply.to_string().contains("401"), "{reply}");
    }
    // An error body over rmcp's 64 KiB bound is a refusal, not "over max_response_bytes".
    let (_, big) = rpc(
        &gw,
        "tools/call",
        json!({"name": "bigerror", "arguments": {}, "_meta": {"progressToken": "p2"}}),
    )
    .await;
    let text = big["error"]["message"].as_str().unwrap_or_default();
    assert!(text.contains("refused"), "{big}");
    assert!(!text.contains("16777216"), "{big}");
    assert!(
        seen.lock()
            .expect("lock")
            .iter()
            .any(|a| a.contains(SECRET)),
        "the gateway did present its credential"
    );
    // A backend that refuses the session itself, echoing the headers: the registration
    // fails without quoting it.
    let refusing = Hostile::new(&["x"]).refusing_initialize();
    let refusing_seen = std::sync::Arc::clone(&refusing.authorizations);
    let refusing_up = serve_hostile(refusing).await;
    let (status, body) = register_with(
        &gw,
        json!({"name": "mirror2", "url": refusing_up.mcp_url(), "auth": {"bearer": SECRET}}),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(!body.to_string().contains(SECRET), "leaked: {body}");
    assert!(body.to_string().contains("401"), "{body}");
    assert!(
        refusing_seen
            .lock()
            .expect("lock")
            .iter()
            .any(|a| a.contains(SECRET))
    );
    refusing_up.stop().await;
    let calls = || async {
        http()
            .get(format!("{}/calls", gw.base()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("calls")
            .text()
            .await
            .expect("text")
    };
    wait_until(
        "the calls in the call log",
        Duration::from_secs(10),
        || async { calls().await.matches("reflect401").count() >= 2 },
    )
    .await;
    let calls = calls().await;
    assert!(!calls.contains(SECRET), "the call log leaked it");
    assert!(!services(&gw).await.to_string().contains(SECRET));
    up.stop().await;
    gw.stop().await;
}

/// Finding 10: each `tools/list_changed` a backend announced was logged and re-listed:
/// a backend announcing in a loop made the gateway re-list 25 times a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_announcing_list_changes_in_a_loop_gets_one_relist_a_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = gateway_with_roles(&dir, |_| {}).await;
    let hostile = Hostile::new(&["get"]).spamming(5_000);
    let lists = std::sync::Arc::clone(&hostile.lists);
    let up = serve_hostile(hostile).await;
    assert_eq!(register(&gw, "noisy", &up.mcp_url()).await.0, 201);
    // The announcements do lead to a re-list...
    wait_until(
        "a re-list after the announcements",
        Duration::from_secs(10),
        || async { lists.load(Ordering::SeqCst) >= 2 },
    )
    .await;
    // ...and then at most one a second: over a window of two seconds, three at most.
    // (Kept: the sleep is the measurement window, not a synchronization.)
    let before = lists.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = lists.load(Ordering::SeqCst) - before;
    assert!(during <= 3, "{during} re-lists in two seconds");
    up.stop().await;
    gw.stop().await;
}

/// Finding 11: a backend could make the gateway hold an endless tool table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_listing_is_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = gateway_with_roles(&dir, |c| {
        c.max_list_items = 500;
        c.max_list_pages = 10;
    })
    .await;
    let names: Vec<String> = (0..600).map(|i| format!("t{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    for (hostile, says) in [
        (
            Hostile::new(&["x"]).paging(Paging::Endless(20)),
            "max_list_pages",
        ),
        (
            Hostile::new(&["x"]).paging(Paging::Endless(100)),
            "max_list_items",
        ),
        (
            Hostile::new(&["x"]).paging(Paging::Loop),
            "repeats the cursor",
        ),
        (Hostile::new(&names), "max_list_items"),
    ] {
        let up = serve_hostile(hostile).await;
        let (status, body) = register(&gw, "endless", &up.mcp_url()).await;
        assert_eq!(status, 502, "{body}");
        assert!(
            body["message"].as_str().unwrap_or_default().contains(says),
            "{body}"
        );
        up.stop().await;
    }
    assert_eq!(services(&gw).await["count"], 0, "nothing was kept");
    gw.stop().await;
}

/// Finding 12: any registrant offering an existing bare name made it ambiguous for
/// every client, breaking shopping-service's own call to user-service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_name_stays_with_the_owner_who_offered_it_first() {
    let stack =
        Stack::start_with(|c| c.credentials = vec![credential("squatter", &["register"])]).await;
    let squat = Hostile::new(&["getUserPreferences"]);
    let squat_calls = std::sync::Arc::clone(&squat.calls);
    let up = serve_hostile(squat).await;
    let (status, body) = register_as(
        &stack.gateway,
        &credential_token("squatter"),
        json!({"name": "squat", "url": up.mcp_url()}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let names = tool_names(&stack.gateway).await;
    assert_eq!(
        names.iter().filter(|n| *n == "getUserPreferences").count(),
        1,
        "{names:?}"
    );
    assert!(
        names.contains(&"squat__getUserPreferences".to_string()),
        "{names:?}"
    );
    let prefs = call(
        &stack.gateway,
        "getUserPreferences",
        json!({"userId": "456"}),
    )
    .await;
    assert!(prefs["result"].is_object(), "{prefs}");
    assert_ne!(
        prefs["result"]["structuredContent"]["tool"], "getUserPreferences",
        "{prefs}"
    );
    let recs = call(
        &stack.gateway,
        "getPersonalizedRecommendations",
        json!({"userId": "456", "limit": 3}),
    )
    .await;
    assert_ne!(recs["result"]["isError"], true, "{recs}");
    assert!(recs["result"].is_object(), "{recs}");
    assert_eq!(squat_calls.load(Ordering::SeqCst), 0);
    up.stop().await;
    stack.stop().await;
}

/// Finding 13: upstream tool names were listed unchecked (NUL, ESC, CR/LF, 100,000
/// characters, the empty name, markup, a right-to-left override).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tool_names_are_listed_valid_and_still_callable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = gateway_with_roles(&dir, |_| {}).await;
    let long = "x".repeat(100_000);
    let originals = [
        "",
        "nul\u{0}x",
        "esc\u{1b}[31mred",
        "cr\r\nlf",
        long.as_str(),
        "<script>alert(1)</script>",
        "\u{202e}gnp.exe",
        "fine_name",
    ];
    let up = serve_hostile(Hostile::new(&originals)).await;
    assert_eq!(register(&gw, "odd", &up.mcp_url()).await.0, 201);
    let names = tool_names(&gw).await;
    assert_eq!(names.len(), originals.len(), "{names:?}");
    for name in &names {
        assert!(
            !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "{name:?}"
        );
    }
    assert!(names.contains(&"fine_name".to_string()));
    // /services shows each public name beside the original, and calls by the public
    // name reach the original.
    let s = services(&gw).await;
    let tools = s["services"][0]["tools"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for original in originals {
        let view = tools
            .iter()
            .find(|t| t["originalName"] == original)
            .unwrap_or_else(|| panic!("{original:?} not in /services"));
        let public = view["name"].as_str().expect("name");
        let reply = call(&gw, public, json!({})).await;
        assert_eq!(
            reply["result"]["structuredContent"]["tool"], original,
            "{public}"
        );
    }
    up.stop().await;
    gw.stop().await;
}

/// Minor findings: call deadlines have a ceiling; a slow backend at registration holds
/// up no other registration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_ask_for_bounded_deadlines_and_wait_for_nobody() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = gateway_with_roles(&dir, |c| c.connect_timeout_ms = 5_000).await;
    let fine = start_fixture("fine", &["a"]).await;
    let (status, body) = register_with(
        &gw,
        json!({"name": "fine", "url": fine.mcp_url(), "callTimeoutMs": 1_000_000_000_000u64}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("max_call_timeout_ms"),
        "{body}"
    );
    // A backend that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_url = format!("http://{}/mcp", silent.local_addr().expect("addr"));
    let (accepted, mut contacted) = tokio::sync::mpsc::channel::<()>(1);
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
            let _ = accepted.try_send(());
        }
    });
    let slow = tokio::spawn({
        let base = gw.base();
        async move {
            http()
                .post(format!("{base}/register"))
                .bearer_auth(TOKEN)
                .json(&json!({"name": "silent", "url": silent_url}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    // The slow registration is connecting to its backend...
    contacted
        .recv()
        .await
        .expect("the gateway contacted the silent backend");
    let (status, body) = register(&gw, "fine", &fine.mcp_url()).await;
    assert_eq!(status, 201, "{body}");
    assert!(
        !slow.is_finished(),
        "the fast registration waited for the slow one"
    );
    assert_eq!(slow.await.expect("join").expect("answer"), 502);
    hold.abort();
    fine.stop().await;
    gw.stop().await;
}

/// Minor findings: only the first `Host`/`Origin` header was checked, and only on
/// `/mcp`; a huge `X-Request-Id` was echoed and stored; the `Host` was reflected into
/// 401 challenges; failed authentication was not throttled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_judged_whole_and_guessing_is_throttled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = gateway_with_roles(&dir, |c| c.auth_failures_per_second = 1).await;
    let raw = |request: String| {
        let addr = gw.addr;
        async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            s.write_all(request.as_bytes()).await.expect("write");
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
            String::from_utf8_lossy(&out).into_owned()
        }
    };
    let two_hosts = raw(format!(
        "GET /services HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert!(two_hosts.starts_with("HTTP/1.1 400"), "{two_hosts}");
    let two_origins = raw(format!(
        "GET /services HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://localhost:1\r\nOrigin: http://evil.example\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert!(two_origins.starts_with("HTTP/1.1 400"), "{two_origins}");
    assert!(
        two_origins.contains("more than one Origin header"),
        "{two_origins}"
    );
    // Admin routes check Host and Origin as /mcp does.
    for (header, value) in [("origin", "http://evil.example"), ("host", "evil.example")] {
        let r = http()
            .post(format!("{}/register", gw.base()))
            .bearer_auth(TOKEN)
            .header(header, value)
            .json(&json!({"name": "x", "url": "http://127.0.0.1:9/mcp"}))
            .send()
            .await
            .expect("register");
        assert_eq!(r.status().as_u16(), 403, "{header}: {value}");
    }
    // No challenge names a host the gateway does not answer.
    let r = http()
        .get(format!("{}/services", gw.base()))
        .header("host", "evil.example")
        .send()
        .await
        .expect("services");
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.headers().get("www-authenticate").is_none());
    // A long request id is replaced by one of the gateway's.
    let long = "i".repeat(60_000);
    let r = http()
        .get(format!("{}/health", gw.base()))
        .header("x-request-id", &long)
        .send()
        .await
        .expect("health");
    let id = r.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        id.len() <= gateway::http::MAX_REQUEST_ID && id != long,
        "{}",
        id.len()
    );
    // Guessing tokens: past the budget (1 a second, 10 at once), the address is refused
    // without its token being looked at, even a right one, until it has budget again.
    let mut throttled = false;
    for i in 0..30 {
        let r = http()
            .get(format!("{}/services", gw.base()))
            .bearer_auth(format!("guess-{i}"))
            .send()
            .await
            .expect("guess");
        if r.status().as_u16() == 429 {
            throttled = true;
            assert!(r.headers().get("retry-after").is_some());
            break;
        }
        assert_eq!(r.status().as_u16(), 401);
    }
    assert!(throttled, "30 wrong tokens were all looked at");
    let r = http()
        .get(format!("{}/services", gw.base()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("services");
    assert_eq!(r.status().as_u16(), 429, "the right token during the block");
    wait_until(
        "the address to have budget again",
        Duration::from_secs(10),
        || async {
            http()
                .get(format!("{}/services", gw.base()))
                .bearer_auth(TOKEN)
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 200)
        },
    )
    .await;
    gw.stop().await;
}

/// Minor finding: what a backend sent on a call's stream that was not JSON (or not for
/// this call) was relayed to the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_calls_own_messages_reach_the_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = gateway_with_roles(&dir, |_| {}).await;
    let up = serve_hostile(Hostile::new(&["noise"])).await;
    assert_eq!(register(&gw, "noisy", &up.mcp_url()).await.0, 201);
    let session = open_session(&gw, TOKEN, json!({})).await;
    let (status, text) = post_raw(
        &gw,
        TOKEN,
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"noise","arguments":{}}}"#,
        &[("mcp-session-id", &session), ("mcp-protocol-version", "2025-06-18")],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let messages: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("not JSON ({e}): {d}")))
        .collect();
    assert_eq!(messages.len(), 2, "{text}");
    assert_eq!(messages[0]["method"], "notifications/message", "{text}");
    assert_eq!(messages[1]["id"], 5, "{text}");
    assert_eq!(
        messages[1]["result"]["structuredContent"]["tool"], "noise",
        "{text}"
    );
    up.stop().await;
    gw.stop().await;
}

/// A DELETE that rmcp refuses (an unknown protocol version) once made the gateway forget
/// the session's owner while the session lived on: another credential could then use it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_delete_leaves_the_session_its_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = gateway_with_roles(&dir, |c| {
        c.credentials.push(credential("other", &["list", "call"]));
    })
    .await;
    let id = open_session(&gw, TOKEN, json!({})).await;
    let refused = end_session(&gw.base_url(), TOKEN, &id, Some("bogus")).await;
    assert!(!(200..300).contains(&refused), "{refused}");
    // Still the owner's: another credential is refused, the owner is served.
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let headers = [
        ("mcp-session-id", id.as_str()),
        ("mcp-protocol-version", "2025-06-18"),
    ];
    let (status, body) = post_raw(&gw, &credential_token("other"), list, &headers).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("session_owner_mismatch"), "{body}");
    let (status, body) = post_raw(&gw, TOKEN, list, &headers).await;
    assert_eq!(status, 200, "{body}");
    // A DELETE rmcp accepts ends it: 200 (rmcp's 202 is a failure to the official
    // Python SDK, which accepts 200 and 204).
    let ended = end_session(&gw.base_url(), TOKEN, &id, Some("2025-06-18")).await;
    assert_eq!(ended, 200);
    let (status, _) = post_raw(&gw, TOKEN, list, &headers).await;
    assert_eq!(status, 404);
    gw.stop().await;
}

/// A session cannot make the gateway follow unbounded resources: any URI routes to the
/// only backend taking subscriptions, so without a bound one session could grow its
/// subscription list (and, in a cluster, its row) without end. The 1025th distinct URI
/// is refused by name; one already followed is still accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_follows_at_most_1024_resources() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start_gateway(gateway_config(&dir.path().join("gw.db"))).await;
    let watcher = fixture::Fixture::new("watcher", &["touch"]).watching("fixture://watched");
    let up = serve_fixture(watcher.clone()).await;
    assert_eq!(register(&gw, "watcher", &up.mcp_url()).await.0, 201);
    let id = open_session(&gw, TOKEN, json!({})).await;
    let headers = [
        ("mcp-session-id", id.as_str()),
        ("mcp-protocol-version", "2025-06-18"),
    ];
    let subscribe = |n: usize| {
        json!({"jsonrpc": "2.0", "id": n, "method": "resources/subscribe",
               "params": {"uri": format!("fixture://r{n}")}})
        .to_string()
    };
    for n in 0..1024 {
        let (status, body) = post_raw(&gw, TOKEN, &subscribe(n), &headers).await;
        assert_eq!(status, 200, "{body}");
        assert!(!body.contains("\"error\""), "subscription {n}: {body}");
    }
    let (status, body) = post_raw(&gw, TOKEN, &subscribe(1024), &headers).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("-32602") && body.contains("1024"),
        "the 1025th refused by name: {body}"
    );
    let (_, body) = post_raw(&gw, TOKEN, &subscribe(7), &headers).await;
    assert!(!body.contains("\"error\""), "one already followed: {body}");
    assert_eq!(watcher.subscribed().len(), 1024);
    up.stop().await;
    gw.stop().await;
}
