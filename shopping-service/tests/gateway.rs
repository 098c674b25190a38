//! The service-to-service path: a tiny stand-in MCP server plays "the gateway" (it
//! exposes user-service's `getUserPreferences` at `/mcp` and accepts `POST /register`),
//! and shopping-service is pointed at it: in-process over HTTP, and as the real binary
//! in `--stdio` mode (which still reaches the gateway over HTTP, and never registers).

mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Json, Router, http::HeaderMap, routing::post};
use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
        PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    },
    service::RequestContext,
    transport::streamable_http_server::{
        StreamableHttpService, session::local::LocalSessionManager,
    },
};
use serde_json::{Value, json};
use service_kit::client::{ClientOptions, ClientSession, connect};
use shopping_service::{Config, run};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use common::{args, error_text, stdio::StdioChild};

/// The token shopping-service presents to the (stand-in) gateway.
const TOKEN: &str = "test-token";
/// The token shopping-service accepts on its own `/mcp`, given to the gateway at
/// registration.
const SHOP_TOKEN: &str = "shop-accepts-this-token";

/// What the stand-in gateway saw.
#[derive(Default)]
struct Seen {
    sessions: AtomicUsize,
    calls: AtomicUsize,
    authorization: Mutex<Vec<String>>,
    registrations: Mutex<Vec<(String, Value)>>,
}

/// user-service's `getUserPreferences`, as the gateway would relay it.
#[derive(Clone)]
struct FakeUserService {
    seen: Arc<Seen>,
}

impl ServerHandler for FakeUserService {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema =
            json!({"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]});
        let Value::Object(schema) = schema else {
            unreachable!()
        };
        Ok(ListToolsResult::with_all_items(vec![Tool::new(
            "getUserPreferences",
            "A user's shopping preferences.",
            schema,
        )]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.seen.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(parts) = context.extensions.get::<axum::http::request::Parts>()
            && let Some(auth) = parts.headers.get("authorization")
        {
            let auth = auth.to_str().unwrap_or_default().to_string();
            self.seen.authorization.lock().expect("lock").push(auth);
        }
        if request.name != "getUserPreferences" {
            return Err(ErrorData::invalid_params(
                format!("unknown tool \"{}\"", request.name),
                None,
            ));
        }
        let id = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("id"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let result = if id == "456" {
            CallToolResult::structured(json!({
                "userId": "456",
                "favoriteCategories": ["Books", "Grocery"],
                "preferredBrands": ["Northwind Press"],
                "priceRange": {"min": 5, "max": 40},
                "newsletter": true,
            }))
        } else {
            CallToolResult::error(vec![ContentBlock::text(format!(
                "no user with id \"{id}\""
            ))])
        };
        Ok(result.into())
    }
}

/// Serves the stand-in gateway on `listener` until `shutdown`; the task ends when every
/// connection has closed.
fn serve_fake_gateway(
    listener: TcpListener,
    seen: Arc<Seen>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let factory_seen = seen.clone();
    let mcp = StreamableHttpService::new(
        move || {
            factory_seen.sessions.fetch_add(1, Ordering::SeqCst);
            Ok(FakeUserService {
                seen: factory_seen.clone(),
            })
        },
        Arc::new(LocalSessionManager::default()),
        service_kit::mcp::server_config(&[], shutdown.clone()),
    );
    let register_seen = seen;
    let app = Router::new()
        .route(
            "/register",
            post(move |headers: HeaderMap, Json(body): Json<Value>| {
                let seen = register_seen.clone();
                async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    seen.registrations.lock().expect("lock").push((auth, body));
                    Json(json!({"ok": true}))
                }
            }),
        )
        .nest_service("/mcp", mcp);
    tokio::spawn(service_kit::serve::serve(listener, app, shutdown))
}

struct Stack {
    gateway_addr: SocketAddr,
    gateway_shutdown: CancellationToken,
    gateway_task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    shop_addr: SocketAddr,
    shop_shutdown: CancellationToken,
    seen: Arc<Seen>,
}

async fn start(register: bool) -> Stack {
    let gateway_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gateway");
    let gateway_addr = gateway_listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let gateway_shutdown = CancellationToken::new();
    let gateway_task = serve_fake_gateway(gateway_listener, seen.clone(), gateway_shutdown.clone());

    let shop_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind shop");
    let shop_addr = shop_listener.local_addr().expect("addr");
    let shop_shutdown = CancellationToken::new();
    let config = Config {
        gateway_url: Some(format!("http://{gateway_addr}")),
        register,
        token: TOKEN.to_string(),
        service_token: SHOP_TOKEN.to_string(),
        ..Config::default()
    };
    tokio::spawn(run(config, shop_listener, shop_shutdown.clone()));
    Stack {
        gateway_addr,
        gateway_shutdown,
        gateway_task: Some(gateway_task),
        shop_addr,
        shop_shutdown,
        seen,
    }
}

impl Stack {
    async fn client(&self) -> ClientSession {
        connect(
            &format!("http://{}/mcp", self.shop_addr),
            &ClientOptions {
                bearer: Some(SHOP_TOKEN.into()),
                ..ClientOptions::default()
            },
        )
        .await
        .expect("MCP session with shopping-service")
    }

    fn stop(&self) {
        self.shop_shutdown.cancel();
        self.gateway_shutdown.cancel();
    }
}

async fn recommend(session: &ClientSession, user: &str) -> CallToolResult {
    session
        .call_tool(
            CallToolRequestParams::new("getPersonalizedRecommendations")
                .with_arguments(args(json!({"userId": user, "limit": 8}))),
        )
        .await
        .expect("tools/call")
}

#[tokio::test]
async fn recommendations_read_preferences_through_the_gateway() {
    let stack = start(false).await;
    let session = stack.client().await;

    let result = recommend(&session, "456").await;
    assert_eq!(result.is_error, Some(false), "{result:?}");
    let value = result.structured_content.expect("structured content");
    assert_eq!(value["userId"], "456");
    assert_eq!(
        value["basedOn"]["favoriteCategories"],
        json!(["Books", "Grocery"])
    );
    assert_eq!(
        value["basedOn"]["preferredBrands"],
        json!(["Northwind Press"])
    );
    let products = value["products"].as_array().expect("products");
    assert_eq!(products.len(), 8);
    for p in products {
        assert!(
            p["category"] == "Books" || p["category"] == "Grocery",
            "recommendations favour the favourite categories: {p}"
        );
        assert!(p["stock"].as_u64().expect("stock") > 0, "in stock: {p}");
    }
    // The first favourite and the preferred brand lead.
    assert_eq!(products[0]["category"], "Books");
    assert_eq!(products[0]["brand"], "Northwind Press");

    // An unknown user: user-service's message is passed along.
    let result = recommend(&session, "99999").await;
    assert_eq!(
        error_text(&result),
        "cannot read preferences of user \"99999\" through the gateway: no user with id \"99999\""
    );

    // One cached session served all calls, with the bearer token.
    let again = recommend(&session, "456").await;
    assert_eq!(again.is_error, Some(false));
    assert_eq!(stack.seen.calls.load(Ordering::SeqCst), 3);
    assert_eq!(stack.seen.sessions.load(Ordering::SeqCst), 1);
    let auth = stack.seen.authorization.lock().expect("lock").clone();
    assert!(!auth.is_empty());
    assert!(
        auth.iter().all(|a| a == &format!("Bearer {TOKEN}")),
        "{auth:?}"
    );
    // register = false: no registration. Kept: a window in which a registration would
    // arrive; that none does is what is tested, so there is no condition to wait on.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(stack.seen.registrations.lock().expect("lock").is_empty());
    stack.stop();
}

#[tokio::test]
async fn concurrent_recommendations_share_one_session() {
    let stack = start(false).await;
    let session = Arc::new(stack.client().await);
    let calls: Vec<_> = (0..16)
        .map(|i| {
            let session = session.clone();
            tokio::spawn(async move {
                let user = if i % 4 == 0 { "nobody" } else { "456" };
                (user, recommend(&session, user).await)
            })
        })
        .collect();
    for call in calls {
        let (user, result) = call.await.expect("task");
        assert_eq!(result.is_error, Some(user != "456"), "{user}: {result:?}");
    }
    assert_eq!(stack.seen.sessions.load(Ordering::SeqCst), 1);
    assert_eq!(stack.seen.calls.load(Ordering::SeqCst), 16);
    stack.stop();
}

#[tokio::test]
async fn a_restarted_gateway_is_reconnected_to() {
    let mut stack = start(false).await;
    let session = stack.client().await;
    assert_eq!(recommend(&session, "456").await.is_error, Some(false));

    // The gateway goes away (its every connection closed): a clear error naming it.
    stack.gateway_shutdown.cancel();
    let stopped = stack
        .gateway_task
        .take()
        .expect("the stand-in gateway's task");
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("the stand-in gateway stops within 10 s")
        .expect("the stand-in gateway's task")
        .expect("the stand-in gateway served");
    let down = recommend(&session, "456").await;
    let text = error_text(&down);
    assert!(
        text.starts_with("cannot read preferences of user \"456\" through the gateway: "),
        "{text}"
    );

    // It comes back on the same address (its sessions are gone): the next call works.
    let listener = TcpListener::bind(stack.gateway_addr)
        .await
        .expect("rebind gateway");
    let seen = Arc::new(Seen::default());
    let shutdown = CancellationToken::new();
    let _gateway = serve_fake_gateway(listener, seen.clone(), shutdown.clone());
    let result = recommend(&session, "456").await;
    assert_eq!(result.is_error, Some(false), "{result:?}");
    assert_eq!(seen.sessions.load(Ordering::SeqCst), 1);
    shutdown.cancel();
    stack.stop();
}

#[tokio::test]
async fn registers_with_the_gateway() {
    let stack = start(true).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some((auth, body)) = stack
            .seen
            .registrations
            .lock()
            .expect("lock")
            .first()
            .cloned()
        {
            assert_eq!(auth, format!("Bearer {TOKEN}"));
            assert_eq!(body["name"], "shopping-service");
            assert_eq!(body["url"], format!("http://{}/mcp", stack.shop_addr));
            // The gateway is given the token the service accepts, not its own.
            assert_eq!(body["auth"], json!({"bearer": SHOP_TOKEN}), "{body}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no registration within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stack.stop();
}

#[tokio::test]
async fn recommendations_over_stdio_still_go_through_the_gateway_over_http() {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gateway");
    let gateway_addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let shutdown = CancellationToken::new();
    let gateway = serve_fake_gateway(listener, seen.clone(), shutdown.clone());
    let gateway_url = format!("http://{gateway_addr}");
    let mut shop = StdioChild::start(
        env!("CARGO_BIN_EXE_shopping-service"),
        &[],
        &[("GATEWAY_URL", &gateway_url), ("MCP_BEARER_TOKEN", TOKEN)],
    );
    shop.initialize().await;

    let result = shop
        .call(
            "getPersonalizedRecommendations",
            json!({"userId": "456", "limit": 3}),
        )
        .await;
    assert_eq!(result["isError"], false, "{result}");
    let value = &result["structuredContent"];
    assert_eq!(
        value["basedOn"]["favoriteCategories"],
        json!(["Books", "Grocery"])
    );
    assert_eq!(value["products"].as_array().map(Vec::len), Some(3));
    let unknown = shop
        .call("getPersonalizedRecommendations", json!({"userId": "99999"}))
        .await;
    assert_eq!(unknown["isError"], true);
    assert!(
        unknown["content"][0]["text"]
            .as_str()
            .expect("text")
            .contains("no user with id"),
        "{unknown}"
    );

    let (status, rest, stderr) = shop.close_and_wait().await;
    assert!(status.success(), "{status}: {stderr}");
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(seen.calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        *seen.authorization.lock().expect("lock"),
        [format!("Bearer {TOKEN}"), format!("Bearer {TOKEN}")]
    );
    // It ran (and exited) without ever registering.
    assert!(seen.registrations.lock().expect("lock").is_empty());
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), gateway).await;
}

#[tokio::test]
async fn over_stdio_an_unreachable_gateway_is_a_clear_tool_error() {
    // A port nothing listens on: bound, then released.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let mut shop = StdioChild::start(
        env!("CARGO_BIN_EXE_shopping-service"),
        &["--gateway-url", &format!("http://{addr}")],
        &[],
    );
    shop.initialize().await;
    let result = shop
        .call("getPersonalizedRecommendations", json!({"userId": "456"}))
        .await;
    assert_eq!(result["isError"], true, "{result}");
    let text = result["content"][0]["text"].as_str().expect("text");
    assert!(
        text.starts_with("cannot read preferences of user \"456\" through the gateway"),
        "{text}"
    );
    let (status, _, stderr) = shop.close_and_wait().await;
    assert!(status.success(), "{status}: {stderr}");
}
