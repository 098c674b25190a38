//! The service in-process on an ephemeral port, without a gateway: `/health` and the
//! Bearer check on `/mcp` over real HTTP, and the MCP tools, resources, prompts,
//! completions and basket subscriptions (`resources/subscribe` and 2026-07-28
//! `subscriptions/listen`) through real rmcp client sessions that send the service's
//! token.

mod common;

use std::{net::SocketAddr, time::Duration};

use rmcp::{
    ClientHandler, RoleClient, ServiceError,
    model::{
        CallToolRequestParams, CallToolResult, ClientConfig, ErrorCode, GetPromptRequestParams,
        ReadResourceRequestParams, ResourceContents, ResourceUpdatedNotificationParam,
        ServerNotification, SubscribeRequestParams, SubscriptionFilter, UnsubscribeRequestParams,
    },
    service::{NotificationContext, RunningService},
};
use serde_json::{Value, json};
use service_kit::client::{ClientOptions, ClientSession, client_config, connect, connect_with};
use shopping_service::{Config, run};
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use common::{args, error_text};

/// The token the service under test accepts on `/mcp`.
const SERVICE_TOKEN: &str = "shop-accepts-this-token";

struct Service {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

async fn start() -> Service {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let shutdown = CancellationToken::new();
    let config = Config {
        gateway_url: None,
        service_token: SERVICE_TOKEN.into(),
        ..Config::default()
    };
    let task = tokio::spawn(run(config, listener, shutdown.clone()));
    Service {
        addr,
        shutdown,
        task,
    }
}

impl Service {
    async fn client(&self) -> ClientSession {
        let options = ClientOptions {
            bearer: Some(SERVICE_TOKEN.into()),
            ..ClientOptions::default()
        };
        connect(&format!("http://{}/mcp", self.addr), &options)
            .await
            .expect("MCP session")
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("service stops within 10 s")
            .expect("service task")
            .expect("service ran without error");
    }
}

async fn call(session: &ClientSession, tool: &str, arguments: Value) -> CallToolResult {
    session
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args(arguments)))
        .await
        .unwrap_or_else(|e| panic!("{tool}: {e}"))
}

fn ok(result: CallToolResult) -> Value {
    assert_eq!(result.is_error, Some(false), "expected success: {result:?}");
    let structured = result.structured_content.expect("structured content");
    let text = result
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone())
        .expect("text content");
    assert_eq!(
        serde_json::from_str::<Value>(&text).expect("text is JSON"),
        structured,
        "text and structured content agree"
    );
    structured
}

#[tokio::test]
async fn health_over_http() {
    let service = start().await;
    let response = client()
        .get(format!("http://{}/health", service.addr))
        .send()
        .await
        .expect("GET /health");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["service"], "shopping-service");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["products"].as_u64().expect("products") >= 400);
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
    let service = start().await;
    let client = client();
    let mcp = format!("http://{}/mcp", service.addr);
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "0"}
        }
    });
    let post = |authorization: Option<&str>| {
        let mut request = client
            .post(&mcp)
            .header("Accept", "application/json, text/event-stream")
            .json(&initialize);
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        request.send()
    };
    let realm = r#"Bearer realm="shopping-service""#;

    // No token, on every method of /mcp.
    assert_refused(post(None).await.expect("POST"), realm, "missing_token").await;
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let response = client
            .request(method.clone(), &mcp)
            .send()
            .await
            .expect("send");
        assert_refused(response, realm, "missing_token").await;
    }
    // A wrong token, the gateway's default one included, and another scheme.
    let invalid = format!(r#"{realm}, error="invalid_token""#);
    for wrong in [
        "Bearer shop-accepts-this-toke",
        "Bearer mcp-token-123",
        "Bearer shop-accepts-this-token-and-more",
    ] {
        let response = post(Some(wrong)).await.expect("POST");
        assert_refused(response, &invalid, "invalid_token").await;
    }
    let response = post(Some("Basic c2hvcDp0b2tlbg==")).await.expect("POST");
    assert_refused(
        response,
        &format!(r#"{realm}, error="invalid_request""#),
        "invalid_request",
    )
    .await;

    // The right token, whatever the scheme's case: the MCP server answers.
    for scheme in ["Bearer", "bearer"] {
        let response = post(Some(&format!("{scheme} {SERVICE_TOKEN}")))
            .await
            .expect("POST");
        assert_eq!(response.status(), 200, "{scheme}");
        assert!(response.headers().contains_key("mcp-session-id"));
    }
    // And through an rmcp session that sends it.
    let session = service.client().await;
    ok(call(&session, "getProductById", json!({"id": "1"})).await);
    drop(session);

    // /health needs none; a path that does not exist is not found, token or not.
    let health = client
        .get(format!("http://{}/health", service.addr))
        .send()
        .await
        .expect("GET /health");
    assert_eq!(health.status(), 200);
    let missing = client
        .get(format!("http://{}/nowhere", service.addr))
        .send()
        .await
        .expect("GET /nowhere");
    assert_eq!(missing.status(), 404);
    service.stop().await;
}

#[tokio::test]
async fn an_unusable_service_token_stops_start_up() {
    for token in ["", "two words"] {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let config = Config {
            gateway_url: None,
            service_token: token.into(),
            ..Config::default()
        };
        let error = run(config, listener, CancellationToken::new())
            .await
            .expect_err("refused");
        assert!(error.to_string().contains("service token"), "{error}");
    }
}

#[tokio::test]
async fn tools_are_listed_with_descriptions_and_schemas() {
    let service = start().await;
    let session = service.client().await;
    let info = session.peer_info().expect("server info");
    assert_eq!(
        info.server_info.as_ref().map(|i| i.name.as_str()),
        Some("shopping-service")
    );
    assert!(info.capabilities.tools.is_some());
    let tools = session.list_all_tools().await.expect("tools/list");
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "addToBasket",
            "filterProducts",
            "getBasket",
            "getOrderStats",
            "getPersonalizedRecommendations",
            "getProductById",
            "getSimilarProducts",
            "getTrendingProducts",
            "getUserOrders",
            "listCategories",
            "placeOrder",
            "searchProducts",
        ]
    );
    for tool in &tools {
        assert!(
            tool.description.as_deref().is_some_and(|d| !d.is_empty()),
            "{} has a description",
            tool.name
        );
        assert_eq!(tool.input_schema["type"], "object", "{}", tool.name);
        assert_eq!(
            tool.input_schema["additionalProperties"], false,
            "{}",
            tool.name
        );
    }
    drop(session);
    service.stop().await;
}

#[tokio::test]
async fn product_lookup_and_argument_errors() {
    let service = start().await;
    let session = service.client().await;

    let product = ok(call(&session, "getProductById", json!({"id": "123"})).await);
    assert_eq!(product["id"], "123");
    assert!(product["name"].as_str().is_some_and(|n| !n.is_empty()));
    assert!(product["price"].as_f64().is_some_and(|p| p > 0.0));

    let cases = [
        (json!({}), "missing required argument \"id\""),
        (
            json!({"id": 123}),
            "argument \"id\" must be a string, got number",
        ),
        (json!({"id": "99999"}), "no product with id \"99999\""),
        (
            json!({"id": "1", "extra": true}),
            "unknown argument \"extra\" (accepted: \"id\")",
        ),
    ];
    for (arguments, message) in cases {
        let result = call(&session, "getProductById", arguments.clone()).await;
        assert_eq!(error_text(&result), message, "arguments {arguments}");
    }
    let result = call(
        &session,
        "searchProducts",
        json!({"query": "coffee", "limit": 500}),
    )
    .await;
    assert_eq!(
        error_text(&result),
        "argument \"limit\" must be between 1 and 100, got 500"
    );

    // An unknown tool is a protocol error: -32602 naming the tool.
    let err = session
        .call_tool(CallToolRequestParams::new("noSuchTool"))
        .await
        .expect_err("unknown tool");
    match err {
        ServiceError::McpError(e) => {
            assert_eq!(e.code, ErrorCode::INVALID_PARAMS);
            assert!(e.message.contains("noSuchTool"), "{}", e.message);
        }
        other => panic!("expected a JSON-RPC error, got {other}"),
    }
    drop(session);
    service.stop().await;
}

#[tokio::test]
async fn catalog_queries() {
    let service = start().await;
    let session = service.client().await;

    let found = ok(call(
        &session,
        "searchProducts",
        json!({"query": "wireless headphones"}),
    )
    .await);
    assert!(found["total"].as_u64().expect("total") > 0);
    let first = &found["products"][0];
    assert!(
        first["name"]
            .as_str()
            .expect("name")
            .contains("Wireless Headphones")
    );

    let categories = ok(call(&session, "listCategories", json!({})).await);
    assert_eq!(categories["categories"].as_array().map(Vec::len), Some(8));

    let filtered = ok(call(
        &session,
        "filterProducts",
        json!({"category": "Electronics", "maxPrice": 100, "inStock": true, "limit": 5}),
    )
    .await);
    for p in filtered["products"].as_array().expect("products") {
        assert_eq!(p["category"], "Electronics");
        assert!(p["price"].as_f64().expect("price") <= 100.0);
        assert!(p["stock"].as_u64().expect("stock") > 0);
    }
    let bad = call(
        &session,
        "filterProducts",
        json!({"minPrice": 100, "maxPrice": 10}),
    )
    .await;
    assert_eq!(
        error_text(&bad),
        "minPrice (100) must not be greater than maxPrice (10)"
    );

    let similar = ok(call(
        &session,
        "getSimilarProducts",
        json!({"id": "123", "limit": 3}),
    )
    .await);
    let products = similar["products"].as_array().expect("products");
    assert_eq!(products.len(), 3);
    assert!(
        products
            .iter()
            .all(|p| p["category"] == similar["category"] && p["id"] != "123")
    );

    let trending = ok(call(
        &session,
        "getTrendingProducts",
        json!({"category": "Books"}),
    )
    .await);
    assert!(
        trending["products"]
            .as_array()
            .expect("products")
            .iter()
            .all(|p| p["category"] == "Books")
    );

    let stats = ok(call(&session, "getOrderStats", json!({})).await);
    assert!(stats["orderCount"].as_u64().expect("orderCount") >= 300);
    assert!(stats["revenue"].as_f64().expect("revenue") > 0.0);

    drop(session);
    service.stop().await;
}

#[tokio::test]
async fn basket_to_order_flow() {
    let service = start().await;
    let session = service.client().await;
    let user = "test-user-1";

    // A product with 3 to 100 in stock (100 is the largest quantity per call).
    let listing = ok(call(
        &session,
        "filterProducts",
        json!({"inStock": true, "limit": 100}),
    )
    .await);
    let product = listing["products"]
        .as_array()
        .expect("products")
        .iter()
        .find(|p| p["stock"].as_u64().is_some_and(|s| (3..=100).contains(&s)))
        .cloned()
        .expect("a product with stock");
    let id = product["id"].as_str().expect("id").to_string();
    let stock = product["stock"].as_u64().expect("stock");

    let basket = ok(call(
        &session,
        "addToBasket",
        json!({"userId": user, "productId": id, "quantity": 2}),
    )
    .await);
    assert_eq!(basket["items"][0]["quantity"], 2);
    let too_many = call(
        &session,
        "addToBasket",
        json!({"userId": user, "productId": id, "quantity": stock - 1}),
    )
    .await;
    assert!(error_text(&too_many).contains("in stock"), "{too_many:?}");
    let unknown = call(
        &session,
        "addToBasket",
        json!({"userId": user, "productId": "99999"}),
    )
    .await;
    assert_eq!(error_text(&unknown), "no product with id \"99999\"");

    let basket = ok(call(&session, "getBasket", json!({"userId": user})).await);
    assert_eq!(basket["items"].as_array().map(Vec::len), Some(1));
    let total = basket["total"].as_f64().expect("total");
    assert!((total - 2.0 * product["price"].as_f64().expect("price")).abs() < 1e-9);

    let order = ok(call(&session, "placeOrder", json!({"userId": user})).await);
    assert_eq!(order["userId"], user);
    assert_eq!(order["status"], "confirmed");
    assert_eq!(order["total"], basket["total"]);
    assert!(
        order["orderId"]
            .as_str()
            .is_some_and(|o| o.starts_with("ORD-"))
    );

    let after = ok(call(&session, "getProductById", json!({"id": id})).await);
    assert_eq!(after["stock"].as_u64(), Some(stock - 2));
    let basket = ok(call(&session, "getBasket", json!({"userId": user})).await);
    assert_eq!(basket["items"].as_array().map(Vec::len), Some(0));
    let empty = call(&session, "placeOrder", json!({"userId": user})).await;
    assert!(error_text(&empty).contains("is empty"));

    let orders = ok(call(&session, "getUserOrders", json!({"userId": user})).await);
    assert_eq!(orders["total"], 1);
    assert_eq!(orders["orders"][0]["orderId"], order["orderId"]);

    // Historical orders are there for the demo users, newest first.
    let history = ok(call(
        &session,
        "getUserOrders",
        json!({"userId": "31", "limit": 100}),
    )
    .await);
    let dates: Vec<&str> = history["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .map(|o| o["createdAt"].as_str().expect("createdAt"))
        .collect();
    assert!(!dates.is_empty());
    assert!(dates.windows(2).all(|w| w[0] >= w[1]), "{dates:?}");

    drop(session);
    service.stop().await;
}

#[tokio::test]
async fn recommendations_without_gateway_are_an_error_naming_the_gateway() {
    let service = start().await;
    let session = service.client().await;
    let result = call(
        &session,
        "getPersonalizedRecommendations",
        json!({"userId": "456"}),
    )
    .await;
    let text = error_text(&result);
    assert!(text.contains("gateway"), "{text}");
    assert!(text.contains("\"456\""), "{text}");
    drop(session);
    service.stop().await;
}

#[tokio::test]
async fn shutdown_with_an_open_session() {
    let service = start().await;
    let session = service.client().await;
    ok(call(&session, "getProductById", json!({"id": "1"})).await);
    // The session stays open while the service shuts down.
    service.stop().await;
    drop(session);
}

/// An HTTP client for the tests (the process's TLS provider made ring first: the
/// workspace's reqwest has no built-in one).
fn client() -> reqwest::Client {
    service_kit::client::ensure_tls_provider();
    reqwest::Client::new()
}

/// A client handler that hands every `notifications/resources/updated` URI to a channel.
#[derive(Clone)]
struct Watcher {
    updates: mpsc::UnboundedSender<String>,
}

impl ClientHandler for Watcher {
    fn get_info(&self) -> ClientConfig {
        client_config(&ClientOptions::default())
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _ = self.updates.send(params.uri);
    }
}

impl Service {
    fn options(&self) -> ClientOptions {
        ClientOptions {
            bearer: Some(SERVICE_TOKEN.into()),
            ..ClientOptions::default()
        }
    }

    /// A session whose resource updates arrive on the returned channel.
    async fn watching_client(
        &self,
    ) -> (
        RunningService<RoleClient, Watcher>,
        mpsc::UnboundedReceiver<String>,
    ) {
        let (updates, received) = mpsc::unbounded_channel();
        let session = connect_with(
            &format!("http://{}/mcp", self.addr),
            &self.options(),
            Watcher { updates },
        )
        .await
        .expect("MCP session");
        (session, received)
    }
}

/// The next updated URI, within 10 s.
async fn next_update(updates: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(10), updates.recv())
        .await
        .expect("an update within 10 s")
        .expect("the session is open")
}

fn text_json(contents: &ResourceContents) -> Value {
    match contents {
        ResourceContents::TextResourceContents {
            text, mime_type, ..
        } => {
            assert_eq!(mime_type.as_deref(), Some("application/json"));
            serde_json::from_str(text).expect("JSON")
        }
        other => panic!("text contents expected, got {other:?}"),
    }
}

#[tokio::test]
async fn resources_prompts_and_completions_over_http() {
    let service = start().await;
    let session = service.client().await;
    let info = session.peer_info().expect("server info");
    let capabilities = serde_json::to_value(&info.capabilities).expect("JSON");
    assert_eq!(
        capabilities,
        json!({"completions": {}, "prompts": {}, "resources": {"subscribe": true}, "tools": {}})
    );

    let resources = session.list_resources(None).await.expect("resources/list");
    let uris: Vec<&str> = resources.resources.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(
        uris,
        [
            "ecommerce://products/catalog",
            "ecommerce://products/categories",
            "ecommerce://orders/stats"
        ]
    );
    let templates = session
        .list_resource_templates(None)
        .await
        .expect("resources/templates/list");
    assert_eq!(templates.resource_templates.len(), 3);
    let read = |uri: &'static str| {
        let session = &session;
        async move {
            session
                .read_resource(ReadResourceRequestParams::new(uri))
                .await
        }
    };
    let product = read("ecommerce://products/42").await.expect("read");
    let tool = ok(call(&session, "getProductById", json!({"id": "42"})).await);
    assert_eq!(text_json(&product.contents[0]), tool);
    let catalog = read("ecommerce://products/catalog").await.expect("read");
    assert_eq!(text_json(&catalog.contents[0])[41], tool);
    match read("ecommerce://products/0").await {
        Err(ServiceError::McpError(e)) => {
            assert_eq!(e.code, ErrorCode::RESOURCE_NOT_FOUND, "{e:?}")
        }
        other => panic!("resource not found expected, got {other:?}"),
    }

    let prompts = session.list_prompts(None).await.expect("prompts/list");
    assert_eq!(prompts.prompts.len(), 2);
    let prompt = session
        .get_prompt(
            GetPromptRequestParams::new("recommend_for_user")
                .with_arguments(args(json!({"userId": "456", "category": "Books"}))),
        )
        .await
        .expect("prompts/get");
    let text = &prompt.messages[0].content.as_text().expect("text").text;
    assert!(text.contains("getPersonalizedRecommendations"), "{text}");
    let completion = session
        .complete_resource_argument("ecommerce://users/{userId}/orders", "userId", "45", None)
        .await
        .expect("completion/complete");
    assert!(!completion.values.is_empty());
    assert!(
        completion.values.iter().all(|v| v.starts_with("45")),
        "{completion:?}"
    );
    service.stop().await;
}

#[tokio::test]
#[allow(deprecated)]
async fn basket_updates_reach_subscribed_sessions_only() {
    let service = start().await;
    let (watching, mut watching_updates) = service.watching_client().await;
    let (quitter, mut quitter_updates) = service.watching_client().await;
    let basket = "ecommerce://users/u42/basket";
    let other = "ecommerce://users/u43/basket";
    for session in [&watching, &quitter] {
        session
            .subscribe(SubscribeRequestParams::new(basket))
            .await
            .expect("resources/subscribe");
    }
    quitter
        .unsubscribe(UnsubscribeRequestParams::new(basket))
        .await
        .expect("resources/unsubscribe");
    quitter
        .subscribe(SubscribeRequestParams::new(other))
        .await
        .expect("resources/subscribe");
    let refused = watching
        .subscribe(SubscribeRequestParams::new("ecommerce://nothing"))
        .await;
    assert!(
        matches!(&refused, Err(ServiceError::McpError(e)) if e.code == ErrorCode::RESOURCE_NOT_FOUND),
        "{refused:?}"
    );

    let added = watching
        .call_tool(
            CallToolRequestParams::new("addToBasket")
                .with_arguments(args(json!({"userId": "u42", "productId": "7"}))),
        )
        .await
        .expect("addToBasket");
    assert_eq!(added.is_error, Some(false), "{added:?}");
    assert_eq!(next_update(&mut watching_updates).await, basket);

    // The unsubscribed session hears of u43's basket, which it follows, and of nothing
    // before it: the u42 update would have come first on the same stream.
    quitter
        .call_tool(
            CallToolRequestParams::new("addToBasket")
                .with_arguments(args(json!({"userId": "u43", "productId": "7"}))),
        )
        .await
        .expect("addToBasket");
    assert_eq!(next_update(&mut quitter_updates).await, other);

    // Placing the order empties the basket: another update for its subscriber.
    let order = watching
        .call_tool(
            CallToolRequestParams::new("placeOrder").with_arguments(args(json!({"userId": "u42"}))),
        )
        .await
        .expect("placeOrder");
    assert_eq!(order.is_error, Some(false), "{order:?}");
    assert_eq!(next_update(&mut watching_updates).await, basket);
    assert!(quitter_updates.try_recv().is_err());
    drop((watching, quitter));
    service.stop().await;
}

#[tokio::test]
async fn listen_streams_hear_of_the_baskets_they_asked_for() {
    let service = start().await;
    let options = ClientOptions {
        discover: true,
        ..service.options()
    };
    let modern = connect(&format!("http://{}/mcp", service.addr), &options)
        .await
        .expect("2026-07-28 session");
    let basket = "ecommerce://users/u50/basket";
    let mut subscription = modern
        .peer()
        .listen(
            SubscriptionFilter::builder()
                .resource_subscriptions([basket, "ecommerce://nothing"])
                .build(),
        )
        .await
        .expect("subscriptions/listen");
    assert_eq!(
        subscription.acknowledged().resource_subscriptions,
        Some(vec![basket.to_string()]),
        "only the shop's own resources are accepted"
    );

    let session = service.client().await;
    ok(call(
        &session,
        "addToBasket",
        json!({"userId": "u51", "productId": "9"}),
    )
    .await);
    ok(call(
        &session,
        "addToBasket",
        json!({"userId": "u50", "productId": "9"}),
    )
    .await);
    let notification = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("an update within 10 s")
        .expect("the stream is open")
        .expect("a notification");
    match notification {
        ServerNotification::ResourceUpdatedNotification(n) => assert_eq!(n.params.uri, basket),
        other => panic!("resource update expected, got {other:?}"),
    }
    drop((subscription, modern, session));
    service.stop().await;
}
