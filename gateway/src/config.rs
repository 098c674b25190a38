//! Gateway configuration: built-in defaults, then an optional TOML file, then environment
//! variables, then command-line overrides (figment). [`Config::load`] validates every
//! value and reports the first bad one in a single line that names its key.
//!
//! Environment: `MCP_BEARER_TOKEN` sets `token`; every other key is `GATEWAY_<KEY>`
//! (`GATEWAY_LISTEN`, `GATEWAY_STORE`, `GATEWAY_CALL_TIMEOUT_MS`, ...). List-valued keys
//! also accept a comma-separated string: `GATEWAY_ALLOWED_HOSTS=gateway,mcp.example.com`,
//! `GATEWAY_UPSTREAMS=shopping-service=http://127.0.0.1:3002/mcp,user-service=...`.
//!
//! Invariant: a configuration that validates is one the gateway can run; anything
//! invalid is refused at start with the key that is wrong.

use std::{path::PathBuf, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Deserializer, Serialize};

use crate::upstream::balance::Strategy;

/// Default listen address of the gateway.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3001";

/// Everything the gateway can be told at start-up.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    /// Address to listen on (`host:port`).
    pub listen: String,
    /// Bearer token every protected route requires (`MCP_BEARER_TOKEN`, `--token`).
    pub token: String,
    /// Accept the well-known default token while listening on a non-loopback address
    /// (otherwise start-up stops: anyone who read the README holds every scope).
    pub insecure_default_token: bool,
    /// Where registrations live: the path of the embedded SQLite file (created if
    /// missing), or a PostgreSQL URL (`postgres://user:password@host:5432/db`) shared by
    /// every replica of a cluster.
    pub store: PathBuf,
    /// The secret every replica of a cluster shares (at least 16 characters): it
    /// encrypts upstream credentials and stdio commands at rest in a PostgreSQL store.
    /// Required with one; unused with the SQLite file.
    pub cluster_key: Option<Secret>,
    /// Where the other replicas of a cluster reach this one (`host:port`, plain HTTP): a
    /// client's stream resumed (`Last-Event-ID`) through another replica is passed to
    /// the one holding it. Unset: the address it listens on, with an unspecified IP
    /// (`0.0.0.0`, `::`) replaced by its host name (`HOSTNAME`).
    pub cluster_address: Option<String>,
    /// Host names accepted in `Host`/`Origin` besides loopback (`*` accepts any).
    #[serde(deserialize_with = "list_or_csv")]
    pub allowed_hosts: Vec<String>,
    /// Browser origins accepted in `Origin` on `/mcp` besides loopback ones (`*` accepts
    /// any). A request with any other `Origin` gets 403 (DNS-rebinding protection).
    #[serde(deserialize_with = "list_or_csv")]
    pub allowed_origins: Vec<String>,
    /// Upstreams connected at start-up, in addition to persisted registrations.
    #[serde(deserialize_with = "upstreams_or_csv")]
    pub upstreams: Vec<UpstreamSpec>,
    /// Programs `POST /register` may start as stdio servers (exactly as named, for
    /// credentials with the `operate` scope). Empty (the default): registering a stdio
    /// server over HTTP is refused, because starting a command an HTTP request names is
    /// remote code execution. Configured `[[upstreams]]` with a `command` always run.
    #[serde(deserialize_with = "list_or_csv")]
    pub allowed_commands: Vec<String>,
    /// Values for the variables of servers imported from an MCP registry (`gateway
    /// import`, `POST /registry/import`), by name: the secrets and required inputs a
    /// `server.json` asks for (`{"WEATHER_API_KEY": "..."}`). A request's own
    /// `variables` come first; a registry never supplies them. TOML only
    /// (`[import_variables]`).
    pub import_variables: std::collections::BTreeMap<String, String>,
    /// Deadline for one proxied call, in milliseconds.
    pub call_timeout_ms: u64,
    /// Deadline for connecting to an upstream and its `initialize`, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Interval between health pings of each upstream, in milliseconds.
    pub health_interval_ms: u64,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Largest answer an upstream may send for one request: a JSON body, or one message
    /// of an SSE stream. Bigger ones fail that request with a clear error.
    pub max_response_bytes: usize,
    /// Entries per page of `tools/list` (clients follow `nextCursor` for the rest).
    pub list_page_size: usize,
    /// Tool search on `/mcp`: `tools/list` offers `search_tools`, `describe_tools` and
    /// `call_tool` instead of the catalog. `off`, `on`, or `auto`: on for a caller whose
    /// visible catalog has more than `tool_search_max_tools` tools or more than
    /// `tool_search_max_bytes` bytes of definitions.
    pub tool_search: crate::search::Mode,
    pub tool_search_max_tools: usize,
    pub tool_search_max_bytes: usize,
    /// Virtual servers (`[[virtual_servers]]`): named subsets of the federation, each
    /// served at `/servers/{name}/mcp`; more can be defined at run time
    /// (`POST /virtual-servers`).
    pub virtual_servers: Vec<crate::servers::Definition>,
    /// Serve tools' input and output schemas self-contained: `$ref`s to the schema's
    /// own `$defs` inlined, for clients that reject references. A schema that cannot be
    /// (recursive, say) is served as written and `/services` says why.
    pub inline_schema_refs: bool,
    /// How calls spread over a service's instances: `round_robin`,
    /// `least_outstanding` or `weighted`.
    pub balance: Strategy,
    /// Consecutive failures (timeouts, transport errors) that open an instance's circuit.
    pub breaker_failures: u32,
    /// How long an open circuit refuses calls before one probe is let through, in ms.
    pub breaker_cooldown_ms: u64,
    /// On shutdown, how long in-flight calls may take to finish, in milliseconds.
    pub drain_timeout_ms: u64,
    /// Threads that serve requests (the runtime's workers); unset: half the cores,
    /// rounded up ([`Config::workers`]). Idle workers woken to share a call's few
    /// microseconds of work cost more than they give until the load needs them
    /// (BENCHMARKS.md measures 1 and 2 on 2 cores).
    pub worker_threads: Option<usize>,
    /// Log one JSON object per line instead of human-readable lines.
    pub log_json: bool,
    /// Export OpenTelemetry traces over OTLP/HTTP (JSON) to this collector
    /// (`http://collector:4318`); off when unset.
    pub otlp_endpoint: Option<String>,
    /// Record every tool call (`GET /calls`, `GET /stats`).
    pub call_log: bool,
    /// The SQLite file the call log is written to; unset: the store's file, or with a
    /// PostgreSQL store that database (table `calls_log`, shared by every replica). Set
    /// with a PostgreSQL store, each replica keeps its own log in this file.
    pub call_log_store: Option<PathBuf>,
    /// The call log keeps at most this many calls...
    pub call_log_max_rows: usize,
    /// ...and none older than this, in milliseconds.
    pub call_log_max_age_ms: u64,
    /// Also record each call's arguments and result (redacted as below).
    pub call_log_payloads: bool,
    /// Names of secrets, whose values are replaced by `"[redacted]"` in recorded
    /// arguments and results: members at any depth, and pairs inside text values, whose
    /// name (lowercased, without `-` and `_`) contains one of these (normalized alike),
    /// so `token` covers `access_token` and `X-Auth-Token`, `cookie` covers `Set-Cookie`.
    #[serde(deserialize_with = "list_or_csv")]
    pub call_log_redact: Vec<String>,
    /// The gateway's public base URL (`https://gateway.example.com`), as named in its
    /// RFC 9728 metadata and 401 challenges; unset: `http://` and the request's `Host`.
    pub public_url: Option<String>,
    /// Authorization servers that issue tokens for this gateway (RFC 9728 metadata).
    #[serde(deserialize_with = "list_or_csv")]
    pub authorization_servers: Vec<String>,
    /// Networks upstreams may be in (CIDR, single addresses, or `*` for any address but
    /// link-local/metadata, multicast and unspecified ones). Loopback by default.
    #[serde(deserialize_with = "list_or_csv")]
    pub upstream_networks: Vec<String>,
    /// PEM files of CA certificates to trust for `https` upstreams, besides Mozilla's
    /// roots (a private CA, a self-signed server).
    #[serde(deserialize_with = "list_or_csv")]
    pub upstream_ca_files: Vec<String>,
    /// Further Bearer credentials, each with its scopes (the `token` above holds them
    /// all).
    pub credentials: Vec<Credential>,
    /// JWT bearer tokens, accepted besides the static credentials.
    pub jwt: Option<JwtConfig>,
    /// An MCP session nobody has used for this long is closed, in milliseconds.
    pub session_idle_timeout_ms: u64,
    /// Open MCP sessions one credential may hold at once.
    pub max_sessions_per_credential: usize,
    /// Open MCP sessions in all, whoever holds them.
    pub max_sessions: usize,
    /// How long a call that asked a 2026-07-28 client for input (`input_required`)
    /// waits for the client's retry, in milliseconds; then the backend gets
    /// `notifications/cancelled`.
    pub input_timeout_ms: u64,
    /// Calls waiting for their 2026-07-28 client's input at once, in all.
    pub max_waiting_calls: usize,
    /// Calls waiting for their 2026-07-28 client's input at once, per credential.
    pub max_waiting_calls_per_credential: usize,
    /// A session whose client has not sent `notifications/initialized` within this
    /// time is closed, in milliseconds.
    pub session_init_timeout_ms: u64,
    /// Open client connections at once; more wait to be accepted.
    pub max_connections: usize,
    /// A client must send a request's whole header within this time, in milliseconds;
    /// a kept-alive connection that starts no new request within it is closed.
    pub header_read_timeout_ms: u64,
    /// A request's body must arrive whole within this time, in milliseconds.
    pub body_read_timeout_ms: u64,
    /// Largest request header block (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// Largest `callTimeoutMs` a registration (or `call_timeout_ms` here) may ask for.
    pub max_call_timeout_ms: u64,
    /// Most tools (and, each on its own, prompts, resources and templates) one upstream
    /// may list; a longer listing is refused.
    pub max_list_items: usize,
    /// Most pages one upstream listing may take.
    pub max_list_pages: usize,
    /// Most bytes one upstream listing may take, over all its pages.
    pub max_list_bytes: usize,
    /// A service name that was unregistered stays reserved for its last owner this long
    /// (operators may still take it), in milliseconds.
    pub name_reservation_ms: u64,
    /// Failed authentications one client address may make per second (burst: ten
    /// seconds' worth); past it, 429.
    pub auth_failures_per_second: u32,
    /// Requests per second one credential may send (0: no limit).
    pub rate_limit_per_credential: u32,
    /// Calls per second one tool may take, from everyone (0: no limit).
    pub rate_limit_per_tool: u32,
}

pub use crate::jwt::JwtConfig;

impl Config {
    /// The worker threads the gateway runs: `worker_threads`, else half the cores
    /// (rounded up, at least 1).
    pub fn workers(&self) -> usize {
        self.worker_threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .div_ceil(2)
        })
    }

    /// Tool search as configured.
    pub fn tool_search(&self) -> crate::search::Settings {
        crate::search::Settings {
            mode: self.tool_search,
            max_tools: self.tool_search_max_tools,
            max_bytes: self.tool_search_max_bytes,
        }
    }

    /// The audience JWTs must name: configured, else the gateway's MCP resource URL.
    pub fn jwt_audience(&self) -> Option<String> {
        let jwt = self.jwt.as_ref()?;
        jwt.audience.clone().or_else(|| {
            self.public_url
                .as_ref()
                .map(|u| format!("{}/mcp", u.trim_end_matches('/')))
        })
    }
}

/// A named Bearer token and what it may do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// Shown in logs and used to bind MCP sessions; never the token.
    pub name: String,
    pub token: String,
    /// Any of `list`, `call`, `register`, `operate`.
    pub scopes: Vec<String>,
    /// Only these services' tools, prompts and resources (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<String>>,
    /// Only these tools, by the name their service gives them (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// Only these virtual servers' endpoints (`/servers/{name}/mcp`), and not `/mcp`
    /// (every endpoint when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_servers: Option<Vec<String>>,
}

/// An upstream named in the configuration: an HTTP one (`url`) or a stdio server the
/// gateway runs (`command`, `args`, `env`, `cwd`, `instances`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// A stdio server: the program the gateway runs (instead of `url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// The stdio server's environment (values may be secrets: never shown).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// How many processes of the stdio server run, balanced like HTTP instances
    /// (default 1, at most [`MAX_STDIO_INSTANCES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<u32>,
    /// Share of calls under the `weighted` strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Call deadline for this service, overriding `call_timeout_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_timeout_ms: Option<u64>,
    /// The gateway's own credential towards this upstream: `{ bearer = "..." }` or
    /// `{ header = "X-Api-Key", value = "..." }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<crate::upstream::secret::UpstreamAuth>,
}

/// The most processes one configured stdio server may run.
pub const MAX_STDIO_INSTANCES: u32 = 16;

impl UpstreamSpec {
    /// The stdio server's command, if this is one.
    pub fn stdio(&self) -> Option<crate::upstream::stdio::Command> {
        self.command
            .as_ref()
            .map(|command| crate::upstream::stdio::Command {
                command: command.clone(),
                args: self.args.clone(),
                env: self.env.clone(),
                cwd: self.cwd.clone(),
            })
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.into(),
            token: service_kit::DEFAULT_TOKEN.into(),
            insecure_default_token: false,
            store: PathBuf::from("gateway.db"),
            cluster_key: None,
            cluster_address: None,
            call_log_store: None,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            upstreams: Vec::new(),
            allowed_commands: Vec::new(),
            import_variables: std::collections::BTreeMap::new(),
            call_timeout_ms: 30_000,
            connect_timeout_ms: 5_000,
            health_interval_ms: 10_000,
            max_body_bytes: 4 * 1024 * 1024,
            max_response_bytes: 16 * 1024 * 1024,
            list_page_size: 100,
            tool_search: crate::search::Mode::Auto,
            tool_search_max_tools: crate::search::Settings::default().max_tools,
            tool_search_max_bytes: crate::search::Settings::default().max_bytes,
            inline_schema_refs: false,
            virtual_servers: Vec::new(),
            balance: Strategy::RoundRobin,
            breaker_failures: 5,
            breaker_cooldown_ms: 5_000,
            drain_timeout_ms: 10_000,
            log_json: false,
            otlp_endpoint: None,
            worker_threads: None,
            call_log: true,
            call_log_max_rows: 100_000,
            call_log_max_age_ms: 7 * 24 * 3600 * 1000,
            call_log_payloads: false,
            call_log_redact: [
                "password",
                "passwd",
                "passphrase",
                "secret",
                "token",
                "authorization",
                "bearer",
                "api_key",
                "cookie",
                "session",
                "credential",
                "private_key",
                "signature",
            ]
            .map(String::from)
            .to_vec(),
            public_url: None,
            authorization_servers: Vec::new(),
            upstream_networks: crate::upstream::guard::LOOPBACK_NETWORKS
                .iter()
                .map(|n| n.to_string())
                .collect(),
            upstream_ca_files: Vec::new(),
            credentials: Vec::new(),
            jwt: None,
            session_idle_timeout_ms: 300_000,
            max_sessions_per_credential: 1_000,
            max_sessions: 10_000,
            input_timeout_ms: 120_000,
            max_waiting_calls: 1_000,
            max_waiting_calls_per_credential: 100,
            session_init_timeout_ms: 30_000,
            max_connections: 4_096,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            max_header_bytes: 64 * 1024,
            max_call_timeout_ms: 600_000,
            max_list_items: 10_000,
            max_list_pages: 100,
            max_list_bytes: 32 * 1024 * 1024,
            name_reservation_ms: 7 * 24 * 3600 * 1000,
            auth_failures_per_second: 10,
            rate_limit_per_credential: 0,
            rate_limit_per_tool: 0,
        }
    }
}

/// `host` (of a listen address) is this machine only: a loopback address or `localhost`.
fn loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The top-level keys of the configuration.
fn known_keys() -> Vec<String> {
    match serde_json::to_value(Config::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// A configuration value that cannot be used, named by its key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key}: {why}")]
pub struct ConfigError {
    pub key: String,
    pub why: String,
}

/// `value` (the setting `key`) must be an http(s) URL with a host.
fn http_url(key: impl Into<String>, value: &str) -> Result<(), ConfigError> {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(bad(key, format!("expected an http(s) URL, got {value:?}"))),
    }
}

fn bad(key: impl Into<String>, why: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        why: why.into(),
    }
}

impl Config {
    /// Defaults, then the TOML file (if given; it must exist), then the environment,
    /// then `overrides` (command-line flags), validated.
    pub fn load(
        file: Option<&std::path::Path>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(bad("config", format!("file {} not found", path.display())));
            }
            figment = figment.merge(Toml::file(path));
        }
        // One token setting: `token` in the file, MCP_BEARER_TOKEN, --token. A
        // GATEWAY_TOKEN would be a second name for it (and the services and the CLI
        // read MCP_BEARER_TOKEN only).
        if std::env::var_os("GATEWAY_TOKEN").is_some() {
            return Err(bad(
                "GATEWAY_TOKEN",
                "is not a setting: the token is MCP_BEARER_TOKEN (or token in the file, or --token)",
            ));
        }
        figment = figment
            .merge(
                Env::raw()
                    .only(&["MCP_BEARER_TOKEN"])
                    .map(|_| "token".into()),
            )
            .merge(Env::prefixed("GATEWAY_").ignore(&["CONFIG", "URL", "TOKEN"]))
            .merge(Serialized::defaults(overrides));
        Self::extract(figment)
    }

    /// Every setting's environment variable, from the configuration's own definition
    /// (what `gateway --help` lists).
    pub fn environment_variables() -> Vec<String> {
        known_keys()
            .into_iter()
            .filter(|k| !matches!(k.as_str(), "credentials" | "jwt" | "import_variables"))
            .map(|k| match k.as_str() {
                "token" => "MCP_BEARER_TOKEN".to_string(),
                _ => format!("GATEWAY_{}", k.to_ascii_uppercase()),
            })
            .collect()
    }

    /// The defaults under a TOML text alone (no environment, no flags): what a
    /// configuration file says, checked as at start-up.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::extract(
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text)),
        )
    }

    fn extract(figment: Figment) -> Result<Self, ConfigError> {
        // A misspelled key is an error, not a silent default.
        let known = known_keys();
        if let Ok(data) = figment::Provider::data(&figment) {
            for dict in data.values() {
                if let Some(key) = dict.keys().find(|k| !known.contains(*k)) {
                    let from = match figment.find_metadata(key) {
                        Some(m) if m.name.contains("environment") => {
                            format!(
                                " (environment variable GATEWAY_{})",
                                key.to_ascii_uppercase()
                            )
                        }
                        Some(m) => match &m.source {
                            Some(source) => format!(" (in {source})"),
                            None => format!(" ({})", m.name),
                        },
                        None => String::new(),
                    };
                    // A key may be anything TOML allows, the empty one too: named quoted
                    // when it would not read as a name.
                    let name = if key.is_empty()
                        || key.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        format!("{key:?}")
                    } else {
                        key.clone()
                    };
                    return Err(bad(
                        name,
                        format!(
                            "unknown setting{from}; see gateway --help or the README for the settings"
                        ),
                    ));
                }
            }
        }
        let config: Config = figment.extract().map_err(|e| {
            let key = e.path.join(".");
            let key = if key.is_empty() {
                "config".to_string()
            } else {
                key
            };
            bad(key, e.kind.to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The store's PostgreSQL URL, when it is one (else `store` is a SQLite file).
    pub fn store_url(&self) -> Option<&str> {
        let s = self.store.to_str()?;
        (s.starts_with("postgres://") || s.starts_with("postgresql://")).then_some(s)
    }

    /// Where the call log is written (see `call_log_store`); `replica` marks this
    /// replica's calls in a cluster's shared log.
    pub fn call_log_place(&self, replica: &str) -> crate::observe::calllog::Place {
        use crate::observe::calllog::Place;
        match (&self.call_log_store, self.store_url()) {
            (Some(path), _) => Place::File(path.clone()),
            (None, Some(url)) => Place::Postgres {
                url: url.to_string(),
                replica: replica.to_string(),
            },
            (None, None) => Place::File(self.store.clone()),
        }
    }

    /// Checks values serde cannot: non-empty token, parseable address, positive timeouts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.token.trim().is_empty() {
            return Err(bad("token", "must not be empty"));
        }
        if self
            .token
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(bad("token", "must not contain whitespace"));
        }
        if self.store_url().is_some() {
            match self.cluster_key.as_ref().map(|k| k.expose().trim()) {
                None | Some("") => {
                    return Err(bad(
                        "cluster_key",
                        "must be set when the store is PostgreSQL: it encrypts upstream credentials in the shared store, and every replica needs the same one (GATEWAY_CLUSTER_KEY)",
                    ));
                }
                Some(key) if key.chars().count() < 16 => {
                    return Err(bad("cluster_key", "must be at least 16 characters"));
                }
                Some(_) => {}
            }
        }
        if let Some(address) = &self.cluster_address {
            match address.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
                _ => return Err(bad("cluster_address", "must be host:port")),
            }
        }
        match self.listen.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                if self.token == service_kit::DEFAULT_TOKEN
                    && !self.insecure_default_token
                    && !loopback_host(host)
                {
                    return Err(bad(
                        "token",
                        format!(
                            "is the well-known default ({}) while listening on {}, beyond this machine: set MCP_BEARER_TOKEN to a secret of your own, or insecure_default_token = true to accept it knowingly",
                            service_kit::DEFAULT_TOKEN,
                            self.listen
                        ),
                    ));
                }
            }
            _ => {
                return Err(bad(
                    "listen",
                    format!("expected host:port, got {:?}", self.listen),
                ));
            }
        }
        for (key, value) in [
            ("call_timeout_ms", self.call_timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("health_interval_ms", self.health_interval_ms),
            ("breaker_failures", u64::from(self.breaker_failures)),
            ("breaker_cooldown_ms", self.breaker_cooldown_ms),
            ("list_page_size", self.list_page_size as u64),
            ("tool_search_max_tools", self.tool_search_max_tools as u64),
            ("tool_search_max_bytes", self.tool_search_max_bytes as u64),
            ("session_idle_timeout_ms", self.session_idle_timeout_ms),
            (
                "max_sessions_per_credential",
                self.max_sessions_per_credential as u64,
            ),
            ("max_sessions", self.max_sessions as u64),
            ("input_timeout_ms", self.input_timeout_ms),
            ("max_waiting_calls", self.max_waiting_calls as u64),
            (
                "max_waiting_calls_per_credential",
                self.max_waiting_calls_per_credential as u64,
            ),
            ("session_init_timeout_ms", self.session_init_timeout_ms),
            ("max_connections", self.max_connections as u64),
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("body_read_timeout_ms", self.body_read_timeout_ms),
            ("max_call_timeout_ms", self.max_call_timeout_ms),
            ("max_list_items", self.max_list_items as u64),
            ("max_list_pages", self.max_list_pages as u64),
            (
                "auth_failures_per_second",
                u64::from(self.auth_failures_per_second),
            ),
        ] {
            if value == 0 {
                return Err(bad(key, "must be greater than 0"));
            }
        }
        if self.call_timeout_ms > self.max_call_timeout_ms {
            return Err(bad(
                "call_timeout_ms",
                format!(
                    "must be at most max_call_timeout_ms ({})",
                    self.max_call_timeout_ms
                ),
            ));
        }
        if self.max_header_bytes < 8192 {
            return Err(bad("max_header_bytes", "must be at least 8192"));
        }
        if self.max_list_bytes < 1024 {
            return Err(bad("max_list_bytes", "must be at least 1024"));
        }
        if self.max_body_bytes < 1024 {
            return Err(bad("max_body_bytes", "must be at least 1024"));
        }
        if self.call_log_max_rows == 0 {
            return Err(bad("call_log_max_rows", "must be at least 1"));
        }
        if self.call_log_max_age_ms == 0 {
            return Err(bad("call_log_max_age_ms", "must be greater than 0"));
        }
        if self.max_response_bytes < 1024 {
            return Err(bad("max_response_bytes", "must be at least 1024"));
        }
        crate::upstream::guard::Guard::new(&self.upstream_networks)
            .map_err(|why| bad("upstream_networks", why))?;
        for (i, file) in self.upstream_ca_files.iter().enumerate() {
            service_kit::client::pem_certificates(file.as_ref())
                .map_err(|why| bad(format!("upstream_ca_files[{i}]"), why))?;
        }
        let mut names = std::collections::HashSet::from(["default"]);
        let mut tokens = std::collections::HashSet::from([self.token.as_str()]);
        if let Some(jwt) = &self.jwt {
            if jwt.issuer.trim().is_empty() {
                return Err(bad("jwt.issuer", "must not be empty"));
            }
            let Some(audience) = self.jwt_audience() else {
                return Err(bad(
                    "jwt.audience",
                    "set it, or public_url (the audience is then public_url + /mcp)",
                ));
            };
            if jwt.hs256_secret.is_none() && jwt.jwks_file.is_none() && jwt.jwks_url.is_none() {
                return Err(bad(
                    "jwt",
                    "needs hs256_secret, jwks_file or jwks_url to verify tokens with",
                ));
            }
            if jwt.hs256_secret.as_ref().is_some_and(|s| s.len() < 32) {
                return Err(bad("jwt.hs256_secret", "must be at least 32 bytes"));
            }
            if let Some(url) = &jwt.jwks_url {
                http_url("jwt.jwks_url", url)?;
            }
            crate::jwt::JwtVerifier::new(jwt, audience).map_err(|why| bad("jwt.jwks_file", why))?;
        }
        for (i, c) in self.credentials.iter().enumerate() {
            let key = |field: &str| format!("credentials[{i}].{field}");
            if c.name.trim().is_empty() || !names.insert(c.name.as_str()) {
                return Err(bad(
                    key("name"),
                    "must be non-empty, unique and not \"default\"",
                ));
            }
            // JWT identities are `jwt:<sub>`: a static name there could pass for one.
            if c.name.starts_with("jwt:") {
                return Err(bad(
                    key("name"),
                    "must not start with \"jwt:\" (JWT identities do)",
                ));
            }
            if c.name
                .chars()
                .any(|ch| ch.is_whitespace() || ch.is_control())
            {
                return Err(bad(
                    key("name"),
                    "must be printable, without whitespace or control characters",
                ));
            }
            if c.token.len() < 16
                || c.token
                    .chars()
                    .any(|ch| ch.is_whitespace() || ch.is_control())
            {
                return Err(bad(
                    key("token"),
                    "must be at least 16 characters without whitespace",
                ));
            }
            if !tokens.insert(c.token.as_str()) {
                return Err(bad(key("token"), "is already another credential's token"));
            }
            crate::vocab::Scopes::parse(&c.scopes).map_err(|why| bad(key("scopes"), why))?;
        }
        let mut servers = std::collections::HashSet::new();
        for (i, d) in self.virtual_servers.iter().enumerate() {
            d.compile()
                .map_err(|why| bad(format!("virtual_servers[{i}]"), why.0))?;
            if !servers.insert(d.name.as_str()) {
                return Err(bad(
                    format!("virtual_servers[{i}].name"),
                    format!("{:?} is defined twice", d.name),
                ));
            }
        }
        if self.virtual_servers.len() > crate::servers::MAX_SERVERS {
            return Err(bad(
                "virtual_servers",
                format!("at most {} virtual servers", crate::servers::MAX_SERVERS),
            ));
        }
        if let Some(url) = &self.public_url {
            http_url("public_url", url)?;
        }
        if let Some(n) = self.worker_threads
            && !(1..=1024).contains(&n)
        {
            return Err(bad("worker_threads", format!("must be 1-1024, got {n}")));
        }
        if let Some(url) = &self.otlp_endpoint {
            http_url("otlp_endpoint", url)?;
        }
        for (i, server) in self.authorization_servers.iter().enumerate() {
            http_url(format!("authorization_servers[{i}]"), server)?;
        }
        for (i, up) in self.upstreams.iter().enumerate() {
            crate::vocab::validate_name(&up.name)
                .map_err(|why| bad(format!("upstreams[{i}].name"), why))?;
            match up.stdio() {
                Some(command) => {
                    if !up.url.is_empty() {
                        return Err(bad(
                            format!("upstreams[{i}].url"),
                            "give either url (an HTTP server) or command (a stdio server), not both",
                        ));
                    }
                    if up.auth.is_some() {
                        return Err(bad(
                            format!("upstreams[{i}].auth"),
                            "a stdio server takes its credentials in env, not auth",
                        ));
                    }
                    command
                        .validate()
                        .map_err(|why| bad(format!("upstreams[{i}].command"), why))?;
                    if up
                        .instances
                        .is_some_and(|n| n == 0 || n > MAX_STDIO_INSTANCES)
                    {
                        return Err(bad(
                            format!("upstreams[{i}].instances"),
                            format!("must be 1-{MAX_STDIO_INSTANCES}"),
                        ));
                    }
                }
                None => {
                    if !up.args.is_empty()
                        || !up.env.is_empty()
                        || up.cwd.is_some()
                        || up.instances.is_some()
                    {
                        return Err(bad(
                            format!("upstreams[{i}].command"),
                            "args, env, cwd and instances belong to a stdio server: give its command",
                        ));
                    }
                    crate::vocab::normalize_url(&up.url)
                        .map_err(|why| bad(format!("upstreams[{i}].url"), why))?;
                }
            }
            if up.weight == Some(0) {
                return Err(bad(format!("upstreams[{i}].weight"), "must be at least 1"));
            }
            if let Some(ms) = up.call_timeout_ms
                && (ms == 0 || ms > self.max_call_timeout_ms)
            {
                return Err(bad(
                    format!("upstreams[{i}].call_timeout_ms"),
                    format!(
                        "must be between 1 and max_call_timeout_ms ({})",
                        self.max_call_timeout_ms
                    ),
                ));
            }
            if let Some(auth) = &up.auth {
                auth.header()
                    .map_err(|why| bad(format!("upstreams[{i}].auth"), why))?;
            }
        }
        Ok(())
    }

    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn health_interval(&self) -> Duration {
        Duration::from_millis(self.health_interval_ms)
    }
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
    pub fn session_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.session_idle_timeout_ms)
    }

    /// What the gateway's HTTP server lets its clients hold.
    pub fn serve_limits(&self) -> service_kit::serve::Limits {
        service_kit::serve::Limits {
            max_connections: self.max_connections,
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
            max_header_bytes: self.max_header_bytes,
        }
    }

    /// The knobs every upstream instance runs with.
    pub fn upstream_options(&self) -> crate::upstream::Options {
        crate::upstream::Options {
            connect_timeout: self.connect_timeout(),
            call_timeout: self.call_timeout(),
            health_interval: self.health_interval(),
            pings: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
            policy: crate::upstream::health::Policy {
                failure_threshold: self.breaker_failures,
                cooldown: Duration::from_millis(self.breaker_cooldown_ms),
            },
            strategy: self.balance,
            max_response_bytes: self.max_response_bytes,
            guard: std::sync::Arc::new(
                crate::upstream::guard::Guard::new(&self.upstream_networks).unwrap_or_default(),
            ),
            list_bounds: crate::upstream::ListBounds {
                items: self.max_list_items,
                pages: self.max_list_pages,
                bytes: self.max_list_bytes,
            },
            max_call_timeout: Duration::from_millis(self.max_call_timeout_ms),
            tls: self.upstream_tls(),
        }
    }

    /// TLS towards `https` upstreams: Mozilla's roots and `upstream_ca_files` (checked
    /// by `validate`; an unreadable file here is left out with a warning).
    pub fn upstream_tls(&self) -> std::sync::Arc<rustls::ClientConfig> {
        if self.upstream_ca_files.is_empty() {
            return service_kit::client::default_tls();
        }
        let mut extra = Vec::new();
        for file in &self.upstream_ca_files {
            match service_kit::client::pem_certificates(file.as_ref()) {
                Ok(certs) => extra.extend(certs),
                Err(why) => tracing::warn!("upstream_ca_files: {why}"),
            }
        }
        service_kit::client::tls_config(&extra)
    }
}

/// A secret of the configuration: shown as `[redacted]` by `Debug`.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself (for the one place that uses it).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Command-line values that override every other source when present.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_json: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ListOrCsv<T> {
    List(Vec<T>),
    Csv(String),
}

fn list_or_csv<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match ListOrCsv::<String>::deserialize(d)? {
        ListOrCsv::List(v) => v,
        ListOrCsv::Csv(s) => split_csv(&s).map(str::to_string).collect(),
    })
}

fn upstreams_or_csv<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<UpstreamSpec>, D::Error> {
    use serde::de::Error;
    // Read as a value first, so that an error inside a table (a misspelled key) is
    // reported as itself, not as "matched no variant".
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => split_csv(&s)
            .map(|item| {
                let (name, url) = item.split_once('=').ok_or_else(|| {
                    D::Error::custom(format!(
                        "expected name=url in {item:?} (comma-separated list)"
                    ))
                })?;
                Ok(UpstreamSpec {
                    name: name.trim().to_string(),
                    url: url.trim().to_string(),
                    ..UpstreamSpec::default()
                })
            })
            .collect(),
        list => serde_json::from_value(list).map_err(D::Error::custom),
    }
}

fn split_csv(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|p| !p.is_empty())
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ones() {
        let c = Config::default();
        assert_eq!(c.listen, "127.0.0.1:3001");
        assert_eq!(c.token, "mcp-token-123");
        c.validate().expect("defaults are valid");
    }

    #[test]
    fn a_postgres_store_needs_a_cluster_key_of_some_length_and_hides_it() {
        use crate::observe::calllog::Place;
        let mut c = Config {
            store: "postgres://gw:pw@db:5432/gateway".into(),
            ..Config::default()
        };
        assert_eq!(c.store_url(), Some("postgres://gw:pw@db:5432/gateway"));
        assert_eq!(
            c.call_log_place("r1"),
            Place::Postgres {
                url: "postgres://gw:pw@db:5432/gateway".into(),
                replica: "r1".into()
            },
            "the cluster's call log is the store's"
        );
        let own = Config {
            call_log_store: Some("calls.db".into()),
            ..c.clone()
        };
        assert_eq!(own.call_log_place("r1"), Place::File("calls.db".into()));
        let e = c.validate().expect_err("no key");
        assert_eq!(e.key, "cluster_key");
        assert!(e.to_string().contains("GATEWAY_CLUSTER_KEY"), "{e}");
        c.cluster_key = Some(Secret::new("short"));
        assert!(c.validate().expect_err("short").to_string().contains("16"));
        c.cluster_key = Some(Secret::new("sixteen chars ok!"));
        c.validate().expect("valid");
        assert!(
            !format!("{c:?}").contains("sixteen"),
            "the key stays out of Debug"
        );
        // A file store needs none, and its call log is that file.
        let file = Config::default();
        assert_eq!(file.store_url(), None);
        assert_eq!(file.call_log_place("r1"), Place::File(file.store.clone()));
    }

    #[test]
    fn toml_env_and_overrides_layer_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "gw.toml",
                r#"
                listen = "127.0.0.1:4000"
                call_timeout_ms = 1234
                allowed_hosts = ["gateway"]
                [[upstreams]]
                name = "shop"
                url = "http://127.0.0.1:3002/mcp"
                auth = { header = "X-Api-Key", value = "k-1" }
                "#,
            )?;
            jail.set_env("MCP_BEARER_TOKEN", "secret-1");
            jail.set_env("GATEWAY_CALL_TIMEOUT_MS", "999");
            jail.set_env("GATEWAY_URL", "ignored: the services' variable");
            let overrides = Overrides {
                listen: Some("127.0.0.1:5000".into()),
                ..Default::default()
            };
            let c = Config::load(Some("gw.toml".as_ref()), &overrides).expect("loads");
            assert_eq!(c.listen, "127.0.0.1:5000");
            assert_eq!(c.token, "secret-1");
            assert_eq!(c.call_timeout_ms, 999);
            assert_eq!(c.allowed_hosts, vec!["gateway".to_string()]);
            assert_eq!(c.upstreams[0].name, "shop");
            let auth = c.upstreams[0].auth.as_ref().expect("auth");
            assert_eq!(auth.describe(), "header x-api-key");
            assert!(
                !format!("{c:?}").contains("k-1"),
                "secrets stay out of Debug"
            );
            Ok(())
        });
    }

    #[test]
    fn csv_lists_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("GATEWAY_ALLOWED_HOSTS", "gateway, mcp.example.com");
            jail.set_env(
                "GATEWAY_UPSTREAMS",
                "a=http://127.0.0.1:1/mcp,b=http://127.0.0.1:2",
            );
            let c = Config::load(None, &Overrides::default()).expect("loads");
            assert_eq!(c.allowed_hosts, vec!["gateway", "mcp.example.com"]);
            assert_eq!(c.upstreams.len(), 2);
            assert_eq!(c.upstreams[1].url, "http://127.0.0.1:2");
            Ok(())
        });
    }

    #[test]
    fn worker_threads_are_one_per_core_unless_set_and_bounded() {
        figment::Jail::expect_with(|jail| {
            let c = Config::load(None, &Overrides::default()).expect("loads");
            assert_eq!(c.worker_threads, None);
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            assert_eq!(c.workers(), cores.div_ceil(2));
            jail.set_env("GATEWAY_WORKER_THREADS", "1");
            let c = Config::load(None, &Overrides::default()).expect("loads");
            assert_eq!(c.worker_threads, Some(1));
            assert_eq!(c.workers(), 1);
            for bad in ["0", "1025"] {
                jail.set_env("GATEWAY_WORKER_THREADS", bad);
                let e = Config::load(None, &Overrides::default()).expect_err(bad);
                assert_eq!(e.key, "worker_threads", "{bad}");
            }
            Ok(())
        });
    }

    #[test]
    fn the_public_url_and_authorization_servers_must_be_http_urls() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("GATEWAY_PUBLIC_URL", "https://gw.example.com");
            jail.set_env(
                "GATEWAY_AUTHORIZATION_SERVERS",
                "https://a.example.com,https://b.example.com",
            );
            let c = Config::load(None, &Overrides::default()).expect("loads");
            assert_eq!(c.public_url.as_deref(), Some("https://gw.example.com"));
            assert_eq!(c.authorization_servers.len(), 2);
            jail.set_env("GATEWAY_PUBLIC_URL", "gw.example.com");
            let e = Config::load(None, &Overrides::default()).expect_err("no scheme");
            assert_eq!(e.key, "public_url");
            jail.set_env("GATEWAY_PUBLIC_URL", "https://gw.example.com");
            jail.set_env("GATEWAY_AUTHORIZATION_SERVERS", "file:///etc/passwd");
            let e = Config::load(None, &Overrides::default()).expect_err("not http");
            assert_eq!(e.key, "authorization_servers[0]");
            Ok(())
        });
    }

    #[test]
    fn credentials_need_unique_names_and_tokens_and_known_scopes() {
        let good = Credential {
            name: "ci".into(),
            token: "ci-token-0123456789".into(),
            scopes: vec!["list".into(), "call".into()],
            services: None,
            tools: None,
            virtual_servers: None,
        };
        let with = |c: Credential| Config {
            credentials: vec![c],
            ..Config::default()
        };
        assert!(with(good.clone()).validate().is_ok());
        for fine in ["ci-bot_2", "team.équipe", "jwt", "my:jwt:x"] {
            let named = Credential {
                name: fine.into(),
                ..good.clone()
            };
            assert!(with(named).validate().is_ok(), "{fine}");
        }
        for (bad_one, key) in [
            (
                Credential {
                    scopes: vec!["admin".into()],
                    ..good.clone()
                },
                "credentials[0].scopes",
            ),
            (
                Credential {
                    token: "short".into(),
                    ..good.clone()
                },
                "credentials[0].token",
            ),
            (
                Credential {
                    token: service_kit::DEFAULT_TOKEN.repeat(2),
                    name: "default".into(),
                    ..good.clone()
                },
                "credentials[0].name",
            ),
        ]
        .into_iter()
        .chain(
            // A JWT identity's shape, and names a log or a terminal would not show as
            // they are.
            [
                "jwt:alice",
                "jwt:",
                "two words",
                "tab\there",
                "esc\u{1b}[2J",
                "nul\0",
                "c1\u{85}",
                "nbsp\u{a0}",
            ]
            .map(|name| {
                (
                    Credential {
                        name: name.into(),
                        ..good.clone()
                    },
                    "credentials[0].name",
                )
            }),
        ) {
            let e = with(bad_one).validate().expect_err("refused");
            assert_eq!(e.key, key, "{e}");
        }
        let mut same_token = with(good.clone());
        same_token.token = good.token.clone();
        assert_eq!(
            same_token.validate().expect_err("refused").key,
            "credentials[0].token"
        );
    }

    #[test]
    fn jwt_settings_are_checked_before_start() {
        let jwt = JwtConfig {
            issuer: "https://auth.example.com".into(),
            audience: Some("https://gw.example.com/mcp".into()),
            hs256_secret: Some("x".repeat(32)),
            jwks_file: None,
            jwks_url: None,
        };
        let with = |jwt: JwtConfig, public_url: Option<&str>| Config {
            jwt: Some(jwt),
            public_url: public_url.map(str::to_string),
            ..Config::default()
        };
        assert!(with(jwt.clone(), None).validate().is_ok());
        let audience_from_url = with(
            JwtConfig {
                audience: None,
                ..jwt.clone()
            },
            Some("https://gw.example.com/"),
        );
        assert!(audience_from_url.validate().is_ok());
        assert_eq!(
            audience_from_url.jwt_audience().as_deref(),
            Some("https://gw.example.com/mcp")
        );
        for (bad_one, key) in [
            (
                JwtConfig {
                    audience: None,
                    ..jwt.clone()
                },
                "jwt.audience",
            ),
            (
                JwtConfig {
                    hs256_secret: Some("short".into()),
                    ..jwt.clone()
                },
                "jwt.hs256_secret",
            ),
            (
                JwtConfig {
                    hs256_secret: None,
                    ..jwt.clone()
                },
                "jwt",
            ),
            (
                JwtConfig {
                    jwks_file: Some("/no/such/jwks.json".into()),
                    ..jwt.clone()
                },
                "jwt.jwks_file",
            ),
        ] {
            let e = with(bad_one, None).validate().expect_err("refused");
            assert_eq!(e.key, key, "{e}");
        }
    }

    #[test]
    fn a_bad_value_names_its_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("GATEWAY_CALL_TIMEOUT_MS", "soon");
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            assert_eq!(e.key, "call_timeout_ms", "{e}");
            jail.set_env("GATEWAY_CALL_TIMEOUT_MS", "0");
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            assert_eq!(
                e.to_string(),
                "invalid configuration: call_timeout_ms: must be greater than 0"
            );
            jail.set_env("GATEWAY_CALL_TIMEOUT_MS", "10");
            jail.set_env("GATEWAY_LISTEN", "nowhere");
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            assert_eq!(e.key, "listen");
            jail.set_env("GATEWAY_LISTEN", "127.0.0.1:1");
            jail.set_env("GATEWAY_UPSTREAMS", "a=ftp://x");
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            assert_eq!(e.key, "upstreams[0].url", "{e}");
            jail.clear_env();
            jail.create_file(
                "bad-auth.toml",
                r#"
                [[upstreams]]
                name = "crm"
                url = "http://127.0.0.1:9/mcp"
                auth = { header = "Content-Type", value = "never-shown" }
                "#,
            )?;
            let e =
                Config::load(Some("bad-auth.toml".as_ref()), &Overrides::default()).unwrap_err();
            assert_eq!(e.key, "upstreams[0].auth", "{e}");
            assert!(!e.to_string().contains("never-shown"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn balance_strategy_and_breaker_are_configurable() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("GATEWAY_BALANCE", "least_outstanding");
            jail.set_env("GATEWAY_BREAKER_FAILURES", "2");
            let c = Config::load(None, &Overrides::default()).expect("loads");
            assert_eq!(c.balance, Strategy::LeastOutstanding);
            assert_eq!(c.upstream_options().policy.failure_threshold, 2);
            jail.set_env("GATEWAY_BALANCE", "random");
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            assert_eq!(e.key, "balance", "{e}");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_stop_start_up_naming_the_key_and_where_it_came_from() {
        let e = Config::from_toml("listen = \"127.0.0.1:1\"\ncall_timout_ms = 5").unwrap_err();
        assert_eq!(e.key, "call_timout_ms", "{e}");
        // The fuzzer's find: an empty table name.
        let e = Config::from_toml("[\"\"]").unwrap_err();
        assert_eq!(e.key, "\"\"", "{e}");
        let e = Config::from_toml(
            "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nwieght = 2",
        )
        .unwrap_err();
        assert!(e.to_string().contains("wieght"), "{e}");
        figment::Jail::expect_with(|jail| {
            jail.set_env("GATEWAY_CALL_TIMOUT_MS", "5");
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            assert_eq!(e.key, "call_timout_ms", "{e}");
            assert!(e.to_string().contains("GATEWAY_CALL_TIMOUT_MS"), "{e}");
            jail.clear_env();
            jail.set_env("GATEWAY_TOKEN", "x-secret");
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(e.to_string().contains("MCP_BEARER_TOKEN"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn the_default_token_is_refused_beyond_loopback_unless_accepted_knowingly() {
        let on = |listen: &str| Config {
            listen: listen.into(),
            ..Config::default()
        };
        for listen in ["127.0.0.1:3001", "localhost:3001", "[::1]:3001"] {
            assert!(on(listen).validate().is_ok(), "{listen}");
        }
        for listen in [
            "0.0.0.0:3001",
            "[::]:3001",
            "10.1.2.3:3001",
            "gw.internal:3001",
        ] {
            let e = on(listen).validate().expect_err(listen);
            assert_eq!(e.key, "token", "{e}");
        }
        let accepted = Config {
            insecure_default_token: true,
            ..on("0.0.0.0:3001")
        };
        assert!(accepted.validate().is_ok());
        let own = Config {
            token: "a-secret-of-my-own".into(),
            ..on("0.0.0.0:3001")
        };
        assert!(own.validate().is_ok());
    }

    #[test]
    fn the_environment_list_covers_every_setting() {
        let vars = Config::environment_variables();
        for v in [
            "MCP_BEARER_TOKEN",
            "GATEWAY_UPSTREAM_NETWORKS",
            "GATEWAY_MAX_SESSIONS",
            "GATEWAY_LISTEN",
        ] {
            assert!(vars.iter().any(|x| x == v), "{v} missing from {vars:?}");
        }
        assert!(!vars.iter().any(|x| x == "GATEWAY_CREDENTIALS"));
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let e =
            Config::load(Some("/nonexistent/gw.toml".as_ref()), &Overrides::default()).unwrap_err();
        assert_eq!(e.key, "config");
    }
}
