//! The policy core of every proxied request, whichever codec carries it (rmcp's typed
//! handler in `mcp`, the raw JSON codec in `passthrough`): what a name routes to and
//! whether the caller may use it ([`plan`]: lookup, allow-list, the tool's rate limit),
//! the call's ticket in the call log and its upstream span ([`start`]), and how every
//! refusal and upstream failure reads as a JSON-RPC error ([`Refusal::error`],
//! [`call_error`]). Invariant: a codec decides nothing of policy; it parses, asks here,
//! sends with its carrier and renders what this module says.

use std::{sync::Arc, time::Duration};

use rmcp::{
    ErrorData,
    model::{ErrorCode, ListToolsResult, ServerResult},
};
use serde_json::{Value, json};

use crate::{
    catalog::{Catalog, Lookup, Route},
    observe::{CallTicket, Caller},
    registry::Registry,
    upstream::{CallError, Service},
    vocab::{Allow, ParamHeaders},
};

/// What a proxied request names.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    /// `tools/call`: a tool's public name.
    Tool(&'a str),
    /// `prompts/get`: a prompt's public name.
    Prompt(&'a str),
    /// `resources/read`: a resource's public URI.
    Resource(&'a str),
    /// `resources/subscribe` (or a listen stream's resource): a resource's public URI.
    Subscription(&'a str),
    /// `completion/complete` of a resource template: its URI template, or a URI one of
    /// the catalog's resources or templates serves.
    Template(&'a str),
}

/// Marks a request (in its HTTP extensions) that the pass-through path admitted, taking
/// its tool's rate-limit token, and then handed to the typed path: that path finds the
/// route again ([`find`]) without taking another token.
#[derive(Clone, Copy, Debug)]
pub struct Admitted;

/// Where a request goes, once the caller may send it.
#[derive(Clone)]
pub struct Planned {
    pub service: Arc<Service>,
    /// The name (or URI) at the backend.
    pub original: Arc<str>,
    /// The request may go to another instance after a failure that proves it never ran.
    pub retry_safe: bool,
    /// A tool's arguments that also travel in `Mcp-Param-*` headers (2026-07-28).
    pub param_headers: Option<Arc<ParamHeaders>>,
    /// `original` as a JSON string and as an `Mcp-Name` value ([`Route`]'s).
    pub json_name: Arc<str>,
    pub name_header: Option<http::HeaderValue>,
}

/// Why a request goes nowhere. A name hidden from the caller by its allow-list is
/// `Unknown` to it, exactly like a name that does not exist.
#[derive(Clone, Debug)]
pub enum Refusal {
    Unknown {
        kind: &'static str,
        name: String,
    },
    Ambiguous {
        kind: &'static str,
        name: String,
        choices: Vec<String>,
    },
    ResourceNotFound {
        uri: String,
    },
    RateLimited {
        what: String,
        wait: Duration,
    },
}

impl Refusal {
    /// The one JSON-RPC error every codec sends for this refusal.
    pub fn error(&self) -> ErrorData {
        match self {
            Refusal::Unknown { kind, name } => not_found(kind, name, None),
            Refusal::Ambiguous {
                kind,
                name,
                choices,
            } => not_found(kind, name, Some(choices)),
            Refusal::ResourceNotFound { uri } => ErrorData::resource_not_found(
                format!("resource not found: {uri}"),
                Some(json!({ "uri": uri })),
            ),
            Refusal::RateLimited { what, wait } => crate::limits::rate_limited(what, *wait),
        }
    }
}

impl From<Refusal> for ErrorData {
    fn from(r: Refusal) -> Self {
        r.error()
    }
}

/// Where `target` goes for a caller limited by `allow`, or why it goes nowhere. A tool
/// call that is planned has taken a token of the tool's rate limit: plan a call once,
/// when it is about to be sent.
pub fn plan(
    registry: &Registry,
    allow: Option<&Allow>,
    target: Target,
) -> Result<Planned, Refusal> {
    let planned = find(registry, allow, target)?;
    if let Target::Tool(name) = target {
        admit(registry, &planned, name)?;
    }
    Ok(planned)
}

/// [`plan`] in two steps, for a codec that looks at the route before it takes the
/// request: where `target` goes, with no token taken.
pub fn find(
    registry: &Registry,
    allow: Option<&Allow>,
    target: Target,
) -> Result<Planned, Refusal> {
    let catalog = registry.catalog();
    match target {
        Target::Tool(name) => {
            // A virtual server's new name for a tool: that tool, by its qualified name.
            let renamed = allow.and_then(|a| renamed_target(&catalog, a, name));
            let lookup = catalog.lookup(renamed.as_deref().unwrap_or(name));
            let lookup = as_allowed(lookup, allow, tool_visible);
            found("tool", name, lookup).map(planned)
        }
        Target::Prompt(name) => {
            let lookup = as_allowed(catalog.prompts().lookup(name), allow, prompt_visible);
            found("prompt", name, lookup).map(planned)
        }
        Target::Resource(uri) => {
            by_uri(catalog.resource_route(uri), allow).ok_or_else(|| Refusal::ResourceNotFound {
                uri: uri.to_string(),
            })
        }
        Target::Subscription(uri) => {
            by_uri(catalog.subscribe_route(uri), allow).ok_or_else(|| Refusal::ResourceNotFound {
                uri: uri.to_string(),
            })
        }
        Target::Template(uri) => {
            let template = catalog
                .templates()
                .iter()
                .find(|(_, t)| t.uri_template == uri)
                .map(|(s, _)| (Arc::clone(s), uri.to_string()));
            by_uri(template.or_else(|| catalog.resource_route(uri)), allow).ok_or_else(|| {
                Refusal::Unknown {
                    kind: "resource template",
                    name: uri.to_string(),
                }
            })
        }
    }
}

/// The second step of [`plan`] for the tool `public`: a token of its rate limit.
pub fn admit(registry: &Registry, planned: &Planned, public: &str) -> Result<(), Refusal> {
    registry
        .limits()
        .tool(&planned.service.name, &planned.original)
        .map_err(|wait| Refusal::RateLimited {
            what: format!("tool \"{public}\""),
            wait,
        })
}

/// A URI's route (its service, and the URI at the backend), if the caller may see it.
fn by_uri(route: Option<(Arc<Service>, String)>, allow: Option<&Allow>) -> Option<Planned> {
    route
        .filter(|(s, uri)| allow.is_none_or(|a| a.resource(&s.name, uri)))
        .map(|(service, uri)| {
            let name = crate::catalog::WireName::of(&uri);
            Planned {
                service,
                original: name.original,
                retry_safe: true,
                param_headers: None,
                json_name: name.json,
                name_header: name.header,
            }
        })
}

fn found<'a>(kind: &'static str, name: &str, lookup: Lookup<'a>) -> Result<&'a Route, Refusal> {
    match lookup {
        Lookup::Found(route) => Ok(route),
        Lookup::Ambiguous(choices) => Err(Refusal::Ambiguous {
            kind,
            name: name.to_string(),
            choices: choices.to_vec(),
        }),
        Lookup::Unknown => Err(Refusal::Unknown {
            kind,
            name: name.to_string(),
        }),
    }
}

fn planned(route: &Route) -> Planned {
    Planned {
        service: Arc::clone(&route.service),
        original: Arc::clone(&route.original),
        retry_safe: route.retry_safe,
        param_headers: route.param_headers.clone(),
        json_name: Arc::clone(&route.json_name),
        name_header: route.name_header.clone(),
    }
}

/// A planned tool call, starting now: its ticket in the call log (with `arguments`, the
/// call's JSON text, when payloads are recorded) and its upstream span.
pub fn start(
    registry: &Registry,
    caller: &Caller,
    planned: &Planned,
    public: &str,
    arguments: impl FnOnce() -> Option<String>,
) -> (CallTicket, tracing::Span) {
    let ticket = registry
        .observer()
        .start(caller, &planned.service.name, public, arguments);
    let span = crate::observe::traces::upstream_span(&caller.span, &planned.service.name, public);
    (ticket, span)
}

/// An upstream failure as the JSON-RPC error the client gets (the backend's own error
/// passes unchanged).
pub fn call_error(e: CallError) -> ErrorData {
    match e {
        CallError::Upstream(e) => e,
        CallError::Unavailable { ref service, .. } => ErrorData::new(
            ErrorCode(crate::vocab::UPSTREAM_UNAVAILABLE),
            e.to_string(),
            Some(json!({ "service": service, "reason": "unavailable" })),
        ),
        CallError::Timeout { ref service, ms } => ErrorData::new(
            ErrorCode(crate::vocab::UPSTREAM_TIMEOUT),
            e.to_string(),
            Some(json!({ "service": service, "reason": "timeout", "timeoutMs": ms })),
        ),
        CallError::Refused {
            ref service,
            status,
        } => ErrorData::new(
            ErrorCode(crate::vocab::UPSTREAM_REFUSED),
            e.to_string(),
            Some(json!({ "service": service, "reason": "refused", "status": status })),
        ),
        CallError::CircuitOpen {
            ref service,
            retry_in_ms,
        } => ErrorData::new(
            ErrorCode(crate::vocab::CIRCUIT_OPEN),
            e.to_string(),
            Some(json!({ "service": service, "reason": "circuit_open", "retryInMs": retry_in_ms })),
        ),
    }
}

/// `lookup` as `allow` lets the credential see it (`sees` judges a route): a hidden
/// route, or a choice between several services, is unknown to a limited credential.
pub fn as_allowed<'a>(
    lookup: Lookup<'a>,
    allow: Option<&Allow>,
    sees: impl Fn(&Allow, &crate::catalog::Route) -> bool,
) -> Lookup<'a> {
    match (allow, lookup) {
        (Some(a), Lookup::Found(route)) if !sees(a, route) => Lookup::Unknown,
        (Some(_), Lookup::Ambiguous(_)) => Lookup::Unknown,
        (_, lookup) => lookup,
    }
}

/// What tool search shows one caller: the catalog positions it may see, and whether its
/// `tools/list` offers the meta-tools instead of the catalog.
pub struct SearchView {
    /// `None`: every tool (no allow-list).
    visible: Option<Vec<bool>>,
    pub engaged: bool,
    /// With `tool_search = "refuse"` past the limits: why its `tools/list` is refused.
    pub refused: Option<String>,
}

impl SearchView {
    /// The caller may see the catalog's tool at position `i`.
    pub fn sees(&self, i: usize) -> bool {
        self.visible
            .as_ref()
            .is_none_or(|v| v.get(i).copied().unwrap_or(false))
    }
}

/// Tool search for a caller with `allow`: engaged as the settings say for what it may
/// see (never with search `off`).
pub fn search_view(registry: &Registry, catalog: &Catalog, allow: Option<&Allow>) -> SearchView {
    let settings = registry.tool_search_on(endpoint_of(allow));
    if settings.mode == crate::search::Mode::Off {
        return SearchView {
            visible: None,
            engaged: false,
            refused: None,
        };
    }
    let visible = allow.map(|a| {
        catalog
            .tools()
            .iter()
            .map(|t| matches!(catalog.lookup(&t.name), Lookup::Found(r) if tool_visible(a, r)))
            .collect::<Vec<bool>>()
    });
    let (sizes, total) = catalog.tool_sizes();
    let (count, bytes) = match &visible {
        None => (sizes.len(), total),
        Some(v) => v
            .iter()
            .zip(sizes)
            .filter(|(seen, _)| **seen)
            .fold((0, 0), |(n, b), (_, size)| (n + 1, b + size)),
    };
    SearchView {
        engaged: settings.engaged(count, bytes),
        refused: settings.refusal(count, bytes),
        visible,
    }
}

/// `name` is one of tool search's meta-tools while search is `on` or `auto`: the typed path
/// answers it (or, for a caller not in search mode, finds a backend's tool of that name).
pub fn is_meta_tool(registry: &Registry, allow: Option<&Allow>, name: &str) -> bool {
    crate::search::META.contains(&name)
        && registry
            .tool_search_on(endpoint_of(allow))
            .offers_meta_tools()
}

/// The composite tool `name` of the virtual server whose endpoint the caller is on:
/// the server, and the composite's position in its definition. A composite whose name a
/// tool the caller sees already has is not there (that tool is).
pub fn composite(
    registry: &Registry,
    allow: Option<&Allow>,
    name: &str,
) -> Option<(Arc<crate::servers::VirtualServer>, usize)> {
    let server = registry.virtual_server(endpoint_of(allow)?)?;
    let index = server
        .definition
        .composites
        .iter()
        .position(|c| c.name == name)?;
    if shadowed(&registry.catalog(), allow?, name) {
        return None;
    }
    Some((server, index))
}

/// A tool of the catalog the caller sees is listed as `name`.
fn shadowed(catalog: &Catalog, allow: &Allow, name: &str) -> bool {
    matches!(catalog.lookup(name), Lookup::Found(r) if tool_visible(allow, r))
}

/// The composite tools of the virtual server whose endpoint the caller is on, as
/// `tools/list` shows them: their parameters as the input schema, and an output schema
/// made of their steps' (each step `{ok, result, error}`).
pub fn composite_tools(
    registry: &Registry,
    catalog: &Catalog,
    allow: Option<&Allow>,
) -> Vec<rmcp::model::Tool> {
    let Some(server) = endpoint_of(allow).and_then(|s| registry.virtual_server(s)) else {
        return Vec::new();
    };
    server
        .definition
        .composites
        .iter()
        .filter(|c| !allow.is_some_and(|a| shadowed(catalog, a, &c.name)))
        .filter_map(|c| {
            let steps: serde_json::Map<String, Value> = c
                .steps
                .iter()
                .map(|step| {
                    let (service, tool) = step.target();
                    let output = catalog
                        .tools_of(service)
                        .find(|(_, original)| *original == tool)
                        .and_then(|(t, _)| t.output_schema.as_ref())
                        .map(|o| Value::Object((**o).clone()))
                        .unwrap_or_else(|| json!({}));
                    let entry = json!({
                        "type": "object",
                        "properties": {
                            "ok": {"type": "boolean"},
                            "result": output,
                            "error": {"type": "string"}
                        },
                        "required": ["ok"]
                    });
                    (step.name.clone(), entry)
                })
                .collect();
            let names: Vec<&str> = c.steps.iter().map(|s| s.name.as_str()).collect();
            let description = c.description.clone().unwrap_or_else(|| {
                format!(
                    "Runs {} at once and returns each one's result (or why it failed) under its step's name.",
                    c.steps
                        .iter()
                        .map(|s| s.target().1)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
            serde_json::from_value(json!({
                "name": c.name,
                "description": description,
                "inputSchema": {
                    "type": "object",
                    "properties": c.input,
                    "required": c.required()
                },
                "outputSchema": {
                    "type": "object",
                    "properties": {"steps": {
                        "type": "object",
                        "properties": steps,
                        "required": names
                    }},
                    "required": ["steps"]
                }
            }))
            .ok()
        })
        .collect()
}

/// The catalog's tools as the caller's endpoint lists them: those it may see; on a
/// virtual server, under their new names and descriptions, with self-contained schemas
/// if it asks for them, and followed by its composite tools (one copy at most).
pub fn listed_tools<'a>(
    registry: &Registry,
    catalog: &'a Catalog,
    allow: Option<&Allow>,
) -> std::borrow::Cow<'a, [rmcp::model::Tool]> {
    let tools = visible(
        catalog.tools(),
        allow,
        |a, t| matches!(catalog.lookup(&t.name), Lookup::Found(r) if tool_visible(a, r)),
    );
    let Some(view) = allow.and_then(|a| a.view()) else {
        return tools;
    };
    let inline = registry.inline_on(&view.server);
    let composites = composite_tools(registry, catalog, allow);
    if view.renames.is_empty() && !inline && composites.is_empty() {
        return tools;
    }
    let mut listed: Vec<rmcp::model::Tool> = tools
        .iter()
        .map(|t| {
            let mut t = match catalog.lookup(&t.name) {
                Lookup::Found(r) => shown(catalog, t, r, allow).into_owned(),
                _ => t.clone(),
            };
            if inline {
                crate::catalog::inline_schemas(&mut t);
            }
            t
        })
        .collect();
    listed.extend(composites);
    std::borrow::Cow::Owned(listed)
}

/// A tool only the typed path answers: a meta-tool of tool search, or a composite.
pub fn typed_only(registry: &Registry, allow: Option<&Allow>, name: &str) -> bool {
    is_meta_tool(registry, allow, name) || composite(registry, allow, name).is_some()
}

/// The virtual server whose endpoint the caller is on (`None`: `/mcp`).
fn endpoint_of(allow: Option<&Allow>) -> Option<&str> {
    allow.and_then(|a| a.view()).map(|v| v.server.as_str())
}

/// The tool a virtual server's new name `name` stands for, by its qualified name: the
/// rename's own service, or the first service of the view's tool patterns that offers
/// a tool so named. `None` when `name` is no new name, or when another tool the caller
/// sees already has that name (the rename is then ignored, so a call never reaches a
/// tool other than the one listed under the name).
fn renamed_target(catalog: &Catalog, allow: &Allow, name: &str) -> Option<String> {
    let view = allow.view()?;
    let (service, original) = view.renamed(name)?;
    let service = match service {
        Some(s) => s.to_string(),
        None => first_offering(catalog, view, original)?.to_string(),
    };
    if collides(catalog, allow, name, &service, original) {
        return None;
    }
    Some(crate::catalog::qualify(&service, original))
}

/// The first service of `view`'s tool patterns that offers a tool named `original`:
/// the one a rename that names no service renames.
fn first_offering<'a>(
    catalog: &Catalog,
    view: &'a crate::vocab::View,
    original: &str,
) -> Option<&'a str> {
    view.tools
        .iter()
        .filter(|p| crate::vocab::glob(&p.glob, original))
        .find(|p| catalog.tools_of(&p.service).any(|(_, o)| o == original))
        .map(|p| p.service.as_str())
}

/// Another tool than `service`'s `original` is listed to the caller as `name`.
fn collides(catalog: &Catalog, allow: &Allow, name: &str, service: &str, original: &str) -> bool {
    matches!(catalog.lookup(name), Lookup::Found(r)
        if tool_visible(allow, r) && !(&*r.service.name == service && &*r.original == original))
}

/// `tool` (the catalog's, reached by `route`) as the caller's endpoint shows it: under
/// a virtual server's new name and description, if it gave the tool any (a new name
/// another visible tool already has is not used).
pub fn shown<'a>(
    catalog: &Catalog,
    tool: &'a rmcp::model::Tool,
    route: &Route,
    allow: Option<&Allow>,
) -> std::borrow::Cow<'a, rmcp::model::Tool> {
    let renamed = allow.and_then(|a| {
        let view = a.view()?;
        let r = view.rename_of(&route.service.name, &route.original)?;
        // A rename that names no service is of one tool only, the one calls reach.
        if r.service.is_none()
            && first_offering(catalog, view, &route.original) != Some(&*route.service.name)
        {
            return None;
        }
        Some((a, r))
    });
    match renamed {
        None => std::borrow::Cow::Borrowed(tool),
        Some((allow, r)) => {
            let mut tool = tool.clone();
            if let Some(name) = &r.name
                && !collides(catalog, allow, name, &route.service.name, &route.original)
            {
                tool.name = name.clone().into();
            }
            if let Some(description) = &r.description {
                tool.description = Some(description.clone().into());
            }
            std::borrow::Cow::Owned(tool)
        }
    }
}

/// `search_tools`' answer: the `limit` best tools for `query` among those `view` shows,
/// each with the name to call it by (qualified when its own is a meta-tool's).
pub fn search_tools(
    catalog: &Catalog,
    view: &SearchView,
    allow: Option<&Allow>,
    query: &str,
    limit: usize,
) -> Value {
    let (hits, total) = catalog.search().search(query, |i| view.sees(i), limit);
    let tools = catalog.tools();
    let results: Vec<Value> = hits
        .into_iter()
        .filter_map(|(i, score)| {
            let Lookup::Found(route) = catalog.lookup(&tools.get(i)?.name) else {
                return None;
            };
            let tool = shown(catalog, tools.get(i)?, route, allow);
            let name = if crate::search::META.contains(&tool.name.as_ref()) {
                crate::catalog::qualify(&route.service.name, &route.original)
            } else {
                tool.name.to_string()
            };
            Some(json!({
                "name": name,
                "service": &*route.service.name,
                "tool": &*route.original,
                "description": one_line(tool.description.as_deref().unwrap_or("")),
                "score": (f64::from(score) * 1000.0).round() / 1000.0,
            }))
        })
        .collect();
    json!({ "results": results, "total": total })
}

/// `describe_tools`' answer: the definitions of the named tools the caller may see; the
/// other names (hidden, unknown, ambiguous, the meta-tools') under `unknown`.
pub fn describe_tools(
    registry: &Registry,
    catalog: &Catalog,
    allow: Option<&Allow>,
    names: &[String],
) -> Value {
    let mut tools = Vec::new();
    let mut unknown = Vec::new();
    for name in names {
        let found = match find(registry, allow, Target::Tool(name)) {
            Ok(planned) if !crate::search::META.contains(&name.as_str()) => catalog
                .tools_of(&planned.service.name)
                .find(|(_, original)| *original == &*planned.original)
                .and_then(|(tool, _)| match catalog.lookup(&tool.name) {
                    Lookup::Found(route) => Some(shown(catalog, tool, route, allow).into_owned()),
                    _ => None,
                }),
            _ => None,
        };
        match found.and_then(|t| serde_json::to_value(t).ok()) {
            Some(mut definition) => {
                // Called by the name asked for (a qualified one, say).
                definition["name"] = json!(name);
                tools.push(definition);
            }
            None => unknown.push(name.clone()),
        }
    }
    json!({ "tools": tools, "unknown": unknown })
}

/// The first line of `text`, at most 200 characters.
fn one_line(text: &str) -> String {
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    match line.char_indices().nth(200) {
        Some((end, _)) => format!("{}…", &line[..end]),
        None => line.to_string(),
    }
}

/// A tool route a limited credential may see and call.
pub fn tool_visible(a: &Allow, r: &Route) -> bool {
    a.tool(&r.service.name, &r.original)
}

/// A prompt route a limited credential may see and use.
pub fn prompt_visible(a: &Allow, r: &Route) -> bool {
    a.prompt(&r.service.name, &r.original)
}

/// A resource route a limited credential may see and read.
pub fn resource_visible(a: &Allow, r: &Route) -> bool {
    a.resource(&r.service.name, &r.original)
}

/// `items` as `allow` lets the credential see them (`service_of` names an item's
/// service and its name there); all of them without an allow-list.
pub fn visible<'a, T: Clone>(
    items: &'a [T],
    allow: Option<&Allow>,
    keep: impl Fn(&Allow, &T) -> bool,
) -> std::borrow::Cow<'a, [T]> {
    match allow {
        None => std::borrow::Cow::Borrowed(items),
        Some(a) => std::borrow::Cow::Owned(items.iter().filter(|i| keep(a, i)).cloned().collect()),
    }
}

fn not_found(kind: &str, name: &str, choices: Option<&[String]>) -> ErrorData {
    match choices {
        Some(choices) => ErrorData::invalid_params(
            format!(
                "{kind} \"{name}\" is offered by several services; use one of: {}",
                choices.join(", ")
            ),
            Some(json!({ kind: name, "candidates": choices })),
        ),
        None => ErrorData::invalid_params(
            format!("unknown {kind}: {name}"),
            Some(json!({ kind: name })),
        ),
    }
}

/// One page of a merged list. Cursors are opaque to clients (`o<offset>`); the list is
/// the current snapshot, so a page boundary never repeats or skips an entry unless the
/// table changed in between (clients are told with `list_changed`).
pub fn page<'a, T>(
    items: &'a [T],
    cursor: Option<&str>,
    size: usize,
) -> Result<(&'a [T], Option<String>), ErrorData> {
    let start = match cursor {
        None => 0,
        Some(c) => c
            .strip_prefix('o')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n <= items.len())
            .ok_or_else(|| ErrorData::invalid_params(format!("invalid cursor: {c:?}"), None))?,
    };
    let end = (start + size).min(items.len());
    let next = (end < items.len()).then(|| format!("o{end}"));
    Ok((&items[start..end], next))
}

/// Every page of the catalog's tools as `tools/list` results (JSON), built exactly as
/// `mcp`'s `list_tools` builds one and serialized as rmcp does for a peer before
/// 2026-07-28; the pass-through path serves these to such peers.
pub fn tool_pages(catalog: &Catalog, size: usize) -> Vec<String> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let Ok((tools, next)) = page(catalog.tools(), cursor.as_deref(), size.max(1)) else {
            return pages;
        };
        let mut result = ListToolsResult::with_all_items(tools.to_vec());
        result.next_cursor = next.clone();
        // As rmcp sends it to a peer before 2026-07-28 (the only ones served this way).
        let mut result = ServerResult::ListToolsResult(result);
        result.strip_result_type_for_legacy_peer();
        pages.push(serde_json::to_string(&result).unwrap_or_default());
        match next {
            Some(n) => cursor = Some(n),
            None => return pages,
        }
    }
}

/// Questions a backend may ask in one round (each becomes a request to the client, sent
/// at once).
const MAX_INPUT_QUESTIONS: usize = 8;

/// A 2026-07-28 backend's questions as requests to a 2025-era client that declared
/// `declared`: at most [`MAX_INPUT_QUESTIONS`], of the three kinds a client can be asked;
/// when the client lacks what some need, the revision's missing-capability error naming
/// all of it. Both call paths refuse with these same errors.
pub fn legacy_questions(
    questions: rmcp::model::InputRequests,
    declared: &rmcp::model::ClientCapabilities,
) -> Result<Vec<(String, rmcp::model::ServerRequest)>, ErrorData> {
    use rmcp::model::{InputRequest, ServerRequest};
    if questions.len() > MAX_INPUT_QUESTIONS {
        return Err(ErrorData::internal_error(
            format!(
                "the backend asked {} questions at once; the gateway passes on at most {MAX_INPUT_QUESTIONS}",
                questions.len()
            ),
            None,
        ));
    }
    let mut needed = rmcp::model::ClientCapabilities::default();
    let mut requests = Vec::with_capacity(questions.len());
    for (key, question) in questions {
        let request = match question {
            InputRequest::CreateMessage(r) => {
                if declared.sampling.is_none() {
                    needed.sampling = Some(Default::default());
                }
                ServerRequest::CreateMessageRequest(r)
            }
            InputRequest::Elicitation(r) => {
                if declared.elicitation.is_none() {
                    needed.elicitation = Some(Default::default());
                }
                ServerRequest::ElicitRequest(r)
            }
            InputRequest::ListRoots(r) => {
                if declared.roots.is_none() {
                    needed.roots = Some(Default::default());
                }
                ServerRequest::ListRootsRequest(r)
            }
            _ => {
                return Err(ErrorData::internal_error(
                    format!("the backend asked \"{key}\" of a kind the gateway cannot pass on"),
                    None,
                ));
            }
        };
        requests.push((key, request));
    }
    if needed != Default::default() {
        return Err(ErrorData::missing_required_client_capability(needed));
    }
    Ok(requests)
}
