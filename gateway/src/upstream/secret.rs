//! The credential the gateway presents to one upstream: its own, configured for that
//! upstream or supplied at registration, never the client's token (no token
//! passthrough). It is sent as one header on every request to the upstream, marked
//! sensitive, and is never shown: not in `/services`, not in `Debug` output (so not in
//! logs), not in error messages. The store keeps it in a file only its owner can read.
//!
//! Invariant: an upstream credential is never shown: redacted in `Debug`, named only by
//! its scheme in `/services`.

use http::{HeaderName, HeaderValue, header};
use serde::{Deserialize, Serialize};

/// `{"bearer": "TOKEN"}` (sent as `Authorization: Bearer TOKEN`), or
/// `{"header": "X-Api-Key", "value": "KEY"}` (sent as that header).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// The accepted shapes, for error messages.
pub const FORMS: &str =
    "auth must be {\"bearer\": \"TOKEN\"} or {\"header\": \"NAME\", \"value\": \"SECRET\"}";

/// Headers a credential may not be sent as: they belong to the transport or the protocol.
const RESERVED: [&str; 8] = [
    "host",
    "content-type",
    "content-length",
    "accept",
    "transfer-encoding",
    "connection",
    "mcp-session-id",
    "mcp-protocol-version",
];

impl UpstreamAuth {
    pub fn bearer(token: &str) -> Self {
        Self {
            bearer: Some(token.into()),
            header: None,
            value: None,
        }
    }

    /// The header to send. The error says what is wrong without repeating the secret.
    pub fn header(&self) -> Result<(HeaderName, HeaderValue), crate::vocab::Invalid> {
        let (name, value) = match (&self.bearer, &self.header, &self.value) {
            (Some(token), None, None) => {
                if token.trim().is_empty() {
                    return Err("auth.bearer is empty".into());
                }
                (header::AUTHORIZATION, format!("Bearer {token}"))
            }
            (None, Some(name), Some(value)) => {
                let name = HeaderName::from_bytes(name.trim().as_bytes())
                    .map_err(|_| format!("auth.header {name:?} is not a valid HTTP header name"))?;
                if RESERVED.contains(&name.as_str()) {
                    return Err(crate::vocab::Invalid(format!(
                        "auth.header {:?} is reserved for the transport",
                        name.as_str()
                    )));
                }
                if value.trim().is_empty() {
                    return Err("auth.value is empty".into());
                }
                (name, value.clone())
            }
            _ => return Err(FORMS.into()),
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            "the auth secret holds characters an HTTP header cannot carry".to_string()
        })?;
        value.set_sensitive(true);
        Ok((name, value))
    }

    /// What may be shown of it: the scheme and, for a custom header, its name.
    pub fn describe(&self) -> String {
        match &self.header {
            Some(name) => format!("header {}", name.trim().to_ascii_lowercase()),
            None => "bearer".into(),
        }
    }
}

impl std::fmt::Debug for UpstreamAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UpstreamAuth({}, <redacted>)", self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_custom_headers_are_built_and_never_printed() {
        let bearer = UpstreamAuth::bearer("s3cret-token");
        let (name, value) = bearer.header().expect("bearer");
        assert_eq!(name, header::AUTHORIZATION);
        assert_eq!(value, "Bearer s3cret-token");
        assert!(value.is_sensitive());
        assert!(!format!("{bearer:?}").contains("s3cret"));
        assert!(!format!("{value:?}").contains("s3cret"));

        let custom: UpstreamAuth =
            serde_json::from_str(r#"{"header": "X-Api-Key", "value": "k3y-value"}"#)
                .expect("parse");
        assert_eq!(custom.header().expect("custom").0.as_str(), "x-api-key");
        assert_eq!(custom.describe(), "header x-api-key");
        assert!(!format!("{custom:?}").contains("k3y"));
    }

    #[test]
    fn malformed_credentials_are_refused_without_echoing_the_secret() {
        let cases = [
            r#"{}"#,
            r#"{"bearer": "a", "header": "X", "value": "b"}"#,
            r#"{"header": "X-Api-Key"}"#,
            r#"{"bearer": "  "}"#,
            r#"{"header": "bad header", "value": "hidden-1"}"#,
            r#"{"header": "Host", "value": "hidden-2"}"#,
            r#"{"header": "X-Key", "value": "hidden\n3"}"#,
        ];
        for case in cases {
            let auth: UpstreamAuth = serde_json::from_str(case).expect(case);
            let err = auth.header().expect_err(case);
            assert!(!err.contains("hidden"), "{case}: {err}");
        }
        assert!(serde_json::from_str::<UpstreamAuth>(r#"{"token": "x"}"#).is_err());
    }
}
