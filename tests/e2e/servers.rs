//! Virtual servers: a named subset of the federation at `/servers/{name}/mcp`, over
//! sessionless posts, 2025-era sessions and 2026-07-28 requests alike; a renamed tool is
//! called by its new name; a tool outside the subset is refused exactly like an unknown
//! one; a credential limited to one virtual server is refused elsewhere; definitions
//! made at run time are stored, survive a restart, and tell clients their lists
//! changed.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use serde_json::{Value, json};

use crate::support::*;

/// A JSON-RPC post to `path` as `token`: the status and the body (JSON).
async fn post_to(gw: &Running, path: &str, token: &str, body: Value) -> (u16, Value) {
    let resp = http()
        .post(format!("{}{path}", gw.base()))
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(&body)
        .send()
        .await
        .expect("POST");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    // One JSON body, or the data of the last SSE event.
    let value = serde_json::from_str(&text).unwrap_or_else(|_| {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .next_back()
            .unwrap_or(Value::Null)
    });
    (status, value)
}

pub async fn rpc_on(gw: &Running, server: &str, token: &str, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    post_to(gw, &format!("/servers/{server}/mcp"), token, body)
        .await
        .1
}

fn names(listing: &Value) -> Vec<String> {
    let mut names: Vec<String> = listing["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools: {listing}"))
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// An admin request to `/virtual-servers[/name]`.
async fn admin(
    gw: &Running,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http()
        .request(method, format!("{}{path}", gw.base()))
        .bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let resp = request.send().await.expect("admin request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn shop() -> gateway::servers::Definition {
    serde_json::from_value(json!({
        "name": "shop",
        "tools": ["shopping-service/*", "user-service/getUserById"],
        "prompts": ["shopping-service/*"],
        "rename": {"getProductById": {"name": "product",
                                      "description": "One product of the shop, by id."}}
    }))
    .expect("definition")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virtual_server_shows_its_subset_under_its_names_in_both_eras() {
    let stack = Stack::start_with(|c| {
        c.virtual_servers = vec![shop()];
        let mut only = credential("shop-only", &["list", "call"]);
        only.virtual_servers = Some(vec!["shop".into()]);
        c.credentials = vec![only];
    })
    .await;
    let gw = &stack.gateway;

    // Sessionless: the subset, the renamed tool under its new name and description.
    let listing = rpc_on(gw, "shop", TOKEN, "tools/list", json!({})).await;
    let listed = names(&listing);
    assert!(listed.contains(&"product".to_string()), "{listed:?}");
    assert!(listed.contains(&"getBasket".to_string()), "{listed:?}");
    assert!(listed.contains(&"getUserById".to_string()), "{listed:?}");
    assert!(!listed.contains(&"listUsers".to_string()), "{listed:?}");
    assert!(
        !listed.contains(&"getProductById".to_string()),
        "{listed:?}"
    );
    let product = listing["result"]["tools"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "product"))
        .expect("product");
    assert_eq!(product["description"], "One product of the shop, by id.");
    // The whole catalog on /mcp is unchanged.
    let all = tool_names(gw).await;
    assert!(all.contains(&"listUsers".to_string()) && !all.contains(&"product".to_string()));

    // The renamed tool is called by its new name and reaches the right upstream.
    let reply = rpc_on(
        gw,
        "shop",
        TOKEN,
        "tools/call",
        json!({"name": "product", "arguments": {"id": "123"}}),
    )
    .await;
    assert!(reply["result"]["content"].is_array(), "{reply}");
    assert_ne!(reply["result"]["isError"], true, "{reply}");
    // A tool outside the subset is refused exactly like one that does not exist.
    let hidden = rpc_on(
        gw,
        "shop",
        TOKEN,
        "tools/call",
        json!({"name": "listUsers", "arguments": {}}),
    )
    .await;
    let unknown = rpc_on(
        gw,
        "shop",
        TOKEN,
        "tools/call",
        json!({"name": "noSuchTool", "arguments": {}}),
    )
    .await;
    assert_eq!(
        hidden["error"]["code"], unknown["error"]["code"],
        "{hidden} {unknown}"
    );
    assert_eq!(
        hidden["error"]["message"]
            .as_str()
            .map(|m| m.replace("listUsers", "X")),
        unknown["error"]["message"]
            .as_str()
            .map(|m| m.replace("noSuchTool", "X")),
    );
    // Prompts: only the subset's.
    let prompts = rpc_on(gw, "shop", TOKEN, "prompts/list", json!({})).await;
    let prompts = prompts["result"]["prompts"]
        .as_array()
        .expect("prompts")
        .clone();
    assert!(!prompts.is_empty());
    assert!(
        prompts.iter().all(|p| p["name"] != "summarise_user"),
        "{prompts:?}"
    );

    // No resource patterns: no resources, no templates (though its services have both).
    let resources = rpc_on(gw, "shop", TOKEN, "resources/list", json!({})).await;
    assert_eq!(resources["result"]["resources"], json!([]), "{resources}");
    let templates = rpc_on(gw, "shop", TOKEN, "resources/templates/list", json!({})).await;
    assert_eq!(
        templates["result"]["resourceTemplates"],
        json!([]),
        "{templates}"
    );
    let on_mcp = rpc(gw, "resources/templates/list", json!({})).await.1;
    assert!(
        on_mcp["result"]["resourceTemplates"]
            .as_array()
            .is_some_and(|t| !t.is_empty()),
        "{on_mcp}"
    );

    // A 2026-07-28 request: the same subset.
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                      "io.modelcontextprotocol/clientCapabilities": {},
                      "io.modelcontextprotocol/clientInfo": {"name": "modern", "version": "1"}});
    let resp = http()
        .post(format!("{}/servers/shop/mcp", gw.base()))
        .bearer_auth(TOKEN)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list")
        .json(
            &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": meta}}),
        )
        .send()
        .await
        .expect("2026 post");
    let modern: Value = resp.json().await.expect("json");
    assert_eq!(names(&modern), listed, "{modern}");

    // A 2025-era session: the same subset, and the renamed tool callable.
    let client = service_kit::client::connect(
        &format!("{}/servers/shop/mcp", gw.base()),
        &service_kit::client::ClientOptions {
            client_name: "session".into(),
            bearer: Some(TOKEN.into()),
            ..Default::default()
        },
    )
    .await
    .expect("session on the virtual server");
    let mut session_names: Vec<String> = client
        .peer()
        .list_all_tools()
        .await
        .expect("tools/list")
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    session_names.sort();
    assert_eq!(session_names, listed);
    let mut call = rmcp::model::CallToolRequestParams::new("product");
    call.arguments = json!({"id": "123"}).as_object().cloned();
    let result = client.peer().call_tool(call).await.expect("product");
    assert_ne!(result.is_error, Some(true));
    let _ = client.cancel().await;
    // A session is its endpoint's: on /mcp it does not exist.
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"}}});
    let resp = http()
        .post(format!("{}/servers/shop/mcp", gw.base()))
        .bearer_auth(TOKEN)
        .header("accept", "application/json, text/event-stream")
        .json(&init)
        .send()
        .await
        .expect("initialize");
    let session = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .expect("a session id")
        .to_string();
    let elsewhere = http()
        .post(format!("{}/mcp", gw.base()))
        .bearer_auth(TOKEN)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .json(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
        .send()
        .await
        .expect("tools/list");
    assert_eq!(elsewhere.status().as_u16(), 404);

    // A credential limited to the virtual server: refused on /mcp, served there.
    let only = credential_token("shop-only");
    let (status, body) = post_to(
        gw,
        "/mcp",
        &only,
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "endpoint_not_allowed", "{body}");
    let mine = rpc_on(gw, "shop", &only, "tools/list", json!({})).await;
    assert_eq!(names(&mine), listed);
    // To a credential limited to other virtual servers, an unknown one is refused like
    // any other (403): it learns nothing of which names exist.
    let (status, body) = post_to(
        gw,
        "/servers/nope/mcp",
        &only,
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    // An unknown virtual server: 404, a JSON-RPC error.
    let (status, body) = post_to(
        gw,
        "/servers/nope/mcp",
        TOKEN,
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nope")),
        "{body}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_servers_defined_at_run_time_are_checked_stored_and_announced() {
    let stack = Stack::start_with(|c| {
        c.virtual_servers = vec![shop()];
        let mut only = credential("shop-only", &["list", "call"]);
        only.virtual_servers = Some(vec!["shop".into()]);
        let mut operator = credential("shop-operator", &["list", "call", "operate"]);
        operator.virtual_servers = Some(vec!["shop".into()]);
        c.credentials = vec![only, operator];
    })
    .await;
    let gw = &stack.gateway;
    use reqwest::Method;

    // Bad definitions: a clear refusal naming the field; nothing defined.
    let (status, body) = admin(
        gw,
        Method::POST,
        "/virtual-servers",
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = admin(
        gw,
        Method::POST,
        "/virtual-servers",
        Some(json!({"name": "x", "tools": ["nope"]})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("tools[0]")),
        "{body}"
    );
    let (status, body) = admin(
        gw,
        Method::POST,
        "/virtual-servers",
        Some(json!({"name": "x", "tool": []})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // The configuration's are the configuration's.
    let (status, body) = admin(
        gw,
        Method::POST,
        "/virtual-servers",
        Some(json!({"name": "shop", "tools": ["user-service/*"]})),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = admin(gw, Method::DELETE, "/virtual-servers/shop", None).await;
    assert_eq!(status, 409);

    // Defined: served at once, listed, and its clients told when it changes.
    let (status, body) = admin(
        gw,
        Method::POST,
        "/virtual-servers",
        Some(json!({"name": "people", "tools": ["user-service/*"]})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["endpoint"], "/servers/people/mcp");
    assert_eq!(body["toolCount"], 4, "{body}");
    let counting = Counting::default();
    let changed = Arc::clone(&counting.0);
    let client = session_with(
        &format!("{}/servers/people/mcp", gw.base()),
        "watcher",
        counting,
    )
    .await;
    assert_eq!(client.peer().list_all_tools().await.expect("list").len(), 4);
    // Its instructions are those of the services it shows.
    let instructions = client
        .peer()
        .peer_info()
        .and_then(|i| i.instructions.clone())
        .unwrap_or_default();
    assert!(
        instructions.contains("## user-service") && !instructions.contains("## shopping-service"),
        "{instructions}"
    );
    let (status, body) = admin(
        gw,
        Method::POST,
        "/virtual-servers",
        Some(json!({"name": "people", "tools": ["user-service/getUserById"]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_until(
        "list_changed after the redefinition",
        Duration::from_secs(10),
        || {
            let changed = Arc::clone(&changed);
            async move { changed.load(Ordering::SeqCst) > 0 }
        },
    )
    .await;
    assert_eq!(client.peer().list_all_tools().await.expect("list").len(), 1);
    let _ = client.cancel().await;
    // A credential limited to another virtual server may not use it.
    let (status, body) = post_to(
        gw,
        "/servers/people/mcp",
        &credential_token("shop-only"),
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let services = services(gw).await;
    assert_eq!(
        services["virtualServers"][0]["name"], "people",
        "{services}"
    );
    let (_, listed) = admin(gw, Method::GET, "/virtual-servers", None).await;
    assert_eq!(listed["count"], 2, "{listed}");
    assert_eq!(listed["servers"][0]["name"], "people");
    assert_eq!(listed["servers"][1]["configured"], true);

    // A new name another tool of the view already has is not used: the call reaches the
    // tool listed under the name.
    let (status, body) = admin(
        gw,
        Method::POST,
        "/virtual-servers",
        Some(json!({
            "name": "clash", "tools": ["shopping-service/*"],
            "rename": {"listCategories": {"name": "getBasket"}}
        })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let listing = rpc_on(gw, "clash", TOKEN, "tools/list", json!({})).await;
    let listed = names(&listing);
    assert_eq!(
        listed.iter().filter(|n| *n == "getBasket").count(),
        1,
        "{listed:?}"
    );
    assert!(listed.contains(&"listCategories".to_string()), "{listed:?}");
    let basket = rpc_on(
        gw,
        "clash",
        TOKEN,
        "tools/call",
        json!({"name": "getBasket", "arguments": {"userId": "456"}}),
    )
    .await;
    let categories = rpc_on(
        gw,
        "clash",
        TOKEN,
        "tools/call",
        json!({"name": "listCategories", "arguments": {}}),
    )
    .await;
    assert_ne!(basket["result"], categories["result"], "{basket}");
    // A virtual server's own tool search, over its own subset.
    let (status, body) = admin(
        gw,
        Method::POST,
        "/virtual-servers",
        Some(json!({
            "name": "finder", "tools": ["user-service/*"], "tool_search": "on"
        })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let listing = rpc_on(gw, "finder", TOKEN, "tools/list", json!({})).await;
    assert_eq!(
        names(&listing),
        ["call_tool", "describe_tools", "search_tools"]
    );
    let found = rpc_on(
        gw,
        "finder",
        TOKEN,
        "tools/call",
        json!({"name": "search_tools", "arguments": {"query": "basket of a user"}}),
    )
    .await;
    let results = found["result"]["structuredContent"]["results"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!results.is_empty(), "{found}");
    assert!(
        results.iter().all(|r| r["service"] == "user-service"),
        "{found}"
    );
    // /mcp keeps the gateway's setting (auto, below its threshold): the catalog.
    assert!(tool_names(gw).await.contains(&"getBasket".to_string()));

    // Meta-tools' names are not for renames.
    let (status, body) = admin(
        gw,
        Method::POST,
        "/virtual-servers",
        Some(json!({
            "name": "meta", "tools": ["shopping-service/*"],
            "rename": {"getBasket": {"name": "search_tools"}}
        })),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = admin(gw, Method::DELETE, "/virtual-servers/clash", None).await;
    assert_eq!(status, 200);
    // A credential limited to virtual servers may not change them, operator or not.
    let (status, body) = {
        let resp = http()
            .post(format!("{}/virtual-servers", gw.base()))
            .bearer_auth(credential_token("shop-operator"))
            .json(&json!({"name": "shop2", "tools": ["billing/*"]}))
            .send()
            .await
            .expect("POST");
        (
            resp.status().as_u16(),
            resp.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "limited_credential", "{body}");

    // Stored: back after a restart; removed: gone.
    let store = stack.store();
    let Stack {
        gateway,
        shopping,
        user,
        dir,
    } = stack;
    gateway.stop().await;
    let mut config = gateway_config(&store);
    config.virtual_servers = vec![shop()];
    let gw = start_gateway(config).await;
    let (status, body) = admin(&gw, Method::GET, "/virtual-servers/people", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["definition"]["tools"],
        json!(["user-service/getUserById"])
    );
    let (status, _) = admin(&gw, Method::DELETE, "/virtual-servers/people", None).await;
    assert_eq!(status, 200);
    let (status, _) = admin(&gw, Method::GET, "/virtual-servers/people", None).await;
    assert_eq!(status, 404);
    let (status, _) = post_to(
        &gw,
        "/servers/people/mcp",
        TOKEN,
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    )
    .await;
    assert_eq!(status, 404);
    gw.stop().await;
    shopping.stop().await;
    user.stop().await;
    drop(dir);
}

#[test]
fn the_readme_virtual_server_example_loads_and_compiles() {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("### Virtual servers")
        .nth(1)
        .expect("the README's virtual servers section");
    let example = section
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("its TOML example");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, example).expect("write");
    let config = gateway::Config::load(Some(&file), &Default::default()).expect("loads");
    let shop = &config.virtual_servers[0];
    let server = shop.compile().expect("compiles");
    assert_eq!(
        server.view.renamed("product"),
        Some((None, "getProductById"))
    );
    assert_eq!(shop.tool_search, Some(gateway::search::Mode::Auto));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_composite_runs_its_steps_at_once_and_reports_each_in_its_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    let step = |name: &str, tool: &str, extra: Value| {
        let mut s = json!({"name": name, "tool": format!("crm/{tool}")});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            s[k] = v;
        }
        s
    };
    config.virtual_servers = vec![
        serde_json::from_value(json!({
            "name": "desk",
            "tools": ["crm/*"],
            "composites": [
                {"name": "overview", "description": "A customer at a glance.",
                 "input": {"userId": {"type": "string"}},
                 "steps": [step("profile", "profile", json!({"arguments": {"id": "${userId}"}, "required": true})),
                           step("orders", "orders", json!({"arguments": {"userId": "${userId}", "limit": 3}}))]},
                {"name": "partial",
                 "steps": [step("profile", "profile", json!({"required": true})),
                           step("notes", "failNotes", json!({}))]},
                {"name": "broken",
                 "steps": [step("profile", "profile", json!({})),
                           step("core", "failCore", json!({"required": true}))]},
                {"name": "late",
                 "steps": [step("profile", "profile", json!({})),
                           step("stuck", "hangOne", json!({"timeout_ms": 300}))]},
                {"name": "stalled",
                 "steps": [step("a", "hangOne", json!({})), step("b", "hangTwo", json!({}))]},
                {"name": "orders", "steps": [step("p", "profile", json!({}))]}
            ]
        }))
        .expect("definition"),
    ];
    let gw = start_gateway(config).await;
    let crm = fixture::Fixture::new(
        "crm",
        &[
            "profile",
            "orders",
            "failNotes",
            "failCore",
            "hangOne",
            "hangTwo",
        ],
    );
    let cancelled = Arc::clone(&crm.cancelled);
    let up = serve_fixture(crm).await;
    assert_eq!(register(&gw, "crm", &up.mcp_url()).await.0, 201);
    let call = |name: &str, arguments: Value| {
        let gw = &gw;
        let name = name.to_string();
        async move {
            rpc_on(
                gw,
                "desk",
                TOKEN,
                "tools/call",
                json!({"name": name, "arguments": arguments}),
            )
            .await
        }
    };

    // Listed with its parameters and an output schema made of its steps'.
    let listing = rpc_on(&gw, "desk", TOKEN, "tools/list", json!({})).await;
    let overview = listing["result"]["tools"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "overview"))
        .cloned()
        .unwrap_or_else(|| panic!("overview not listed: {listing}"));
    assert_eq!(overview["inputSchema"]["required"], json!(["userId"]));
    assert_eq!(
        overview["outputSchema"]["properties"]["steps"]["required"],
        json!(["profile", "orders"])
    );
    // Not on /mcp.
    assert!(!tool_names(&gw).await.contains(&"overview".to_string()));
    // A composite named like a tool the caller sees is not there: the tool is.
    assert_eq!(names(&listing).iter().filter(|n| *n == "orders").count(), 1);
    let reply = call("orders", json!({})).await;
    assert_eq!(
        reply["result"]["structuredContent"]["tool"], "orders",
        "{reply}"
    );

    // Every step succeeds: each result in its place, arguments mapped.
    let reply = call("overview", json!({"userId": "7"})).await;
    let steps = &reply["result"]["structuredContent"]["steps"];
    assert_ne!(reply["result"]["isError"], true, "{reply}");
    assert_eq!(steps["profile"]["ok"], true, "{reply}");
    assert_eq!(steps["profile"]["result"]["arguments"], json!({"id": "7"}));
    assert_eq!(
        steps["orders"]["result"]["arguments"],
        json!({"userId": "7", "limit": 3})
    );
    // A parameter it needs, missing: said so, nothing called.
    let reply = call("overview", json!({})).await;
    assert_eq!(reply["result"]["isError"], true, "{reply}");
    assert!(
        reply.to_string().contains("missing argument(s): userId"),
        "{reply}"
    );
    // An optional step fails: a partial result, not an error.
    let reply = call("partial", json!({})).await;
    let steps = &reply["result"]["structuredContent"]["steps"];
    assert_ne!(reply["result"]["isError"], true, "{reply}");
    assert_eq!(steps["profile"]["ok"], true);
    assert_eq!(steps["notes"]["ok"], false);
    assert!(
        steps["notes"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("failed on purpose")),
        "{reply}"
    );
    // A required step fails: the composite is an error, the rest still reported.
    let reply = call("broken", json!({})).await;
    assert_eq!(reply["result"]["isError"], true, "{reply}");
    assert_eq!(
        reply["result"]["structuredContent"]["steps"]["profile"]["ok"],
        true
    );
    // A hanging step times out (and is cancelled upstream) while the others return.
    let reply = call("late", json!({})).await;
    let steps = &reply["result"]["structuredContent"]["steps"];
    assert_eq!(steps["profile"]["ok"], true, "{reply}");
    assert_eq!(steps["stuck"]["error"], "timed out after 300 ms", "{reply}");
    wait_until(
        "the timed-out step cancelled upstream",
        Duration::from_secs(10),
        || {
            let cancelled = Arc::clone(&cancelled);
            async move { cancelled.load(Ordering::SeqCst) >= 1 }
        },
    )
    .await;

    // A client's cancel reaches every step.
    let before = cancelled.load(Ordering::SeqCst);
    let client = service_kit::client::connect(
        &format!("{}/servers/desk/mcp", gw.base()),
        &service_kit::client::ClientOptions {
            client_name: "canceller".into(),
            bearer: Some(TOKEN.into()),
            ..Default::default()
        },
    )
    .await
    .expect("session");
    let handle = client
        .peer()
        .send_request_with_option(
            rmcp::model::ClientRequest::CallToolRequest(rmcp::model::CallToolRequest::new(
                rmcp::model::CallToolRequestParams::new("stalled"),
            )),
            rmcp::service::PeerRequestOptions::no_options(),
        )
        .await
        .expect("sent");
    tokio::time::sleep(Duration::from_millis(300)).await;
    handle.cancel(Some("enough".into())).await.expect("cancel");
    wait_until(
        "both stalled steps cancelled upstream",
        Duration::from_secs(10),
        || {
            let cancelled = Arc::clone(&cancelled);
            async move { cancelled.load(Ordering::SeqCst) >= before + 2 }
        },
    )
    .await;
    let _ = client.cancel().await;

    // Each step is a call of its own in the call log, under the real tool's name.
    wait_until(
        "the steps in the call log",
        Duration::from_secs(10),
        || async {
            let logged: Value = http()
                .get(format!("{}/calls?tool=profile", gw.base()))
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("GET /calls")
                .json()
                .await
                .expect("JSON");
            logged["count"].as_u64().unwrap_or(0) >= 4
        },
    )
    .await;
    // The composite has its entry too, under its virtual server, and its steps share its
    // request id.
    let calls: Value = http()
        .get(format!("{}/calls?limit=500", gw.base()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET /calls")
        .json()
        .await
        .expect("JSON");
    let calls = calls["calls"].as_array().cloned().unwrap_or_default();
    let composite = calls
        .iter()
        .find(|c| c["tool"] == "overview")
        .unwrap_or_else(|| panic!("no overview entry: {calls:?}"));
    assert_eq!(composite["service"], "servers/desk", "{composite}");
    assert_eq!(composite["outcome"], "ok", "{composite}");
    let request = &composite["requestId"];
    let mut steps: Vec<&str> = calls
        .iter()
        .filter(|c| &c["requestId"] == request && c["tool"] != "overview")
        .filter_map(|c| c["tool"].as_str())
        .collect();
    steps.sort_unstable();
    assert_eq!(steps, ["orders", "profile"], "{calls:?}");
    let broken = calls
        .iter()
        .find(|c| c["tool"] == "broken")
        .expect("broken");
    assert_eq!(broken["outcome"], "tool_error", "{broken}");
    gw.stop().await;
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stacks_get_customer_overview_gathers_a_customer_from_both_services() {
    let customers: gateway::servers::Definition =
        serde_json::from_str(include_str!("../../docs/customers-server.json")).expect("definition");
    let stack = Stack::start_with(|c| c.virtual_servers = vec![customers]).await;
    let reply = rpc_on(
        &stack.gateway,
        "customers",
        TOKEN,
        "tools/call",
        json!({"name": "getCustomerOverview", "arguments": {"userId": "456"}}),
    )
    .await;
    assert_ne!(reply["result"]["isError"], true, "{reply}");
    let steps = &reply["result"]["structuredContent"]["steps"];
    assert_eq!(steps["profile"]["ok"], true, "{reply}");
    assert!(
        steps["profile"]["result"]
            .to_string()
            .contains("Mateo Martin"),
        "{reply}"
    );
    assert_eq!(steps["orders"]["ok"], true, "{reply}");
    assert_eq!(steps["recommendations"]["ok"], true, "{reply}");
    // An unknown customer: the required profile fails, so the overview is an error.
    let reply = rpc_on(
        &stack.gateway,
        "customers",
        TOKEN,
        "tools/call",
        json!({"name": "getCustomerOverview", "arguments": {"userId": "no-such-user"}}),
    )
    .await;
    assert_eq!(reply["result"]["isError"], true, "{reply}");
    assert_eq!(
        reply["result"]["structuredContent"]["steps"]["profile"]["ok"],
        false
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_that_names_no_service_renames_one_tool_the_one_it_calls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.virtual_servers = vec![
        serde_json::from_value(json!({"name": "both", "tools": ["alpha/*", "beta/*"],
                                      "rename": {"getThing": {"name": "thing"}}}))
        .expect("definition"),
    ];
    let gw = start_gateway(config).await;
    let alpha = start_fixture("alpha", &["getThing"]).await;
    let beta = start_fixture("beta", &["getThing"]).await;
    assert_eq!(register(&gw, "alpha", &alpha.mcp_url()).await.0, 201);
    assert_eq!(register(&gw, "beta", &beta.mcp_url()).await.0, 201);
    let listing = rpc_on(&gw, "both", TOKEN, "tools/list", json!({})).await;
    let listed = names(&listing);
    assert_eq!(
        listed.iter().filter(|n| *n == "thing").count(),
        1,
        "{listed:?}"
    );
    assert!(listed.contains(&"beta__getThing".to_string()), "{listed:?}");
    let reply = rpc_on(
        &gw,
        "both",
        TOKEN,
        "tools/call",
        json!({"name": "thing", "arguments": {}}),
    )
    .await;
    assert_eq!(
        reply["result"]["structuredContent"]["server"], "alpha",
        "{reply}"
    );
    gw.stop().await;
    alpha.stop().await;
    beta.stop().await;
}
