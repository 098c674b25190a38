//! The gateway's shared vocabulary, with no I/O: who is asking (identity, scopes,
//! allow-lists), the JSON-RPC error codes of every refusal, the naming and URL rules of
//! services, SEP-2243's header values, the clock, and the hasher of the maps a call looks
//! into. Invariant: a leaf, used by every floor, using none.

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

/// Header names read on every request, made once: a name given as `&str` is parsed and
/// checked again at each lookup.
pub const MCP_SESSION_ID: http::HeaderName = http::HeaderName::from_static("mcp-session-id");
pub const MCP_PROTOCOL_VERSION: http::HeaderName =
    http::HeaderName::from_static("mcp-protocol-version");
pub const LAST_EVENT_ID: http::HeaderName = http::HeaderName::from_static("last-event-id");
pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
/// A 2026-07-28 request's method and name, as headers (SEP-2243).
pub const MCP_METHOD: http::HeaderName = http::HeaderName::from_static("mcp-method");
pub const MCP_NAME: http::HeaderName = http::HeaderName::from_static("mcp-name");
/// Media types as header values, made once (a `&str` value is checked and copied into a
/// new allocation every time it is set).
pub const APPLICATION_JSON: http::HeaderValue = http::HeaderValue::from_static("application/json");
pub const EVENT_STREAM: http::HeaderValue = http::HeaderValue::from_static("text/event-stream");
/// What a streamable-HTTP client accepts: JSON or SSE.
pub const ACCEPT_BOTH: http::HeaderValue =
    http::HeaderValue::from_static("application/json, text/event-stream");

/// A request's `Accept` names both JSON and SSE, as the streamable HTTP transport wants.
pub fn accepts_json_and_sse(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json") && a.contains("text/event-stream"))
}

/// A request's `Content-Type` says JSON.
pub fn labelled_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.trim_start().starts_with("application/json"))
}

/// The hasher of the maps every call looks into: the session table, the calls in flight,
/// the catalog's names, the relays, the metrics' handles. foldhash is several times
/// cheaper than the standard SipHash on short keys and is seeded at random per map, so
/// its buckets cannot be predicted from outside. These maps' keys are ids the gateway
/// made or names whose number is capped (`max_list_items` per service); SECURITY.md.
pub type Hasher = foldhash::fast::RandomState;

/// A `HashMap` with [`Hasher`].
pub type FastMap<K, V> = std::collections::HashMap<K, V, Hasher>;

/// A `DashMap` with [`Hasher`].
pub type FastDashMap<K, V> = dashmap::DashMap<K, V, Hasher>;

/// What is wrong with an input (a name, a URL, a scope, a token, a registration), as one
/// sentence for whoever sent it: the error of every validation in the gateway.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl From<String> for Invalid {
    fn from(why: String) -> Self {
        Self(why)
    }
}

impl From<&str> for Invalid {
    fn from(why: &str) -> Self {
        Self(why.to_string())
    }
}

/// The sentence itself.
impl std::ops::Deref for Invalid {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<Invalid> for String {
    fn from(invalid: Invalid) -> Self {
        invalid.0
    }
}

/// What separates a service from its tool in a qualified name (`service__tool`).
pub const SEPARATOR: &str = "__";

/// JSON-RPC "invalid request" (also for what the gateway refuses before reading a
/// message: a body too large or too slow, a forbidden `Host`).
pub const INVALID_REQUEST: i32 = -32600;
/// JSON-RPC "parse error".
pub const PARSE_ERROR: i32 = -32700;
/// JSON-RPC "internal error".
pub const INTERNAL_ERROR: i32 = -32603;

/// JSON-RPC code for "the service behind this tool is unavailable" (implementation range).
pub const UPSTREAM_UNAVAILABLE: i32 = -32000;
/// JSON-RPC code for "the service behind this tool did not answer in time".
pub const UPSTREAM_TIMEOUT: i32 = -32001;
/// JSON-RPC code for "the service's circuit breaker is open" (-32002 is taken by the
/// specification for "resource not found").
pub const CIRCUIT_OPEN: i32 = -32003;
/// JSON-RPC code for "the service refused the request at the HTTP level" (-32004 is a
/// rate limit's).
pub const UPSTREAM_REFUSED: i32 = -32005;

/// JSON-RPC code of a refusal by a rate limit.
pub const RATE_LIMITED: i32 = -32004;

/// What a credential may do. The configured `token` holds every scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    /// `tools/list`, `prompts/list`, `resources/list`, `resources/templates/list`.
    pub const LIST: Scopes = Scopes(1);
    /// `tools/call`, `prompts/get`, `resources/read`, completion, subscriptions.
    pub const CALL: Scopes = Scopes(2);
    /// `POST /register`, `DELETE /services/...`.
    pub const REGISTER: Scopes = Scopes(4);
    /// `GET|POST /services`, `GET /services/{name}`, `/calls`, `/stats`, `/metrics`.
    pub const OPERATE: Scopes = Scopes(8);
    pub const ALL: Scopes = Scopes(15);
    pub const NONE: Scopes = Scopes(0);
    const NAMES: [(&'static str, Scopes); 4] = [
        ("list", Self::LIST),
        ("call", Self::CALL),
        ("register", Self::REGISTER),
        ("operate", Self::OPERATE),
    ];

    /// From configured names.
    pub fn parse(names: &[String]) -> Result<Self, Invalid> {
        let mut scopes = Scopes(0);
        for name in names {
            let (_, s) = Self::NAMES.iter().find(|(n, _)| n == name).ok_or_else(|| {
                format!("unknown scope {name:?}; scopes are list, call, register and operate")
            })?;
            scopes.0 |= s.0;
        }
        Ok(scopes)
    }

    /// From a space-separated list (a JWT `scope` claim); names it does not know are
    /// ignored (the issuer may grant scopes of other resources).
    pub fn from_claim(claim: &str) -> Self {
        let mut scopes = Scopes(0);
        for name in claim.split_whitespace() {
            if let Some((_, s)) = Self::NAMES.iter().find(|(n, _)| *n == name) {
                scopes.0 |= s.0;
            }
        }
        scopes
    }

    pub fn contains(self, other: Scopes) -> bool {
        self.0 & other.0 == other.0
    }

    /// Holds at least one of `other`'s scopes.
    pub fn intersects(self, other: Scopes) -> bool {
        self.0 & other.0 != 0
    }

    /// These scopes and `other`'s.
    pub const fn with(self, other: Scopes) -> Scopes {
        Scopes(self.0 | other.0)
    }

    /// The names of the scopes held, in their usual order.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(_, s)| self.contains(*s))
            .map(|(n, _)| *n)
            .collect()
    }
}

/// Who sent a request (inserted into its extensions by `http::auth::require_bearer`).
#[derive(Clone, Debug)]
pub struct Identity {
    pub name: Arc<str>,
    pub scopes: Scopes,
    /// What it may see and call, when limited.
    pub allow: Option<Arc<Allow>>,
}

/// A credential's allow-list: it sees in every list exactly what it may call, and
/// anything else is refused as if it did not exist. On a virtual server's endpoint it
/// also carries that server's [`View`]: the credential sees what both allow.
#[derive(Debug, Default, Clone)]
pub struct Allow {
    services: Option<std::collections::HashSet<String>>,
    tools: Option<std::collections::HashSet<String>>,
    /// The virtual servers the credential may use (and then not `/mcp`).
    servers: Option<std::collections::HashSet<String>>,
    view: Option<Arc<View>>,
}

impl Allow {
    /// From a credential's `services`, `tools` and `virtual_servers` lists; `None` when
    /// none limits.
    pub fn new(
        services: Option<&[String]>,
        tools: Option<&[String]>,
        servers: Option<&[String]>,
    ) -> Option<Self> {
        let set = |v: Option<&[String]>| v.map(|v| v.iter().cloned().collect());
        let allow = Self {
            services: set(services),
            tools: set(tools),
            servers: set(servers),
            view: None,
        };
        (allow.services.is_some() || allow.tools.is_some() || allow.servers.is_some())
            .then_some(allow)
    }

    /// `allow` (a credential's, if limited) on the endpoint that shows `view`.
    pub fn within(allow: Option<&Allow>, view: Arc<View>) -> Self {
        Self {
            view: Some(view),
            ..allow.cloned().unwrap_or_default()
        }
    }

    /// May the credential use the endpoint of virtual server `server` (`None`: `/mcp`)?
    pub fn endpoint(&self, server: Option<&str>) -> bool {
        match (&self.servers, server) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(servers), Some(name)) => servers.contains(name),
        }
    }

    /// The endpoint's view, on a virtual server's.
    pub fn view(&self) -> Option<&Arc<View>> {
        self.view.as_ref()
    }

    /// Anything of `service` (its resource templates, its subscriptions).
    pub fn service(&self, service: &str) -> bool {
        self.services.as_ref().is_none_or(|s| s.contains(service))
            && self.view.as_ref().is_none_or(|v| v.shows_service(service))
    }

    /// The tool `original` (its name at the backend) of `service`.
    pub fn tool(&self, service: &str, original: &str) -> bool {
        self.services.as_ref().is_none_or(|s| s.contains(service))
            && self.tools.as_ref().is_none_or(|t| t.contains(original))
            && self
                .view
                .as_ref()
                .is_none_or(|v| Pattern::any(&v.tools, service, original))
    }

    /// The prompt `original` of `service`.
    pub fn prompt(&self, service: &str, original: &str) -> bool {
        self.services.as_ref().is_none_or(|s| s.contains(service))
            && self
                .view
                .as_ref()
                .is_none_or(|v| Pattern::any(&v.prompts, service, original))
    }

    /// The resource `uri` (at the backend) of `service`.
    pub fn resource(&self, service: &str, uri: &str) -> bool {
        self.services.as_ref().is_none_or(|s| s.contains(service))
            && self
                .view
                .as_ref()
                .is_none_or(|v| Pattern::any(&v.resources, service, uri))
    }
}

/// What a virtual server's endpoint shows of the federation: tools, prompts and
/// resources by service and glob, and new names and descriptions for some tools.
#[derive(Debug, Default, PartialEq)]
pub struct View {
    /// The virtual server it is of.
    pub server: String,
    pub tools: Vec<Pattern>,
    pub prompts: Vec<Pattern>,
    pub resources: Vec<Pattern>,
    pub renames: Vec<Renamed>,
}

/// One tool of a view under another name (and description).
#[derive(Debug, Clone, PartialEq)]
pub struct Renamed {
    /// `None`: the tool of that name at whichever service the view shows it from.
    pub service: Option<String>,
    pub original: String,
    pub name: Option<String>,
    pub description: Option<String>,
}

impl View {
    fn shows_service(&self, service: &str) -> bool {
        [&self.tools, &self.prompts, &self.resources]
            .iter()
            .any(|list| list.iter().any(|p| p.service == service))
    }

    /// The tool a renamed name stands for: its service (if the rename names one) and
    /// its name there.
    pub fn renamed(&self, name: &str) -> Option<(Option<&str>, &str)> {
        self.renames
            .iter()
            .find(|r| r.name.as_deref() == Some(name))
            .map(|r| (r.service.as_deref(), r.original.as_str()))
    }

    /// How the tool `original` of `service` is shown here, if renamed or redescribed.
    pub fn rename_of(&self, service: &str, original: &str) -> Option<&Renamed> {
        self.renames
            .iter()
            .find(|r| r.original == original && r.service.as_deref().is_none_or(|s| s == service))
    }
}

/// The longest glob a pattern may have.
pub const MAX_GLOB: usize = 256;

/// `service/glob`: what of `service` a view shows (`*` any run of characters, `?` one).
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    pub service: String,
    pub glob: String,
}

impl Pattern {
    /// `service/glob`, or a refusal saying what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let Some((service, glob)) = text.split_once('/') else {
            return Err(Invalid(format!(
                "{text:?} is not SERVICE/NAME (a glob: \"shopping-service/*\", \"user-service/getUserById\")"
            )));
        };
        validate_name(service)?;
        if glob.is_empty() {
            return Err(Invalid(format!("{text:?} names no tool after the '/'")));
        }
        if glob.len() > MAX_GLOB {
            return Err(Invalid(format!(
                "the glob after the '/' is longer than {MAX_GLOB} bytes"
            )));
        }
        Ok(Self {
            service: service.to_string(),
            glob: glob.to_string(),
        })
    }

    fn any(patterns: &[Pattern], service: &str, name: &str) -> bool {
        patterns
            .iter()
            .any(|p| p.service == service && glob(&p.glob, name))
    }
}

/// Whether `text` matches `pattern`: `*` any run of characters (none too), `?` any one.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Iterative, with one backtrack point: linear in practice, never exponential.
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A tool name as LLM function-calling APIs accept it (`^[a-zA-Z0-9_-]{1,64}$`).
pub fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An MCP endpoint's path: `/mcp`, or a virtual server's `/servers/{name}/mcp`.
pub fn is_mcp_path(path: &str) -> bool {
    path == "/mcp"
        || path
            .strip_prefix("/servers/")
            .and_then(|rest| rest.strip_suffix("/mcp"))
            .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

/// Service names: 1-64 of `[A-Za-z0-9_-]`, starting with a letter or digit, without the
/// qualifying separator `__` (so qualified tool names split unambiguously).
pub fn validate_name(name: &str) -> Result<(), Invalid> {
    if name.is_empty() || name.len() > 64 {
        return Err(Invalid(format!(
            "service name must be 1-64 characters, got {}",
            name.len()
        )));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Invalid(format!(
            "service name {name:?} may only contain letters, digits, '-' and '_'"
        )));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(Invalid(format!(
            "service name {name:?} must start with a letter or digit"
        )));
    }
    if name.contains(SEPARATOR) {
        return Err(Invalid(format!(
            "service name {name:?} must not contain \"{SEPARATOR}\" (it separates service and tool in qualified names)"
        )));
    }
    Ok(())
}

/// An http(s) URL; a URL without a path means the conventional `/mcp` endpoint.
pub fn normalize_url(raw: &str) -> Result<String, Invalid> {
    let mut url = url::Url::parse(raw.trim()).map_err(|e| format!("invalid URL {raw:?}: {e}"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(Invalid(format!(
            "URL {raw:?} must use http or https, not {}",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Invalid(format!("URL {raw:?} has no host")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Invalid(format!(
            "URL {raw:?} must not carry credentials in it"
        )));
    }
    if url.fragment().is_some() {
        return Err(Invalid(format!("URL {raw:?} must not have a fragment")));
    }
    if url.path() == "/" || url.path().is_empty() {
        url.set_path("/mcp");
    }
    Ok(url.to_string())
}

/// `value` as an HTTP header value (SEP-2243): as it is, or `=?base64?...?=` when it
/// cannot travel bare (space or tab at either end, a character outside printable ASCII,
/// or a value that already looks wrapped).
pub fn header_value(value: &str) -> std::borrow::Cow<'_, str> {
    use base64::Engine as _;
    let padded = value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']);
    let unprintable = value.bytes().any(|c| !(b' '..=b'~').contains(&c));
    let looks_wrapped = value.starts_with("=?base64?") && value.ends_with("?=");
    if value.is_empty() || !(padded || unprintable || looks_wrapped) {
        return std::borrow::Cow::Borrowed(value);
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(value);
    std::borrow::Cow::Owned(format!("=?base64?{encoded}?="))
}

/// The most arguments of one tool that travel in `Mcp-Param-*` headers; a tool that
/// annotates more is left out.
pub const MAX_PARAM_HEADERS: usize = 32;

/// The arguments of a tool that travel in `Mcp-Param-*` headers too (SEP-2243): each
/// `x-mcp-header` annotation of a property reached from the input schema's root through
/// `properties` alone, as the property's path and the header's name.
#[derive(Debug, PartialEq, Eq)]
pub struct ParamHeaders(Vec<(Vec<Arc<str>>, http::HeaderName)>);

impl ParamHeaders {
    /// The annotations of `schema`: `None` if it has none, an error if they break
    /// SEP-2243's rules (a client leaves such a tool out). Each must sit on a property
    /// reached through `properties` alone, of type string, integer or boolean, and name
    /// an HTTP token no other annotation names (in any case); at most
    /// [`MAX_PARAM_HEADERS`]. Its cost is linear in the schema's size.
    pub fn of(
        schema: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Option<Self>, Invalid> {
        let mut out = Vec::new();
        scan(schema, true, &mut Vec::new(), &mut out)?;
        Ok((!out.is_empty()).then_some(Self(out)))
    }

    /// The headers for a call with `arguments`: one for each annotated argument present
    /// with a string, number or boolean value.
    pub fn headers(
        &self,
        arguments: &serde_json::Map<String, serde_json::Value>,
    ) -> Vec<(http::HeaderName, http::HeaderValue)> {
        use serde_json::Value;
        self.0
            .iter()
            .filter_map(|(path, header)| {
                let (first, rest) = path.split_first()?;
                let value = rest
                    .iter()
                    .try_fold(arguments.get(&**first)?, |v, key| v.get(&**key))?;
                let value = match value {
                    Value::String(s) => http::HeaderValue::from_str(&header_value(s)),
                    Value::Bool(b) => http::HeaderValue::from_str(&b.to_string()),
                    Value::Number(n) => http::HeaderValue::from_str(&n.to_string()),
                    _ => return None,
                };
                Some((header.clone(), value.ok()?))
            })
            .collect()
    }
}

type Annotations = Vec<(Vec<Arc<str>>, http::HeaderName)>;

/// [`ParamHeaders::of`]'s walk of one schema object: `on_chain` when it is the root or a
/// property reached from it through `properties` alone; `path`, that property's.
fn scan(
    schema: &serde_json::Map<String, serde_json::Value>,
    on_chain: bool,
    path: &mut Vec<Arc<str>>,
    out: &mut Annotations,
) -> Result<(), Invalid> {
    use serde_json::Value;
    // A subschema, or a list of them, off the chain.
    fn off(value: &Value, path: &mut Vec<Arc<str>>, out: &mut Annotations) -> Result<(), Invalid> {
        match value {
            Value::Object(schema) => scan(schema, false, path, out),
            Value::Array(items) => items.iter().try_for_each(|item| off(item, path, out)),
            _ => Ok(()),
        }
    }
    for (key, value) in schema {
        match key.as_str() {
            "x-mcp-header" => {
                // Where it is, for the error only.
                let at = || path.join(".");
                if !on_chain || path.is_empty() {
                    return Err(Invalid(format!(
                        "x-mcp-header must annotate a property reached through `properties` \
                         alone{}",
                        if path.is_empty() {
                            String::new()
                        } else {
                            format!(" (near `{}`)", at())
                        }
                    )));
                }
                let header = value
                    .as_str()
                    .filter(|h| !h.is_empty())
                    .and_then(|h| http::HeaderName::try_from(format!("mcp-param-{h}")).ok())
                    .ok_or_else(|| {
                        Invalid(format!(
                            "property `{}`: x-mcp-header must be an HTTP token",
                            at()
                        ))
                    })?;
                if !matches!(
                    schema.get("type").and_then(Value::as_str),
                    Some("string" | "integer" | "boolean")
                ) {
                    return Err(Invalid(format!(
                        "property `{}`: x-mcp-header needs type string, integer or boolean",
                        at()
                    )));
                }
                if out.iter().any(|(_, h)| *h == header) {
                    return Err(Invalid(format!(
                        "property `{}`: x-mcp-header {header} is named twice",
                        at()
                    )));
                }
                if out.len() == MAX_PARAM_HEADERS {
                    return Err(Invalid(format!(
                        "more than {MAX_PARAM_HEADERS} x-mcp-header annotations"
                    )));
                }
                out.push((path.clone(), header));
            }
            "properties" => {
                let Value::Object(properties) = value else {
                    continue;
                };
                for (name, property) in properties {
                    match property {
                        Value::Object(property) => {
                            path.push(Arc::from(name.as_str()));
                            let scanned = scan(property, on_chain, path, out);
                            path.pop();
                            scanned?;
                        }
                        other => off(other, path, out)?,
                    }
                }
            }
            // Instance data, not subschemas.
            "default" | "const" | "enum" | "examples" => {}
            _ => off(value, path, out)?,
        }
    }
    Ok(())
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod view_tests {
    use super::glob;

    #[test]
    fn globs_match_runs_and_single_characters() {
        assert!(glob("*", ""));
        assert!(glob("*", "anything"));
        assert!(glob("get*", "getUserById"));
        assert!(!glob("get*", "listUsers"));
        assert!(glob("*User*", "getUserById"));
        assert!(glob("get?ser*", "getUserById"));
        assert!(!glob("getUser", "getUserById"));
        assert!(glob("getUserById", "getUserById"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        // Many stars over a long text stay linear.
        assert!(!glob(&"*a".repeat(50), &"a".repeat(49)));
    }
}

#[cfg(test)]
mod header_tests {
    use super::{ParamHeaders, header_value};
    use serde_json::json;

    #[test]
    fn values_that_cannot_travel_bare_are_base64() {
        assert_eq!(header_value("getUser"), "getUser");
        assert_eq!(header_value(""), "");
        assert_eq!(header_value("ünï"), "=?base64?w7xuw68=?=");
        assert_eq!(header_value(" a"), "=?base64?IGE=?=");
        assert_eq!(header_value("a\t"), "=?base64?YQk=?=");
        assert_eq!(header_value("=?base64?x?="), "=?base64?PT9iYXNlNjQ/eD89?=");
    }

    #[test]
    fn annotated_arguments_become_param_headers() {
        let schema = json!({"type": "object", "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "count": {"type": "integer", "x-mcp-header": "Count"},
            "dry": {"type": "boolean", "x-mcp-header": "Dry"},
            "plain": {"type": "string", "default": {"x-mcp-header": "NotASchema"}},
            "where": {"type": "object", "properties": {
                "city": {"type": "string", "x-mcp-header": "City"}}}
        }});
        let headers = ParamHeaders::of(schema.as_object().unwrap())
            .expect("valid")
            .expect("annotated");
        let args = |v: serde_json::Value| v.as_object().cloned().unwrap();
        let sent = headers.headers(&args(json!({
            "region": "eu-west", "count": 3, "dry": true, "plain": "x",
            "where": {"city": "Zürich"}
        })));
        let sent: Vec<(String, String)> = sent
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        let expected = [
            ("mcp-param-region", "eu-west"),
            ("mcp-param-count", "3"),
            ("mcp-param-dry", "true"),
            ("mcp-param-city", "=?base64?WsO8cmljaA==?="),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(sent, expected);
        // An argument left out, or not a primitive, sends no header.
        assert!(headers.headers(&args(json!({"where": {}}))).is_empty());
        assert!(
            headers
                .headers(&args(json!({"region": {"a": 1}})))
                .is_empty()
        );
        // A schema with no annotation has none.
        let plain = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        assert_eq!(ParamHeaders::of(plain.as_object().unwrap()), Ok(None));
    }

    #[test]
    fn annotations_that_break_the_rules_leave_the_tool_out() {
        let string = |h: serde_json::Value| json!({"type": "string", "x-mcp-header": h});
        let broken = [
            json!({"x-mcp-header": "Root", "properties": {}}),
            json!({"properties": {"a": string(json!("A")), "b": string(json!("a"))}}),
            json!({"properties": {"a": string(json!("not a token"))}}),
            json!({"properties": {"a": string(json!(""))}}),
            json!({"properties": {"a": string(json!(7))}}),
            json!({"properties": {"a": {"type": "object", "x-mcp-header": "A"}}}),
            json!({"properties": {"a": {"type": "array",
                                        "items": string(json!("Item"))}}}),
            json!({"$defs": {"a": string(json!("A"))},
                   "properties": {"a": {"$ref": "#/$defs/a"}}}),
            json!({"properties": {"a": {"anyOf": [string(json!("A"))]}}}),
        ];
        for schema in broken {
            assert!(
                ParamHeaders::of(schema.as_object().unwrap()).is_err(),
                "{schema}"
            );
        }
        // A bound on how many: a registrant's schema cannot make every call carry
        // thousands of headers.
        let many = |n: usize| {
            let properties: serde_json::Map<String, serde_json::Value> = (0..n)
                .map(|i| (format!("p{i}"), string(json!(format!("H{i}")))))
                .collect();
            json!({"properties": properties})
        };
        let at_bound = many(super::MAX_PARAM_HEADERS);
        assert!(ParamHeaders::of(at_bound.as_object().unwrap()).is_ok_and(|h| h.is_some()));
        let over = many(super::MAX_PARAM_HEADERS + 1);
        assert!(ParamHeaders::of(over.as_object().unwrap()).is_err());
    }
}
