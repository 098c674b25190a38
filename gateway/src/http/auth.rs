//! Bearer-token authentication as a tower layer (an axum `from_fn` middleware): every
//! protected route gets the same check, compared in constant time. A missing or wrong
//! token is a 401 with `WWW-Authenticate: Bearer` naming the RFC 9728 metadata
//! (`resource_metadata`) and a JSON body saying what was wrong.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::metadata::Metadata;

/// The accepted token, shared by the middleware.
#[derive(Clone)]
pub struct Auth {
    token: Arc<[u8]>,
    metadata: Metadata,
}

impl Auth {
    pub fn new(token: &str, metadata: Metadata) -> Self {
        Self {
            token: token.as_bytes().into(),
            metadata,
        }
    }

    fn accepts(&self, presented: &[u8]) -> bool {
        // Lengths are compared in the clear (a token's length is not a secret worth a
        // side channel); the bytes are compared in constant time.
        presented.len() == self.token.len() && bool::from(presented.ct_eq(&self.token))
    }
}

/// Rejects the request unless it carries `Authorization: Bearer <token>`.
pub async fn require_bearer(State(auth): State<Auth>, request: Request, next: Next) -> Response {
    let header = request.headers().get(header::AUTHORIZATION);
    let verdict = match header {
        None => Err((
            "missing_token",
            "missing Authorization header; send \"Authorization: Bearer <token>\"",
        )),
        Some(value) => match bearer(value) {
            None => Err((
                "invalid_request",
                "Authorization header must use the Bearer scheme: \"Authorization: Bearer <token>\"",
            )),
            Some(t) if auth.accepts(t) => Ok(()),
            Some(_) => Err(("invalid_token", "invalid bearer token")),
        },
    };
    match verdict {
        Ok(()) => next.run(request).await,
        Err((code, message)) => {
            let metadata = auth
                .metadata
                .document_url(request.headers(), request.uri().path());
            unauthorized(code, message, &metadata)
        }
    }
}

fn bearer(value: &HeaderValue) -> Option<&[u8]> {
    let bytes = value.as_bytes();
    let (scheme, rest) = bytes.split_at(bytes.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn unauthorized(code: &'static str, message: &'static str, metadata: &str) -> Response {
    let challenge = match code {
        "missing_token" => {
            format!("Bearer realm=\"mcp-gateway\", resource_metadata=\"{metadata}\"")
        }
        other => format!(
            "Bearer realm=\"mcp-gateway\", resource_metadata=\"{metadata}\", error=\"{other}\""
        ),
    };
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "error": code, "message": message })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_token_exact() {
        let auth = Auth::new("mcp-token-123", Metadata::default());
        let v = HeaderValue::from_static("bearer mcp-token-123");
        assert!(auth.accepts(bearer(&v).unwrap()));
        let v = HeaderValue::from_static("Bearer mcp-token-12");
        assert!(!auth.accepts(bearer(&v).unwrap()));
        let v = HeaderValue::from_static("Basic bWNwOg==");
        assert!(bearer(&v).is_none());
        let v = HeaderValue::from_static("Bearer");
        assert!(bearer(&v).is_none());
    }
}
