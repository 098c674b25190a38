//! What operators see: Prometheus metrics ([`metrics`]) and the call log ([`calllog`]).
//!
//! Every tool call, on either path, holds a [`CallTicket`] from the moment it is routed
//! until its answer: finishing it (or dropping it, when the client went away) counts the
//! call in the metrics and hands one record to the call log's writer task through a
//! bounded channel. Nothing here waits: a full channel drops the record and counts the
//! drop, so logging never slows or fails a call.
//!
//! Invariant: every tool call holds exactly one `CallTicket` from routing to answer;
//! dropped unfinished, it records the call as cancelled.

pub mod calllog;
pub mod metrics;
pub mod traces;

use std::{
    sync::{Arc, Mutex},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

pub use crate::vocab::now_ms;

/// How a call ended, as the metrics label it and the call log stores it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A result without `isError`.
    Ok,
    /// A result with `isError: true` (the tool said it failed).
    ToolError,
    /// The backend answered with a JSON-RPC error.
    Error,
    Timeout,
    Unavailable,
    CircuitOpen,
    /// The client cancelled or went away before the answer.
    Cancelled,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Ok,
        Outcome::ToolError,
        Outcome::Error,
        Outcome::Timeout,
        Outcome::Unavailable,
        Outcome::CircuitOpen,
        Outcome::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ToolError => "tool_error",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Unavailable => "unavailable",
            Outcome::CircuitOpen => "circuit_open",
            Outcome::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Counts against the error rate.
    pub fn failed(self) -> bool {
        !matches!(self, Outcome::Ok | Outcome::Cancelled)
    }
}

/// Who sent a request and when it arrived: put in the request's extensions by
/// `mcp::entry`, read by both call paths.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: Arc<str>,
    pub request_id: Option<Arc<str>>,
    pub arrived: Instant,
    /// The request's span (its id; with traces, the parent of the call's upstream span).
    pub span: tracing::Span,
    /// The client's request is counted elsewhere (a composite's, once, when answered):
    /// calls made for it (the composite's own entry, its steps) are tool calls only.
    pub counted: bool,
}

impl Caller {
    pub fn anonymous() -> Self {
        Self {
            identity: Arc::from("anonymous"),
            request_id: None,
            arrived: Instant::now(),
            span: tracing::Span::none(),
            counted: false,
        }
    }
}

/// One finished tool call.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRecord {
    /// Unix time (ms) the call arrived.
    pub at_ms: i64,
    pub request_id: Option<Arc<str>>,
    pub identity: Arc<str>,
    pub service: Arc<str>,
    pub instance: Option<Arc<str>>,
    /// The tool's public name.
    pub tool: Arc<str>,
    /// The whole call, from the request's arrival to its answer.
    pub duration_ms: f64,
    /// The part spent on the backend (choosing an instance, sending, waiting).
    pub upstream_ms: f64,
    pub outcome: Outcome,
    pub error: Option<String>,
    /// The arguments (JSON, redacted), when `call_log_payloads` is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
    /// The result or error (JSON), when `call_log_payloads` is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

/// The gateway's instruments: metrics and the call log's sender.
pub struct Observer {
    pub metrics: metrics::Metrics,
    log: Option<calllog::Sender>,
    /// Record arguments and results (redacted) in the call log.
    pub payloads: bool,
    redact: Arc<[String]>,
}

impl Observer {
    pub fn new(payloads: bool, redact: &[String], log: Option<calllog::Sender>) -> Self {
        Self {
            metrics: metrics::Metrics::new(),
            log,
            payloads,
            redact: redact.into(),
        }
    }

    /// A call routed to `service`'s `tool`, starting now; `arguments` is its JSON text.
    pub fn start(
        self: &Arc<Self>,
        caller: &Caller,
        service: &Arc<str>,
        tool: &str,
        arguments: impl FnOnce() -> Option<String>,
    ) -> CallTicket {
        let arguments = if self.payloads {
            arguments().map(|a| calllog::redact(&a, &self.redact))
        } else {
            None
        };
        CallTicket {
            observer: Arc::clone(self),
            caller: caller.clone(),
            service: Arc::clone(service),
            tool: Arc::from(tool),
            instance: Mutex::new(None),
            upstream_started: Instant::now(),
            arguments,
            done: false,
        }
    }

    /// `request`: the call was a client's request (counted as one).
    fn record(&self, record: CallRecord, request: bool) {
        self.metrics.call(&record, request);
        if let Some(log) = &self.log {
            log.send(record, &self.metrics);
        }
    }
}

/// A tool call in flight; see the module documentation.
pub struct CallTicket {
    observer: Arc<Observer>,
    caller: Caller,
    service: Arc<str>,
    tool: Arc<str>,
    instance: Mutex<Option<Arc<str>>>,
    upstream_started: Instant,
    arguments: Option<String>,
    done: bool,
}

impl CallTicket {
    /// The backend part starts now (after routing, rate limits and the like).
    pub fn upstream_starts(&mut self) {
        self.upstream_started = Instant::now();
    }

    /// The instance that served (or last tried) the call.
    pub fn served_by(&self, instance: &str) {
        let mut slot = self.instance.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_deref() != Some(instance) {
            *slot = Some(Arc::from(instance));
        }
    }

    /// Records wanted: the result text, when payloads are logged.
    pub fn wants_result(&self) -> bool {
        self.observer.payloads
    }

    /// The call is handed to another path, which books it with a ticket of its own.
    pub fn abandon(mut self) {
        self.done = true;
    }

    pub fn finish(mut self, outcome: Outcome, error: Option<String>, result: Option<String>) {
        self.finish_in_place(outcome, error, result);
    }

    fn finish_in_place(&mut self, outcome: Outcome, error: Option<String>, result: Option<String>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let now = Instant::now();
        let ms = |since: Instant| now.saturating_duration_since(since).as_secs_f64() * 1000.0;
        let arrived_ago = now.saturating_duration_since(self.caller.arrived);
        let at_ms = SystemTime::now()
            .checked_sub(arrived_ago)
            .unwrap_or_else(SystemTime::now)
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let record = CallRecord {
            at_ms,
            request_id: self.caller.request_id.clone(),
            identity: Arc::clone(&self.caller.identity),
            service: Arc::clone(&self.service),
            instance: self
                .instance
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
            tool: Arc::clone(&self.tool),
            duration_ms: ms(self.caller.arrived),
            upstream_ms: ms(self.upstream_started),
            outcome,
            error,
            arguments: self.arguments.take(),
            result: result
                .filter(|_| self.observer.payloads)
                .map(|r| calllog::redact(&r, &self.observer.redact)),
        };
        self.observer.record(record, !self.caller.counted);
    }
}

impl Drop for CallTicket {
    fn drop(&mut self) {
        self.finish_in_place(
            Outcome::Cancelled,
            Some("the client went away before the answer".into()),
            None,
        );
    }
}
