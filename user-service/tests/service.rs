//! End-to-end tests of user-service over real HTTP: the service runs in-process on an
//! ephemeral port, and is reached with reqwest (`/health`, the Bearer check, Host
//! checks), an rmcp client session with its token (`/mcp`: tools, resources, prompts,
//! completions), and a stand-in gateway that records the self-registration.

use std::{net::SocketAddr, time::Duration};

use axum::{Json, Router, http::HeaderMap, routing::post};
use rmcp::{
    model::{CallToolRequestParams, CallToolResult, ErrorCode, JsonObject},
    service::ServiceError,
};
use serde_json::{Value, json};
use service_kit::client::{ClientOptions, ClientSession, connect};
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use user_service::{Config, run};

const WAIT: Duration = Duration::from_secs(10);
/// The token the service under test accepts on `/mcp`.
const SERVICE_TOKEN: &str = "users-accept-this-token";

/// A running service; cancelled when dropped so a failed test does not leak it.
struct Running {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    async fn start(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(config, listener, shutdown.clone()));
        Self {
            addr,
            shutdown,
            task: Some(task),
        }
    }

    async fn standalone() -> Self {
        Self::start(Config {
            gateway_url: None,
            service_token: SERVICE_TOKEN.into(),
            ..Config::default()
        })
        .await
    }

    async fn session(&self) -> ClientSession {
        let options = ClientOptions {
            bearer: Some(SERVICE_TOKEN.into()),
            ..ClientOptions::default()
        };
        connect(&format!("http://{}/mcp", self.addr), &options)
            .await
            .expect("MCP session")
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        let task = self.task.take().expect("running");
        let result = tokio::time::timeout(WAIT, task)
            .await
            .expect("run() returns promptly after shutdown")
            .expect("run() did not panic");
        result.expect("run() ends cleanly");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn call(session: &ClientSession, tool: &str, arguments: Value) -> CallToolResult {
    let Value::Object(arguments) = arguments else {
        panic!("arguments must be an object");
    };
    session
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(arguments))
        .await
        .unwrap_or_else(|e| panic!("{tool} failed at the protocol level: {e}"))
}

fn error_text(result: &CallToolResult) -> String {
    assert_eq!(result.is_error, Some(true), "expected isError: {result:?}");
    result
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone())
        .expect("an error message")
}

fn structured(result: CallToolResult) -> Value {
    assert_ne!(result.is_error, Some(true), "unexpected error: {result:?}");
    let value = result.structured_content.expect("structured content");
    let text = result
        .content
        .first()
        .and_then(|c| c.as_text())
        .expect("a text block");
    assert_eq!(
        serde_json::from_str::<Value>(&text.text).expect("text is JSON"),
        value
    );
    value
}

#[tokio::test]
async fn health_reports_the_directory() {
    let service = Running::standalone().await;
    let response = client()
        .get(format!("http://{}/health", service.addr))
        .send()
        .await
        .expect("GET /health");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["service"], "user-service");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["users"], user_service::data::USER_COUNT);
    service.stop().await;
}

/// A 401 with `WWW-Authenticate: {challenge}` and the JSON error `code`.
async fn assert_refused(response: reqwest::Response, challenge: &str, code: &str) {
    assert_eq!(response.status(), 401);
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().expect("ASCII")),
        Some(challenge)
    );
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn mcp_requires_the_bearer_token_and_health_does_not() {
    let service = Running::standalone().await;
    let client = client();
    let mcp = format!("http://{}/mcp", service.addr);
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let post = |authorization: Option<&str>| {
        let mut request = client
            .post(&mcp)
            .header("Accept", "application/json, text/event-stream")
            .json(&list);
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        request.send()
    };
    let realm = r#"Bearer realm="user-service""#;

    assert_refused(post(None).await.expect("POST"), realm, "missing_token").await;
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let response = client
            .request(method.clone(), &mcp)
            .send()
            .await
            .expect("send");
        assert_refused(response, realm, "missing_token").await;
    }
    let invalid = format!(r#"{realm}, error="invalid_token""#);
    for wrong in ["Bearer users-accept-this-toke", "Bearer mcp-token-123"] {
        let response = post(Some(wrong)).await.expect("POST");
        assert_refused(response, &invalid, "invalid_token").await;
    }
    let response = post(Some(SERVICE_TOKEN)).await.expect("POST");
    assert_refused(
        response,
        &format!(r#"{realm}, error="invalid_request""#),
        "invalid_request",
    )
    .await;

    // With the token the request reaches the MCP server (which wants a session first).
    let response = post(Some(&format!("BEARER {SERVICE_TOKEN}")))
        .await
        .expect("POST");
    assert_ne!(response.status(), 401);
    assert!(response.headers().get("www-authenticate").is_none());
    let session = service.session().await;
    let user = structured(call(&session, "getUserById", json!({"id": "456"})).await);
    assert_eq!(user["id"], "456");
    drop(session);

    let health = client
        .get(format!("http://{}/health", service.addr))
        .send()
        .await
        .expect("GET /health");
    assert_eq!(health.status(), 200);
    service.stop().await;
}

#[tokio::test]
async fn tools_over_mcp() {
    let service = Running::standalone().await;
    let session = service.session().await;

    let info = session.peer_info().expect("server info");
    assert_eq!(
        info.server_info.as_ref().map(|i| i.name.as_str()),
        Some("user-service")
    );
    assert!(info.capabilities.tools.is_some());
    assert!(info.instructions.is_some());

    let tools = session.list_all_tools().await.expect("tools/list");
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "getUserById",
            "getUserPreferences",
            "listUsers",
            "searchUsers"
        ]
    );
    for tool in &tools {
        assert!(
            tool.description.is_some(),
            "{} has no description",
            tool.name
        );
        let output = tool.output_schema.as_ref().expect("outputSchema");
        assert_eq!(output["type"], "object");
        assert_eq!(tool.input_schema["additionalProperties"], false);
    }

    // A known user.
    let user = structured(call(&session, "getUserById", json!({ "id": "456" })).await);
    assert_eq!(user["id"], "456");
    let expected = user_service::data::user_by_id("456").expect("user 456");
    assert_eq!(user["name"], expected.name);
    assert_eq!(user["email"], expected.email);
    for key in [
        "city",
        "country",
        "joinedAt",
        "membershipTier",
        "preferences",
    ] {
        assert!(user.get(key).is_some(), "record lacks {key}");
    }

    // Bad arguments are tool errors that say what is wrong.
    let cases = [
        (json!({}), "missing required argument \"id\""),
        (
            json!({ "id": 456 }),
            "argument \"id\" must be a string, got number",
        ),
        (json!({ "id": "99999" }), "no user with id \"99999\""),
        (
            json!({ "id": "456", "extra": 1 }),
            "unknown argument \"extra\"; accepted arguments: \"id\"",
        ),
    ];
    for (arguments, message) in cases {
        let result = call(&session, "getUserById", arguments).await;
        assert_eq!(error_text(&result), message);
        assert!(result.structured_content.is_none());
    }
    let result = call(
        &session,
        "searchUsers",
        json!({ "query": "a", "limit": 500 }),
    )
    .await;
    assert_eq!(
        error_text(&result),
        "argument \"limit\" must be between 1 and 100, got 500"
    );

    // The preferences document shopping-service relies on.
    let prefs = structured(call(&session, "getUserPreferences", json!({ "id": "456" })).await);
    let keys: Vec<&str> = prefs
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "userId",
            "favoriteCategories",
            "preferredBrands",
            "priceRange",
            "newsletter"
        ]
    );
    assert_eq!(prefs["userId"], "456");
    assert!(
        prefs["favoriteCategories"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    );
    assert!(prefs["preferredBrands"].is_array());
    assert!(prefs["priceRange"]["min"].is_number());
    assert!(prefs["priceRange"]["max"].is_number());
    assert!(prefs["newsletter"].is_boolean());

    // Search and list.
    let found = structured(
        call(
            &session,
            "searchUsers",
            json!({ "query": "berlin", "limit": 5 }),
        )
        .await,
    );
    assert!(found["total"].as_u64().is_some_and(|t| t > 0));
    assert!(
        found["users"]
            .as_array()
            .is_some_and(|u| !u.is_empty() && u.len() <= 5)
    );
    let page = structured(call(&session, "listUsers", json!({ "offset": 10, "limit": 2 })).await);
    assert_eq!(page["users"][0]["id"], "11");
    assert_eq!(page["users"][1]["id"], "12");
    assert_eq!(page["total"], user_service::data::USER_COUNT);

    // An unknown tool is a protocol error naming it.
    let err = session
        .call_tool(CallToolRequestParams::new("deleteUser").with_arguments(JsonObject::new()))
        .await
        .expect_err("unknown tool");
    match err {
        ServiceError::McpError(e) => {
            assert_eq!(e.code, ErrorCode::INVALID_PARAMS);
            assert!(e.message.contains("deleteUser"), "{}", e.message);
        }
        other => panic!("expected a JSON-RPC error, got {other}"),
    }

    session.cancel().await.expect("close session");
    service.stop().await;
}

#[tokio::test]
async fn only_loopback_hosts_are_served() {
    let service = Running::standalone().await;
    let client = client();
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": { "name": "test", "version": "0" }
        }
    });
    let post = |host: Option<&str>| {
        let mut request = client
            .post(format!("http://{}/mcp", service.addr))
            .header("Accept", "application/json, text/event-stream")
            .bearer_auth(SERVICE_TOKEN)
            .json(&initialize);
        if let Some(host) = host {
            request = request.header("Host", host);
        }
        request.send()
    };
    let refused = post(Some("attacker.example")).await.expect("POST /mcp");
    assert_eq!(refused.status(), 403);
    // The same request with the loopback Host reqwest sends is served.
    let served = post(None).await.expect("POST /mcp");
    assert_eq!(served.status(), 200);
    service.stop().await;
}

/// What the stand-in gateway saw.
#[derive(Debug)]
struct Seen {
    authorization: Option<String>,
    body: Value,
}

#[tokio::test]
async fn registers_with_the_gateway() {
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let gateway = Router::new().route(
        "/register",
        post(move |headers: HeaderMap, Json(body): Json<Value>| {
            let seen_tx = seen_tx.clone();
            async move {
                let authorization = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let _ = seen_tx.send(Seen {
                    authorization,
                    body,
                });
                Json(json!({ "ok": true }))
            }
        }),
    );
    let gateway_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let gateway_addr = gateway_listener.local_addr().expect("addr");
    let gateway_task = tokio::spawn(async move { axum::serve(gateway_listener, gateway).await });

    let service = Running::start(Config {
        gateway_url: Some(format!("http://{gateway_addr}")),
        token: "registration-test-token".into(),
        service_token: SERVICE_TOKEN.into(),
        ..Config::default()
    })
    .await;

    let seen = tokio::time::timeout(WAIT, seen_rx.recv())
        .await
        .expect("registration within the timeout")
        .expect("gateway still listening");
    let expected_url = format!("http://127.0.0.1:{}/mcp", service.addr.port());
    // The gateway is given the token the service accepts, to present on every request.
    assert_eq!(
        seen.body,
        json!({ "name": "user-service", "url": expected_url,
                "auth": { "bearer": SERVICE_TOKEN } })
    );
    assert_eq!(
        seen.authorization.as_deref(),
        Some("Bearer registration-test-token")
    );

    service.stop().await;
    gateway_task.abort();
}

#[tokio::test]
async fn public_url_overrides_the_registered_url() {
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let gateway = Router::new().route(
        "/register",
        post(move |Json(body): Json<Value>| {
            let seen_tx = seen_tx.clone();
            async move {
                let _ = seen_tx.send(body);
                Json(json!({ "ok": true }))
            }
        }),
    );
    let gateway_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let gateway_addr = gateway_listener.local_addr().expect("addr");
    let gateway_task = tokio::spawn(async move { axum::serve(gateway_listener, gateway).await });

    let service = Running::start(Config {
        gateway_url: Some(format!("http://{gateway_addr}/")),
        public_url: Some("http://users.internal:3003/mcp".into()),
        ..Config::default()
    })
    .await;
    let body = tokio::time::timeout(WAIT, seen_rx.recv())
        .await
        .expect("registration within the timeout")
        .expect("gateway still listening");
    assert_eq!(body["url"], "http://users.internal:3003/mcp");

    service.stop().await;
    gateway_task.abort();
}

/// An HTTP client for the tests (the process's TLS provider made ring first: the
/// workspace's reqwest has no built-in one).
fn client() -> reqwest::Client {
    service_kit::client::ensure_tls_provider();
    reqwest::Client::new()
}

#[tokio::test]
async fn resources_prompts_and_completions_over_http() {
    use rmcp::model::{GetPromptRequestParams, ReadResourceRequestParams, ResourceContents};

    let service = Running::standalone().await;
    let session = service.session().await;
    let info = session.peer_info().expect("server info");
    assert_eq!(
        serde_json::to_value(&info.capabilities).expect("JSON"),
        json!({"completions": {}, "prompts": {}, "resources": {}, "tools": {}})
    );
    let templates = session
        .list_resource_templates(None)
        .await
        .expect("resources/templates/list");
    assert_eq!(templates.resource_templates.len(), 2);
    let read = session
        .read_resource(ReadResourceRequestParams::new("users://7/profile"))
        .await
        .expect("resources/read");
    let ResourceContents::TextResourceContents { text, .. } = &read.contents[0] else {
        panic!("text contents expected: {read:?}");
    };
    let tool = call(&session, "getUserById", json!({"id": "7"})).await;
    assert_eq!(
        Some(serde_json::from_str::<Value>(text).expect("JSON")),
        tool.structured_content
    );
    match session
        .read_resource(ReadResourceRequestParams::new("users://7/orders"))
        .await
    {
        Err(ServiceError::McpError(e)) => assert_eq!(e.code, ErrorCode::RESOURCE_NOT_FOUND),
        other => panic!("resource not found expected, got {other:?}"),
    }
    let prompts = session.list_prompts(None).await.expect("prompts/list");
    assert_eq!(prompts.prompts.len(), 2);
    let Value::Object(arguments) = json!({"tier": "gold"}) else {
        unreachable!()
    };
    let prompt = session
        .get_prompt(GetPromptRequestParams::new("find_users").with_arguments(arguments))
        .await
        .expect("prompts/get");
    let text = &prompt.messages[0].content.as_text().expect("text").text;
    assert!(
        text.contains("listUsers") && text.contains("gold"),
        "{text}"
    );
    let tiers = session
        .complete_prompt_argument("find_users", "tier", "", None)
        .await
        .expect("completion/complete");
    assert_eq!(tiers.values, ["bronze", "silver", "gold", "platinum"]);
    drop(session);
    service.stop().await;
}
