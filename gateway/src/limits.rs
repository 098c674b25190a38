//! Rate limits (token buckets, `governor`): per credential over every request, and per
//! tool over every call of it, whoever makes it. Both are off unless configured.
//!
//! A refused request says when to come back: HTTP 429 with `Retry-After` for the admin
//! routes, and for MCP a JSON-RPC error [`RATE_LIMITED`] whose `data.retryAfterMs` says
//! the same.
//!
//! Invariant: a limit is a token bucket per key; a refusal says how long to wait.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use governor::{
    DefaultKeyedRateLimiter, Quota,
    clock::{Clock, DefaultClock},
};
use rmcp::{ErrorData, model::ErrorCode};
use serde_json::json;

/// The configured limits.
pub struct Limits {
    per_credential: Option<DefaultKeyedRateLimiter<Arc<str>>>,
    per_tool: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

impl Limits {
    /// Requests per second per credential, calls per second per tool; 0 is no limit.
    pub fn new(per_credential: u32, per_tool: u32) -> Self {
        Self {
            per_credential: NonZeroU32::new(per_credential)
                .map(|n| DefaultKeyedRateLimiter::keyed(Quota::per_second(n))),
            per_tool: NonZeroU32::new(per_tool)
                .map(|n| DefaultKeyedRateLimiter::keyed(Quota::per_second(n))),
            clock: DefaultClock::default(),
        }
    }

    /// Takes a token for `credential`; when there is none, how long until there is.
    pub fn credential(&self, credential: &Arc<str>) -> Result<(), Duration> {
        match &self.per_credential {
            None => Ok(()),
            Some(l) => l
                .check_key(credential)
                .map_err(|until| until.wait_time_from(self.clock.now())),
        }
    }

    /// Takes a token for a call of `service`'s tool `tool` (its name there); when there
    /// is none, how long until there is.
    pub fn tool(&self, service: &str, tool: &str) -> Result<(), Duration> {
        match &self.per_tool {
            None => Ok(()),
            Some(l) => l
                .check_key(&format!("{service}/{tool}"))
                .map_err(|until| until.wait_time_from(self.clock.now())),
        }
    }

    /// Forgets buckets that are full again (JWT subjects come and go).
    pub fn prune(&self) {
        if let Some(l) = &self.per_credential {
            l.retain_recent();
        }
        if let Some(l) = &self.per_tool {
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
