//! The gateway's shared vocabulary, with no I/O: who is asking (identity, scopes,
//! allow-lists), the JSON-RPC error codes of every refusal, the naming and URL rules of
//! services, and the clock. Invariant: a leaf, used by every floor, using none.

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

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
/// anything else is refused as if it did not exist.
#[derive(Debug, Default)]
pub struct Allow {
    services: Option<std::collections::HashSet<String>>,
    tools: Option<std::collections::HashSet<String>>,
}

impl Allow {
    /// From a credential's `services` and `tools` lists; `None` when neither limits.
    pub fn new(services: Option<&[String]>, tools: Option<&[String]>) -> Option<Self> {
        let set = |v: Option<&[String]>| v.map(|v| v.iter().cloned().collect());
        let allow = Self {
            services: set(services),
            tools: set(tools),
        };
        (allow.services.is_some() || allow.tools.is_some()).then_some(allow)
    }

    /// Prompts, resources and templates of `service`.
    pub fn service(&self, service: &str) -> bool {
        self.services.as_ref().is_none_or(|s| s.contains(service))
    }

    /// The tool `original` (its name at the backend) of `service`.
    pub fn tool(&self, service: &str, original: &str) -> bool {
        self.service(service) && self.tools.as_ref().is_none_or(|t| t.contains(original))
    }
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

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
