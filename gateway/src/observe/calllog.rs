//! The call log: every tool call recorded, written by one task in batches, off the
//! calls' path, and kept within `call_log_max_rows` and `call_log_max_age_ms`. Queried
//! by `GET /calls` and summed up by `GET /stats` (and in `/services`).
//!
//! Two places ([`Place`]): the embedded store (the registration store's SQLite file, or
//! `call_log_store`; its own table and connection), the default; or, with a PostgreSQL
//! store and no `call_log_store`, that database (table `calls_log`, [`postgres`]),
//! shared by every replica of the cluster, each row marked with the replica that served
//! the call, so `/calls` and `/stats` on any replica show the whole cluster.
//!
//! Invariant: the call log is written off the call path by one task, bounded in queue
//! and retention; a full queue drops records, never blocks a call.

mod postgres;
pub mod series;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rusqlite::{Connection, params, params_from_iter};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{CallRecord, Outcome, metrics::Metrics};

/// Records waiting for the writer; beyond this, records are dropped (and counted).
const QUEUE: usize = 16_384;
/// Most records written in one transaction (the writer keeps up with ~30k calls/s).
const BATCH: usize = 4096;
const PRUNE_EVERY: Duration = Duration::from_secs(30);
/// After the first record of a batch, how long the writer waits for more: one commit
/// then serves many calls.
const LINGER: Duration = Duration::from_millis(100);

/// The calls' end of the queue.
#[derive(Clone)]
pub struct Sender {
    tx: mpsc::Sender<CallRecord>,
    /// Records dropped on a full queue (the writer reports them after a store outage).
    dropped: Arc<AtomicU64>,
}

impl Sender {
    pub(super) fn send(&self, record: CallRecord, metrics: &Metrics) {
        if self.tx.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics.log_dropped();
        }
    }
}

/// Where the call log is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A SQLite file: the store's, or `call_log_store`.
    File(PathBuf),
    /// The cluster's PostgreSQL store (its URL), shared by every replica; `replica` is
    /// this replica's id, recorded with each of its calls.
    Postgres { url: String, replica: String },
}

/// The readers' end: queries over the same file, or the same database.
pub struct CallLog(Backend);

enum Backend {
    Sqlite(Arc<Sqlite>),
    Postgres(Arc<postgres::Pg>),
}

/// The SQLite call log's reader.
struct Sqlite {
    conn: Mutex<Connection>,
    path: String,
}

/// Retention.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_rows: usize,
    pub max_age: Duration,
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // A crash may lose the last records; it never corrupts the file.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS calls (
            id INTEGER PRIMARY KEY,
            at_ms INTEGER NOT NULL,
            request_id TEXT,
            identity TEXT NOT NULL,
            service TEXT NOT NULL,
            instance TEXT,
            tool TEXT NOT NULL,
            duration_ms REAL NOT NULL,
            upstream_ms REAL NOT NULL,
            outcome TEXT NOT NULL,
            error TEXT,
            arguments TEXT,
            result TEXT
        ) STRICT;
        CREATE TABLE IF NOT EXISTS calls_minute (
            minute INTEGER NOT NULL,
            service TEXT NOT NULL,
            tool TEXT NOT NULL,
            bucket INTEGER NOT NULL,
            calls INTEGER NOT NULL,
            errors INTEGER NOT NULL,
            PRIMARY KEY (minute, service, tool, bucket)
        ) STRICT, WITHOUT ROWID;",
        // No secondary index on calls: each one costs every insert, while the table is
        // small (call_log_max_rows) and read newest-first by id. calls_minute is read by
        // its key's first column (a range of minutes, series::Span::read).
    )?;
    Ok(conn)
}

/// Opens the log at `place` and starts its writer, which stops (after writing what is
/// queued) when `stop` is cancelled. A PostgreSQL log is connected on first use: start-up
/// never waits for the database.
pub fn start(
    place: Place,
    retention: Retention,
    stop: CancellationToken,
) -> anyhow::Result<(Sender, Arc<CallLog>, tokio::task::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let (log, writing) = match place {
        Place::File(path) => {
            let path: &Path = &path;
            let display = path.display().to_string();
            let reader = open(path).map_err(|e| anyhow::anyhow!("call log in {display}: {e}"))?;
            let writer = open(path).map_err(|e| anyhow::anyhow!("call log in {display}: {e}"))?;
            let writing = tokio::spawn(write(writer, rx, retention, stop));
            let log = Backend::Sqlite(Arc::new(Sqlite {
                conn: Mutex::new(reader),
                path: display,
            }));
            (log, writing)
        }
        Place::Postgres { url, replica } => {
            let pg = Arc::new(postgres::Pg::new(&url, &replica)?);
            let writing = tokio::spawn(postgres::write(
                Arc::clone(&pg),
                rx,
                retention,
                stop,
                Arc::clone(&dropped),
            ));
            (Backend::Postgres(pg), writing)
        }
    };
    Ok((Sender { tx, dropped }, Arc::new(CallLog(log)), writing))
}

async fn write(
    conn: Connection,
    mut rx: mpsc::Receiver<CallRecord>,
    retention: Retention,
    stop: CancellationToken,
) {
    let conn = Arc::new(Mutex::new(conn));
    let mut batch = Vec::with_capacity(BATCH);
    let mut since_prune = 0usize;
    let mut pruned_at = std::time::Instant::now();
    loop {
        let n = tokio::select! {
            n = gather(&mut rx, &mut batch) => n,
            _ = stop.cancelled() => {
                while let Ok(r) = rx.try_recv() {
                    batch.push(r);
                }
                0
            }
        };
        if !batch.is_empty() || n == 0 {
            since_prune += batch.len();
            let records = std::mem::take(&mut batch);
            // Retention is enforced every 1024 records, every 30 s of traffic, and on
            // shutdown.
            let prune = since_prune >= 1024 || pruned_at.elapsed() >= PRUNE_EVERY || n == 0;
            if prune {
                since_prune = 0;
                pruned_at = std::time::Instant::now();
            }
            let conn = Arc::clone(&conn);
            let done = tokio::task::spawn_blocking(move || {
                let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                if !records.is_empty() {
                    insert(&mut conn, &records)?;
                }
                if prune {
                    self::prune(&conn, retention)?;
                }
                Ok::<_, rusqlite::Error>(())
            })
            .await;
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("call log: {e}"),
                Err(e) => tracing::warn!("call log writer: {e}"),
            }
        }
        if n == 0 {
            return;
        }
    }
}

/// Waits for a record, then sleeps [`LINGER`] and takes what came meanwhile (up to a
/// batch); 0 when every sender is gone. Sleeping rather than waiting on the queue
/// matters: a writer woken by every record costs each call a cross-thread wake-up.
async fn gather(rx: &mut mpsc::Receiver<CallRecord>, batch: &mut Vec<CallRecord>) -> usize {
    let n = rx.recv_many(batch, BATCH).await;
    if n == 0 {
        return 0;
    }
    if batch.len() < BATCH {
        tokio::time::sleep(LINGER).await;
    }
    while batch.len() < BATCH {
        match rx.try_recv() {
            Ok(record) => batch.push(record),
            Err(_) => break,
        }
    }
    batch.len()
}

/// Rows per `INSERT` statement: a batch goes in chunks of these sizes, largest first.
/// One statement for several rows spares each row a statement's start and end (its
/// reset, opening the table, halting), a good part of what a record costs to write.
/// Eight rows take most of that gain; a larger statement costs more than it saves, as
/// each of its values is allocated afresh per batch (rusqlite clears a cached
/// statement's bindings when it goes back to the cache).
const ROWS_PER_INSERT: [usize; 2] = [8, 1];

/// The `INSERT` of each of [`ROWS_PER_INSERT`]'s sizes, with its size, made once.
static INSERTS: LazyLock<Vec<(usize, String)>> = LazyLock::new(|| {
    ROWS_PER_INSERT
        .iter()
        .map(|&rows| {
            let values = vec!["(?,?,?,?,?,?,?,?,?,?,?,?)"; rows].join(",");
            let sql = format!(
                "INSERT INTO calls (at_ms, request_id, identity, service, instance, tool,
                   duration_ms, upstream_ms, outcome, error, arguments, result)
                 VALUES {values}"
            );
            (rows, sql)
        })
        .collect()
});

fn insert(conn: &mut Connection, records: &[CallRecord]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut rest = records;
        for &(rows, ref sql) in INSERTS.iter() {
            if rest.len() < rows {
                continue;
            }
            let mut stmt = tx.prepare_cached(sql)?;
            while rest.len() >= rows {
                let (chunk, more) = rest.split_at(rows);
                let mut at = 0;
                for r in chunk {
                    let values: [&dyn rusqlite::ToSql; 12] = [
                        &r.at_ms,
                        &r.request_id.as_deref(),
                        &&*r.identity,
                        &&*r.service,
                        &r.instance.as_deref(),
                        &&*r.tool,
                        &r.duration_ms,
                        &r.upstream_ms,
                        &r.outcome.as_str(),
                        &r.error,
                        &r.arguments,
                        &r.result,
                    ];
                    for value in values {
                        at += 1;
                        stmt.raw_bind_parameter(at, value)?;
                    }
                }
                stmt.raw_execute()?;
                rest = more;
            }
        }
        let mut upsert = tx.prepare_cached(
            "INSERT INTO calls_minute (minute, service, tool, bucket, calls, errors)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (minute, service, tool, bucket) DO UPDATE
             SET calls = calls + excluded.calls, errors = errors + excluded.errors",
        )?;
        for ((minute, service, tool, bucket), (calls, errors)) in series::minutes(records) {
            upsert.execute(params![minute, service, tool, bucket, calls, errors])?;
        }
    }
    tx.commit()
}

/// Deletes the calls older than `?1` (ms) that come first in the table. Rows are in the
/// order calls ended (`id`) and carry when they started (`at_ms`), so the old ones are
/// first: those before the first young one go, found by walking from the start and
/// stopping there (`calls` has no index on `at_ms`, which would cost every insert; a
/// `WHERE at_ms < ?1` read the whole table at every pruning, up to `call_log_max_rows`
/// rows, some milliseconds of a core each time). An old row behind a younger one (a long
/// call that ended after a later one started) goes once the rows before it have gone:
/// the age kept is passed by at most the longest call.
const PRUNE_BY_AGE: &str = "DELETE FROM calls WHERE id < coalesce(
        (SELECT id FROM calls WHERE at_ms >= ?1 ORDER BY id LIMIT 1),
        (SELECT max(id) + 1 FROM calls)
    )";

fn prune(conn: &Connection, retention: Retention) -> rusqlite::Result<()> {
    let oldest = super::now_ms() - retention.max_age.as_millis() as i64;
    conn.prepare_cached(PRUNE_BY_AGE)?.execute([oldest])?;
    conn.execute(
        "DELETE FROM calls WHERE id <= (SELECT MAX(id) FROM calls) - ?1",
        [retention.max_rows as i64],
    )?;
    conn.execute(
        "DELETE FROM calls_minute WHERE minute < ?1",
        [series::oldest_kept(super::now_ms())],
    )?;
    Ok(())
}

/// `GET /calls` filters (all optional).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Filter {
    pub service: Option<String>,
    pub tool: Option<String>,
    pub identity: Option<String>,
    pub outcome: Option<String>,
    /// Unix ms, inclusive.
    pub since: Option<i64>,
    /// Unix ms, exclusive.
    pub until: Option<i64>,
    /// Newest first; default 100, at most 1000.
    pub limit: Option<usize>,
}

/// Per service or per tool: what `/stats` and `/services` show.
#[derive(Debug, Clone, Default, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub calls: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub last_used_ms: Option<i64>,
}

/// What `/stats` answers: per service, and per (service, tool).
pub type AllStats = (BTreeMap<String, Stats>, BTreeMap<(String, String), Stats>);

impl CallLog {
    /// The calls matching `f`, newest first (an unknown outcome is an error starting
    /// "unknown outcome").
    pub async fn query(&self, f: Filter) -> Result<Vec<Value>, String> {
        if let Some(o) = &f.outcome
            && Outcome::parse(o).is_none()
        {
            let all: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
            return Err(format!(
                "unknown outcome {o:?}; outcomes are {}",
                all.join(", ")
            ));
        }
        match &self.0 {
            Backend::Sqlite(log) => {
                let log = Arc::clone(log);
                tokio::task::spawn_blocking(move || log.query(&f))
                    .await
                    .map_err(|e| e.to_string())?
            }
            Backend::Postgres(pg) => pg.query(&f).await,
        }
    }

    /// Per service, and per (service, tool), over the retained log.
    pub async fn stats(&self) -> Result<AllStats, String> {
        match &self.0 {
            Backend::Sqlite(log) => {
                let log = Arc::clone(log);
                tokio::task::spawn_blocking(move || log.stats())
                    .await
                    .map_err(|e| e.to_string())?
            }
            Backend::Postgres(pg) => pg.stats().await,
        }
    }

    /// The time series of `span` ending now, for `q`'s service and tool.
    pub async fn series(
        &self,
        span: series::Span,
        q: series::SeriesQuery,
    ) -> Result<series::Series, String> {
        let now = super::now_ms();
        let read = span.read(now, q.service.as_deref());
        let tool = q.tool.as_ref().map(|t| series::Read {
            tool: Some(t.clone()),
            ..read.clone()
        });
        let (all, of_tool) = match &self.0 {
            Backend::Sqlite(log) => {
                let log = Arc::clone(log);
                tokio::task::spawn_blocking(move || {
                    let all = log.cells(&read)?;
                    let of_tool = tool.map(|t| log.cells(&t)).transpose()?;
                    Ok::<_, String>((all, of_tool))
                })
                .await
                .map_err(|e| e.to_string())??
            }
            Backend::Postgres(pg) => {
                let all = pg.cells(&read).await?;
                let of_tool = match &tool {
                    Some(t) => Some(pg.cells(t).await?),
                    None => None,
                };
                (all, of_tool)
            }
        };
        Ok(series::build(
            &span,
            now,
            &all,
            q.tool.as_deref().zip(of_tool.as_deref()),
        ))
    }
}

/// One row of the log as `/calls` shows it; `arguments` and `result` are JSON text
/// (kept as a string when they are not JSON), `replica` only in a cluster's log.
struct Row {
    at: i64,
    request_id: Option<String>,
    identity: String,
    service: String,
    instance: Option<String>,
    tool: String,
    duration_ms: f64,
    upstream_ms: f64,
    outcome: String,
    error: Option<String>,
    arguments: Option<String>,
    result: Option<String>,
    replica: Option<String>,
}

impl Row {
    fn into_json(self) -> Value {
        let json = |t: Option<String>| {
            t.map(|t| serde_json::from_str::<Value>(&t).unwrap_or(Value::String(t)))
        };
        let mut call = serde_json::json!({
            "at": self.at,
            "requestId": self.request_id,
            "identity": self.identity,
            "service": self.service,
            "instance": self.instance,
            "tool": self.tool,
            "durationMs": self.duration_ms,
            "upstreamMs": self.upstream_ms,
            "outcome": self.outcome,
            "error": self.error,
        });
        if let Some(r) = self.replica {
            call["replica"] = Value::String(r);
        }
        if let Some(a) = json(self.arguments) {
            call["arguments"] = a;
        }
        if let Some(res) = json(self.result) {
            call["result"] = res;
        }
        call
    }
}

impl Sqlite {
    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The calls matching `f` (its outcome checked by `CallLog::query`), newest first.
    fn query(&self, f: &Filter) -> Result<Vec<Value>, String> {
        let mut sql = String::from(
            "SELECT at_ms, request_id, identity, service, instance, tool, duration_ms,
                    upstream_ms, outcome, error, arguments, result FROM calls WHERE 1=1",
        );
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        for (column, value) in [
            ("service", &f.service),
            ("tool", &f.tool),
            ("identity", &f.identity),
            ("outcome", &f.outcome),
        ] {
            if let Some(v) = value {
                sql.push_str(&format!(" AND {column} = ?"));
                args.push(v.clone().into());
            }
        }
        if let Some(since) = f.since {
            sql.push_str(" AND at_ms >= ?");
            args.push(since.into());
        }
        if let Some(until) = f.until {
            sql.push_str(" AND at_ms < ?");
            args.push(until.into());
        }
        let limit = f.limit.unwrap_or(100).clamp(1, 1000);
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {limit}"));
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql).map_err(|e| self.failed(e))?;
        let rows = stmt
            .query_map(params_from_iter(args), |r| {
                let text = |i| r.get::<_, Option<String>>(i);
                Ok(Row {
                    at: r.get(0)?,
                    request_id: text(1)?,
                    identity: r.get(2)?,
                    service: r.get(3)?,
                    instance: text(4)?,
                    tool: r.get(5)?,
                    duration_ms: r.get(6)?,
                    upstream_ms: r.get(7)?,
                    outcome: r.get(8)?,
                    error: text(9)?,
                    arguments: text(10)?,
                    result: text(11)?,
                    replica: None,
                }
                .into_json())
            })
            .map_err(|e| self.failed(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.failed(e))
    }

    /// Per service, and per (service, tool), over the retained log.
    fn stats(&self) -> Result<AllStats, String> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT service, tool, duration_ms, outcome, at_ms FROM calls")
            .map_err(|e| self.failed(e))?;
        let mut by_service: BTreeMap<String, Acc> = BTreeMap::new();
        let mut by_tool: BTreeMap<(String, String), Acc> = BTreeMap::new();
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, f64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(|e| self.failed(e))?;
        for row in rows {
            let (service, tool, ms, outcome, at) = row.map_err(|e| self.failed(e))?;
            let failed = Outcome::parse(&outcome).is_some_and(Outcome::failed);
            by_tool
                .entry((service.clone(), tool))
                .or_default()
                .add(ms, failed, at);
            by_service.entry(service).or_default().add(ms, failed, at);
        }
        Ok((
            by_service.into_iter().map(|(k, a)| (k, a.done())).collect(),
            by_tool.into_iter().map(|(k, a)| (k, a.done())).collect(),
        ))
    }

    /// The aggregates `r` asks for, summed per point, service and bucket.
    fn cells(&self, r: &series::Read) -> Result<Vec<series::Cell>, String> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT (minute - ?1) / ?3 AS point, service, bucket, SUM(calls), SUM(errors)
                 FROM calls_minute
                 WHERE minute >= ?1 AND minute < ?2
                   AND (?4 IS NULL OR service = ?4) AND (?5 IS NULL OR tool = ?5)
                 GROUP BY point, service, bucket",
            )
            .map_err(|e| self.failed(e))?;
        let rows = stmt
            .query_map(params![r.first, r.end, r.step, r.service, r.tool], |row| {
                Ok(series::Cell {
                    point: row.get(0)?,
                    service: row.get(1)?,
                    bucket: row.get(2)?,
                    calls: row.get(3)?,
                    errors: row.get(4)?,
                })
            })
            .map_err(|e| self.failed(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.failed(e))
    }

    fn failed(&self, e: rusqlite::Error) -> String {
        tracing::warn!("call log {}: {e}", self.path);
        format!("the call log could not be read: {e}")
    }
}

#[derive(Default)]
struct Acc {
    durations: Vec<f64>,
    errors: u64,
    last: Option<i64>,
}

impl Acc {
    fn add(&mut self, ms: f64, failed: bool, at: i64) {
        self.durations.push(ms);
        self.errors += u64::from(failed);
        self.last = Some(self.last.map_or(at, |l| l.max(at)));
    }

    /// Percentiles by nearest rank: the value at position ceil(p * n) of the sorted
    /// durations (PostgreSQL's `percentile_disc` is the same definition).
    fn done(mut self) -> Stats {
        self.durations.sort_by(f64::total_cmp);
        let n = self.durations.len();
        let pct = |p: f64| (n > 0).then(|| self.durations[nearest_rank(p, n as u64) as usize - 1]);
        Stats::new(n as u64, self.errors, pct(0.50), pct(0.95), self.last)
    }
}

/// The 1-based position of the `p` percentile among `n` sorted values, by nearest rank:
/// ceil(p * n), at least 1 (PostgreSQL's `percentile_disc` is the same definition).
fn nearest_rank(p: f64, n: u64) -> u64 {
    ((p * n as f64).ceil() as u64).clamp(1, n.max(1))
}

/// errors / calls; 0 without calls.
fn error_rate(calls: u64, errors: u64) -> f64 {
    if calls == 0 {
        0.0
    } else {
        errors as f64 / calls as f64
    }
}

impl Stats {
    /// From the counts; percentiles rounded to the microsecond.
    fn new(calls: u64, errors: u64, p50: Option<f64>, p95: Option<f64>, last: Option<i64>) -> Self {
        let round = |v: f64| (v * 1000.0).round() / 1000.0;
        Stats {
            calls,
            errors,
            error_rate: error_rate(calls, errors),
            p50_ms: p50.map(round),
            p95_ms: p95.map(round),
            last_used_ms: last,
        }
    }
}

/// What a redacted value becomes.
const REDACTED: &str = "[redacted]";

/// `json` with every secret it carries replaced by `"[redacted]"`; text that is not JSON
/// is kept out entirely. A member is secret when its name, lowercased and without `-` and
/// `_`, contains one of `fields` (normalized alike): `token` covers `access_token`,
/// `refreshToken` and `X-Auth-Token`. Text values are searched too: a text that is JSON
/// (a structured tool result's `content`) is redacted as JSON, and in any other text the
/// value of each secret `"name": "value"`, `"name": value`, `name=value` (query strings,
/// form bodies, cookies) or `name: value` (header lines such as `Authorization: Bearer
/// …`) pair. Linear in the length of `json`.
pub fn redact(json: &str, fields: &[String]) -> String {
    let secret = Secret::new(fields);
    match serde_json::from_str::<Value>(json) {
        Ok(mut v) => {
            redact_value(&mut v, &secret);
            v.to_string()
        }
        Err(_) => "\"[not JSON]\"".into(),
    }
}

/// The redaction list, normalized.
struct Secret(Vec<String>);

impl Secret {
    fn new(fields: &[String]) -> Self {
        Self(
            fields
                .iter()
                .map(|f| normalize(f))
                .filter(|f| !f.is_empty())
                .collect(),
        )
    }

    /// Whether what is called `name` is a secret.
    fn named(&self, name: &str) -> bool {
        let name = normalize(name);
        self.0.iter().any(|f| name.contains(f.as_str()))
    }
}

/// `name` lowercased, without `-` and `_`.
fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '-' | '_'))
        .flat_map(char::to_lowercase)
        .collect()
}

fn redact_value(v: &mut Value, secret: &Secret) {
    match v {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if secret.named(k) {
                    *v = Value::String(REDACTED.into());
                } else {
                    redact_value(v, secret);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact_value(v, secret)),
        Value::String(text) => {
            // JSON carried as text is redacted as JSON...
            if text.trim_start().starts_with(['{', '['])
                && let Ok(mut inner) = serde_json::from_str::<Value>(text)
            {
                redact_value(&mut inner, secret);
                *text = inner.to_string();
            // ...and any other text pair by pair.
            } else if let Some(redacted) = redact_text(text, secret) {
                *text = redacted;
            }
        }
        _ => {}
    }
}

/// `text` with the value of each secret pair in it replaced by [`REDACTED`]; `None` when
/// it has none. A name is a run of ASCII letters, digits, `-` and `_`; see [`pair_value`]
/// for what makes it a pair and where its value ends. One pass: each byte is looked at a
/// bounded number of times, whatever the input.
fn redact_text(text: &str, secret: &Secret) -> Option<String> {
    let is_name = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    let b = text.as_bytes();
    let mut out = String::new();
    // `text[..copied]` is in `out`.
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        if !is_name(b[i]) {
            i += 1;
            continue;
        }
        let name = i;
        i = skip(b, i, is_name);
        // Only a name that is followed by a separator is looked up.
        let Some((at, style)) = separator_after(b, i) else {
            continue;
        };
        if !secret.named(&text[name..i]) {
            continue;
        }
        let (start, end, marker) = pair_value(b, at, style);
        if end > start {
            out.push_str(&text[copied..start]);
            out.push_str(marker);
            copied = end;
            i = end;
        }
    }
    (copied > 0).then(|| {
        out.push_str(&text[copied..]);
        out
    })
}

/// The first index from `from` on whose byte is not `what`, or the end.
fn skip(b: &[u8], from: usize, what: impl Fn(u8) -> bool) -> usize {
    from + b[from.min(b.len())..]
        .iter()
        .take_while(|c| what(**c))
        .count()
}

/// How a pair is written, which decides where an unquoted value ends.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Style {
    /// `"name": value` (or `'name': value`): JSON and its relatives.
    Json,
    /// `name: value`: a header or YAML line.
    Line,
    /// `name=value`, quoted or not.
    Assignment,
}

/// After a name ending at `i`: an optional closing quote, blanks, then `:` or `=`. Where
/// the value may start (blanks skipped), and the pair's style.
fn separator_after(b: &[u8], i: usize) -> Option<(usize, Style)> {
    let quoted = Quote::at(b, i);
    let j = skip(b, i + quoted.map_or(0, Quote::len), |c| {
        c == b' ' || c == b'\t'
    });
    let style = match (b.get(j)?, quoted) {
        (b':', Some(_)) => Style::Json,
        (b':', None) => Style::Line,
        (b'=', _) => Style::Assignment,
        _ => return None,
    };
    let blank =
        |c: u8| c == b' ' || c == b'\t' || (style == Style::Json && c.is_ascii_whitespace());
    Some((skip(b, j + 1, blank), style))
}

/// The value starting at `at`: `(start, end, replacement)`. A quoted value is its text
/// up to the closing quote (or the end); in JSON style an object or array is all of it,
/// brackets balanced; otherwise it ends at `,` `}` `]` or the end of the line (JSON: so
/// `"Authorization": Bearer xyz` loses both words), at the end of the line (`name:
/// value`), or at `&` `;` `,` a quote, a bracket or a blank (`name=`).
fn pair_value(b: &[u8], at: usize, style: Style) -> (usize, usize, &'static str) {
    if let Some(q) = Quote::at(b, at) {
        let start = at + q.len();
        return (start, q.closing(b, start), REDACTED);
    }
    if style == Style::Json && matches!(b.get(at), Some(b'{' | b'[')) {
        return (at, balanced_end(b, at), "\"[redacted]\"");
    }
    let end = match style {
        Style::Json => skip(b, at, |c| !b",}]\r\n".contains(&c)),
        Style::Line => skip(b, at, |c| !b"\r\n".contains(&c)),
        Style::Assignment => skip(b, at, |c| {
            !b"&;,\"'<>()[]{}".contains(&c) && !c.is_ascii_whitespace()
        }),
    };
    (at, end, REDACTED)
}

/// Just past the bracket that closes the one at `from` (strings skipped), or the end.
fn balanced_end(b: &[u8], from: usize) -> usize {
    let mut depth = 0usize;
    let mut k = from;
    while k < b.len() {
        match b[k] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return k + 1;
                }
            }
            b'"' => k = Quote::Double.closing(b, k + 1),
            _ => {}
        }
        k += 1;
    }
    b.len()
}

/// A quote around a name or value.
#[derive(Clone, Copy)]
enum Quote {
    Double,
    Single,
    /// `\"`: JSON inside a string literal, such as a debug-printed body.
    Escaped,
}

impl Quote {
    fn at(b: &[u8], i: usize) -> Option<Self> {
        match (b.get(i)?, b.get(i + 1)) {
            (b'"', _) => Some(Self::Double),
            (b'\'', _) => Some(Self::Single),
            (b'\\', Some(b'"')) => Some(Self::Escaped),
            _ => None,
        }
    }

    fn len(self) -> usize {
        match self {
            Self::Escaped => 2,
            Self::Double | Self::Single => 1,
        }
    }

    /// Where the quoted text starting at `from` ends: at its closing quote (escaped
    /// quotes skipped), or the end of `b`. Always an ASCII byte's index, or the end.
    fn closing(self, b: &[u8], from: usize) -> usize {
        let mut k = from;
        // For `Escaped`: whether the unescaped text so far ends in an unpaired `\`, so
        // that a `\"` next is a quote inside the string, not its end.
        let mut escaping = false;
        while k < b.len() {
            match (self, b[k], b.get(k + 1)) {
                (Self::Double, b'\\', _) => k += 2,
                (Self::Double, b'"', _) | (Self::Single, b'\'', _) => return k,
                (Self::Escaped, b'\\', Some(b'\\')) => {
                    escaping = !escaping;
                    k += 2;
                }
                (Self::Escaped, b'\\', Some(b'"')) if !escaping => return k,
                (Self::Escaped, b'\\', Some(_)) => {
                    escaping = false;
                    k += 2;
                }
                _ => {
                    escaping = false;
                    k += 1;
                }
            }
        }
        b.len()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_batch_is_written_whole_and_in_order_whatever_its_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = open(&dir.path().join("log.db")).expect("open");
        let record = |i: i64| CallRecord {
            at_ms: 1_000 + i,
            request_id: (i % 2 == 0).then(|| Arc::from(format!("r{i}"))),
            identity: Arc::from(format!("who{}", i % 3)),
            service: Arc::from("s"),
            instance: (i % 5 == 0).then(|| Arc::from(format!("i{i}"))),
            tool: Arc::from(format!("t{i}")),
            duration_ms: i as f64 + 0.5,
            upstream_ms: i as f64,
            outcome: if i % 7 == 0 {
                Outcome::Timeout
            } else {
                Outcome::Ok
            },
            error: (i % 7 == 0).then(|| format!("e{i}")),
            arguments: Some(format!("{{\"i\":{i}}}")),
            result: None,
        };
        // 18 chunks of 8 rows and 6 single rows, then a batch smaller than a chunk.
        for (from, to) in [(0, 150), (150, 153)] {
            let records: Vec<_> = (from..to).map(record).collect();
            insert(&mut conn, &records).expect("insert");
        }
        let mut stmt = conn
            .prepare(
                "SELECT at_ms, request_id, identity, instance, tool, duration_ms, upstream_ms,
                        outcome, error, arguments, result FROM calls ORDER BY id",
            )
            .expect("prepare");
        let rows: Vec<String> = stmt
            .query_map([], |r| {
                Ok(format!(
                    "{} {:?} {} {:?} {} {} {} {} {:?} {:?} {:?}",
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, f64>(5)?,
                    r.get::<_, f64>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, Option<String>>(8)?,
                    r.get::<_, Option<String>>(9)?,
                    r.get::<_, Option<String>>(10)?,
                ))
            })
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        let expected: Vec<String> = (0..153)
            .map(record)
            .map(|r| {
                format!(
                    "{} {:?} {} {:?} {} {} {} {} {:?} {:?} {:?}",
                    r.at_ms,
                    r.request_id,
                    r.identity,
                    r.instance,
                    r.tool,
                    r.duration_ms,
                    r.upstream_ms,
                    r.outcome.as_str(),
                    r.error,
                    r.arguments,
                    r.result,
                )
            })
            .collect();
        assert_eq!(rows, expected);
        let minutes: i64 = conn
            .query_row("SELECT SUM(calls) FROM calls_minute", [], |r| r.get(0))
            .expect("count");
        assert_eq!(minutes, 153);
    }

    #[test]
    fn pruning_by_age_deletes_the_old_rows_in_front_without_reading_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = open(&dir.path().join("log.db")).expect("open");
        let record = |at_ms: i64| CallRecord {
            at_ms,
            request_id: None,
            identity: Arc::from("i"),
            service: Arc::from("s"),
            instance: None,
            tool: Arc::from("t"),
            duration_ms: 2.0,
            upstream_ms: 1.0,
            outcome: Outcome::Ok,
            error: None,
            arguments: None,
            result: None,
        };
        let ids = |conn: &Connection| -> Vec<i64> {
            let mut stmt = conn
                .prepare("SELECT at_ms FROM calls ORDER BY id")
                .expect("select");
            stmt.query_map([], |r| r.get(0))
                .expect("query")
                .map(|r| r.expect("row"))
                .collect()
        };
        let prune_older_than = |conn: &Connection, oldest: i64| -> i32 {
            let mut stmt = conn.prepare(PRUNE_BY_AGE).expect("prepare");
            stmt.execute([oldest]).expect("prune");
            stmt.get_status(rusqlite::StatementStatus::FullscanStep)
        };
        // In the order the calls ended: two old, a young one, an old one that ended after
        // it (a long call), then many young ones.
        let mut records: Vec<_> = [1, 2, 50, 3].into_iter().map(record).collect();
        records.extend((0..5000).map(|i| record(100 + i)));
        insert(&mut conn, &records).expect("insert");

        let steps = prune_older_than(&conn, 10);
        let kept = ids(&conn);
        assert_eq!(kept[..3], [50, 3, 100], "the two old rows in front went");
        assert_eq!(kept.len(), 5002);
        assert!(
            steps < 10,
            "pruning stopped at the first young row, not read the table: {steps} steps"
        );
        // Nothing old in front: nothing goes, and nothing more is read.
        let steps = prune_older_than(&conn, 10);
        assert_eq!(ids(&conn).len(), 5002);
        assert!(steps < 10, "{steps} steps");
        // Once the young row before it is old too, the late old row goes with it.
        prune_older_than(&conn, 60);
        assert_eq!(ids(&conn)[..2], [100, 101]);
        // Everything old: everything goes.
        prune_older_than(&conn, i64::MAX);
        assert_eq!(ids(&conn), Vec::<i64>::new());
    }

    #[test]
    fn minutes_are_summed_per_point_and_kept_25_hours() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = open(&dir.path().join("log.db")).expect("open");
        let now = crate::vocab::now_ms();
        let record = |ago_minutes: i64, tool: &str, outcome| CallRecord {
            at_ms: now - ago_minutes * 60_000,
            request_id: None,
            identity: Arc::from("i"),
            service: Arc::from("s"),
            instance: None,
            tool: Arc::from(tool),
            duration_ms: 2.0,
            upstream_ms: 1.0,
            outcome,
            error: None,
            arguments: None,
            result: None,
        };
        let records = [
            record(26 * 60, "t", Outcome::Ok), // past the 25 hours kept
            record(20, "t", Outcome::Ok),
            record(0, "t", Outcome::Ok),
            record(0, "t", Outcome::Timeout),
            record(0, "u", Outcome::Ok),
        ];
        // Two batches: the second adds to the rows of the first.
        insert(&mut conn, &records).expect("insert");
        insert(&mut conn, &records[2..3]).expect("insert");
        let minutes = |conn: &Connection| -> i64 {
            conn.query_row("SELECT SUM(calls) FROM calls_minute", [], |r| r.get(0))
                .expect("count")
        };
        assert_eq!(minutes(&conn), 6);
        let retention = Retention {
            max_rows: 1000,
            max_age: Duration::from_secs(30 * 24 * 3600),
        };
        prune(&conn, retention).expect("prune");
        assert_eq!(minutes(&conn), 5, "the minute 26 hours ago is gone");

        let log = Sqlite {
            conn: Mutex::new(conn),
            path: "log.db".into(),
        };
        let span = series::SeriesQuery {
            window: Some("1h".into()),
            step: Some("5m".into()),
            ..Default::default()
        }
        .span()
        .expect("span")
        .expect("a span");
        let read = span.read(now, None);
        let all = log.cells(&read).expect("cells");
        // Two points with calls; this minute's calls summed by the database into one row
        // per service and bucket.
        let last = read.end / read.step - read.first / read.step - 1;
        let now_cells: Vec<_> = all.iter().filter(|c| c.point == last).collect();
        assert_eq!(now_cells.len(), 1, "{all:?}");
        assert_eq!((now_cells[0].calls, now_cells[0].errors), (4, 1));
        let only_u = log
            .cells(&series::Read {
                tool: Some("u".into()),
                ..read.clone()
            })
            .expect("cells");
        assert_eq!(only_u.iter().map(|c| c.calls).sum::<i64>(), 1, "{only_u:?}");
        let built = series::build(&span, now, &all, Some(("u", &only_u)));
        assert_eq!(built.gateway.iter().map(|p| p.calls).sum::<u64>(), 5);
        assert_eq!(
            built.tools[0].points.iter().map(|p| p.calls).sum::<u64>(),
            1
        );
    }

    #[test]
    fn redaction_reaches_every_depth_and_any_case() {
        let fields = vec!["password".to_string(), "apiKey".to_string()];
        let out = redact(
            r#"{"user":"a","Password":"p1","nested":[{"apikey":"k","keep":1}],"text":"{\"password\":\"p2\"}"}"#,
            &fields,
        );
        assert!(!out.contains("p2"), "{out}");
        assert!(!out.contains("p1") && !out.contains("\"k\""), "{out}");
        assert!(
            out.contains("\"keep\":1") && out.contains("\"user\":\"a\""),
            "{out}"
        );
        assert_eq!(redact("not json", &fields), "\"[not JSON]\"");
    }

    fn defaults() -> Vec<String> {
        crate::Config::default().call_log_redact
    }

    /// The text `text` after redaction with the default list.
    fn redacted_text(text: &str) -> String {
        let out = redact(
            &serde_json::json!({ "text": text }).to_string(),
            &defaults(),
        );
        let v: Value = serde_json::from_str(&out).expect("redaction keeps JSON");
        v["text"].as_str().expect("a text").to_string()
    }

    #[test]
    fn members_whose_names_contain_a_pattern_are_redacted_whatever_their_spelling() {
        let secrets = [
            "access_token",
            "refreshToken",
            "X-Auth-Token",
            "id_token",
            "client_secret",
            "clientSecret",
            "Cookie",
            "Set-Cookie",
            "api-key",
            "x-api-key",
            "apiKey",
            "API_KEY",
            "sessionId",
            "private_key",
            "passwd",
            "Password",
            "passphrase",
            "Proxy-Authorization",
            "credentials",
            "bearer",
            "X-Amz-Signature",
        ];
        let mut args = serde_json::Map::new();
        for (i, name) in secrets.iter().enumerate() {
            args.insert(name.to_string(), json!(format!("s3cr3t-{i}")));
        }
        args.insert("credential".into(), json!({"user": "u", "pin": 1234}));
        for keep in ["id", "user", "description", "count", "apiVersion"] {
            args.insert(keep.into(), json!(keep));
        }
        let out = redact(&Value::Object(args).to_string(), &defaults());
        let v: Value = serde_json::from_str(&out).expect("JSON");
        assert!(!out.contains("s3cr3t") && !out.contains("1234"), "{out}");
        for name in secrets.iter().chain(&["credential"]) {
            assert_eq!(v[name], "[redacted]", "{name}: {out}");
        }
        for keep in ["id", "user", "description", "count", "apiVersion"] {
            assert_eq!(v[keep], keep, "{out}");
        }
        // A list entry is normalized too, and an empty one matches nothing.
        let fields = vec!["Api-Key".to_string(), "-".to_string(), String::new()];
        let out = redact(r#"{"x_api_key":"k","other":"o"}"#, &fields);
        assert_eq!(
            serde_json::from_str::<Value>(&out).expect("JSON"),
            json!({"x_api_key": "[redacted]", "other": "o"})
        );
    }

    #[test]
    fn secrets_embedded_in_text_are_redacted_and_the_rest_kept() {
        for (text, secret, kept) in [
            (
                "GET /cb?code=1&access_token=abc123&state=xyz HTTP/1.1",
                "abc123",
                &["code=1&access_token=[redacted]&state=xyz HTTP/1.1"][..],
            ),
            (
                "grant_type=password&client_secret=s3cr3t&username=bob",
                "s3cr3t",
                &["grant_type=password&", "&username=bob"],
            ),
            (
                "GET / HTTP/1.1\r\nAuthorization: Bearer eyJhbGci.eyJzdWIi.c2ln\r\nAccept: */*",
                "eyJ",
                &["Authorization: [redacted]\r\nAccept: */*"],
            ),
            (
                "Cookie: sid=abc; theme=dark\nHost: h",
                "sid=abc",
                &["Cookie: [redacted]\nHost: h"],
            ),
            (
                r#"upstream said {"error":"denied","token":"t0k3n","retry":true} at 12:00"#,
                "t0k3n",
                &[r#"{"error":"denied","token":"[redacted]","retry":true} at 12:00"#],
            ),
            (
                r#"partial {"password" : 12345, "x": 1"#,
                "12345",
                &[r#""password" : [redacted], "x": 1"#],
            ),
            (
                r#"sent {'Authorization': Bearer xyz} to it"#,
                "xyz",
                &["{'Authorization': [redacted]} to it"],
            ),
            (
                r#"got {"credentials": {"user": "u", "pass": "p"}, "ok": 1} back"#,
                r#""p""#,
                &[r#"{"credentials": "[redacted]", "ok": 1} back"#],
            ),
            (
                "repr: {'api_key': 'k-123', 'n': 1}",
                "k-123",
                &["{'api_key': '[redacted]', 'n': 1}"],
            ),
            (
                r#"body: "{\"token\":\"ab\\\"cd\",\"n\":1}""#,
                "cd",
                &[r#"{\"token\":\"[redacted]\",\"n\":1}""#],
            ),
            (
                "auth:\n  password: hunter2\n  user: bob",
                "hunter2",
                &["  password: [redacted]\n  user: bob"],
            ),
            (
                "run --token=abc --verbose",
                "abc",
                &["--token=[redacted] --verbose"],
            ),
            (
                "API_KEY=xyz ./start",
                "xyz",
                &["API_KEY=[redacted] ./start"],
            ),
            (
                r#"password="two words" next"#,
                "two",
                &[r#"password="[redacted]" next"#],
            ),
            ("session = 'a b'", "a b", &["session = '[redacted]'"]),
        ] {
            let out = redacted_text(text);
            assert!(!out.contains(secret), "{text:?} -> {out:?}");
            for k in kept {
                assert!(out.contains(k), "{text:?} -> {out:?} should keep {k:?}");
            }
        }
        // Text without a secret pair is left as it is.
        for text in [
            "a token expired; retry",
            "see http://example.com:8080/path?page=2&sort=name",
            r#"{"broken": json with token inside"#,
            "tokens",
            "",
        ] {
            assert_eq!(
                redact_text(text, &Secret::new(&defaults())),
                None,
                "{text:?}"
            );
        }
    }

    #[test]
    fn redaction_survives_hostile_text() {
        let secret = Secret::new(&defaults());
        // Cut-off and malformed pairs, and multi-byte characters everywhere an index
        // could land.
        for (text, redacted) in [
            (r#""token": "abc"#, Some(r#""token": "[redacted]"#)),
            ("token=", None),
            ("token:", None),
            (r#""token""#, None),
            ("token\\", None),
            (r#""token": \"#, Some(r#""token": [redacted]"#)),
            (r#""token":[[[{"a":"#, Some(r#""token":"[redacted]""#)),
            (
                r#""token": "\é" tail"#,
                Some(r#""token": "[redacted]" tail"#),
            ),
            (r#""tökén": "x""#, None),
            ("token=日本語&x=1", Some("token=[redacted]&x=1")),
            ("token: é€😀\nnext", Some("token: [redacted]\nnext")),
            (r#"token=\"😀\""#, Some(r#"token=\"[redacted]\""#)),
        ] {
            assert_eq!(redact_text(text, &secret).as_deref(), redacted, "{text:?}");
        }
        // Every short combination of the characters that matter: no panic, and what
        // comes out is still JSON.
        let pieces = [
            "token", "\"", "\\", "'", ":", "=", " ", "{", "[", "}", "]", "é", "\n", "&", "x",
        ];
        let mut texts = vec![String::new()];
        for _ in 0..4 {
            texts = texts
                .iter()
                .flat_map(|t| pieces.iter().map(move |p| format!("{t}{p}")))
                .collect();
            for t in &texts {
                if let Some(out) = redact_text(t, &secret) {
                    assert!(out.contains(REDACTED), "{t:?} -> {out:?}");
                }
                let whole = redact(&json!([t]).to_string(), &defaults());
                assert!(serde_json::from_str::<Value>(&whole).is_ok(), "{t:?}");
            }
        }
    }

    #[test]
    fn hostile_texts_are_scanned_whole_without_panicking() {
        // Inputs that make a naive scanner go back over the rest of the text for each
        // name (a quadratic scan of these would take minutes: no test asserts a time,
        // but CI's time limit would notice). Each is read to its end and a secret value
        // after them is still found.
        let n = 100_000;
        for text in [
            r#""a":["#.repeat(n),
            r#""token"     "#.repeat(n),
            "token=".repeat(n),
            "x:".repeat(n),
            format!("{}{}", r#""token": ""#, "\\".repeat(n)),
            format!("{}{}", r#"{"token": \""#, r#"\\\""#.repeat(n)),
            "a".repeat(n * 5),
        ] {
            let tail = format!("{text} password=hunter2");
            let out = redact_text(&tail, &Secret::new(&defaults())).unwrap_or(tail.clone());
            assert!(
                !out.ends_with("hunter2"),
                "the secret at the end was missed"
            );
        }
    }

    #[test]
    fn percentiles_and_error_rates() {
        let mut acc = Acc::default();
        for (i, ms) in [5.0, 1.0, 3.0, 2.0, 4.0, 100.0, 6.0, 7.0, 8.0, 9.0]
            .into_iter()
            .enumerate()
        {
            acc.add(ms, i % 5 == 0, i as i64);
        }
        let s = acc.done();
        assert_eq!((s.calls, s.errors, s.last_used_ms), (10, 2, Some(9)));
        assert_eq!((s.p50_ms, s.p95_ms), (Some(5.0), Some(100.0)));
        assert!((s.error_rate - 0.2).abs() < 1e-9);
    }
}
