//! The HTTP surface: the router and the tower layers every route passes through.
//!
//! ```text
//! trace → body limit → auth (Bearer; all but /health) → handler
//!   /mcp        mcp::entry (POST, GET, DELETE)
//!   /register   admin::register (POST)
//!   /services   admin::services (GET, POST)
//!   /services/{name}                 GET one, DELETE (all instances, or ?url=)
//!   /services/{name}/instances/{id}  DELETE one instance
//!   /health     admin::health (GET, public)
//!   /.well-known/oauth-protected-resource[/mcp]  metadata (GET, public, RFC 9728)
//! ```

pub mod admin;
pub mod auth;
pub mod jwt;
pub mod metadata;

use std::sync::Arc;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    middleware,
    routing::{any, get, post},
};
use http::StatusCode;
use tower_http::trace::TraceLayer;

use crate::{mcp::McpEndpoint, registry::Registry};

pub fn router(registry: Arc<Registry>, mcp: McpEndpoint, config: &crate::Config) -> Router {
    let max_body = config.max_body_bytes;
    let metadata = metadata::Metadata {
        public_url: config.public_url.as_deref().map(Arc::from),
        authorization_servers: config.authorization_servers.clone().into(),
    };
    let well_known = Router::new()
        .route(metadata::WELL_KNOWN, get(metadata::gateway))
        .route(&format!("{}/mcp", metadata::WELL_KNOWN), get(metadata::mcp))
        .with_state(metadata.clone());
    let admin = Router::new()
        .route("/register", post(admin::register))
        .route("/services", get(admin::services).post(admin::services))
        .route(
            "/services/{name}",
            get(admin::service).delete(admin::unregister),
        )
        .route(
            "/services/{name}/instances/{id}",
            axum::routing::delete(admin::unregister_instance),
        )
        .with_state(Arc::clone(&registry));
    let mcp = Router::new()
        .route("/mcp", any(crate::mcp::entry))
        .with_state(mcp);
    let protected = admin.merge(mcp).route_layer(middleware::from_fn_with_state(
        auth::Auth::new(config, metadata, Arc::clone(registry.limits())),
        auth::require_bearer,
    ));
    Router::new()
        .route("/health", get(admin::health).with_state(registry))
        .merge(well_known)
        .merge(protected)
        .fallback(|| async {
            admin::error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; the gateway serves /mcp, /register, /services, /health and /.well-known/oauth-protected-resource",
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(TraceLayer::new_for_http())
}
