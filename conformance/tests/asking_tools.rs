//! The 2025-era tools that ask the client mid-call (`test_sampling`, the elicitation
//! ones), over real HTTP: a 2025-era session is asked within the call (under either
//! revision); a 2026-07-28 request under `--revision 2026` gets the same request in an
//! `InputRequiredResult`, and its retry with the answer completes with the same text.
//! Also `json_schema_2020_12_tool`'s input schema under each revision.

// Sampling is deprecated by SEP-2577 but is 2025-era protocol.
#![allow(deprecated)]

mod common;
use common::start;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use conformance::fixture::{self, Revision};
use rmcp::{
    ClientHandler, ErrorData, RoleClient,
    model::{
        CallToolRequestParams, ClientConfig, CreateMessageRequestParams, CreateMessageResult,
        ElicitRequestParams, ElicitResult, Implementation, ProtocolVersion,
    },
    service::{RequestContext, RunningService},
};
use serde_json::{Value, json};
use service_kit::client::ClientOptions;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(5);

/// A 2026-07-28 `tools/call` declaring `capabilities`, with `extra` params (a retry's
/// `inputResponses`): the HTTP status and the JSON-RPC message answering it.
async fn call_modern(
    addr: SocketAddr,
    name: &str,
    arguments: Value,
    extra: Value,
    capabilities: Value,
) -> (u16, Value) {
    let mut params = json!({"name": name, "arguments": arguments});
    if let (Some(params), Value::Object(extra)) = (params.as_object_mut(), extra) {
        params.extend(extra);
    }
    common::modern(addr, "tools/call", params, capabilities).await
}

fn sampling_answer() -> Value {
    json!({
        "role": "assistant",
        "content": {"type": "text", "text": "four"},
        "model": "test-model",
        "stopReason": "endTurn"
    })
}

fn elicitation_answer() -> Value {
    json!({"action": "accept", "content": {"username": "ada", "email": "ada@example.com"}})
}

/// The one input request of an `InputRequiredResult`: its key and the request.
fn only_question(message: &Value) -> (String, Value) {
    let result = &message["result"];
    assert_eq!(result["resultType"], "input_required", "{message}");
    let requests = result["inputRequests"].as_object().expect("inputRequests");
    assert_eq!(requests.len(), 1, "{message}");
    let (key, request) = requests.iter().next().expect("one");
    (key.clone(), request.clone())
}

fn text(message: &Value) -> &str {
    message["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {message}"))
}

#[tokio::test]
async fn revision_2026_asks_test_sampling_with_input_required_at_2026_07_28() {
    let shutdown = CancellationToken::new();
    let addr = start(Revision::V2026, &shutdown).await;
    let sampling = json!({"sampling": {}});
    let arguments = json!({"prompt": "What is 2+2?"});

    // Round 1: the request it sends within the call in a session, as a question.
    let (status, first) = call_modern(
        addr,
        "test_sampling",
        arguments.clone(),
        json!({}),
        sampling.clone(),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let (key, question) = only_question(&first);
    assert_eq!(
        question,
        json!({
            "method": "sampling/createMessage",
            "params": {
                "messages": [{"role": "user", "content": {"type": "text", "text": "What is 2+2?"}}],
                "maxTokens": 100
            }
        }),
        "{first}"
    );
    assert!(first["result"].get("requestState").is_none(), "{first}");

    // A retry with a malformed answer is asked again.
    let (_, again) = call_modern(
        addr,
        "test_sampling",
        arguments.clone(),
        json!({"inputResponses": {&key: {"action": "accept"}}}),
        sampling.clone(),
    )
    .await;
    assert_eq!(only_question(&again), (key.clone(), question), "{again}");

    // The retry with the answer completes with what the session path answers.
    let (status, done) = call_modern(
        addr,
        "test_sampling",
        arguments.clone(),
        json!({"inputResponses": {&key: sampling_answer()}}),
        sampling,
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    assert_ne!(done["result"]["isError"], true, "{done}");
    assert_eq!(text(&done), "LLM response: four", "{done}");

    // Without sampling declared: the session path's isError result, asked nothing.
    let (_, missing) = call_modern(
        addr,
        "test_sampling",
        arguments,
        json!({}),
        json!({"elicitation": {}}),
    )
    .await;
    assert_eq!(missing["result"]["isError"], true, "{missing}");
    assert_eq!(
        text(&missing),
        "test_sampling: the client did not declare the sampling capability"
    );
    // A missing argument likewise.
    let (_, no_prompt) = call_modern(
        addr,
        "test_sampling",
        json!({}),
        json!({}),
        json!({"sampling": {}}),
    )
    .await;
    assert_eq!(no_prompt["result"]["isError"], true, "{no_prompt}");
    shutdown.cancel();
}

#[tokio::test]
async fn revision_2026_asks_the_elicitation_tools_with_input_required_at_2026_07_28() {
    let shutdown = CancellationToken::new();
    let addr = start(Revision::V2026, &shutdown).await;
    let elicitation = json!({"elicitation": {"form": {}}});
    let cases = [
        (
            "test_elicitation",
            json!({"message": "Your details?"}),
            fixture::content::elicitation_form("Your details?"),
            "User response",
        ),
        (
            "test_elicitation_sep1034_defaults",
            json!({}),
            fixture::content::elicitation_defaults_form(),
            "Elicitation completed",
        ),
        (
            "test_elicitation_sep1330_enums",
            json!({}),
            fixture::content::elicitation_enums_form(),
            "Elicitation completed",
        ),
    ];
    for (name, arguments, form, prefix) in cases {
        let (_, first) = call_modern(
            addr,
            name,
            arguments.clone(),
            json!({}),
            elicitation.clone(),
        )
        .await;
        let (key, question) = only_question(&first);
        assert_eq!(question["method"], "elicitation/create", "{name}: {first}");
        // The whole form: the SEP-1034 defaults, the SEP-1330 enum shapes.
        assert_eq!(question["params"], form, "{name}: {first}");

        let (_, done) = call_modern(
            addr,
            name,
            arguments.clone(),
            json!({"inputResponses": {&key: elicitation_answer()}}),
            elicitation.clone(),
        )
        .await;
        assert_eq!(done["result"]["resultType"], "complete", "{name}: {done}");
        assert_eq!(
            text(&done),
            format!(
                r#"{prefix}: action=accept, content={{"username":"ada","email":"ada@example.com"}}"#
            ),
            "{name}: {done}"
        );

        let (_, missing) = call_modern(addr, name, arguments, json!({}), json!({})).await;
        assert_eq!(missing["result"]["isError"], true, "{name}: {missing}");
        assert_eq!(
            text(&missing),
            format!("{name}: the client did not declare the elicitation capability")
        );
    }
    shutdown.cancel();
}

/// A 2025-era client declaring sampling and elicitation that records what it is asked
/// and answers with [`sampling_answer`] / [`elicitation_answer`].
#[derive(Clone, Default)]
struct Client {
    asked: Arc<Mutex<Vec<Value>>>,
}

impl ClientHandler for Client {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            serde_json::from_value(json!({"sampling": {}, "elicitation": {}}))
                .expect("capabilities"),
            Implementation::new("asking-tools-test", "1.0.0"),
        )
        .with_protocol_version(ProtocolVersion::V_2025_11_25)
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let params = serde_json::to_value(&request).expect("encodes");
        self.asked
            .lock()
            .expect("lock")
            .push(json!({"method": "elicitation/create", "params": params}));
        serde_json::from_value(elicitation_answer())
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let params = serde_json::to_value(&params).expect("encodes");
        self.asked
            .lock()
            .expect("lock")
            .push(json!({"method": "sampling/createMessage", "params": params}));
        serde_json::from_value(sampling_answer())
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))
    }
}

async fn call_in_session(
    session: &RunningService<RoleClient, Client>,
    name: &str,
    arguments: Value,
) -> Value {
    let params: CallToolRequestParams =
        serde_json::from_value(json!({"name": name, "arguments": arguments})).expect("params");
    let result = tokio::time::timeout(WAIT, session.peer().call_tool(params))
        .await
        .unwrap_or_else(|_| panic!("{name} answers"))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::to_value(result).expect("encodes")
}

/// Under either revision a 2025-era session is asked within the call, the same
/// request, and the call answers the same text as the 2026-07-28 retry.
#[tokio::test]
async fn a_2025_era_session_is_asked_within_the_call_under_either_revision() {
    for revision in [Revision::V2025, Revision::V2026] {
        let shutdown = CancellationToken::new();
        let addr = start(revision, &shutdown).await;
        let client = Client::default();
        let session = service_kit::client::connect_with(
            &format!("http://{addr}/mcp"),
            &ClientOptions::default(),
            client.clone(),
        )
        .await
        .expect("connect");

        let result =
            call_in_session(&session, "test_sampling", json!({"prompt": "What is 2+2?"})).await;
        assert_eq!(
            result["content"][0]["text"], "LLM response: four",
            "{revision}: {result}"
        );
        let result = call_in_session(&session, "test_elicitation_sep1330_enums", json!({})).await;
        assert_eq!(
            result["content"][0]["text"],
            r#"Elicitation completed: action=accept, content={"username":"ada","email":"ada@example.com"}"#,
            "{revision}: {result}"
        );
        let asked = client.asked.lock().expect("lock").clone();
        assert_eq!(asked.len(), 2, "{revision}: {asked:?}");
        assert_eq!(asked[0]["method"], "sampling/createMessage");
        assert_eq!(asked[0]["params"]["maxTokens"], 100);
        assert_eq!(
            asked[1]["params"],
            fixture::content::elicitation_enums_form(),
            "{revision}"
        );
        session.cancel().await.expect("close");
        shutdown.cancel();
    }
}

/// `json_schema_2020_12_tool`'s input schema: the SEP-2106 document for 2026-07-28
/// requests and for every session under `--revision 2025`; the SEP-1613 one for a
/// 2025-era session under `--revision 2026`.
#[tokio::test]
async fn json_schema_2020_12_tool_serves_the_sep_2106_schema_where_it_should() {
    for (revision, sep2106) in [(Revision::V2025, true), (Revision::V2026, false)] {
        let shutdown = CancellationToken::new();
        let addr = start(revision, &shutdown).await;
        let session =
            service_kit::client::connect(&format!("http://{addr}/mcp"), &ClientOptions::default())
                .await
                .expect("connect");
        let tools = session.peer().list_all_tools().await.expect("tools/list");
        let tool = tools
            .iter()
            .find(|t| t.name == "json_schema_2020_12_tool")
            .expect("listed");
        let schema = Value::Object((*tool.input_schema).clone());
        assert_eq!(
            schema == fixture::modern::json_schema_2020_12(),
            sep2106,
            "{revision}: {schema}"
        );
        // Either way the SEP-1613 keywords are there.
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert!(schema["$defs"]["address"].is_object(), "{schema}");
        assert_eq!(schema["additionalProperties"], false);
        session.cancel().await.expect("close");
        shutdown.cancel();
    }
}
