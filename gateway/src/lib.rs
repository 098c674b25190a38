//! # MCP federation gateway
//!
//! One streamable-HTTP MCP endpoint in front of many MCP servers ("upstreams"). The
//! gateway connects to each upstream as an MCP client, merges their tools into one table
//! and routes every call, behind Bearer-token auth.
//!
//! ## Map (top floor first; each module only uses the floors below it)
//!
//! A directory's module may use its own children and they may use it; siblings and
//! everything else follow the floors. `gateway/tests/tidy.rs` holds the code to this.
//!
//! ```text
//! cli          the operator CLI (`gateway services|calls|stats|...`): HTTP to a gateway
//! bridge       `gateway stdio`: stdin/stdout relayed to a gateway's /mcp, both ways
//! http/        Router and tower layers (request id, trace, Host/Origin, body limit, auth)
//!   ui           the dashboard: one page, one script, one stylesheet, embedded
//!   openapi      the admin API's OpenAPI document, generated from the handlers
//!   admin        /register, /services, /calls, /stats, /health
//!   metadata     RFC 9728 protected-resource metadata, named by every 401
//!   schema       the shapes the admin handlers answer with, as OpenAPI describes them
//!   auth         Bearer tokens and JWTs to an Identity; scopes per route; 401/403/429
//! import       server.json from an MCP registry to registrations: all of them or none
//! mcp          the rmcp codec: ServerHandler over the catalog; /mcp entry point
//! passthrough  the raw JSON codec: tools/call and tools/list past rmcp's typed pipeline
//! mrtr         multi round-trip requests: parked calls, sealed requestState
//! proxy        the policy core of every proxied request: plan, start, refusals, errors
//! sessions     a cluster's MCP sessions: rows in the shared store, adopted by any replica
//! registry     the set of upstreams, registration, persistence, change events
//! catalog      the merged, immutable tool table and the naming rule
//! store/       where registrations live: the SQLite file, or PostgreSQL shared by replicas
//!   postgres     the cluster's store: pool, migrations, NOTIFY/LISTEN, heartbeats
//!   sqlite       the embedded file (WAL, full fsync), the default
//!   cipher       secrets sealed at rest with the cluster key (ChaCha20-Poly1305)
//! config       figment: defaults, TOML, environment, CLI overrides; validation
//! jwt          JWT verification (HS256, RS256, ES256; JWKS file or URL)
//! upstream/    backends: services and their instances; sessions, supervisor,
//!              forwarding, failover
//!   client       an upstream session's rmcp ClientHandler: what a backend sends, routed
//!   resume       a mid-call closed SSE stream resumed with Last-Event-ID
//!   raw          one tools/call as raw JSON over a pooled HTTP connection
//!   relay        the calls in flight that a backend's requests and notifications go to
//!   health       state machine (starting/healthy/degraded/down) and circuit breaker
//!   balance      choosing an instance: round robin, least outstanding, weighted,
//!                session affinity
//!   guard        which networks upstream URLs may reach; resolution checked per connection
//!   secret       upstream credentials: headers, redaction
//!   stdio        stdio servers the gateway runs: child processes, restart budget,
//!                stderr ring
//! observe/     metrics (Prometheus) and the call log (SQLite, or the cluster's
//!              PostgreSQL; written off the call path)
//!   calllog      the call log's writer, retention and queries
//!     postgres   a cluster's shared call log: its own pool, table, writer and queries
//!     series     per-minute aggregates and the time series of /stats?window=&step=
//!   metrics      a Prometheus registry per gateway
//!   traces       W3C trace context in and out; OpenTelemetry export
//! refusal      HTTP refusals (JSON body; 401/403/429 headers) and the RFC 9728 metadata URL
//! limits       rate limits per credential and per tool (governor token buckets)
//! trim         returning ended sessions' memory to the system (after closes pause)
//! origins      the Host and Origin allow-lists (DNS-rebinding protection), every route
//! jsonrpc      the envelope of a POSTed message, read once (authorization reads it)
//! sse          server-sent events from byte chunks (sse-stream's rules, lines by memchr)
//! servers      virtual servers: definitions (subsets by service and glob, renames) checked
//!              and compiled to the view the policy core applies
//! search       tool search: BM25 over a catalog's tools, the meta-tools and their arguments
//! schema       tool schemas made self-contained: `$ref`s to their own `$defs` inlined
//! vocab        identity and scopes, JSON-RPC codes, name and URL rules, the clock
//! ```
//!
//! [`run`] is the whole gateway: tests start it in-process on an ephemeral port. The
//! modules the binary, the tests and the fuzz targets use are public; the rest are the
//! crate's own.

// A faithful proxy speaks every feature of the protocol, including logging, sampling,
// roots and resource subscriptions, which rmcp marks deprecated after SEP-2577.
#![allow(deprecated)]

pub mod bridge;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod http;
pub mod import;
mod jsonrpc;
pub mod jwt;
mod limits;
pub mod mcp;
mod mrtr;
pub mod observe;
mod origins;
mod passthrough;
mod proxy;
mod refusal;
pub mod registry;
mod schema;
pub mod search;
pub mod servers;
mod sessions;
mod sse;
mod store;
mod trim;
pub mod upstream;
pub mod vocab;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Where the other replicas of a cluster reach this one: `cluster_address`, else the
/// address it listens on (an unspecified IP replaced by the host name).
fn cluster_address(config: &Config, bound: Option<std::net::SocketAddr>) -> String {
    if let Some(address) = &config.cluster_address {
        return address.clone();
    }
    match bound {
        Some(addr) if addr.ip().is_unspecified() => {
            let host = std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .or_else(host_name)
                .unwrap_or_else(|| "localhost".into());
            format!("{host}:{}", addr.port())
        }
        Some(addr) => addr.to_string(),
        None => config.listen.clone(),
    }
}

/// The machine's host name (Linux's, as `hostname` prints it), where `HOSTNAME` is not
/// set (systemd does not).
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

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
    let address = cluster_address(&config, listener.local_addr().ok());
    let registry = registry::Registry::start(&config, address, upstreams_stop.clone()).await?;
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
    tokio::spawn(endpoint.clone().follow_cluster(
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
    let router = http::service(
        http::router(std::sync::Arc::clone(&registry), endpoint, &config),
        &config,
    );
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
