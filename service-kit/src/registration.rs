//! A service's self-registration with the gateway: `POST {gateway}/register` with
//! `{"name","url"}` (and `"auth": {"bearer": ...}`, the token the gateway must present
//! to the service) and the gateway's Bearer token, retried with capped, jittered exponential
//! backoff while the gateway is unreachable or answers 5xx. A 4xx answer (bad token,
//! refused URL) is final: retrying would not change it, so it is logged and given up.
//! [`serve_registered`] wraps a service's serving in registering and unregistering.

use std::{fmt, time::Duration};

use axum::Router;
use rand::Rng;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What a service tells the gateway about itself.
#[derive(Debug, Clone, Serialize)]
pub struct Registration {
    /// Service name; tools that collide with another service's are qualified with it.
    pub name: String,
    /// The URL the gateway should use to reach this service's MCP endpoint.
    pub url: String,
    /// The credential the gateway must present to this service on every request
    /// (`"auth"` in the body); `None`: the service accepts anyone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<UpstreamBearer>,
}

/// A Bearer token the gateway is to present to a service: serialized as the gateway's
/// `/register` expects it (`{"bearer": "TOKEN"}`), never shown by `Debug`.
#[derive(Clone, Serialize)]
pub struct UpstreamBearer {
    bearer: String,
}

impl UpstreamBearer {
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            bearer: token.into(),
        }
    }
}

impl fmt::Debug for UpstreamBearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UpstreamBearer(<redacted>)")
    }
}

/// Where and how to register.
#[derive(Clone)]
pub struct GatewayTarget {
    /// Base URL of the gateway, e.g. `http://127.0.0.1:3001`.
    pub base_url: String,
    /// Bearer token accepted by the gateway.
    pub token: String,
}

impl fmt::Debug for GatewayTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayTarget")
            .field("base_url", &self.base_url)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// How a registration attempt ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The gateway accepted the registration (2xx).
    Registered,
    /// The gateway refused it with a 4xx; retrying would not help.
    Refused(String),
    /// Shutdown was requested before the gateway answered.
    Cancelled,
}

/// Backoff bounds: first retry after `INITIAL`, doubling up to `MAX`, each with ±25 %
/// jitter so a fleet restarting together does not knock in lockstep.
const INITIAL: Duration = Duration::from_millis(250);
const MAX: Duration = Duration::from_secs(10);

/// Registers, retrying until the gateway accepts, refuses, or `shutdown` is cancelled.
pub async fn register_with_retry(
    target: &GatewayTarget,
    registration: &Registration,
    shutdown: &CancellationToken,
) -> Outcome {
    register_with_backoff(target, registration, shutdown, INITIAL).await
}

/// [`register_with_retry`], the first retry after `initial` (tests wait longer).
async fn register_with_backoff(
    target: &GatewayTarget,
    registration: &Registration,
    shutdown: &CancellationToken,
    initial: Duration,
) -> Outcome {
    crate::client::ensure_tls_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client with static settings");
    let url = format!("{}/register", target.base_url.trim_end_matches('/'));
    let mut delay = initial;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let sent = client
            .post(&url)
            .bearer_auth(&target.token)
            .json(registration)
            .send();
        let result = tokio::select! {
            r = sent => r,
            _ = shutdown.cancelled() => return Outcome::Cancelled,
        };
        match result {
            Ok(resp) if resp.status().is_success() => {
                tracing::info!(gateway = %target.base_url, name = %registration.name,
                    url = %registration.url, attempt, "registered with gateway");
                return Outcome::Registered;
            }
            Ok(resp) if resp.status().is_client_error() => {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                let why = format!("{status}: {body}");
                tracing::error!(gateway = %target.base_url, name = %registration.name,
                    "gateway refused registration: {why}");
                return Outcome::Refused(why);
            }
            Ok(resp) => {
                tracing::warn!(gateway = %target.base_url, status = %resp.status(), attempt,
                    retry_in_ms = delay.as_millis() as u64, "registration failed, retrying");
            }
            Err(e) => {
                tracing::warn!(gateway = %target.base_url, error = %e, attempt,
                    retry_in_ms = delay.as_millis() as u64, "gateway unreachable, retrying");
            }
        }
        let jittered = jitter(delay);
        tokio::select! {
            _ = tokio::time::sleep(jittered) => {}
            _ = shutdown.cancelled() => return Outcome::Cancelled,
        }
        delay = next_delay(delay);
    }
}

/// The delay before the retry after one of `delay`: doubled, at most [`MAX`].
fn next_delay(delay: Duration) -> Duration {
    (delay * 2).min(MAX)
}

/// Spawns [`register_with_retry`] in the background; the service keeps serving whether
/// or not a gateway ever answers. Keep the handle to unregister on graceful shutdown.
pub fn spawn(
    target: GatewayTarget,
    registration: Registration,
    shutdown: CancellationToken,
) -> Handle {
    let (t, r) = (target.clone(), registration.clone());
    Handle {
        task: tokio::spawn(async move { register_with_retry(&t, &r, &shutdown).await }),
        target,
        registration,
    }
}

/// A service's whole serving life: registers in the background (when `gateway` is
/// given: where, and as what), serves `router` on `listener` until `shutdown` is
/// cancelled, then unregisters if the registration went through. A serving error is
/// returned as it is, without unregistering.
pub async fn serve_registered(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    gateway: Option<(GatewayTarget, Registration)>,
) -> std::io::Result<()> {
    let registered =
        gateway.map(|(target, registration)| spawn(target, registration, shutdown.clone()));
    crate::serve::serve(listener, router, shutdown).await?;
    if let Some(handle) = registered {
        handle.unregister().await;
    }
    Ok(())
}

/// A background registration, to be undone when the service stops gracefully.
pub struct Handle {
    task: tokio::task::JoinHandle<Outcome>,
    target: GatewayTarget,
    registration: Registration,
}

impl Handle {
    /// If the registration went through, removes this instance from the gateway
    /// (`DELETE /services/{name}?url=...`), so the gateway stops routing to a service
    /// that is going away. Bounded in time; a gateway that is gone is not an error.
    pub async fn unregister(self) -> bool {
        let outcome = match tokio::time::timeout(Duration::from_secs(1), self.task).await {
            Ok(Ok(outcome)) => outcome,
            _ => return false,
        };
        if outcome != Outcome::Registered {
            return false;
        }
        match unregister(&self.target, &self.registration).await {
            Ok(()) => {
                tracing::info!(gateway = %self.target.base_url, name = %self.registration.name,
                    "unregistered from gateway");
                true
            }
            Err(e) => {
                tracing::warn!(gateway = %self.target.base_url, "could not unregister: {e}");
                false
            }
        }
    }
}

/// `DELETE {gateway}/services/{name}?url={url}` with the token; a 404 (already gone)
/// counts as done.
pub async fn unregister(target: &GatewayTarget, registration: &Registration) -> Result<(), String> {
    let base = format!(
        "{}/services/{}",
        target.base_url.trim_end_matches('/'),
        registration.name
    );
    let url = url::Url::parse_with_params(&base, [("url", registration.url.as_str())])
        .map_err(|e| format!("bad gateway URL {base}: {e}"))?;
    crate::client::ensure_tls_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client
        .delete(url)
        .bearer_auth(&target.token)
        .send()
        .await
        .map_err(|e| crate::client::root_cause(&e))?;
    match resp.status() {
        s if s.is_success() || s == reqwest::StatusCode::NOT_FOUND => Ok(()),
        s => Err(format!("gateway answered {s}")),
    }
}

fn jitter(d: Duration) -> Duration {
    let factor = rand::rng().random_range(0.75..1.25);
    d.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_body_carries_the_credential_and_debug_does_not() {
        let registration = Registration {
            name: "demo".into(),
            url: "http://127.0.0.1:1/mcp".into(),
            auth: Some(UpstreamBearer::new("service-secret-1")),
        };
        assert_eq!(
            serde_json::to_value(&registration).expect("JSON"),
            json!({"name": "demo", "url": "http://127.0.0.1:1/mcp",
                   "auth": {"bearer": "service-secret-1"}})
        );
        let shown = format!("{registration:?}");
        assert!(
            shown.contains("demo") && !shown.contains("service-secret-1"),
            "{shown}"
        );
        let open = Registration {
            auth: None,
            ..registration
        };
        assert_eq!(
            serde_json::to_value(&open).expect("JSON"),
            json!({"name": "demo", "url": "http://127.0.0.1:1/mcp"})
        );
        let target = GatewayTarget {
            base_url: "http://127.0.0.1:2".into(),
            token: "gateway-secret-2".into(),
        };
        let shown = format!("{target:?}");
        assert!(
            shown.contains("127.0.0.1:2") && !shown.contains("gateway-secret-2"),
            "{shown}"
        );
    }

    #[test]
    fn the_delay_doubles_up_to_the_cap_with_jitter_within_a_quarter() {
        let mut delays = vec![INITIAL];
        for _ in 0..8 {
            delays.push(next_delay(*delays.last().expect("one")));
        }
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(
            ms,
            [250, 500, 1_000, 2_000, 4_000, 8_000, 10_000, 10_000, 10_000]
        );
        for d in [INITIAL, Duration::from_secs(4), MAX] {
            let samples: Vec<Duration> = (0..2_000).map(|_| jitter(d)).collect();
            for s in &samples {
                assert!(
                    *s >= d.mul_f64(0.75) && *s <= d.mul_f64(1.25),
                    "{s:?} for {d:?}"
                );
            }
            // Spread over the range, not a constant: both outer fifths are reached.
            assert!(samples.iter().any(|s| *s < d.mul_f64(0.85)), "{d:?}");
            assert!(samples.iter().any(|s| *s > d.mul_f64(1.15)), "{d:?}");
        }
    }

    /// A stand-in gateway on loopback answering `/register` with `statuses` in turn (the
    /// last one from then on); the number of attempts it received.
    async fn stand_in(
        statuses: Vec<u16>,
        stop: &CancellationToken,
    ) -> (
        GatewayTarget,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use std::sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        };
        let attempts = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&attempts);
        let router = Router::new().route(
            "/register",
            axum::routing::post(move || {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                let status = statuses[n.min(statuses.len() - 1)];
                async move {
                    (
                        axum::http::StatusCode::from_u16(status).expect("status"),
                        axum::Json(json!({"status": status})),
                    )
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(crate::serve::serve(listener, router, stop.clone()));
        let target = GatewayTarget {
            base_url: format!("http://{addr}"),
            token: "t".into(),
        };
        (target, attempts)
    }

    fn registration() -> Registration {
        Registration {
            name: "demo".into(),
            url: "http://127.0.0.1:1/mcp".into(),
            auth: None,
        }
    }

    /// Registers against `target`, failing the test if it has not ended within 60 s.
    async fn register_bounded(target: &GatewayTarget, shutdown: &CancellationToken) -> Outcome {
        tokio::time::timeout(
            Duration::from_secs(60),
            register_with_retry(target, &registration(), shutdown),
        )
        .await
        .expect("register_with_retry ended within 60 s")
    }

    #[tokio::test]
    async fn a_failing_gateway_is_retried_until_it_accepts() {
        use std::sync::atomic::Ordering;
        let stop = CancellationToken::new();
        let (target, attempts) = stand_in(vec![503, 503, 502, 201], &stop).await;
        let outcome = register_bounded(&target, &CancellationToken::new()).await;
        assert_eq!(outcome, Outcome::Registered);
        assert_eq!(attempts.load(Ordering::SeqCst), 4);
        stop.cancel();
    }

    #[tokio::test]
    async fn a_refusal_is_final_after_one_attempt() {
        use std::sync::atomic::Ordering;
        let stop = CancellationToken::new();
        for status in [400, 401, 403, 409, 422] {
            let (target, attempts) = stand_in(vec![status, 201], &stop).await;
            let outcome = register_bounded(&target, &CancellationToken::new()).await;
            match outcome {
                Outcome::Refused(why) => assert!(why.starts_with(&status.to_string()), "{why}"),
                other => panic!("{status}: {other:?}"),
            }
            assert_eq!(attempts.load(Ordering::SeqCst), 1, "{status}");
        }
        stop.cancel();
    }

    #[tokio::test]
    async fn shutdown_cancels_the_retries() {
        use std::sync::atomic::Ordering;
        let stop = CancellationToken::new();
        let (target, attempts) = stand_in(vec![503], &stop).await;
        // Cancelled while waiting to retry: the next attempt would come in an hour, the
        // outcome must come at once (bounded generously).
        let shutdown = CancellationToken::new();
        let registering = tokio::spawn({
            let (target, shutdown) = (target.clone(), shutdown.clone());
            async move {
                register_with_backoff(
                    &target,
                    &registration(),
                    &shutdown,
                    Duration::from_secs(3600),
                )
                .await
            }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while attempts.load(Ordering::SeqCst) < 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no first attempt in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.cancel();
        let outcome = tokio::time::timeout(Duration::from_secs(10), registering)
            .await
            .expect("ended at once when cancelled, not after the backoff")
            .expect("task");
        assert_eq!(outcome, Outcome::Cancelled);
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        // Cancelled before the first answer: a gateway that never answers.
        let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let target = GatewayTarget {
            base_url: format!("http://{}", silent.local_addr().expect("addr")),
            token: "t".into(),
        };
        let shutdown = CancellationToken::new();
        let registering = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { register_with_retry(&target, &registration(), &shutdown).await }
        });
        // The connection is accepted by the kernel, and never answered.
        let (_held, _) = silent.accept().await.expect("the attempt connects");
        shutdown.cancel();
        let outcome = tokio::time::timeout(Duration::from_secs(10), registering)
            .await
            .expect("ended at once when cancelled")
            .expect("task");
        assert_eq!(outcome, Outcome::Cancelled);
        stop.cancel();
    }
}
