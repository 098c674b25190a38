//! Bearer-token authentication of a demo service's MCP endpoint, as an axum `from_fn`
//! middleware ([`require_bearer`]) over a [`BearerAuth`]: one accepted token, compared in
//! constant time. A missing or wrong token gets 401 with `WWW-Authenticate: Bearer
//! realm="<service>"` (plus `error="..."` when a token was sent but not accepted) and a
//! JSON body `{"error", "message"}` worded as the gateway's.
//!
//! The gateway presents this token because the service gives it at registration
//! (`"auth": {"bearer": ...}`, see [`crate::registration`]); clients that reach the
//! service directly must send it themselves.

use std::{fmt, sync::Arc};

use axum::{
    Json,
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;
use subtle::ConstantTimeEq;

/// The token a service accepts and the realm its challenges name. Cheap to clone;
/// `Debug` never shows the token.
#[derive(Clone)]
pub struct BearerAuth {
    inner: Arc<Inner>,
}

struct Inner {
    realm: String,
    token: Box<[u8]>,
}

impl fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuth")
            .field("realm", &self.inner.realm)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl BearerAuth {
    /// Accepts exactly `token` (which must be non-empty, without whitespace or control
    /// characters: it has to fit an `Authorization: Bearer` header as it is), naming
    /// `realm` (the service's name: letters, digits, `-`, `_`, `.`) in challenges.
    pub fn new(realm: &str, token: &str) -> Result<Self, String> {
        if realm.is_empty()
            || !realm
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "realm {realm:?} must be letters, digits, '-', '_' or '.'"
            ));
        }
        if token.is_empty() {
            return Err("the token must not be empty".into());
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("the token must not contain whitespace or control characters".into());
        }
        Ok(Self {
            inner: Arc::new(Inner {
                realm: realm.to_string(),
                token: token.as_bytes().into(),
            }),
        })
    }

    /// Whether `presented` is the accepted token: lengths compared in the clear (a
    /// token's length is not a secret worth a side channel), bytes in constant time.
    fn accepts(&self, presented: &[u8]) -> bool {
        let token = &self.inner.token;
        presented.len() == token.len() && bool::from(presented.ct_eq(token))
    }

    fn unauthorized(&self, code: &'static str, message: &'static str) -> Response {
        let realm = &self.inner.realm;
        let challenge = match code {
            "missing_token" => format!("Bearer realm=\"{realm}\""),
            other => format!("Bearer realm=\"{realm}\", error=\"{other}\""),
        };
        // The realm was checked in `new`, so the value is always a valid header.
        unauthorized(&challenge, code, message)
    }
}

/// Passes the request on only if it carries `Authorization: Bearer <the token>` (the
/// scheme matched case-insensitively); answers 401 otherwise.
pub async fn require_bearer(
    State(auth): State<BearerAuth>,
    request: Request,
    next: Next,
) -> Response {
    let refused = match request.headers().get(header::AUTHORIZATION) {
        None => (
            "missing_token",
            "missing Authorization header; send \"Authorization: Bearer <token>\"",
        ),
        Some(value) => match bearer(value) {
            None => (
                "invalid_request",
                "Authorization header must use the Bearer scheme: \"Authorization: Bearer <token>\"",
            ),
            Some(token) if auth.accepts(token) => return next.run(request).await,
            Some(_) => ("invalid_token", "invalid bearer token"),
        },
    };
    tracing::debug!(realm = %auth.inner.realm, error = refused.0, path = %request.uri().path(),
        "request refused");
    auth.unauthorized(refused.0, refused.1)
}

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive,
/// surrounding blanks trimmed); `None` for another scheme or no token.
/// The token of an `Authorization: Bearer <token>` header (the scheme in any case), if
/// the header has that form.
/// 401 with `challenge` as its `WWW-Authenticate` and a JSON body `{"error": code,
/// "message"}`: one shape for the services and the gateway (a challenge that is no valid
/// header value is left out).
pub fn unauthorized(challenge: &str, code: &str, message: &str) -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "error": code, "message": message })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}

pub fn bearer(value: &HeaderValue) -> Option<&[u8]> {
    let bytes = value.as_bytes();
    let (scheme, rest) = bytes.split_at(bytes.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_the_token_exact() {
        let auth = BearerAuth::new("demo-service", "s3cret-token").expect("valid");
        let accepted = |header: &'static str| {
            let value = HeaderValue::from_static(header);
            auth.accepts(bearer(&value).expect(header))
        };
        for header in [
            "Bearer s3cret-token",
            "bearer s3cret-token",
            "BEARER  s3cret-token ",
        ] {
            assert!(accepted(header), "{header}");
        }
        for header in [
            "Bearer s3cret-toke",
            "Bearer s3cret-token2",
            "Bearer S3CRET-TOKEN",
        ] {
            assert!(!accepted(header), "{header}");
        }
        for header in [
            "Basic czNjcmV0LXRva2Vu",
            "Bearer",
            "Bearer   ",
            "s3cret-token",
        ] {
            assert_eq!(bearer(&HeaderValue::from_static(header)), None, "{header}");
        }
    }

    #[test]
    fn unusable_tokens_and_realms_are_refused_and_debug_hides_the_token() {
        for token in ["", "two words", "tab\there", "line\n"] {
            assert!(BearerAuth::new("svc", token).is_err(), "{token:?}");
        }
        for realm in ["", "with space", "quote\"d"] {
            assert!(BearerAuth::new(realm, "token").is_err(), "{realm:?}");
        }
        let auth = BearerAuth::new("svc", "do-not-print-me").expect("valid");
        let shown = format!("{auth:?}");
        assert!(
            shown.contains("svc") && !shown.contains("do-not-print-me"),
            "{shown}"
        );
    }

    #[test]
    fn challenges_name_the_realm_and_the_error() {
        let auth = BearerAuth::new("demo-service", "token").expect("valid");
        let challenge = |code| {
            auth.unauthorized(code, "message").headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .expect("ascii")
                .to_string()
        };
        assert_eq!(challenge("missing_token"), "Bearer realm=\"demo-service\"");
        assert_eq!(
            challenge("invalid_token"),
            "Bearer realm=\"demo-service\", error=\"invalid_token\""
        );
    }
}
