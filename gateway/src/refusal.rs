//! How the gateway refuses an HTTP request, in one place for every floor: a JSON body
//! `{"error", "message"}` with its status, and for 401/403/429 the headers RFC 6750 and
//! RFC 9728 ask for (`WWW-Authenticate` naming the protected-resource metadata,
//! `Retry-After`). Invariant: no I/O; a refusal says what was wrong and nothing secret.

use std::{borrow::Cow, sync::Arc, time::Duration};

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;

use crate::vocab::{Identity, Scopes};

/// The header a request's id travels in, both ways. A `HeaderName`: a lookup by name
/// hashes it, where one by `&str` first parses and lowercases the text (~500
/// instructions).
pub const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// A JSON error body: `{"error": code, "message": text}`.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": code, "message": message.into() })),
    )
        .into_response()
}

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

    pub fn document(&self, headers: &HeaderMap, resource_path: &str) -> serde_json::Value {
        json!({
            "resource": format!("{}{resource_path}", self.base(headers)),
            "authorization_servers": &*self.authorization_servers,
            "bearer_methods_supported": ["header"],
            "resource_name": "MCP federation gateway",
        })
    }
}

/// Where the request's RFC 9728 metadata is (inserted next to its [`Identity`]), for a
/// 403 produced further in; the URL is only built when one is.
#[derive(Clone, Debug)]
pub struct MetadataUrl(pub Metadata);

/// 429 with `Retry-After` (whole seconds, rounded up) and the wait in milliseconds.
pub fn too_many_requests(message: &str, wait: Duration) -> Response {
    let ms = crate::limits::retry_ms(wait);
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({ "error": "rate_limited", "message": message, "retryAfterMs": ms })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000)));
    response
}

/// 403 for a credential without the scope `needed` (with several: without any of them),
/// as RFC 6750 words it.
pub fn insufficient_scope(identity: &Identity, needed: Scopes, metadata: &str) -> Response {
    let names = needed.names();
    let scope = names.join(" ");
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    let what = match quoted.len() {
        1 => format!("the {} scope", quoted[0]),
        _ => format!("the {} scope", quoted.join(" or ")),
    };
    let mut response = (
        StatusCode::FORBIDDEN,
        Json(json!({
            "error": "insufficient_scope",
            "message": format!("credential \"{}\" lacks {what} this request needs", identity.name),
            "scope": scope,
        })),
    )
        .into_response();
    let challenge = format!(
        "Bearer realm=\"mcp-gateway\", error=\"insufficient_scope\", scope=\"{scope}\", resource_metadata=\"{metadata}\""
    );
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}

/// 401 with the challenge RFC 6750 words for `code` (`missing_token` names no error).
pub fn unauthorized(code: &'static str, message: Cow<'static, str>, metadata: &str) -> Response {
    let challenge = match code {
        "missing_token" => {
            format!("Bearer realm=\"mcp-gateway\", resource_metadata=\"{metadata}\"")
        }
        other => format!(
            "Bearer realm=\"mcp-gateway\", resource_metadata=\"{metadata}\", error=\"{other}\""
        ),
    };
    service_kit::auth::unauthorized(&challenge, code, &message)
}
