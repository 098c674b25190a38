//! The 2026-07-28 diagnostic tools under `--revision 2025`, over real HTTP: listed to
//! every 2025-era session and implemented the 2025 way, with requests to the client
//! within the call (answered here by an rmcp client with sampling, elicitation and roots
//! handlers) and notifications on the session.

// Sampling, roots and logging are deprecated by SEP-2577 but are 2025-era protocol.
#![allow(deprecated)]

mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use conformance::fixture::{self, Revision};
use rmcp::{
    ClientHandler, ErrorData, RoleClient, ServiceError,
    model::{
        CallToolRequestParams, ClientConfig, CreateMessageRequestParams, CreateMessageResult,
        ElicitRequestParams, ElicitResult, Implementation, ListRootsResult,
        LoggingMessageNotificationParam, ProtocolVersion,
    },
    service::{NotificationContext, RequestContext, RunningService},
};
use serde_json::{Value, json};
use service_kit::client::ClientOptions;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long a test waits for something the fixture should send.
const WAIT: Duration = Duration::from_secs(5);

/// A 2025-era client that declares `capabilities` and answers what the fixture asks:
/// elicitations with a `name` (Alice), `color` (blue), `ok` (true) or `answer`, sampling
/// with "Paris", roots/list with one root. It records every request and notification.
/// With `together` set, each answer waits (up to [`WAIT`]) until that many requests
/// are outstanding at once: requests sent one after the other then fail.
#[derive(Clone, Default)]
struct Client {
    capabilities: Value,
    together: Option<usize>,
    outstanding: Arc<AtomicUsize>,
    arrived: Arc<Notify>,
    asked: Arc<Mutex<Vec<Value>>>,
    logs: Arc<Mutex<Vec<Value>>>,
    tools_changed: Arc<AtomicUsize>,
    prompts_changed: Arc<AtomicUsize>,
    changed: Arc<Notify>,
}

impl Client {
    fn declaring(capabilities: Value) -> Self {
        Client {
            capabilities,
            ..Client::default()
        }
    }

    fn asked(&self) -> Vec<Value> {
        self.asked.lock().expect("lock").clone()
    }

    /// Records `request`; with `together`, waits until enough are outstanding.
    async fn ask(&self, request: Value) -> Result<(), ErrorData> {
        self.asked.lock().expect("lock").push(request);
        let Some(together) = self.together else {
            return Ok(());
        };
        self.outstanding.fetch_add(1, Ordering::SeqCst);
        self.arrived.notify_waiters();
        let all_here = async {
            loop {
                let notified = self.arrived.notified();
                if self.outstanding.load(Ordering::SeqCst) >= together {
                    self.arrived.notify_waiters();
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(WAIT, all_here).await.map_err(|_| {
            ErrorData::internal_error(
                format!("the {together} requests did not come together"),
                None,
            )
        })
    }
}

impl ClientHandler for Client {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            serde_json::from_value(self.capabilities.clone()).expect("capabilities"),
            Implementation::new("diagnostics-2025-test", "1.0.0"),
        )
        .with_protocol_version(ProtocolVersion::V_2025_11_25)
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let request = serde_json::to_value(&request).expect("encodes");
        let properties = request["requestedSchema"]["properties"].clone();
        self.ask(json!({"method": "elicitation/create", "params": request}))
            .await?;
        let content: serde_json::Map<String, Value> = properties
            .as_object()
            .into_iter()
            .flatten()
            .map(|(property, _)| {
                let value = match property.as_str() {
                    "name" => json!("Alice"),
                    "color" => json!("blue"),
                    "ok" => json!(true),
                    _ => json!("anything"),
                };
                (property.clone(), value)
            })
            .collect();
        serde_json::from_value(json!({"action": "accept", "content": content}))
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let params = serde_json::to_value(&params).expect("encodes");
        self.ask(json!({"method": "sampling/createMessage", "params": params}))
            .await?;
        serde_json::from_value(json!({
            "role": "assistant",
            "content": {"type": "text", "text": "Paris"},
            "model": "test-model",
            "stopReason": "endTurn"
        }))
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))
    }

    async fn list_roots(
        &self,
        _context: RequestContext<RoleClient>,
    ) -> Result<ListRootsResult, ErrorData> {
        self.ask(json!({"method": "roots/list"})).await?;
        serde_json::from_value(
            json!({"roots": [{"uri": "file:///test/root", "name": "Test Root"}]}),
        )
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let params = serde_json::to_value(&params).expect("encodes");
        self.logs.lock().expect("lock").push(params);
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.tools_changed.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.prompts_changed.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

fn all_capabilities() -> Value {
    json!({"sampling": {}, "elicitation": {}, "roots": {"listChanged": false}})
}

async fn connect(addr: SocketAddr, client: Client) -> RunningService<RoleClient, Client> {
    service_kit::client::connect_with(
        &format!("http://{addr}/mcp"),
        &ClientOptions::default(),
        client,
    )
    .await
    .expect("connect")
}

fn call(name: &str) -> CallToolRequestParams {
    serde_json::from_value(json!({"name": name, "arguments": {}})).expect("params")
}

fn value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("encodes")
}

/// The text of a tool call's first content block.
async fn text_of(session: &RunningService<RoleClient, Client>, name: &str) -> String {
    let result = tokio::time::timeout(WAIT, session.peer().call_tool(call(name)))
        .await
        .unwrap_or_else(|_| panic!("{name} answers"))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let result = value(&result);
    assert_ne!(result["isError"], true, "{name}: {result}");
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: no text in {result}"))
        .to_owned()
}

#[tokio::test]
async fn the_diagnostic_tools_and_prompt_are_listed_to_every_session() {
    let shutdown = CancellationToken::new();
    let addr = start(&shutdown).await;
    // A client declaring nothing sees them as well.
    let session = connect(addr, Client::declaring(json!({}))).await;
    let info = value(&session.peer().peer_info().expect("server info"));
    assert_eq!(info["protocolVersion"], "2025-11-25", "{info}");
    assert_eq!(info["capabilities"]["tools"]["listChanged"], true, "{info}");
    assert_eq!(
        info["capabilities"]["prompts"]["listChanged"], true,
        "{info}"
    );

    let tools = session.peer().list_all_tools().await.expect("tools/list");
    let names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    let expected: Vec<&str> = fixture::content::TOOL_NAMES
        .iter()
        .chain(fixture::modern::TOOL_NAMES.iter())
        .copied()
        .collect();
    assert_eq!(names, expected);
    // Not the tasks: the tasks extension is 2026-07-28 only.
    for task_tool in fixture::tasks::TOOL_NAMES {
        assert!(!names.iter().any(|n| n == task_tool), "{task_tool} listed");
    }
    // The same names, descriptions and input schemas as at 2026-07-28.
    let listed: Vec<Value> = tools
        .iter()
        .filter(|t| fixture::modern::TOOL_NAMES.contains(&t.name.as_ref()))
        .map(value)
        .collect();
    assert_eq!(Value::Array(listed), fixture::modern::tools());

    let prompts = session
        .peer()
        .list_all_prompts()
        .await
        .expect("prompts/list");
    assert!(
        prompts
            .iter()
            .any(|p| p.name == fixture::modern::PROMPT_NAME),
        "{prompts:?}"
    );
    session.cancel().await.expect("close");
    shutdown.cancel();
}

#[tokio::test]
async fn input_required_tools_ask_within_the_call() {
    let shutdown = CancellationToken::new();
    let addr = start(&shutdown).await;
    let client = Client::declaring(all_capabilities());
    let session = connect(addr, client.clone()).await;

    let text = text_of(&session, "test_input_required_result_elicitation").await;
    assert_eq!(text, "Hello, Alice!");
    let asked = client.asked();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0]["method"], "elicitation/create");
    assert_eq!(asked[0]["params"]["message"], "What is your name?");
    assert_eq!(
        asked[0]["params"]["requestedSchema"],
        json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]})
    );

    let text = text_of(&session, "test_input_required_result_sampling").await;
    assert_eq!(text, "LLM response: Paris");
    let text = text_of(&session, "test_input_required_result_list_roots").await;
    assert_eq!(text, "Client roots: file:///test/root (Test Root)");
    let text = text_of(&session, "test_input_required_result_request_state").await;
    assert!(text.contains("state-ok"), "{text}");
    let asked = client.asked();
    let methods: Vec<&str> = asked.iter().filter_map(|a| a["method"].as_str()).collect();
    assert_eq!(
        methods,
        [
            "elicitation/create",
            "sampling/createMessage",
            "roots/list",
            "elicitation/create"
        ]
    );
    assert_eq!(
        asked[1]["params"]["messages"][0]["content"]["text"],
        "What is the capital of France?"
    );

    // The prompt asks in-call too.
    let prompt = session
        .peer()
        .get_prompt(
            serde_json::from_value(json!({"name": fixture::modern::PROMPT_NAME})).expect("params"),
        )
        .await
        .expect("prompts/get");
    assert_eq!(
        value(&prompt)["messages"][0]["content"]["text"],
        "Answer using this context: anything"
    );
    session.cancel().await.expect("close");
    shutdown.cancel();
}

#[tokio::test]
async fn multi_round_asks_twice_in_turn() {
    let shutdown = CancellationToken::new();
    let addr = start(&shutdown).await;
    let client = Client::declaring(all_capabilities());
    let session = connect(addr, client.clone()).await;

    let text = text_of(&session, "test_input_required_result_multi_round").await;
    assert_eq!(text, "Alice's favorite color is blue");
    let messages: Vec<Value> = client
        .asked()
        .iter()
        .map(|a| a["params"]["message"].clone())
        .collect();
    assert_eq!(
        messages,
        [
            json!("Step 1: What is your name?"),
            json!("Step 2: What is your favorite color?")
        ]
    );
    session.cancel().await.expect("close");
    shutdown.cancel();
}

#[tokio::test]
async fn multiple_inputs_are_asked_at_once() {
    let shutdown = CancellationToken::new();
    let addr = start(&shutdown).await;
    // Each answer waits for all three requests: sent one after the other, they fail.
    let client = Client {
        together: Some(3),
        ..Client::declaring(all_capabilities())
    };
    let session = connect(addr, client.clone()).await;

    let text = text_of(&session, "test_input_required_result_multiple_inputs").await;
    assert_eq!(
        text,
        "name: Alice; greeting: Paris; roots: file:///test/root (Test Root)"
    );
    let mut methods: Vec<String> = client
        .asked()
        .iter()
        .filter_map(|a| a["method"].as_str().map(str::to_owned))
        .collect();
    methods.sort();
    assert_eq!(
        methods,
        ["elicitation/create", "roots/list", "sampling/createMessage"]
    );
    session.cancel().await.expect("close");
    shutdown.cancel();
}

#[tokio::test]
async fn missing_capability_fails_without_sampling() {
    let shutdown = CancellationToken::new();
    let addr = start(&shutdown).await;

    let client = Client::declaring(json!({"elicitation": {}}));
    let session = connect(addr, client.clone()).await;
    let refused = session
        .peer()
        .call_tool(call("test_missing_capability"))
        .await;
    let Err(ServiceError::McpError(error)) = refused else {
        panic!("expected a JSON-RPC error, got {refused:?}");
    };
    let error = value(&error);
    assert_eq!(error["code"], -32021, "{error}");
    assert_eq!(
        error["data"]["requiredCapabilities"],
        json!({"sampling": {}}),
        "{error}"
    );
    // Nor does the capabilities tool ask through what was not declared.
    let text = text_of(&session, "test_input_required_result_capabilities").await;
    assert_eq!(text, "Answered: capability_elicitation");
    let methods: Vec<Value> = client.asked().iter().map(|a| a["method"].clone()).collect();
    assert_eq!(methods, [json!("elicitation/create")]);
    session.cancel().await.expect("close");

    // With sampling declared it asks once and answers.
    let client = Client::declaring(json!({"sampling": {}}));
    let session = connect(addr, client.clone()).await;
    let text = text_of(&session, "test_missing_capability").await;
    assert_eq!(text, "Sampling answered: Paris");
    assert_eq!(client.asked().len(), 1);
    session.cancel().await.expect("close");
    shutdown.cancel();
}

#[tokio::test]
async fn triggers_change_the_lists_and_say_so_on_the_session() {
    let shutdown = CancellationToken::new();
    let addr = start(&shutdown).await;
    let client = Client::declaring(json!({}));
    let session = connect(addr, client.clone()).await;
    let peer = session.peer().clone();
    let tool_names = || async {
        peer.list_all_tools()
            .await
            .expect("tools/list")
            .iter()
            .map(|t| t.name.to_string())
            .collect::<Vec<_>>()
    };
    let before = tool_names().await;
    assert!(!before.iter().any(|n| n == fixture::modern::ADDED_TOOL));

    let changed = client.changed.notified();
    let text = text_of(&session, "test_trigger_tool_change").await;
    assert_eq!(
        text,
        "tools list changed (change #1); announced to 1 listener(s)"
    );
    tokio::time::timeout(WAIT, changed)
        .await
        .expect("notifications/tools/list_changed on the session");
    assert_eq!(client.tools_changed.load(Ordering::SeqCst), 1);
    let after = tool_names().await;
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(
        after.last().map(String::as_str),
        Some(fixture::modern::ADDED_TOOL)
    );
    let added = text_of(&session, fixture::modern::ADDED_TOOL).await;
    assert!(added.contains("was called"), "{added}");

    let changed = client.changed.notified();
    text_of(&session, "test_trigger_prompt_change").await;
    tokio::time::timeout(WAIT, changed)
        .await
        .expect("notifications/prompts/list_changed on the session");
    assert_eq!(client.prompts_changed.load(Ordering::SeqCst), 1);
    let prompts = peer.list_all_prompts().await.expect("prompts/list");
    assert!(
        prompts
            .iter()
            .any(|p| p.name == fixture::modern::ADDED_PROMPT),
        "{prompts:?}"
    );
    session.cancel().await.expect("close");
    shutdown.cancel();
}

#[tokio::test]
async fn logging_tool_logs_on_the_session_from_its_level_up() {
    let shutdown = CancellationToken::new();
    let addr = start(&shutdown).await;
    let client = Client::declaring(json!({}));
    let session = connect(addr, client.clone()).await;

    let text = text_of(&session, "test_logging_tool").await;
    assert_eq!(text, "test_logging_tool completed");
    let logged = || async {
        // Notifications are handled a moment after the response may arrive.
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.logs.lock().expect("lock").len()
    };
    assert_eq!(logged().await, 3);

    session
        .peer()
        .set_level(serde_json::from_value(json!({"level": "error"})).expect("params"))
        .await
        .expect("logging/setLevel");
    text_of(&session, "test_logging_tool").await;
    assert_eq!(logged().await, 3, "info messages under an error level");

    // The Mcp-Param header check is 2026-07-28's; here the region is just echoed.
    let region: CallToolRequestParams = serde_json::from_value(
        json!({"name": "test_custom_header", "arguments": {"region": "us-west1"}}),
    )
    .expect("params");
    let result = value(&session.peer().call_tool(region).await.expect("call"));
    assert_eq!(result["content"][0]["text"], "Region: us-west1");
    session.cancel().await.expect("close");
    shutdown.cancel();
}

/// The fixture as a 2025-era server.
async fn start(shutdown: &CancellationToken) -> SocketAddr {
    common::start(Revision::V2025, shutdown).await
}
