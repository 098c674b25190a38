//! Virtual servers: named subsets of the federation, each served at
//! `/servers/{name}/mcp` with everything `/mcp` offers. A [`Definition`] (from the
//! configuration's `[[virtual_servers]]`, or `POST /virtual-servers`) names the tools,
//! prompts and resources it exposes by service and glob, new names and descriptions for
//! some tools, and its own tool search; [`Definition::compile`] checks it and makes the
//! [`View`] the policy core applies on top of the credential's allow-list (a tool outside
//! the view is unknown there, exactly like one that does not exist).
//!
//! Invariant: a definition that compiles has valid names, unique new names, bounded
//! sizes, and renames only tools its patterns expose.

use std::{collections::BTreeMap, sync::Arc};

use serde::{Deserialize, Serialize};

use crate::{
    search::Mode,
    vocab::{Invalid, Pattern, Renamed, View, validate_name},
};

/// Patterns (tools, prompts and resources together) one definition may have.
pub const MAX_PATTERNS: usize = 256;
/// Renamed tools one definition may have.
pub const MAX_RENAMES: usize = 256;
/// The longest description a rename may give.
pub const MAX_DESCRIPTION: usize = 4096;
/// Virtual servers one gateway may have.
pub const MAX_SERVERS: usize = 256;
/// The service a composite's own call is logged and counted under: this, then the
/// virtual server's name.
pub const COMPOSITE_SERVICE: &str = "servers/";

/// The virtual server whose composites are logged under `service`, if it is such a name.
pub fn composite_server(service: &str) -> Option<&str> {
    service.strip_prefix(COMPOSITE_SERVICE)
}

/// A virtual server as configured or registered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    /// Its name: the endpoint is `/servers/{name}/mcp`.
    pub name: String,
    /// Tools it exposes: `SERVICE/GLOB` (`shopping-service/*`, `user-service/getUserById`;
    /// `*` any run of characters, `?` one), matched against the name a tool has at its
    /// service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// Prompts it exposes, the same way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<String>,
    /// Resources it exposes: `SERVICE/GLOB` matched against the resource's URI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// New names and descriptions, by the tool's name at its service (`getProductById`)
    /// or `SERVICE/TOOL` where two services share the name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rename: BTreeMap<String, Rename>,
    /// Tool search on this endpoint (`off`, `on`, `auto`, `refuse`); the gateway's
    /// `tool_search` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_search: Option<Mode>,
    /// Tool search's `auto` (and `refuse`) threshold on this endpoint, in tools; the
    /// gateway's `tool_search_max_tools` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tools: Option<usize>,
    /// Serve self-contained schemas here (`$ref`s inlined), whatever the gateway's
    /// `inline_schema_refs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_schema_refs: Option<bool>,
    /// Tools of its own whose call runs several of its tools at once and returns one
    /// structured result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub composites: Vec<Composite>,
}

/// A tool that fans one call out to several tools at once and gathers their results.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Composite {
    /// Its name on the virtual server.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its parameters: JSON Schemas by name. Each one a step's arguments name is
    /// required.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub input: BTreeMap<String, serde_json::Value>,
    /// What it runs, all at once.
    pub steps: Vec<Step>,
}

/// One tool a composite runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Its key in the composite's result.
    pub name: String,
    /// `SERVICE/TOOL`: a tool the virtual server exposes.
    pub tool: String,
    /// Its arguments: a string `"${param}"` is the composite's parameter, anything else
    /// is passed as written.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[schema(value_type = Object)]
    pub arguments: serde_json::Map<String, serde_json::Value>,
    /// The composite is an error when this step fails (otherwise the failure is
    /// reported in its place).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// Its own deadline, in milliseconds (the service's call timeout when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// Steps one composite may run.
pub const MAX_STEPS: usize = 16;
/// Composites one virtual server may have.
pub const MAX_COMPOSITES: usize = 32;
/// The longest step deadline, in milliseconds.
pub const MAX_STEP_TIMEOUT_MS: u64 = 600_000;

impl Step {
    /// Its tool: the service and the tool's name there.
    pub fn target(&self) -> (&str, &str) {
        self.tool.split_once('/').unwrap_or(("", &self.tool))
    }

    /// Its arguments with the composite's parameters (`input`) in place.
    pub fn arguments_from(
        &self,
        input: &serde_json::Map<String, serde_json::Value>,
    ) -> serde_json::Map<String, serde_json::Value> {
        self.arguments
            .iter()
            .filter_map(|(k, v)| match parameter(v) {
                Some(p) => input.get(p).map(|value| (k.clone(), value.clone())),
                None => Some((k.clone(), v.clone())),
            })
            .collect()
    }
}

/// The parameter a step argument names (`"${userId}"`), if it names one.
fn parameter(value: &serde_json::Value) -> Option<&str> {
    value.as_str()?.strip_prefix("${")?.strip_suffix('}')
}

impl Composite {
    /// The parameters its steps name: the ones a call must give.
    pub fn required(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .steps
            .iter()
            .flat_map(|s| s.arguments.values().filter_map(parameter))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    fn check(&self, index: usize, tools: &[Pattern]) -> Result<(), Invalid> {
        let field = format!("composites[{index}]");
        if !crate::vocab::valid_tool_name(&self.name)
            || crate::search::META.contains(&self.name.as_str())
        {
            return Err(Invalid(format!(
                "{field}.name: {:?} is not a tool name clients accept (^[a-zA-Z0-9_-]{{1,64}}$) or is a meta-tool of tool search",
                self.name
            )));
        }
        if self.steps.is_empty() || self.steps.len() > MAX_STEPS {
            return Err(Invalid(format!(
                "{field}.steps: 1 to {MAX_STEPS} steps, got {}",
                self.steps.len()
            )));
        }
        if self
            .description
            .as_ref()
            .is_some_and(|d| d.len() > MAX_DESCRIPTION)
        {
            return Err(Invalid(format!(
                "{field}.description: longer than {MAX_DESCRIPTION} bytes"
            )));
        }
        for (name, schema) in &self.input {
            if !schema.is_object() && !schema.is_boolean() {
                return Err(Invalid(format!(
                    "{field}.input[{name:?}]: a JSON Schema (an object)"
                )));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, step) in self.steps.iter().enumerate() {
            let field = format!("{field}.steps[{i}]");
            if step.name.is_empty() || step.name.len() > 64 || !names.insert(step.name.as_str()) {
                return Err(Invalid(format!(
                    "{field}.name: 1-64 characters, unique in the composite"
                )));
            }
            let Some((service, tool)) = step.tool.split_once('/') else {
                return Err(Invalid(format!(
                    "{field}.tool: {:?} is not SERVICE/TOOL",
                    step.tool
                )));
            };
            validate_name(service).map_err(|e| Invalid(format!("{field}.tool: {}", e.0)))?;
            if tool.is_empty()
                || !tools
                    .iter()
                    .any(|p| p.service == service && crate::vocab::glob(&p.glob, tool))
            {
                return Err(Invalid(format!(
                    "{field}.tool: {:?} is not among the tools the server exposes",
                    step.tool
                )));
            }
            for p in step.arguments.values().filter_map(parameter) {
                if !self.input.contains_key(p) {
                    return Err(Invalid(format!(
                        "{field}.arguments: \"${{{p}}}\" names no parameter of the composite's input"
                    )));
                }
            }
            if step
                .timeout_ms
                .is_some_and(|t| t == 0 || t > MAX_STEP_TIMEOUT_MS)
            {
                return Err(Invalid(format!(
                    "{field}.timeout_ms: 1 to {MAX_STEP_TIMEOUT_MS}"
                )));
            }
        }
        Ok(())
    }
}

/// A tool's new name and description on one virtual server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A definition checked and compiled.
#[derive(Debug)]
pub struct VirtualServer {
    pub definition: Definition,
    pub view: Arc<View>,
}

impl Definition {
    /// Checks the definition; its view, or what is wrong, naming the field.
    pub fn compile(&self) -> Result<VirtualServer, Invalid> {
        validate_name(&self.name).map_err(|e| Invalid(format!("name: {}", e.0)))?;
        let count = self.tools.len() + self.prompts.len() + self.resources.len();
        if count == 0 {
            return Err(Invalid(
                "a virtual server exposes something: give tools, prompts or resources \
                 (SERVICE/GLOB)"
                    .into(),
            ));
        }
        if count > MAX_PATTERNS {
            return Err(Invalid(format!(
                "{count} patterns: at most {MAX_PATTERNS} in all"
            )));
        }
        let parse = |field: &str, list: &[String]| {
            list.iter()
                .enumerate()
                .map(|(i, p)| {
                    Pattern::parse(p).map_err(|e| Invalid(format!("{field}[{i}]: {}", e.0)))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let tools = parse("tools", &self.tools)?;
        let prompts = parse("prompts", &self.prompts)?;
        let resources = parse("resources", &self.resources)?;
        if self.rename.len() > MAX_RENAMES {
            return Err(Invalid(format!(
                "rename: {} entries, at most {MAX_RENAMES}",
                self.rename.len()
            )));
        }
        let mut renames = Vec::new();
        let mut taken = std::collections::HashSet::new();
        for (key, rename) in &self.rename {
            let field = format!("rename[{key:?}]");
            let (service, original) = match key.split_once('/') {
                Some((service, original)) => {
                    validate_name(service).map_err(|e| Invalid(format!("{field}: {}", e.0)))?;
                    (Some(service.to_string()), original.to_string())
                }
                None => (None, key.clone()),
            };
            if original.is_empty() {
                return Err(Invalid(format!("{field}: names no tool")));
            }
            let exposed = tools.iter().any(|p| {
                service.as_deref().is_none_or(|s| s == p.service)
                    && crate::vocab::glob(&p.glob, &original)
            });
            if !exposed {
                return Err(Invalid(format!(
                    "{field}: the server exposes no such tool (its tools patterns do not match it)"
                )));
            }
            if rename.name.is_none() && rename.description.is_none() {
                return Err(Invalid(format!(
                    "{field}: give a name, a description or both"
                )));
            }
            if let Some(name) = &rename.name {
                if crate::search::META.contains(&name.as_str()) {
                    return Err(Invalid(format!(
                        "{field}.name: {name:?} is a meta-tool of tool search"
                    )));
                }
                if !crate::vocab::valid_tool_name(name) {
                    return Err(Invalid(format!(
                        "{field}.name: {name:?} is not a tool name clients accept (^[a-zA-Z0-9_-]{{1,64}}$)"
                    )));
                }
                if !taken.insert(name.clone()) {
                    return Err(Invalid(format!(
                        "{field}.name: {name:?} is given to another tool too"
                    )));
                }
            }
            if rename
                .description
                .as_ref()
                .is_some_and(|d| d.len() > MAX_DESCRIPTION)
            {
                return Err(Invalid(format!(
                    "{field}.description: longer than {MAX_DESCRIPTION} bytes"
                )));
            }
            renames.push(Renamed {
                service,
                original,
                name: rename.name.clone(),
                description: rename.description.clone(),
            });
        }
        if self.composites.len() > MAX_COMPOSITES {
            return Err(Invalid(format!(
                "composites: {} of them, at most {MAX_COMPOSITES}",
                self.composites.len()
            )));
        }
        for (i, composite) in self.composites.iter().enumerate() {
            composite.check(i, &tools)?;
            if !taken.insert(composite.name.clone()) {
                return Err(Invalid(format!(
                    "composites[{i}].name: {:?} is another tool's name here too",
                    composite.name
                )));
            }
        }
        Ok(VirtualServer {
            definition: self.clone(),
            view: Arc::new(View {
                server: self.name.clone(),
                tools,
                prompts,
                resources,
                renames,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn definition(v: serde_json::Value) -> Definition {
        serde_json::from_value(v).expect("definition")
    }

    #[test]
    fn a_definition_compiles_to_its_view() {
        let server = definition(json!({
            "name": "shop",
            "tools": ["shopping-service/*", "user-service/getUserById"],
            "rename": {"getProductById": {"name": "product", "description": "One product."}},
            "tool_search": "auto"
        }))
        .compile()
        .expect("compiles");
        let view = &server.view;
        assert_eq!(view.renamed("product"), Some((None, "getProductById")));
        assert!(
            view.rename_of("shopping-service", "getProductById")
                .is_some()
        );
        let allow = crate::vocab::Allow::within(None, Arc::clone(view));
        assert!(allow.tool("shopping-service", "getBasket"));
        assert!(allow.tool("user-service", "getUserById"));
        assert!(!allow.tool("user-service", "listUsers"));
        assert!(!allow.tool("files", "read_file"));
        assert!(!allow.prompt("shopping-service", "recommend_for_user"));
    }

    #[test]
    fn composites_are_checked_and_their_steps_take_the_parameters() {
        let server = definition(json!({
            "name": "crm", "tools": ["user-service/*", "shopping-service/getUserOrders"],
            "composites": [{"name": "overview", "input": {"userId": {"type": "string"}},
                "steps": [
                    {"name": "profile", "tool": "user-service/getUserById",
                     "arguments": {"id": "${userId}", "verbose": true}, "required": true},
                    {"name": "orders", "tool": "shopping-service/getUserOrders",
                     "arguments": {"userId": "${userId}"}, "timeout_ms": 500}
                ]}]
        }))
        .compile()
        .expect("compiles");
        let composite = &server.definition.composites[0];
        assert_eq!(composite.required(), ["userId"]);
        let input = json!({"userId": "42"})
            .as_object()
            .cloned()
            .expect("object");
        assert_eq!(
            serde_json::Value::Object(composite.steps[0].arguments_from(&input)),
            json!({"id": "42", "verbose": true})
        );
        assert_eq!(
            composite.steps[1].target(),
            ("shopping-service", "getUserOrders")
        );
        let refused = |v: serde_json::Value| definition(v).compile().expect_err("refused").0;
        let base = |steps: serde_json::Value| {
            json!({"name": "x", "tools": ["s/*"],
            "composites": [{"name": "c", "input": {"a": {}}, "steps": steps}]})
        };
        assert!(refused(base(json!([]))).contains("steps: 1 to"));
        assert!(refused(base(json!([{"name": "s", "tool": "other/t"}]))).contains("not among"));
        assert!(
            refused(base(
                json!([{"name": "s", "tool": "s/t", "arguments": {"x": "${b}"}}])
            ))
            .contains("names no parameter")
        );
        assert!(
            refused(base(
                json!([{"name": "s", "tool": "s/t"}, {"name": "s", "tool": "s/u"}])
            ))
            .contains("unique")
        );
        assert!(
            refused(base(json!([{"name": "s", "tool": "s/t", "timeout_ms": 0}])))
                .contains("timeout_ms")
        );
    }

    #[test]
    fn a_wrong_definition_says_which_field() {
        let refused = |v: serde_json::Value| definition(v).compile().expect_err("refused").0;
        assert!(refused(json!({"name": "a b", "tools": ["s/*"]})).starts_with("name:"));
        assert!(refused(json!({"name": "empty"})).contains("exposes something"));
        assert!(refused(json!({"name": "x", "tools": ["noslash"]})).starts_with("tools[0]"));
        assert!(refused(json!({"name": "x", "tools": ["s/"]})).starts_with("tools[0]"));
        let r = refused(json!({"name": "x", "tools": ["s/a*"], "rename": {"b": {"name": "c"}}}));
        assert!(r.contains("exposes no such tool"), "{r}");
        let r =
            refused(json!({"name": "x", "tools": ["s/*"], "rename": {"a": {"name": "bad name"}}}));
        assert!(r.contains("rename[\"a\"].name"), "{r}");
        let r = refused(json!({"name": "x", "tools": ["s/*"],
                               "rename": {"a": {"name": "c"}, "b": {"name": "c"}}}));
        assert!(r.contains("another tool"), "{r}");
        let r = refused(json!({"name": "x", "tools": ["s/*"], "rename": {"a": {}}}));
        assert!(r.contains("a name, a description or both"), "{r}");
        assert!(
            serde_json::from_value::<Definition>(json!({"name": "x", "tols": []})).is_err(),
            "unknown fields are refused"
        );
    }
}
