//! The JSON-RPC envelope of a message POSTed to `/mcp`, read once per request and handed
//! to every later step (rate limiting, authorization, the pass-through path, the
//! `initialize` bookkeeping). No I/O here.
//!
//! Architecture invariant: the authorization decision is taken on [`Parsed`], which is
//! at least as strict as any later reader. What it cannot classify exactly (a member of
//! the wrong type, a member given twice, anything but one JSON object) is
//! [`Parsed::Invalid`], and a credential with limited scopes is refused for it: rmcp
//! might still find a method in such a body, so letting it through would be fail-open.
//!
//! Invariant: a body is parsed once; what it cannot classify exactly is reported as
//! such, never guessed.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// The members of one JSON-RPC message the gateway reads; the rest (`params` aside) is
/// left unparsed.
#[derive(Debug, Deserialize)]
pub struct Envelope<'a> {
    #[serde(borrow, default, deserialize_with = "optional_str")]
    pub jsonrpc: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "optional_str")]
    pub method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub params: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

/// An optional string member, borrowed from the text when it has no escapes. serde
/// borrows a `Cow<str>` member but not an `Option<Cow<str>>` one, which it always copies
/// into a new `String` (two allocations per request for `jsonrpc` and `method`).
pub fn optional_str<'de: 'a, 'a, D>(d: D) -> Result<Option<Cow<'a, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Borrowed<'a>>::deserialize(d)?.map(|b| b.0))
}

/// What a POSTed body is.
#[derive(Debug)]
pub enum Parsed<'a> {
    /// One JSON object whose members have the types JSON-RPC gives them.
    Message(Envelope<'a>),
    /// A JSON array (a batch, allowed only before 2025-06-18).
    Batch,
    /// Not JSON at all (the reason, for the -32700 answer).
    NotJson(String),
    /// JSON, but not a message the gateway can classify exactly (the reason).
    Invalid(String),
}

impl<'a> Parsed<'a> {
    /// Reads `body`. Linear in its size; allocates only for escaped strings.
    pub fn of(body: &'a [u8]) -> Self {
        let trimmed = body.trim_ascii_start();
        if trimmed.starts_with(b"[") {
            return match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => Parsed::Batch,
                Err(e) => Parsed::NotJson(format!("parse error: {e}")),
            };
        }
        match serde_json::from_slice::<Envelope>(body) {
            Ok(envelope) => Parsed::Message(envelope),
            Err(e) if e.is_syntax() || e.is_eof() => Parsed::NotJson(format!("parse error: {e}")),
            Err(e) => Parsed::Invalid(format!("invalid JSON-RPC message: {e}")),
        }
    }

    /// The message, if the body is one.
    pub fn message(&self) -> Option<&Envelope<'a>> {
        match self {
            Parsed::Message(m) => Some(m),
            _ => None,
        }
    }

    /// The method of a request or notification.
    pub fn method(&self) -> Option<&str> {
        self.message()?.method.as_deref()
    }
}

impl Envelope<'_> {
    /// The id of a request (a message with a method) as JSON, if it is a string or a
    /// number: what an error answer to it carries.
    pub fn request_id(&self) -> Option<serde_json::Value> {
        self.method.as_ref()?;
        let id = serde_json::from_str::<serde_json::Value>(self.id?.get()).ok()?;
        (id.is_string() || id.is_number()).then_some(id)
    }

    /// A response to a request of the server's (an id and a result or an error, no
    /// method).
    pub fn is_response(&self) -> bool {
        self.method.is_none()
            && self.id.is_some()
            && (self.result.is_some() || self.error.is_some())
    }

    /// For `initialize`: the protocol version the client asks for, when it is a string.
    pub fn protocol_version(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct Params<'p> {
            #[serde(borrow, rename = "protocolVersion")]
            protocol_version: Option<&'p RawValue>,
        }
        let params = serde_json::from_str::<Params>(self.params?.get()).ok()?;
        serde_json::from_str::<String>(params.protocol_version?.get()).ok()
    }
}

/// A JSON-RPC error response with HTTP status `status`: the one shape of every refusal
/// on `/mcp` (`id` is null when the request's id is unknown or unusable).
pub fn error_response(
    status: http::StatusCode,
    id: serde_json::Value,
    code: i32,
    message: impl Into<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    (status, axum::Json(error_body(id, code, message))).into_response()
}

/// A JSON-RPC error message.
pub fn error_body(
    id: serde_json::Value,
    code: i32,
    message: impl Into<String>,
) -> serde_json::Value {
    serde_json::json!({
        "jsonrpc": "2.0", "id": id,
        "error": { "code": code, "message": message.into() }
    })
}

#[cfg(test)]
mod tests {
    use super::Parsed;

    #[test]
    fn string_members_are_borrowed_unless_escaped() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#;
        let Parsed::Message(m) = Parsed::of(body) else {
            panic!("a message");
        };
        assert!(matches!(m.jsonrpc, Some(std::borrow::Cow::Borrowed("2.0"))));
        assert!(matches!(
            m.method,
            Some(std::borrow::Cow::Borrowed("tools/call"))
        ));
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools\/call"}"#;
        let Parsed::Message(m) = Parsed::of(body) else {
            panic!("a message");
        };
        assert_eq!(m.method.as_deref(), Some("tools/call"));
        // Null is absent; any other type, or a member given twice, is not a message.
        let Parsed::Message(m) = Parsed::of(br#"{"jsonrpc":"2.0","id":1,"method":null}"#) else {
            panic!("a message");
        };
        assert!(m.method.is_none());
        assert!(matches!(
            Parsed::of(br#"{"jsonrpc":"2.0","id":1,"method":7}"#),
            Parsed::Invalid(_)
        ));
        assert!(matches!(
            Parsed::of(br#"{"jsonrpc":"2.0","id":1,"method":"a","method":"b"}"#),
            Parsed::Invalid(_)
        ));
    }

    #[test]
    fn a_message_is_read_with_its_members() {
        let p =
            Parsed::of(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"}}"#);
        let m = p.message().expect("a message");
        assert_eq!(m.method.as_deref(), Some("tools/call"));
        assert_eq!(m.request_id(), Some(serde_json::json!(7)));
        assert!(!m.is_response());
    }

    #[test]
    fn escaped_methods_read_as_their_text() {
        let p = Parsed::of(br#"{"jsonrpc":"2.0","id":1,"method":"tools\/\u0063all"}"#);
        assert_eq!(p.method(), Some("tools/call"));
    }

    #[test]
    fn what_cannot_be_classified_exactly_is_invalid() {
        for body in [
            // A member of the wrong type.
            r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"},"jsonrpc":"2.0"}"#,
            // A member given twice: readers disagree on which one counts.
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}"#,
            // Not an object.
            r#""tools/call""#,
            "17",
            "null",
        ] {
            assert!(
                matches!(Parsed::of(body.as_bytes()), Parsed::Invalid(_)),
                "{body} should be invalid, got {:?}",
                Parsed::of(body.as_bytes())
            );
        }
    }

    #[test]
    fn a_non_string_protocol_version_is_no_version() {
        let p = Parsed::of(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","protocolVersion":{"a":1}}}"#,
        );
        let m = p
            .message()
            .expect("still a message: params are not the envelope");
        assert_eq!(m.method.as_deref(), Some("tools/call"));
        assert_eq!(m.protocol_version(), None);
    }

    #[test]
    fn batches_and_garbage_are_told_apart() {
        assert!(matches!(
            Parsed::of(b" [{\"method\":\"x\"}]"),
            Parsed::Batch
        ));
        assert!(matches!(Parsed::of(b"[1,"), Parsed::NotJson(_)));
        assert!(matches!(Parsed::of(b"{\"method\":"), Parsed::NotJson(_)));
        assert!(matches!(Parsed::of(b"{} trailing"), Parsed::NotJson(_)));
        assert!(matches!(Parsed::of(b""), Parsed::NotJson(_)));
    }

    #[test]
    fn responses_are_recognized() {
        let p = Parsed::of(br#"{"jsonrpc":"2.0","id":"s-1","result":{}}"#);
        assert!(p.message().expect("message").is_response());
        let p = Parsed::of(br#"{"jsonrpc":"2.0","id":"s-1"}"#);
        assert!(!p.message().expect("message").is_response());
    }
}
