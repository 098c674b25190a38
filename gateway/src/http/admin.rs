//! The operator endpoints: `POST /register`, `GET|POST /services`, `GET /health`.
//! Bodies are parsed by hand so that every malformed input gets a JSON error that says
//! exactly what is wrong, and nothing changes on error.

use std::sync::Arc;

use axum::{
    Json,
    body::Bytes,
    extract::State,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use crate::{
    registry::{RegisterError, Registry},
    upstream::State as UpState,
};

/// A JSON error body: `{"error": code, "message": text}`.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": code, "message": message.into() })),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    name: String,
    url: String,
}

/// `POST /register {"name","url"}`: connect, list tools, add to the table.
pub async fn register(State(registry): State<Arc<Registry>>, body: Bytes) -> Response {
    let body: RegisterBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            let why = if body.iter().all(u8::is_ascii_whitespace) {
                "request body is empty; expected {\"name\": \"...\", \"url\": \"http://host:port/mcp\"}".to_string()
            } else {
                format!(
                    "invalid registration body: {e}; expected {{\"name\": \"...\", \"url\": \"http://host:port/mcp\"}}"
                )
            };
            return error(StatusCode::BAD_REQUEST, "invalid_body", why);
        }
    };
    match registry.register(&body.name, &body.url).await {
        Ok((up, replaced)) => {
            let view = registry.service(&up.name);
            let status = if replaced {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            (
                status,
                Json(json!({ "registered": view, "replaced": replaced })),
            )
                .into_response()
        }
        Err(RegisterError::Invalid(why)) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_registration",
            why,
        ),
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

/// `GET|POST /services`: every registered service with URL, state and tools.
pub async fn services(State(registry): State<Arc<Registry>>) -> Response {
    let services = registry.services();
    Json(json!({ "count": services.len(), "services": services })).into_response()
}

/// `GET /health`: the gateway's liveness and a per-service summary. Unauthenticated,
/// so it names services and states only (no URLs, no tools).
pub async fn health(State(registry): State<Arc<Registry>>) -> Response {
    let services = registry.services();
    let up = services
        .iter()
        .filter(|s| s.status.state == UpState::Up)
        .count();
    let summary: Vec<_> = services
        .iter()
        .map(|s| json!({ "name": s.name, "state": s.status.state, "tools": s.tool_count }))
        .collect();
    Json(json!({
        "status": "ok",
        "service": "mcp-gateway",
        "version": env!("CARGO_PKG_VERSION"),
        "upstreams": { "total": services.len(), "up": up, "notUp": services.len() - up },
        "services": summary,
        "tools": registry.catalog().tools().len(),
    }))
    .into_response()
}
