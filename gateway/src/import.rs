//! Importing servers from an MCP registry (`gateway import`, `POST /registry/import`):
//! a `server.json` (the official registry's format, 2025-12-11 schema), a registry's
//! `GET /v0.1/servers` listing (its `metadata.nextCursor` followed, at most
//! [`MAX_PAGES`] pages), given inline or fetched from a URL, becomes registrations.
//!
//! - `remotes[]` of type `streamable-http` become HTTP registrations: the URL's
//!   `{variables}` filled in, its headers (at most one: the gateway sends one
//!   credential per upstream, `UpstreamAuth`) as the gateway's credential.
//! - `packages[]` from npm run as `npx -y NAME@VERSION`, from PyPI as
//!   `uvx NAME==VERSION` (runtime arguments before the package, package arguments
//!   after it), their `environmentVariables` as the child's `env`: stdio servers, under
//!   the registry's own rules (`operate`, `allowed_commands`).
//! - Anything else (OCI, NuGet, MCPB packages, SSE remotes, a package without a pinned
//!   version, a secret in a URL or on a command line) is refused with its reason, or
//!   skipped and reported when the request says `skipUnsupported`.
//!
//! Values come from the request's `variables`, then the gateway's `[import_variables]`;
//! a registry's `default` fills only optional, non-secret inputs. Every missing one is
//! named in one refusal. A fetched document comes through the upstream network guard
//! (`upstream_networks`), without redirects, bounded in size, pages and time.
//!
//! Invariant: an import registers all it planned or nothing: every registration is
//! resolved and checked (`Registry::precheck`) before the first is made, and when one
//! fails the ones this import made are removed again.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    registry::{Actor, RegisterError, Registration, Registry},
    upstream::{
        guard::{Guard, Refusal},
        secret::UpstreamAuth,
        stdio::Command,
    },
    vocab::validate_name,
};

/// Pages of a registry listing followed at most.
pub const MAX_PAGES: usize = 20;
/// Servers one import takes at most.
pub const MAX_SERVERS: usize = 100;
/// Bytes of one fetched document at most.
pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;
/// Deadline of one fetch, and of all the fetches of one import.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
pub const IMPORT_FETCH_DEADLINE: Duration = Duration::from_secs(30);

/// Imports for the admin API: the registry, the configured variables and the guarded
/// HTTP client that fetches registries.
pub struct Importer {
    registry: Arc<Registry>,
    configured: BTreeMap<String, String>,
    guard: Arc<Guard>,
    http: Option<reqwest::Client>,
}

/// Why an import was refused (nothing changed), or failed and was undone.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The request itself is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The document is not a usable `server.json` or listing.
    #[error("{0}")]
    Invalid(String),
    /// Required or secret inputs nobody supplied: (name, where it is used).
    #[error("{}", missing_message(.0))]
    Missing(BTreeMap<String, String>),
    /// Entries the gateway cannot run, each with its reason.
    #[error("cannot import: {}; nothing was registered (\"skipUnsupported\": true imports the rest)", .0.join("; "))]
    Unsupported(Vec<String>),
    /// A planned name is taken.
    #[error("{0}")]
    Conflict(String),
    /// The registry URL is outside `upstream_networks`.
    #[error("{0}")]
    NotAllowed(String),
    /// The registry could not be read.
    #[error("{0}")]
    Unreachable(String),
    /// A planned registration the registry refuses (checked before any was made).
    #[error("{0}")]
    Refused(Box<RegisterError>),
    /// A registration failed after others were made; those were removed again.
    #[error("{}", rolled_back_message(.cause, .removed, .left))]
    RolledBack {
        cause: Box<RegisterError>,
        removed: Vec<String>,
        /// Ones that could not be removed (with why): should never happen.
        left: Vec<String>,
    },
}

fn missing_message(missing: &BTreeMap<String, String>) -> String {
    let list: Vec<String> = missing
        .iter()
        .map(|(name, used)| format!("{name} ({used})"))
        .collect();
    format!(
        "missing variable{}: {}; give {} in the request's \"variables\" or in the gateway's [import_variables]; nothing was registered",
        if missing.len() == 1 { "" } else { "s" },
        list.join(", "),
        if missing.len() == 1 { "it" } else { "them" }
    )
}

fn rolled_back_message(cause: &RegisterError, removed: &[String], left: &[String]) -> String {
    let mut out = format!("import failed: {cause}");
    if removed.is_empty() {
        out.push_str("; nothing was registered");
    } else {
        out.push_str(&format!(
            "; the registrations this import had made were removed ({})",
            removed.join(", ")
        ));
    }
    if !left.is_empty() {
        out.push_str(&format!("; could not remove: {}", left.join(", ")));
    }
    out
}

/// An import request (`POST /registry/import`).
#[derive(Clone, Default)]
pub struct ImportRequest {
    pub source: SourceDoc,
    /// Values by variable name (may be secrets: never shown).
    pub variables: BTreeMap<String, String>,
    /// The service name instead of the one derived from the server's name (one server
    /// only).
    pub name: Option<String>,
    /// Plan and check, register nothing.
    pub dry_run: bool,
    /// Skip (and report) what the gateway cannot run instead of refusing the import.
    pub skip_unsupported: bool,
}

impl std::fmt::Debug for ImportRequest {
    // The variables' values may be secrets: names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportRequest")
            .field("source", &self.source)
            .field("variables", &self.variables.keys().collect::<Vec<_>>())
            .field("name", &self.name)
            .field("dry_run", &self.dry_run)
            .field("skip_unsupported", &self.skip_unsupported)
            .finish()
    }
}

/// Where the servers come from.
#[derive(Debug, Clone)]
pub enum SourceDoc {
    /// A `server.json`, a registry's server response or a listing page, inline.
    Inline(Value),
    /// A URL to fetch one of those from.
    Url(String),
}

impl Default for SourceDoc {
    fn default() -> Self {
        Self::Inline(Value::Null)
    }
}

/// One registration an import made, or would make.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportedServer {
    /// The service name in the gateway.
    pub name: String,
    /// The server's name in the registry (`io.github.user/weather`).
    pub server: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `remote`, `npm` or `pypi`.
    pub kind: String,
    /// A remote's URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A package's program (`npx`, `uvx`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// The names of the environment variables set (never their values).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// How the gateway authenticates to a remote (`bearer`, `header x-api-key`), never
    /// the secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// The instance made (absent in a dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// An entry an import left out (`skipUnsupported`, or an unlisted version).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SkippedEntry {
    pub server: String,
    pub reason: String,
}

/// What an import did, or would do (`dryRun`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    pub dry_run: bool,
    pub servers: Vec<ImportedServer>,
    pub skipped: Vec<SkippedEntry>,
}

// ---- server.json, as the official registry's schema names it; unknown members are
// ignored.

/// An input: an environment variable, a header, an argument or a variable.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Input {
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    is_required: bool,
    #[serde(default)]
    is_secret: bool,
    /// `{name}` in `value` is filled from these.
    #[serde(default)]
    variables: BTreeMap<String, Input>,
}

#[derive(Debug, Clone, Deserialize)]
struct KeyValueInput {
    name: String,
    #[serde(flatten)]
    input: Input,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Argument {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    value_hint: Option<String>,
    #[serde(flatten)]
    input: Input,
}

#[derive(Debug, Clone, Deserialize)]
struct Transport {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    headers: Vec<KeyValueInput>,
    #[serde(default)]
    variables: BTreeMap<String, Input>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Package {
    registry_type: String,
    identifier: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    runtime_hint: Option<String>,
    #[serde(default)]
    runtime_arguments: Vec<Argument>,
    #[serde(default)]
    package_arguments: Vec<Argument>,
    #[serde(default)]
    environment_variables: Vec<KeyValueInput>,
    #[serde(default)]
    transport: Option<Transport>,
}

#[derive(Debug, Clone, Deserialize)]
struct ServerJson {
    name: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    remotes: Vec<Transport>,
    #[serde(default)]
    packages: Vec<Package>,
}

/// The servers a document holds: a `server.json`, a server response (`{"server":
/// ...}`) or a listing page (`{"servers": [...]}`); the listing's next cursor.
fn servers_of(
    doc: &Value,
    skipped: &mut Vec<SkippedEntry>,
) -> Result<(Vec<ServerJson>, Option<String>), ImportError> {
    let parse = |v: &Value| -> Result<ServerJson, ImportError> {
        serde_json::from_value::<ServerJson>(v.clone()).map_err(|e| {
            ImportError::Invalid(format!(
                "not a server.json ({e}); expected an object with \"name\" and \"remotes\" or \"packages\""
            ))
        })
    };
    let Some(object) = doc.as_object() else {
        return Err(ImportError::Invalid(
            "the source is not a JSON object (a server.json, or a registry's /v0.1/servers page)"
                .into(),
        ));
    };
    if let Some(list) = object.get("servers") {
        let items = list
            .as_array()
            .ok_or_else(|| ImportError::Invalid("\"servers\" is not an array".into()))?;
        let mut servers = Vec::new();
        for item in items {
            let (server, meta) = match item.get("server") {
                Some(server) => (server, item.get("_meta")),
                None => (item, item.get("_meta")),
            };
            let official = meta.and_then(|m| m.get("io.modelcontextprotocol.registry/official"));
            let name = server["name"].as_str().unwrap_or("?").to_string();
            if let Some(o) = official {
                if o.get("isLatest") == Some(&Value::Bool(false)) {
                    skipped.push(SkippedEntry {
                        server: name,
                        reason: "not the latest version in the listing".into(),
                    });
                    continue;
                }
                if o.get("status").and_then(Value::as_str) == Some("deleted") {
                    skipped.push(SkippedEntry {
                        server: name,
                        reason: "deleted from the registry".into(),
                    });
                    continue;
                }
            }
            servers.push(parse(server)?);
        }
        let next = object
            .get("metadata")
            .and_then(|m| m.get("nextCursor").or_else(|| m.get("next_cursor")))
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .map(String::from);
        return Ok((servers, next));
    }
    if let Some(server) = object.get("server").filter(|s| s.is_object()) {
        return Ok((vec![parse(server)?], None));
    }
    Ok((vec![parse(doc)?], None))
}

// ---- names

/// A valid service name from a registry server name: its last segment
/// (`io.github.user/weather` → `weather`), other characters than letters, digits, `-`
/// and `_` as `-`, no `__`, starting with a letter or digit, at most `max` long.
pub fn derive_name(server: &str, max: usize) -> String {
    let last = server.rsplit('/').next().unwrap_or(server);
    let mut out = String::new();
    for c in last.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            c
        } else {
            '-'
        };
        // No `__` (the tool separator), no runs of `-`.
        if (c == '_' || c == '-') && out.ends_with(c) {
            continue;
        }
        out.push(c);
    }
    let trimmed: String = out
        .trim_start_matches(['-', '_'])
        .chars()
        .take(max)
        .collect();
    let trimmed = trimmed.trim_end_matches(['-', '_']).to_string();
    if trimmed.is_empty() {
        "imported".chars().take(max).collect()
    } else {
        trimmed
    }
}

// ---- values

/// Where values come from: the request's variables, then the configuration's. Records
/// what is missing instead of stopping at the first.
struct Values<'a> {
    given: &'a BTreeMap<String, String>,
    configured: &'a BTreeMap<String, String>,
    missing: BTreeMap<String, String>,
}

/// A resolved input: its value, and whether it is (or holds) a secret.
struct Resolved {
    value: String,
    secret: bool,
}

impl Values<'_> {
    /// A supplied value, and whether it came from the configuration (then it is a
    /// secret whatever the document says: a document must not be able to place an
    /// operator's value where its author can read it).
    fn lookup(&self, name: &str) -> Option<(&str, bool)> {
        self.given
            .get(name)
            .map(|v| (v.as_str(), false))
            .or_else(|| self.configured.get(name).map(|v| (v.as_str(), true)))
    }

    /// The value of an input named `key` (an environment variable's or header's name, an
    /// argument's hint), used as `used`. `None`: an optional input left out.
    fn input(&mut self, key: &str, input: &Input, used: &str) -> Option<Resolved> {
        if let Some(template) = &input.value {
            let filled = self.template(template, &input.variables, input.is_required, used)?;
            return Some(Resolved {
                value: filled.value,
                secret: filled.secret || input.is_secret,
            });
        }
        self.variable(key, input, input.is_required, used)
    }

    /// One variable: supplied, else (optional and not secret) the registry's default;
    /// a required one missing is recorded.
    fn variable(&mut self, name: &str, spec: &Input, needed: bool, used: &str) -> Option<Resolved> {
        if let Some((v, configured)) = self.lookup(name) {
            return Some(Resolved {
                value: v.to_string(),
                secret: spec.is_secret || configured,
            });
        }
        if !spec.is_secret
            && !spec.is_required
            && let Some(d) = &spec.default
        {
            return Some(Resolved {
                value: d.clone(),
                secret: false,
            });
        }
        if needed || spec.is_required {
            self.missing
                .entry(name.to_string())
                .or_insert_with(|| used.to_string());
        }
        None
    }

    /// `template` with every `{name}` filled: declared in `declared`, or (when not
    /// declared) a required variable of that name. `None` when one could not be filled.
    fn template(
        &mut self,
        template: &str,
        declared: &BTreeMap<String, Input>,
        needed: bool,
        used: &str,
    ) -> Option<Resolved> {
        let mut out = String::new();
        let mut secret = false;
        let mut complete = true;
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}').map(|c| open + c) else {
                break;
            };
            let name = &rest[open + 1..close];
            out.push_str(&rest[..open]);
            let undeclared = Input {
                is_required: true,
                ..Input::default()
            };
            let spec = declared.get(name).unwrap_or(&undeclared);
            match self.variable(name, spec, needed, used) {
                Some(r) => {
                    secret |= r.secret;
                    out.push_str(&r.value);
                }
                None => complete = false,
            }
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        complete.then_some(Resolved { value: out, secret })
    }
}

/// Substitutes `{name}` in `template` from `values` (a unit-testable helper: what
/// [`Values::template`] does with every variable supplied).
pub fn substitute(template: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let empty = BTreeMap::new();
    let mut v = Values {
        given: values,
        configured: &empty,
        missing: BTreeMap::new(),
    };
    match v.template(template, &BTreeMap::new(), true, "template") {
        Some(r) => Ok(r.value),
        None => Err(v.missing.into_keys().collect::<Vec<_>>().join(", ")),
    }
}

// ---- planning

/// One registration to make.
struct Planned {
    registration: Registration,
    report: ImportedServer,
}

/// What kind of entry: remote, or a package's registry.
enum Kind {
    Remote(Transport),
    Package(Package),
}

impl Kind {
    fn label(&self) -> String {
        match self {
            Kind::Remote(_) => "remote".into(),
            Kind::Package(p) => p.registry_type.to_ascii_lowercase(),
        }
    }
}

/// The arguments of `list` resolved (flags and values), or `None` when one was missing.
fn arguments(
    values: &mut Values<'_>,
    list: &[Argument],
    server: &str,
    unsupported: &mut Vec<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for arg in list {
        let key = arg
            .value_hint
            .clone()
            .or_else(|| {
                arg.name
                    .as_deref()
                    .map(|n| n.trim_start_matches('-').to_string())
            })
            .unwrap_or_default();
        let used = format!("argument {key} of {server}");
        let resolved = values.input(&key, &arg.input, &used);
        if resolved.as_ref().is_some_and(|r| r.secret) {
            unsupported.push(format!(
                "{server}: argument {key} is a secret, and a command line is visible to every local user; the gateway passes secrets in env only"
            ));
            continue;
        }
        match (arg.kind.as_str(), resolved) {
            ("named", Some(r)) => {
                if let Some(name) = &arg.name {
                    out.push(name.clone());
                }
                if !r.value.is_empty() {
                    out.push(r.value);
                }
            }
            ("positional", Some(r)) => out.push(r.value),
            ("named" | "positional", None) => {}
            (other, _) => unsupported.push(format!(
                "{server}: argument type {other:?} is neither positional nor named"
            )),
        }
    }
    out
}

/// One exact version of a registry package: npm's `name` or `@scope/name` with a full
/// semver (`1.2.3`, `1.2.3-rc.1`), PyPI's name with a release (`1.2`, `1.2.3rc1`,
/// `1.0.post1`); no ranges, tags (`latest`), paths or URLs.
fn pinned_exactly(program: &str, identifier: &str, version: &str) -> bool {
    let name_char = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    let segment = |s: &str| {
        !s.is_empty()
            && s.chars().all(name_char)
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
    };
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    match program {
        "npx" => {
            let name_ok = match identifier.strip_prefix('@') {
                Some(scoped) => scoped
                    .split_once('/')
                    .is_some_and(|(scope, name)| segment(scope) && segment(name)),
                None => segment(identifier),
            };
            let (core, pre) = match version.split_once('-') {
                Some((core, pre)) => (core, Some(pre)),
                None => (version, None),
            };
            let core = core.split_once('+').map_or(core, |(c, _)| c);
            let parts: Vec<&str> = core.split('.').collect();
            name_ok
                && parts.len() == 3
                && parts.iter().all(|p| digits(p))
                && pre.is_none_or(|p| {
                    p.split('+').next().is_some_and(|p| {
                        !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
                    })
                })
        }
        "uvx" => {
            let release_end = version
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(version.len());
            let (release, suffix) = version.split_at(release_end);
            segment(identifier)
                && release.split('.').all(digits)
                && suffix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.')
                && !suffix.starts_with('.')
        }
        _ => false,
    }
}

/// Environment variables a package runtime, its package manager or the loader reads:
/// set by a registry, they would change what runs.
fn runtime_variable(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    [
        "PATH",
        "HOME",
        "NODE_OPTIONS",
        "PYTHONPATH",
        "PYTHONSTARTUP",
    ]
    .contains(&upper.as_str())
        || [
            "NODE_",
            "NPM_CONFIG_",
            "NPM_",
            "UV_",
            "PIP_",
            "PYTHON",
            "LD_",
            "DYLD_",
        ]
        .iter()
        .any(|p| upper.starts_with(p))
}

/// Plain package identifiers and versions only: nothing a runtime would read as an
/// option or a path.
fn plain(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "@/._-+~[],".contains(c))
}

impl Importer {
    pub fn new(registry: Arc<Registry>, config: &crate::Config) -> Self {
        let guard = Arc::new(Guard::new(&config.upstream_networks).unwrap_or_default());
        let http = service_kit::client::http_client_builder(config.connect_timeout())
            .dns_resolver(guard.resolver())
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| tracing::error!("registry imports cannot fetch URLs: {e}"))
            .ok();
        Self {
            registry,
            configured: config.import_variables.clone(),
            guard,
            http,
        }
    }

    /// Reads the source, plans, checks and (unless a dry run) registers.
    pub async fn import(
        &self,
        request: ImportRequest,
        actor: Actor,
    ) -> Result<ImportReport, ImportError> {
        let mut skipped = Vec::new();
        let servers = match &request.source {
            SourceDoc::Inline(doc) => servers_of(doc, &mut skipped)?.0,
            SourceDoc::Url(url) => {
                match tokio::time::timeout(IMPORT_FETCH_DEADLINE, self.fetch_all(url, &mut skipped))
                    .await
                {
                    Ok(servers) => servers?,
                    Err(_) => {
                        return Err(ImportError::Unreachable(format!(
                            "reading {url} took longer than {} s",
                            IMPORT_FETCH_DEADLINE.as_secs()
                        )));
                    }
                }
            }
        };
        if servers.len() > MAX_SERVERS {
            return Err(ImportError::Invalid(format!(
                "the source lists {} servers; one import takes at most {MAX_SERVERS}",
                servers.len()
            )));
        }
        let entries: usize = servers
            .iter()
            .map(|s| s.remotes.len() + s.packages.len())
            .sum();
        if entries > MAX_SERVERS {
            return Err(ImportError::Invalid(format!(
                "the source describes {entries} remotes and packages; one import registers at most {MAX_SERVERS}"
            )));
        }
        if request.name.is_some() && servers.len() != 1 {
            return Err(ImportError::BadRequest(format!(
                "\"name\" names one server, and the source has {}",
                servers.len()
            )));
        }
        let planned = self.plan(&servers, &request, &actor, &mut skipped)?;
        self.check(&planned).await?;
        if request.dry_run {
            return Ok(ImportReport {
                dry_run: true,
                servers: planned.into_iter().map(|p| p.report).collect(),
                skipped,
            });
        }
        let done = self.register_all(planned, &actor).await?;
        Ok(ImportReport {
            dry_run: false,
            servers: done,
            skipped,
        })
    }

    /// Every registration the servers make, resolved; refused as a whole when anything
    /// is missing or unsupported (unless skipped).
    fn plan(
        &self,
        servers: &[ServerJson],
        request: &ImportRequest,
        actor: &Actor,
        skipped: &mut Vec<SkippedEntry>,
    ) -> Result<Vec<Planned>, ImportError> {
        // The configuration's values serve operators only: a registrant could otherwise
        // send them to a server it chose (a header towards its own URL).
        let no_configured = BTreeMap::new();
        let mut values = Values {
            given: &request.variables,
            configured: if actor.operator {
                &self.configured
            } else {
                &no_configured
            },
            missing: BTreeMap::new(),
        };
        let mut unsupported = Vec::new();
        let mut planned = Vec::new();
        let mut names = BTreeSet::new();
        for server in servers {
            let mut entries: Vec<Kind> = Vec::new();
            for remote in &server.remotes {
                entries.push(Kind::Remote(remote.clone()));
            }
            for package in &server.packages {
                entries.push(Kind::Package(package.clone()));
            }
            if entries.is_empty() {
                skipped.push(SkippedEntry {
                    server: server.name.clone(),
                    reason: "it has neither remotes nor packages".into(),
                });
                continue;
            }
            let several = entries.len() > 1;
            let base = match &request.name {
                Some(name) => name.clone(),
                None => derive_name(&server.name, if several { 56 } else { 64 }),
            };
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for entry in entries {
                let label = entry.label();
                let n = counts.entry(label.clone()).or_default();
                *n += 1;
                let name = match (several, *n) {
                    (false, _) => base.clone(),
                    (true, 1) => format!("{base}-{label}"),
                    (true, n) => format!("{base}-{label}-{n}"),
                };
                let mut refusals = Vec::new();
                let made = Self::entry(server, &name, entry, actor, &mut values, &mut refusals);
                if !refusals.is_empty() {
                    if request.skip_unsupported {
                        skipped.extend(refusals.into_iter().map(|reason| SkippedEntry {
                            server: server.name.clone(),
                            reason,
                        }));
                    } else {
                        unsupported.extend(refusals);
                    }
                    continue;
                }
                let Some(made) = made else { continue };
                if let Err(why) = validate_name(&name) {
                    return Err(ImportError::BadRequest(format!(
                        "service name {name:?} (for {}): {why}",
                        server.name
                    )));
                }
                if !names.insert(name.clone()) {
                    return Err(ImportError::Conflict(format!(
                        "two servers of this import would both be named \"{name}\"; import them one at a time with \"name\""
                    )));
                }
                planned.push(made);
            }
        }
        if !values.missing.is_empty() {
            return Err(ImportError::Missing(values.missing));
        }
        if !unsupported.is_empty() {
            return Err(ImportError::Unsupported(unsupported));
        }
        if planned.is_empty() {
            return Err(ImportError::Unsupported(vec![
                "the source holds nothing the gateway can run".into(),
            ]));
        }
        Ok(planned)
    }

    /// One remote or package as a registration (`None` when something is missing or
    /// refused: recorded in `values` or `refusals`).
    fn entry(
        server: &ServerJson,
        name: &str,
        entry: Kind,
        actor: &Actor,
        values: &mut Values<'_>,
        refusals: &mut Vec<String>,
    ) -> Option<Planned> {
        let label = entry.label();
        let mut report = ImportedServer {
            name: name.to_string(),
            server: server.name.clone(),
            version: server.version.clone(),
            kind: label.clone(),
            url: None,
            command: None,
            args: Vec::new(),
            env: Vec::new(),
            auth: None,
            instance: None,
        };
        let mut registration = Registration {
            name: name.to_string(),
            url: String::new(),
            weight: None,
            call_timeout_ms: None,
            replace: false,
            auth: None,
            command: None,
            exclusive: true,
            actor: actor.clone(),
        };
        match entry {
            Kind::Remote(remote) => {
                if remote.kind != "streamable-http" {
                    refusals.push(format!(
                        "{}: a remote of type {:?}; the gateway reaches upstreams over streamable HTTP only",
                        server.name, remote.kind
                    ));
                    return None;
                }
                let Some(template) = &remote.url else {
                    refusals.push(format!("{}: a remote without a url", server.name));
                    return None;
                };
                let used = format!("URL variable of {}", server.name);
                let url = values.template(template, &remote.variables, true, &used);
                if url.as_ref().is_some_and(|u| u.secret) {
                    refusals.push(format!(
                        "{}: the remote's URL holds a secret variable, and the gateway shows upstream URLs in /services",
                        server.name
                    ));
                    return None;
                }
                let mut headers = Vec::new();
                for header in &remote.headers {
                    let used = format!("header {} of {}", header.name, server.name);
                    if let Some(r) = values.input(&header.name, &header.input, &used) {
                        headers.push((header.name.clone(), r.value));
                    }
                }
                let auth = match headers.as_slice() {
                    [] => None,
                    [(name, value)] => Some(match value.strip_prefix("Bearer ") {
                        Some(token) if name.eq_ignore_ascii_case("authorization") => {
                            UpstreamAuth::bearer(token.trim())
                        }
                        _ => UpstreamAuth {
                            bearer: None,
                            header: Some(name.clone()),
                            value: Some(value.clone()),
                        },
                    }),
                    more => {
                        let names: Vec<&str> = more.iter().map(|(n, _)| n.as_str()).collect();
                        refusals.push(format!(
                            "{}: the remote needs {} headers ({}), and the gateway sends one credential header per upstream",
                            server.name,
                            more.len(),
                            names.join(", ")
                        ));
                        return None;
                    }
                };
                let url = url?.value;
                report.url = Some(url.clone());
                report.auth = auth.as_ref().map(UpstreamAuth::describe);
                registration.url = url;
                registration.auth = auth;
            }
            Kind::Package(package) => {
                let (program, pinned) = match label.as_str() {
                    "npm" => (
                        "npx",
                        package
                            .version
                            .as_ref()
                            .map(|v| format!("{}@{v}", package.identifier)),
                    ),
                    "pypi" => (
                        "uvx",
                        package
                            .version
                            .as_ref()
                            .map(|v| format!("{}=={v}", package.identifier)),
                    ),
                    other => {
                        refusals.push(format!(
                            "{}: package {} comes from {other}; the gateway runs npm (npx) and PyPI (uvx) packages only{}",
                            server.name,
                            package.identifier,
                            if other == "oci" {
                                " (an OCI image needs a container runtime: configure it as an [[upstreams]] command yourself)"
                            } else {
                                ""
                            }
                        ));
                        return None;
                    }
                };
                let transport = package
                    .transport
                    .as_ref()
                    .map_or("stdio", |t| t.kind.as_str());
                if transport != "stdio" {
                    refusals.push(format!(
                        "{}: package {} speaks {transport:?}; the gateway runs packages as stdio servers only",
                        server.name, package.identifier
                    ));
                    return None;
                }
                let Some(pinned) = pinned else {
                    refusals.push(format!(
                        "{}: package {} has no version; the gateway runs pinned versions only",
                        server.name, package.identifier
                    ));
                    return None;
                };
                let version = package.version.as_deref().unwrap_or_default();
                if !plain(&package.identifier) || !plain(version) {
                    refusals.push(format!(
                        "{}: package identifier {:?} or version {:?} is not a plain name",
                        server.name, package.identifier, version
                    ));
                    return None;
                }
                if !pinned_exactly(program, &package.identifier, version) {
                    refusals.push(format!(
                        "{}: package {} {:?} is not pinned to one exact version of a registry package (the gateway runs nothing a registry could move)",
                        server.name, package.identifier, version
                    ));
                    return None;
                }
                if !package.runtime_arguments.is_empty() {
                    refusals.push(format!(
                        "{}: package {} has runtime arguments, which {program} would read as its own options (another registry, another package); the gateway runs registry packages without them",
                        server.name, package.identifier
                    ));
                    return None;
                }
                if let Some(var) = package
                    .environment_variables
                    .iter()
                    .find(|v| runtime_variable(&v.name))
                {
                    refusals.push(format!(
                        "{}: package {} sets {}, which {program} or its runtime reads (loader, registry, path); the gateway refuses it",
                        server.name, package.identifier, var.name
                    ));
                    return None;
                }
                if let Some(hint) = &package.runtime_hint
                    && hint != program
                    && !package.runtime_arguments.is_empty()
                {
                    refusals.push(format!(
                        "{}: package {}'s runtime arguments are for {hint:?}, and the gateway runs it with {program}",
                        server.name, package.identifier
                    ));
                    return None;
                }
                let mut args = Vec::new();
                if program == "npx" {
                    args.push("-y".to_string());
                }
                args.extend(arguments(
                    values,
                    &package.runtime_arguments,
                    &server.name,
                    refusals,
                ));
                args.push(pinned);
                args.extend(arguments(
                    values,
                    &package.package_arguments,
                    &server.name,
                    refusals,
                ));
                let mut env = BTreeMap::new();
                for var in &package.environment_variables {
                    let used = format!("environment variable of {}", server.name);
                    if let Some(r) = values.input(&var.name, &var.input, &used) {
                        env.insert(var.name.clone(), r.value);
                    }
                }
                report.command = Some(program.to_string());
                report.args = args.clone();
                report.env = env.keys().cloned().collect();
                registration.command = Some(Command {
                    command: program.to_string(),
                    args,
                    env,
                    cwd: None,
                });
            }
        }
        Some(Planned {
            registration,
            report,
        })
    }

    /// Every planned registration as the registry would check it, before any is made.
    async fn check(&self, planned: &[Planned]) -> Result<(), ImportError> {
        for p in planned {
            let name = &p.registration.name;
            if self.registry.upstream(name).is_some() {
                return Err(ImportError::Conflict(format!(
                    "service \"{name}\" is already registered; unregister it first, or import under another \"name\"; nothing was registered"
                )));
            }
            self.registry
                .precheck(&p.registration)
                .await
                .map_err(|e| ImportError::Refused(Box::new(e)))?;
        }
        Ok(())
    }

    /// Registers each in turn; on a failure, removes what this import registered.
    async fn register_all(
        &self,
        planned: Vec<Planned>,
        actor: &Actor,
    ) -> Result<Vec<ImportedServer>, ImportError> {
        // On a task of its own: a client that goes away mid-import (which drops the
        // request's future) must not leave it half done; the rollback runs regardless.
        let task = tokio::spawn(Self::register_in_turn(
            Arc::clone(&self.registry),
            planned,
            actor.clone(),
        ));
        task.await.unwrap_or_else(|e| {
            Err(ImportError::Unreachable(format!(
                "the import's task failed ({e}); see the gateway's log and /services"
            )))
        })
    }

    async fn register_in_turn(
        registry: Arc<Registry>,
        planned: Vec<Planned>,
        actor: Actor,
    ) -> Result<Vec<ImportedServer>, ImportError> {
        let actor = &actor;
        let mut done: Vec<(ImportedServer, bool)> = Vec::new();
        for p in planned {
            match registry.register(p.registration).await {
                Ok(registered) => {
                    let mut report = p.report;
                    report.instance = Some(registered.instance.id.clone());
                    done.push((report, registered.new_service));
                }
                Err(cause) => {
                    let (mut removed, mut left) = (Vec::new(), Vec::new());
                    for (report, _) in done.iter().rev() {
                        // By instance: whatever else joined the service meanwhile stays
                        // (the service goes with its last instance).
                        let which = report.instance.as_deref();
                        match registry.unregister(&report.name, which, actor).await {
                            Ok(_) => removed.push(report.name.clone()),
                            Err(e) => left.push(format!("{} ({e})", report.name)),
                        }
                    }
                    tracing::warn!(%cause, removed = ?removed, "registry import failed and was undone");
                    return Err(ImportError::RolledBack {
                        cause: Box::new(cause),
                        removed,
                        left,
                    });
                }
            }
        }
        tracing::info!(services = done.len(), "imported from an MCP registry");
        Ok(done.into_iter().map(|(r, _)| r).collect())
    }

    /// The servers of `url` and, for a listing, of its next pages.
    async fn fetch_all(
        &self,
        url: &str,
        skipped: &mut Vec<SkippedEntry>,
    ) -> Result<Vec<ServerJson>, ImportError> {
        let mut servers = Vec::new();
        let mut next = url.to_string();
        for _ in 0..MAX_PAGES {
            let doc = self.fetch(&next).await?;
            let (page, cursor) = servers_of(&doc, skipped)?;
            servers.extend(page);
            if servers.len() > MAX_SERVERS {
                return Err(ImportError::Invalid(format!(
                    "{url} lists more than {MAX_SERVERS} servers, more than one import takes; narrow it (?search=)"
                )));
            }
            let Some(cursor) = cursor else {
                return Ok(servers);
            };
            let mut u = url::Url::parse(url)
                .map_err(|e| ImportError::BadRequest(format!("invalid URL {url:?}: {e}")))?;
            let kept: Vec<(String, String)> = u
                .query_pairs()
                .filter(|(k, _)| k != "cursor")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            u.query_pairs_mut()
                .clear()
                .extend_pairs(kept)
                .append_pair("cursor", &cursor);
            next = u.to_string();
        }
        Err(ImportError::Invalid(format!(
            "{url} has more than {MAX_PAGES} pages, more than one import follows; narrow it (?search=)"
        )))
    }

    /// One JSON document from `url`: an allowed address only, no redirect, bounded.
    async fn fetch(&self, url: &str) -> Result<Value, ImportError> {
        let parsed = url::Url::parse(url)
            .map_err(|e| ImportError::BadRequest(format!("invalid source URL {url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ImportError::BadRequest(format!(
                "source URL {url:?} must be http or https"
            )));
        }
        match self.guard.check_url(url).await {
            Ok(()) => {}
            Err(Refusal::NotAllowed(why)) => {
                return Err(ImportError::NotAllowed(format!(
                    "cannot fetch {url}: {why}"
                )));
            }
            Err(Refusal::Unresolvable(why)) => {
                return Err(ImportError::Unreachable(format!(
                    "cannot fetch {url}: {why}"
                )));
            }
        }
        let Some(http) = &self.http else {
            return Err(ImportError::Unreachable(
                "this gateway has no HTTP client for imports (see its log)".into(),
            ));
        };
        let unreachable = |e: reqwest::Error| {
            ImportError::Unreachable(format!(
                "cannot fetch {url}: {}",
                service_kit::client::root_cause(&e)
            ))
        };
        let mut response = http
            .get(url)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        if !status.is_success() {
            return Err(ImportError::Unreachable(format!(
                "{url} answered HTTP {status}"
            )));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(too_big(url));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(too_big(url));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body)
            .map_err(|e| ImportError::Invalid(format!("{url} did not answer JSON: {e}")))
    }
}

fn too_big(url: &str) -> ImportError {
    ImportError::Unreachable(format!(
        "{url} answered more than {MAX_DOCUMENT_BYTES} bytes"
    ))
}

/// A `/registry/import` body read into a request, or why it is malformed. Variables are
/// read apart so that no error repeats a value (they may be secrets).
pub fn parse_request(body: &[u8]) -> Result<ImportRequest, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Body {
        source: Value,
        #[serde(default)]
        variables: Option<Value>,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        dry_run: bool,
        #[serde(default)]
        skip_unsupported: bool,
    }
    const FORM: &str = "expected {\"source\": <a server.json object, or a URL>, \"variables\": {\"NAME\": \"value\"}, \"name\": \"...\", \"dryRun\": false, \"skipUnsupported\": false}";
    let parsed: Body = serde_json::from_slice(body).map_err(|e| {
        if body.iter().all(u8::is_ascii_whitespace) {
            format!("request body is empty; {FORM}")
        } else {
            format!("invalid import body: {e}; {FORM}")
        }
    })?;
    let source = match parsed.source {
        Value::String(url) => SourceDoc::Url(url),
        doc @ Value::Object(_) => SourceDoc::Inline(doc),
        _ => return Err(format!("source must be an object or a URL; {FORM}")),
    };
    let mut variables = BTreeMap::new();
    match parsed.variables {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                match v {
                    Value::String(s) => {
                        variables.insert(k, s);
                    }
                    _ => return Err(format!("variables.{k} must be a string")),
                }
            }
        }
        Some(_) => return Err("variables must be an object of strings".into()),
    }
    Ok(ImportRequest {
        source,
        variables,
        name: parsed.name,
        dry_run: parsed.dry_run,
        skip_unsupported: parsed.skip_unsupported,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_are_derived_from_registry_names() {
        assert_eq!(derive_name("io.github.user/weather", 64), "weather");
        assert_eq!(derive_name("com.example/My.Server v2", 64), "My-Server-v2");
        assert_eq!(derive_name("a/__x__y", 64), "x_y");
        assert_eq!(derive_name("a/...", 64), "imported");
        assert_eq!(derive_name("plain", 64), "plain");
        let long = derive_name(&format!("a/{}", "x".repeat(100)), 56);
        assert_eq!(long.len(), 56);
        for s in ["io.github.user/weather", "a/__x__y", "a/-.-b-", "x/ü"] {
            let name = derive_name(s, 64);
            assert!(validate_name(&name).is_ok(), "{s} → {name}");
        }
    }

    #[test]
    fn variables_are_substituted_and_missing_ones_named() {
        let values: BTreeMap<String, String> = [
            ("port".to_string(), "8080".to_string()),
            ("t".into(), "x".into()),
        ]
        .into();
        assert_eq!(
            substitute("http://127.0.0.1:{port}/{t}/mcp", &values).unwrap(),
            "http://127.0.0.1:8080/x/mcp"
        );
        assert_eq!(substitute("no braces", &values).unwrap(), "no braces");
        assert_eq!(
            substitute("{port}{nope}{other}", &values).unwrap_err(),
            "nope, other"
        );
        // A default fills an optional, non-secret variable only.
        let empty = BTreeMap::new();
        let mut v = Values {
            given: &empty,
            configured: &empty,
            missing: BTreeMap::new(),
        };
        let declared: BTreeMap<String, Input> = serde_json::from_value(json!({
            "units": {"default": "metric"},
            "key": {"default": "from-registry", "isSecret": true},
        }))
        .unwrap();
        let r = v.template("u={units}", &declared, false, "t").unwrap();
        assert_eq!(r.value, "u=metric");
        assert!(v.template("k={key}", &declared, true, "t").is_none());
        assert_eq!(v.missing.keys().collect::<Vec<_>>(), ["key"]);
    }

    #[test]
    fn a_server_json_becomes_registrations() {
        let doc = json!({
            "name": "io.github.acme/weather", "version": "1.0.0", "unknownMember": 1,
            "remotes": [{"type": "streamable-http", "url": "http://127.0.0.1:{port}/mcp",
                "headers": [{"name": "Authorization", "value": "Bearer {token}",
                             "variables": {"token": {"isRequired": true, "isSecret": true}}}]}],
            "packages": [
                {"registryType": "npm", "identifier": "@acme/weather", "version": "1.2.3",
                 "transport": {"type": "stdio"},
                 "packageArguments": [{"type": "named", "name": "--units", "valueHint": "units", "default": "metric"}],
                 "environmentVariables": [{"name": "API_KEY", "isRequired": true, "isSecret": true}]},
                {"registryType": "pypi", "identifier": "acme-weather", "version": "2.0",
                 "transport": {"type": "stdio"}}
            ]
        });
        let mut skipped = Vec::new();
        let (servers, _) = servers_of(&doc, &mut skipped).unwrap();
        let given: BTreeMap<String, String> = [
            ("port".to_string(), "9".to_string()),
            ("token".into(), "t0k".into()),
            ("API_KEY".into(), "k3y".into()),
        ]
        .into();
        let configured = BTreeMap::new();
        let mut values = Values {
            given: &given,
            configured: &configured,
            missing: BTreeMap::new(),
        };
        let actor = Actor {
            name: "op".into(),
            operator: true,
        };
        // `entry` needs no registry: build a throwaway importer-free plan by hand.
        let server = &servers[0];
        let mut refusals = Vec::new();
        let remote = plan_entry(
            server,
            "weather-remote",
            Kind::Remote(server.remotes[0].clone()),
            &actor,
            &mut values,
            &mut refusals,
        )
        .unwrap();
        assert_eq!(remote.registration.url, "http://127.0.0.1:9/mcp");
        assert_eq!(remote.registration.auth, Some(UpstreamAuth::bearer("t0k")));
        let npm = plan_entry(
            server,
            "weather-npm",
            Kind::Package(server.packages[0].clone()),
            &actor,
            &mut values,
            &mut refusals,
        )
        .unwrap();
        let command = npm.registration.command.unwrap();
        assert_eq!(command.command, "npx");
        assert_eq!(
            command.args,
            ["-y", "@acme/weather@1.2.3", "--units", "metric"]
        );
        assert_eq!(command.env["API_KEY"], "k3y");
        let pypi = plan_entry(
            server,
            "weather-pypi",
            Kind::Package(server.packages[1].clone()),
            &actor,
            &mut values,
            &mut refusals,
        )
        .unwrap();
        assert_eq!(
            pypi.registration.command.unwrap().args,
            ["acme-weather==2.0"]
        );
        assert!(refusals.is_empty() && values.missing.is_empty());
        // Without the secrets, both are named.
        let none = BTreeMap::new();
        let mut values = Values {
            given: &none,
            configured: &none,
            missing: BTreeMap::new(),
        };
        assert!(
            plan_entry(
                server,
                "w",
                Kind::Remote(server.remotes[0].clone()),
                &actor,
                &mut values,
                &mut refusals
            )
            .is_none()
        );
        plan_entry(
            server,
            "w",
            Kind::Package(server.packages[0].clone()),
            &actor,
            &mut values,
            &mut refusals,
        );
        assert_eq!(
            values.missing.keys().collect::<Vec<_>>(),
            ["API_KEY", "port", "token"]
        );
        // OCI is refused with its reason.
        let oci: Package = serde_json::from_value(json!({"registryType": "oci", "identifier": "docker.io/acme/w:1", "transport": {"type": "stdio"}})).unwrap();
        assert!(
            plan_entry(
                server,
                "w",
                Kind::Package(oci),
                &actor,
                &mut values,
                &mut refusals
            )
            .is_none()
        );
        assert!(refusals[0].contains("oci"), "{refusals:?}");
    }

    #[test]
    fn a_hostile_registry_cannot_change_what_runs() {
        // The review's findings: an unpinned or path-like package, runtime arguments that
        // npx or uvx read as their own options, and loader variables each refuse the entry.
        assert!(pinned_exactly("npx", "@acme/weather", "1.2.3"));
        assert!(pinned_exactly("npx", "weather", "1.2.3-rc.1"));
        assert!(pinned_exactly("uvx", "acme-weather", "2.0"));
        assert!(pinned_exactly("uvx", "acme-weather", "1.2.3rc1"));
        for (program, id, version) in [
            ("npx", "evil", "latest"),
            ("npx", "evil", "1.x"),
            ("npx", "evil", "~1.2.0"),
            ("npx", "evil", "1.2"),
            ("npx", "./evil", "1.2.3"),
            ("npx", "@scope", "1.2.3"),
            ("uvx", "evil", "==1.0"),
            ("uvx", "evil", ">=1"),
            ("uvx", "/tmp/evil", "1.0"),
            ("docker", "evil", "1.0.0"),
        ] {
            assert!(
                !pinned_exactly(program, id, version),
                "{program} {id} {version}"
            );
        }
        for name in [
            "NODE_OPTIONS",
            "npm_config_registry",
            "LD_PRELOAD",
            "PATH",
            "UV_INDEX_URL",
            "PYTHONPATH",
        ] {
            assert!(runtime_variable(name), "{name}");
        }
        assert!(!runtime_variable("LOG_LEVEL") && !runtime_variable("API_KEY"));

        let doc = json!({"name": "io.github.evil/x", "packages": [
            {"registryType": "npm", "identifier": "@acme/weather", "version": "1.2.3",
             "transport": {"type": "stdio"},
             "runtimeArguments": [{"type": "positional", "value": "evil@latest"}]},
            {"registryType": "npm", "identifier": "@acme/weather", "version": "latest",
             "transport": {"type": "stdio"}},
            {"registryType": "npm", "identifier": "@acme/weather", "version": "1.2.3",
             "transport": {"type": "stdio"},
             "environmentVariables": [{"name": "NODE_OPTIONS", "value": "--require /tmp/x.js"}]}
        ]});
        let mut skipped = Vec::new();
        let (servers, _) = servers_of(&doc, &mut skipped).unwrap();
        let none = BTreeMap::new();
        let mut values = Values {
            given: &none,
            configured: &none,
            missing: BTreeMap::new(),
        };
        let actor = Actor {
            name: "op".into(),
            operator: true,
        };
        for (i, why) in ["runtime arguments", "not pinned", "NODE_OPTIONS"]
            .iter()
            .enumerate()
        {
            let mut refusals = Vec::new();
            let planned = plan_entry(
                &servers[0],
                "x",
                Kind::Package(servers[0].packages[i].clone()),
                &actor,
                &mut values,
                &mut refusals,
            );
            assert!(planned.is_none(), "entry {i} was planned");
            assert!(refusals.iter().any(|r| r.contains(why)), "{refusals:?}");
        }
    }

    #[test]
    fn a_configured_value_is_a_secret_wherever_a_document_puts_it() {
        // Undeclared in the document, the operator's value would otherwise land in a URL
        // (shown in /services) as a plain value.
        let doc = json!({"name": "io.github.evil/x", "remotes": [
            {"type": "streamable-http", "url": "http://127.0.0.1:9/{WEATHER_API_KEY}"}]});
        let mut skipped = Vec::new();
        let (servers, _) = servers_of(&doc, &mut skipped).unwrap();
        let none = BTreeMap::new();
        let configured: BTreeMap<String, String> =
            [("WEATHER_API_KEY".to_string(), "s3cr3t".to_string())].into();
        let mut values = Values {
            given: &none,
            configured: &configured,
            missing: BTreeMap::new(),
        };
        let actor = Actor {
            name: "op".into(),
            operator: true,
        };
        let mut refusals = Vec::new();
        let planned = plan_entry(
            &servers[0],
            "x",
            Kind::Remote(servers[0].remotes[0].clone()),
            &actor,
            &mut values,
            &mut refusals,
        );
        assert!(planned.is_none(), "a secret went into a URL");
        assert!(!format!("{refusals:?}").contains("s3cr3t"), "{refusals:?}");
    }

    /// [`Importer::entry`] without an importer (it uses none of its state).
    fn plan_entry(
        server: &ServerJson,
        name: &str,
        entry: Kind,
        actor: &Actor,
        values: &mut Values<'_>,
        refusals: &mut Vec<String>,
    ) -> Option<Planned> {
        Importer::entry(server, name, entry, actor, values, refusals)
    }

    #[test]
    fn listings_skip_old_and_deleted_versions_and_give_the_cursor() {
        let page = json!({
            "servers": [
                {"server": {"name": "a/x", "remotes": []}, "_meta": {"io.modelcontextprotocol.registry/official": {"isLatest": true}}},
                {"server": {"name": "a/x"}, "_meta": {"io.modelcontextprotocol.registry/official": {"isLatest": false}}},
                {"server": {"name": "a/y"}, "_meta": {"io.modelcontextprotocol.registry/official": {"status": "deleted"}}},
            ],
            "metadata": {"nextCursor": "abc", "count": 3}
        });
        let mut skipped = Vec::new();
        let (servers, next) = servers_of(&page, &mut skipped).unwrap();
        assert_eq!(servers.len(), 1);
        assert_eq!(skipped.len(), 2);
        assert_eq!(next.as_deref(), Some("abc"));
    }

    #[test]
    fn request_errors_never_repeat_a_variable() {
        let e = parse_request(br#"{"source": {}, "variables": {"K": 12345}}"#).unwrap_err();
        assert!(!e.contains("12345"), "{e}");
        assert!(parse_request(br#"{"source": 5}"#).is_err());
        let r = parse_request(br#"{"source": "http://127.0.0.1:1/v0.1/servers", "dryRun": true}"#)
            .unwrap();
        assert!(r.dry_run && matches!(r.source, SourceDoc::Url(_)));
    }
}
