//! Validation of tool arguments. Tools read their arguments through [`Args`], which
//! turns every problem (unknown argument, missing required one, wrong JSON type, value
//! out of range, unknown enum value) into an [`ArgError`] whose message says exactly
//! what was wrong, e.g. `missing required argument "id"` or
//! `argument "id" must be a string, got number`. The tools layer reports these as
//! `isError` tool results rather than JSON-RPC errors, so the caller sees the message.
//! The sentences themselves are `service_kit::tool_args`'s, shared with user-service.
//!
//! An explicit `null` for an optional argument means "not given" (some clients send
//! `null` for every optional parameter); for a required one it is a type error.

use std::fmt;

use serde_json::{Map, Value};
use service_kit::tool_args;

/// Longest accepted id (user ids, product ids).
pub const MAX_ID_LEN: usize = 64;

/// What was wrong with the arguments, as a message for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError(pub String);

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArgError {}

pub type ArgResult<T> = Result<T, ArgError>;

/// A tool's arguments, checked against the names the tool accepts.
#[derive(Debug, Clone, Copy)]
pub struct Args<'a> {
    map: Option<&'a Map<String, Value>>,
}

impl<'a> Args<'a> {
    /// Wraps `arguments`, refusing any name not in `accepted`.
    pub fn new(arguments: Option<&'a Map<String, Value>>, accepted: &[&str]) -> ArgResult<Self> {
        if let Some(map) = arguments
            && let Some(unknown) = map.keys().find(|k| !accepted.contains(&k.as_str()))
        {
            let expected = if accepted.is_empty() {
                "this tool takes no arguments".to_string()
            } else {
                let names: Vec<String> = accepted.iter().map(|n| format!("\"{n}\"")).collect();
                format!("accepted: {}", names.join(", "))
            };
            return Err(ArgError(format!(
                "unknown argument \"{unknown}\" ({expected})"
            )));
        }
        Ok(Args { map: arguments })
    }

    /// The value of `name`, `None` when absent or `null`.
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map?.get(name).filter(|v| !v.is_null())
    }

    fn required(&self, name: &str) -> ArgResult<&'a Value> {
        match self.map.and_then(|m| m.get(name)) {
            Some(v) => Ok(v),
            None => Err(ArgError(tool_args::missing(name))),
        }
    }

    /// A required, non-blank string.
    pub fn required_str(&self, name: &str) -> ArgResult<&'a str> {
        let value = self.required(name)?;
        let s = as_str(name, value)?;
        non_blank(name, s)
    }

    /// A required id: a non-blank string of at most [`MAX_ID_LEN`] characters.
    pub fn required_id(&self, name: &str) -> ArgResult<&'a str> {
        let s = self.required_str(name)?;
        if s.chars().count() > MAX_ID_LEN {
            return Err(ArgError(format!(
                "argument \"{name}\" must be at most {MAX_ID_LEN} characters long"
            )));
        }
        Ok(s)
    }

    /// An optional boolean.
    pub fn optional_bool(&self, name: &str) -> ArgResult<Option<bool>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong_type(name, "a boolean", other)),
        }
    }

    /// An optional number within `min..=max`.
    pub fn optional_number(&self, name: &str, min: f64, max: f64) -> ArgResult<Option<f64>> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        let n = match value {
            Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
            other => return Err(wrong_type(name, "a number", other)),
        };
        if !(min..=max).contains(&n) {
            return Err(ArgError(tool_args::out_of_range(name, min, max, value)));
        }
        Ok(Some(n))
    }

    /// An optional integer within `min..=max`, `default` when absent. A number with a
    /// zero fraction (`5.0`) counts as an integer.
    pub fn optional_integer(&self, name: &str, min: u64, max: u64, default: u64) -> ArgResult<u64> {
        let Some(value) = self.get(name) else {
            return Ok(default);
        };
        let Value::Number(n) = value else {
            return Err(wrong_type(name, "an integer", value));
        };
        let out_of_range = || ArgError(tool_args::out_of_range(name, min, max, value));
        let int = if let Some(u) = n.as_u64() {
            u
        } else if n.as_i64().is_some() {
            return Err(out_of_range()); // negative
        } else {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() != 0.0 || !f.is_finite() {
                return Err(ArgError(tool_args::not_integer(name, value)));
            }
            if f < 0.0 || f > u64::MAX as f64 {
                return Err(out_of_range());
            }
            f as u64
        };
        if !(min..=max).contains(&int) {
            return Err(out_of_range());
        }
        Ok(int)
    }

    /// An optional string that must be one of `allowed` (matched ASCII
    /// case-insensitively); returns the canonical spelling.
    pub fn optional_enum(
        &self,
        name: &str,
        allowed: &[&'static str],
    ) -> ArgResult<Option<&'static str>> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        let s = as_str(name, value)?;
        match allowed.iter().find(|a| a.eq_ignore_ascii_case(s.trim())) {
            Some(canonical) => Ok(Some(canonical)),
            None => Err(ArgError(tool_args::one_of(name, allowed, value))),
        }
    }
}

fn as_str<'a>(name: &str, value: &'a Value) -> ArgResult<&'a str> {
    value
        .as_str()
        .ok_or_else(|| wrong_type(name, "a string", value))
}

fn non_blank<'a>(name: &str, s: &'a str) -> ArgResult<&'a str> {
    if s.trim().is_empty() {
        Err(ArgError(tool_args::empty(name)))
    } else {
        Ok(s)
    }
}

fn wrong_type(name: &str, expected: &str, got: &Value) -> ArgError {
    ArgError(tool_args::wrong_type(name, expected, got))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("test arguments must be an object"),
        }
    }

    fn err<T: fmt::Debug>(r: ArgResult<T>) -> String {
        r.expect_err("expected an argument error").0
    }

    #[test]
    fn unknown_arguments_are_refused() {
        let m = map(json!({"id": "1", "colour": "red"}));
        assert_eq!(
            err(Args::new(Some(&m), &["id"])),
            r#"unknown argument "colour" (accepted: "id")"#
        );
        let m = map(json!({"x": 1}));
        assert_eq!(
            err(Args::new(Some(&m), &[])),
            r#"unknown argument "x" (this tool takes no arguments)"#
        );
        assert!(Args::new(None, &[]).is_ok());
        assert!(Args::new(Some(&map(json!({}))), &[]).is_ok());
    }

    #[test]
    fn required_strings() {
        let m = map(
            json!({"n": 5, "s": "abc", "e": "  ", "z": null, "a": [1], "long": "x".repeat(65)}),
        );
        let a = Args::new(Some(&m), &["n", "s", "e", "z", "a", "long"]).expect("args");
        assert_eq!(a.required_id("s"), Ok("abc"));
        assert_eq!(
            err(a.required_id("id")),
            r#"missing required argument "id""#
        );
        assert_eq!(
            err(a.required_id("n")),
            r#"argument "n" must be a string, got number"#
        );
        assert_eq!(
            err(a.required_id("z")),
            r#"argument "z" must be a string, got null"#
        );
        assert_eq!(
            err(a.required_id("a")),
            r#"argument "a" must be a string, got array"#
        );
        assert_eq!(err(a.required_id("e")), r#"argument "e" must not be empty"#);
        assert_eq!(
            err(a.required_id("long")),
            r#"argument "long" must be at most 64 characters long"#
        );
        assert_eq!(a.required_str("long").map(str::len), Ok(65));
        let none = Args::new(None, &["id"]).expect("args");
        assert_eq!(
            err(none.required_str("id")),
            r#"missing required argument "id""#
        );
    }

    #[test]
    fn integers() {
        let m = map(
            json!({"a": 5, "b": 500, "c": -1, "d": 2.5, "e": "7", "f": 7.0, "g": null, "h": 1e300}),
        );
        let a = Args::new(Some(&m), &["a", "b", "c", "d", "e", "f", "g", "h"]).expect("args");
        assert_eq!(a.optional_integer("a", 1, 100, 10), Ok(5));
        assert_eq!(a.optional_integer("missing", 1, 100, 10), Ok(10));
        assert_eq!(a.optional_integer("g", 1, 100, 10), Ok(10));
        assert_eq!(a.optional_integer("f", 1, 100, 10), Ok(7));
        assert_eq!(
            err(a.optional_integer("b", 1, 100, 10)),
            r#"argument "b" must be between 1 and 100, got 500"#
        );
        assert_eq!(
            err(a.optional_integer("c", 0, 100, 10)),
            r#"argument "c" must be between 0 and 100, got -1"#
        );
        assert_eq!(
            err(a.optional_integer("d", 1, 100, 10)),
            r#"argument "d" must be an integer, got 2.5"#
        );
        assert_eq!(
            err(a.optional_integer("e", 1, 100, 10)),
            r#"argument "e" must be an integer, got string"#
        );
        assert!(a.optional_integer("h", 1, 100, 10).is_err());
    }

    #[test]
    fn numbers_bools_enums() {
        let m = map(
            json!({"p": 12.5, "q": -1, "r": "x", "b": true, "c": "yes", "cat": "books", "bad": "Garden"}),
        );
        let a = Args::new(Some(&m), &["p", "q", "r", "b", "c", "cat", "bad"]).expect("args");
        assert_eq!(a.optional_number("p", 0.0, 1e6), Ok(Some(12.5)));
        assert_eq!(a.optional_number("none", 0.0, 1e6), Ok(None));
        assert_eq!(
            err(a.optional_number("q", 0.0, 1000.0)),
            r#"argument "q" must be between 0 and 1000, got -1"#
        );
        assert_eq!(
            err(a.optional_number("r", 0.0, 1.0)),
            r#"argument "r" must be a number, got string"#
        );
        assert_eq!(a.optional_bool("b"), Ok(Some(true)));
        assert_eq!(a.optional_bool("none"), Ok(None));
        assert_eq!(
            err(a.optional_bool("c")),
            r#"argument "c" must be a boolean, got string"#
        );
        let allowed = ["Books", "Grocery"];
        assert_eq!(a.optional_enum("cat", &allowed), Ok(Some("Books")));
        assert_eq!(a.optional_enum("none", &allowed), Ok(None));
        assert_eq!(
            err(a.optional_enum("bad", &allowed)),
            r#"argument "bad" must be one of "Books", "Grocery", got "Garden""#
        );
        assert_eq!(
            err(a.optional_enum("p", &allowed)),
            r#"argument "p" must be a string, got number"#
        );
    }
}
