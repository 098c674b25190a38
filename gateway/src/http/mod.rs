//! The HTTP surface: the router and the tower layers every route passes through.
//!
//! ```text
//! request id → trace (a span per request carrying it) → body limit → Host/Origin
//! (`Gate`s) → route → auth (Bearer; all but /health, /ui and the metadata) → handler
//!   /mcp        mcp::entry (POST, GET, DELETE): found by `Routes` before the router
//!               looks (nearly every request is one), with the same Bearer check
//!   /register   admin::register (POST)
//!   /registry/import  admin::import (POST): server.json / MCP registry listing (register)
//!   /services   admin::services (GET, POST)
//!   /services/{name}                 GET one, DELETE (all instances, or ?url=)
//!   /services/{name}/instances/{id}  DELETE one instance
//!   /services/{name}/{action}        POST start, stop, restart (operate)
//!   /services/{name}/logs            GET a stdio server's stderr (operate)
//!   /calls      admin::calls (GET): the call log, filtered
//!   /stats      admin::stats (GET): per service and tool, from the call log
//!   /metrics    Prometheus metrics (GET)
//!   /health     admin::health (GET, public)
//!   /ui         the dashboard's static files (GET, public; its API calls need a token)
//!   /.well-known/oauth-protected-resource[/mcp]  metadata (GET, public, RFC 9728)
//! ```
//!
//! Invariant: [`router`] (with [`Routes`]) and [`service`] are the only places routes,
//! layers and their order are declared.

/// The header carrying each request's id (the client's, or one the gateway makes), also
/// set on the response and on every log line of the request.
pub use crate::refusal::REQUEST_ID;

pub mod admin;
pub mod auth;

pub mod metadata;
pub mod openapi;
pub mod schema;
pub mod ui;

use std::sync::Arc;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    routing::{any, get, post},
};
use http::StatusCode;
use tower_http::{
    request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    trace::TraceLayer,
};

use crate::{mcp::McpEndpoint, registry::Registry};

/// Every route, with the Bearer check on the protected ones, but without the layers
/// every request passes (request id, trace, body limit, Host/Origin): serve it inside
/// [`service`] (or [`app`]), never alone.
pub fn router(registry: Arc<Registry>, mcp: McpEndpoint, config: &crate::Config) -> Routes {
    let metadata = metadata::Metadata {
        public_url: config.public_url.as_deref().map(Arc::from),
        authorization_servers: config.authorization_servers.clone().into(),
    };
    let well_known = Router::new()
        .route(metadata::WELL_KNOWN, get(metadata::gateway))
        .route(&format!("{}/mcp", metadata::WELL_KNOWN), get(metadata::mcp))
        .route("/openapi.json", get(openapi::serve))
        .with_state(metadata.clone());
    let admin = Router::new()
        .route("/register", post(admin::register))
        .route("/services", get(admin::services).post(admin::services))
        .route(
            "/services/{name}",
            get(admin::service).delete(admin::unregister),
        )
        .route(
            "/services/{name}/instances/{id}",
            axum::routing::delete(admin::unregister_instance),
        )
        .route("/services/{name}/logs", get(admin::logs))
        .route("/services/{name}/{action}", post(admin::control))
        .route("/calls", get(admin::calls))
        .route("/stats", get(admin::stats))
        .route(
            "/virtual-servers",
            get(admin::virtual_servers).post(admin::define_virtual_server),
        )
        .route(
            "/virtual-servers/{name}",
            get(admin::virtual_server).delete(admin::remove_virtual_server),
        )
        .with_state(Arc::clone(&registry))
        .merge(
            Router::new()
                .route("/registry/import", post(admin::import))
                .with_state(Arc::new(crate::import::Importer::new(
                    Arc::clone(&registry),
                    config,
                ))),
        );
    let endpoint = mcp.clone();
    let mcp = Router::new()
        .route("/servers/{name}/mcp", any(crate::mcp::virtual_entry))
        .route("/metrics", get(metrics))
        .with_state(mcp);
    let auth = auth::Auth::new(config, metadata, Arc::clone(registry.limits()));
    let bearer = auth.clone();
    let protected =
        admin
            .merge(mcp)
            .route_layer(Gate(move |request: &mut axum::extract::Request| {
                auth::require_bearer(&bearer, request)
            }));
    let router = Router::new()
        .route("/health", get(admin::health).with_state(registry))
        .merge(well_known)
        .merge(ui::routes())
        .merge(protected)
        .method_not_allowed_fallback(|request: axum::extract::Request| async move {
            admin::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!(
                    "{} does not take {}; see GET /openapi.json",
                    request.uri().path(),
                    request.method()
                ),
            )
        })
        .fallback(|| async {
            admin::error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; the gateway serves /mcp, /servers/{name}/mcp, /register, /registry/import, /services, /virtual-servers, /calls, /stats, /metrics, /health, /ui and /.well-known/oauth-protected-resource",
            )
        });
    Routes {
        mcp: endpoint,
        auth,
        router,
    }
}

/// [`router`]'s routes: `/mcp` (every method) answered by `mcp::entry` after the Bearer
/// check, without the router's lookup and the two futures it wraps each route's in
/// (~5k instructions a call); every other path by the router.
#[derive(Clone)]
pub struct Routes {
    mcp: McpEndpoint,
    auth: auth::Auth,
    router: Router,
}

/// The MCP endpoint's path.
const MCP_PATH: &str = "/mcp";

impl tower::Service<axum::extract::Request> for Routes {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::Either<
        futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>,
        axum::routing::future::RouteFuture<std::convert::Infallible>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // The router is always ready, and so is an endpoint that holds no service.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: axum::extract::Request) -> Self::Future {
        use futures::{FutureExt as _, future::Either};
        if request.uri().path() != MCP_PATH {
            return Either::Right(self.router.call(request));
        }
        if let Some(refusal) = auth::require_bearer(&self.auth, &mut request) {
            return Either::Left(std::future::ready(Ok(refusal)).boxed());
        }
        let endpoint = self.mcp.clone();
        Either::Left(
            crate::mcp::entry(axum::extract::State(endpoint), request)
                .map(Ok)
                .boxed(),
        )
    }
}

/// The gateway's HTTP service: [`router`] inside the layers every request passes. They
/// are composed once around the router rather than with `Router::layer`, which wraps
/// every route in each layer and boxes (and copies) the route's future once per layer:
/// ~12k instructions of `memcpy` per call with six layers.
pub fn service(
    router: Routes,
    config: &crate::Config,
) -> impl tower::Service<
    axum::extract::Request,
    Response = http::Response<
        impl http_body::Body<Data = bytes::Bytes, Error = axum::Error> + Send + 'static,
    >,
    Error = std::convert::Infallible,
    Future = impl Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    // Outermost first: a client's request id is kept only when it is short and plain;
    // the request gets an id (the client's, or a new UUID), every log line of the
    // request carries it, and the response returns it. Then every route: the body
    // limit; one Host and one Origin, both allowed (DNS rebinding).
    let origins = crate::origins::Origins::new(&config.allowed_hosts, &config.allowed_origins);
    let origins = Arc::new(origins);
    tower::ServiceBuilder::new()
        .map_request(plain_request_id)
        .layer(SetRequestIdLayer::new(REQUEST_ID, NewRequestId))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(Gate(move |request: &mut axum::extract::Request| {
            front(&origins, request)
        }))
        .service(router)
}

/// A request's id when its client sent none: a UUID v4, as tower-http's `MakeRequestUuid`
/// makes, written into a buffer rather than through `fmt` and parsed back.
#[derive(Clone, Copy)]
struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _request: &http::Request<B>) -> Option<RequestId> {
        let mut text = uuid::Uuid::encode_buffer();
        let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
        http::HeaderValue::from_str(id).ok().map(RequestId::new)
    }
}

/// The longest client request id kept (a longer one is replaced by a fresh one).
pub const MAX_REQUEST_ID: usize = 128;

/// Drops a client's `X-Request-Id` that is long, repeated or not plain visible ASCII, so
/// the gateway makes its own: the id is echoed, logged and stored.
fn plain_request_id(mut request: axum::extract::Request) -> axum::extract::Request {
    let mut ids = request.headers().get_all(&REQUEST_ID).iter();
    let keep = match (ids.next(), ids.next()) {
        (None, _) => true,
        (Some(id), None) => {
            let id = id.as_bytes();
            !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.iter().all(u8::is_ascii_graphic)
        }
        (Some(_), Some(_)) => false,
    };
    if !keep {
        request.headers_mut().remove(&REQUEST_ID);
    }
    request
}

/// [`service`] boxed, answering with axum's body: for a harness that holds the whole
/// gateway in a field of its own (the fuzz targets). `lib.rs` serves the unboxed one.
pub type App = tower::util::BoxCloneSyncService<
    axum::extract::Request,
    axum::response::Response,
    std::convert::Infallible,
>;

/// [`App`] of `router` inside the layers of [`service`].
pub fn app(router: Routes, config: &crate::Config) -> App {
    use tower::ServiceExt as _;
    App::new(service(router, config).map_response(|r| r.map(axum::body::Body::new)))
}

/// A layer that answers a request itself or passes it on, deciding at once: `check`
/// returns the refusal, or `None` to let the request through (having added to it what
/// the handler needs). Unlike `middleware::from_fn` it boxes nothing and clones no service
/// per request.
#[derive(Clone)]
pub struct Gate<F>(pub F);

impl<S, F: Clone> tower::Layer<S> for Gate<F> {
    type Service = Gated<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        Gated {
            check: self.0.clone(),
            inner,
        }
    }
}

/// A service behind a [`Gate`].
#[derive(Clone)]
pub struct Gated<S, F> {
    check: F,
    inner: S,
}

impl<S, F> tower::Service<axum::extract::Request> for Gated<S, F>
where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        >,
    F: Fn(&mut axum::extract::Request) -> Option<axum::response::Response>,
{
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future =
        futures::future::Either<std::future::Ready<Result<Self::Response, Self::Error>>, S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: axum::extract::Request) -> Self::Future {
        use futures::future::Either;
        match (self.check)(&mut request) {
            None => Either::Right(self.inner.call(request)),
            Some(refusal) => Either::Left(std::future::ready(Ok(refusal))),
        }
    }
}

/// Refuses a request whose `Host` or `Origin` the gateway does not answer: on `/mcp` as
/// a JSON-RPC error, elsewhere as `{"error","message"}`.
fn front(
    origins: &crate::origins::Origins,
    request: &axum::extract::Request,
) -> Option<axum::response::Response> {
    use crate::origins::Refused;
    let (status, code, message) = match origins.check(request.headers()) {
        Ok(()) => return None,
        Err(refused) => match refused {
            Refused::Repeated(which) => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("more than one {which} header"),
            ),
            Refused::Host => (
                StatusCode::FORBIDDEN,
                "host_not_allowed",
                "the Host header names no host this gateway answers (allowed_hosts)".to_string(),
            ),
            Refused::Origin => (
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                "requests from this Origin are not allowed (allowed_origins)".to_string(),
            ),
        },
    };
    Some(if crate::vocab::is_mcp_path(request.uri().path()) {
        crate::jsonrpc::error_response(
            status,
            serde_json::Value::Null,
            crate::vocab::INVALID_REQUEST,
            message,
        )
    } else {
        admin::error(status, code, message)
    })
}

/// The span of one HTTP request; its fields appear on every log line inside it.
fn request_span(request: &http::Request<axum::body::Body>) -> tracing::Span {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
    );
    if crate::observe::traces::enabled() {
        span.record(
            "otel.name",
            format!("{} {}", request.method(), request.uri().path()),
        );
        span.record("otel.kind", "server");
        crate::observe::traces::continue_trace(&span, request.headers());
    }
    span
}

/// `GET /metrics`: Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "observe",
    responses(
        (status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String),
        (status = 400, description = "A repeated Host/Origin header", body = super::http::schema::ErrorBody),
        (status = 401, description = "Missing or wrong token", body = super::http::schema::ErrorBody),
        (status = 403, description = "Scope, Host or Origin", body = super::http::schema::ErrorBody),
        (status = 429, description = "Over a rate limit", body = super::http::schema::ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn metrics(
    axum::extract::State(mcp): axum::extract::State<McpEndpoint>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(
            http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        mcp.metrics(),
    )
        .into_response()
}
