//! The real binary in `--stdio` mode, spoken to in JSON-RPC lines over its stdin and
//! stdout: the handshake, tools, resources, templates, prompts, completions and basket
//! subscriptions; stdout carries nothing but JSON-RPC messages (logs go to stderr); the
//! process holds no socket (no port, no registration) and exits by itself when stdin
//! closes, or on SIGTERM.

#[path = "../../service-kit/tests/support/stdio_client.rs"]
mod stdio_client;

use serde_json::{Value, json};

use stdio_client::{StdioChild, open_tcp_sockets, sigterm};

const BIN: &str = env!("CARGO_BIN_EXE_shopping-service");

/// The binary with no gateway configured (`GATEWAY_URL` empty).
fn start() -> StdioChild {
    StdioChild::start(BIN, &[], &[("GATEWAY_URL", "")])
}

/// The JSON text of a `resources/read` result's only contents, checked to be JSON.
fn contents_json(result: &Value, uri: &str) -> Value {
    let contents = result["contents"].as_array().expect("contents");
    assert_eq!(contents.len(), 1, "{result}");
    assert_eq!(contents[0]["uri"], uri);
    assert_eq!(contents[0]["mimeType"], "application/json");
    serde_json::from_str(contents[0]["text"].as_str().expect("text")).expect("JSON text")
}

fn names(list: &Value, key: &str, field: &str) -> Vec<String> {
    list[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} in {list}"))
        .iter()
        .map(|item| item[field].as_str().expect(field).to_string())
        .collect()
}

#[tokio::test]
async fn a_stdio_session_serves_tools_resources_prompts_and_completions() {
    let mut shop = start();
    let init = shop.initialize().await;
    assert_eq!(init["protocolVersion"], "2025-11-25");
    assert_eq!(init["serverInfo"]["name"], "shopping-service");
    // Exactly what is served: subscribe on resources (baskets), no list changes, no logging.
    assert_eq!(
        init["capabilities"],
        json!({
            "completions": {},
            "prompts": {},
            "resources": {"subscribe": true},
            "tools": {},
        })
    );

    let tools = shop.result("tools/list", json!({})).await;
    let expected: Vec<String> = shopping_service::tools::tools()
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(names(&tools, "tools", "name"), expected);
    let product = shop.call("getProductById", json!({"id": "123"})).await;
    assert_eq!(product["isError"], false, "{product}");
    assert_eq!(product["structuredContent"]["id"], "123");
    let refused = shop.call("getProductById", json!({"id": 123})).await;
    assert_eq!(refused["isError"], true);
    assert_eq!(
        refused["content"][0]["text"],
        "argument \"id\" must be a string, got number"
    );

    let resources = shop.result("resources/list", json!({})).await;
    assert_eq!(
        names(&resources, "resources", "uri"),
        [
            "ecommerce://products/catalog",
            "ecommerce://products/categories",
            "ecommerce://orders/stats"
        ]
    );
    let templates = shop.result("resources/templates/list", json!({})).await;
    assert_eq!(
        names(&templates, "resourceTemplates", "uriTemplate"),
        [
            "ecommerce://products/{id}",
            "ecommerce://users/{userId}/basket",
            "ecommerce://users/{userId}/orders"
        ]
    );
    let uri = "ecommerce://products/catalog";
    let catalog = contents_json(
        &shop.result("resources/read", json!({"uri": uri})).await,
        uri,
    );
    let catalog = catalog.as_array().expect("the catalog is a JSON array");
    assert_eq!(catalog.len(), 480);
    let uri = "ecommerce://products/categories";
    let categories = contents_json(
        &shop.result("resources/read", json!({"uri": uri})).await,
        uri,
    );
    assert_eq!(categories["categories"].as_array().map(Vec::len), Some(8));
    let uri = "ecommerce://products/123";
    let one = contents_json(
        &shop.result("resources/read", json!({"uri": uri})).await,
        uri,
    );
    assert_eq!(one, product["structuredContent"]);
    assert_eq!(one, catalog[122]);
    let missing = shop
        .error(
            "resources/read",
            json!({"uri": "ecommerce://products/9999"}),
        )
        .await;
    assert_eq!(missing["code"], -32002, "{missing}");
    assert!(
        missing["message"]
            .as_str()
            .expect("message")
            .contains("9999"),
        "{missing}"
    );

    let prompts = shop.result("prompts/list", json!({})).await;
    assert_eq!(
        names(&prompts, "prompts", "name"),
        ["recommend_for_user", "summarise_order_history"]
    );
    assert_eq!(prompts["prompts"][0]["arguments"][0]["name"], "userId");
    assert_eq!(prompts["prompts"][0]["arguments"][0]["required"], true);
    let prompt = shop
        .result(
            "prompts/get",
            json!({"name": "summarise_order_history", "arguments": {"userId": "1"}}),
        )
        .await;
    let messages = prompt["messages"].as_array().expect("messages");
    assert!(
        messages[0]["content"]["text"]
            .as_str()
            .expect("text")
            .contains("user 1"),
        "{prompt}"
    );
    assert_eq!(
        messages[1]["content"]["resource"]["uri"],
        "ecommerce://users/1/orders"
    );
    let bad = shop
        .error(
            "prompts/get",
            json!({"name": "recommend_for_user", "arguments": {}}),
        )
        .await;
    assert_eq!(bad["code"], -32602, "{bad}");

    let completed = shop
        .result(
            "completion/complete",
            json!({
                "ref": {"type": "ref/resource", "uri": "ecommerce://products/{id}"},
                "argument": {"name": "id", "value": "12"},
            }),
        )
        .await;
    let values = completed["completion"]["values"]
        .as_array()
        .expect("values");
    assert_eq!(values[0], "12");
    assert!(
        values
            .iter()
            .all(|v| v.as_str().expect("id").starts_with("12"))
    );
    assert_eq!(completed["completion"]["total"], 11, "{completed}");
    let completed = shop
        .result(
            "completion/complete",
            json!({
                "ref": {"type": "ref/prompt", "name": "recommend_for_user"},
                "argument": {"name": "category", "value": "sp"},
            }),
        )
        .await;
    assert_eq!(
        completed["completion"]["values"],
        json!(["Sports & Outdoors"])
    );

    // No gateway configured: recommendations say so, as a tool error.
    let recommended = shop
        .call("getPersonalizedRecommendations", json!({"userId": "456"}))
        .await;
    assert_eq!(recommended["isError"], true);
    assert!(
        recommended["content"][0]["text"]
            .as_str()
            .expect("text")
            .contains("no gateway is configured"),
        "{recommended}"
    );

    let pid = shop.pid();
    assert_eq!(
        open_tcp_sockets(pid),
        0,
        "no port, no registration, no gateway"
    );
    assert!(shop.notifications.is_empty(), "{:?}", shop.notifications);
    let (status, rest, stderr) = shop.close_and_wait().await;
    assert!(status.success(), "{status}: {stderr}");
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        stderr.contains("serving MCP over stdio"),
        "logs go to stderr: {stderr}"
    );
}

#[tokio::test]
async fn a_subscribed_basket_is_announced_until_unsubscribed() {
    let mut shop = start();
    shop.initialize().await;
    let basket = "ecommerce://users/u7/basket";
    shop.result("resources/subscribe", json!({"uri": basket}))
        .await;
    let unknown = shop
        .error(
            "resources/subscribe",
            json!({"uri": "ecommerce://products/0"}),
        )
        .await;
    assert_eq!(unknown["code"], -32002, "{unknown}");

    let added = shop
        .call(
            "addToBasket",
            json!({"userId": "u7", "productId": "5", "quantity": 1}),
        )
        .await;
    assert_eq!(added["isError"], false, "{added}");
    // The update is sent before the tool's answer.
    assert_eq!(
        shop.notifications,
        [json!({
            "jsonrpc": "2.0",
            "method": "notifications/resources/updated",
            "params": {"uri": basket},
        })]
    );
    let read = shop.result("resources/read", json!({"uri": basket})).await;
    assert_eq!(contents_json(&read, basket)["itemCount"], 1);

    // Another user's basket is not this subscription's business.
    shop.notifications.clear();
    shop.call("addToBasket", json!({"userId": "u8", "productId": "5"}))
        .await;
    assert!(shop.notifications.is_empty(), "{:?}", shop.notifications);

    shop.result("resources/unsubscribe", json!({"uri": basket}))
        .await;
    shop.call("addToBasket", json!({"userId": "u7", "productId": "5"}))
        .await;
    shop.call("placeOrder", json!({"userId": "u7"})).await;
    assert!(shop.notifications.is_empty(), "{:?}", shop.notifications);

    let (status, rest, stderr) = shop.close_and_wait().await;
    assert!(status.success(), "{status}: {stderr}");
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test]
async fn sigterm_ends_a_stdio_session_whose_stdin_is_still_open() {
    let mut shop = start();
    shop.initialize().await;
    shop.result("tools/list", json!({})).await;
    sigterm(shop.pid());
    let (status, rest, stderr) = shop.wait().await;
    assert!(status.success(), "{status}: {stderr}");
    assert!(rest.is_empty(), "{rest:?}");
    assert!(stderr.contains("shutdown signal received"), "{stderr}");
}

#[tokio::test]
async fn closing_stdin_before_initialize_is_a_clean_exit() {
    let shop = start();
    let (status, rest, stderr) = shop.close_and_wait().await;
    assert!(status.success(), "{status}: {stderr}");
    assert!(rest.is_empty(), "{rest:?}");
}
