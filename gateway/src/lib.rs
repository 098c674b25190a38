//! # MCP federation gateway
//!
//! One streamable-HTTP MCP endpoint in front of many MCP servers ("upstreams"). The
//! gateway connects to each upstream as an MCP client, merges their tools into one table
//! and routes every call, behind Bearer-token auth.
//!
//! ## Map (each floor only uses the floors below it)
//!
//! ```text
//! http/        Router and tower layers (trace, body limit, auth); admin endpoints
//!   mcp        the MCP server side: ServerHandler over the catalog, /mcp entry point
//!   registry   the set of upstreams, registration, persistence, change events
//!   catalog    the merged, immutable tool table and the naming rule
//!   upstream   one backend: client session, state, supervisor, forwarding
//!   store      the embedded SQLite registration store
//! config       figment: defaults, TOML, environment, CLI overrides; validation
//! ```
//!
//! [`run`] is the whole gateway: tests start it in-process on an ephemeral port.

pub mod catalog;
pub mod config;
pub mod http;
pub mod mcp;
pub mod registry;
pub mod store;
pub mod upstream;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Serves the gateway on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let registry = registry::Registry::start(&config, shutdown.child_token())?;
    let endpoint = mcp::McpEndpoint::new(
        std::sync::Arc::clone(&registry),
        &config.allowed_hosts,
        config.max_body_bytes,
        shutdown.child_token(),
    );
    let router = http::router(
        std::sync::Arc::clone(&registry),
        endpoint,
        &config.token,
        config.max_body_bytes,
    );
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, store = %config.store.display(), "gateway listening; MCP at /mcp");
    }
    let served = service_kit::serve::serve(listener, router, shutdown).await;
    registry.close_all();
    served.map_err(Into::into)
}
