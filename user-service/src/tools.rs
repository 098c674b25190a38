//! The service's four MCP tools: their definitions (description, input JSON Schema,
//! output JSON Schema, annotations), the argument validation, and the handlers that
//! answer from [`crate::data`].
//!
//! Arguments are validated here by hand rather than by deserializing into typed structs:
//! every way a call can be wrong (missing or unknown argument, wrong JSON type, value out
//! of range, unknown user) becomes a tool result with `isError: true` and a sentence
//! naming the argument and the problem, which an agent can read and correct. Only a call
//! to a tool that does not exist is a JSON-RPC error (`-32602`), from [`call`].

use std::sync::LazyLock;

use rmcp::{
    ErrorData,
    model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations, object},
};
use serde::Serialize;
use serde_json::{Value, json};
use service_kit::{mcp, tool_args};

use crate::data::{self, CATEGORIES, ListFilter, Tier, User};

pub const GET_USER_BY_ID: &str = "getUserById";
pub const SEARCH_USERS: &str = "searchUsers";
pub const LIST_USERS: &str = "listUsers";
pub const GET_USER_PREFERENCES: &str = "getUserPreferences";

/// Page size bounds shared by `searchUsers` and `listUsers`.
const MAX_LIMIT: i64 = 100;
const DEFAULT_LIMIT: i64 = 20;

static TOOLS: LazyLock<Vec<Tool>> = LazyLock::new(definitions);

/// Every tool this service offers, in a stable order.
pub fn tools() -> &'static [Tool] {
    &TOOLS
}

/// The definition of tool `name`, if this service has it.
pub fn tool(name: &str) -> Option<&'static Tool> {
    tools().iter().find(|t| t.name == name)
}

/// Runs tool `name` with `arguments` (absent arguments count as `{}`).
///
/// A bad call of an existing tool is `Ok` with `isError: true`; `Err` (invalid params)
/// means there is no tool by that name.
pub fn call(name: &str, arguments: Option<&JsonObject>) -> Result<CallToolResult, ErrorData> {
    let empty = JsonObject::new();
    let arguments = arguments.unwrap_or(&empty);
    let outcome = match name {
        GET_USER_BY_ID => get_user_by_id(arguments),
        SEARCH_USERS => search_users(arguments),
        LIST_USERS => list_users(arguments),
        GET_USER_PREFERENCES => get_user_preferences(arguments),
        _ => {
            let known: Vec<&str> = tools().iter().map(|t| t.name.as_ref()).collect();
            return Err(ErrorData::invalid_params(
                format!(
                    "unknown tool \"{name}\"; this server has: {}",
                    known.join(", ")
                ),
                None,
            ));
        }
    };
    Ok(match outcome {
        Ok(value) => CallToolResult::structured(value),
        Err(ToolError(message)) => CallToolResult::error(vec![ContentBlock::text(message)]),
    })
}

// ---------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------

/// A failed call, as the sentence the caller reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError(pub String);

type Outcome = Result<Value, ToolError>;

fn get_user_by_id(arguments: &JsonObject) -> Outcome {
    let args = Args::new(arguments, &["id"])?;
    let user = find_user(args.required_str("id")?)?;
    to_value(user)
}

fn search_users(arguments: &JsonObject) -> Outcome {
    let args = Args::new(arguments, &["query", "limit"])?;
    let query = args.required_str("query")?.trim();
    if query.is_empty() {
        return Err(ToolError(
            "argument \"query\" must contain more than whitespace".into(),
        ));
    }
    let limit = args.optional_int("limit", 1, Some(MAX_LIMIT), DEFAULT_LIMIT)?;
    let (total, users) = data::search(query, to_usize(limit));
    to_value(json!({ "query": query, "total": total, "users": users }))
}

fn list_users(arguments: &JsonObject) -> Outcome {
    let args = Args::new(arguments, &["offset", "limit", "tier", "country"])?;
    let offset = args.optional_int("offset", 0, None, 0)?;
    let limit = args.optional_int("limit", 1, Some(MAX_LIMIT), DEFAULT_LIMIT)?;
    let tier = match args.optional_str("tier")? {
        None => None,
        Some(name) => Some(Tier::parse(name).ok_or_else(|| {
            let tiers = Tier::ALL.map(Tier::as_str);
            ToolError(tool_args::one_of("tier", &tiers, format_args!("{name:?}")))
        })?),
    };
    let country = args.optional_str("country")?.map(str::trim);
    let filter = ListFilter { tier, country };
    let (total, users) = data::list(&filter, to_usize(offset), to_usize(limit));
    to_value(json!({ "total": total, "offset": offset, "limit": limit, "users": users }))
}

/// The preferences document shopping-service consumes through the gateway; its field
/// names are a contract.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserPreferences<'a> {
    user_id: &'a str,
    #[serde(flatten)]
    preferences: &'a data::Preferences,
}

fn get_user_preferences(arguments: &JsonObject) -> Outcome {
    let args = Args::new(arguments, &["id"])?;
    let user = find_user(args.required_str("id")?)?;
    to_value(UserPreferences {
        user_id: &user.id,
        preferences: &user.preferences,
    })
}

fn find_user(id: &str) -> Result<&'static User, ToolError> {
    data::user_by_id(id).ok_or_else(|| ToolError(format!("no user with id {id:?}")))
}

fn to_value(value: impl Serialize) -> Outcome {
    serde_json::to_value(value).map_err(|e| ToolError(format!("cannot encode the result: {e}")))
}

/// Validated integers are within `0..=i64::MAX`; an offset beyond `usize` selects nothing
/// either way.
fn to_usize(n: i64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

// ---------------------------------------------------------------------------------------
// Argument validation
// ---------------------------------------------------------------------------------------
//
// The checks are this service's; the sentences are `service_kit::tool_args`'s, shared
// with shopping-service.

/// A tool's arguments, checked against the names it accepts.
struct Args<'a> {
    map: &'a JsonObject,
}

impl<'a> Args<'a> {
    /// Rejects the first argument not in `accepted`.
    fn new(map: &'a JsonObject, accepted: &[&str]) -> Result<Self, ToolError> {
        if let Some(unknown) = map.keys().find(|k| !accepted.contains(&k.as_str())) {
            let accepted: Vec<String> = accepted.iter().map(|a| format!("{a:?}")).collect();
            return Err(ToolError(format!(
                "unknown argument {unknown:?}; accepted arguments: {}",
                accepted.join(", ")
            )));
        }
        Ok(Self { map })
    }

    /// A present, non-null value for `key`; an explicit `null` counts as absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn required_str(&self, key: &str) -> Result<&'a str, ToolError> {
        match self.map.get(key) {
            None => Err(ToolError(tool_args::missing(key))),
            Some(value) => non_empty_str(key, value),
        }
    }

    fn optional_str(&self, key: &str) -> Result<Option<&'a str>, ToolError> {
        self.get(key)
            .map(|value| non_empty_str(key, value))
            .transpose()
    }

    /// An integer in `min..=max` (no upper bound when `max` is `None`), or `default`.
    /// Integral floats such as `20.0` are accepted, as JSON Schema does.
    fn optional_int(
        &self,
        key: &str,
        min: i64,
        max: Option<i64>,
        default: i64,
    ) -> Result<i64, ToolError> {
        let Some(value) = self.get(key) else {
            return Ok(default);
        };
        let Value::Number(number) = value else {
            return Err(wrong_type(key, "an integer", value));
        };
        let n = if let Some(n) = number.as_i64() {
            i128::from(n)
        } else if let Some(n) = number.as_u64() {
            i128::from(n)
        } else {
            match number.as_f64() {
                // |f| < 2^63, so the cast is exact for integral values.
                Some(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => f as i128,
                _ => return Err(ToolError(tool_args::not_integer(key, number))),
            }
        };
        let in_range = n >= i128::from(min) && max.is_none_or(|max| n <= i128::from(max));
        match (in_range, max) {
            (true, _) => Ok(n as i64),
            (false, Some(max)) => Err(ToolError(tool_args::out_of_range(key, min, max, number))),
            (false, None) => Err(ToolError(format!(
                "argument {key:?} must be at least {min}, got {number}"
            ))),
        }
    }
}

fn non_empty_str<'a>(key: &str, value: &'a Value) -> Result<&'a str, ToolError> {
    match value {
        Value::String(s) if s.is_empty() => Err(ToolError(tool_args::empty(key))),
        Value::String(s) => Ok(s),
        other => Err(wrong_type(key, "a string", other)),
    }
}

fn wrong_type(key: &str, expected: &str, got: &Value) -> ToolError {
    ToolError(tool_args::wrong_type(key, expected, got))
}

// ---------------------------------------------------------------------------------------
// Definitions
// ---------------------------------------------------------------------------------------

fn definitions() -> Vec<Tool> {
    let id_input = json!({
        "type": "object",
        "properties": {
            "id": {
                "type": "string",
                "minLength": 1,
                "description": "The user's id: a decimal string such as \"456\"."
            }
        },
        "required": ["id"],
        "additionalProperties": false
    });
    let limit = json!({
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_LIMIT,
        "default": DEFAULT_LIMIT,
        "description": "Maximum number of users to return."
    });
    let users_array = json!({ "type": "array", "items": user_schema() });

    [
        mcp::tool(
            GET_USER_BY_ID,
            "Get user by id",
            "Look up one user of the directory by id and return the full record: name, \
             email, city, country, join date, membership tier and shopping preferences.",
            id_input.clone(),
            user_schema(),
        ),
        mcp::tool(
            SEARCH_USERS,
            "Search users",
            "Find users whose name, email or city contains the query, ignoring case. \
             Returns the total number of matches and up to `limit` of them, in id order.",
            json!({
                "type": "object",
                "properties": {
                    "query": {
                        "type": "string",
                        "minLength": 1,
                        "description": "Text to find in name, email or city, e.g. \"garcia\"."
                    },
                    "limit": limit
                },
                "required": ["query"],
                "additionalProperties": false
            }),
            json!({
                "type": "object",
                "properties": {
                    "query": { "type": "string", "description": "The query as matched (trimmed)." },
                    "total": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "Number of matching users."
                    },
                    "users": users_array
                },
                "required": ["query", "total", "users"],
                "additionalProperties": false
            }),
        ),
        mcp::tool(
            LIST_USERS,
            "List users",
            "Page through the user directory in id order, optionally only one membership \
             tier and/or one country. Returns the total number of users matching the \
             filters and the requested page.",
            json!({
                "type": "object",
                "properties": {
                    "offset": {
                        "type": "integer",
                        "minimum": 0,
                        "default": 0,
                        "description": "Number of matching users to skip."
                    },
                    "limit": limit,
                    "tier": {
                        "type": "string",
                        "enum": Tier::ALL.map(Tier::as_str),
                        "description": "Only users of this membership tier."
                    },
                    "country": {
                        "type": "string",
                        "minLength": 1,
                        "description": "Only users living in this country, ignoring case."
                    }
                },
                "required": [],
                "additionalProperties": false
            }),
            json!({
                "type": "object",
                "properties": {
                    "total": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "Number of users matching the filters."
                    },
                    "offset": { "type": "integer", "minimum": 0 },
                    "limit": { "type": "integer", "minimum": 1, "maximum": MAX_LIMIT },
                    "users": users_array
                },
                "required": ["total", "offset", "limit", "users"],
                "additionalProperties": false
            }),
        ),
        mcp::tool(
            GET_USER_PREFERENCES,
            "Get user shopping preferences",
            "Return a user's shopping preferences: favourite product categories (the \
             shopping catalog's category names), preferred brands, usual price range in \
             USD, and newsletter opt-in. Use it to personalize product recommendations.",
            id_input,
            preferences_schema(true),
        ),
    ]
    .into_iter()
    .map(read_only)
    .collect()
}

/// Every tool here only reads the static directory.
fn read_only(tool: Tool) -> Tool {
    let title = tool.title.clone().unwrap_or_default();
    tool.with_annotations(
        ToolAnnotations::with_title(title)
            .read_only(true)
            .destructive(false)
            .idempotent(true)
            .open_world(false),
    )
}

fn user_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": { "type": "string", "description": "Decimal id, \"1\" upwards." },
            "name": { "type": "string", "description": "First and last name." },
            "email": { "type": "string", "format": "email" },
            "city": { "type": "string" },
            "country": { "type": "string" },
            "joinedAt": { "type": "string", "format": "date", "description": "Sign-up date." },
            "membershipTier": { "type": "string", "enum": Tier::ALL.map(Tier::as_str) },
            "preferences": preferences_schema(false)
        },
        "required": [
            "id", "name", "email", "city", "country", "joinedAt", "membershipTier", "preferences"
        ],
        "additionalProperties": false
    })
}

/// The preferences object; with `user_id`, the `getUserPreferences` document.
fn preferences_schema(with_user_id: bool) -> Value {
    let mut properties = object(json!({
        "favoriteCategories": {
            "type": "array",
            "items": { "type": "string", "enum": CATEGORIES },
            "uniqueItems": true,
            "description": "Product categories the user favours (shopping catalog names)."
        },
        "preferredBrands": { "type": "array", "items": { "type": "string" } },
        "priceRange": {
            "type": "object",
            "properties": {
                "min": { "type": "number", "minimum": 0 },
                "max": { "type": "number", "minimum": 0 }
            },
            "required": ["min", "max"],
            "additionalProperties": false,
            "description": "Usual price band in USD."
        },
        "newsletter": { "type": "boolean", "description": "Opted in to the newsletter." }
    }));
    let mut required = vec![
        "favoriteCategories",
        "preferredBrands",
        "priceRange",
        "newsletter",
    ];
    if with_user_id {
        let mut with_id = object(json!({ "userId": { "type": "string" } }));
        with_id.append(&mut properties);
        properties = with_id;
        required.insert(0, "userId");
    }
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(value: Value) -> JsonObject {
        object(value)
    }

    fn run(name: &str, arguments: Value) -> CallToolResult {
        call(name, Some(&args(arguments))).expect("known tool")
    }

    fn error_text(result: &CallToolResult) -> &str {
        assert_eq!(result.is_error, Some(true), "expected an error: {result:?}");
        assert!(result.structured_content.is_none());
        result
            .content
            .first()
            .and_then(|c| c.as_text())
            .map(|t| t.text.as_str())
            .expect("a text block")
    }

    fn success(result: CallToolResult) -> Value {
        assert_eq!(result.is_error, Some(false), "expected success: {result:?}");
        let value = result.structured_content.expect("structured content");
        let text = result
            .content
            .first()
            .and_then(|c| c.as_text())
            .expect("text");
        let echoed: Value = serde_json::from_str(&text.text).expect("text is JSON");
        assert_eq!(echoed, value, "text block mirrors structured content");
        value
    }

    #[test]
    fn definitions_are_complete() {
        let names: Vec<&str> = tools().iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(
            names,
            [
                GET_USER_BY_ID,
                SEARCH_USERS,
                LIST_USERS,
                GET_USER_PREFERENCES
            ]
        );
        for tool in tools() {
            assert!(tool.description.as_deref().is_some_and(|d| d.len() > 20));
            let input = &tool.input_schema;
            assert_eq!(input["type"], "object", "{}", tool.name);
            assert!(input["properties"].is_object());
            assert!(input["required"].is_array());
            assert_eq!(input["additionalProperties"], false);
            let output = tool.output_schema.as_ref().expect("output schema");
            assert_eq!(output["type"], "object", "{}", tool.name);
            assert!(
                tool.annotations
                    .as_ref()
                    .is_some_and(|a| a.read_only_hint == Some(true))
            );
        }
        assert_eq!(tool(LIST_USERS).map(|t| t.name.as_ref()), Some(LIST_USERS));
        assert!(tool("nope").is_none());
    }

    #[test]
    fn unknown_tool_is_invalid_params() {
        let err = call("getUser", None).expect_err("unknown tool");
        assert_eq!(err.code, rmcp::model::ErrorCode::INVALID_PARAMS);
        assert!(err.message.contains("\"getUser\""), "{}", err.message);
    }

    #[test]
    fn get_user_by_id_returns_the_record() {
        let user = success(run(GET_USER_BY_ID, json!({ "id": "456" })));
        let expected = serde_json::to_value(data::user_by_id("456")).expect("json");
        assert_eq!(user, expected);
        assert_eq!(user["id"], "456");
    }

    #[test]
    fn bad_ids_are_explained() {
        let cases = [
            (json!({}), "missing required argument \"id\""),
            (
                json!({ "id": 456 }),
                "argument \"id\" must be a string, got number",
            ),
            (
                json!({ "id": null }),
                "argument \"id\" must be a string, got null",
            ),
            (
                json!({ "id": ["456"] }),
                "argument \"id\" must be a string, got array",
            ),
            (json!({ "id": "" }), "argument \"id\" must not be empty"),
            (json!({ "id": "99999" }), "no user with id \"99999\""),
            (
                json!({ "id": "456", "verbose": true }),
                "unknown argument \"verbose\"; accepted arguments: \"id\"",
            ),
        ];
        for tool in [GET_USER_BY_ID, GET_USER_PREFERENCES] {
            for (arguments, message) in &cases {
                assert_eq!(
                    error_text(&run(tool, arguments.clone())),
                    *message,
                    "{tool}"
                );
            }
        }
        let no_arguments = call(GET_USER_BY_ID, None).expect("known tool");
        assert_eq!(
            error_text(&no_arguments),
            "missing required argument \"id\""
        );
    }

    #[test]
    fn preferences_have_the_contract_shape() {
        let prefs = success(run(GET_USER_PREFERENCES, json!({ "id": "456" })));
        let keys: Vec<&str> = prefs
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "userId",
                "favoriteCategories",
                "preferredBrands",
                "priceRange",
                "newsletter"
            ]
        );
        assert_eq!(prefs["userId"], "456");
        let user = data::user_by_id("456").expect("exists");
        assert_eq!(
            prefs["favoriteCategories"],
            json!(user.preferences.favorite_categories)
        );
        assert!(prefs["priceRange"]["min"].is_number() && prefs["priceRange"]["max"].is_number());
        assert!(prefs["newsletter"].is_boolean());
    }

    #[test]
    fn search_defaults_and_limits() {
        let found = success(run(SEARCH_USERS, json!({ "query": "  LONDON " })));
        assert_eq!(found["query"], "LONDON");
        let total = found["total"].as_u64().expect("total");
        let users = found["users"].as_array().expect("users");
        assert!(total as usize >= users.len());
        assert!(users.len() <= DEFAULT_LIMIT as usize);
        assert!(users.iter().all(|u| u["city"] == "London"));

        let limited = success(run(SEARCH_USERS, json!({ "query": "a", "limit": 3 })));
        assert_eq!(limited["users"].as_array().map(Vec::len), Some(3));
        let integral_float = success(run(SEARCH_USERS, json!({ "query": "a", "limit": 3.0 })));
        assert_eq!(integral_float["users"].as_array().map(Vec::len), Some(3));

        let cases = [
            (json!({}), "missing required argument \"query\""),
            (
                json!({ "query": 7 }),
                "argument \"query\" must be a string, got number",
            ),
            (
                json!({ "query": "   " }),
                "argument \"query\" must contain more than whitespace",
            ),
            (
                json!({ "query": "a", "limit": 0 }),
                "argument \"limit\" must be between 1 and 100, got 0",
            ),
            (
                json!({ "query": "a", "limit": 101 }),
                "argument \"limit\" must be between 1 and 100, got 101",
            ),
            (
                json!({ "query": "a", "limit": 2.5 }),
                "argument \"limit\" must be an integer, got 2.5",
            ),
            (
                json!({ "query": "a", "limit": "5" }),
                "argument \"limit\" must be an integer, got string",
            ),
        ];
        for (arguments, message) in cases {
            assert_eq!(error_text(&run(SEARCH_USERS, arguments)), message);
        }
    }

    #[test]
    fn list_pages_and_filters() {
        let page = success(run(LIST_USERS, json!({})));
        assert_eq!(page["total"], data::USER_COUNT);
        assert_eq!(page["offset"], 0);
        assert_eq!(page["limit"], DEFAULT_LIMIT);
        assert_eq!(page["users"][0]["id"], "1");
        assert_eq!(
            page["users"].as_array().map(Vec::len),
            Some(DEFAULT_LIMIT as usize)
        );

        let page = success(run(LIST_USERS, json!({ "offset": 495, "limit": 100 })));
        assert_eq!(page["users"].as_array().map(Vec::len), Some(5));

        let platinum = success(run(LIST_USERS, json!({ "tier": "platinum", "limit": 100 })));
        let users = platinum["users"].as_array().expect("users");
        assert!(!users.is_empty());
        assert!(users.iter().all(|u| u["membershipTier"] == "platinum"));

        let germans = success(run(
            LIST_USERS,
            json!({ "country": "germany", "limit": null }),
        ));
        assert!(
            germans["users"]
                .as_array()
                .expect("users")
                .iter()
                .all(|u| u["country"] == "Germany")
        );

        let cases = [
            (
                json!({ "offset": -1 }),
                "argument \"offset\" must be at least 0, got -1",
            ),
            (
                json!({ "tier": "diamond" }),
                concat!(
                    "argument \"tier\" must be one of ",
                    "\"bronze\", \"silver\", \"gold\", \"platinum\", got \"diamond\"",
                ),
            ),
            (
                json!({ "tier": 1 }),
                "argument \"tier\" must be a string, got number",
            ),
            (
                json!({ "country": "" }),
                "argument \"country\" must not be empty",
            ),
            (
                json!({ "page": 2 }),
                concat!(
                    "unknown argument \"page\"; accepted arguments: ",
                    "\"offset\", \"limit\", \"tier\", \"country\"",
                ),
            ),
        ];
        for (arguments, message) in cases {
            assert_eq!(error_text(&run(LIST_USERS, arguments)), message);
        }
    }
}
