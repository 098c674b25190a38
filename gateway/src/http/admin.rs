//! The operator endpoints: `POST /register`, `POST /registry/import`; `GET|POST /services`,
//! `GET /services/{name}`;
//! `DELETE /services/{name}` (`?url=`) and `DELETE /services/{name}/instances/{id}`;
//! `GET /calls`, `GET /stats`; `GET /health` (public). Each is described in the OpenAPI
//! document (`#[utoipa::path]`, see `openapi`).
//! Bodies are parsed by hand so that every malformed input gets a JSON error that says
//! exactly what is wrong, and nothing changes on error.
//!
//! Invariant: a refused admin request changes nothing, and no answer ever shows an
//! upstream credential.

use std::sync::Arc;

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{
        Path, Query, State,
        rejection::{BytesRejection, PathRejection, QueryRejection},
    },
    response::{IntoResponse, Response},
};
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::{
    auth::{Identity, Scopes},
    schema::{
        CallList, ErrorBody, HealthBody, ImportRequestBody, InstanceLogs, RegisterRequest,
        Registered, RemovedServer, ServiceLine, ServiceList, ServiceLogs, StatsBody, ToolStats,
        Unregistered, Upstreams, VirtualServerEntry, VirtualServerList,
    },
};
use crate::import::{ImportError, ImportReport, Importer};
use crate::observe::calllog::{AllStats, Filter, series::SeriesQuery};
use crate::registry::ServiceEntry;
use crate::vocab::Invalid;
use crate::{
    registry::{Actor, Control, RegisterError, Registration, Registry, UnregisterError},
    upstream::{health::State as UpState, secret::UpstreamAuth},
};

/// The registry's view of who asks.
fn actor(identity: &Identity) -> Actor {
    Actor {
        name: std::sync::Arc::clone(&identity.name),
        operator: identity.scopes.contains(Scopes::REGISTER)
            && identity.scopes.contains(Scopes::OPERATE),
    }
}

pub use crate::refusal::error;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RegisterBody {
    name: String,
    #[serde(default)]
    url: String,
    /// A stdio server: the program, its arguments, environment and directory.
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    /// Read apart, like `auth`: its values may be secrets.
    #[serde(default)]
    env: Option<serde_json::Value>,
    #[serde(default)]
    cwd: Option<std::path::PathBuf>,
    #[serde(default)]
    weight: Option<u32>,
    #[serde(default)]
    call_timeout_ms: Option<u64>,
    #[serde(default)]
    replace: bool,
    /// The gateway's own credential towards the service (never shown again). Read
    /// apart, so that a parse error cannot echo the secret.
    #[serde(default)]
    auth: Option<serde_json::Value>,
}

/// `POST /register {"name","url"}`: connect, list tools, add to the table.
#[utoipa::path(post, path = "/register", tag = "registry",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "A new service or instance", body = Registered),
        (status = 200, description = "An existing instance refreshed", body = Registered),
        (status = 400, description = "Malformed body (or a repeated Host/Origin header)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Scope, owner, reserved name, Host/Origin, or the URL is outside upstream_networks", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 409, description = "The name belongs to another identity (or the configuration)", body = ErrorBody),
        (status = 413, description = "Body over max_body_bytes", body = ErrorBody),
        (status = 422, description = "Bad name, URL or value", body = ErrorBody),
        (status = 429, description = "Over a rate limit", body = ErrorBody),
        (status = 502, description = "The URL does not answer MCP (nothing changed)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn register(
    State(registry): State<Arc<Registry>>,
    Extension(identity): Extension<Identity>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejected) => return body_refused(rejected),
    };
    let registration = match parse_registration(&body, actor(&identity)) {
        Ok(r) => r,
        Err(why) => return error(StatusCode::BAD_REQUEST, "invalid_body", why),
    };
    match registry.register(registration).await {
        Ok(done) => {
            let view = registry.service(&done.service.name);
            // 201 when something new exists (a service or an instance); 200 when an
            // existing instance was refreshed.
            let status = if done.refreshed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            (
                status,
                Json(Registered {
                    registered: view,
                    instance: done.instance.id.clone(),
                    new_service: done.new_service,
                    replaced: done.refreshed,
                }),
            )
                .into_response()
        }
        Err(refused) => {
            let (status, code, message) = register_refusal(refused);
            error(status, code, message)
        }
    }
}

/// The status, code and message of a refused registration.
fn register_refusal(refused: RegisterError) -> (StatusCode, &'static str, String) {
    match refused {
        RegisterError::Internal(why) => {
            tracing::error!("{why}");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal", why)
        }
        RegisterError::Invalid(why) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_registration",
            why.to_string(),
        ),
        e @ RegisterError::NotAllowed { .. } => {
            (StatusCode::FORBIDDEN, "upstream_not_allowed", e.to_string())
        }
        RegisterError::NotOwner(why) => (StatusCode::FORBIDDEN, "not_owner", why),
        RegisterError::Reserved(why) => (StatusCode::FORBIDDEN, "name_reserved", why),
        RegisterError::Conflict(why) => (StatusCode::CONFLICT, "owner_conflict", why),
        e @ RegisterError::Unreachable { .. } => (
            StatusCode::BAD_GATEWAY,
            "upstream_unreachable",
            e.to_string(),
        ),
        RegisterError::Store(e) if e.unavailable() => {
            tracing::warn!("{e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the registration store is unavailable; nothing was changed: retry later"
                    .to_string(),
            )
        }
        e @ RegisterError::Store(_) => {
            tracing::error!("{e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_failed",
                "the registration could not be saved; nothing was changed".to_string(),
            )
        }
    }
}

/// `POST /registry/import`: the servers of a `server.json` or an MCP registry listing
/// (inline, or fetched from a URL within `upstream_networks`) registered, all or none.
#[utoipa::path(post, path = "/registry/import", tag = "registry",
    request_body = ImportRequestBody,
    responses(
        (status = 201, description = "Every planned server registered", body = ImportReport),
        (status = 200, description = "A dry run: what would be registered (all checks passed)", body = ImportReport),
        (status = 400, description = "Malformed body, or a repeated Host/Origin header", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Scope (register; operate for packages), a command not in allowed_commands, owner, reserved name, Host/Origin, or a URL outside upstream_networks", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 409, description = "A planned name is taken", body = ErrorBody),
        (status = 413, description = "Body over max_body_bytes", body = ErrorBody),
        (status = 422, description = "Not a usable server.json, a missing variable (named), or an unsupported entry such as an OCI package (nothing registered)", body = ErrorBody),
        (status = 429, description = "Over a rate limit", body = ErrorBody),
        (status = 500, description = "The store failed (what this import registered was removed)", body = ErrorBody),
        (status = 502, description = "The registry or a server could not be reached (what this import registered was removed)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn import(
    State(importer): State<Arc<Importer>>,
    Extension(identity): Extension<Identity>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejected) => return body_refused(rejected),
    };
    let request = match crate::import::parse_request(&body) {
        Ok(r) => r,
        Err(why) => return error(StatusCode::BAD_REQUEST, "invalid_body", why),
    };
    let dry_run = request.dry_run;
    match importer.import(request, actor(&identity)).await {
        Ok(report) => {
            let status = if dry_run {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            (status, Json(report)).into_response()
        }
        Err(refused) => {
            let message = refused.to_string();
            let (status, code) = match refused {
                ImportError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
                ImportError::Invalid(_) => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "invalid_server_json")
                }
                ImportError::Missing(_) => (StatusCode::UNPROCESSABLE_ENTITY, "missing_variable"),
                ImportError::Unsupported(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unsupported"),
                ImportError::Conflict(_) => (StatusCode::CONFLICT, "name_taken"),
                ImportError::NotAllowed(_) => (StatusCode::FORBIDDEN, "upstream_not_allowed"),
                ImportError::Unreachable(_) => (StatusCode::BAD_GATEWAY, "registry_unreachable"),
                ImportError::Refused(e) => {
                    let (status, code, message) = register_refusal(*e);
                    return error(status, code, message);
                }
                ImportError::RolledBack { cause, .. } => {
                    let (status, code, _) = register_refusal(*cause);
                    (status, code)
                }
            };
            error(status, code, message)
        }
    }
}

/// A `/register` body read into a registration, or what is wrong with it (a 400).
/// Nothing is contacted (the fuzz target `admin_bodies` drives this).
pub fn parse_registration(body: &[u8], actor: Actor) -> Result<Registration, Invalid> {
    let parsed: RegisterBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => {
            let why = if body.iter().all(u8::is_ascii_whitespace) {
                "request body is empty; expected {\"name\": \"...\", \"url\": \"http://host:port/mcp\"}".to_string()
            } else {
                format!(
                    "invalid registration body: {e}; expected {{\"name\": \"...\", \"url\": \"http://host:port/mcp\"}}"
                )
            };
            return Err(Invalid(why));
        }
    };
    if parsed.command.is_none() && parsed.url.is_empty() {
        return Err(Invalid(
            "invalid registration body: missing field `url` (or `command`, for a stdio server); expected {\"name\": \"...\", \"url\": \"http://host:port/mcp\"}".into(),
        ));
    }
    let auth = match parsed.auth.map(serde_json::from_value::<UpstreamAuth>) {
        None => None,
        Some(Ok(auth)) => Some(auth),
        Some(Err(_)) => return Err(crate::upstream::secret::FORMS.into()),
    };
    let env = match parsed.env.map(serde_json::from_value) {
        None => Default::default(),
        Some(Ok(env)) => env,
        Some(Err(_)) => return Err("env must be an object of strings".into()),
    };
    let command = parsed
        .command
        .map(|command| crate::upstream::stdio::Command {
            command,
            args: parsed.args,
            env,
            cwd: parsed.cwd,
        });
    Ok(Registration {
        exclusive: false,
        command,
        name: parsed.name,
        url: parsed.url,
        weight: parsed.weight,
        call_timeout_ms: parsed.call_timeout_ms,
        replace: parsed.replace,
        auth,
        actor,
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InstanceQuery {
    /// Remove only the instance at this URL.
    url: Option<String>,
}

/// The refusal of a body axum could not read: too large (413), not arrived in time or
/// broken off (408).
fn body_refused(rejected: BytesRejection) -> Response {
    if rejected.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body exceeds max_body_bytes",
        );
    }
    error(
        StatusCode::REQUEST_TIMEOUT,
        "body_incomplete",
        format!(
            "the request body did not arrive whole in time: {}",
            rejected.body_text()
        ),
    )
}

/// A path or query axum could not read.
fn bad_request(what: &str, why: String) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        format!("{what}: {why}"),
    )
}

/// `DELETE /services/{name}` (every instance) or `DELETE /services/{name}?url=URL`
/// (one instance).
#[utoipa::path(delete, path = "/services/{name}", tag = "registry",
    params(("name" = String, Path, description = "The service"), InstanceQuery),
    responses(
        (status = 200, description = "Removed", body = Unregistered),
        (status = 400, description = "Malformed path or query", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Scope, owner, Host or Origin", body = ErrorBody),
        (status = 404, description = "No such service or instance", body = ErrorBody),
        (status = 409, description = "Defined in the configuration", body = ErrorBody),
        (status = 429, description = "Over a rate limit", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn unregister(
    State(registry): State<Arc<Registry>>,
    Extension(identity): Extension<Identity>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<InstanceQuery>, QueryRejection>,
) -> Response {
    let (name, q) = match (name, query) {
        (Ok(Path(name)), Ok(Query(q))) => (name, q),
        (Err(e), _) => return bad_request("path", e.body_text()),
        (_, Err(e)) => return bad_request("query", e.body_text()),
    };
    unregister_reply(&registry, &identity, &name, q.url.as_deref()).await
}

/// `DELETE /services/{name}/instances/{id}`.
#[utoipa::path(delete, path = "/services/{name}/instances/{id}", tag = "registry",
    params(
        ("name" = String, Path, description = "The service"),
        ("id" = String, Path, description = "The instance's id (or URL)"),
    ),
    responses(
        (status = 200, description = "Removed", body = Unregistered),
        (status = 400, description = "Malformed path", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Scope, owner, Host or Origin", body = ErrorBody),
        (status = 404, description = "No such service or instance", body = ErrorBody),
        (status = 409, description = "Defined in the configuration", body = ErrorBody),
        (status = 429, description = "Over a rate limit", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn unregister_instance(
    State(registry): State<Arc<Registry>>,
    Extension(identity): Extension<Identity>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let (name, id) = match path {
        Ok(Path(pair)) => pair,
        Err(e) => return bad_request("path", e.body_text()),
    };
    unregister_reply(&registry, &identity, &name, Some(&id)).await
}

async fn unregister_reply(
    registry: &Registry,
    identity: &Identity,
    name: &str,
    which: Option<&str>,
) -> Response {
    match registry.unregister(name, which, &actor(identity)).await {
        Ok(n) => Json(Unregistered {
            unregistered: name.to_string(),
            instances: n,
        })
        .into_response(),
        Err(e @ (UnregisterError::UnknownService(_) | UnregisterError::UnknownInstance { .. })) => {
            error(StatusCode::NOT_FOUND, "not_registered", e.to_string())
        }
        Err(UnregisterError::NotOwner(why)) => error(StatusCode::FORBIDDEN, "not_owner", why),
        Err(UnregisterError::Configured(why)) => error(StatusCode::CONFLICT, "configured", why),
        Err(UnregisterError::Store(e)) if e.unavailable() => {
            tracing::warn!("{e}");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the registration store is unavailable; nothing was changed: retry later",
            )
        }
        Err(e) => {
            tracing::error!("{e}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_failed",
                "the registration store could not be updated; nothing was changed",
            )
        }
    }
}

/// `POST /services/{name}/{action}`: `start`, `stop` or `restart` every instance.
#[utoipa::path(post, path = "/services/{name}/{action}", tag = "registry",
    params(
        ("name" = String, Path, description = "The service"),
        ("action" = String, Path, description = "start, stop or restart"),
    ),
    responses(
        (status = 200, description = "Done; the service as it stands now (a start returns once connected, or after connect_timeout_ms)", body = ServiceEntry),
        (status = 400, description = "Malformed path", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Scope (operate), Host or Origin", body = ErrorBody),
        (status = 404, description = "No such service, or no such action", body = ErrorBody),
        (status = 429, description = "Over a rate limit", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn control(
    State(registry): State<Arc<Registry>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let (name, action) = match path {
        Ok(Path(p)) => p,
        Err(e) => return bad_request("path", e.body_text()),
    };
    let action = match action.as_str() {
        "start" => Control::Start,
        "stop" => Control::Stop,
        "restart" => Control::Restart,
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "unknown_action",
                format!("no action \"{action}\"; POST /services/{{name}}/start, /stop or /restart"),
            );
        }
    };
    match registry.control(&name, action).await {
        Some(s) => Json(s).into_response(),
        None => not_registered(&name),
    }
}

/// `GET /services/{name}/logs`: what a stdio server's processes wrote to stderr.
#[utoipa::path(get, path = "/services/{name}/logs", tag = "registry",
    params(("name" = String, Path, description = "The service")),
    responses(
        (status = 200, description = "Each instance's last stderr lines, oldest first", body = ServiceLogs),
        (status = 400, description = "Malformed path", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Scope (operate), Host or Origin", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 409, description = "Not a stdio server (it has no process)", body = ErrorBody),
        (status = 429, description = "Over a rate limit", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn logs(
    State(registry): State<Arc<Registry>>,
    name: Result<Path<String>, PathRejection>,
) -> Response {
    let name = match name {
        Ok(Path(name)) => name,
        Err(e) => return bad_request("path", e.body_text()),
    };
    let Some(service) = registry.upstream(&name) else {
        return not_registered(&name);
    };
    if !service.stdio() {
        return error(
            StatusCode::CONFLICT,
            "not_stdio",
            format!("service \"{name}\" is an HTTP server: the gateway runs no process for it"),
        );
    }
    let instances = service
        .instances()
        .iter()
        .filter_map(|i| {
            let process = i.process()?;
            Some(InstanceLogs {
                id: i.id.clone(),
                url: i.url.to_string(),
                pid: process.child().map(|c| c.pid),
                lines: process.stderr(),
            })
        })
        .collect();
    Json(ServiceLogs {
        service: name,
        instances,
    })
    .into_response()
}

fn not_registered(name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_registered",
        format!("no service \"{name}\" is registered"),
    )
}

/// `GET /services/{name}`.
#[utoipa::path(get, path = "/services/{name}", tag = "registry",
    params(("name" = String, Path, description = "The service")),
    responses(
        (status = 200, description = "The service", body = ServiceEntry),
        (status = 400, description = "Malformed path", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Scope, Host or Origin", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 429, description = "Over a rate limit", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn service(
    State(registry): State<Arc<Registry>>,
    name: Result<Path<String>, PathRejection>,
) -> Response {
    let name = match name {
        Ok(Path(name)) => name,
        Err(e) => return bad_request("path", e.body_text()),
    };
    match registry.service(&name) {
        Some(s) => Json(s).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_registered",
            format!("no service \"{name}\" is registered"),
        ),
    }
}

/// `GET|POST /services`: every registered service with URL, state and tools, and its
/// call statistics (from the call log, when it is on); and the virtual servers.
#[utoipa::path(method(get, post), path = "/services", tag = "registry",
    responses(
        (status = 200, description = "Every service", body = ServiceList),
        (status = 400, description = "A repeated Host/Origin header", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Scope, Host or Origin", body = ErrorBody),
        (status = 429, description = "Over a rate limit", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn services(State(registry): State<Arc<Registry>>) -> Response {
    let mut stats = call_stats(&registry).await.ok().flatten().map(|(s, _)| s);
    // Large catalogs make a large answer: built off the async workers.
    let listed = Arc::clone(&registry);
    let built = tokio::task::spawn_blocking(move || {
        let services: Vec<ServiceLine> = listed
            .services()
            .into_iter()
            .map(|entry| {
                let stats = stats
                    .as_mut()
                    .map(|s| s.remove(&entry.service.name).unwrap_or_default());
                ServiceLine { entry, stats }
            })
            .collect();
        let virtual_servers = listed
            .virtual_servers()
            .iter()
            .map(|(s, configured)| server_entry(&listed, s, *configured))
            .collect();
        serde_json::to_vec(&ServiceList {
            count: services.len(),
            services,
            virtual_servers,
        })
    })
    .await;
    match built {
        Ok(Ok(body)) => ([(http::header::CONTENT_TYPE, "application/json")], body).into_response(),
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "listing the services failed",
        ),
    }
}

/// The call log's statistics (SQLite: read on the blocking pool); `None` when the log
/// is off.
async fn call_stats(registry: &Arc<Registry>) -> Result<Option<AllStats>, String> {
    let Some(log) = registry.calls().cloned() else {
        return Ok(None);
    };
    log.stats().await.map(Some)
}

/// 400 `invalid_query`: a query string that cannot be read, with what it may hold.
fn invalid_query(rejection: QueryRejection, accepted: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_query",
        format!("{}; {accepted}", rejection.body_text()),
    )
}

/// 500 `call_log_failed`: the call log could not be read.
fn call_log_failed(why: String) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, "call_log_failed", why)
}

fn call_log_off() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "call_log_off",
        "the call log is off (call_log = false)",
    )
}

/// `GET /stats?window=&step=&service=&tool=`: per service and per tool, over the
/// retained call log: calls, errors, error rate, p50 and p95 latency, last use; with a
/// `window` (or `step`), instead the time series of the gateway, of each service and of
/// `tool`, from the per-minute aggregates (see `observe::calllog::series`).
#[utoipa::path(get, path = "/stats", tag = "observe",
    params(SeriesQuery),
    responses(
        (status = 200, description = "Statistics", body = StatsBody),
        (status = 400, description = "A bad window, step or parameter (named in the message), or a repeated Host/Origin header", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Scope, Host or Origin", body = ErrorBody),
        (status = 404, description = "The call log is off", body = ErrorBody),
        (status = 429, description = "Over a rate limit", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn stats(
    State(registry): State<Arc<Registry>>,
    query: Result<Query<SeriesQuery>, QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(query)) => query,
        Err(e) => return invalid_query(e, "parameters are window, step, service and tool"),
    };
    let span = match query.span() {
        Ok(span) => span,
        Err(why) => return error(StatusCode::BAD_REQUEST, "invalid_query", why),
    };
    let Some(log) = registry.calls().cloned() else {
        return call_log_off();
    };
    if let Some(span) = span {
        return match log.series(span, query).await {
            Ok(series) => Json(StatsBody {
                services: None,
                tools: None,
                series: Some(series),
            })
            .into_response(),
            Err(why) => call_log_failed(why),
        };
    }
    match log.stats().await {
        Ok((services, by_tool)) => {
            let tools = by_tool
                .into_iter()
                .map(|((service, tool), stats)| ToolStats {
                    service,
                    tool,
                    stats,
                })
                .collect();
            Json(StatsBody {
                services: Some(services),
                tools: Some(tools),
                series: None,
            })
            .into_response()
        }
        Err(why) => call_log_failed(why),
    }
}

/// `GET /calls?service=&tool=&identity=&outcome=&since=&until=&limit=`: recent calls,
/// newest first.
#[utoipa::path(get, path = "/calls", tag = "observe",
    params(Filter),
    responses(
        (status = 200, description = "Calls, newest first", body = CallList),
        (status = 400, description = "A bad filter", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Scope, Host or Origin", body = ErrorBody),
        (status = 404, description = "The call log is off", body = ErrorBody),
        (status = 429, description = "Over a rate limit", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn calls(
    State(registry): State<Arc<Registry>>,
    query: Result<Query<Filter>, QueryRejection>,
) -> Response {
    let filter = match query {
        Ok(Query(filter)) => filter,
        Err(e) => {
            return invalid_query(
                e,
                "filters are service, tool, identity, outcome, since and until (Unix ms) and limit",
            );
        }
    };
    let Some(log) = registry.calls().cloned() else {
        return call_log_off();
    };
    match log.query(filter).await {
        Ok(calls) => Json(json!({ "count": calls.len(), "calls": calls })).into_response(),
        Err(why) if why.starts_with("unknown outcome") => {
            error(StatusCode::BAD_REQUEST, "invalid_query", why)
        }
        Err(why) => call_log_failed(why),
    }
}

/// `GET /health`: the gateway's liveness and a per-service summary. Unauthenticated,
/// so it names services and states only (no URLs, no tools); it reads counts only, so
/// its cost is in the number of services, not tools.
#[utoipa::path(get, path = "/health", tag = "observe",
    responses(
        (status = 200, description = "The gateway answers", body = HealthBody),
        (status = 400, description = "A repeated Host/Origin header", body = ErrorBody),
        (status = 403, description = "Host or Origin not allowed", body = ErrorBody),
    ))]
pub async fn health(State(registry): State<Arc<Registry>>) -> Response {
    let services = registry.summary();
    let healthy = services
        .iter()
        .filter(|s| s.state == UpState::Healthy)
        .count();
    Json(HealthBody {
        status: "ok",
        service: "mcp-gateway",
        version: env!("CARGO_PKG_VERSION"),
        upstreams: Upstreams {
            total: services.len(),
            healthy,
            not_healthy: services.len() - healthy,
        },
        tools: registry.catalog().tools().len(),
        services,
        cluster: registry.cluster(),
    })
    .into_response()
}

/// A virtual server's entry: its definition, endpoint, and the tools it exposes now.
fn server_entry(
    registry: &Registry,
    server: &crate::servers::VirtualServer,
    configured: bool,
) -> VirtualServerEntry {
    let catalog = registry.catalog();
    let allow = crate::vocab::Allow::within(None, Arc::clone(&server.view));
    let tool_count = catalog
        .tools()
        .iter()
        .filter(|t| {
            matches!(catalog.lookup(&t.name),
                crate::catalog::Lookup::Found(r) if allow.tool(&r.service.name, &r.original))
        })
        .count();
    VirtualServerEntry {
        name: server.definition.name.clone(),
        endpoint: format!("/servers/{}/mcp", server.definition.name),
        definition: server.definition.clone(),
        configured,
        tool_count,
    }
}

/// `GET /virtual-servers`.
#[utoipa::path(get, path = "/virtual-servers", tag = "virtual servers",
    responses(
        (status = 200, description = "Every virtual server, by name", body = VirtualServerList),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Scope, Host or Origin", body = ErrorBody),
        (status = 429, description = "Over a rate limit", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn virtual_servers(State(registry): State<Arc<Registry>>) -> Response {
    let servers: Vec<VirtualServerEntry> = registry
        .virtual_servers()
        .iter()
        .map(|(s, configured)| server_entry(&registry, s, *configured))
        .collect();
    Json(VirtualServerList {
        count: servers.len(),
        servers,
    })
    .into_response()
}

/// `GET /virtual-servers/{name}`.
#[utoipa::path(get, path = "/virtual-servers/{name}", tag = "virtual servers",
    params(("name" = String, Path, description = "The virtual server")),
    responses(
        (status = 200, description = "The virtual server", body = VirtualServerEntry),
        (status = 400, description = "Malformed path", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Scope, Host or Origin", body = ErrorBody),
        (status = 404, description = "No such virtual server", body = ErrorBody),
        (status = 429, description = "Over a rate limit", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn virtual_server(
    State(registry): State<Arc<Registry>>,
    name: Result<Path<String>, PathRejection>,
) -> Response {
    let name = match name {
        Ok(Path(name)) => name,
        Err(e) => return bad_request("path", e.body_text()),
    };
    match registry
        .virtual_servers()
        .into_iter()
        .find(|(s, _)| s.definition.name == name)
    {
        Some((server, configured)) => {
            Json(server_entry(&registry, &server, configured)).into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no virtual server {name:?}"),
        ),
    }
}

/// `POST /virtual-servers`: defines a virtual server, or redefines one defined at run
/// time; stored before it is live, and its clients hear that their lists changed.
#[utoipa::path(post, path = "/virtual-servers", tag = "virtual servers",
    request_body = crate::servers::Definition,
    responses(
        (status = 201, description = "A new virtual server", body = VirtualServerEntry),
        (status = 200, description = "An existing one redefined", body = VirtualServerEntry),
        (status = 400, description = "Malformed body (or a repeated Host/Origin header)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Scope, Host or Origin", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 409, description = "Defined in the configuration", body = ErrorBody),
        (status = 413, description = "Body over max_body_bytes", body = ErrorBody),
        (status = 422, description = "A bad name, pattern or rename, or too many virtual servers", body = ErrorBody),
        (status = 429, description = "Over a rate limit", body = ErrorBody),
        (status = 500, description = "The definition could not be stored (nothing changed)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn define_virtual_server(
    State(registry): State<Arc<Registry>>,
    Extension(identity): Extension<Identity>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(refusal) = limited_to_servers(&identity) {
        return refusal;
    }
    let body = match body {
        Ok(b) => b,
        Err(rejected) => return body_refused(rejected),
    };
    let definition: crate::servers::Definition = match serde_json::from_slice(&body) {
        Ok(d) => d,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("not a virtual server definition: {e}"),
            );
        }
    };
    let name = definition.name.clone();
    match registry.define_virtual_server(definition).await {
        Ok(created) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            match registry.virtual_server(&name) {
                Some(server) => {
                    (status, Json(server_entry(&registry, &server, false))).into_response()
                }
                None => error(
                    StatusCode::CONFLICT,
                    "changed",
                    format!("the virtual server {name:?} was removed meanwhile"),
                ),
            }
        }
        Err(e) => server_refusal(e),
    }
}

/// `DELETE /virtual-servers/{name}`.
#[utoipa::path(delete, path = "/virtual-servers/{name}", tag = "virtual servers",
    params(("name" = String, Path, description = "The virtual server")),
    responses(
        (status = 200, description = "Removed", body = RemovedServer),
        (status = 400, description = "Malformed path", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Scope, Host or Origin", body = ErrorBody),
        (status = 404, description = "No such virtual server", body = ErrorBody),
        (status = 409, description = "Defined in the configuration", body = ErrorBody),
        (status = 429, description = "Over a rate limit", body = ErrorBody),
        (status = 500, description = "The removal could not be stored (nothing changed)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn remove_virtual_server(
    State(registry): State<Arc<Registry>>,
    Extension(identity): Extension<Identity>,
    name: Result<Path<String>, PathRejection>,
) -> Response {
    if let Some(refusal) = limited_to_servers(&identity) {
        return refusal;
    }
    let name = match name {
        Ok(Path(name)) => name,
        Err(e) => return bad_request("path", e.body_text()),
    };
    match registry.remove_virtual_server(&name).await {
        Ok(()) => Json(RemovedServer { removed: name }).into_response(),
        Err(e) => server_refusal(e),
    }
}

/// A credential limited to some virtual servers may not change any (it could widen
/// its own view).
fn limited_to_servers(identity: &Identity) -> Option<Response> {
    identity
        .allow
        .as_ref()
        .filter(|a| !a.endpoint(None))
        .map(|_| {
            error(
                StatusCode::FORBIDDEN,
                "limited_credential",
                format!(
                    "credential \"{}\" is limited to virtual servers and may not define or remove them",
                    identity.name
                ),
            )
        })
}

fn server_refusal(e: crate::registry::ServerError) -> Response {
    use crate::registry::ServerError;
    let (status, code) = match &e {
        ServerError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_definition"),
        ServerError::TooMany => (StatusCode::UNPROCESSABLE_ENTITY, "too_many_servers"),
        ServerError::Configured(_) => (StatusCode::CONFLICT, "configured"),
        ServerError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        ServerError::Store(why) if why.unavailable() => {
            tracing::warn!("virtual server not saved: {why}");
            (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
        }
        ServerError::Store(why) => {
            tracing::error!("virtual server not saved: {why}");
            (StatusCode::INTERNAL_SERVER_ERROR, "store_failed")
        }
    };
    error(status, code, e.to_string())
}
