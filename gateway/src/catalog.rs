//! The merged tool table: an immutable snapshot built from every upstream's last-known
//! tools and swapped atomically (readers never lock). `tools/list` is served from it and
//! `tools/call` routes through it with one hash probe.
//!
//! Naming rule: a tool keeps its original name when no other upstream offers the same
//! name. Names that collide are all qualified as `<service>__<tool>`; the qualified form
//! is accepted for every tool, colliding or not, so a client can always be explicit. A
//! name only changes when another service starts or stops offering the same name. A
//! qualified name never shadows a tool's own name: should a backend call a tool
//! `inventory__get`, a colliding `get` of `inventory` is listed as `inventory__get-2`.
//! Qualified names stay inside `^[a-zA-Z0-9_-]{1,64}$` (what LLM function-calling APIs
//! accept): other characters become `_`, and an over-long name is shortened with a hash
//! suffix that keeps it unique. Definitions are passed through unchanged except `name`.
//!
//! Invariant: a catalog is immutable once built; readers never lock, and one naming rule
//! names every tool, prompt and resource.

use std::{collections::HashMap, sync::Arc};

use rmcp::model::{Prompt, Resource, ResourceTemplate, Tool};

use crate::{
    upstream::{Service, balance::fnv1a},
    vocab::{FastMap, ParamHeaders},
};

pub use crate::vocab::SEPARATOR;
const MAX_NAME: usize = 64;

/// `tool`'s input and output schemas with their references inlined; what kept one as
/// written, if anything did.
pub(crate) fn inline_schemas(tool: &mut Tool) -> Option<String> {
    use crate::schema::{Inlined, inline};
    let mut note = None;
    match inline(&tool.input_schema) {
        Inlined::SelfContained(schema) => tool.input_schema = Arc::new(schema),
        Inlined::Unchanged => {}
        Inlined::Kept(why) => note = Some(format!("input schema kept as written: {why}")),
    }
    if let Some(output) = &tool.output_schema {
        match inline(output) {
            Inlined::SelfContained(schema) => tool.output_schema = Some(Arc::new(schema)),
            Inlined::Unchanged => {}
            Inlined::Kept(why) => {
                let why = format!("output schema kept as written: {why}");
                note = Some(match note {
                    Some(first) => format!("{first}; {why}"),
                    None => why,
                });
            }
        }
    }
    note
}

/// Where a public tool name leads.
#[derive(Clone)]
pub struct Route {
    pub service: Arc<Service>,
    /// The tool's name at the upstream.
    pub original: Arc<str>,
    /// The tool declares itself read-only or idempotent: a failed call may be repeated.
    pub retry_safe: bool,
    /// The arguments that travel in `Mcp-Param-*` headers too (`x-mcp-header`
    /// annotations in the input schema, SEP-2243), if any.
    pub param_headers: Option<Arc<ParamHeaders>>,
    /// `original` as a JSON string, and as an `Mcp-Name` header value (base64 when it
    /// cannot travel bare, SEP-2243; `None` if it cannot be one at all): what the
    /// pass-through path writes into every call, made once per catalog.
    pub json_name: Arc<str>,
    pub name_header: Option<http::HeaderValue>,
}

/// A name (or URI) at the upstream, with the forms the pass-through path writes of it
/// into every request: made once per catalog, not per call.
pub struct WireName {
    pub original: Arc<str>,
    /// As a JSON string.
    pub json: Arc<str>,
    /// As an `Mcp-Name` value: base64 when it cannot travel bare (SEP-2243).
    pub header: Option<http::HeaderValue>,
}

impl WireName {
    pub fn of(original: &str) -> Self {
        WireName {
            original: Arc::from(original),
            // A `str` always serializes.
            json: Arc::from(serde_json::to_string(original).unwrap_or_default()),
            header: http::HeaderValue::from_str(&crate::vocab::header_value(original)).ok(),
        }
    }
}

/// What a name resolves to.
pub enum Lookup<'a> {
    Found(&'a Route),
    /// Several services offer this name; the client must use a qualified one.
    Ambiguous(&'a [String]),
    Unknown,
}

/// One merged list (tools, prompts or resources) under the naming rule.
pub struct Merged<T> {
    /// Public definitions, in a stable order (by service, then upstream order).
    items: Vec<T>,
    /// Where each item comes from (parallel to `items`).
    origins: Vec<Origin>,
    /// Public key → index in `items`.
    index: FastMap<String, usize>,
    /// Public and qualified keys → where they lead.
    routes: FastMap<String, Route>,
    ambiguous: FastMap<String, Vec<String>>,
    /// Service name → indices of its items in `items`.
    by_service: FastMap<Arc<str>, Vec<usize>>,
}

/// An item's public key and its name at its service.
struct Origin {
    public: String,
    original: Arc<str>,
}

impl<T> Default for Merged<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            origins: Vec::new(),
            index: FastMap::default(),
            routes: FastMap::default(),
            ambiguous: FastMap::default(),
            by_service: FastMap::default(),
        }
    }
}

/// How one kind of entry is named and renamed.
struct Naming<T> {
    key: fn(&T) -> &str,
    /// The name an entry is listed under when it stands alone: its own, or one mapped
    /// into the allowed characters.
    public: fn(&str) -> std::borrow::Cow<'_, str>,
    rename: fn(&mut T, String),
    qualify: fn(&str, &str) -> String,
    /// The `n`th alternative to a qualified name that is already taken.
    variant: fn(&str, usize) -> String,
    retry_safe: fn(&T) -> bool,
    param_headers: fn(&T) -> Option<Arc<ParamHeaders>>,
    /// `key` lies in `service`'s qualified namespace (so no other service may hold it).
    in_namespace_of: fn(&str, &str) -> bool,
}

/// Who stands behind a service, for the naming rule: its owner, and when it first
/// offered what it offers (earlier keeps a bare name).
fn standing(service: &Service) -> (Option<Arc<str>>, u64) {
    let instances = service.instances();
    let owner = instances.first().and_then(|i| i.owner.clone());
    let since = instances
        .iter()
        .map(|i| match i.source {
            crate::upstream::Source::Config => 0,
            crate::upstream::Source::Registered => i.registered_at_ms,
        })
        .min()
        .unwrap_or(u64::MAX);
    (owner, since)
}

/// What one upstream entry is to the naming rule.
enum Slot {
    /// It may be held under this bare name.
    Bare(String),
    /// Its name (mapped) lies in another service's namespace: listed qualified only.
    Foreign(String),
    /// Its service lists the same name again: the first one counts.
    Twice,
}

impl<T: Clone> Merged<T> {
    /// The merged list of `sources` (in a stable order). The rule, for each name:
    ///
    /// - a name inside another service's qualified namespace (`<other>__...`) is never
    ///   held bare: its entry is listed qualified by its own service;
    /// - a name offered by one service is public as it is;
    /// - a name offered by services of several owners stays with the owner who offered
    ///   it first (by the service's first registration; configured services first):
    ///   the others' entries are listed qualified;
    /// - a name offered by several services of that one owner is ambiguous: all are
    ///   listed qualified, and the bare name answers with the choices.
    ///
    /// Linear in the number of entries (hash probes aside).
    fn build(sources: &[(&Arc<Service>, Vec<T>)], naming: Naming<T>) -> Self {
        let standings: Vec<(Option<Arc<str>>, u64)> =
            sources.iter().map(|(s, _)| standing(s)).collect();
        let slots: Vec<Vec<Slot>> = sources
            .iter()
            .map(|(service, items)| {
                let mut seen = std::collections::HashSet::new();
                items
                    .iter()
                    .map(|t| {
                        let key = (naming.public)((naming.key)(t)).into_owned();
                        if !seen.insert(key.clone()) {
                            return Slot::Twice;
                        }
                        let foreign = sources.iter().any(|(other, _)| {
                            other.name != service.name
                                && (naming.in_namespace_of)(&key, &other.name)
                        });
                        if foreign {
                            Slot::Foreign(key)
                        } else {
                            Slot::Bare(key)
                        }
                    })
                    .collect()
            })
            .collect();
        // Who holds each bare key: the sources offering it, narrowed to the owner who
        // came first.
        let mut offered_by: HashMap<&str, Vec<usize>> = HashMap::new();
        for (s, entries) in slots.iter().enumerate() {
            for slot in entries {
                if let Slot::Bare(key) = slot {
                    offered_by.entry(key.as_str()).or_default().push(s);
                }
            }
        }
        let holders: HashMap<&str, Vec<usize>> = offered_by
            .into_iter()
            .map(|(key, offering)| {
                let first = offering
                    .iter()
                    .copied()
                    .min_by_key(|s| (standings[*s].1, *s))
                    .expect("a key is offered by at least one source");
                let owner = standings[first].0.clone();
                let kept = offering
                    .into_iter()
                    .filter(|s| standings[*s].0 == owner)
                    .collect();
                (key, kept)
            })
            .collect();
        // Names held bare are public as they are; a qualified name never takes one (a
        // tool may be called `a__get` at its backend).
        let mut taken: std::collections::HashSet<String> = holders
            .iter()
            .filter(|(_, h)| h.len() == 1)
            .map(|(k, _)| k.to_string())
            .collect();
        let mut merged = Merged::default();
        let mut aliases = Vec::new();
        for (s, (service, items)) in sources.iter().enumerate() {
            for (t, slot) in items.iter().zip(&slots[s]) {
                let original = (naming.key)(t);
                let name = WireName::of(original);
                let route = Route {
                    service: Arc::clone(service),
                    original: name.original,
                    retry_safe: (naming.retry_safe)(t),
                    param_headers: (naming.param_headers)(t),
                    json_name: name.json,
                    name_header: name.header,
                };
                let public = match slot {
                    Slot::Twice => continue,
                    Slot::Bare(key) if holders[key.as_str()] == [s] => {
                        aliases.push(((naming.qualify)(&service.name, key), route.clone()));
                        key.clone()
                    }
                    Slot::Bare(key) | Slot::Foreign(key) => {
                        let qualified = (naming.qualify)(&service.name, key);
                        let mut public = qualified.clone();
                        let mut n = 2;
                        while !taken.insert(public.clone()) {
                            public = (naming.variant)(&qualified, n);
                            n += 1;
                        }
                        // A bare name several services of one owner hold answers with
                        // the choices.
                        if let Slot::Bare(key) = slot
                            && holders[key.as_str()].len() > 1
                            && holders[key.as_str()].contains(&s)
                        {
                            merged
                                .ambiguous
                                .entry(key.clone())
                                .or_default()
                                .push(public.clone());
                        }
                        aliases.push((qualified, route.clone()));
                        public
                    }
                };
                merged.routes.insert(public.clone(), route);
                let at = merged.items.len();
                merged.index.insert(public.clone(), at);
                merged
                    .by_service
                    .entry(Arc::clone(&service.name))
                    .or_default()
                    .push(at);
                let mut def = t.clone();
                if public != original {
                    (naming.rename)(&mut def, public.clone());
                }
                merged.items.push(def);
                merged.origins.push(Origin {
                    public,
                    original: Arc::from(original),
                });
            }
        }
        // The qualified form of every name is accepted too, unless it is some other
        // entry's public name, or a bare name several services offer (which must stay
        // refused as ambiguous rather than quietly lead elsewhere).
        for (qualified, route) in aliases {
            if !merged.ambiguous.contains_key(&qualified) {
                merged.routes.entry(qualified).or_insert(route);
            }
        }
        merged
    }

    pub fn items(&self) -> &[T] {
        &self.items
    }

    pub fn lookup(&self, key: &str) -> Lookup<'_> {
        if let Some(route) = self.routes.get(key) {
            return Lookup::Found(route);
        }
        match self.ambiguous.get(key) {
            Some(choices) => Lookup::Ambiguous(choices),
            None => Lookup::Unknown,
        }
    }

    pub fn get(&self, key: &str) -> Option<&T> {
        self.index.get(key).map(|i| &self.items[*i])
    }

    /// `service`'s entries: each public definition with its public key and its name at
    /// the service.
    pub fn of_service(&self, service: &str) -> impl Iterator<Item = (&T, &str, &str)> {
        self.by_service.get(service).into_iter().flatten().map(|i| {
            let origin = &self.origins[*i];
            (&self.items[*i], origin.public.as_str(), &*origin.original)
        })
    }

    /// How many entries `service` has in the list.
    pub fn count_of(&self, service: &str) -> usize {
        self.by_service.get(service).map_or(0, Vec::len)
    }

    /// The public key under which `service` offers `original`, if listed.
    pub fn public_key_of(&self, service: &str, original: &str) -> Option<&str> {
        self.of_service(service)
            .find(|(_, _, o)| *o == original)
            .map(|(_, public, _)| public)
    }
}

/// What the backends declare between them.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
pub struct Offered {
    pub prompts: bool,
    pub resources: bool,
    pub subscribe: bool,
    pub completions: bool,
    pub logging: bool,
    /// Some backend offers the tasks extension (SEP-2663; 2026-07-28 backends only).
    pub tasks: bool,
}

#[derive(Default)]
pub struct Catalog {
    tools: Merged<Tool>,
    prompts: Merged<Prompt>,
    resources: Merged<Resource>,
    /// Resource templates with the service that offers each (reads of URIs that are not
    /// listed are routed by matching these).
    templates: Vec<(Arc<Service>, ResourceTemplate)>,
    /// The services that declare `resources.subscribe`.
    subscribable: Vec<Arc<Service>>,
    offered: Offered,
    instructions: Vec<(String, String)>,
    /// The tools' search index, built on the first search of this snapshot.
    search: std::sync::OnceLock<crate::search::Index>,
    /// The JSON size of each tool's definition, and their sum (tool search's `auto`).
    sizes: std::sync::OnceLock<(Vec<usize>, usize)>,
    /// Tools whose schemas kept their references, by (service, name there): why.
    schema_notes: HashMap<(String, String), String>,
}

impl Catalog {
    /// Builds the snapshot from upstreams (any order; sorted by name here).
    pub fn build(upstreams: &[Arc<Service>]) -> Self {
        Self::build_with(upstreams, false)
    }

    /// [`Self::build`], the tools' schemas made self-contained when `inline_refs`
    /// (`inline_schema_refs`): a schema that cannot be is kept as written, and
    /// [`Self::schema_note`] says why.
    pub fn build_with(upstreams: &[Arc<Service>], inline_refs: bool) -> Self {
        let mut ups: Vec<&Arc<Service>> = upstreams.iter().collect();
        ups.sort_by(|a, b| a.name.cmp(&b.name));
        let mut schema_notes = HashMap::new();
        let tools: Vec<(&Arc<Service>, Vec<Tool>)> = ups
            .iter()
            .map(|u| {
                let mut tools = u.tools().to_vec();
                if inline_refs {
                    for tool in &mut tools {
                        if let Some(note) = inline_schemas(tool) {
                            schema_notes.insert((u.name.to_string(), tool.name.to_string()), note);
                        }
                    }
                }
                (*u, tools)
            })
            .collect();
        let extras: Vec<(&Arc<Service>, Arc<crate::upstream::Extras>)> =
            ups.iter().map(|u| (*u, u.extras())).collect();
        let prompts: Vec<(&Arc<Service>, Vec<Prompt>)> = extras
            .iter()
            .map(|(u, e)| (*u, e.prompts.clone()))
            .collect();
        let resources: Vec<(&Arc<Service>, Vec<Resource>)> = extras
            .iter()
            .map(|(u, e)| (*u, e.resources.clone()))
            .collect();
        let mut offered = Offered::default();
        let mut templates = Vec::new();
        let mut subscribable = Vec::new();
        let mut instructions = Vec::new();
        for (u, e) in &extras {
            let c = &e.capabilities;
            offered.prompts |= c.prompts.is_some();
            offered.resources |= c.resources.is_some();
            if c.resources
                .as_ref()
                .is_some_and(|r| r.subscribe == Some(true))
            {
                offered.subscribe = true;
                subscribable.push(Arc::clone(u));
            }
            offered.completions |= c.completions.is_some();
            offered.logging |= c.logging.is_some();
            offered.tasks |= c.supports_tasks();
            for t in &e.templates {
                templates.push((Arc::clone(u), t.clone()));
            }
            if let Some(text) = e.instructions.as_ref().filter(|t| !t.trim().is_empty()) {
                instructions.push((u.name.to_string(), text.clone()));
            }
        }
        Catalog {
            tools: Merged::build(
                &tools,
                Naming {
                    key: |t: &Tool| t.name.as_ref(),
                    public: tool_name,
                    rename: |t, n| t.name = n.into(),
                    qualify,
                    in_namespace_of: in_namespace,
                    variant: name_variant,
                    retry_safe: |t| {
                        t.annotations.as_ref().is_some_and(|a| {
                            a.read_only_hint == Some(true) || a.idempotent_hint == Some(true)
                        })
                    },
                    // The instance left out a tool whose annotations break the rules
                    // (`upstream::screen_tools`).
                    param_headers: |t| {
                        ParamHeaders::of(&t.input_schema)
                            .ok()
                            .flatten()
                            .map(Arc::new)
                    },
                },
            ),
            prompts: Merged::build(
                &prompts,
                Naming {
                    key: |p: &Prompt| p.name.as_str(),
                    public: |n| std::borrow::Cow::Borrowed(n),
                    rename: |p, n| p.name = n,
                    qualify,
                    in_namespace_of: in_namespace,
                    variant: name_variant,
                    retry_safe: |_| true,
                    param_headers: |_| None,
                },
            ),
            resources: Merged::build(
                &resources,
                Naming {
                    key: |r: &Resource| r.uri.as_str(),
                    public: |n| std::borrow::Cow::Borrowed(n),
                    rename: |r, n| r.uri = n,
                    qualify: qualify_uri,
                    in_namespace_of: |uri, service| {
                        uri.strip_prefix(URI_SCHEME)
                            .and_then(|rest| rest.strip_prefix(service))
                            .is_some_and(|rest| rest.starts_with('/'))
                    },
                    variant: |uri, n| format!("{uri}~{n}"),
                    retry_safe: |_| true,
                    param_headers: |_| None,
                },
            ),
            templates,
            subscribable,
            offered,
            instructions,
            search: std::sync::OnceLock::new(),
            sizes: std::sync::OnceLock::new(),
            schema_notes,
        }
    }

    /// Why `service`'s tool `original` kept its schema's references (with
    /// `inline_schema_refs`), if it did.
    pub fn schema_note(&self, service: &str, original: &str) -> Option<&str> {
        self.schema_notes
            .get(&(service.to_string(), original.to_string()))
            .map(String::as_str)
    }

    /// The JSON size of each tool's definition (positions of [`Self::tools`]) and the
    /// size of them all.
    pub fn tool_sizes(&self) -> (&[usize], usize) {
        let (sizes, total) = self.sizes.get_or_init(|| {
            let sizes: Vec<usize> = self
                .tools
                .items
                .iter()
                .map(|t| serde_json::to_vec(t).map_or(0, |v| v.len()))
                .collect();
            let total = sizes.iter().sum();
            (sizes, total)
        });
        (sizes, *total)
    }

    /// The search index of the tools (positions are those of [`Self::tools`]).
    pub fn search(&self) -> &crate::search::Index {
        self.search.get_or_init(|| {
            let mut services = vec![""; self.tools.items.len()];
            for (service, indices) in &self.tools.by_service {
                for i in indices {
                    services[*i] = service;
                }
            }
            let entries: Vec<crate::search::Entry<'_>> = self
                .tools
                .items
                .iter()
                .zip(services)
                .map(|(tool, service)| crate::search::Entry { tool, service })
                .collect();
            crate::search::Index::build(&entries)
        })
    }

    pub fn tools(&self) -> &[Tool] {
        self.tools.items()
    }

    pub fn lookup(&self, name: &str) -> Lookup<'_> {
        self.tools.lookup(name)
    }

    /// The public definition of a tool, by public name.
    pub fn tool(&self, name: &str) -> Option<&Tool> {
        self.tools.get(name)
    }

    pub fn prompts(&self) -> &Merged<Prompt> {
        &self.prompts
    }

    pub fn resources(&self) -> &Merged<Resource> {
        &self.resources
    }

    pub fn templates(&self) -> &[(Arc<Service>, ResourceTemplate)] {
        &self.templates
    }

    pub fn offered(&self) -> Offered {
        self.offered
    }

    /// Each service's `instructions`, by service.
    pub fn instructions(&self) -> &[(String, String)] {
        &self.instructions
    }

    /// Where a resource URI leads: a listed resource (by public or qualified URI), or a
    /// URI that one service's template matches (passed on unchanged).
    pub fn resource_route(&self, uri: &str) -> Option<(Arc<Service>, String)> {
        if let Lookup::Found(r) = self.resources.lookup(uri) {
            return Some((Arc::clone(&r.service), r.original.to_string()));
        }
        self.templates
            .iter()
            .find(|(_, t)| template_matches(&t.uri_template, uri))
            .map(|(s, _)| (Arc::clone(s), uri.to_string()))
    }

    /// Where a subscription to `uri` goes: the service that lists it or a template that
    /// matches it; failing that, the one service that declares `resources.subscribe`,
    /// if there is exactly one (a backend may announce updates of resources it does not
    /// list).
    pub fn subscribe_route(&self, uri: &str) -> Option<(Arc<Service>, String)> {
        self.resource_route(uri)
            .or_else(|| match self.subscribable.as_slice() {
                [only] => Some((Arc::clone(only), uri.to_string())),
                _ => None,
            })
    }

    /// One upstream's tools: each public definition with its name at the service.
    pub fn tools_of(&self, service: &str) -> impl Iterator<Item = (&Tool, &str)> {
        self.tools.of_service(service).map(|(t, _, o)| (t, o))
    }

    /// How many tools one upstream has in the table.
    pub fn tool_count(&self, service: &str) -> usize {
        self.tools.count_of(service)
    }
}

/// The scheme of qualified resource URIs.
const URI_SCHEME: &str = "mcp-gateway://";

pub use crate::vocab::valid_tool_name;

/// The name a tool is listed under: its own when valid, else one mapped into the
/// allowed characters deterministically (every other character becomes `_`, the length
/// is capped, and a hash of the exact original keeps mapped names apart). `/services`
/// shows both names.
pub fn tool_name(name: &str) -> std::borrow::Cow<'_, str> {
    if valid_tool_name(name) {
        return std::borrow::Cow::Borrowed(name);
    }
    let hash = format!("{:08x}", fnv1a(name.bytes()) as u32);
    let clean: String = name
        .chars()
        .take(MAX_NAME)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let keep = clean.len().min(MAX_NAME - hash.len() - 1);
    let stem = if keep == 0 { "tool" } else { &clean[..keep] };
    std::borrow::Cow::Owned(format!("{stem}_{hash}"))
}

/// `name` lies in `service`'s qualified namespace: `<service>__...`.
fn in_namespace(name: &str, service: &str) -> bool {
    name.strip_prefix(service)
        .is_some_and(|rest| rest.starts_with(SEPARATOR))
}

/// A colliding resource URI, qualified by service:
/// `mcp-gateway://<service>/<percent-encoded original URI>`.
pub fn qualify_uri(service: &str, uri: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(uri.as_bytes()).collect();
    format!("{URI_SCHEME}{service}/{encoded}")
}

/// Whether `uri` is an expansion of the RFC 6570 `template` (each `{...}` expression
/// matches a non-empty run of characters; literal parts must match exactly).
pub fn template_matches(template: &str, uri: &str) -> bool {
    let mut literals: Vec<&str> = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        literals.push(&rest[..open]);
        match rest[open..].find('}') {
            Some(close) => rest = &rest[open + close + 1..],
            None => return template == uri,
        }
    }
    literals.push(rest);
    if literals.len() == 1 {
        return template == uri;
    }
    let (first, last) = (literals[0], literals[literals.len() - 1]);
    let Some(mut body) = uri.strip_prefix(first) else {
        return false;
    };
    let Some(stripped) = body.strip_suffix(last) else {
        return false;
    };
    body = stripped;
    // Middle literals in order, each after a non-empty variable part.
    for lit in &literals[1..literals.len() - 1] {
        match body.get(1..).and_then(|b| b.find(lit)) {
            Some(at) => body = &body[1 + at + lit.len()..],
            None => return false,
        }
    }
    !body.is_empty()
}

/// `name` with `-n` appended, still within 64 characters.
fn name_variant(name: &str, n: usize) -> String {
    let suffix = format!("-{n}");
    let keep = name.len().min(MAX_NAME - suffix.len());
    format!("{}{suffix}", &name[..keep])
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
    let hash = format!("{:08x}", fnv1a(raw.bytes()) as u32);
    let keep = MAX_NAME.min(clean.len() + 1 + hash.len()) - hash.len() - 1;
    format!("{}_{hash}", &clean[..keep.min(clean.len())])
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
    fn uri_templates_match_their_expansions_only() {
        assert!(template_matches(
            "test://template/{id}/data",
            "test://template/42/data"
        ));
        assert!(!template_matches(
            "test://template/{id}/data",
            "test://template//data"
        ));
        assert!(!template_matches(
            "test://template/{id}/data",
            "test://other/42/data"
        ));
        assert!(template_matches("file:///{path}", "file:///a/b.txt"));
        assert!(template_matches("db://{table}/{row}", "db://users/7"));
        assert!(!template_matches("db://{table}/{row}", "db://users"));
        assert!(template_matches("plain://x", "plain://x"));
    }

    #[test]
    fn colliding_uris_qualify_reversibly() {
        let q = qualify_uri("svc", "test://static-text?a=b");
        assert_eq!(q, "mcp-gateway://svc/test%3A%2F%2Fstatic-text%3Fa%3Db");
    }

    #[test]
    fn a_name_is_written_once_as_json_and_as_a_header() {
        let plain = WireName::of("getProductById");
        assert_eq!(&*plain.json, r#""getProductById""#);
        assert_eq!(plain.header.unwrap(), "getProductById");
        let odd = WireName::of(" say \"hi\"\n");
        assert_eq!(&*odd.original, " say \"hi\"\n");
        assert_eq!(&*odd.json, r#"" say \"hi\"\n""#);
        // A leading space cannot travel bare: base64, as SEP-2243 writes it.
        let header = odd.header.unwrap();
        assert_eq!(header, crate::vocab::header_value(" say \"hi\"\n").as_ref());
        assert!(
            header.to_str().unwrap().starts_with("=?base64?"),
            "{header:?}"
        );
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
