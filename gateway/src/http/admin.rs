//! The operator endpoints: `POST /register`, `GET|POST /services`, `GET /health`.
//! Bodies are parsed by hand so that every malformed input gets a JSON error that says
//! exactly what is wrong, and nothing changes on error.

use std::sync::Arc;

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{Path, Query, State},
    response::{IntoResponse, Response},
};
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::auth::{Identity, Scopes};
use crate::observe::calllog::{Filter, Stats};
use crate::{
    registry::{Actor, RegisterError, Registration, Registry, UnregisterError},
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

/// A JSON error body: `{"error": code, "message": text}`.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": code, "message": message.into() })),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RegisterBody {
    name: String,
    url: String,
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
pub async fn register(
    State(registry): State<Arc<Registry>>,
    Extension(identity): Extension<Identity>,
    body: Bytes,
) -> Response {
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
                Json(json!({
                    "registered": view,
                    "instance": done.instance.id,
                    "newService": done.new_service,
                    "replaced": done.refreshed,
                })),
            )
                .into_response()
        }
        Err(RegisterError::Internal(why)) => {
            tracing::error!("{why}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal", why)
        }
        Err(RegisterError::Invalid(why)) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_registration",
            why,
        ),
        Err(e @ RegisterError::NotAllowed { .. }) => {
            error(StatusCode::FORBIDDEN, "upstream_not_allowed", e.to_string())
        }
        Err(RegisterError::NotOwner(why)) => error(StatusCode::FORBIDDEN, "not_owner", why),
        Err(RegisterError::Reserved(why)) => error(StatusCode::FORBIDDEN, "name_reserved", why),
        Err(RegisterError::Conflict(why)) => error(StatusCode::CONFLICT, "owner_conflict", why),
        Err(e @ RegisterError::Unreachable { .. }) => error(
            StatusCode::BAD_GATEWAY,
            "upstream_unreachable",
            e.to_string(),
        ),
        Err(e @ RegisterError::Store(_)) => {
            tracing::error!("{e}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_failed",
                "the registration could not be saved; nothing was changed",
            )
        }
    }
}

/// A `/register` body read into a registration, or what is wrong with it (a 400).
/// Nothing is contacted (the fuzz target `admin_bodies` drives this).
pub fn parse_registration(body: &[u8], actor: Actor) -> Result<Registration, String> {
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
            return Err(why);
        }
    };
    let auth = match parsed.auth.map(serde_json::from_value::<UpstreamAuth>) {
        None => None,
        Some(Ok(auth)) => Some(auth),
        Some(Err(_)) => return Err(crate::upstream::secret::FORMS.into()),
    };
    Ok(Registration {
        name: parsed.name,
        url: parsed.url,
        weight: parsed.weight,
        call_timeout_ms: parsed.call_timeout_ms,
        replace: parsed.replace,
        auth,
        actor,
    })
}

#[derive(Deserialize)]
pub struct InstanceQuery {
    url: Option<String>,
}

/// `DELETE /services/{name}` (every instance) or `DELETE /services/{name}?url=URL`
/// (one instance).
pub async fn unregister(
    State(registry): State<Arc<Registry>>,
    Extension(identity): Extension<Identity>,
    Path(name): Path<String>,
    Query(q): Query<InstanceQuery>,
) -> Response {
    unregister_reply(&registry, &identity, &name, q.url.as_deref()).await
}

/// `DELETE /services/{name}/instances/{id}`.
pub async fn unregister_instance(
    State(registry): State<Arc<Registry>>,
    Extension(identity): Extension<Identity>,
    Path((name, id)): Path<(String, String)>,
) -> Response {
    unregister_reply(&registry, &identity, &name, Some(&id)).await
}

async fn unregister_reply(
    registry: &Registry,
    identity: &Identity,
    name: &str,
    which: Option<&str>,
) -> Response {
    match registry.unregister(name, which, &actor(identity)).await {
        Ok(n) => Json(json!({ "unregistered": name, "instances": n })).into_response(),
        Err(e @ (UnregisterError::UnknownService(_) | UnregisterError::UnknownInstance { .. })) => {
            error(StatusCode::NOT_FOUND, "not_registered", e.to_string())
        }
        Err(UnregisterError::NotOwner(why)) => error(StatusCode::FORBIDDEN, "not_owner", why),
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

/// `GET /services/{name}`.
pub async fn service(State(registry): State<Arc<Registry>>, Path(name): Path<String>) -> Response {
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
/// call statistics (from the call log, when it is on).
pub async fn services(State(registry): State<Arc<Registry>>) -> Response {
    let stats = call_stats(&registry).await.ok().flatten();
    // Large catalogs make a large answer: built off the async workers.
    let listed = Arc::clone(&registry);
    let Ok(Ok(mut services)) =
        tokio::task::spawn_blocking(move || serde_json::to_value(listed.services())).await
    else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "listing the services failed",
        );
    };
    if let (Some((by_service, _)), Some(list)) = (&stats, services.as_array_mut()) {
        for s in list {
            let name = s["name"].as_str().unwrap_or_default().to_string();
            s["stats"] = serde_json::to_value(by_service.get(&name).cloned().unwrap_or_default())
                .unwrap_or_default();
        }
    }
    let count = services.as_array().map_or(0, Vec::len);
    Json(json!({ "count": count, "services": services })).into_response()
}

type AllStats = (
    std::collections::BTreeMap<String, Stats>,
    std::collections::BTreeMap<(String, String), Stats>,
);

/// The call log's statistics, read on the blocking pool; `None` when the log is off.
async fn call_stats(registry: &Arc<Registry>) -> Result<Option<AllStats>, String> {
    let Some(log) = registry.calls().cloned() else {
        return Ok(None);
    };
    tokio::task::spawn_blocking(move || log.stats())
        .await
        .map_err(|e| e.to_string())?
        .map(Some)
}

fn call_log_off() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "call_log_off",
        "the call log is off (call_log = false)",
    )
}

/// `GET /stats`: per service and per tool, over the retained call log: calls, errors,
/// error rate, p50 and p95 latency, last use.
pub async fn stats(State(registry): State<Arc<Registry>>) -> Response {
    match call_stats(&registry).await {
        Ok(Some((by_service, by_tool))) => {
            let tools: Vec<_> = by_tool
                .into_iter()
                .map(|((service, tool), s)| {
                    let mut v = serde_json::to_value(s).unwrap_or_default();
                    v["service"] = json!(service);
                    v["tool"] = json!(tool);
                    v
                })
                .collect();
            Json(json!({ "services": by_service, "tools": tools })).into_response()
        }
        Ok(None) => call_log_off(),
        Err(why) => error(StatusCode::INTERNAL_SERVER_ERROR, "call_log_failed", why),
    }
}

/// `GET /calls?service=&tool=&identity=&outcome=&since=&until=&limit=`: recent calls,
/// newest first.
pub async fn calls(
    State(registry): State<Arc<Registry>>,
    query: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let filter = match query {
        Ok(Query(filter)) => filter,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!(
                    "{}; filters are service, tool, identity, outcome, since and until (Unix ms) and limit",
                    e.body_text()
                ),
            );
        }
    };
    let Some(log) = registry.calls().cloned() else {
        return call_log_off();
    };
    match tokio::task::spawn_blocking(move || log.query(&filter)).await {
        Ok(Ok(calls)) => Json(json!({ "count": calls.len(), "calls": calls })).into_response(),
        Ok(Err(why)) if why.starts_with("unknown outcome") => {
            error(StatusCode::BAD_REQUEST, "invalid_query", why)
        }
        Ok(Err(why)) => error(StatusCode::INTERNAL_SERVER_ERROR, "call_log_failed", why),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// `GET /health`: the gateway's liveness and a per-service summary. Unauthenticated,
/// so it names services and states only (no URLs, no tools); it reads counts only, so
/// its cost is in the number of services, not tools.
pub async fn health(State(registry): State<Arc<Registry>>) -> Response {
    let services = registry.summary();
    let healthy = services
        .iter()
        .filter(|s| s.state == UpState::Healthy)
        .count();
    Json(json!({
        "status": "ok",
        "service": "mcp-gateway",
        "version": env!("CARGO_PKG_VERSION"),
        "upstreams": { "total": services.len(), "healthy": healthy, "notHealthy": services.len() - healthy },
        "services": services,
        "tools": registry.catalog().tools().len(),
    }))
    .into_response()
}
