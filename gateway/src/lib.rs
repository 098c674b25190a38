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
//!   jsonrpc    the envelope of a POSTed message, read once (authorization reads it)
//!   origins    the Host and Origin allow-lists (DNS-rebinding protection), every route
//!   passthrough  tools/call carried as raw JSON, past rmcp's typed pipeline
//!   registry   the set of upstreams, registration, persistence, change events
//!   catalog    the merged, immutable tool table and the naming rule
//!   upstream   backends: services and their instances; sessions, supervisor,
//!              forwarding, failover
//!     health   state machine (starting/healthy/degraded/down) and circuit breaker
//!     balance  choosing an instance: round robin, least outstanding, weighted,
//!              session affinity
//!   store      the embedded SQLite registration store
//!   observe    metrics (Prometheus) and the call log (SQLite, written off the call path)
//!   limits     rate limits per credential and per tool (governor token buckets)
//!   trim       returning ended sessions' memory to the system (glibc malloc_trim)
//! config       figment: defaults, TOML, environment, CLI overrides; validation
//! ```
//!
//! [`run`] is the whole gateway: tests start it in-process on an ephemeral port.

// A faithful proxy speaks every feature of the protocol, including logging, sampling,
// roots and resource subscriptions, which rmcp marks deprecated after SEP-2577.
#![allow(deprecated)]

pub mod catalog;
pub mod cli;
pub mod config;
pub mod http;
pub mod jsonrpc;
pub mod limits;
pub mod mcp;
pub mod mrtr;
pub mod observe;
pub mod origins;
pub mod passthrough;
pub mod registry;
pub mod store;
pub mod trim;
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
    service_kit::client::ensure_tls_provider();
    // Shutdown in order: stop accepting (http_stop), let calls in flight finish
    // (bounded), end MCP sessions and their streams (sessions_stop), close upstreams.
    let upstreams_stop = CancellationToken::new();
    let http_stop = CancellationToken::new();
    let sessions_stop = CancellationToken::new();
    let registry = registry::Registry::start(&config, upstreams_stop.clone())?;
    let endpoint = mcp::McpEndpoint::new(
        std::sync::Arc::clone(&registry),
        &config,
        sessions_stop.clone(),
    );
    tokio::spawn(endpoint.clone().expire_idle(
        config.session_idle_timeout(),
        std::time::Duration::from_millis(config.session_init_timeout_ms),
        sessions_stop.clone(),
    ));
    tokio::spawn(trim::run(upstreams_stop.clone(), {
        let endpoint = endpoint.clone();
        move || {
            let endpoint = endpoint.clone();
            async move { endpoint.shrink().await }
        }
    }));
    tokio::spawn({
        let registry = std::sync::Arc::clone(&registry);
        let (http_stop, sessions_stop) = (http_stop.clone(), sessions_stop.clone());
        let drain = config.drain_timeout();
        async move {
            shutdown.cancelled().await;
            http_stop.cancel();
            let deadline = tokio::time::Instant::now() + drain;
            while registry.in_flight() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            let left = registry.in_flight();
            if left > 0 {
                tracing::warn!(
                    calls = left,
                    "drain timeout: cancelling calls still in flight"
                );
            } else {
                tracing::info!("in-flight calls drained");
            }
            sessions_stop.cancel();
        }
    });
    let router = http::router(std::sync::Arc::clone(&registry), endpoint, &config);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, store = %config.store.display(), "gateway listening; MCP at /mcp");
    }
    let served =
        service_kit::serve::serve_with(listener, router, http_stop, config.serve_limits()).await;
    sessions_stop.cancel();
    registry.close_all().await;
    upstreams_stop.cancel();
    registry.flush_call_log().await;
    served.map_err(Into::into)
}
