//! The wording of the demo services' tool-argument errors: the sentences a caller reads
//! in an `isError` tool result when an argument is missing, of the wrong JSON type, out
//! of range, not an integer or not one of the allowed values, and the JSON type names
//! they use. Owning the sentences here keeps them the same in every service; each
//! service still owns its own checks (which arguments, which bounds, blank or merely
//! empty) and its error type, and wraps these strings in it.
//!
//! Argument names are quoted as `"name"`; they are the tools' own (static) names.

use std::fmt::Display;

use serde_json::Value;

/// The JSON type name of `value`, as JSON Schema spells it.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `missing required argument "name"`.
pub fn missing(name: &str) -> String {
    format!("missing required argument \"{name}\"")
}

/// `argument "name" must be {expected}, got {JSON type of got}`, e.g. `expected` = `"a string"`.
pub fn wrong_type(name: &str, expected: &str, got: &Value) -> String {
    format!(
        "argument \"{name}\" must be {expected}, got {}",
        json_type(got)
    )
}

/// `argument "name" must not be empty`.
pub fn empty(name: &str) -> String {
    format!("argument \"{name}\" must not be empty")
}

/// `argument "name" must be an integer, got {got}`.
pub fn not_integer(name: &str, got: impl Display) -> String {
    format!("argument \"{name}\" must be an integer, got {got}")
}

/// `argument "name" must be between {min} and {max}, got {got}`.
pub fn out_of_range(name: &str, min: impl Display, max: impl Display, got: impl Display) -> String {
    format!("argument \"{name}\" must be between {min} and {max}, got {got}")
}

/// `argument "name" must be one of "a", "b", got {got}`; `got` is shown as given (a JSON
/// value or an already quoted string).
pub fn one_of(name: &str, allowed: &[&str], got: impl Display) -> String {
    let names: Vec<String> = allowed.iter().map(|n| format!("\"{n}\"")).collect();
    format!(
        "argument \"{name}\" must be one of {}, got {got}",
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sentences() {
        assert_eq!(json_type(&json!(null)), "null");
        assert_eq!(json_type(&json!([1])), "array");
        assert_eq!(json_type(&json!({})), "object");
        assert_eq!(missing("id"), r#"missing required argument "id""#);
        assert_eq!(
            wrong_type("id", "a string", &json!(5)),
            r#"argument "id" must be a string, got number"#
        );
        assert_eq!(empty("q"), r#"argument "q" must not be empty"#);
        assert_eq!(
            not_integer("n", json!(2.5)),
            r#"argument "n" must be an integer, got 2.5"#
        );
        assert_eq!(
            out_of_range("n", 0.0, 1000.0, json!(-1)),
            r#"argument "n" must be between 0 and 1000, got -1"#
        );
        assert_eq!(
            one_of("c", &["Books", "Grocery"], json!("Garden")),
            r#"argument "c" must be one of "Books", "Grocery", got "Garden""#
        );
    }
}
