//! Tool search: with `tool_search` on (or `auto` past its threshold), `tools/list` offers
//! `search_tools`, `describe_tools` and `call_tool` instead of the catalog, over
//! sessionless posts and MCP sessions alike. Search and describe only ever show what the
//! caller may see; `call_tool` is a call of the tool it names, under every rule a direct
//! call obeys (allow-list, rate limit, call log under the real tool's name).

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// `tools/call` of `tool` as `token`, sessionless: the JSON-RPC response.
async fn call_as(gw: &impl Target, token: &str, tool: &str, arguments: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": tool, "arguments": arguments}});
    let resp = http()
        .post(gw.mcp())
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("POST /mcp");
    resp.json().await.expect("JSON")
}

/// `tools/list` as `token`, sessionless: the tools.
async fn list_as(gw: &impl Target, token: &str) -> Vec<Value> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let resp: Value = http()
        .post(gw.mcp())
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("POST /mcp")
        .json()
        .await
        .expect("JSON");
    resp["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools: {resp}"))
        .clone()
}

fn names(tools: &[Value]) -> Vec<&str> {
    tools.iter().filter_map(|t| t["name"].as_str()).collect()
}

/// The structured answer of a meta-tool call.
fn structured(reply: &Value) -> &Value {
    let result = &reply["result"];
    assert_ne!(result["isError"], true, "{reply}");
    &result["structuredContent"]
}

/// The services and tools `search_tools` found for `query`, best first.
async fn search(gw: &impl Target, token: &str, query: &str) -> Vec<(String, String)> {
    let reply = call_as(
        gw,
        token,
        "search_tools",
        json!({"query": query, "limit": 5}),
    )
    .await;
    structured(&reply)["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {reply}"))
        .iter()
        .map(|r| {
            (
                r["service"].as_str().expect("service").to_string(),
                r["tool"].as_str().expect("tool").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_mode_lists_the_meta_tools_finds_describes_and_calls_under_every_rule() {
    let users_only = "users-only";
    let stack = Stack::start_with(|c| {
        c.tool_search = gateway::search::Mode::On;
        c.rate_limit_per_tool = 3;
        let mut limited = credential(users_only, &["list", "call"]);
        limited.services = Some(vec!["user-service".into()]);
        c.credentials = vec![limited, credential("caller", &["call"])];
    })
    .await;
    let gw = &stack.gateway;
    let limited = credential_token(users_only);

    // tools/list: the three meta-tools, the search tool described from the catalog.
    let tools = list_as(gw, TOKEN).await;
    assert_eq!(
        names(&tools),
        ["search_tools", "describe_tools", "call_tool"]
    );
    let description = tools[0]["description"].as_str().expect("description");
    assert!(
        description.contains("shopping-service (") && description.contains("user-service ("),
        "{description}"
    );
    // The same over an MCP session (the typed path).
    let session = mcp_client(gw).await;
    let listed = session.peer().list_all_tools().await.expect("tools/list");
    let listed: Vec<&str> = listed.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(listed, ["search_tools", "describe_tools", "call_tool"]);
    let _ = session.cancel().await;
    // A credential limited to user-service is told of its own part only.
    let mine = list_as(gw, &limited).await;
    let mine = mine[0]["description"].as_str().expect("description");
    assert!(
        mine.contains("user-service (") && !mine.contains("shopping-service"),
        "{mine}"
    );

    // Found by what a user would say.
    let found = search(gw, TOKEN, "what is in my shopping cart").await;
    assert!(
        found.contains(&("shopping-service".into(), "getBasket".into())),
        "{found:?}"
    );
    let found = search(gw, TOKEN, "look up a customer's profile").await;
    assert!(
        found[..3].contains(&("user-service".into(), "getUserById".into())),
        "{found:?}"
    );
    // Never what the caller may not see.
    let hidden = search(gw, &limited, "what is in my shopping cart").await;
    assert!(
        hidden.iter().all(|(service, _)| service == "user-service"),
        "{hidden:?}"
    );

    // describe_tools: full definitions of what the caller sees; the rest unknown.
    let reply = call_as(
        gw,
        TOKEN,
        "describe_tools",
        json!({"names": ["getUserById", "noSuchTool"]}),
    )
    .await;
    let described = structured(&reply);
    assert_eq!(described["tools"][0]["name"], "getUserById", "{reply}");
    assert!(described["tools"][0]["inputSchema"]["properties"]["id"].is_object());
    assert_eq!(described["unknown"], json!(["noSuchTool"]));
    let reply = call_as(
        gw,
        &limited,
        "describe_tools",
        json!({"names": ["getProductById"]}),
    )
    .await;
    assert_eq!(structured(&reply)["tools"], json!([]), "{reply}");
    assert_eq!(structured(&reply)["unknown"], json!(["getProductById"]));

    // Searching shows the catalog: a credential that may call but not list may not.
    let reply = call_as(
        gw,
        &credential_token("caller"),
        "search_tools",
        json!({"query": "x"}),
    )
    .await;
    assert!(
        reply["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"list\" scope")),
        "{reply}"
    );

    // Bad arguments: a tool error that says what is wrong.
    let reply = call_as(gw, TOKEN, "search_tools", json!({"limit": 3})).await;
    assert_eq!(reply["result"]["isError"], true, "{reply}");
    assert!(reply.to_string().contains("missing argument"), "{reply}");

    // call_tool: the tool it names, as a direct call would be.
    let reply = call_as(
        gw,
        TOKEN,
        "call_tool",
        json!({"name": "getUserById", "arguments": {"id": "456"}}),
    )
    .await;
    assert!(reply.to_string().contains("Mateo Martin"), "{reply}");
    // Directly by name as well.
    let direct = call(gw, "getUserById", json!({"id": "456"})).await;
    assert!(direct.to_string().contains("Mateo Martin"), "{direct}");
    // A hidden tool through call_tool is refused exactly like a direct call of it.
    let through = call_as(
        gw,
        &limited,
        "call_tool",
        json!({"name": "getProductById", "arguments": {"id": "1"}}),
    )
    .await;
    let straight = call_as(gw, &limited, "getProductById", json!({"id": "1"})).await;
    assert!(through["error"].is_object(), "{through}");
    assert_eq!(through["error"], straight["error"]);
    // The call log names the real tool (it is written off the call path).
    wait_until("both calls logged", Duration::from_secs(10), || async {
        let logged = http()
            .get(format!("{}/calls?tool=getUserById", gw.base()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET /calls")
            .json::<Value>()
            .await
            .expect("JSON");
        logged["count"].as_u64().unwrap_or(0) >= 2
    })
    .await;
    // The tool's rate limit counts calls through call_tool.
    let mut refused = None;
    for _ in 0..20 {
        let reply = call_as(
            gw,
            TOKEN,
            "call_tool",
            json!({"name": "listCategories", "arguments": {}}),
        )
        .await;
        if reply.get("error").is_some() {
            refused = Some(reply);
            break;
        }
    }
    let refused = refused.expect("limited within 20 calls");
    assert_eq!(refused["error"]["code"], -32004, "{refused}");
    assert!(refused.to_string().contains("listCategories"), "{refused}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_switches_to_search_past_its_threshold_for_what_each_caller_sees() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.tool_search_max_tools = 4;
    let mut limited = credential("alpha-only", &["list", "call"]);
    limited.services = Some(vec!["alpha".into()]);
    config.credentials = vec![limited];
    let gw = start_gateway(config).await;
    let alpha = start_fixture("alpha", &["alphaOne", "alphaTwo", "alphaThree"]).await;
    let beta = start_fixture("beta", &["betaOne", "betaTwo"]).await;
    assert_eq!(register(&gw, "alpha", &alpha.mcp_url()).await.0, 201);
    // Three tools, at most four: the catalog itself.
    assert_eq!(
        names(&list_as(&gw, TOKEN).await),
        ["alphaOne", "alphaTwo", "alphaThree"]
    );
    // Not in search mode, the meta-tools still answer (no backend has their names).
    let reply = call_as(&gw, TOKEN, "search_tools", json!({"query": "alpha two"})).await;
    assert_eq!(
        structured(&reply)["results"][0]["tool"],
        "alphaTwo",
        "{reply}"
    );
    // Five tools: search mode.
    assert_eq!(register(&gw, "beta", &beta.mcp_url()).await.0, 201);
    wait_until("search mode", Duration::from_secs(10), || async {
        names(&list_as(&gw, TOKEN).await) == ["search_tools", "describe_tools", "call_tool"]
    })
    .await;
    // A credential that sees three of them keeps its catalog.
    assert_eq!(
        names(&list_as(&gw, &credential_token("alpha-only")).await),
        ["alphaOne", "alphaTwo", "alphaThree"]
    );
    gw.stop().await;
    alpha.stop().await;
    beta.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_search_off_the_names_are_the_backends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.tool_search = gateway::search::Mode::Off;
    let gw = start_gateway(config).await;
    let backend = start_fixture("odd", &["search_tools", "other"]).await;
    assert_eq!(register(&gw, "odd", &backend.mcp_url()).await.0, 201);
    assert_eq!(names(&list_as(&gw, TOKEN).await), ["search_tools", "other"]);
    // The backend's own search_tools is called, not the gateway's.
    let reply = call_as(&gw, TOKEN, "search_tools", json!({"query": "x"})).await;
    assert!(
        reply["result"]["structuredContent"]["results"].is_null(),
        "{reply}"
    );
    assert!(reply["result"]["content"].is_array(), "{reply}");
    let reply = call_as(&gw, TOKEN, "describe_tools", json!({"names": ["other"]})).await;
    assert!(reply["error"].is_object(), "{reply}");
    gw.stop().await;
    backend.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_mode_refuses_a_list_past_the_limit_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.tool_search = gateway::search::Mode::Refuse;
    config.tool_search_max_tools = 2;
    let mut limited = credential("few", &["list", "call"]);
    limited.tools = Some(vec!["oneTool".into(), "twoTool".into()]);
    config.credentials = vec![limited];
    let gw = start_gateway(config).await;
    let backend = start_fixture("many", &["oneTool", "twoTool", "threeTool"]).await;
    assert_eq!(register(&gw, "many", &backend.mcp_url()).await.0, 201);
    let (_, body) = rpc(&gw, "tools/list", Value::Null).await;
    assert_eq!(body["error"]["code"], -32600, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("3 tools") && m.contains("limit of 2 tools")),
        "{body}"
    );
    // Calls still work, and the meta-tools are not there.
    assert!(call(&gw, "oneTool", json!({})).await["result"].is_object());
    assert!(call(&gw, "search_tools", json!({"query": "one"})).await["error"].is_object());
    // A credential that sees two of them gets its list.
    assert_eq!(
        names(&list_as(&gw, &credential_token("few")).await),
        ["oneTool", "twoTool"]
    );
    gw.stop().await;
    backend.stop().await;
}
