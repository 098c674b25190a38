//! RFC 9728 protected-resource metadata: where a client learns how to get a token for
//! this gateway. Served without authentication at
//! `/.well-known/oauth-protected-resource` (the gateway as a whole) and
//! `/.well-known/oauth-protected-resource/mcp` (its MCP endpoint), and named in every
//! 401's `WWW-Authenticate: Bearer resource_metadata="..."`.

use std::sync::Arc;

use axum::{Json, extract::State, response::IntoResponse};
use http::{HeaderMap, header};
use serde_json::json;

pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// What the metadata says besides the resource's own URL.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    /// The gateway's public base URL (`public_url`); without it, `http://` and the
    /// request's `Host`.
    pub public_url: Option<Arc<str>>,
    /// Authorization servers that issue tokens for this gateway.
    pub authorization_servers: Arc<[String]>,
}

impl Metadata {
    /// The gateway's base URL as seen by the client that sent `headers`.
    pub fn base(&self, headers: &HeaderMap) -> String {
        if let Some(url) = &self.public_url {
            return url.trim_end_matches('/').to_string();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or("localhost");
        format!("http://{host}")
    }

    /// The metadata document's URL for a request to `path`.
    pub fn document_url(&self, headers: &HeaderMap, path: &str) -> String {
        let suffix = if path == "/mcp" { "/mcp" } else { "" };
        format!("{}{WELL_KNOWN}{suffix}", self.base(headers))
    }

    fn document(&self, headers: &HeaderMap, resource_path: &str) -> serde_json::Value {
        json!({
            "resource": format!("{}{resource_path}", self.base(headers)),
            "authorization_servers": &*self.authorization_servers,
            "bearer_methods_supported": ["header"],
            "resource_name": "MCP federation gateway",
        })
    }
}

/// `GET /.well-known/oauth-protected-resource`: the gateway as a whole.
#[utoipa::path(get, path = "/.well-known/oauth-protected-resource", tag = "auth",
    responses(
        (status = 200, description = "RFC 9728 metadata", body = super::openapi::ResourceMetadata),
        (status = 400, description = "A repeated Host/Origin header", body = super::openapi::ErrorBody),
        (status = 403, description = "Host or Origin not allowed", body = super::openapi::ErrorBody),
    ))]
pub async fn gateway(State(m): State<Metadata>, headers: HeaderMap) -> impl IntoResponse {
    Json(m.document(&headers, ""))
}

/// `GET /.well-known/oauth-protected-resource/mcp`: the MCP endpoint.
#[utoipa::path(get, path = "/.well-known/oauth-protected-resource/mcp", tag = "auth",
    responses(
        (status = 200, description = "RFC 9728 metadata", body = super::openapi::ResourceMetadata),
        (status = 400, description = "A repeated Host/Origin header", body = super::openapi::ErrorBody),
        (status = 403, description = "Host or Origin not allowed", body = super::openapi::ErrorBody),
    ))]
pub async fn mcp(State(m): State<Metadata>, headers: HeaderMap) -> impl IntoResponse {
    Json(m.document(&headers, "/mcp"))
}
