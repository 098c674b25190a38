//! shopping-service: the demo shop of the MCP federation, a streamable-HTTP MCP server
//! (rmcp) mounted at `/mcp` behind a Bearer token, with an open `GET /health` next to
//! it. It registers itself with the gateway, giving it the token to present, and, for
//! personalised recommendations, calls user-service *through the gateway* as an MCP
//! client. With `--stdio` it serves the same handler over stdin/stdout instead
//! ([`stdio_server`]): no port, no registration, recommendations still through the
//! gateway over HTTP when one is configured.
//!
//! Modules and what each owns:
//! - [`data`]: the deterministic demo data (480 products in 8 categories, 600
//!   historical orders), generated once from a fixed seed with service-kit's `SplitMix64`,
//!   and the value types (`Product`, `Order`, `Category`).
//! - [`store`]: the mutable state (stock, baskets, run-time orders) behind one mutex;
//!   placing an order is atomic over all its lines.
//! - [`search`]: read-only catalog queries (ranked text search, filters, category
//!   summaries).
//! - [`recommend`]: similar / trending / personalised recommendations and the gateway
//!   MCP client that reads user preferences from user-service.
//! - [`args`]: validation of tool arguments into precise, caller-readable messages.
//! - [`tools`]: the tool table (JSON schemas) and the hand-written `ServerHandler`.
//! - [`content`]: the resources (catalog, categories, order statistics; a product, a
//!   user's basket and orders as templates), the prompts and their completions.
//! - this file: [`Config`], [`run`] (HTTP), [`stdio_server`] and the HTTP router.
//!
//! State: the catalog and the order history are rebuilt identically at every start.
//! Baskets, stock changes and orders placed at run time live in memory only; nothing
//! created at run time survives a restart.

pub mod args;
pub mod content;
pub mod data;
pub mod recommend;
pub mod search;
pub mod store;
pub mod tools;

use std::sync::Arc;

use axum::Router;
use serde_json::{Value, json};
use service_kit::{
    auth::BearerAuth,
    registration::{self, GatewayTarget, Registration, UpstreamBearer},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    data::CATALOG,
    recommend::GatewayClient,
    tools::{Shop, ShopServer},
};

/// The name the service registers under and announces in `serverInfo`.
pub const SERVICE_NAME: &str = "shopping-service";
/// Where the binary listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3002";

/// How the service runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on; only used by `main.rs` to bind ([`run`] takes a bound listener).
    pub listen: String,
    /// The MCP URL the gateway should use; `None`: `http://{local address}/mcp`.
    pub public_url: Option<String>,
    /// Base URL of the gateway (e.g. `http://127.0.0.1:3001`): registered with in the
    /// background (if `register`) and used for service-to-service calls. `None`: neither.
    pub gateway_url: Option<String>,
    /// `false`: do not self-register (`gateway_url` is still used for calls).
    pub register: bool,
    /// Bearer token for the gateway.
    pub token: String,
    /// Bearer token this service accepts on `/mcp`; given to the gateway at
    /// registration, which presents it on every request.
    pub service_token: String,
    /// Extra `Host` header names accepted besides loopback (`"*"`: any).
    pub allowed_hosts: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.to_string(),
            public_url: None,
            gateway_url: Some(service_kit::DEFAULT_GATEWAY_URL.to_string()),
            register: true,
            token: service_kit::DEFAULT_TOKEN.to_string(),
            service_token: service_kit::DEFAULT_TOKEN.to_string(),
            allowed_hosts: Vec::new(),
        }
    }
}

/// Serves until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let auth = BearerAuth::new(SERVICE_NAME, &config.service_token)
        .map_err(|e| anyhow::anyhow!("service token: {e}"))?;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| service_kit::mcp::local_mcp_url(addr));
    let gateway_url = config
        .gateway_url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty());
    let shop = Arc::new(shop(&config, shutdown.clone()));
    let app = router(shop, &config.allowed_hosts, auth, shutdown.clone());

    let registration = gateway_url.filter(|_| config.register).map(|url| {
        (
            GatewayTarget {
                base_url: url.to_string(),
                token: config.token.clone(),
            },
            Registration {
                name: SERVICE_NAME.to_string(),
                url: public_url.clone(),
                auth: Some(UpstreamBearer::new(config.service_token.clone())),
            },
        )
    });
    tracing::info!(
        %addr, mcp = %public_url, gateway = gateway_url.unwrap_or("none"),
        register = registration.is_some(),
        products = CATALOG.products.len(), "shopping-service listening"
    );
    registration::serve_registered(listener, app, shutdown, registration)
        .await
        .map_err(|e| anyhow::anyhow!("serving on {addr} failed: {e}"))?;
    tracing::info!("shopping-service stopped");
    Ok(())
}

/// The shop of `config`: its gateway client (for recommendations) if a gateway URL is
/// set; subscriptions/listen streams end when `shutdown` is cancelled.
fn shop(config: &Config, shutdown: CancellationToken) -> Shop {
    let gateway = config
        .gateway_url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|url| GatewayClient::new(url, &config.token, SERVICE_NAME));
    Shop::stopping_with(gateway, shutdown)
}

/// The handler `--stdio` serves (one session: the client that launched the process):
/// the same tools, resources and prompts as over HTTP. Only `gateway_url` and `token`
/// of `config` matter (recommendations read preferences through the gateway over
/// HTTP); nothing listens and nothing registers.
pub fn stdio_server(config: &Config, shutdown: CancellationToken) -> ShopServer {
    tracing::info!(
        gateway = config.gateway_url.as_deref().unwrap_or("none"),
        products = CATALOG.products.len(),
        "shopping-service serving MCP on stdin/stdout"
    );
    ShopServer::new(Arc::new(shop(config, shutdown)))
}

/// `/mcp` (the MCP endpoint behind `auth`, one rmcp session per client) and
/// `GET /health`.
fn router(
    shop: Arc<Shop>,
    allowed_hosts: &[String],
    auth: BearerAuth,
    shutdown: CancellationToken,
) -> Router {
    service_kit::mcp::service_router(
        move || ShopServer::new(shop.clone()),
        health,
        allowed_hosts,
        auth,
        shutdown,
    )
}

fn health() -> Value {
    json!({
        "status": "ok",
        "service": SERVICE_NAME,
        "version": env!("CARGO_PKG_VERSION"),
        "products": CATALOG.products.len(),
    })
}
