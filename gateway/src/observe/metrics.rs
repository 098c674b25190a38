//! `GET /metrics`: Prometheus metrics, one registry per gateway (no process-global
//! recorder, so several gateways in one process keep their own). Counters and histograms
//! are updated as calls finish; gauges (upstream states, sessions, in-flight calls,
//! registry size) are read from the live state at each scrape.
//!
//! Labels are bounded: MCP methods from a fixed list, services and tools only as
//! registered (an unknown tool is never a label) and only while they are
//! ([`Metrics::retain_tools`]), outcomes from [`Outcome::ALL`]; no session or request
//! ids.
//!
//! Invariant: labels come from bounded sets (methods, outcomes, what is registered now),
//! so neither a client nor a registrant's or upstream's churn of names grows the
//! registry.

use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use super::{CallRecord, Outcome};
use crate::vocab::FastDashMap;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PassthroughLabels {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    service: Arc<str>,
    tool: Arc<str>,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    service: Arc<str>,
    instance: Arc<str>,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessLabels {
    service: Arc<str>,
    instance: Arc<str>,
}

/// A stdio server's process as `/metrics` shows it.
pub struct ProcessSample {
    pub service: Arc<str>,
    pub instance: Arc<str>,
    pub running: bool,
    pub restarts: u64,
    pub cpu_ms: Option<u64>,
    pub rss_bytes: Option<u64>,
}

/// MCP methods counted by name; anything else is `other`.
pub const METHODS: [&str; 14] = [
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "completion/complete",
    "logging/setLevel",
    "other",
];

const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// What a scrape reads from the live gateway.
#[derive(Default)]
pub struct Snapshot {
    /// (service, instance id, state) of every instance.
    pub instances: Vec<(Arc<str>, Arc<str>, &'static str)>,
    pub services: usize,
    pub tools: usize,
    pub sessions: usize,
    /// Of them, those held without rmcp's session (see `Passthrough::hibernate`).
    pub dormant_sessions: usize,
    pub in_flight: usize,
    /// Every stdio instance's process.
    pub processes: Vec<ProcessSample>,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<MethodLabels, Counter>,
    passthrough: Family<PassthroughLabels, Counter>,
    calls: Family<CallLabels, Counter>,
    call_seconds: Family<ServiceLabels, Histogram, fn() -> Histogram>,
    upstream_seconds: Family<ServiceLabels, Histogram, fn() -> Histogram>,
    log_dropped: Counter,
    instance_state: Family<InstanceLabels, Gauge>,
    services: Gauge,
    instances: Gauge,
    tools: Gauge,
    sessions: Gauge,
    dormant_sessions: Gauge,
    in_flight: Gauge,
    stdio_running: Family<ProcessLabels, Gauge>,
    stdio_restarts: Family<ProcessLabels, Gauge>,
    stdio_cpu: Family<ProcessLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    stdio_rss: Family<ProcessLabels, Gauge>,
    /// The counters of `requests`, by method (as in [`METHODS`]) and ok/error, and of
    /// `passthrough` (`tools/list`, `tools/call`), taken from their families on first use:
    /// a family finds its series by hashing the labels under a lock, on every call.
    request_handles: [[OnceLock<Counter>; 2]; METHODS.len()],
    passthrough_handles: [OnceLock<Counter>; 2],
    /// Each called tool's series, found with one probe of the cheap hasher: those of
    /// the tools registered now ([`Self::retain_tools`]).
    tool_handles: FastDashMap<(Arc<str>, Arc<str>), Arc<ToolHandles>>,
}

/// One tool's series: its counter per outcome (filled on first use) and its service's
/// histograms.
struct ToolHandles {
    calls: [OnceLock<Counter>; Outcome::ALL.len()],
    call_seconds: Histogram,
    upstream_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mcp_gateway");
        let m = Self {
            registry: Mutex::new(Registry::default()),
            requests: Family::default(),
            passthrough: Family::default(),
            calls: Family::default(),
            call_seconds: Family::new_with_constructor(histogram),
            upstream_seconds: Family::new_with_constructor(histogram),
            log_dropped: Counter::default(),
            instance_state: Family::default(),
            services: Gauge::default(),
            instances: Gauge::default(),
            tools: Gauge::default(),
            sessions: Gauge::default(),
            dormant_sessions: Gauge::default(),
            in_flight: Gauge::default(),
            stdio_running: Family::default(),
            stdio_restarts: Family::default(),
            stdio_cpu: Family::default(),
            stdio_rss: Family::default(),
            request_handles: Default::default(),
            passthrough_handles: Default::default(),
            tool_handles: FastDashMap::default(),
        };
        registry.register(
            "requests",
            "MCP requests by JSON-RPC method and outcome (ok or error)",
            m.requests.clone(),
        );
        registry.register(
            "passthrough_requests",
            "MCP requests answered by the pass-through path (not rmcp's typed pipeline), by method",
            m.passthrough.clone(),
        );
        registry.register(
            "tool_calls",
            "Tool calls by service, tool (public name) and outcome",
            m.calls.clone(),
        );
        registry.register(
            "tool_call_duration_seconds",
            "Whole tool calls, from the request's arrival to the answer",
            m.call_seconds.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "The upstream part of tool calls: choosing an instance, sending, waiting",
            m.upstream_seconds.clone(),
        );
        registry.register(
            "call_log_dropped",
            "Call records dropped because the call log's writer fell behind",
            m.log_dropped.clone(),
        );
        registry.register(
            "instance_state",
            "1 for each upstream instance's current state (starting, healthy, degraded, down, stopped, failed)",
            m.instance_state.clone(),
        );
        registry.register("services", "Registered services", m.services.clone());
        registry.register(
            "instances",
            "Registered upstream instances",
            m.instances.clone(),
        );
        registry.register("tools", "Tools in the merged table", m.tools.clone());
        registry.register(
            "open_sessions",
            "Open client MCP sessions",
            m.sessions.clone(),
        );
        registry.register(
            "dormant_sessions",
            "Open client MCP sessions held without a session task until a request needs one",
            m.dormant_sessions.clone(),
        );
        registry.register(
            "in_flight_calls",
            "Upstream calls in flight",
            m.in_flight.clone(),
        );
        registry.register(
            "stdio_running",
            "1 while a stdio server's process runs, by service and instance",
            m.stdio_running.clone(),
        );
        registry.register(
            "stdio_restarts",
            "Processes a stdio instance started after its first (crashes and operator restarts)",
            m.stdio_restarts.clone(),
        );
        registry.register(
            "stdio_cpu_seconds",
            "CPU time (user + system) of a stdio instance's running process",
            m.stdio_cpu.clone(),
        );
        registry.register(
            "stdio_resident_bytes",
            "Resident memory of a stdio instance's running process",
            m.stdio_rss.clone(),
        );
        *m.registry.lock().unwrap_or_else(|p| p.into_inner()) = registry;
        m
    }

    /// One MCP request of `method` answered (`ok`: without a JSON-RPC error).
    pub fn request(&self, method: &str, ok: bool) {
        let at = METHODS
            .iter()
            .position(|m| *m == method)
            .unwrap_or(METHODS.len() - 1);
        let outcome = if ok { "ok" } else { "error" };
        self.request_handles[at][usize::from(!ok)]
            .get_or_init(|| {
                self.requests
                    .get_or_create(&MethodLabels {
                        method: METHODS[at],
                        outcome,
                    })
                    .clone()
            })
            .inc();
    }

    /// One request (`tools/call` or `tools/list`) answered by the pass-through path.
    pub fn passthrough_request(&self, method: &'static str) {
        let at = match method {
            "tools/list" => 0,
            "tools/call" => 1,
            _ => {
                self.passthrough
                    .get_or_create(&PassthroughLabels { method })
                    .inc();
                return;
            }
        };
        self.passthrough_handles[at]
            .get_or_init(|| {
                self.passthrough
                    .get_or_create(&PassthroughLabels { method })
                    .clone()
            })
            .inc();
    }

    /// A finished tool call; `request`: also a client's `tools/call` request (what is
    /// called for a composite is not: see `Caller::counted`).
    pub(super) fn call(&self, r: &CallRecord, request: bool) {
        if request {
            self.request(
                "tools/call",
                !matches!(
                    r.outcome,
                    Outcome::Error | Outcome::Timeout | Outcome::Unavailable | Outcome::CircuitOpen
                ),
            );
        }
        let key = (Arc::clone(&r.service), Arc::clone(&r.tool));
        let handles = match self.tool_handles.get(&key) {
            Some(h) => Arc::clone(&h),
            None => {
                let service = ServiceLabels {
                    service: Arc::clone(&r.service),
                };
                let made = Arc::new(ToolHandles {
                    calls: Default::default(),
                    call_seconds: self.call_seconds.get_or_create(&service).clone(),
                    upstream_seconds: self.upstream_seconds.get_or_create(&service).clone(),
                });
                Arc::clone(self.tool_handles.entry(key.clone()).or_insert(made).value())
            }
        };
        let at = Outcome::ALL
            .iter()
            .position(|o| *o == r.outcome)
            .unwrap_or_default();
        let mut made = false;
        handles.calls[at]
            .get_or_init(|| {
                made = true;
                self.calls
                    .get_or_create(&CallLabels {
                        service: Arc::clone(&r.service),
                        tool: Arc::clone(&r.tool),
                        outcome: r.outcome.as_str(),
                    })
                    .clone()
            })
            .inc();
        // A series made after [`Self::retain_tools`] dropped the tool's handles (the tool
        // went while this call was in flight) would be nobody's to remove: removed here
        // when they are gone now, or there when they go later.
        if made && !self.tool_handles.contains_key(&key) {
            self.forget_tool(&r.service, &r.tool);
        }
        handles.call_seconds.observe(r.duration_ms / 1000.0);
        handles.upstream_seconds.observe(r.upstream_ms / 1000.0);
    }

    /// Drops the series of every tool that is gone: its service's (`keep_service`
    /// false: deregistered, or a virtual server removed) or the tool's alone
    /// (`keep_tool(service, tool)` false: the upstream no longer lists it, the name now
    /// leads elsewhere). Called whenever the catalog or the virtual servers change, so
    /// the series stay those of what is registered now (and of calls that were in flight
    /// when their tool went, until the next change): a registrant's or an upstream's
    /// churn of names cannot grow the registry.
    pub fn retain_tools(
        &self,
        keep_service: impl Fn(&str) -> bool,
        keep_tool: impl Fn(&str, &str) -> bool,
    ) {
        // Each tool gone, and whether its service is.
        let mut gone = Vec::new();
        self.tool_handles.retain(|(service, tool), _| {
            let service_kept = keep_service(service);
            let kept = service_kept && keep_tool(service, tool);
            if !kept {
                gone.push((Arc::clone(service), Arc::clone(tool), service_kept));
            }
            kept
        });
        for (service, tool, service_kept) in gone {
            self.forget_tool(&service, &tool);
            if !service_kept {
                let service = ServiceLabels { service };
                self.call_seconds.remove(&service);
                self.upstream_seconds.remove(&service);
            }
        }
    }

    /// Removes `tool`'s counters, one per outcome.
    fn forget_tool(&self, service: &Arc<str>, tool: &Arc<str>) {
        for outcome in Outcome::ALL {
            self.calls.remove(&CallLabels {
                service: Arc::clone(service),
                tool: Arc::clone(tool),
                outcome: outcome.as_str(),
            });
        }
    }

    pub(super) fn log_dropped(&self) {
        self.log_dropped.inc();
    }

    /// The text exposition, gauges read from `now`.
    pub fn render(&self, now: Snapshot) -> String {
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        self.instance_state.clear();
        for (service, instance, state) in &now.instances {
            for s in [
                "starting", "healthy", "degraded", "down", "stopped", "failed",
            ] {
                self.instance_state
                    .get_or_create(&InstanceLabels {
                        service: Arc::clone(service),
                        instance: Arc::clone(instance),
                        state: s,
                    })
                    .set(i64::from(*state == s));
            }
        }
        self.services.set(now.services as i64);
        self.instances.set(now.instances.len() as i64);
        self.tools.set(now.tools as i64);
        self.sessions.set(now.sessions as i64);
        self.dormant_sessions.set(now.dormant_sessions as i64);
        self.in_flight.set(now.in_flight as i64);
        for family in [&self.stdio_running, &self.stdio_restarts, &self.stdio_rss] {
            family.clear();
        }
        self.stdio_cpu.clear();
        for p in &now.processes {
            let labels = ProcessLabels {
                service: Arc::clone(&p.service),
                instance: Arc::clone(&p.instance),
            };
            self.stdio_running
                .get_or_create(&labels)
                .set(i64::from(p.running));
            self.stdio_restarts
                .get_or_create(&labels)
                .set(i64::try_from(p.restarts).unwrap_or(i64::MAX));
            if let Some(ms) = p.cpu_ms {
                self.stdio_cpu
                    .get_or_create(&labels)
                    .set(ms as f64 / 1000.0);
            }
            if let Some(bytes) = p.rss_bytes {
                self.stdio_rss
                    .get_or_create(&labels)
                    .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            }
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}
