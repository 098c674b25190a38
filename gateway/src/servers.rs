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
    #[schema(value_type = Option<String>)]
    pub tool_search: Option<Mode>,
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
