//! One backend MCP server: its client session, its state and its last-known tools. This
//! is the only place that talks to a backend.
//!
//! A supervisor task per upstream keeps the session alive: it connects (with capped,
//! jittered backoff while the backend is unreachable), lists the tools, pings on an
//! interval, and re-lists when the backend announces `tools/list_changed`. Calls take a
//! clone of the current session handle (no lock is held across an upstream await) and
//! report transport failures back, which marks the upstream down and wakes the
//! supervisor. While an upstream is down its last-known tools stay listed and calls fail
//! fast with an error that names the service.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use arc_swap::{ArcSwap, ArcSwapOption};
use rand::Rng;
use rmcp::{
    ClientHandler, RoleClient, ServiceError,
    model::{
        CallToolRequestParams, CallToolResponse, ClientConfig, ClientRequest, PingRequest, Tool,
    },
    service::{NotificationContext, RunningService},
};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Where an upstream's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not connected yet (start-up, or just registered from the store/config).
    Connecting,
    /// Session open and answering.
    Up,
    /// Unreachable or failing; the supervisor is retrying.
    Down,
}

/// State plus when it last changed and why.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub state: State,
    #[serde(serialize_with = "ser_time")]
    pub since: SystemTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    s.serialize_u64(ms)
}

/// Where an upstream came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `POST /register` (persisted in the store).
    Registered,
    /// The gateway's configuration file or environment.
    Config,
}

/// Timing knobs of an upstream.
#[derive(Debug, Clone)]
pub struct Options {
    pub connect_timeout: Duration,
    pub call_timeout: Duration,
    pub health_interval: Duration,
}

/// Why a proxied call failed at the gateway (the backend's own tool errors are results,
/// not these).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("service \"{service}\" is unavailable: {cause}")]
    Unavailable { service: String, cause: String },
    #[error("service \"{service}\" did not answer within {ms} ms")]
    Timeout { service: String, ms: u64 },
    /// The backend answered with a JSON-RPC error: passed through as it is.
    #[error("{0}")]
    Upstream(rmcp::ErrorData),
}

type Session = RunningService<RoleClient, UpstreamClient>;

pub struct Upstream {
    pub name: Arc<str>,
    pub url: Arc<str>,
    pub source: Source,
    pub registered_at: SystemTime,
    options: Options,
    status: Mutex<Status>,
    session: ArcSwapOption<Session>,
    tools: ArcSwap<Vec<Tool>>,
    /// Wakes the supervisor: reconnect now, or re-list tools.
    wake: Notify,
    /// Cancelled when the upstream is removed or replaced, or the gateway stops.
    cancel: CancellationToken,
}

/// What the supervisor reports to the registry.
pub trait Listener: Send + Sync + 'static {
    /// The upstream's tool list changed (first connect, re-list, or reconnect).
    fn tools_changed(&self, upstream: &Arc<Upstream>);
}

impl Upstream {
    pub fn new(
        name: &str,
        url: &str,
        source: Source,
        tools: Vec<Tool>,
        options: Options,
        parent: &CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            url: url.into(),
            source,
            registered_at: SystemTime::now(),
            options,
            status: Mutex::new(Status {
                state: State::Connecting,
                since: SystemTime::now(),
                last_error: None,
            }),
            session: ArcSwapOption::empty(),
            tools: ArcSwap::from_pointee(tools),
            wake: Notify::new(),
            cancel: parent.child_token(),
        })
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Last-known tool definitions, exactly as the backend sent them.
    pub fn tools(&self) -> Arc<Vec<Tool>> {
        self.tools.load_full()
    }

    fn set_state(&self, state: State, error: Option<String>) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if s.state != state {
            tracing::info!(upstream = %self.name, from = ?s.state, to = ?state,
                error = error.as_deref().unwrap_or(""), "upstream state changed");
            s.state = state;
            s.since = SystemTime::now();
        }
        s.last_error = error;
    }

    /// Connects and lists tools once, with the connect deadline. Used by `/register`,
    /// which must answer with the tools or a clear error, and by the supervisor.
    pub async fn connect(self: &Arc<Self>) -> Result<Vec<Tool>, String> {
        let options = service_kit::client::ClientOptions {
            client_name: "mcp-gateway".into(),
            bearer: None,
            connect_timeout: self.options.connect_timeout,
            max_concurrent_requests: 1024,
        };
        let handler = UpstreamClient {
            info: service_kit::client::client_config(&options),
            upstream: Arc::downgrade(self),
        };
        let session = service_kit::client::connect_with(&self.url, &options, handler)
            .await
            .map_err(|e| format!("{e:#}"))?;
        let tools = tokio::time::timeout(self.options.connect_timeout, session.list_all_tools())
            .await
            .map_err(|_| {
                format!(
                    "tools/list did not answer within {} ms",
                    self.options.connect_timeout.as_millis()
                )
            })?
            .map_err(|e| format!("tools/list failed: {}", service_kit::client::describe(&e)))?;
        self.tools.store(Arc::new(tools.clone()));
        self.session.store(Some(Arc::new(session)));
        self.set_state(State::Up, None);
        Ok(tools)
    }

    /// Proxies one `tools/call` (name already translated to the upstream's).
    pub async fn call_tool(
        &self,
        params: CallToolRequestParams,
    ) -> Result<CallToolResponse, CallError> {
        let Some(session) = self.session.load_full() else {
            return Err(self.unavailable());
        };
        let timeout = self.options.call_timeout;
        match tokio::time::timeout(timeout, session.peer().call_tool_once(params)).await {
            Err(_) => Err(CallError::Timeout {
                service: self.name.to_string(),
                ms: timeout.as_millis() as u64,
            }),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(ServiceError::McpError(e))) if !is_transport_closed(&e) => {
                Err(CallError::Upstream(e))
            }
            Ok(Err(e)) => {
                let cause = service_kit::client::describe(&e);
                self.lost(&session, &cause);
                Err(CallError::Unavailable {
                    service: self.name.to_string(),
                    cause,
                })
            }
        }
    }

    fn unavailable(&self) -> CallError {
        let status = self.status();
        let cause = match (status.state, status.last_error) {
            (_, Some(e)) => e,
            (State::Connecting, None) => "not connected yet".into(),
            (_, None) => "no session".into(),
        };
        CallError::Unavailable {
            service: self.name.to_string(),
            cause,
        }
    }

    /// Passive evidence: a call or ping on `session` failed at the transport level.
    fn lost(&self, session: &Arc<Session>, cause: &str) {
        // Only drop the session that failed, not a fresh one another task installed.
        let current = self.session.load();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, session)) {
            self.session.store(None);
        }
        self.set_state(State::Down, Some(cause.to_string()));
        self.wake.notify_one();
    }

    /// Stops the supervisor and closes the session.
    pub fn close(&self) {
        self.cancel.cancel();
        self.session.store(None);
    }

    /// Runs until the upstream is closed: connect, watch, reconnect.
    pub async fn supervise(self: Arc<Self>, listener: Arc<dyn Listener>) {
        let mut backoff = Duration::from_millis(250);
        const MAX_BACKOFF: Duration = Duration::from_secs(30);
        loop {
            if self.cancel.is_cancelled() {
                return;
            }
            let Some(session) = self.session.load_full() else {
                let result = tokio::select! {
                    r = self.connect() => r,
                    _ = self.cancel.cancelled() => return,
                };
                match result {
                    Ok(_) => {
                        backoff = Duration::from_millis(250);
                        listener.tools_changed(&self);
                    }
                    Err(e) => {
                        self.set_state(State::Down, Some(e));
                        let delay = backoff.mul_f64(rand::rng().random_range(0.75..1.25));
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = self.cancel.cancelled() => return,
                        }
                    }
                }
                continue;
            };
            let woken = tokio::select! {
                _ = tokio::time::sleep(self.options.health_interval) => false,
                _ = self.wake.notified() => true,
                _ = self.cancel.cancelled() => return,
            };
            if self.session.load().is_none() {
                continue; // a failed call dropped it: reconnect now
            }
            if woken {
                // The backend announced a tool list change.
                match tokio::time::timeout(self.options.connect_timeout, session.list_all_tools())
                    .await
                {
                    Ok(Ok(tools)) => {
                        self.tools.store(Arc::new(tools));
                        listener.tools_changed(&self);
                    }
                    Ok(Err(e)) => self.lost(
                        &session,
                        &format!("tools/list failed: {}", service_kit::client::describe(&e)),
                    ),
                    Err(_) => self.lost(&session, "tools/list timed out"),
                }
                continue;
            }
            let ping = session
                .peer()
                .send_request(ClientRequest::PingRequest(PingRequest {
                    method: Default::default(),
                    extensions: Default::default(),
                }));
            match tokio::time::timeout(self.options.connect_timeout, ping).await {
                Ok(Ok(_)) => self.set_state(State::Up, None),
                Ok(Err(e)) => self.lost(
                    &session,
                    &format!("ping failed: {}", service_kit::client::describe(&e)),
                ),
                Err(_) => self.lost(&session, "ping timed out"),
            }
        }
    }
}

/// The gateway's client-side handler for one upstream session: hears list changes.
pub struct UpstreamClient {
    info: ClientConfig,
    upstream: std::sync::Weak<Upstream>,
}

impl ClientHandler for UpstreamClient {
    fn get_info(&self) -> ClientConfig {
        self.info.clone()
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        if let Some(up) = self.upstream.upgrade() {
            tracing::info!(upstream = %up.name, "upstream announced tools/list_changed");
            up.wake.notify_one();
        }
    }
}

/// rmcp reports a response stream that closed before its answer as an internal error
/// carrying a marker in `data`; for the gateway that is a lost backend, not a backend's
/// own error.
fn is_transport_closed(e: &rmcp::ErrorData) -> bool {
    e.data
        .as_ref()
        .and_then(|d| d.get("io.modelcontextprotocol/transportClosed"))
        .is_some()
}
