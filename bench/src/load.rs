//! Closed loops and their statistics. Every loop is bounded by a call count and by time
//! and stops by itself; latencies go into an HDR histogram (nanoseconds, 3 significant
//! digits), errors are counted and the first one is kept for the report.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow};
use hdrhistogram::Histogram;

use crate::client::{Call, Endpoint, McpClient, Mode};

/// Latencies and outcomes of one loop (or of several, merged).
pub struct Stats {
    hist: Histogram<u64>,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// The measured wall-clock window (throughput = ok / window).
    pub window: Duration,
    /// CPU time each sampled process used during the window (see [`Concurrent`]).
    pub cpu: Vec<Duration>,
}

impl Stats {
    pub fn new() -> Self {
        Self {
            // 1 ns .. 120 s at 3 significant digits: a fixed-size table, no growth.
            hist: Histogram::new_with_bounds(1, 120_000_000_000, 3)
                .expect("static histogram bounds are valid"),
            ok: 0,
            errors: 0,
            first_error: None,
            window: Duration::ZERO,
            cpu: Vec::new(),
        }
    }

    fn record(&mut self, latency: Duration, outcome: &Result<()>) {
        match outcome {
            Ok(()) => {
                self.ok += 1;
                self.hist
                    .saturating_record(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
            }
            Err(e) => self.error(e),
        }
    }

    fn error(&mut self, e: &anyhow::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{e:#}"));
        }
    }

    pub fn merge(&mut self, other: Stats) {
        let _ = self.hist.add(&other.hist);
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// The latency at quantile `q` (0.5 = median), in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1_000.0
    }

    /// Successful calls per second over the measured window.
    pub fn per_second(&self) -> f64 {
        let secs = self.window.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }
}

/// `warmup` unrecorded calls, then `calls` recorded ones, one after another on one client.
/// Stops early (with what it has) after `limit`.
pub async fn sequential(
    client: &mut McpClient,
    call: &Call,
    warmup: u64,
    calls: u64,
    limit: Duration,
) -> Stats {
    let mut stats = Stats::new();
    let deadline = Instant::now() + limit;
    for _ in 0..warmup {
        if let Err(e) = client.call(call).await {
            stats.error(&e);
        }
    }
    let start = Instant::now();
    for _ in 0..calls {
        if Instant::now() > deadline {
            break;
        }
        let t0 = Instant::now();
        let outcome = client.call(call).await;
        stats.record(t0.elapsed(), &outcome);
    }
    stats.window = start.elapsed();
    stats
}

/// How a concurrent closed loop runs.
pub struct Concurrent {
    pub mode: Mode,
    pub clients: usize,
    pub warmup: Duration,
    pub measure: Duration,
    /// Upper bound of calls per client (the loop is time-bound; this is the backstop).
    pub max_calls_per_client: u64,
    /// Processes whose CPU time is sampled at the start and end of the window.
    pub cpu_of: Vec<u32>,
}

/// `clients` virtual clients, each with its own session (in session mode), calling in a
/// closed loop: a warm-up period, then a measured window in which every completed call
/// is counted and its latency recorded. Sessions are set up before and closed after the
/// loop, outside the window.
pub async fn concurrent(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    call: &Call,
    how: &Concurrent,
) -> Result<Stats> {
    let clients = open_clients(http, endpoint, how.mode, how.clients, how.clients).await?;
    let start = Instant::now();
    let measure_from = start + how.warmup;
    let end = measure_from + how.measure;
    let pids = how.cpu_of.clone();
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        let before: Vec<_> = pids.iter().map(|p| crate::procs::cpu_time(*p)).collect();
        tokio::time::sleep_until(end.into()).await;
        pids.iter()
            .zip(before)
            .map(|(p, b)| Ok(crate::procs::cpu_time(*p)?.saturating_sub(b?)))
            .collect::<Result<Vec<Duration>>>()
    });
    let mut tasks = tokio::task::JoinSet::new();
    for mut client in clients {
        let call = call.clone();
        let max = how.max_calls_per_client;
        tasks.spawn(async move {
            let mut stats = Stats::new();
            for _ in 0..max {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let outcome = client.call(&call).await;
                let t1 = Instant::now();
                if t1 >= measure_from && t1 < end {
                    stats.record(t1 - t0, &outcome);
                } else if let Err(e) = &outcome {
                    stats.error(e);
                }
            }
            (stats, client)
        });
    }
    let mut total = Stats::new();
    let mut done = Vec::with_capacity(how.clients);
    while let Some(joined) = tasks.join_next().await {
        let (stats, client) = joined.context("a load task panicked")?;
        total.merge(stats);
        done.push(client);
    }
    total.window = how.measure;
    total.cpu = cpu
        .await
        .context("the CPU sampling task panicked")?
        .context("sampling CPU time of the processes under load")?;
    let close_errors = close_all(done, how.clients.min(16)).await;
    if close_errors > 0 {
        total.errors += close_errors;
        total
            .first_error
            .get_or_insert_with(|| format!("{close_errors} session DELETEs failed"));
    }
    Ok(total)
}

/// Session set-up rate: `workers` concurrent clients each repeatedly open a session
/// (`initialize` + `notifications/initialized`) until `max_sessions` are open or `limit`
/// has passed. Returns the statistics (window = wall time of the set-ups) and the open
/// sessions, for the caller to close.
pub async fn session_setup(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    workers: usize,
    max_sessions: u64,
    limit: Duration,
) -> Result<(Stats, Vec<McpClient>)> {
    let started = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + limit;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (http, endpoint, started) = (http.clone(), endpoint.clone(), Arc::clone(&started));
        tasks.spawn(async move {
            let mut stats = Stats::new();
            let mut open = Vec::new();
            while started.fetch_add(1, Ordering::Relaxed) < max_sessions
                && Instant::now() < deadline
            {
                let t0 = Instant::now();
                match McpClient::connect(&http, &endpoint, Mode::Session).await {
                    Ok(client) => {
                        stats.record(t0.elapsed(), &Ok(()));
                        open.push(client);
                    }
                    Err(e) => stats.error(&e),
                }
            }
            (stats, open)
        });
    }
    let mut total = Stats::new();
    let mut open = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (stats, clients) = joined.context("a session set-up task panicked")?;
        total.merge(stats);
        open.extend(clients);
    }
    total.window = start.elapsed();
    Ok((total, open))
}

/// Opens `count` sessions with `workers` concurrent openers. `Mode::Session` performs
/// the whole handshake; `Mode::Sessionless` makes sessionless clients (no traffic).
/// Fails on the first session that cannot be opened.
pub async fn open_clients(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    mode: Mode,
    count: usize,
    workers: usize,
) -> Result<Vec<McpClient>> {
    open_with(
        http,
        endpoint,
        count,
        workers,
        move |http, endpoint| async move { McpClient::connect(&http, &endpoint, mode).await },
    )
    .await
}

/// [`open_clients`] in session mode, each session then sending `call` once (a `ping`
/// makes the gateway hold rmcp's copy of the session, as an SDK client's GET stream does).
pub async fn open_clients_then(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    call: Call,
    count: usize,
    workers: usize,
) -> Result<Vec<McpClient>> {
    open_with(http, endpoint, count, workers, move |http, endpoint| {
        let call = call.clone();
        async move {
            let mut client = McpClient::connect(&http, &endpoint, Mode::Session).await?;
            client.call(&call).await?;
            Ok(client)
        }
    })
    .await
}

async fn open_with<F, Fut>(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    count: usize,
    workers: usize,
    open: F,
) -> Result<Vec<McpClient>>
where
    F: Fn(reqwest::Client, Endpoint) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<McpClient>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let (http, endpoint, next, open) = (
            http.clone(),
            endpoint.clone(),
            Arc::clone(&next),
            open.clone(),
        );
        tasks.spawn(async move {
            let mut mine = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < count as u64 {
                mine.push(open(http.clone(), endpoint.clone()).await?);
            }
            Ok::<_, anyhow::Error>(mine)
        });
    }
    let mut all = Vec::with_capacity(count);
    while let Some(joined) = tasks.join_next().await {
        let opened = joined
            .context("a session-opening task panicked")?
            .with_context(|| format!("opening {count} sessions at {}", endpoint.url))?;
        all.extend(opened);
    }
    if all.len() != count {
        return Err(anyhow!("opened {} sessions, wanted {count}", all.len()));
    }
    Ok(all)
}

/// Ends every session (`DELETE`) with `workers` concurrent closers; returns how many
/// failed.
pub async fn close_all(clients: Vec<McpClient>, workers: usize) -> u64 {
    let workers = workers.max(1);
    let mut buckets: Vec<Vec<McpClient>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, c) in clients.into_iter().enumerate() {
        buckets[i % workers].push(c);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for bucket in buckets {
        tasks.spawn(async move {
            let mut failed = 0u64;
            for c in bucket {
                if c.close().await.is_err() {
                    failed += 1;
                }
            }
            failed
        });
    }
    let mut failed = 0;
    while let Some(joined) = tasks.join_next().await {
        failed += joined.unwrap_or(1);
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_merge_counts_and_quantiles() {
        let mut a = Stats::new();
        for us in [100u64, 200, 300] {
            a.record(Duration::from_micros(us), &Ok(()));
        }
        let mut b = Stats::new();
        b.record(Duration::from_micros(400), &Ok(()));
        b.record(Duration::from_micros(1), &Err(anyhow!("boom")));
        a.merge(b);
        assert_eq!(a.ok, 4);
        assert_eq!(a.errors, 1);
        assert_eq!(a.first_error.as_deref(), Some("boom"));
        let p50 = a.quantile_us(0.5);
        assert!((199.0..=201.0).contains(&p50), "{p50}");
        a.window = Duration::from_secs(2);
        assert_eq!(a.per_second(), 2.0);
    }
}
