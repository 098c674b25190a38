//! One instance's health: the state machine (`starting` → `healthy` ⇄ `degraded` →
//! `down` → back) and the circuit breaker, both fed by active pings and passive evidence
//! from real calls. Pure bookkeeping under a short `std::sync::Mutex`; nothing here
//! awaits.
//!
//! - A successful call closes the breaker and makes the instance `healthy`. A ping
//!   proves the session only: it makes a `down` instance `healthy` again, but it clears
//!   neither call failures nor an open breaker, except as the half-open probe once the
//!   cool-down has passed.
//! - A failure (transport error or timeout; a backend's own error is not one) makes it
//!   `degraded`; `failure_threshold` consecutive failures open the breaker and make it
//!   `down`. A lost session (connect refused, stream closed) makes it `down` at once.
//! - An open breaker refuses calls until `cooldown` has passed; then one probe (a call
//!   or the next ping) is let through (half-open): success closes it, failure re-opens.
//!
//! Invariant: pure bookkeeping, no awaits: the state machine and the breaker change only
//! on outcomes reported to them.

use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

/// Where an instance (or, aggregated, a service) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Registered or configured, not connected yet.
    Starting,
    /// Session open, last checks and calls succeeded.
    Healthy,
    /// Session open, but recent calls or pings failed or were slow.
    Degraded,
    /// Unreachable, session lost, or circuit open.
    Down,
    /// An operator stopped it; it stays down until started.
    Stopped,
    /// A stdio server that crashed past its restart budget; down until started.
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Healthy => "healthy",
            State::Degraded => "degraded",
            State::Down => "down",
            State::Stopped => "stopped",
            State::Failed => "failed",
        }
    }
}

/// The breaker's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum Breaker {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub failure_threshold: u32,
    pub cooldown: Duration,
}

/// What `/services` shows of an instance's health.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub state: State,
    /// When the state last changed (Unix ms) and from what.
    pub since_ms: u64,
    pub previous: Option<State>,
    pub breaker: Breaker,
    pub consecutive_failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Unix ms of the last ping or call outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_check_ms: Option<u64>,
}

#[derive(Debug)]
pub struct Health {
    policy: Policy,
    state: State,
    since: SystemTime,
    previous: Option<State>,
    breaker: Breaker,
    open_until: Option<Instant>,
    probe_in_flight: bool,
    consecutive_failures: u32,
    last_error: Option<String>,
    last_check: Option<SystemTime>,
}

/// Whether a call may go to this instance now.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Allowed as the half-open probe: its outcome decides the breaker.
    Probe,
    /// The circuit is open for this long still.
    Refused(Duration),
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Health {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            state: State::Starting,
            since: SystemTime::now(),
            previous: None,
            breaker: Breaker::Closed,
            open_until: None,
            probe_in_flight: false,
            consecutive_failures: 0,
            last_error: None,
            last_check: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Moves to `state`, remembering the transition; returns whether it changed.
    fn set(&mut self, state: State) -> bool {
        if self.state == state {
            return false;
        }
        self.previous = Some(self.state);
        self.state = state;
        self.since = SystemTime::now();
        true
    }

    /// When the state last changed (Unix ms).
    pub fn since_ms(&self) -> u64 {
        unix_ms(self.since)
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            state: self.state,
            since_ms: unix_ms(self.since),
            previous: self.previous,
            breaker: self.breaker,
            consecutive_failures: self.consecutive_failures,
            last_error: self.last_error.clone(),
            last_check_ms: self.last_check.map(unix_ms),
        }
    }

    /// Asks to send a call now.
    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.breaker {
            Breaker::Closed => Admission::Allowed,
            Breaker::Open => match self.open_until {
                Some(until) if now < until => Admission::Refused(until - now),
                _ => {
                    self.breaker = Breaker::HalfOpen;
                    self.probe_in_flight = true;
                    Admission::Probe
                }
            },
            Breaker::HalfOpen if self.probe_in_flight => Admission::Refused(Duration::ZERO),
            Breaker::HalfOpen => {
                self.probe_in_flight = true;
                Admission::Probe
            }
        }
    }

    /// How long calls would still be refused (without claiming a probe), if they are.
    pub fn refusing(&self, now: Instant) -> Option<Duration> {
        match self.breaker {
            Breaker::Closed => None,
            Breaker::Open => self.open_until.filter(|u| now < *u).map(|u| u - now),
            Breaker::HalfOpen => self.probe_in_flight.then_some(Duration::ZERO),
        }
    }

    pub fn is_open(&self, now: Instant) -> bool {
        self.refusing(now).is_some()
    }

    /// A call or ping succeeded; returns whether the state changed.
    pub fn success(&mut self) -> bool {
        self.consecutive_failures = 0;
        self.breaker = Breaker::Closed;
        self.open_until = None;
        self.probe_in_flight = false;
        self.last_error = None;
        self.last_check = Some(SystemTime::now());
        self.set(State::Healthy)
    }

    /// A health ping was answered. That proves the session, not the tools: it does not
    /// forgive call failures, except as the probe of an open circuit whose cool-down has
    /// passed.
    pub fn ping_ok(&mut self, now: Instant) -> bool {
        self.last_check = Some(SystemTime::now());
        match self.breaker {
            Breaker::HalfOpen => self.success(),
            Breaker::Open if self.open_until.is_none_or(|u| now >= u) => self.success(),
            Breaker::Open => false,
            Breaker::Closed if self.consecutive_failures == 0 => {
                self.last_error = None;
                self.set(State::Healthy)
            }
            Breaker::Closed => false,
        }
    }

    /// A call or ping failed (timeout, transport error) while the session looked alive.
    pub fn failure(&mut self, error: String, now: Instant) -> bool {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.last_error = Some(error);
        self.last_check = Some(SystemTime::now());
        let trip = self.breaker == Breaker::HalfOpen
            || self.consecutive_failures >= self.policy.failure_threshold;
        self.probe_in_flight = false;
        if trip {
            self.breaker = Breaker::Open;
            self.open_until = Some(now + self.policy.cooldown);
            self.set(State::Down)
        } else {
            self.set(State::Degraded)
        }
    }

    /// The session is gone (refused connection, closed stream, failed connect).
    pub fn lost(&mut self, error: String) -> bool {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.last_error = Some(error);
        self.last_check = Some(SystemTime::now());
        self.probe_in_flight = false;
        self.set(State::Down)
    }

    /// Parked by an operator or by a spent restart budget: no session until started.
    pub fn park(&mut self, state: State, why: String) -> bool {
        self.last_error = Some(why);
        self.last_check = Some(SystemTime::now());
        self.breaker = Breaker::Closed;
        self.open_until = None;
        self.probe_in_flight = false;
        self.set(state)
    }

    /// An operator started a parked instance: `starting` until it connects.
    pub fn restart(&mut self) -> bool {
        self.consecutive_failures = 0;
        self.last_error = None;
        self.set(State::Starting)
    }

    /// A half-open probe was admitted but never sent (e.g. no session): free the slot.
    pub fn release_probe(&mut self) {
        self.probe_in_flight = false;
    }
}

/// A service's state from its instances': healthy only if all are, down only if none
/// can serve, starting while none has connected yet, degraded otherwise; stopped or
/// failed when all are (a mix of the two, or with down ones, is down).
pub fn aggregate(states: impl IntoIterator<Item = State>) -> State {
    let (mut n, mut healthy, mut down, mut starting) = (0, 0, 0, 0);
    let (mut stopped, mut failed) = (0, 0);
    for s in states {
        n += 1;
        match s {
            State::Healthy => healthy += 1,
            State::Down => down += 1,
            State::Stopped => {
                stopped += 1;
                down += 1;
            }
            State::Failed => {
                failed += 1;
                down += 1;
            }
            State::Starting => starting += 1,
            State::Degraded => {}
        }
    }
    if n > 0 && stopped == n {
        State::Stopped
    } else if n > 0 && failed == n {
        State::Failed
    } else if n == 0 || down == n {
        State::Down
    } else if healthy == n {
        State::Healthy
    } else if starting == n {
        State::Starting
    } else if healthy == 0 && down + starting == n {
        if down > 0 {
            State::Down
        } else {
            State::Starting
        }
    } else {
        State::Degraded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> Health {
        Health::new(Policy {
            failure_threshold: 3,
            cooldown: Duration::from_secs(5),
        })
    }

    #[test]
    fn failures_degrade_then_open_the_breaker() {
        let mut h = health();
        let t0 = Instant::now();
        assert!(h.success());
        assert_eq!(h.state(), State::Healthy);
        h.failure("slow".into(), t0);
        assert_eq!(h.state(), State::Degraded);
        assert_eq!(h.admit(t0), Admission::Allowed);
        h.failure("slow".into(), t0);
        h.failure("slow".into(), t0);
        assert_eq!(h.state(), State::Down);
        assert_eq!(h.snapshot().breaker, Breaker::Open);
        assert!(
            matches!(h.admit(t0 + Duration::from_secs(1)), Admission::Refused(d) if d == Duration::from_secs(4))
        );
    }

    #[test]
    fn half_open_lets_one_probe_through_and_its_outcome_decides() {
        let mut h = health();
        let t0 = Instant::now();
        for _ in 0..3 {
            h.failure("x".into(), t0);
        }
        let later = t0 + Duration::from_secs(6);
        assert_eq!(h.admit(later), Admission::Probe);
        assert!(
            matches!(h.admit(later), Admission::Refused(_)),
            "only one probe"
        );
        // The probe fails: open again for a full cooldown.
        h.failure("still failing".into(), later);
        assert!(matches!(
            h.admit(later + Duration::from_secs(1)),
            Admission::Refused(_)
        ));
        let much_later = later + Duration::from_secs(6);
        assert_eq!(h.admit(much_later), Admission::Probe);
        h.success();
        assert_eq!(h.admit(much_later), Admission::Allowed);
        let snap = h.snapshot();
        assert_eq!(
            (snap.state, snap.breaker),
            (State::Healthy, Breaker::Closed)
        );
        assert_eq!(snap.previous, Some(State::Down));
    }

    #[test]
    fn a_ping_does_not_forgive_call_failures_but_can_be_the_probe() {
        let mut h = health();
        let t0 = Instant::now();
        h.success();
        h.failure("call timed out".into(), t0);
        h.ping_ok(t0);
        assert_eq!(h.state(), State::Degraded);
        assert_eq!(h.snapshot().consecutive_failures, 1);
        h.failure("call timed out".into(), t0);
        h.failure("call timed out".into(), t0);
        assert_eq!(h.snapshot().breaker, Breaker::Open);
        h.ping_ok(t0 + Duration::from_secs(1));
        assert_eq!(h.snapshot().breaker, Breaker::Open, "still cooling down");
        h.ping_ok(t0 + Duration::from_secs(6));
        assert_eq!(
            (h.state(), h.snapshot().breaker),
            (State::Healthy, Breaker::Closed)
        );
    }

    #[test]
    fn a_lost_session_is_down_at_once() {
        let mut h = health();
        h.success();
        h.lost("connection refused".into());
        assert_eq!(h.state(), State::Down);
        assert_eq!(
            h.snapshot().last_error.as_deref(),
            Some("connection refused")
        );
    }

    #[test]
    fn service_state_aggregates_instances() {
        use State::*;
        assert_eq!(aggregate([Healthy, Healthy]), Healthy);
        assert_eq!(aggregate([Healthy, Down]), Degraded);
        assert_eq!(aggregate([Down, Down]), Down);
        assert_eq!(aggregate([Starting]), Starting);
        assert_eq!(aggregate([Degraded]), Degraded);
        assert_eq!(aggregate([Starting, Down]), Down);
        assert_eq!(aggregate([]), Down);
    }

    #[test]
    fn the_breaker_opens_at_exactly_the_threshold_of_consecutive_failures() {
        let mut h = health();
        let t0 = Instant::now();
        h.success();
        h.failure("x".into(), t0);
        h.failure("x".into(), t0);
        assert_eq!(
            (h.state(), h.snapshot().breaker),
            (State::Degraded, Breaker::Closed)
        );
        assert_eq!(h.admit(t0), Admission::Allowed);
        // A success in between starts the count again.
        h.success();
        h.failure("x".into(), t0);
        h.failure("x".into(), t0);
        assert_eq!(
            h.snapshot().breaker,
            Breaker::Closed,
            "2 + 2 is not 3 in a row"
        );
        h.failure("x".into(), t0);
        assert_eq!(
            (h.state(), h.snapshot().breaker),
            (State::Down, Breaker::Open)
        );
        assert_eq!(h.snapshot().consecutive_failures, 3);
        assert_eq!(h.refusing(t0), Some(Duration::from_secs(5)));
        assert!(h.is_open(t0 + Duration::from_millis(4_999)));
    }

    #[test]
    fn a_failed_probe_reopens_at_once_and_an_unsent_one_frees_its_slot() {
        let mut h = health();
        let t0 = Instant::now();
        for _ in 0..3 {
            h.failure("x".into(), t0);
        }
        let later = t0 + Duration::from_secs(5);
        assert_eq!(h.refusing(later), None, "cooled down: a probe may go");
        assert_eq!(h.admit(later), Admission::Probe);
        assert_eq!(h.snapshot().breaker, Breaker::HalfOpen);
        assert_eq!(
            h.refusing(later),
            Some(Duration::ZERO),
            "one probe at a time"
        );
        // The probe could not be sent (no session): the next caller may probe.
        h.release_probe();
        assert_eq!(h.admit(later), Admission::Probe);
        // One failure of the probe is enough, whatever the count: open for a full cooldown.
        h.failure("probe failed".into(), later);
        assert_eq!(h.snapshot().breaker, Breaker::Open);
        assert!(matches!(
            h.admit(later + Duration::from_millis(4_999)),
            Admission::Refused(_)
        ));
        assert_eq!(h.admit(later + Duration::from_secs(5)), Admission::Probe);
        // A ping answered while half-open closes it too.
        assert!(h.ping_ok(later + Duration::from_secs(5)));
        assert_eq!(
            (h.state(), h.snapshot().breaker),
            (State::Healthy, Breaker::Closed)
        );
        assert_eq!(h.snapshot().consecutive_failures, 0);
    }

    #[test]
    fn a_ping_makes_a_new_instance_healthy_but_never_forgives_a_failing_one() {
        let mut h = health();
        let t0 = Instant::now();
        assert_eq!(h.state(), State::Starting);
        assert!(h.ping_ok(t0));
        assert_eq!(h.state(), State::Healthy);
        assert_eq!(h.snapshot().previous, Some(State::Starting));
        h.failure("call timed out".into(), t0);
        for _ in 0..10 {
            assert!(!h.ping_ok(t0), "no state change");
        }
        assert_eq!(h.state(), State::Degraded);
        assert_eq!(h.snapshot().consecutive_failures, 1);
        assert_eq!(h.snapshot().last_error.as_deref(), Some("call timed out"));
        // A ping before the cooldown has passed does not close an open breaker.
        h.failure("x".into(), t0);
        h.failure("x".into(), t0);
        assert!(!h.ping_ok(t0 + Duration::from_secs(4)));
        assert_eq!(h.snapshot().breaker, Breaker::Open);
    }

    #[test]
    fn a_lost_session_is_down_without_opening_the_breaker() {
        let mut h = health();
        let t0 = Instant::now();
        h.success();
        for _ in 0..5 {
            h.lost("connection refused".into());
        }
        assert_eq!(
            (h.state(), h.snapshot().breaker),
            (State::Down, Breaker::Closed)
        );
        assert_eq!(
            h.admit(t0),
            Admission::Allowed,
            "a reconnect may serve at once"
        );
        // A lost probe frees the probe slot.
        let mut h = health();
        for _ in 0..3 {
            h.failure("x".into(), t0);
        }
        let later = t0 + Duration::from_secs(6);
        assert_eq!(h.admit(later), Admission::Probe);
        h.lost("session gone".into());
        assert_eq!(h.admit(later), Admission::Probe);
    }

    #[test]
    fn service_state_edges() {
        use State::*;
        assert_eq!(aggregate([Healthy, Starting]), Degraded);
        assert_eq!(aggregate([Healthy, Degraded]), Degraded);
        assert_eq!(aggregate([Degraded, Down]), Degraded);
        assert_eq!(aggregate([Starting, Starting]), Starting);
        assert_eq!(aggregate([Starting, Starting, Down]), Down);
        assert_eq!(aggregate([Down]), Down);
    }
}
