//! The call log: every tool call recorded in the embedded store (the registration
//! store's SQLite file, its own table and connection), written by one task in batches,
//! off the calls' path, and kept within `call_log_max_rows` and `call_log_max_age_ms`.
//! Queried by `GET /calls` and summed up by `GET /stats` (and in `/services`).

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex},
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
pub struct Sender(mpsc::Sender<CallRecord>);

impl Sender {
    pub(super) fn send(&self, record: CallRecord, metrics: &Metrics) {
        if self.0.try_send(record).is_err() {
            metrics.log_dropped();
        }
    }
}

/// The readers' end: queries over the same file.
pub struct CallLog {
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
        ) STRICT;",
        // No secondary index: each one costs every insert, while the table is small
        // (call_log_max_rows) and read newest-first by id.
    )?;
    Ok(conn)
}

/// Opens the log in the store file at `path` and starts its writer, which stops (after
/// writing what is queued) when `stop` is cancelled.
pub fn start(
    path: &Path,
    retention: Retention,
    stop: CancellationToken,
) -> anyhow::Result<(Sender, Arc<CallLog>, tokio::task::JoinHandle<()>)> {
    let display = path.display().to_string();
    let reader = open(path).map_err(|e| anyhow::anyhow!("call log in {display}: {e}"))?;
    let writer = open(path).map_err(|e| anyhow::anyhow!("call log in {display}: {e}"))?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let writing = tokio::spawn(write(writer, rx, retention, stop));
    Ok((
        Sender(tx),
        Arc::new(CallLog {
            conn: Mutex::new(reader),
            path: display,
        }),
        writing,
    ))
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

fn insert(conn: &mut Connection, records: &[CallRecord]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO calls (at_ms, request_id, identity, service, instance, tool,
               duration_ms, upstream_ms, outcome, error, arguments, result)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        for r in records {
            stmt.execute(params![
                r.at_ms,
                r.request_id.as_deref(),
                &*r.identity,
                &*r.service,
                r.instance.as_deref(),
                &*r.tool,
                r.duration_ms,
                r.upstream_ms,
                r.outcome.as_str(),
                r.error,
                r.arguments,
                r.result,
            ])?;
        }
    }
    tx.commit()
}

fn prune(conn: &Connection, retention: Retention) -> rusqlite::Result<()> {
    let oldest = super::now_ms() - retention.max_age.as_millis() as i64;
    conn.execute("DELETE FROM calls WHERE at_ms < ?1", [oldest])?;
    conn.execute(
        "DELETE FROM calls WHERE id <= (SELECT MAX(id) FROM calls) - ?1",
        [retention.max_rows as i64],
    )?;
    Ok(())
}

/// `GET /calls` filters (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub calls: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub last_used_ms: Option<i64>,
}

impl CallLog {
    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The calls matching `f`, newest first.
    pub fn query(&self, f: &Filter) -> Result<Vec<Value>, String> {
        if let Some(o) = &f.outcome
            && Outcome::parse(o).is_none()
        {
            let all: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
            return Err(format!(
                "unknown outcome {o:?}; outcomes are {}",
                all.join(", ")
            ));
        }
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
                let json = |t: Option<String>| {
                    t.map(|t| serde_json::from_str::<Value>(&t).unwrap_or(Value::String(t)))
                };
                let mut call = serde_json::json!({
                    "at": r.get::<_, i64>(0)?,
                    "requestId": text(1)?,
                    "identity": r.get::<_, String>(2)?,
                    "service": r.get::<_, String>(3)?,
                    "instance": text(4)?,
                    "tool": r.get::<_, String>(5)?,
                    "durationMs": r.get::<_, f64>(6)?,
                    "upstreamMs": r.get::<_, f64>(7)?,
                    "outcome": r.get::<_, String>(8)?,
                    "error": text(9)?,
                });
                if let Some(a) = json(text(10)?) {
                    call["arguments"] = a;
                }
                if let Some(res) = json(text(11)?) {
                    call["result"] = res;
                }
                Ok(call)
            })
            .map_err(|e| self.failed(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.failed(e))
    }

    /// Per service, and per (service, tool), over the retained log.
    #[allow(clippy::type_complexity)]
    pub fn stats(
        &self,
    ) -> Result<(BTreeMap<String, Stats>, BTreeMap<(String, String), Stats>), String> {
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

    fn done(mut self) -> Stats {
        self.durations.sort_by(f64::total_cmp);
        let n = self.durations.len();
        let pct = |p: f64| {
            (n > 0).then(|| {
                let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
                (self.durations[rank - 1] * 1000.0).round() / 1000.0
            })
        };
        Stats {
            calls: n as u64,
            errors: self.errors,
            error_rate: if n == 0 {
                0.0
            } else {
                self.errors as f64 / n as f64
            },
            p50_ms: pct(0.50),
            p95_ms: pct(0.95),
            last_used_ms: self.last,
        }
    }
}

/// `json` with the values of every member named in `fields` (any depth, any case)
/// replaced by `"[redacted]"`; text that is not JSON is kept out entirely.
pub fn redact(json: &str, fields: &[String]) -> String {
    fn walk(v: &mut Value, fields: &[String]) {
        match v {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if fields.iter().any(|f| f.eq_ignore_ascii_case(k)) {
                        *v = Value::String("[redacted]".into());
                    } else {
                        walk(v, fields);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| walk(v, fields)),
            // JSON carried as text (a structured tool result's `content`) is redacted
            // inside too.
            Value::String(text) if text.starts_with(['{', '[']) => {
                if let Ok(mut inner) = serde_json::from_str::<Value>(text) {
                    walk(&mut inner, fields);
                    *text = inner.to_string();
                }
            }
            _ => {}
        }
    }
    match serde_json::from_str::<Value>(json) {
        Ok(mut v) => {
            walk(&mut v, fields);
            v.to_string()
        }
        Err(_) => "\"[not JSON]\"".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
