//! RFC 9728 protected-resource metadata: where a client learns how to get a token for
//! this gateway. Served without authentication at
//! `/.well-known/oauth-protected-resource` (the gateway as a whole) and
//! `/.well-known/oauth-protected-resource/mcp` (its MCP endpoint), and named in every
//! 401's `WWW-Authenticate: Bearer resource_metadata="..."`.
//!
//! Invariant: the metadata documents are public and carry no secret.

use axum::{Json, extract::State, response::IntoResponse};
use http::HeaderMap;

pub use crate::refusal::{Metadata, WELL_KNOWN};

/// `GET /.well-known/oauth-protected-resource`: the gateway as a whole.
#[utoipa::path(get, path = "/.well-known/oauth-protected-resource", tag = "auth",
    responses(
        (status = 200, description = "RFC 9728 metadata", body = super::schema::ResourceMetadata),
        (status = 400, description = "A repeated Host/Origin header", body = super::schema::ErrorBody),
        (status = 403, description = "Host or Origin not allowed", body = super::schema::ErrorBody),
    ))]
pub async fn gateway(State(m): State<Metadata>, headers: HeaderMap) -> impl IntoResponse {
    Json(m.document(&headers, ""))
}

/// `GET /.well-known/oauth-protected-resource/mcp`: the MCP endpoint.
#[utoipa::path(get, path = "/.well-known/oauth-protected-resource/mcp", tag = "auth",
    responses(
        (status = 200, description = "RFC 9728 metadata", body = super::schema::ResourceMetadata),
        (status = 400, description = "A repeated Host/Origin header", body = super::schema::ErrorBody),
        (status = 403, description = "Host or Origin not allowed", body = super::schema::ErrorBody),
    ))]
pub async fn mcp(State(m): State<Metadata>, headers: HeaderMap) -> impl IntoResponse {
    Json(m.document(&headers, "/mcp"))
}
