//! Helpers the shopping-service integration tests share: tool-call arguments from a
//! `json!` object, the text of an `isError` tool result, and ([`stdio`]) a JSON-RPC
//! client of the binary in `--stdio` mode.

#[path = "../../../service-kit/tests/support/stdio_client.rs"]
pub mod stdio;

use rmcp::model::{CallToolResult, JsonObject};
use serde_json::Value;

/// The arguments object of a tool call.
pub fn args(v: Value) -> JsonObject {
    match v {
        Value::Object(m) => m,
        other => panic!("arguments must be an object, got {other}"),
    }
}

/// The text blocks of a result that must be an `isError` one, joined by newlines.
pub fn error_text(result: &CallToolResult) -> String {
    assert_eq!(result.is_error, Some(true), "expected isError: {result:?}");
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}
