//! The shapes the admin API's handlers serialize, as the OpenAPI document describes
//! them (`openapi` collects them with the handlers' paths). Invariant: a handler's
//! answer and its schema are one type, so the document cannot drift from the code.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    observe::{Outcome, calllog::Stats},
    registry::{ServiceEntry, ServiceSummary},
};

/// Every refusal of an admin route: a code to branch on and a sentence to read.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// `invalid_body`, `invalid_registration`, `not_owner`, `name_reserved`,
    /// `owner_conflict`, `upstream_not_allowed`, `upstream_unreachable`,
    /// `not_registered`, `missing_token`, `invalid_token`, `insufficient_scope`,
    /// `rate_limited`, `host_not_allowed`, ...
    pub error: String,
    pub message: String,
    /// With `insufficient_scope`: the scope(s) needed, space-separated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// With `rate_limited`: when to come back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// The gateway's own credential towards a service: a bearer token, or a custom header.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum UpstreamAuthBody {
    Bearer { bearer: String },
    Header { header: String, value: String },
}

/// `POST /register`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequest {
    /// 1-64 of letters, digits, `-` and `_`, starting with a letter or digit, without
    /// `__`.
    #[schema(
        pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
        min_length = 1,
        max_length = 64
    )]
    pub name: String,
    /// The service's MCP endpoint (`http` or `https`); a URL without a path means
    /// `/mcp`. Required unless `command` is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = "uri", pattern = "^https?://")]
    pub url: Option<String>,
    /// A stdio server for the gateway to run instead of a URL: the program (on the
    /// gateway's `allowed_commands`; needs the `operate` scope).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 4096)]
    pub command: Option<String>,
    /// The stdio server's arguments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// The stdio server's environment (values are never shown again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<std::collections::BTreeMap<String, String>>,
    /// The stdio server's working directory (absolute).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Share of calls under `balance = "weighted"` (at least 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub weight: Option<u32>,
    /// This service's call deadline (1 to `max_call_timeout_ms`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub call_timeout_ms: Option<u64>,
    /// Replace every instance of the service by this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replace: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<UpstreamAuthBody>,
}

/// What `POST /register` did.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Registered {
    /// The service as `/services` shows it now.
    pub registered: Option<ServiceEntry>,
    /// The instance's id.
    pub instance: String,
    pub new_service: bool,
    /// An instance with this URL existed and was refreshed.
    pub replaced: bool,
}

/// What a `DELETE` removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Unregistered {
    pub unregistered: String,
    pub instances: usize,
}

/// One line of `GET /services`: the service and its call statistics.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceLine {
    #[serde(flatten)]
    pub entry: ServiceEntry,
    /// Present when the call log is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<Stats>,
}

/// `GET /services`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceList {
    pub count: usize,
    pub services: Vec<ServiceLine>,
    /// The virtual servers, as `GET /virtual-servers` shows them.
    #[serde(rename = "virtualServers")]
    pub virtual_servers: Vec<VirtualServerEntry>,
}

/// Counts of `/health`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Upstreams {
    pub total: usize,
    pub healthy: usize,
    pub not_healthy: usize,
}

/// `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthBody {
    /// Always `ok` when the gateway answers.
    pub status: &'static str,
    pub service: &'static str,
    pub version: &'static str,
    pub upstreams: Upstreams,
    pub services: Vec<ServiceSummary>,
    /// Tools in the merged table.
    pub tools: usize,
    /// With a PostgreSQL store: this replica and the cluster's live replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::registry::ClusterView>,
}

/// One call of the call log.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallView {
    /// Unix ms the call arrived.
    pub at: i64,
    pub request_id: Option<String>,
    pub identity: String,
    pub service: String,
    pub instance: Option<String>,
    pub tool: String,
    pub duration_ms: f64,
    pub upstream_ms: f64,
    pub outcome: Outcome,
    pub error: Option<String>,
    /// In a cluster's shared call log (a PostgreSQL store without `call_log_store`): the
    /// id of the replica that served the call (its `/health` `cluster.replica`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// With `call_log_payloads`: the arguments (redacted).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub arguments: Option<serde_json::Value>,
    /// With `call_log_payloads`: the result or error (redacted).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
}

/// `GET /calls`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallList {
    pub count: usize,
    pub calls: Vec<CallView>,
}

/// Statistics of one tool.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolStats {
    pub service: String,
    pub tool: String,
    #[serde(flatten)]
    pub stats: Stats,
}

/// `GET /stats`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsBody {
    /// Without `window` and `step`: per service, over the retained log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub services: Option<BTreeMap<String, Stats>>,
    /// Without `window` and `step`: per tool, over the retained log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ToolStats>>,
    /// With `window` or `step`: the time series (and nothing else: the totals above
    /// read the whole log, which a chart refreshing every few seconds should not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series: Option<crate::observe::calllog::series::Series>,
}

/// RFC 9728 protected-resource metadata.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResourceMetadata {
    pub resource: String,
    pub authorization_servers: Vec<String>,
    pub bearer_methods_supported: Vec<String>,
    pub resource_name: String,
}

/// `GET /services/{name}/logs`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceLogs {
    pub service: String,
    pub instances: Vec<InstanceLogs>,
}

/// One stdio instance's stderr, as kept (the last 200 lines, each cut at 1 KiB).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceLogs {
    pub id: String,
    pub url: String,
    /// The running child's pid (absent while none runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub lines: Vec<String>,
}

/// `POST /registry/import`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportRequestBody {
    /// A `server.json` object (or a registry's `{"server": ...}` answer, or a
    /// `/v0.1/servers` page), or the http(s) URL of one, fetched within
    /// `upstream_networks` (a listing's `nextCursor` followed, at most 20 pages).
    #[schema(value_type = Object)]
    pub source: serde_json::Value,
    /// Values of the server's variables by name (URL variables, header and environment
    /// variable names, argument hints); before the gateway's `[import_variables]`.
    /// Never shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variables: Option<BTreeMap<String, String>>,
    /// The service name (one server only; default: derived from the server's name).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(
        pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
        min_length = 1,
        max_length = 64
    )]
    pub name: Option<String>,
    /// Check and answer the plan; register nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// Skip (and report) entries the gateway cannot run, such as OCI packages, instead
    /// of refusing the import.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_unsupported: Option<bool>,
}

/// A virtual server as `/virtual-servers` shows it: its definition, where it is served,
/// and how many of the catalog's tools it exposes now.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServerEntry {
    pub name: String,
    /// As configured or registered.
    pub definition: crate::servers::Definition,
    /// `/servers/{name}/mcp`.
    pub endpoint: String,
    /// Defined in the configuration (changed only there).
    pub configured: bool,
    /// The catalog's tools it exposes now.
    pub tool_count: usize,
}

/// `GET /virtual-servers`.
#[derive(Debug, Serialize, ToSchema)]
pub struct VirtualServerList {
    pub count: usize,
    pub servers: Vec<VirtualServerEntry>,
}

/// `DELETE /virtual-servers/{name}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RemovedServer {
    pub removed: String,
}
