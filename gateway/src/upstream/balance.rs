//! Choosing an instance of a service for one call. Only instances that can take a call
//! now (session open, breaker not refusing) are candidates. A client that holds an MCP
//! session is pinned to one instance per service by rendezvous hashing of its session
//! id (no table to grow or expire; when its instance goes away only its clients move);
//! other calls follow the configured strategy.
//!
//! Invariant: choosing an instance is pure: no awaits, no I/O.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

/// How calls are spread over the healthy instances of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Each instance in turn.
    #[default]
    RoundRobin,
    /// The instance with the fewest calls in flight (ties: in turn).
    LeastOutstanding,
    /// In turn, each instance as often as its weight.
    Weighted,
}

/// What the balancer needs to know of a candidate.
pub trait Candidate {
    fn key(&self) -> &str;
    fn in_flight(&self) -> usize;
    fn weight(&self) -> u32;
}

/// Picks an index into `candidates` (non-empty).
pub fn pick<C: Candidate>(
    strategy: Strategy,
    candidates: &[C],
    affinity: Option<&str>,
    turn: &AtomicUsize,
) -> usize {
    debug_assert!(!candidates.is_empty());
    if candidates.len() == 1 {
        return 0;
    }
    if let Some(client) = affinity {
        return rendezvous(client, candidates);
    }
    let n = turn.fetch_add(1, Ordering::Relaxed);
    match strategy {
        Strategy::RoundRobin => n % candidates.len(),
        Strategy::LeastOutstanding => {
            let start = n % candidates.len();
            (0..candidates.len())
                .map(|i| (start + i) % candidates.len())
                .min_by_key(|&i| candidates[i].in_flight())
                .unwrap_or(start)
        }
        Strategy::Weighted => {
            let total: u64 = candidates
                .iter()
                .map(|c| u64::from(c.weight().max(1)))
                .sum();
            let mut slot = (n as u64) % total;
            for (i, c) in candidates.iter().enumerate() {
                let w = u64::from(c.weight().max(1));
                if slot < w {
                    return i;
                }
                slot -= w;
            }
            0
        }
    }
}

fn rendezvous<C: Candidate>(client: &str, candidates: &[C]) -> usize {
    candidates
        .iter()
        .enumerate()
        .max_by_key(|(_, c)| score(client, c.key()))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

/// FNV-1a: the gateway's one small non-cryptographic hash (instance ids, rendezvous
/// scores, the suffix of shortened qualified names).
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn score(client: &str, instance: &str) -> u64 {
    // FNV-1a over both keys, then a final avalanche (splitmix64) so nearby ids spread.
    let mut h = fnv1a(client.bytes().chain([0xff]).chain(instance.bytes()));
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d049bb133111eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct C(&'static str, usize, u32);
    impl Candidate for C {
        fn key(&self) -> &str {
            self.0
        }
        fn in_flight(&self) -> usize {
            self.1
        }
        fn weight(&self) -> u32 {
            self.2
        }
    }

    #[test]
    fn round_robin_visits_each_in_turn() {
        let cs = [C("a", 0, 1), C("b", 0, 1), C("c", 0, 1)];
        let turn = AtomicUsize::new(0);
        let picks: Vec<usize> = (0..6)
            .map(|_| pick(Strategy::RoundRobin, &cs, None, &turn))
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn least_outstanding_prefers_the_idle_instance() {
        let cs = [C("a", 5, 1), C("b", 0, 1), C("c", 3, 1)];
        let turn = AtomicUsize::new(0);
        for _ in 0..5 {
            assert_eq!(pick(Strategy::LeastOutstanding, &cs, None, &turn), 1);
        }
    }

    #[test]
    fn weighted_follows_the_weights() {
        let cs = [C("a", 0, 3), C("b", 0, 1)];
        let turn = AtomicUsize::new(0);
        let mut counts = [0; 2];
        for _ in 0..400 {
            counts[pick(Strategy::Weighted, &cs, None, &turn)] += 1;
        }
        assert_eq!(counts, [300, 100]);
    }

    #[test]
    fn a_session_stays_on_its_instance_and_only_its_own_move() {
        let all = [C("i1", 0, 1), C("i2", 0, 1), C("i3", 0, 1)];
        let turn = AtomicUsize::new(0);
        let sessions: Vec<String> = (0..200).map(|i| format!("session-{i}")).collect();
        let before: Vec<&str> = sessions
            .iter()
            .map(|s| all[pick(Strategy::RoundRobin, &all, Some(s), &turn)].0)
            .collect();
        // Stable across calls.
        for (s, b) in sessions.iter().zip(&before) {
            assert_eq!(all[pick(Strategy::RoundRobin, &all, Some(s), &turn)].0, *b);
        }
        // Spread over all instances.
        for i in ["i1", "i2", "i3"] {
            assert!(before.iter().filter(|b| **b == i).count() > 30, "{i}");
        }
        // i2 goes away: sessions on i1 and i3 stay where they were.
        let rest = [C("i1", 0, 1), C("i3", 0, 1)];
        for (s, b) in sessions.iter().zip(&before) {
            let now = rest[pick(Strategy::RoundRobin, &rest, Some(s), &turn)].0;
            if *b != "i2" {
                assert_eq!(now, *b);
            }
        }
    }
}
