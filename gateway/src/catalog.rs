//! The merged tool table: an immutable snapshot built from every upstream's last-known
//! tools and swapped atomically (readers never lock). `tools/list` is served from it and
//! `tools/call` routes through it with one hash probe.
//!
//! Naming rule: a tool keeps its original name when no other upstream offers the same
//! name. Names that collide are all qualified as `<service>__<tool>`; the qualified form
//! is accepted for every tool, colliding or not, so a client can always be explicit. A
//! name only changes when another service starts or stops offering the same name.
//! Qualified names stay inside `^[a-zA-Z0-9_-]{1,64}$` (what LLM function-calling APIs
//! accept): other characters become `_`, and an over-long name is shortened with a hash
//! suffix that keeps it unique. Definitions are passed through unchanged except `name`.

use std::{collections::HashMap, sync::Arc};

use rmcp::model::Tool;

use crate::upstream::Service;

/// Separator between service and tool in a qualified name. Service names may not
/// contain it (see `registry::validate_name`), so the first occurrence splits cleanly.
pub const SEPARATOR: &str = "__";
const MAX_NAME: usize = 64;

/// Where a public tool name leads.
#[derive(Clone)]
pub struct Route {
    pub service: Arc<Service>,
    /// The tool's name at the upstream.
    pub original: Arc<str>,
    /// The tool declares itself read-only or idempotent: a failed call may be repeated.
    pub retry_safe: bool,
}

/// What a name resolves to.
pub enum Lookup<'a> {
    Found(&'a Route),
    /// Several services offer this name; the client must use a qualified one.
    Ambiguous(&'a [String]),
    Unknown,
}

#[derive(Default)]
pub struct Catalog {
    /// Public definitions, in a stable order (by service, then upstream order).
    tools: Vec<Tool>,
    /// Public name → index in `tools`.
    index: HashMap<String, usize>,
    routes: HashMap<String, Route>,
    ambiguous: HashMap<String, Vec<String>>,
}

impl Catalog {
    /// Builds the snapshot from upstreams (any order; sorted by name here).
    pub fn build(upstreams: &[Arc<Service>]) -> Self {
        let mut ups: Vec<&Arc<Service>> = upstreams.iter().collect();
        ups.sort_by(|a, b| a.name.cmp(&b.name));
        let snapshots: Vec<(&Arc<Service>, Arc<Vec<Tool>>)> =
            ups.into_iter().map(|u| (u, u.tools())).collect();

        let mut offered_by: HashMap<&str, usize> = HashMap::new();
        for (_, tools) in &snapshots {
            let mut seen = std::collections::HashSet::new();
            for t in tools.iter() {
                if seen.insert(t.name.as_ref()) {
                    *offered_by.entry(t.name.as_ref()).or_default() += 1;
                }
            }
        }

        let mut catalog = Catalog::default();
        for (upstream, tools) in &snapshots {
            let mut seen = std::collections::HashSet::new();
            for t in tools.iter() {
                if !seen.insert(t.name.as_ref()) {
                    continue; // an upstream listing one name twice: first wins
                }
                let qualified = qualify(&upstream.name, &t.name);
                let retry_safe = t.annotations.as_ref().is_some_and(|a| {
                    a.read_only_hint == Some(true) || a.idempotent_hint == Some(true)
                });
                let route = Route {
                    service: Arc::clone(upstream),
                    original: Arc::from(t.name.as_ref()),
                    retry_safe,
                };
                let public = if offered_by[t.name.as_ref()] > 1 {
                    catalog
                        .ambiguous
                        .entry(t.name.to_string())
                        .or_default()
                        .push(qualified.clone());
                    qualified.clone()
                } else {
                    catalog.routes.insert(t.name.to_string(), route.clone());
                    t.name.to_string()
                };
                catalog.routes.entry(qualified).or_insert(route);
                let mut def = t.clone();
                catalog.index.insert(public.clone(), catalog.tools.len());
                def.name = public.into();
                catalog.tools.push(def);
            }
        }
        catalog
    }

    pub fn tools(&self) -> &[Tool] {
        &self.tools
    }

    pub fn lookup(&self, name: &str) -> Lookup<'_> {
        if let Some(route) = self.routes.get(name) {
            return Lookup::Found(route);
        }
        match self.ambiguous.get(name) {
            Some(choices) => Lookup::Ambiguous(choices),
            None => Lookup::Unknown,
        }
    }

    /// The public definition of a tool, by public name.
    pub fn tool(&self, name: &str) -> Option<&Tool> {
        self.index.get(name).map(|i| &self.tools[*i])
    }

    /// Public names of one upstream's tools, paired with their original names.
    pub fn names_of(&self, service: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .tools
            .iter()
            .filter_map(|t| match self.routes.get(t.name.as_ref()) {
                Some(r) if &*r.service.name == service => {
                    Some((t.name.to_string(), r.original.to_string()))
                }
                _ => None,
            })
            .collect();
        out.sort();
        out
    }
}

/// `<service>__<tool>`, sanitized to `[a-zA-Z0-9_-]` and at most 64 characters.
pub fn qualify(service: &str, tool: &str) -> String {
    let raw = format!("{service}{SEPARATOR}{tool}");
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.len() <= MAX_NAME && clean == raw {
        return clean;
    }
    // Sanitizing or shortening could make two names equal: a hash of the exact original
    // keeps them apart.
    let hash = format!("{:08x}", fnv1a(raw.as_bytes()) as u32);
    let keep = MAX_NAME.min(clean.len() + 1 + hash.len()) - hash.len() - 1;
    format!("{}_{hash}", &clean[..keep.min(clean.len())])
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }

    #[test]
    fn plain_names_qualify_readably() {
        assert_eq!(
            qualify("shopping-service", "getProductById"),
            "shopping-service__getProductById"
        );
    }

    #[test]
    fn odd_or_long_names_stay_valid_and_distinct() {
        let a = qualify("svc", "get.product");
        let b = qualify("svc", "get/product");
        assert!(valid(&a) && valid(&b), "{a} {b}");
        assert_ne!(a, b);
        let long = "x".repeat(80);
        let c = qualify("svc", &long);
        let d = qualify("svc", &format!("{long}y"));
        assert!(valid(&c) && valid(&d), "{c} {d}");
        assert_ne!(c, d);
    }
}
