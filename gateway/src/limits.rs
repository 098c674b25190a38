//! Rate limits (token buckets, `governor`): per credential over every request, and per
//! tool over every call of it, whoever makes it. Both are off unless configured.
//!
//! A refused request says when to come back: HTTP 429 with `Retry-After` for the admin
//! routes, and for MCP a JSON-RPC error [`RATE_LIMITED`] whose `data.retryAfterMs` says
//! the same.
//!
//! In a cluster (a PostgreSQL store) each replica enforces its share of a limit: the
//! configured rate divided by the live replicas (rounded up), so a load balancer that
//! spreads a credential's requests evenly lets the cluster accept about the configured
//! rate, not that many times each replica (the buckets start full again when the count
//! of replicas changes). A credential whose requests all reach one replica gets that
//! replica's share.
//!
//! Invariant: a limit is a token bucket per key; a refusal says how long to wait.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use arc_swap::ArcSwapOption;
use governor::{
    DefaultKeyedRateLimiter, Quota,
    clock::{Clock, DefaultClock},
};
use rmcp::{ErrorData, model::ErrorCode};
use serde_json::json;

/// The configured limits.
pub struct Limits {
    /// The configured rates (0: no limit).
    rates: (u32, u32),
    /// The live replicas sharing the limits (1 outside a cluster).
    replicas: std::sync::atomic::AtomicU32,
    per_credential: ArcSwapOption<DefaultKeyedRateLimiter<Arc<str>>>,
    per_tool: ArcSwapOption<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

/// A bucket of `rate / replicas` per second (rounded up), none for a rate of 0.
fn bucket<K: std::hash::Hash + Eq + Clone>(
    rate: u32,
    replicas: u32,
) -> Option<Arc<DefaultKeyedRateLimiter<K>>> {
    let share = rate.div_ceil(replicas.max(1));
    NonZeroU32::new(share).map(|n| Arc::new(DefaultKeyedRateLimiter::keyed(Quota::per_second(n))))
}

impl Limits {
    /// Requests per second per credential, calls per second per tool; 0 is no limit.
    pub fn new(per_credential: u32, per_tool: u32) -> Self {
        Self {
            rates: (per_credential, per_tool),
            replicas: std::sync::atomic::AtomicU32::new(1),
            per_credential: ArcSwapOption::new(bucket(per_credential, 1)),
            per_tool: ArcSwapOption::new(bucket(per_tool, 1)),
            clock: DefaultClock::default(),
        }
    }

    /// `replicas` live replicas share the limits from now on (each enforces its share).
    pub fn share_among(&self, replicas: usize) {
        let n = u32::try_from(replicas.max(1)).unwrap_or(u32::MAX);
        if self.replicas.swap(n, std::sync::atomic::Ordering::Relaxed) == n {
            return;
        }
        self.per_credential.store(bucket(self.rates.0, n));
        self.per_tool.store(bucket(self.rates.1, n));
        tracing::info!(
            replicas = n,
            "rate limits shared among the cluster's replicas"
        );
    }

    /// Takes a token for `credential`; when there is none, how long until there is.
    pub fn credential(&self, credential: &Arc<str>) -> Result<(), Duration> {
        match &*self.per_credential.load() {
            None => Ok(()),
            Some(l) => l
                .check_key(credential)
                .map_err(|until| until.wait_time_from(self.clock.now())),
        }
    }

    /// Takes a token for a call of `service`'s tool `tool` (its name there); when there
    /// is none, how long until there is.
    pub fn tool(&self, service: &str, tool: &str) -> Result<(), Duration> {
        match &*self.per_tool.load() {
            None => Ok(()),
            Some(l) => l
                .check_key(&format!("{service}/{tool}"))
                .map_err(|until| until.wait_time_from(self.clock.now())),
        }
    }

    /// Forgets buckets that are full again (JWT subjects come and go).
    pub fn prune(&self) {
        if let Some(l) = &*self.per_credential.load() {
            l.retain_recent();
        }
        if let Some(l) = &*self.per_tool.load() {
            l.retain_recent();
        }
    }
}

/// Whole milliseconds to wait, at least 1.
pub fn retry_ms(wait: Duration) -> u64 {
    (wait.as_millis() as u64).max(1)
}

/// The JSON-RPC error of a refused MCP request.
pub fn rate_limited(what: &str, wait: Duration) -> ErrorData {
    let ms = retry_ms(wait);
    ErrorData::new(
        ErrorCode(crate::vocab::RATE_LIMITED),
        format!("{what} is over its rate limit; retry in {ms} ms"),
        Some(json!({ "reason": "rate_limited", "retryAfterMs": ms })),
    )
}
