//! Self-contained tool schemas for clients that reject references: `$ref`s to the
//! schema's own `$defs` (or `definitions`) replaced by what they name, the definitions
//! then dropped (`inline_schema_refs`).
//!
//! A schema is left exactly as the backend wrote it, with the reason, when inlining
//! cannot be faithful or safe: a recursive definition (it has no finite inline form), a
//! reference outside the schema's own definitions, one that names nothing, or an inlined
//! form past [`MAX_INLINED_BYTES`] (references let a small schema stand for a huge one).
//!
//! Invariant: an inlined schema accepts exactly the instances its original did; a
//! schema is either fully inlined or untouched.

use serde_json::{Map, Value};

/// The largest inlined schema, in bytes of JSON; past it the original stays.
pub const MAX_INLINED_BYTES: usize = 256 * 1024;
/// The deepest chain of references followed.
const MAX_DEPTH: usize = 32;

/// What inlining `schema` came to.
#[derive(Debug, PartialEq)]
pub enum Inlined {
    /// It had no references to inline.
    Unchanged,
    /// Its self-contained form.
    SelfContained(Map<String, Value>),
    /// It stays as it is, for this reason.
    Kept(String),
}

/// Inlines `schema`'s references to its own definitions.
pub fn inline(schema: &Map<String, Value>) -> Inlined {
    if !schema.values().any(has_ref) && !schema.get("$ref").is_some_and(Value::is_string) {
        return Inlined::Unchanged;
    }
    // Identifiers change what a reference means, and copies would repeat them.
    let whole = Value::Object(schema.clone());
    for keyword in [
        "$id",
        "$anchor",
        "$dynamicRef",
        "$dynamicAnchor",
        "$recursiveRef",
    ] {
        if names_keyword(&whole, keyword, true) {
            return Inlined::Kept(format!(
                "it uses {keyword}, whose meaning inlining could change"
            ));
        }
    }
    // Before 2019-09 the keywords beside a `$ref` are ignored; since, they apply too.
    let siblings_apply = schema
        .get("$schema")
        .and_then(Value::as_str)
        .is_none_or(|s| s.contains("2019-09") || s.contains("2020-12"));
    let defs = Defs {
        defs: schema.get("$defs").and_then(Value::as_object),
        definitions: schema.get("definitions").and_then(Value::as_object),
        siblings_apply,
    };
    let root: Map<String, Value> = schema
        .iter()
        .filter(|(k, _)| k.as_str() != "$defs" && k.as_str() != "definitions")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut budget = MAX_INLINED_BYTES;
    match resolve(&Value::Object(root), &defs, &mut Vec::new(), &mut budget) {
        Ok(Value::Object(out)) => Inlined::SelfContained(out),
        Ok(_) => {
            Inlined::Kept("its root reference names something other than an object schema".into())
        }
        Err(why) => Inlined::Kept(why),
    }
}

struct Defs<'a> {
    defs: Option<&'a Map<String, Value>>,
    definitions: Option<&'a Map<String, Value>>,
    /// Keywords beside a `$ref` apply (2019-09 and later, and MCP's default 2020-12 when
    /// no `$schema` says otherwise).
    siblings_apply: bool,
}

impl Defs<'_> {
    /// The definition a local reference names (`#/$defs/Name`, `#/definitions/Name`).
    fn find(&self, reference: &str) -> Result<&Value, String> {
        let (table, name) = if let Some(name) = reference.strip_prefix("#/$defs/") {
            (self.defs, name)
        } else if let Some(name) = reference.strip_prefix("#/definitions/") {
            (self.definitions, name)
        } else {
            return Err(format!(
                "reference {reference:?} points outside the schema's own definitions"
            ));
        };
        // JSON Pointer escapes (RFC 6901).
        let name = name.replace("~1", "/").replace("~0", "~");
        let target = table
            .and_then(|t| t.get(&name))
            .ok_or_else(|| format!("reference {reference:?} names no definition"))?;
        if !target.is_object() && !target.is_boolean() {
            return Err(format!(
                "reference {reference:?} names something that is not a schema"
            ));
        }
        Ok(target)
    }
}

/// Keywords whose values are data, not schemas: never read for references.
const DATA: [&str; 4] = ["enum", "const", "default", "examples"];

fn has_ref(value: &Value) -> bool {
    names_keyword(value, "$ref", false)
}

/// Whether `keyword` is a member (string-valued, unless `anywhere`) somewhere in the
/// schema positions of `value`.
fn names_keyword(value: &Value, keyword: &str, anywhere: bool) -> bool {
    match value {
        Value::Object(map) => {
            map.get(keyword).is_some_and(|v| anywhere || v.is_string())
                || map
                    .iter()
                    .filter(|(k, _)| !DATA.contains(&k.as_str()))
                    .any(|(_, v)| names_keyword(v, keyword, anywhere))
        }
        Value::Array(items) => items.iter().any(|v| names_keyword(v, keyword, anywhere)),
        _ => false,
    }
}

/// `value` with every reference replaced, `stack` the references being expanded (a
/// repeat is recursion), `budget` the bytes the inlined form may still take (every
/// key, bracket and value is charged, and each expansion before it is made).
fn resolve(
    value: &Value,
    defs: &Defs<'_>,
    stack: &mut Vec<String>,
    budget: &mut usize,
) -> Result<Value, String> {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                if stack.contains(reference) {
                    return Err(format!(
                        "the definition {reference:?} refers to itself (a recursive schema has no inline form)"
                    ));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("references nest deeper than {MAX_DEPTH}"));
                }
                charge(budget, 16)?;
                let target = defs.find(reference)?;
                stack.push(reference.clone());
                let expanded = resolve(target, defs, stack, budget)?;
                stack.pop();
                if !defs.siblings_apply {
                    return Ok(expanded);
                }
                // Keywords beside `$ref` apply too: kept beside the target in an
                // `allOf`, unless there are none.
                let mut siblings = Map::new();
                for (k, v) in map.iter().filter(|(k, _)| k.as_str() != "$ref") {
                    charge(budget, k.len() + 4)?;
                    siblings.insert(k.clone(), member(k, v, defs, stack, budget)?);
                }
                if siblings.is_empty() {
                    return Ok(expanded);
                }
                siblings.insert("allOf".into(), Value::Array(vec![expanded]));
                return Ok(Value::Object(siblings));
            }
            charge(budget, 2)?;
            let mut out = Map::new();
            for (k, v) in map {
                charge(budget, k.len() + 4)?;
                out.insert(k.clone(), member(k, v, defs, stack, budget)?);
            }
            Ok(Value::Object(out))
        }
        Value::Array(items) => {
            charge(budget, 2 + items.len())?;
            Ok(Value::Array(
                items
                    .iter()
                    .map(|v| resolve(v, defs, stack, budget))
                    .collect::<Result<_, _>>()?,
            ))
        }
        Value::String(text) => {
            charge(budget, text.len() + 2)?;
            Ok(value.clone())
        }
        other => {
            charge(budget, 8)?;
            Ok(other.clone())
        }
    }
}

/// A member of a schema object: data keywords as they are (charged whole), the rest
/// resolved.
fn member(
    key: &str,
    value: &Value,
    defs: &Defs<'_>,
    stack: &mut Vec<String>,
    budget: &mut usize,
) -> Result<Value, String> {
    if DATA.contains(&key) {
        charge(budget, serde_json::to_string(value).map_or(0, |t| t.len()))?;
        return Ok(value.clone());
    }
    resolve(value, defs, stack, budget)
}

fn charge(budget: &mut usize, bytes: usize) -> Result<(), String> {
    *budget = budget
        .checked_sub(bytes)
        .ok_or_else(|| format!("the inlined schema would exceed {MAX_INLINED_BYTES} bytes"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn references_to_defs_are_replaced_and_the_defs_dropped() {
        let schema = object(json!({
            "type": "object",
            "properties": {
                "billing": {"$ref": "#/$defs/address"},
                "shipping": {"$ref": "#/$defs/address", "description": "Where it goes"},
                "items": {"type": "array", "items": {"$ref": "#/definitions/item"}}
            },
            "$defs": {"address": {"type": "object", "properties": {"city": {"type": "string"}}}},
            "definitions": {"item": {"type": "string", "minLength": 1}}
        }));
        let Inlined::SelfContained(out) = inline(&schema) else {
            panic!("not inlined")
        };
        assert_eq!(
            Value::Object(out),
            json!({
                "type": "object",
                "properties": {
                    "billing": {"type": "object", "properties": {"city": {"type": "string"}}},
                    "shipping": {"description": "Where it goes", "allOf": [
                        {"type": "object", "properties": {"city": {"type": "string"}}}
                    ]},
                    "items": {"type": "array", "items": {"type": "string", "minLength": 1}}
                }
            })
        );
    }

    #[test]
    fn a_schema_without_references_is_unchanged() {
        let schema = object(json!({"type": "object", "$defs": {"unused": {"type": "integer"}}}));
        assert_eq!(inline(&schema), Inlined::Unchanged);
    }

    #[test]
    fn nested_references_resolve_through_each_other() {
        let schema = object(json!({
            "properties": {"a": {"$ref": "#/$defs/outer"}},
            "$defs": {
                "outer": {"type": "object", "properties": {"b": {"$ref": "#/$defs/inner"}}},
                "inner": {"enum": ["x", "y"]},
                "with~1slash": {"type": "null"}
            }
        }));
        let Inlined::SelfContained(out) = inline(&schema) else {
            panic!("not inlined")
        };
        assert_eq!(
            out["properties"]["a"]["properties"]["b"],
            json!({"enum": ["x", "y"]})
        );
        let escaped = object(json!({
            "properties": {"n": {"$ref": "#/$defs/with~1slash"}},
            "$defs": {"with/slash": {"type": "null"}}
        }));
        let Inlined::SelfContained(out) = inline(&escaped) else {
            panic!("not inlined")
        };
        assert_eq!(out["properties"]["n"], json!({"type": "null"}));
    }

    #[test]
    fn recursive_external_missing_and_huge_schemas_stay_as_they_are() {
        let recursive = object(json!({
            "properties": {"tree": {"$ref": "#/$defs/node"}},
            "$defs": {"node": {"type": "object", "properties": {
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}
            }}}
        }));
        let Inlined::Kept(why) = inline(&recursive) else {
            panic!("inlined a recursive schema")
        };
        assert!(why.contains("refers to itself"), "{why}");
        let external = object(json!({"properties": {"a": {"$ref": "https://example.com/s.json"}}}));
        assert!(matches!(inline(&external), Inlined::Kept(w) if w.contains("outside")));
        let missing = object(json!({"properties": {"a": {"$ref": "#/$defs/nope"}}}));
        assert!(matches!(inline(&missing), Inlined::Kept(w) if w.contains("names no definition")));
        // Each level doubles the inlined size: 2^20 copies of the leaf.
        let mut defs = Map::new();
        defs.insert(
            "l0".into(),
            json!({"type": "string", "description": "x".repeat(64)}),
        );
        for i in 1..=20 {
            let below = format!("#/$defs/l{}", i - 1);
            defs.insert(
                format!("l{i}"),
                json!({"properties": {"a": {"$ref": below}, "b": {"$ref": below}}}),
            );
        }
        let bomb = object(json!({"properties": {"x": {"$ref": "#/$defs/l20"}}, "$defs": defs}));
        assert!(matches!(inline(&bomb), Inlined::Kept(w) if w.contains("exceed")));
        // Arrays and long keys are charged too (each level doubles the copies).
        let mut defs = Map::new();
        defs.insert("l0".into(), json!({"anyOf": [true, true, true]}));
        for i in 1..=30 {
            let below = format!("#/$defs/l{}", i - 1);
            defs.insert(
                format!("l{i}"),
                json!({"anyOf": [{"$ref": below}, {"$ref": below}]}),
            );
        }
        let arrays = object(json!({"properties": {"x": {"$ref": "#/$defs/l30"}}, "$defs": defs}));
        assert!(matches!(inline(&arrays), Inlined::Kept(w) if w.contains("exceed")));
        let key = "k".repeat(60_000);
        let mut defs = Map::new();
        defs.insert("l0".into(), json!({"properties": {key: {}}}));
        for i in 1..=13 {
            let below = format!("#/$defs/l{}", i - 1);
            defs.insert(
                format!("l{i}"),
                json!({"allOf": [{"$ref": below}, {"$ref": below}]}),
            );
        }
        let keys = object(json!({"properties": {"x": {"$ref": "#/$defs/l13"}}, "$defs": defs}));
        assert!(matches!(inline(&keys), Inlined::Kept(w) if w.contains("exceed")));
        // A definition that is not a schema.
        let data = object(json!({"properties": {"a": {"$ref": "#/$defs/d"}}, "$defs": {"d": [1]}}));
        assert!(matches!(inline(&data), Inlined::Kept(w) if w.contains("not a schema")));
    }

    #[test]
    fn data_identifiers_and_dialects_are_respected() {
        // A `$ref` inside data is data.
        let schema = object(json!({
            "properties": {"a": {"const": {"$ref": "#/$defs/x"}}, "b": {"$ref": "#/$defs/x"}},
            "$defs": {"x": {"type": "string"}}
        }));
        let Inlined::SelfContained(out) = inline(&schema) else {
            panic!("not inlined")
        };
        assert_eq!(
            out["properties"]["a"],
            json!({"const": {"$ref": "#/$defs/x"}})
        );
        assert_eq!(out["properties"]["b"], json!({"type": "string"}));
        // Identifiers: kept as written.
        for keyword in ["$id", "$anchor", "$dynamicRef"] {
            let schema = object(json!({
                "properties": {"a": {"$ref": "#/$defs/x"}},
                "$defs": {"x": {keyword: "x", "type": "string"}}
            }));
            assert!(
                matches!(inline(&schema), Inlined::Kept(w) if w.contains(keyword)),
                "{keyword}"
            );
        }
        // draft-07: keywords beside `$ref` are ignored, so they are dropped, not added.
        let draft7 = object(json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "properties": {"a": {"$ref": "#/definitions/x", "minLength": 3}},
            "definitions": {"x": {"type": "string"}}
        }));
        let Inlined::SelfContained(out) = inline(&draft7) else {
            panic!("not inlined")
        };
        assert_eq!(out["properties"]["a"], json!({"type": "string"}));
    }
}
