//! OpenTelemetry traces over OTLP (HTTP, JSON), off unless `otlp_endpoint` is set. The
//! spans are `tracing`'s: the request span every HTTP request has (`http::request_span`),
//! and one `upstream` span per tool call, its child, which the backend hears of as W3C
//! trace context: a `traceparent` header and `_meta.traceparent` (SEP-414), so its own
//! spans join the gateway's trace. When traces are off, no span is made for this and
//! nothing is propagated.
//!
//! Invariant: traces are off unless configured; a client's trace context is continued,
//! never trusted for anything else.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::{
    propagation::TextMapPropagator,
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_subscriber::{
    Layer, filter::Targets, fmt, layer::SubscriberExt, util::SubscriberInitExt,
};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Traces are exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Flushes and stops the exporter when dropped (at the end of `main`).
pub struct Tracing(Option<SdkTracerProvider>);

impl Drop for Tracing {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the process's log subscriber (`RUST_LOG`, default `info`; JSON lines with
/// `json`) and, with an OTLP endpoint (`http://collector:4318`), the trace exporter.
pub fn init(json: bool, otlp_endpoint: Option<&str>) -> anyhow::Result<Tracing> {
    // The OTLP exporter builds its own HTTP client.
    service_kit::client::ensure_tls_provider();
    let filter = service_kit::logging::filter();
    let logs = if json {
        fmt::layer().json().boxed()
    } else {
        // Colours only on a terminal, and never with NO_COLOR.
        fmt::layer()
            .with_ansi(service_kit::logging::colours(
                service_kit::logging::Output::Stdout,
            ))
            .boxed()
    };
    let (traces, provider) = match otlp_endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpJson)
                .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
                .build()?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(Resource::builder().with_service_name("mcp-gateway").build())
                .build();
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("mcp-gateway"))
                .with_filter(Targets::new().with_target("gateway", tracing::Level::INFO));
            ENABLED.store(true, Ordering::Relaxed);
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .try_init()?;
    Ok(Tracing(provider))
}

/// The span of one tool call's upstream part, under `parent` (the request's span);
/// `Span::none()` when traces are off.
pub fn upstream_span(parent: &tracing::Span, service: &str, tool: &str) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        parent: parent,
        "upstream",
        otel.name = %format!("tools/call {tool}"),
        otel.kind = "client",
        service = %service,
        tool = %tool,
    )
}

/// Makes `span` (a request's) a child of the client's trace, when the request carries
/// W3C trace context and traces are on.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    struct Headers<'a>(&'a http::HeaderMap);
    impl opentelemetry::propagation::Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(http::HeaderName::as_str).collect()
        }
    }
    if !enabled() || !headers.contains_key(crate::vocab::TRACEPARENT) {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    let _ = span.set_parent(parent);
}

/// The W3C `traceparent` of `span`, when it is exported.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if !enabled() || span.is_none() {
        return None;
    }
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}
