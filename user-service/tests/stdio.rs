//! The real binary in `--stdio` mode, spoken to in JSON-RPC lines over its stdin and
//! stdout: the handshake and its capabilities, tools, resource templates, prompts and
//! completions; stdout carries nothing but JSON-RPC messages (logs go to stderr); the
//! process holds no TCP socket (no port, no registration) and exits by itself when stdin
//! closes, or on SIGTERM.

#[path = "../../service-kit/tests/support/stdio_client.rs"]
mod stdio_client;

use serde_json::{Value, json};

use stdio_client::{StdioChild, open_tcp_sockets, sigterm};

const BIN: &str = env!("CARGO_BIN_EXE_user-service");

fn start() -> StdioChild {
    // A gateway URL that would be registered with in HTTP mode: stdio mode must not.
    StdioChild::start(BIN, &[], &[("GATEWAY_URL", "http://127.0.0.1:9")])
}

fn contents_json(result: &Value, uri: &str) -> Value {
    let contents = result["contents"].as_array().expect("contents");
    assert_eq!(contents.len(), 1, "{result}");
    assert_eq!(contents[0]["uri"], uri);
    assert_eq!(contents[0]["mimeType"], "application/json");
    serde_json::from_str(contents[0]["text"].as_str().expect("text")).expect("JSON text")
}

#[tokio::test]
async fn a_stdio_session_serves_tools_resources_prompts_and_completions() {
    let mut users = start();
    let init = users.initialize().await;
    assert_eq!(init["serverInfo"]["name"], "user-service");
    // Nothing changes at run time: resources without subscribe, no list changes.
    assert_eq!(
        init["capabilities"],
        json!({"completions": {}, "prompts": {}, "resources": {}, "tools": {}})
    );

    let tools = users.result("tools/list", json!({})).await;
    let listed: Vec<&str> = tools["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["name"].as_str().expect("name"))
        .collect();
    let expected: Vec<&str> = user_service::tools::tools()
        .iter()
        .map(|t| t.name.as_ref())
        .collect();
    assert_eq!(listed, expected);
    let user = users.call("getUserById", json!({"id": "456"})).await;
    assert_eq!(user["isError"], false, "{user}");
    let unknown = users.call("getUserById", json!({"id": "0"})).await;
    assert_eq!(unknown["isError"], true, "{unknown}");

    let resources = users.result("resources/list", json!({})).await;
    assert_eq!(resources["resources"], json!([]));
    let templates = users.result("resources/templates/list", json!({})).await;
    let uris: Vec<&str> = templates["resourceTemplates"]
        .as_array()
        .expect("templates")
        .iter()
        .map(|t| t["uriTemplate"].as_str().expect("uriTemplate"))
        .collect();
    assert_eq!(
        uris,
        ["users://{userId}/profile", "users://{userId}/preferences"]
    );
    let uri = "users://456/profile";
    let profile = contents_json(
        &users.result("resources/read", json!({"uri": uri})).await,
        uri,
    );
    assert_eq!(profile, user["structuredContent"]);
    let uri = "users://456/preferences";
    let preferences = contents_json(
        &users.result("resources/read", json!({"uri": uri})).await,
        uri,
    );
    let tool = users.call("getUserPreferences", json!({"id": "456"})).await;
    assert_eq!(preferences, tool["structuredContent"]);
    let missing = users
        .error("resources/read", json!({"uri": "users://501/profile"}))
        .await;
    assert_eq!(missing["code"], -32002, "{missing}");
    let not_offered = users
        .error("resources/subscribe", json!({"uri": "users://456/profile"}))
        .await;
    assert_eq!(not_offered["code"], -32601, "{not_offered}");

    let prompts = users.result("prompts/list", json!({})).await;
    assert_eq!(prompts["prompts"][0]["name"], "summarise_user");
    assert_eq!(prompts["prompts"][1]["name"], "find_users");
    let prompt = users
        .result(
            "prompts/get",
            json!({"name": "summarise_user", "arguments": {"userId": "456"}}),
        )
        .await;
    assert_eq!(
        prompt["messages"][1]["content"]["resource"]["uri"],
        "users://456/profile"
    );
    let bad = users
        .error(
            "prompts/get",
            json!({"name": "summarise_user", "arguments": {"userId": "0"}}),
        )
        .await;
    assert_eq!(bad["code"], -32602, "{bad}");

    let completed = users
        .result(
            "completion/complete",
            json!({
                "ref": {"type": "ref/prompt", "name": "summarise_user"},
                "argument": {"name": "userId", "value": "49"},
            }),
        )
        .await;
    assert_eq!(
        completed["completion"]["values"],
        json!([
            "49", "490", "491", "492", "493", "494", "495", "496", "497", "498", "499"
        ])
    );
    assert_eq!(completed["completion"]["hasMore"], false);
    let completed = users
        .result(
            "completion/complete",
            json!({
                "ref": {"type": "ref/resource", "uri": "users://{userId}/profile"},
                "argument": {"name": "userId", "value": "1"},
            }),
        )
        .await;
    assert_eq!(
        completed["completion"]["values"].as_array().map(Vec::len),
        Some(100)
    );
    assert_eq!(completed["completion"]["hasMore"], true);

    assert_eq!(open_tcp_sockets(users.pid()), 0, "no port, no registration");
    assert!(users.notifications.is_empty(), "{:?}", users.notifications);
    let (status, rest, stderr) = users.close_and_wait().await;
    assert!(status.success(), "{status}: {stderr}");
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        stderr.contains("serving MCP over stdio"),
        "logs go to stderr: {stderr}"
    );
}

#[tokio::test]
async fn sigterm_ends_a_stdio_session_whose_stdin_is_still_open() {
    let mut users = start();
    users.initialize().await;
    users.result("tools/list", json!({})).await;
    sigterm(users.pid());
    let (status, rest, stderr) = users.wait().await;
    assert!(status.success(), "{status}: {stderr}");
    assert!(rest.is_empty(), "{rest:?}");
    assert!(stderr.contains("shutdown signal received"), "{stderr}");
}

#[tokio::test]
async fn a_request_before_initialize_is_refused_and_the_session_still_starts() {
    let mut users = start();
    let refused = users.request("tools/list", json!({})).await;
    assert!(refused.get("error").is_some(), "{refused}");
    users.initialize().await;
    let tools = users.result("tools/list", json!({})).await;
    assert_eq!(tools["tools"].as_array().map(Vec::len), Some(4));
    let (status, rest, stderr) = users.close_and_wait().await;
    assert!(status.success(), "{status}: {stderr}");
    assert!(rest.is_empty(), "{rest:?}");
}
