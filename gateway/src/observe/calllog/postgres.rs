//! The call log in a cluster's PostgreSQL store: table `calls_log`, shared by every
//! replica, each row marked with the replica that served the call. Its own small pool
//! (this module sits below `store/` and uses none of it): one connection for the writer,
//! two for `/calls` and `/stats`, each waited for at most 3 s. The table and its index
//! are created here (`CREATE ... IF NOT EXISTS` under an advisory lock, on first use and
//! again if the table goes missing), not by a numbered migration: the writer must not
//! depend on the store having joined, and a call-log table is no reason for older
//! replicas to refuse a newer schema.
//!
//! While the database is unreachable the writer holds its current batch (at most
//! `BATCH` records) and retries with backoff (250 ms doubling to 5 s); the queue before
//! it stays bounded (`QUEUE`) and, once full, drops the newest records, counted in
//! `mcp_gateway_call_log_dropped_total`. The outage is logged once when it starts and
//! once when it ends (with the records dropped meanwhile). A batch the database refuses
//! as data (an SQLSTATE of class 22 or 54) is dropped and logged, never retried forever.
//! Retention is one `DELETE` that only the replica holding a try-lock runs, so replicas
//! pruning together neither wait for nor deadlock with each other.
//!
//! Invariant: nothing here is on a call's path, and nothing here grows while the
//! database is down: the writer holds one batch, the queue before it is bounded.

use std::{
    borrow::Cow,
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_postgres::{NoTls, types::ToSql};
use tokio_util::sync::CancellationToken;

use super::{
    AllStats, BATCH, CallRecord, Filter, Outcome, PRUNE_EVERY, Retention, Row, Stats, gather,
};

/// How long a connection is waited for (and a connect may take).
const WAIT: Duration = Duration::from_secs(3);
/// Connections for `/calls` and `/stats` (the writer has its own one).
const READERS: usize = 2;
/// The first retry after a failed write, doubled up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Most bytes of text (arguments, results, errors) in one INSERT: a batch with large
/// payloads is sent in several statements (of one transaction), far below PostgreSQL's
/// 1 GiB message limit.
const CHUNK_BYTES: usize = 32 << 20;
/// The table and its index. The advisory lock (0x6d637066636c, "mcpfcl"; pruning tries
/// the same) makes replicas starting together create them one after the other:
/// concurrent `CREATE TABLE IF NOT EXISTS` can fail on PostgreSQL's catalog.
const SCHEMA: &str = "SELECT pg_advisory_xact_lock(120273854948204);
    CREATE TABLE IF NOT EXISTS calls_log (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at_ms BIGINT NOT NULL,
        replica TEXT,
        request_id TEXT,
        identity TEXT NOT NULL,
        service TEXT NOT NULL,
        instance TEXT,
        tool TEXT NOT NULL,
        duration_ms DOUBLE PRECISION NOT NULL,
        upstream_ms DOUBLE PRECISION NOT NULL,
        outcome TEXT NOT NULL,
        error TEXT,
        arguments TEXT,
        result TEXT
    );
    -- Age pruning, since/until, and /calls newest first. No other index: each one costs
    -- every insert.
    CREATE INDEX IF NOT EXISTS calls_log_at_ms ON calls_log (at_ms);
    -- The time series' per-minute aggregates (series.rs), summed by every replica.
    CREATE TABLE IF NOT EXISTS calls_minute (
        minute BIGINT NOT NULL,
        service TEXT NOT NULL,
        tool TEXT NOT NULL,
        bucket INTEGER NOT NULL,
        calls BIGINT NOT NULL,
        errors BIGINT NOT NULL,
        PRIMARY KEY (minute, service, tool, bucket)
    );";

/// A batch's aggregates added in: the rows come in key order (`series::minutes`) and are
/// inserted in that order (`ORDER BY` the arrays' ordinality), so replicas adding to the
/// same rows lock them in one order.
const UPSERT_MINUTES: &str =
    "INSERT INTO calls_minute (minute, service, tool, bucket, calls, errors)
     SELECT m, s, t, b, c, e FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::INTEGER[],
       $5::BIGINT[], $6::BIGINT[]) WITH ORDINALITY AS u(m, s, t, b, c, e, n)
     ORDER BY n
     ON CONFLICT (minute, service, tool, bucket) DO UPDATE
     SET calls = calls_minute.calls + EXCLUDED.calls,
         errors = calls_minute.errors + EXCLUDED.errors";

/// Aggregates older than `$1` (minutes), by the replica holding the pruning try-lock.
const PRUNE_MINUTES: &str = "DELETE FROM calls_minute
     WHERE (SELECT pg_try_advisory_xact_lock(120273854948204)) AND minute < $1";

/// A span's aggregates summed per point, service and bucket (`series::Read`).
const CELLS: &str = "SELECT (minute - $1) / $3 AS point, service, bucket,
       SUM(calls)::BIGINT, SUM(errors)::BIGINT
     FROM calls_minute
     WHERE minute >= $1 AND minute < $2
       AND ($4::TEXT IS NULL OR service = $4) AND ($5::TEXT IS NULL OR tool = $5)
     GROUP BY point, service, bucket";

const INSERT: &str = "INSERT INTO calls_log (replica, at_ms, request_id, identity, service,
       instance, tool, duration_ms, upstream_ms, outcome, error, arguments, result)
     SELECT $1::TEXT, * FROM UNNEST($2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[],
       $7::TEXT[], $8::FLOAT8[], $9::FLOAT8[], $10::TEXT[], $11::TEXT[], $12::TEXT[],
       $13::TEXT[])";

/// Retention in one statement: whichever replica gets the try-lock deletes what is older
/// than `$1` and everything but the newest `$2` rows; the others skip it this time (the
/// lock is the statement's transaction's).
const PRUNE: &str = "DELETE FROM calls_log
     WHERE (SELECT pg_try_advisory_xact_lock(120273854948204))
       AND (at_ms < $1
            OR id <= (SELECT id FROM calls_log ORDER BY id DESC OFFSET $2 LIMIT 1))";

/// `percentile_disc` is the nearest-rank definition the SQLite log computes in Rust: the
/// first value whose position reaches ceil(p * n).
const STATS: &str = "SELECT service, tool, GROUPING(tool) AS per_service, COUNT(*),
       COUNT(*) FILTER (WHERE outcome = ANY($1)),
       percentile_disc(0.5) WITHIN GROUP (ORDER BY duration_ms),
       percentile_disc(0.95) WITHIN GROUP (ORDER BY duration_ms),
       MAX(at_ms)
     FROM calls_log GROUP BY GROUPING SETS ((service, tool), (service))";

/// The call log's connections to the cluster's database.
pub(super) struct Pg {
    writer: Pool,
    readers: Pool,
    /// The URL without its password, for messages.
    display: String,
    replica: String,
    /// Whether the table is known to exist (created by this process, or found).
    schema: AtomicBool,
}

/// Why a write did not happen.
enum Failure {
    /// No answer (refused, closed, timed out) or a passing one (shutting down, the
    /// table missing): try again.
    Unreachable(String),
    /// The database refused the records themselves: retrying cannot help.
    Refused(String),
}

fn failure(e: tokio_postgres::Error) -> Failure {
    let data = e
        .code()
        .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("54"));
    if data {
        Failure::Refused(why(&e))
    } else {
        Failure::Unreachable(why(&e))
    }
}

/// An error with its causes (tokio-postgres's own text is only "db error").
fn why(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// `url` with its password replaced, for logs and errors.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "postgres://(unparseable URL)".into(),
    }
}

/// Text PostgreSQL accepts: it refuses NUL characters in `TEXT`.
fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

impl Pg {
    /// A log in the database at `url`, connected on first use.
    pub(super) fn new(url: &str, replica: &str) -> anyhow::Result<Self> {
        let display = redact(url);
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| anyhow::anyhow!("call log in {display}: not a PostgreSQL URL: {e}"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(WAIT);
        }
        config.application_name("mcp-federation-gateway call log");
        let pool = |size: usize| {
            let manager = Manager::from_config(
                config.clone(),
                NoTls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            Pool::builder(manager)
                .max_size(size)
                .wait_timeout(Some(WAIT))
                .create_timeout(Some(WAIT))
                .recycle_timeout(Some(WAIT))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .build()
                .map_err(|e| anyhow::anyhow!("call log in {display}: {e}"))
        };
        Ok(Self {
            writer: pool(1)?,
            readers: pool(READERS)?,
            display: display.clone(),
            replica: replica.to_string(),
            schema: AtomicBool::new(false),
        })
    }

    /// A connection of `pool`, the table created first if this process has not seen it.
    async fn client(&self, pool: &Pool) -> Result<Object, Failure> {
        let client = pool
            .get()
            .await
            .map_err(|e| Failure::Unreachable(why(&e)))?;
        if !self.schema.load(Ordering::Acquire) {
            client.batch_execute(SCHEMA).await.map_err(failure)?;
            self.schema.store(true, Ordering::Release);
        }
        Ok(client)
    }

    /// After an error: a missing table is created again on the next use.
    fn noticed(&self, e: &tokio_postgres::Error) {
        if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
            self.schema.store(false, Ordering::Release);
        }
    }

    /// Writes `records` in one transaction, then prunes to `prune` when given (a failed
    /// prune is logged; the next one catches up).
    async fn write(&self, records: &[CallRecord], prune: Option<Retention>) -> Result<(), Failure> {
        let mut client = self.client(&self.writer).await?;
        if !records.is_empty() {
            let inserted = async {
                let tx = client.transaction().await?;
                let insert = tx.prepare_cached(INSERT).await?;
                for chunk in chunks(records) {
                    self.insert(&tx, &insert, chunk).await?;
                }
                add_minutes(&tx, records).await?;
                tx.commit().await
            }
            .await;
            if let Err(e) = inserted {
                self.noticed(&e);
                return Err(failure(e));
            }
        }
        if let Some(retention) = prune {
            let oldest = super::super::now_ms() - retention.max_age.as_millis() as i64;
            let keep = i64::try_from(retention.max_rows).unwrap_or(i64::MAX);
            let minute = super::series::oldest_kept(super::super::now_ms());
            for (statement, params) in [
                (PRUNE, &[&oldest as &(dyn ToSql + Sync), &keep][..]),
                (PRUNE_MINUTES, &[&minute as &(dyn ToSql + Sync)][..]),
            ] {
                if let Err(e) = client.execute(statement, params).await {
                    self.noticed(&e);
                    tracing::warn!(store = %self.display, "call log: pruning: {}", why(&e));
                }
            }
        }
        Ok(())
    }

    async fn insert(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        insert: &tokio_postgres::Statement,
        records: &[CallRecord],
    ) -> Result<u64, tokio_postgres::Error> {
        let opt = |f: fn(&CallRecord) -> Option<&str>| -> Vec<Option<Cow<'_, str>>> {
            records.iter().map(|r| f(r).map(text)).collect()
        };
        let req = |f: fn(&CallRecord) -> &str| -> Vec<Cow<'_, str>> {
            records.iter().map(|r| text(f(r))).collect()
        };
        let at: Vec<i64> = records.iter().map(|r| r.at_ms).collect();
        let request_id = opt(|r| r.request_id.as_deref());
        let identity = req(|r| &r.identity);
        let service = req(|r| &r.service);
        let instance = opt(|r| r.instance.as_deref());
        let tool = req(|r| &r.tool);
        let duration: Vec<f64> = records.iter().map(|r| r.duration_ms).collect();
        let upstream: Vec<f64> = records.iter().map(|r| r.upstream_ms).collect();
        let outcome = req(|r| r.outcome.as_str());
        let error = opt(|r| r.error.as_deref());
        let arguments = opt(|r| r.arguments.as_deref());
        let result = opt(|r| r.result.as_deref());
        tx.execute(
            insert,
            &[
                &self.replica,
                &at,
                &request_id,
                &identity,
                &service,
                &instance,
                &tool,
                &duration,
                &upstream,
                &outcome,
                &error,
                &arguments,
                &result,
            ],
        )
        .await
    }

    fn read_failed(&self, e: String) -> String {
        tracing::warn!(store = %self.display, "call log: {e}");
        format!("the call log could not be read: {e}")
    }

    async fn reader(&self) -> Result<Object, String> {
        self.client(&self.readers).await.map_err(|f| match f {
            Failure::Unreachable(why) | Failure::Refused(why) => self.read_failed(why),
        })
    }

    /// The calls matching `f` (its outcome already checked), newest first: by arrival,
    /// across replicas.
    pub(super) async fn query(&self, f: &Filter) -> Result<Vec<Value>, String> {
        let mut sql = String::from(
            "SELECT at_ms, request_id, identity, service, instance, tool, duration_ms,
                    upstream_ms, outcome, error, arguments, result, replica
             FROM calls_log WHERE TRUE",
        );
        let mut texts: Vec<&String> = Vec::new();
        let mut times: Vec<i64> = Vec::new();
        let mut order: Vec<bool> = Vec::new(); // true: the next text, false: the next time
        for (column, value) in [
            ("service", &f.service),
            ("tool", &f.tool),
            ("identity", &f.identity),
            ("outcome", &f.outcome),
        ] {
            if let Some(v) = value {
                texts.push(v);
                order.push(true);
                sql.push_str(&format!(" AND {column} = ${}", order.len()));
            }
        }
        for (op, value) in [(">=", f.since), ("<", f.until)] {
            if let Some(v) = value {
                times.push(v);
                order.push(false);
                sql.push_str(&format!(" AND at_ms {op} ${}", order.len()));
            }
        }
        let limit = f.limit.unwrap_or(100).clamp(1, 1000);
        sql.push_str(&format!(" ORDER BY at_ms DESC, id DESC LIMIT {limit}"));
        let (mut t, mut n) = (texts.iter(), times.iter());
        let params: Vec<&(dyn ToSql + Sync)> = order
            .iter()
            .map(|is_text| -> &(dyn ToSql + Sync) {
                if *is_text {
                    t.next().expect("one text per placeholder")
                } else {
                    n.next().expect("one time per placeholder")
                }
            })
            .collect();
        let client = self.reader().await?;
        let rows = client.query(&sql, &params).await.map_err(|e| {
            self.noticed(&e);
            self.read_failed(why(&e))
        })?;
        rows.iter()
            .map(|r| {
                Ok(Row {
                    at: r.try_get(0)?,
                    request_id: r.try_get(1)?,
                    identity: r.try_get(2)?,
                    service: r.try_get(3)?,
                    instance: r.try_get(4)?,
                    tool: r.try_get(5)?,
                    duration_ms: r.try_get(6)?,
                    upstream_ms: r.try_get(7)?,
                    outcome: r.try_get(8)?,
                    error: r.try_get(9)?,
                    arguments: r.try_get(10)?,
                    result: r.try_get(11)?,
                    replica: r.try_get(12)?,
                }
                .into_json())
            })
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(|e| self.read_failed(why(&e)))
    }

    /// Per service, and per (service, tool), over the whole cluster's retained log,
    /// aggregated by the database.
    pub(super) async fn stats(&self) -> Result<AllStats, String> {
        let failed: Vec<&str> = Outcome::ALL
            .into_iter()
            .filter(|o| o.failed())
            .map(Outcome::as_str)
            .collect();
        let client = self.reader().await?;
        let rows = client.query(STATS, &[&failed]).await.map_err(|e| {
            self.noticed(&e);
            self.read_failed(why(&e))
        })?;
        let mut by_service = BTreeMap::new();
        let mut by_tool = BTreeMap::new();
        for r in rows {
            let read = || -> Result<_, tokio_postgres::Error> {
                let calls: i64 = r.try_get(3)?;
                let errors: i64 = r.try_get(4)?;
                let stats = Stats::new(
                    u64::try_from(calls).unwrap_or(0),
                    u64::try_from(errors).unwrap_or(0),
                    r.try_get(5)?,
                    r.try_get(6)?,
                    r.try_get(7)?,
                );
                Ok((
                    r.try_get::<_, String>(0)?,
                    r.try_get::<_, Option<String>>(1)?,
                    r.try_get::<_, i32>(2)? == 1,
                    stats,
                ))
            };
            match read().map_err(|e| self.read_failed(why(&e)))? {
                (service, _, true, stats) => {
                    by_service.insert(service, stats);
                }
                (service, Some(tool), false, stats) => {
                    by_tool.insert((service, tool), stats);
                }
                (_, None, false, _) => {}
            }
        }
        Ok((by_service, by_tool))
    }

    /// The aggregates `r` asks for, summed per point, service and bucket.
    pub(super) async fn cells(
        &self,
        r: &super::series::Read,
    ) -> Result<Vec<super::series::Cell>, String> {
        let client = self.reader().await?;
        let rows = client
            .query(CELLS, &[&r.first, &r.end, &r.step, &r.service, &r.tool])
            .await
            .map_err(|e| {
                self.noticed(&e);
                self.read_failed(why(&e))
            })?;
        rows.iter()
            .map(|row| {
                Ok(super::series::Cell {
                    point: row.try_get(0)?,
                    service: row.try_get(1)?,
                    bucket: row.try_get(2)?,
                    calls: row.try_get(3)?,
                    errors: row.try_get(4)?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(|e| self.read_failed(why(&e)))
    }
}

/// `records`' per-minute aggregates added to `calls_minute`, in the transaction `tx`.
async fn add_minutes(
    tx: &deadpool_postgres::Transaction<'_>,
    records: &[CallRecord],
) -> Result<u64, tokio_postgres::Error> {
    let sums = super::series::minutes(records);
    let mut minute = Vec::with_capacity(sums.len());
    let mut service = Vec::with_capacity(sums.len());
    let mut tool = Vec::with_capacity(sums.len());
    let mut bucket = Vec::with_capacity(sums.len());
    let mut calls = Vec::with_capacity(sums.len());
    let mut errors = Vec::with_capacity(sums.len());
    for ((m, s, t, b), (c, e)) in sums {
        minute.push(m);
        service.push(text(s));
        tool.push(text(t));
        bucket.push(b);
        calls.push(c);
        errors.push(e);
    }
    let upsert = tx.prepare_cached(UPSERT_MINUTES).await?;
    tx.execute(
        &upsert,
        &[&minute, &service, &tool, &bucket, &calls, &errors],
    )
    .await
}

/// `records` cut where their text passes [`CHUNK_BYTES`] (each chunk at least one).
fn chunks(records: &[CallRecord]) -> impl Iterator<Item = &[CallRecord]> {
    let mut rest = records;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0usize;
        let mut n = 0;
        for r in rest {
            bytes += [&r.arguments, &r.result, &r.error]
                .iter()
                .map(|t| t.as_ref().map_or(0, String::len))
                .sum::<usize>()
                + 256;
            if n > 0 && bytes > CHUNK_BYTES {
                break;
            }
            n += 1;
        }
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

/// The writer: batches as the SQLite writer gathers them, written to PostgreSQL; see the
/// module documentation for what happens while the database is down.
pub(super) async fn write(
    pg: Arc<Pg>,
    mut rx: mpsc::Receiver<CallRecord>,
    retention: Retention,
    stop: CancellationToken,
    dropped: Arc<AtomicU64>,
) {
    let mut batch: Vec<CallRecord> = Vec::with_capacity(BATCH);
    let mut since_prune = 0usize;
    let mut pruned_at = Instant::now();
    // While the database is unreachable: when that started, and the drop count then.
    let mut outage: Option<(Instant, u64)> = None;
    let mut retry = RETRY_FIRST;
    let mut stopping = false;
    loop {
        if batch.is_empty() && !stopping {
            let n = tokio::select! {
                n = gather(&mut rx, &mut batch) => n,
                _ = stop.cancelled() => 0,
            };
            stopping = n == 0;
        }
        if stopping {
            while let Ok(r) = rx.try_recv() {
                batch.push(r);
            }
        }
        // Retention is enforced every 1024 records, every 30 s of traffic, and on
        // shutdown.
        let prune =
            stopping || since_prune + batch.len() >= 1024 || pruned_at.elapsed() >= PRUNE_EVERY;
        match pg.write(&batch, prune.then_some(retention)).await {
            Ok(()) => {
                since_prune += batch.len();
                if prune {
                    since_prune = 0;
                    pruned_at = Instant::now();
                }
                batch.clear();
                retry = RETRY_FIRST;
                if let Some((since, before)) = outage.take() {
                    let lost = dropped.load(Ordering::Relaxed).saturating_sub(before);
                    tracing::info!(
                        store = %pg.display,
                        dropped = lost,
                        "call log: the database answers again after {:?}; {lost} records were dropped meanwhile (queue full)",
                        since.elapsed()
                    );
                }
            }
            Err(Failure::Refused(why)) => {
                tracing::warn!(
                    store = %pg.display,
                    "call log: the database refused {} records, which are dropped: {why}",
                    batch.len()
                );
                batch.clear();
            }
            Err(Failure::Unreachable(why)) => {
                if outage.is_none() {
                    outage = Some((Instant::now(), dropped.load(Ordering::Relaxed)));
                    tracing::warn!(
                        store = %pg.display,
                        "call log: the database is unreachable ({why}); holding {} records and queueing up to {} more (newer ones are dropped) until it answers",
                        batch.len(),
                        super::QUEUE
                    );
                }
                if stopping {
                    if !batch.is_empty() {
                        tracing::warn!(
                            store = %pg.display,
                            "call log: {} records not written: the database is unreachable at shutdown",
                            batch.len()
                        );
                    }
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = stop.cancelled() => stopping = true,
                }
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(payload: usize) -> CallRecord {
        CallRecord {
            at_ms: 1,
            request_id: None,
            identity: Arc::from("i"),
            service: Arc::from("s"),
            instance: None,
            tool: Arc::from("t"),
            duration_ms: 1.0,
            upstream_ms: 1.0,
            outcome: Outcome::Ok,
            error: None,
            arguments: Some("x".repeat(payload)),
            result: None,
        }
    }

    #[test]
    fn large_batches_are_cut_into_statements_and_small_ones_are_not() {
        let small: Vec<CallRecord> = (0..100).map(|_| record(10)).collect();
        assert_eq!(chunks(&small).map(<[_]>::len).collect::<Vec<_>>(), [100]);
        let big: Vec<CallRecord> = (0..5).map(|_| record(CHUNK_BYTES / 2)).collect();
        assert_eq!(
            chunks(&big).map(<[_]>::len).collect::<Vec<_>>(),
            [1, 1, 1, 1, 1]
        );
        let huge = vec![record(CHUNK_BYTES * 2), record(1)];
        assert_eq!(chunks(&huge).map(<[_]>::len).collect::<Vec<_>>(), [1, 1]);
        assert_eq!(chunks(&[]).count(), 0);
    }

    #[test]
    fn nul_characters_are_replaced_and_urls_lose_their_password() {
        assert_eq!(text("a\0b"), "a\u{FFFD}b");
        assert!(matches!(text("plain"), Cow::Borrowed("plain")));
        let shown = redact("postgres://gw:hunter2@db:5432/gateway");
        assert!(
            !shown.contains("hunter2") && shown.contains("db:5432"),
            "{shown}"
        );
        let lock = 0x6d63_7066_636c_i64.to_string();
        assert!(SCHEMA.contains(&lock) && PRUNE.contains(&lock));
    }
}
