//! The merged table and routing, with the two demo services behind the gateway.

use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};

use crate::support::{fixture, *};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_tools_list_contains_both_services_tools() {
    let stack = Stack::start().await;
    let names = tool_names(&stack.gateway).await;
    for expected in [
        "getProductById",
        "searchProducts",
        "placeOrder",
        "getPersonalizedRecommendations",
        "getUserById",
        "getUserPreferences",
    ] {
        assert!(
            names.contains(&expected.to_string()),
            "{expected} missing from {names:?}"
        );
    }
    // Definitions pass through: compare with what each service lists directly.
    let direct = service_kit::client::connect(
        &stack.shopping.mcp_url(),
        &service_kit::client::ClientOptions {
            bearer: Some(service_token("shopping-service")),
            ..Default::default()
        },
    )
    .await
    .expect("direct session");
    let direct_tools = direct.list_all_tools().await.expect("direct list");
    let (_, via) = rpc(&stack.gateway, "tools/list", Value::Null).await;
    for tool in &direct_tools {
        let through = via["result"]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .find(|t| t["name"] == tool.name.as_ref())
            .unwrap_or_else(|| panic!("{} not listed by the gateway", tool.name));
        assert_eq!(
            through,
            &serde_json::to_value(tool).expect("json"),
            "{}",
            tool.name
        );
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_route_to_the_service_that_owns_the_tool() {
    let stack = Stack::start().await;
    let product = call(&stack.gateway, "getProductById", json!({"id": "123"})).await;
    let p = &product["result"]["structuredContent"];
    assert_eq!(p["id"], "123", "{product}");
    assert!(p["price"].is_number() && p["name"].is_string(), "{product}");
    let user = call(&stack.gateway, "getUserById", json!({"id": "456"})).await;
    let u = &user["result"]["structuredContent"];
    assert_eq!(u["id"], "456", "{user}");
    assert!(u["email"].is_string(), "{user}");
    // The backend's own tool error passes through unchanged, as a result.
    let missing = call(&stack.gateway, "getProductById", json!({"id": "99999999"})).await;
    assert_eq!(missing["result"]["isError"], true, "{missing}");
    let text = missing["result"]["content"][0]["text"]
        .as_str()
        .expect("text");
    assert!(text.contains("99999999"), "{text}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tool_is_invalid_params() {
    let stack = Stack::start().await;
    let r = call(&stack.gateway, "noSuchTool", json!({})).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .expect("message")
            .contains("noSuchTool"),
        "{r}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_rmcp_client_session_through_the_gateway() {
    let stack = Stack::start().await;
    let client = mcp_client(&stack.gateway).await;
    let info = client.peer_info().expect("server info");
    assert_eq!(
        info.server_info.as_ref().map(|i| i.name.as_str()),
        Some("mcp-gateway")
    );
    let tools = client.list_all_tools().await.expect("list");
    assert!(tools.iter().any(|t| t.name == "getUserById"));
    let mut params = CallToolRequestParams::new("getUserById");
    params.arguments = Some(json!({"id": "456"}).as_object().expect("object").clone());
    let result = client.call_tool(params).await.expect("call");
    assert_ne!(result.is_error, Some(true));
    assert_eq!(result.structured_content.expect("structured")["id"], "456");
    client.cancel().await.expect("close session");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommendations_read_preferences_through_the_gateway() {
    let stack = Stack::start().await;
    let prefs = call(&stack.gateway, "getUserPreferences", json!({"id": "456"})).await;
    let favourite: Vec<String> = prefs["result"]["structuredContent"]["favoriteCategories"]
        .as_array()
        .unwrap_or_else(|| panic!("no preferences: {prefs}"))
        .iter()
        .map(|c| c.as_str().expect("category").to_string())
        .collect();
    assert!(!favourite.is_empty(), "{prefs}");
    let recs = call(
        &stack.gateway,
        "getPersonalizedRecommendations",
        json!({"userId": "456", "limit": 5}),
    )
    .await;
    let r = &recs["result"]["structuredContent"];
    assert_eq!(r["userId"], "456", "{recs}");
    assert_eq!(
        r["basedOn"]["favoriteCategories"],
        prefs["result"]["structuredContent"]["favoriteCategories"],
        "recommendations must be based on user-service's answer: {recs}"
    );
    let products = r["products"].as_array().expect("products");
    assert!(!products.is_empty(), "{recs}");
    assert!(
        products
            .iter()
            .any(|p| favourite.iter().any(|c| p["category"] == c.as_str())),
        "no recommended product in a favourite category: {recs}"
    );
    // An unknown user: user-service's message travels back through both hops.
    let unknown = call(
        &stack.gateway,
        "getPersonalizedRecommendations",
        json!({"userId": "99999999"}),
    )
    .await;
    assert_eq!(unknown["result"]["isError"], true, "{unknown}");
    let text = unknown["result"]["content"][0]["text"]
        .as_str()
        .expect("text");
    assert!(text.contains("99999999"), "{text}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lists_are_paged_both_ways() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.list_page_size = 10;
    let gateway = start_gateway(config).await;
    // A backend that pages its own list: the gateway follows its nextCursor.
    let names: Vec<String> = (0..25).map(|i| format!("tool{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let backend = serve_fixture(fixture::Fixture::new("long", &refs).paged(7)).await;
    let (status, body) = register(&gateway, "long", &backend.mcp_url()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["registered"]["toolCount"], 25, "{body}");
    // A second backend paging differently.
    let other: Vec<String> = (0..13).map(|i| format!("other{i:02}")).collect();
    let other_refs: Vec<&str> = other.iter().map(String::as_str).collect();
    let backend2 = serve_fixture(fixture::Fixture::new("long2", &other_refs).paged(4)).await;
    let (status, body) = register(&gateway, "long2", &backend2.mcp_url()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["registered"]["toolCount"], 13, "{body}");
    // The gateway pages its merged list with opaque cursors.
    let (_, first) = rpc(&gateway, "tools/list", Value::Null).await;
    assert_eq!(
        first["result"]["tools"].as_array().expect("tools").len(),
        10
    );
    let cursor = first["result"]["nextCursor"]
        .as_str()
        .expect("nextCursor")
        .to_string();
    let (_, second) = rpc(&gateway, "tools/list", json!({"cursor": cursor})).await;
    assert_eq!(second["result"]["tools"][0]["name"], "tool10", "{second}");
    assert!(
        second["result"]["nextCursor"].is_string(),
        "38 tools: more pages"
    );
    let (_, bad) = rpc(&gateway, "tools/list", json!({"cursor": "nonsense"})).await;
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    // An SDK client that follows cursors sees every tool exactly once.
    let client = mcp_client(&gateway).await;
    let mut all: Vec<String> = client
        .list_all_tools()
        .await
        .expect("list all")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    all.sort();
    let mut expected = [other.clone(), names.clone()].concat();
    expected.sort();
    assert_eq!(all, expected);
    client.cancel().await.expect("close");
    backend.stop().await;
    backend2.stop().await;
    gateway.stop().await;
}
