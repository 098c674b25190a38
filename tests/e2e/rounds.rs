//! Multi round-trip requests: a 2026-07-28 client in front of a 2025-era backend that
//! asks during a call (sampling, elicitation, roots) gets `input_required`, and its retry
//! with `inputResponses` and `requestState` resumes that same backend call. The state is
//! sealed and bound to the credential and the request; a call nobody continues is
//! cancelled upstream; parked calls are bounded.

use std::{sync::atomic::Ordering, time::Duration};

use serde_json::{Value, json};

use crate::support::*;

/// The conformance fixture (sampling, elicitation, ... tools) on an ephemeral port, as a
/// 2025-era backend that asks during a call.
async fn conformance_fixture() -> (String, tokio_util::sync::CancellationToken) {
    fixture_with(legacy_fixture()).await
}

/// The conformance fixture with `config` (the default: a 2026-07-28 backend, which
/// answers `input_required` itself).
pub async fn fixture_with(
    config: conformance::fixture::Config,
) -> (String, tokio_util::sync::CancellationToken) {
    let (addr, stop) = start_conformance_fixture(config).await;
    (format!("http://{addr}/mcp"), stop)
}

/// A 2026-07-28 `method` request naming `name` (the `Mcp-Name` header), with the
/// client's `capabilities` in its `_meta`, sent with `token`: the status and the
/// JSON-RPC message that answered it.
pub async fn modern(
    gw: &Running,
    token: &str,
    method: &str,
    name: &str,
    mut params: Value,
    capabilities: Value,
) -> (u16, Value) {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": capabilities,
        "io.modelcontextprotocol/clientInfo": {"name": "modern", "version": "1"}
    });
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params});
    let resp = http()
        .post(gw.mcp_url())
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method)
        .header("mcp-name", name)
        .body(body.to_string())
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let data = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .rfind(|d| !d.is_empty())
        .unwrap_or(text.trim());
    let message = serde_json::from_str(data).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, message)
}

/// `tools/call` of `tool` with `arguments` (plus `extra` params: a retry's answers).
pub async fn call_tool(
    gw: &Running,
    token: &str,
    tool: &str,
    arguments: Value,
    extra: Value,
    capabilities: Value,
) -> Value {
    let mut params = json!({"name": tool, "arguments": arguments});
    if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    modern(gw, token, "tools/call", tool, params, capabilities)
        .await
        .1
}

/// The one question of an `input_required` answer: its key and request.
pub fn only_question(answer: &Value) -> (String, Value) {
    let result = &answer["result"];
    assert_eq!(result["resultType"], "input_required", "{answer}");
    let requests = result["inputRequests"].as_object().expect("inputRequests");
    assert_eq!(requests.len(), 1, "{answer}");
    let (key, request) = requests.iter().next().expect("one");
    (key.clone(), request.clone())
}

pub fn state_of(answer: &Value) -> String {
    answer["result"]["requestState"]
        .as_str()
        .unwrap_or_else(|| panic!("no requestState: {answer}"))
        .to_string()
}

fn error_of(answer: &Value) -> (i64, String) {
    let e = &answer["error"];
    (
        e["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("not an error: {answer}")),
        e["message"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backends_question_comes_back_as_input_required_and_the_retry_resumes_the_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.credentials = vec![credential("other", &["call"])];
    let gw = start_gateway(config).await;
    let (fixture, stop) = conformance_fixture().await;
    let (status, body) = register(&gw, "conformance", &fixture).await;
    assert_eq!(status, 201, "{body}");
    let sampling = json!({"sampling": {}});
    let arguments = json!({"prompt": "What is 2+2?"});
    let first = call_tool(
        &gw,
        TOKEN,
        "test_sampling",
        arguments.clone(),
        json!({}),
        sampling.clone(),
    )
    .await;
    let (key, question) = only_question(&first);
    assert_eq!(question["method"], "sampling/createMessage", "{first}");
    assert!(
        question["params"]["messages"].to_string().contains("2+2"),
        "the backend's own request: {question}"
    );
    let state = state_of(&first);
    let answer =
        json!({"role": "assistant", "content": {"type": "text", "text": "four"}, "model": "m"});
    let retry =
        |state: &str, responses: Value| json!({"inputResponses": responses, "requestState": state});

    // Refused, each with its reason, and nothing changes: the call stays parked.
    let mut tampered = state.clone();
    let last = tampered.pop().expect("non-empty");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let refusals = [
        (
            TOKEN.to_string(),
            tampered,
            json!({&key: answer}),
            arguments.clone(),
            "requestState",
        ),
        // Replayed by another credential.
        (
            credential_token("other"),
            state.clone(),
            json!({&key: answer}),
            arguments.clone(),
            "requestState",
        ),
        // For another request (other arguments).
        (
            TOKEN.to_string(),
            state.clone(),
            json!({&key: answer}),
            json!({"prompt": "else"}),
            "requestState",
        ),
        (
            TOKEN.to_string(),
            state.clone(),
            json!({&key: {"action": "accept"}}),
            arguments.clone(),
            "not a sampling/createMessage result",
        ),
    ];
    for (token, state, responses, arguments, why) in refusals {
        let refused = call_tool(
            &gw,
            &token,
            "test_sampling",
            arguments,
            retry(&state, responses),
            sampling.clone(),
        )
        .await;
        let (code, message) = error_of(&refused);
        assert_eq!(code, -32602, "{refused}");
        assert!(message.contains(why), "{why}: {refused}");
    }

    // A retry without the answer is asked again (SEP-2322), in a new round: the older
    // round's state continues nothing.
    let again = call_tool(
        &gw,
        TOKEN,
        "test_sampling",
        arguments.clone(),
        retry(&state, json!({})),
        sampling.clone(),
    )
    .await;
    let (same_key, same_question) = only_question(&again);
    assert_eq!((&same_key, &same_question), (&key, &question), "{again}");
    let stale = call_tool(
        &gw,
        TOKEN,
        "test_sampling",
        arguments.clone(),
        retry(&state, json!({&key: answer})),
        sampling.clone(),
    )
    .await;
    assert!(error_of(&stale).1.contains("earlier round"), "{stale}");
    let state = state_of(&again);
    // Keys the call did not ask are ignored.
    let done = call_tool(
        &gw,
        TOKEN,
        "test_sampling",
        arguments.clone(),
        retry(
            &state,
            json!({&key: answer, "extra-9": {"action": "accept"}}),
        ),
        sampling.clone(),
    )
    .await;
    let result = &done["result"];
    assert_eq!(result["resultType"], "complete", "{done}");
    assert_eq!(result["content"][0]["text"], "LLM response: four", "{done}");
    // The state of a finished call opens, but continues nothing.
    let replayed = call_tool(
        &gw,
        TOKEN,
        "test_sampling",
        arguments,
        retry(&state, json!({&key: answer})),
        sampling,
    )
    .await;
    assert!(error_of(&replayed).1.contains("is over"), "{replayed}");

    // Elicitation likewise.
    let elicitation = json!({"elicitation": {"form": {}}});
    let arguments = json!({"message": "Your name?"});
    let first = call_tool(
        &gw,
        TOKEN,
        "test_elicitation",
        arguments.clone(),
        json!({}),
        elicitation.clone(),
    )
    .await;
    let (key, question) = only_question(&first);
    assert_eq!(question["method"], "elicitation/create", "{first}");
    let accepted =
        json!({"action": "accept", "content": {"username": "ada", "email": "ada@example.com"}});
    let done = call_tool(
        &gw,
        TOKEN,
        "test_elicitation",
        arguments,
        retry(&state_of(&first), json!({&key: accepted})),
        elicitation,
    )
    .await;
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    assert!(
        done["result"]["content"].to_string().contains("accept"),
        "{done}"
    );
    stop.cancel();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_the_client_did_not_declare_it_can_answer_is_the_missing_capability_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start_gateway(gateway_config(&dir.path().join("gw.db"))).await;
    let (conformance, stop) = conformance_fixture().await;
    assert_eq!(register(&gw, "conformance", &conformance).await.0, 201);
    let fixture = fixture::Fixture::new("asker", &["pending_roots"]);
    let up = serve_fixture(fixture.clone()).await;
    assert_eq!(register(&gw, "asker", &up.mcp_url()).await.0, 201);
    // The backend sees the capabilities the client declared: one that checks finds no
    // sampling and says so.
    let answer = call_tool(
        &gw,
        TOKEN,
        "test_sampling",
        json!({"prompt": "hi"}),
        json!({}),
        json!({"elicitation": {}}),
    )
    .await;
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    assert!(
        answer["result"]["content"]
            .to_string()
            .contains("did not declare the sampling"),
        "{answer}"
    );
    // One that asks anyway gets an error, and its client the revision's -32021 naming
    // what it lacks; the call is cancelled, never left hanging.
    let answer = call_tool(&gw, TOKEN, "pending_roots", json!({}), json!({}), json!({})).await;
    let (code, _) = error_of(&answer);
    assert_eq!(code, -32021, "{answer}");
    assert!(
        answer["error"]["data"]["requiredCapabilities"]["roots"].is_object(),
        "{answer}"
    );
    wait_until(
        "the refused call is cancelled upstream",
        Duration::from_secs(10),
        || {
            let n = fixture.cancelled.load(Ordering::SeqCst);
            async move { n >= 1 }
        },
    )
    .await;
    stop.cancel();
    up.stop().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_nobody_continues_is_cancelled_upstream_and_parked_calls_are_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.input_timeout_ms = 500;
    // Far beyond the waits below: only input_timeout_ms can end the parked call in time.
    config.call_timeout_ms = 120_000;
    config.max_waiting_calls_per_credential = 1;
    let gw = start_gateway(config).await;
    let fixture = fixture::Fixture::new("asker", &["pending_roots"]);
    let up = serve_fixture(fixture.clone()).await;
    assert_eq!(register(&gw, "asker", &up.mcp_url()).await.0, 201);
    let roots = json!({"roots": {}});
    let first = call_tool(
        &gw,
        TOKEN,
        "pending_roots",
        json!({}),
        json!({}),
        roots.clone(),
    )
    .await;
    let (key, question) = only_question(&first);
    assert_eq!(question["method"], "roots/list", "{first}");
    // One parked call per credential: the next one that asks is refused, and cancelled.
    let second = call_tool(
        &gw,
        TOKEN,
        "pending_roots",
        json!({}),
        json!({}),
        roots.clone(),
    )
    .await;
    assert!(
        error_of(&second).1.contains("max_waiting_calls"),
        "{second}"
    );
    wait_until(
        "the refused call is cancelled upstream",
        Duration::from_secs(10),
        || {
            let n = fixture.cancelled.load(Ordering::SeqCst);
            async move { n >= 1 }
        },
    )
    .await;
    // Nobody retries the first: cancelled upstream after input_timeout_ms.
    wait_until(
        "the parked call is cancelled upstream",
        Duration::from_secs(10),
        || {
            let n = fixture.cancelled.load(Ordering::SeqCst);
            async move { n >= 2 }
        },
    )
    .await;
    let late = call_tool(
        &gw,
        TOKEN,
        "pending_roots",
        json!({}),
        json!({"inputResponses": {&key: {"roots": []}}, "requestState": state_of(&first)}),
        roots,
    )
    .await;
    assert_eq!(error_of(&late).0, -32602, "{late}");
    up.stop().await;
    gw.stop().await;
}

/// The protocol revision `/services` shows for the one instance of `service`.
async fn negotiated(gw: &Running, service: &str) -> String {
    let all = services(gw).await;
    let entry = all["services"]
        .as_array()
        .and_then(|s| s.iter().find(|e| e["name"] == service))
        .unwrap_or_else(|| panic!("{service} not in /services: {all}"));
    entry["instances"][0]["protocolVersion"]
        .as_str()
        .unwrap_or_else(|| panic!("no protocolVersion: {entry}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modern_backends_own_question_travels_sealed_and_its_retry_reaches_that_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.credentials = vec![credential("other", &["call"])];
    let gw = start_gateway(config).await;
    let (modern_url, stop) = fixture_with(Default::default()).await;
    let (legacy_url, stop_legacy) = conformance_fixture().await;
    assert_eq!(register(&gw, "conformance", &modern_url).await.0, 201);
    assert_eq!(register(&gw, "legacy", &legacy_url).await.0, 201);
    // Each backend is spoken to in the newest revision it has.
    assert_eq!(negotiated(&gw, "conformance").await, "2026-07-28");
    assert_eq!(negotiated(&gw, "legacy").await, "2025-11-25");

    let elicitation = json!({"elicitation": {}});
    // Both backends offer the diagnostic tools: the modern one's, by its qualified name.
    let tool = "conformance__test_input_required_result_request_state";
    let first = call_tool(&gw, TOKEN, tool, json!({}), json!({}), elicitation.clone()).await;
    let (key, question) = only_question(&first);
    assert_eq!(key, "confirm", "the backend's own key: {first}");
    assert_eq!(question["method"], "elicitation/create", "{first}");
    let state = state_of(&first);
    let answers = json!({"confirm": {"action": "accept", "content": {"ok": true}}});
    let retry = |state: &str| json!({"inputResponses": answers, "requestState": state});

    // A tampered state, and the right one from another credential, do not open.
    let mut tampered = state.clone().into_bytes();
    let at = tampered.len() / 2;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    for (token, state) in [
        (TOKEN.to_string(), tampered.as_str()),
        (credential_token("other"), state.as_str()),
    ] {
        let refused = call_tool(
            &gw,
            &token,
            tool,
            json!({}),
            retry(state),
            elicitation.clone(),
        )
        .await;
        let (code, message) = error_of(&refused);
        assert_eq!(code, -32602, "{refused}");
        assert!(message.contains("not issued by this gateway"), "{refused}");
    }

    // The retry reaches the backend with its own state, which verifies there.
    let done = call_tool(
        &gw,
        TOKEN,
        tool,
        json!({}),
        retry(&state),
        elicitation.clone(),
    )
    .await;
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    let text = done["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.starts_with("state-ok"), "{done}");

    // Three rounds: a new state each round, and the answer at the end.
    let tool = "conformance__test_input_required_result_multi_round";
    let r1 = call_tool(&gw, TOKEN, tool, json!({}), json!({}), elicitation.clone()).await;
    let (k1, _) = only_question(&r1);
    let s1 = state_of(&r1);
    let r2 = call_tool(
        &gw,
        TOKEN,
        tool,
        json!({}),
        json!({"inputResponses": {k1: {"action": "accept", "content": {"name": "Ada"}}}, "requestState": s1}),
        elicitation.clone(),
    )
    .await;
    let (k2, _) = only_question(&r2);
    let s2 = state_of(&r2);
    assert_ne!(s1, s2, "each round has its own state");
    let r3 = call_tool(
        &gw,
        TOKEN,
        tool,
        json!({}),
        json!({"inputResponses": {k2: {"action": "accept", "content": {"color": "blue"}}}, "requestState": s2}),
        elicitation,
    )
    .await;
    assert_eq!(r3["result"]["resultType"], "complete", "{r3}");
    let text = r3["result"]["content"][0]["text"].to_string();
    assert!(text.contains("Ada") && text.contains("blue"), "{r3}");
    stop.cancel();
    stop_legacy.cancel();
    gw.stop().await;
}

/// A 2025-era client that declares elicitation and answers every question with a name.
#[derive(Clone, Default)]
struct Answering {
    asked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl rmcp::ClientHandler for Answering {
    fn get_info(&self) -> rmcp::model::ClientConfig {
        rmcp::model::ClientConfig::new(
            serde_json::from_value(json!({"elicitation": {}})).expect("capabilities"),
            rmcp::model::Implementation::new("answering", "1.0.0"),
        )
    }

    async fn create_elicitation(
        &self,
        _request: rmcp::model::ElicitRequestParams,
        _context: rmcp::service::RequestContext<rmcp::RoleClient>,
    ) -> Result<rmcp::model::ElicitResult, rmcp::ErrorData> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        serde_json::from_value(json!({"action": "accept", "content": {"name": "Ada"}}))
            .map_err(|e| rmcp::ErrorData::internal_error(e.to_string(), None))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_client_is_asked_a_modern_backends_questions_on_its_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start_gateway(gateway_config(&dir.path().join("gw.db"))).await;
    let (url, stop) = fixture_with(Default::default()).await;
    assert_eq!(register(&gw, "conformance", &url).await.0, 201);
    assert_eq!(negotiated(&gw, "conformance").await, "2026-07-28");
    let call = rmcp::model::CallToolRequestParams::new("test_input_required_result_elicitation");

    // The backend's `input_required` becomes an elicitation/create on the client's
    // session; its answer goes back as inputResponses, and the call completes.
    let handler = Answering::default();
    let asked = handler.asked.clone();
    let client = session_with(&gw.mcp_url(), "answering", handler).await;
    let result = client
        .peer()
        .call_tool(call.clone())
        .await
        .expect("the call completes");
    let text = serde_json::to_value(&result).expect("json").to_string();
    assert!(text.contains("Hello, Ada!"), "{text}");
    assert_eq!(
        asked.load(Ordering::SeqCst),
        1,
        "asked once, on the session"
    );
    let _ = client.cancel().await;

    // A client that declared no elicitation cannot be asked: the revision's error.
    let plain = mcp_client(&gw).await;
    let refused = plain
        .peer()
        .call_tool(call)
        .await
        .expect_err("cannot be asked");
    let text = format!("{refused:?}");
    assert!(text.contains("-32021") || text.contains("32021"), "{text}");
    let _ = plain.cancel().await;
    stop.cancel();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modern_backends_list_change_reaches_the_gateways_clients() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start_gateway(gateway_config(&dir.path().join("gw.db"))).await;
    let (url, stop) = fixture_with(Default::default()).await;
    assert_eq!(register(&gw, "conformance", &url).await.0, 201);
    assert_eq!(negotiated(&gw, "conformance").await, "2026-07-28");
    let handler = Counting::default();
    let changed = handler.0.clone();
    let client = session_with(&gw.mcp_url(), "counting", handler).await;
    let before = client.peer().list_all_tools().await.expect("tools");
    assert!(!before.iter().any(|t| t.name == "test_trigger_added_tool"));
    // The backend announces the change on the gateway's listen stream only (2026-07-28
    // has no session to send it on); the gateway re-lists and tells its clients.
    let (status, body) = rpc(
        &gw,
        "tools/call",
        json!({"name": "test_trigger_tool_change", "arguments": {}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_until(
        "the client heard of the change",
        Duration::from_secs(10),
        || {
            let n = changed.load(Ordering::SeqCst);
            async move { n > 0 }
        },
    )
    .await;
    let after = client.peer().list_all_tools().await.expect("tools");
    assert!(
        after.iter().any(|t| t.name == "test_trigger_added_tool"),
        "the new list: {:?}",
        after.iter().map(|t| t.name.to_string()).collect::<Vec<_>>()
    );
    let _ = client.cancel().await;
    stop.cancel();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modern_backends_task_is_reached_through_the_id_the_gateway_hands_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.credentials = vec![credential("other", &["call"])];
    let gw = start_gateway(config).await;
    let (url, stop) = fixture_with(Default::default()).await;
    assert_eq!(register(&gw, "conformance", &url).await.0, 201);
    let tasks = json!({"extensions": {"io.modelcontextprotocol/tasks": {}}});

    // The gateway advertises the extension its backend offers.
    let (_, discovered) = modern(&gw, TOKEN, "server/discover", "", json!({}), json!({})).await;
    assert!(
        discovered["result"]["capabilities"]["extensions"]
            .get("io.modelcontextprotocol/tasks")
            .is_some(),
        "{discovered}"
    );

    // A call that declares the extension gets the backend's task, under an id of the
    // gateway's.
    let created = call_tool(
        &gw,
        TOKEN,
        "slow_compute",
        json!({"seconds": 30, "label": "e2e"}),
        json!({}),
        tasks.clone(),
    )
    .await;
    assert_eq!(created["result"]["resultType"], "task", "{created}");
    let id = created["result"]["taskId"]
        .as_str()
        .expect("taskId")
        .to_string();
    let get = |token: String, id: String, caps: Value| {
        let gw = &gw;
        async move {
            modern(gw, &token, "tasks/get", &id, json!({"taskId": id}), caps)
                .await
                .1
        }
    };
    let status = get(TOKEN.into(), id.clone(), tasks.clone()).await;
    assert_eq!(status["result"]["taskId"], id.as_str(), "{status}");
    assert_eq!(status["result"]["status"], "working", "{status}");

    // Another credential, a made-up id, and a request that does not declare the
    // extension are refused.
    let foreign = get(credential_token("other"), id.clone(), tasks.clone()).await;
    assert_eq!(error_of(&foreign).0, -32602, "{foreign}");
    let unknown = get(TOKEN.into(), "no-such-task".into(), tasks.clone()).await;
    assert_eq!(error_of(&unknown).0, -32602, "{unknown}");
    let undeclared = get(TOKEN.into(), id.clone(), json!({})).await;
    assert_eq!(error_of(&undeclared).0, -32021, "{undeclared}");

    // Cancelled through the gateway, the backend's task settles cancelled.
    let (_, cancelled) = modern(
        &gw,
        TOKEN,
        "tasks/cancel",
        &id,
        json!({"taskId": id}),
        tasks.clone(),
    )
    .await;
    assert!(cancelled.get("result").is_some(), "{cancelled}");
    let mut last = Value::Null;
    for _ in 0..50 {
        last = get(TOKEN.into(), id.clone(), tasks.clone()).await;
        if last["result"]["status"] == "cancelled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last["result"]["status"], "cancelled", "{last}");
    stop.cancel();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pass_through_path_speaks_2026_to_a_modern_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start_gateway(gateway_config(&dir.path().join("gw.db"))).await;
    let (url, stop) = fixture_with(Default::default()).await;
    assert_eq!(register(&gw, "conformance", &url).await.0, 201);
    assert_eq!(negotiated(&gw, "conformance").await, "2026-07-28");

    // A plain call: on the pass-through path, in that revision's request, answered in
    // the client's (no resultType).
    let before = passthrough_served(&gw, "tools/call").await;
    let (status, body) = rpc(
        &gw,
        "tools/call",
        json!({"name": "test_simple_text", "arguments": {}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["result"]["content"][0]["text"], "This is a simple text response for testing.",
        "{body}"
    );
    assert!(body["result"].get("resultType").is_none(), "{body}");
    assert_eq!(
        passthrough_served(&gw, "tools/call").await,
        before + 1,
        "served by the pass-through path"
    );

    // The backend asks for input: a client of this path declared nothing, so it gets
    // the missing-capability error naming what the backend wanted.
    let (_, body) = rpc(
        &gw,
        "tools/call",
        json!({"name": "test_input_required_result_elicitation", "arguments": {}}),
    )
    .await;
    assert_eq!(body["error"]["code"], -32021, "{body}");
    assert!(
        body["error"]["data"]["requiredCapabilities"]
            .get("elicitation")
            .is_some(),
        "{body}"
    );
    assert_eq!(passthrough_served(&gw, "tools/call").await, before + 2);

    stop.cancel();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tools_param_headers_reach_a_modern_backend_on_either_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.tool_search = gateway::search::Mode::On;
    let gw = start_gateway(config).await;
    let (url, stop) = fixture_with(Default::default()).await;
    assert_eq!(register(&gw, "conformance", &url).await.0, 201);
    assert_eq!(negotiated(&gw, "conformance").await, "2026-07-28");
    // The backend checks that `region` travels in the Mcp-Param-Region header too, and
    // refuses the call (-32020) when it does not.
    let region = json!({"name": "test_custom_header", "arguments": {"region": "eu-west"}});
    let before = passthrough_served(&gw, "tools/call").await;
    let (status, body) = rpc(&gw, "tools/call", region.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["result"]["content"][0]["text"], "Region: eu-west",
        "{body}"
    );
    assert_eq!(
        passthrough_served(&gw, "tools/call").await,
        before + 1,
        "written by the pass-through path"
    );
    // Through tool search's call_tool, from a client that declared elicitation: the
    // typed path, on an upstream session opened for those capabilities, which never
    // listed the tools itself. A value that cannot travel bare goes as base64.
    let client = session_with(&gw.mcp_url(), "answering", Answering::default()).await;
    for (region, expected) in [("us-east", "Region: us-east"), ("Zürich", "Region: Zürich")] {
        let call = serde_json::from_value(json!({"name": "call_tool", "arguments": {
            "name": "test_custom_header", "arguments": {"region": region}}}))
        .expect("params");
        let result = client.peer().call_tool(call).await.expect("the call");
        let text = serde_json::to_value(&result).expect("json").to_string();
        assert!(text.contains(expected), "{text}");
    }
    assert_eq!(
        passthrough_served(&gw, "tools/call").await,
        before + 1,
        "the typed path served those"
    );
    let _ = client.cancel().await;
    stop.cancel();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_clients_input_responses_never_reach_a_modern_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start_gateway(gateway_config(&dir.path().join("gw.db"))).await;
    let (url, stop) = fixture_with(Default::default()).await;
    assert_eq!(register(&gw, "conformance", &url).await.0, 201);
    let handler = Answering::default();
    let asked = handler.asked.clone();
    let client = session_with(&gw.mcp_url(), "answering", handler).await;
    // A 2025-era client slips the 2026-07-28 members into its call: the backend would
    // take the answer as given. The gateway drops them; the backend asks, and the
    // client's real answer (Ada) completes the call.
    let mut call =
        rmcp::model::CallToolRequestParams::new("test_input_required_result_elicitation");
    call.input_responses = Some(
        serde_json::from_value(json!({
            "user_name": {"action": "accept", "content": {"name": "Mallory"}}
        }))
        .expect("responses"),
    );
    call.request_state = Some("forged".into());
    let result = client
        .peer()
        .call_tool(call)
        .await
        .expect("the call completes");
    let text = serde_json::to_value(&result).expect("json").to_string();
    assert!(text.contains("Hello, Ada!"), "{text}");
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    let _ = client.cancel().await;
    stop.cancel();
    gw.stop().await;
}
