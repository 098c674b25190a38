//! The wrk reference (issue #13, "speed measured with a lean client"): the same
//! `tools/call getProductById` measured with `wrk`, a C load generator far leaner than
//! the project's own reqwest-based client (whose client side alone costs several hundred
//! microseconds a call), direct against shopping-service and through the gateway.
//!
//! Sessions are opened here, in Rust (`initialize` at protocol 2025-11-25, the
//! `Mcp-Session-Id` header, `notifications/initialized`, and for a "capable" session
//! `logging/setLevel` too), then handed to wrk in a generated Lua script. Two kinds:
//! - **plain**: a client that declares no capabilities;
//! - **capable**: a client that declares sampling, elicitation and roots and sets the log
//!   level to `info` before the measured calls (through the gateway such a session takes
//!   the typed path, not the pass-through one).
//!
//! Every request carries its own JSON-RPC id: a fixed body (the same id on every
//! connection) is not usable once two requests of one session are in flight together
//! (rmcp routes answers by request id, and a connection whose answer went elsewhere
//! waits forever, which wrk would report as a slow run, not as errors). A run at N
//! connections uses N sessions, taken in turn by the connections of each wrk thread (wrk's
//! Lua does not say which connection asks for the next request).
//!
//! The script checks every answer (HTTP 200, a JSON-RPC `result`, no `isError: true`)
//! and reports counts, percentiles and the answer's Content-Type on one line of JSON
//! from `done`. CPU time (utime + stime, `/proc/PID/stat`) and context switches (summed
//! over `/proc/PID/task/*/status`) of the gateway and the backend are read before and
//! after each measured run and divided by the requests completed.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde::{Deserialize, Serialize};

use crate::{
    client::{self, Endpoint},
    procs,
    report::{self, Row, Target, Unit},
};

/// The protocol revision of the sessions wrk drives.
pub const PROTOCOL_VERSION: &str = "2025-11-25";
/// The revision of the requests without a session ([`Kind::Stateless`]).
const STATELESS_VERSION: &str = "2026-07-28";
/// The measured request: `getProductById` is listed under its own name through the
/// gateway (no other service offers it), as the other scenarios call it.
const TOOL: &str = "getProductById";
const ARGUMENTS: &str = r#"{"id":"123"}"#;
/// Connection counts: latency at 1 (one wrk thread), throughput at 16 and 64 (two).
const LATENCY_CONNECTIONS: u32 = 1;
const THROUGHPUT_CONNECTIONS: [u32; 2] = [16, 64];
const THREADS_UNDER_LOAD: u32 = 2;
/// Below this share of the connections actually in flight (throughput × mean latency,
/// Little's law) a run is counted as an error: connections were stuck.
const MIN_EFFECTIVE_CONCURRENCY: f64 = 0.5;

/// How long each wrk run lasts.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// An unrecorded wrk run before each measured one (fresh connections warm up).
    pub warmup_secs: u64,
    pub measure_secs: u64,
}

impl Params {
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                warmup_secs: 0,
                measure_secs: 1,
            }
        } else {
            Self {
                warmup_secs: 1,
                measure_secs: 5,
            }
        }
    }
}

/// The session kinds measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Plain,
    Capable,
    /// No session: requests of the 2026-07-28 (stateless) revision, each with its
    /// protocol metadata in `_meta`, as the official Python SDK 2.x sends by default.
    Stateless,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Plain => "plain",
            Kind::Capable => "capable",
            Kind::Stateless => "stateless",
        }
    }

    fn capabilities(self) -> &'static str {
        match self {
            Kind::Plain | Kind::Stateless => "{}",
            Kind::Capable => client::CAPABLE_CAPABILITIES,
        }
    }
}

/// A target of the wrk runs and the processes whose CPU and context switches count.
pub struct Side {
    /// "direct" or "gateway".
    pub name: &'static str,
    pub endpoint: Endpoint,
    /// (role, pid): "backend" direct; "gateway" and "backend" through the gateway.
    pub procs: Vec<(&'static str, u32)>,
}

/// One measured wrk run.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub connections: u32,
    pub threads: u32,
    /// Requests completed (answered) in the run.
    pub requests: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
    /// Throughput × mean latency: the connections actually busy on average.
    pub effective_concurrency: f64,
    /// Socket errors, wrk timeouts, non-200 answers, answers without a `result` (or with
    /// `isError: true`), and 1 for a run whose connections were stuck.
    pub errors: u64,
    pub error_detail: Option<String>,
    /// The Content-Type of the answers (the last one each wrk thread saw).
    pub content_type: String,
    /// CPU time per completed request, by role ("gateway", "backend"), in µs.
    pub cpu_us_per_call: BTreeMap<String, f64>,
    /// The part of that CPU time spent in the kernel (system time), in µs.
    pub system_us_per_call: BTreeMap<String, f64>,
    /// Voluntary + involuntary context switches of all threads per request, by role.
    pub ctx_switches_per_call: BTreeMap<String, f64>,
    /// The involuntary part of those: a runnable thread preempted (on 2 cores, by wrk and
    /// the other server), not one that went to sleep waiting.
    pub involuntary_per_call: BTreeMap<String, f64>,
}

/// One target measured with one kind of session.
#[derive(Clone, Debug, Serialize)]
pub struct SideResult {
    pub target: String,
    pub url: String,
    /// The protocol revision the server agreed to in `initialize`.
    pub protocol_version: String,
    /// Content-Type of a `tools/call` answer sent from Rust before the runs.
    pub probe_content_type: String,
    /// The answer to `logging/setLevel` (capable sessions): "ok" or the JSON-RPC error.
    pub set_level: Option<String>,
    pub sessions: usize,
    pub runs: Vec<Run>,
}

impl SideResult {
    fn run(&self, connections: u32) -> Option<&Run> {
        self.runs.iter().find(|r| r.connections == connections)
    }
}

/// Both targets for one kind of session.
#[derive(Clone, Debug, Serialize)]
pub struct KindResult {
    pub kind: Kind,
    pub direct: SideResult,
    pub gateway: SideResult,
}

/// The whole wrk section of a report.
#[derive(Clone, Debug, Serialize)]
pub struct Section {
    /// Why the section was not measured (wrk missing and not installable).
    pub skipped: Option<String>,
    pub wrk_version: String,
    pub protocol_version: String,
    pub warmup_secs: u64,
    pub measure_secs: u64,
    pub kinds: Vec<KindResult>,
    pub notes: Vec<String>,
}

impl Section {
    pub fn skipped(reason: String) -> Self {
        Self {
            skipped: Some(reason),
            wrk_version: String::new(),
            protocol_version: PROTOCOL_VERSION.into(),
            warmup_secs: 0,
            measure_secs: 0,
            kinds: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// The section as the report shows it: the rows (figures and targets of #13) and
    /// the lines around them.
    pub fn to_report(&self) -> report::Section {
        let mut lines = Vec::new();
        if let Some(reason) = &self.skipped {
            lines.push(format!("Skipped: {reason}"));
            return report::Section {
                title: "wrk reference".into(),
                lines,
                rows: Vec::new(),
                notes: Vec::new(),
            };
        }
        lines.push(format!(
            "The same `tools/call {TOOL}` driven by `wrk` ({}), a lean C client, beside the \
             project's own client (the main table of `mcp-bench run`). Sessions at protocol {}: *plain* (no client \
             capabilities) and *capable* (sampling, elicitation and roots declared, then \
             `logging/setLevel` info); and *stateless*, no session: requests of the {STATELESS_VERSION} \
             revision with their protocol metadata in `_meta` and the `Mcp-Method` and `Mcp-Name` \
             headers, as the official Python SDK 2.x sends by default. Latency: `wrk -t1 -c1`; throughput: `-t{THREADS_UNDER_LOAD}` \
             at {} and {} connections, one session per connection (none for stateless); {} s measured{}. CPU and context switches per call from `/proc` before and after each \
             run; \"backend direct vs gateway\" compares the gateway's cost per proxied call \
             with what the backend itself spends per call when called directly.",
            self.wrk_version,
            self.protocol_version,
            THROUGHPUT_CONNECTIONS[0],
            THROUGHPUT_CONNECTIONS[1],
            self.measure_secs,
            if self.warmup_secs > 0 {
                format!(" after a {} s warm-up run", self.warmup_secs)
            } else {
                " (no warm-up run)".to_string()
            },
        ));
        let mut rows = Vec::new();
        let mut notes = self.notes.clone();
        for k in &self.kinds {
            let kind = k.kind.name();
            let what = if k.kind == Kind::Stateless {
                "requests"
            } else {
                "sessions"
            };
            lines.push(format!(
                "{kind} {what}: answers are `{}` direct and `{}` through the gateway.",
                k.direct.probe_content_type, k.gateway.probe_content_type
            ));
            rows.extend(kind_rows(k));
            for side in [&k.direct, &k.gateway] {
                if let Some(level) = side.set_level.as_ref().filter(|l| *l != "ok") {
                    notes.push(format!(
                        "{kind} {}: logging/setLevel answered {level} (the sessions were used as they were)",
                        side.target
                    ));
                }
                for r in &side.runs {
                    if let Some(detail) = &r.error_detail {
                        notes.push(format!(
                            "{kind} {} at {} connections: {} errors: {detail}",
                            side.target, r.connections, r.errors
                        ));
                    }
                    if r.content_type != side.probe_content_type {
                        notes.push(format!(
                            "{kind} {} at {} connections: wrk saw Content-Type {:?}, the probe {:?}",
                            side.target, r.connections, r.content_type, side.probe_content_type
                        ));
                    }
                }
            }
            let cpu: fn(&Run) -> &BTreeMap<String, f64> = |r| &r.cpu_us_per_call;
            let system: fn(&Run) -> &BTreeMap<String, f64> = |r| &r.system_us_per_call;
            notes.push(format!(
                "{kind}: of that CPU, in the kernel (system time): backend direct {}; through \
                 the gateway: gateway {}, backend {}",
                by_connections(&k.direct, system, "backend"),
                by_connections(&k.gateway, system, "gateway"),
                by_connections(&k.gateway, system, "backend"),
            ));
            let ctx: fn(&Run) -> &BTreeMap<String, f64> = |r| &r.ctx_switches_per_call;
            let preempted: fn(&Run) -> &BTreeMap<String, f64> = |r| &r.involuntary_per_call;
            notes.push(format!(
                "{kind}: CPU µs per call by connections: backend direct {}; through the gateway: \
                 gateway {}, backend {}",
                by_connections(&k.direct, cpu, "backend"),
                by_connections(&k.gateway, cpu, "gateway"),
                by_connections(&k.gateway, cpu, "backend"),
            ));
            notes.push(format!(
                "{kind}: context switches per call by connections: backend direct {}; through \
                 the gateway: gateway {}, backend {}",
                by_connections(&k.direct, ctx, "backend"),
                by_connections(&k.gateway, ctx, "gateway"),
                by_connections(&k.gateway, ctx, "backend"),
            ));
            notes.push(format!(
                "{kind}: of those, involuntary (preempted while runnable): backend direct {}; \
                 through the gateway: gateway {}, backend {}",
                by_connections(&k.direct, preempted, "backend"),
                by_connections(&k.gateway, preempted, "gateway"),
                by_connections(&k.gateway, preempted, "backend"),
            ));
        }
        report::Section {
            title: "wrk reference".into(),
            lines,
            rows,
            notes,
        }
    }
}

/// "1: 41.0, 16: 30.2, 64: 28.9": a per-call figure of `role` at each connection count.
fn by_connections(
    side: &SideResult,
    figures: fn(&Run) -> &BTreeMap<String, f64>,
    role: &str,
) -> String {
    side.runs
        .iter()
        .map(|r| {
            figures(r).get(role).map_or_else(
                || format!("{}: —", r.connections),
                |v| format!("{}: {v:.1}", r.connections),
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rows of one kind: the figures of #13 and their targets.
fn kind_rows(k: &KindResult) -> Vec<Row> {
    let kind = k.kind.name();
    let (d, g) = (&k.direct, &k.gateway);
    let errors = |c: u32| d.run(c).map_or(1, |r| r.errors) + g.run(c).map_or(1, |r| r.errors);
    let fig = |side: &SideResult, c: u32, f: &dyn Fn(&Run) -> Option<f64>| side.run(c).and_then(f);
    let mut rows = Vec::new();
    let one = LATENCY_CONNECTIONS;
    for (name, q, target) in [
        ("p50", 0.5, Target::RatioAtMost(1.5)),
        ("p99", 0.99, Target::None),
    ] {
        let f = move |r: &Run| Some(if q < 0.9 { r.p50_us } else { r.p99_us });
        rows.push(Row {
            scenario: format!("wrk {kind}: tools/call {name}, 1 connection"),
            direct: fig(d, one, &f),
            via: fig(g, one, &f).unwrap_or(0.0),
            unit: Unit::Micros,
            target,
            errors: errors(one),
        });
    }
    for c in THROUGHPUT_CONNECTIONS {
        let f = |r: &Run| Some(r.per_second);
        rows.push(Row {
            scenario: format!("wrk {kind}: tools/call throughput, {c} connections"),
            direct: fig(d, c, &f),
            via: fig(g, c, &f).unwrap_or(0.0),
            unit: Unit::PerSecond,
            target: Target::RatioAtLeast(0.75),
            errors: errors(c),
        });
    }
    for c in [one, THROUGHPUT_CONNECTIONS[0], THROUGHPUT_CONNECTIONS[1]] {
        rows.push(Row {
            scenario: format!(
                "wrk {kind}: CPU per call, {c} connection{}: backend direct vs gateway",
                if c == 1 { "" } else { "s" }
            ),
            direct: fig(d, c, &|r| r.cpu_us_per_call.get("backend").copied()),
            via: fig(g, c, &|r| r.cpu_us_per_call.get("gateway").copied()).unwrap_or(0.0),
            unit: Unit::MicrosFine,
            target: if c == THROUGHPUT_CONNECTIONS[1] {
                Target::None
            } else {
                Target::RatioAtMost(1.0)
            },
            errors: errors(c),
        });
    }
    rows.push(Row {
        scenario: format!(
            "wrk {kind}: context switches per call, 1 connection: backend direct vs gateway"
        ),
        direct: fig(d, one, &|r| r.ctx_switches_per_call.get("backend").copied()),
        via: fig(g, one, &|r| r.ctx_switches_per_call.get("gateway").copied()).unwrap_or(0.0),
        unit: Unit::PerCall,
        target: Target::ValueAtMost(2.0),
        errors: errors(one),
    });
    rows
}

/// Finds wrk, installing it with apt-get (directly as root, else with `sudo -n`) when
/// missing. `Err` says why it is not there.
pub async fn locate_or_install() -> std::result::Result<PathBuf, String> {
    tokio::task::spawn_blocking(locate_or_install_blocking)
        .await
        .unwrap_or_else(|e| Err(format!("looking for wrk failed: {e}")))
}

fn locate() -> Option<PathBuf> {
    let usr = Path::new("/usr/bin/wrk");
    if usr.is_file() {
        Some(usr.to_path_buf())
    } else if procs::on_path("wrk") {
        Some(PathBuf::from("wrk"))
    } else {
        None
    }
}

fn locate_or_install_blocking() -> std::result::Result<PathBuf, String> {
    if let Some(wrk) = locate() {
        return Ok(wrk);
    }
    let mut command: Vec<&str> = if is_root() {
        vec!["apt-get"]
    } else if procs::on_path("sudo") {
        vec!["sudo", "-n", "apt-get"]
    } else {
        return Err(
            "wrk is not installed, and it cannot be installed here (not root, no sudo): \
                    apt-get install wrk"
                .into(),
        );
    };
    eprintln!(
        "mcp-bench: wrk is not installed: {} install -y wrk",
        command.join(" ")
    );
    let program = command.remove(0);
    let apt = |args: &[&str]| {
        std::process::Command::new(program)
            .args(&command)
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
    };
    let mut last = apt(&["install", "-y", "-qq", "wrk"]);
    if !last.as_ref().is_ok_and(|o| o.status.success()) {
        // A fresh machine's package lists may be empty or stale.
        let _ = apt(&["update", "-qq"]);
        last = apt(&["install", "-y", "-qq", "wrk"]);
    }
    locate().ok_or_else(|| {
        let why = match last {
            Ok(o) => {
                let text = String::from_utf8_lossy(&o.stderr);
                let tail: Vec<&str> = text.lines().rev().take(3).collect();
                format!(
                    "{}: {}",
                    o.status,
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                )
            }
            Err(e) => e.to_string(),
        };
        format!("wrk is not installed, and `apt-get install -y wrk` did not install it ({why})")
    })
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// `wrk -v`'s first line ("wrk 4.1.0 [epoll] ...", cut before the copyright).
async fn version(wrk: &Path) -> String {
    let out = tokio::process::Command::new(wrk)
        .arg("-v")
        .stdin(Stdio::null())
        .output()
        .await;
    out.ok()
        .and_then(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines()
                .next()
                .map(|l| l.split(" Copyright").next().unwrap_or(l).trim().to_string())
        })
        .unwrap_or_else(|| "wrk, version unknown".into())
}

/// The whole section: for each kind of session, direct and through the gateway, the
/// latency run and the two throughput runs (direct first, then the gateway, at each
/// connection count).
pub async fn measure(
    wrk: &Path,
    http: &reqwest::Client,
    direct: Side,
    gateway: Side,
    params: Params,
    scratch: &Path,
) -> Result<Section> {
    let mut section = Section {
        skipped: None,
        wrk_version: version(wrk).await,
        protocol_version: PROTOCOL_VERSION.into(),
        warmup_secs: params.warmup_secs,
        measure_secs: params.measure_secs,
        kinds: Vec::new(),
        notes: Vec::new(),
    };
    let most = THROUGHPUT_CONNECTIONS[1] as usize;
    let mut script_n = 0u64;
    for kind in [Kind::Plain, Kind::Capable, Kind::Stateless] {
        eprintln!("mcp-bench: wrk reference, {} sessions", kind.name());
        let mut opened = Vec::new();
        let mut results = Vec::new();
        for side in [&direct, &gateway] {
            let sessions = open_sessions(http, &side.endpoint, kind, most)
                .await
                .with_context(|| format!("opening {} sessions ({})", kind.name(), side.name))?;
            let probe = sessions.probe_content_type.clone();
            results.push(SideResult {
                target: side.name.into(),
                url: side.endpoint.url.clone(),
                protocol_version: sessions.protocol_version.clone(),
                probe_content_type: probe,
                set_level: sessions.set_level.clone(),
                sessions: sessions.ids.len(),
                runs: Vec::new(),
            });
            opened.push(sessions);
        }
        for c in [
            LATENCY_CONNECTIONS,
            THROUGHPUT_CONNECTIONS[0],
            THROUGHPUT_CONNECTIONS[1],
        ] {
            let threads = if c == 1 { 1 } else { THREADS_UNDER_LOAD };
            for (i, side) in [&direct, &gateway].into_iter().enumerate() {
                let sessions = &opened[i];
                // Stateless requests have none.
                let ids = &sessions.ids[..sessions.ids.len().min(c as usize)];
                let script = || {
                    script_n += 1;
                    let path = scratch.join(format!(
                        "wrk-{}-{}-{c}-{script_n}.lua",
                        kind.name(),
                        side.name
                    ));
                    let text = lua_script(&LuaSpec {
                        endpoint: &side.endpoint,
                        protocol_version: &sessions.protocol_version,
                        sessions: ids,
                        threads,
                        id_base: script_n * 1_000_000_000,
                    });
                    write_script(path, text)
                };
                let run = measured(wrk, side, c, threads, params, script).await?;
                results[i].runs.push(run);
            }
        }
        for (sessions, side) in opened.into_iter().zip([&direct, &gateway]) {
            let failed = close_sessions(http, &side.endpoint, &sessions).await;
            if failed > 0 {
                section.notes.push(format!(
                    "{} {}: {failed} session DELETEs failed",
                    kind.name(),
                    side.name
                ));
            }
        }
        let gateway_result = results.pop().context("two sides")?;
        let direct_result = results.pop().context("two sides")?;
        section.kinds.push(KindResult {
            kind,
            direct: direct_result,
            gateway: gateway_result,
        });
    }
    Ok(section)
}

/// Plain sessions on one side only, one wrk run (after its warm-up) at each of
/// `connections`: the stdio section's gateway figures.
pub async fn plain_runs(
    wrk: &Path,
    http: &reqwest::Client,
    side: &Side,
    connections: &[u32],
    params: Params,
    scratch: &Path,
) -> Result<(String, Vec<Run>)> {
    let most = connections.iter().copied().max().unwrap_or(1) as usize;
    let sessions = open_sessions(http, &side.endpoint, Kind::Plain, most)
        .await
        .with_context(|| format!("opening plain sessions ({})", side.name))?;
    let mut runs = Vec::new();
    for (n, &c) in connections.iter().enumerate() {
        let threads = if c == 1 { 1 } else { THREADS_UNDER_LOAD };
        let script = || {
            let path = scratch.join(format!("wrk-stdio-{}-{c}.lua", side.name));
            let text = lua_script(&LuaSpec {
                endpoint: &side.endpoint,
                protocol_version: &sessions.protocol_version,
                sessions: &sessions.ids[..c as usize],
                threads,
                id_base: (n as u64 + 1) * 1_000_000_000,
            });
            write_script(path, text)
        };
        runs.push(measured(wrk, side, c, threads, params, script).await?);
    }
    close_sessions(http, &side.endpoint, &sessions).await;
    Ok((version(wrk).await, runs))
}

/// Writes a run's Lua script; its path.
fn write_script(path: PathBuf, text: String) -> Result<PathBuf> {
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// One figure of `side` at `c` connections: an unrecorded warm-up run (when the
/// parameters ask for one), then the measured run, the processes' CPU time and context
/// switches sampled around it. `script` writes the Lua script of each run.
async fn measured(
    wrk: &Path,
    side: &Side,
    c: u32,
    threads: u32,
    params: Params,
    mut script: impl FnMut() -> Result<PathBuf>,
) -> Result<Run> {
    if params.warmup_secs > 0 {
        let path = script()?;
        run_wrk(
            wrk,
            &path,
            &side.endpoint.url,
            threads,
            c,
            params.warmup_secs,
        )
        .await
        .context("wrk warm-up run")?;
    }
    let path = script()?;
    let before = sample(&side.procs)?;
    let out = run_wrk(
        wrk,
        &path,
        &side.endpoint.url,
        threads,
        c,
        params.measure_secs,
    )
    .await?;
    let after = sample(&side.procs)?;
    Ok(to_run(&out, c, threads, &side.procs, &before, &after))
}

/// CPU time and context switches (all, involuntary) of each process, in order.
fn sample(procs: &[(&'static str, u32)]) -> Result<Vec<(procs::Cpu, Switches)>> {
    procs
        .iter()
        .map(|(_, pid)| Ok((procs::cpu_split(*pid)?, ctx_switches(*pid)?)))
        .collect()
}

fn to_run(
    out: &WrkOutput,
    connections: u32,
    threads: u32,
    roles: &[(&'static str, u32)],
    before: &[(procs::Cpu, Switches)],
    after: &[(procs::Cpu, Switches)],
) -> Run {
    let requests = out.requests;
    let seconds = out.duration_us / 1e6;
    let per_second = if seconds > 0.0 {
        requests as f64 / seconds
    } else {
        0.0
    };
    let effective_concurrency = per_second * out.mean_us / 1e6;
    let mut problems = Vec::new();
    let socket = out.connect + out.read + out.write + out.timeout;
    if socket > 0 {
        problems.push(format!(
            "socket errors: connect {}, read {}, write {}, timeout {}",
            out.connect, out.read, out.write, out.timeout
        ));
    }
    if out.bad_status > 0 {
        problems.push(format!("{} answers not HTTP 200", out.bad_status));
    }
    if out.bad_body > 0 {
        problems.push(format!(
            "{} answers without a result (or with isError: true)",
            out.bad_body
        ));
    }
    if !out.first_bad.is_empty() {
        problems.push(format!("first bad answer: {}", out.first_bad));
    }
    let mut errors = socket + out.bad_status + out.bad_body;
    if requests == 0 {
        errors += 1;
        problems.push("no request completed".into());
    } else if effective_concurrency < MIN_EFFECTIVE_CONCURRENCY * f64::from(connections) {
        errors += 1;
        problems.push(format!(
            "only {effective_concurrency:.1} of {connections} connections busy on average \
             (throughput × mean latency): connections were stuck"
        ));
    }
    let calls = requests.max(1) as f64;
    let mut cpu_us_per_call = BTreeMap::new();
    let mut system_us_per_call = BTreeMap::new();
    let mut ctx_switches_per_call = BTreeMap::new();
    let mut involuntary_per_call = BTreeMap::new();
    for (((role, _), (cpu0, ctx0)), (cpu1, ctx1)) in roles.iter().zip(before).zip(after) {
        let used = cpu1.since(*cpu0);
        cpu_us_per_call.insert(
            (*role).to_string(),
            used.total().as_secs_f64() * 1e6 / calls,
        );
        system_us_per_call.insert((*role).to_string(), used.system.as_secs_f64() * 1e6 / calls);
        ctx_switches_per_call.insert(
            (*role).to_string(),
            ctx1.all.saturating_sub(ctx0.all) as f64 / calls,
        );
        involuntary_per_call.insert(
            (*role).to_string(),
            ctx1.involuntary.saturating_sub(ctx0.involuntary) as f64 / calls,
        );
    }
    Run {
        connections,
        threads,
        requests,
        seconds,
        per_second,
        p50_us: out.p50_us,
        p99_us: out.p99_us,
        mean_us: out.mean_us,
        effective_concurrency,
        errors,
        error_detail: (!problems.is_empty()).then(|| problems.join("; ")),
        content_type: out.content_type.clone(),
        cpu_us_per_call,
        system_us_per_call,
        ctx_switches_per_call,
        involuntary_per_call,
    }
}

/// Context switches of a process, summed over its threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Switches {
    /// Voluntary plus involuntary.
    pub all: u64,
    pub involuntary: u64,
}

/// The context switches of every thread of `pid` (threads that exited are not counted:
/// `/proc` keeps no trace of them).
pub fn ctx_switches(pid: u32) -> Result<Switches> {
    let dir = format!("/proc/{pid}/task");
    let mut total = Switches::default();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Ok(entry) = entry else { continue };
        // A thread may end between the listing and the read.
        if let Ok(status) = std::fs::read_to_string(entry.path().join("status")) {
            let thread = parse_ctx_switches(&status);
            total.all += thread.all;
            total.involuntary += thread.involuntary;
        }
    }
    Ok(total)
}

fn parse_ctx_switches(status: &str) -> Switches {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let involuntary = field("nonvoluntary_ctxt_switches:");
    Switches {
        all: field("voluntary_ctxt_switches:") + involuntary,
        involuntary,
    }
}

/// Sessions opened for wrk, all of one kind on one endpoint.
struct Sessions {
    ids: Vec<String>,
    protocol_version: String,
    probe_content_type: String,
    set_level: Option<String>,
}

/// Opens `count` sessions of `kind` (eight at a time), then sends one `tools/call` on the
/// first from Rust to see that it works and what Content-Type it answers with.
async fn open_sessions(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    kind: Kind,
    count: usize,
) -> Result<Sessions> {
    if kind == Kind::Stateless {
        return Ok(Sessions {
            ids: Vec::new(),
            protocol_version: STATELESS_VERSION.into(),
            probe_content_type: probe(http, endpoint, None).await?,
            set_level: None,
        });
    }
    let mut opened: Vec<(String, String, Option<String>)> = Vec::with_capacity(count);
    while opened.len() < count {
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..(count - opened.len()).min(8) {
            let (http, endpoint) = (http.clone(), endpoint.clone());
            batch.spawn(async move { open_session(&http, &endpoint, kind).await });
        }
        while let Some(joined) = batch.join_next().await {
            opened.push(joined.context("a session-opening task panicked")??);
        }
    }
    let protocol_version = opened[0].1.clone();
    if let Some((_, other, _)) = opened.iter().find(|(_, v, _)| *v != protocol_version) {
        bail!("sessions agreed to different protocol versions: {protocol_version} and {other}");
    }
    let set_level = opened[0].2.clone();
    if let Some((_, _, other)) = opened.iter().find(|(_, _, l)| *l != set_level) {
        bail!("logging/setLevel answered differently on two sessions: {set_level:?} and {other:?}");
    }
    let probe_content_type = probe(http, endpoint, Some((&opened[0].0, &protocol_version))).await?;
    Ok(Sessions {
        ids: opened.into_iter().map(|(id, _, _)| id).collect(),
        protocol_version,
        probe_content_type,
        set_level,
    })
}

fn request(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    session: Option<(&str, &str)>,
    body: String,
) -> reqwest::RequestBuilder {
    let mut req = http
        .post(&endpoint.url)
        .header(ACCEPT, "application/json, text/event-stream")
        .header(CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(token) = &endpoint.bearer {
        req = req.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    if let Some((id, version)) = session {
        req = req
            .header("Mcp-Session-Id", id)
            .header("MCP-Protocol-Version", version);
    }
    req
}

/// A request of the stateless revision: its version and the `Mcp-Method` and
/// `Mcp-Name` headers (SEP-2243) beside the body.
fn stateless_request(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    body: String,
) -> reqwest::RequestBuilder {
    request(http, endpoint, None, body)
        .header("MCP-Protocol-Version", STATELESS_VERSION)
        .header("Mcp-Method", "tools/call")
        .header("Mcp-Name", TOOL)
}

/// initialize, notifications/initialized and, for a capable session, logging/setLevel:
/// (session id, agreed protocol version, setLevel outcome).
async fn open_session(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    kind: Kind,
) -> Result<(String, String, Option<String>)> {
    let init = format!(
        r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"{PROTOCOL_VERSION}","capabilities":{},"clientInfo":{{"name":"mcp-bench-wrk","version":"{}"}}}}}}"#,
        kind.capabilities(),
        env!("CARGO_PKG_VERSION")
    );
    let resp = request(http, endpoint, None, init)
        .send()
        .await
        .with_context(|| format!("initialize at {}", endpoint.url))?;
    let id = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .context("the initialize answer carries no Mcp-Session-Id header")?;
    let result = client::read_reply(resp)
        .await
        .context("initialize")?
        .into_result()
        .context("initialize")?;
    let version = result
        .protocol_version
        .context("the initialize result has no protocolVersion")?;
    let session = Some((id.as_str(), version.as_str()));
    let resp = request(
        http,
        endpoint,
        session,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.into(),
    )
    .send()
    .await
    .context("notifications/initialized")?;
    if !resp.status().is_success() {
        bail!("notifications/initialized answered HTTP {}", resp.status());
    }
    let set_level = if kind == Kind::Capable {
        let resp = request(
            http,
            endpoint,
            session,
            r#"{"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":"info"}}"#
                .into(),
        )
        .send()
        .await
        .context("logging/setLevel")?;
        // An HTTP error fails the session; a JSON-RPC error (a server without the logging
        // capability) is reported, and the session used as it is.
        let reply = client::read_reply(resp).await.context("logging/setLevel")?;
        Some(match reply.into_result() {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("{e:#}"),
        })
    } else {
        None
    };
    Ok((id, version, set_level))
}

/// One `tools/call` from Rust, on the session (id, version) or, without one, of the
/// stateless revision: it must succeed; returns the answer's Content-Type (without
/// parameters).
async fn probe(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    session: Option<(&str, &str)>,
) -> Result<String> {
    let req = match session {
        Some(session) => request(http, endpoint, Some(session), call_body("2", false)),
        None => stateless_request(http, endpoint, call_body("2", true)),
    };
    let resp = req.send().await.context("probe tools/call")?;
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let result = client::read_reply(resp)
        .await
        .context("probe tools/call")?
        .into_result()
        .context("probe tools/call")?;
    if result.is_error == Some(true) {
        bail!("probe tools/call: the tool answered isError: true");
    }
    Ok(content_type)
}

/// DELETE of every session; returns how many failed.
async fn close_sessions(http: &reqwest::Client, endpoint: &Endpoint, s: &Sessions) -> u64 {
    let mut failed = 0;
    for id in &s.ids {
        let mut req = http
            .delete(&endpoint.url)
            .header("Mcp-Session-Id", id)
            .header("MCP-Protocol-Version", &s.protocol_version);
        if let Some(token) = &endpoint.bearer {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if !req.send().await.is_ok_and(|r| r.status().is_success()) {
            failed += 1;
        }
    }
    failed
}

/// The measured request with JSON-RPC id `id` (a decimal number); `stateless`: with the
/// stateless revision's protocol metadata in `_meta`.
fn call_body(id: &str, stateless: bool) -> String {
    let meta = if stateless { STATELESS_META } else { "" };
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{TOOL}","arguments":{ARGUMENTS}{meta}}}}}"#
    )
}

/// The `_meta` member of every stateless request (what a client of that revision
/// declares per request: no capabilities).
const STATELESS_META: &str = concat!(
    r#","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","#,
    r#""io.modelcontextprotocol/clientInfo":{"name":"mcp-bench-wrk","version":"1"},"#,
    r#""io.modelcontextprotocol/clientCapabilities":{}}"#
);

struct LuaSpec<'a> {
    endpoint: &'a Endpoint,
    protocol_version: &'a str,
    /// Empty: stateless requests (with the `Mcp-Method` and `Mcp-Name` headers and the
    /// protocol metadata in `_meta`).
    sessions: &'a [String],
    threads: u32,
    /// JSON-RPC ids of this run start above this (no id is used twice in a session).
    id_base: u64,
}

/// A Lua string literal (session ids and tokens are plain ASCII; anything else is
/// escaped as a decimal byte).
fn lua_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for b in s.bytes() {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

/// The wrk script: the request (method, headers, body), one session per connection in
/// turn, a fresh JSON-RPC id per request, a check of every answer, and the figures on
/// one `MCPBENCH {json}` line from `done`.
fn lua_script(spec: &LuaSpec<'_>) -> String {
    let sessions = spec
        .sessions
        .iter()
        .map(|s| lua_str(s))
        .collect::<Vec<_>>()
        .join(", ");
    let auth = spec.endpoint.bearer.as_deref().map_or_else(
        || "-- no Authorization header".to_string(),
        |t| {
            format!(
                r#"wrk.headers["Authorization"] = {}"#,
                lua_str(&format!("Bearer {t}"))
            )
        },
    );
    let stateless = spec.sessions.is_empty();
    let stateless_headers = if stateless {
        format!(
            "wrk.headers[\"Mcp-Method\"] = \"tools/call\"\nwrk.headers[\"Mcp-Name\"] = {}",
            lua_str(TOOL)
        )
    } else {
        "-- in a session: no Mcp-Method or Mcp-Name headers".to_string()
    };
    let (head, tail) = {
        let body = call_body("\u{0}", stateless);
        let (h, t) = body.split_once('\u{0}').unwrap_or((&body, ""));
        (lua_str(h), lua_str(t))
    };
    format!(
        r#"-- Generated by mcp-bench (the wrk reference): tools/call on MCP sessions opened beforehand.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = {version}
{auth}
{stateless_headers}

local sessions = {{ {sessions} }}
local nthreads = {threads}
local id_base = {id_base}
local body_head = {head}
local body_tail = {tail}
wrk.headers["Mcp-Session-Id"] = sessions[1]
wrk.body = body_head .. string.format("%.0f", id_base) .. body_tail

-- Per thread (each wrk thread has its own Lua state): its index, set by setup(), its
-- sessions, and its counts, read back by done().
tid = 0
bad_status = 0
bad_body = 0
content_type = ""
first_bad = ""
local mine = {{}}
local n = 0

local threads = {{}}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  for i, s in ipairs(sessions) do
    if (i - 1) % nthreads == tid then table.insert(mine, s) end
  end
  if #mine == 0 then mine = sessions end
end

function request()
  n = n + 1
  if #mine > 0 then wrk.headers["Mcp-Session-Id"] = mine[(n % #mine) + 1] end
  local id = string.format("%.0f", id_base + n * nthreads + tid)
  return wrk.format(nil, nil, nil, body_head .. id .. body_tail)
end

local function clean(s)
  return (string.gsub(string.sub(s or "", 1, 200), '[%c"\\]', " "))
end

function response(status, headers, body)
  content_type = headers["content-type"] or headers["Content-Type"] or ""
  if status ~= 200 then
    bad_status = bad_status + 1
    if first_bad == "" then first_bad = "HTTP " .. status .. ": " .. clean(body) end
  elseif not string.find(body, '"result"', 1, true) or string.find(body, '"isError":true', 1, true) then
    bad_body = bad_body + 1
    if first_bad == "" then first_bad = clean(body) end
  end
end

function done(summary, latency, requests)
  local bs, bb, ct, fb = 0, 0, "", ""
  for _, t in ipairs(threads) do
    bs = bs + t:get("bad_status")
    bb = bb + t:get("bad_body")
    if ct == "" then ct = t:get("content_type") end
    if fb == "" then fb = t:get("first_bad") end
  end
  local e = summary.errors
  io.write(string.format(
    'MCPBENCH {{"requests":%.0f,"duration_us":%.0f,"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f,' ..
    '"bad_status":%.0f,"bad_body":%.0f,"p50_us":%.1f,"p99_us":%.1f,"mean_us":%.1f,"content_type":"%s","first_bad":"%s"}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    bs, bb, latency:percentile(50), latency:percentile(99), latency.mean, clean(ct), fb))
end
"#,
        version = lua_str(spec.protocol_version),
        threads = spec.threads,
        id_base = spec.id_base,
    )
}

/// What `done` reports.
#[derive(Debug, Deserialize)]
struct WrkOutput {
    requests: u64,
    duration_us: f64,
    connect: u64,
    read: u64,
    write: u64,
    /// wrk's own count of non-2xx/3xx answers (also in `bad_status`).
    #[allow(dead_code)]
    status: u64,
    timeout: u64,
    bad_status: u64,
    bad_body: u64,
    p50_us: f64,
    p99_us: f64,
    mean_us: f64,
    content_type: String,
    first_bad: String,
}

/// Runs wrk once (bounded: killed 30 s past its duration) and reads the script's line.
async fn run_wrk(
    wrk: &Path,
    script: &Path,
    url: &str,
    threads: u32,
    connections: u32,
    secs: u64,
) -> Result<WrkOutput> {
    let mut cmd = tokio::process::Command::new(wrk);
    cmd.args([
        format!("-t{threads}"),
        format!("-c{connections}"),
        format!("-d{secs}s"),
        "--latency".into(),
        "--timeout".into(),
        "5s".into(),
        "-s".into(),
    ])
    .arg(script)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", wrk.display()))?;
    let limit = Duration::from_secs(secs + 30);
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .with_context(|| format!("wrk did not finish within {} s", limit.as_secs()))?
        .context("waiting for wrk")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("MCPBENCH "))
        .with_context(|| {
            format!(
                "wrk ({}) printed no MCPBENCH line; stdout:\n{stdout}\nstderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    serde_json::from_str(line).with_context(|| format!("reading wrk's figures: {line}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_switches_are_summed() {
        let status = "Name:\tx\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(
            parse_ctx_switches(status),
            Switches {
                all: 127,
                involuntary: 7
            }
        );
        assert!(ctx_switches(std::process::id()).expect("own threads").all > 0);
    }

    #[test]
    fn lua_strings_are_escaped() {
        assert_eq!(lua_str(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(lua_str("x\ny"), r#""x\010y""#);
    }

    #[test]
    fn the_script_carries_sessions_token_and_body() {
        let endpoint = Endpoint {
            url: "http://127.0.0.1:1/mcp".into(),
            bearer: Some("tok".into()),
        };
        let sessions = vec!["s-1".to_string(), "s-2".to_string()];
        let text = lua_script(&LuaSpec {
            endpoint: &endpoint,
            protocol_version: PROTOCOL_VERSION,
            sessions: &sessions,
            threads: 2,
            id_base: 7_000_000_000,
        });
        assert!(
            text.contains(r#"local sessions = { "s-1", "s-2" }"#),
            "{text}"
        );
        assert!(text.contains(r#"wrk.headers["Authorization"] = "Bearer tok""#));
        assert!(text.contains(r#"wrk.headers["MCP-Protocol-Version"] = "2025-11-25""#));
        assert!(text.contains(r#"local body_head = "{\"jsonrpc\":\"2.0\",\"id\":""#));
        // The body the script builds is the JSON-RPC call.
        let v: serde_json::Value =
            serde_json::from_str(&call_body("7000000001", false)).expect("JSON");
        assert_eq!(v["params"]["name"], TOOL);
        assert_eq!(v["id"], 7_000_000_001u64);
        assert!(!text.contains(r#"wrk.headers["Mcp-Method"]"#), "{text}");

        // Stateless: no session, the revision's headers, its metadata in the body.
        let text = lua_script(&LuaSpec {
            endpoint: &endpoint,
            protocol_version: STATELESS_VERSION,
            sessions: &[],
            threads: 2,
            id_base: 7_000_000_000,
        });
        assert!(text.contains("local sessions = {  }"), "{text}");
        assert!(text.contains(r#"wrk.headers["Mcp-Method"] = "tools/call""#));
        assert!(text.contains(r#"wrk.headers["Mcp-Name"] = "getProductById""#));
        assert!(text.contains(r#"wrk.headers["MCP-Protocol-Version"] = "2026-07-28""#));
        let v: serde_json::Value = serde_json::from_str(&call_body("8", true)).expect("JSON");
        assert_eq!(
            v["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
            STATELESS_VERSION
        );
        assert_eq!(v["params"]["arguments"]["id"], "123");
    }

    /// The script against a server that answers in turn a result, a JSON-RPC error and
    /// a 404: wrk must count the last two as errors, send a fresh id every time and use
    /// every session. Skipped (with a message) where wrk is not installed.
    #[tokio::test]
    async fn the_script_counts_bad_answers_and_varies_ids_and_sessions() {
        use std::sync::{Arc, Mutex};

        use axum::{Router, http::HeaderMap, http::StatusCode, routing::post};

        let Some(wrk) = locate() else {
            eprintln!("wrk is not installed: skipped");
            return;
        };
        let seen: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
        let log = Arc::clone(&seen);
        let app = Router::new().route(
            "/mcp",
            post(move |headers: HeaderMap, body: String| {
                let log = Arc::clone(&log);
                async move {
                    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
                    let id = v["id"].as_u64().expect("numeric id");
                    let session = headers
                        .get("mcp-session-id")
                        .and_then(|s| s.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    assert_eq!(
                        headers.get("authorization").and_then(|s| s.to_str().ok()),
                        Some("Bearer tok")
                    );
                    let n = {
                        let mut log = log.lock().expect("lock");
                        log.push((session, id));
                        log.len()
                    };
                    let json = [(CONTENT_TYPE, "application/json")];
                    match n % 3 {
                        0 => (
                            StatusCode::OK,
                            json,
                            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
                        ),
                        1 => (
                            StatusCode::OK,
                            json,
                            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"x"}}"#,
                        ),
                        _ => (StatusCode::NOT_FOUND, json, r#"{"error":"no session"}"#),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("t.lua");
        let endpoint = Endpoint {
            url: url.clone(),
            bearer: Some("tok".into()),
        };
        let sessions = vec!["s-1".to_string(), "s-2".to_string(), "s-3".to_string()];
        let text = lua_script(&LuaSpec {
            endpoint: &endpoint,
            protocol_version: PROTOCOL_VERSION,
            sessions: &sessions,
            threads: 1,
            id_base: 5_000_000_000,
        });
        std::fs::write(&script, text).expect("script");
        let out = run_wrk(&wrk, &script, &url, 1, 2, 1)
            .await
            .expect("wrk ran");
        server.abort();
        let run = to_run(&out, 2, 1, &[], &[], &[]);
        assert!(out.requests >= 6, "{out:?}");
        assert!(out.bad_status > 0 && out.bad_body > 0, "{out:?}");
        // Two answers in three are bad (give or take the turn the run ended on).
        let bad = out.bad_status + out.bad_body;
        assert!(bad.abs_diff(out.requests * 2 / 3) <= 2, "{out:?}");
        assert_eq!(
            run.errors,
            out.bad_status + out.bad_body,
            "{:?}",
            run.error_detail
        );
        assert_eq!(out.content_type, "application/json");
        let seen = seen.lock().expect("lock");
        let ids: std::collections::HashSet<u64> = seen.iter().map(|(_, id)| *id).collect();
        assert_eq!(ids.len(), seen.len(), "an id was sent twice");
        assert!(ids.iter().all(|id| *id > 5_000_000_000));
        let used: std::collections::HashSet<&str> = seen.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(used.len(), 3, "sessions used: {used:?}");
    }

    #[test]
    fn stuck_connections_are_errors() {
        let out = |requests, mean_us| WrkOutput {
            requests,
            duration_us: 1e6,
            connect: 0,
            read: 0,
            write: 0,
            status: 0,
            timeout: 0,
            bad_status: 0,
            bad_body: 0,
            p50_us: 500.0,
            p99_us: 900.0,
            mean_us,
            content_type: "application/json".into(),
            first_bad: String::new(),
        };
        let roles = [("gateway", 1)];
        let s = [(procs::Cpu::default(), Switches::default())];
        let e = [(
            procs::Cpu {
                user: Duration::from_millis(60),
                system: Duration::from_millis(40),
            },
            Switches {
                all: 2000,
                involuntary: 500,
            },
        )];
        // 16 connections busy: 32,000/s at 500 µs.
        let ok = to_run(&out(32_000, 500.0), 16, 2, &roles, &s, &e);
        assert_eq!(ok.errors, 0, "{:?}", ok.error_detail);
        assert!((ok.cpu_us_per_call["gateway"] - 3.125).abs() < 1e-9);
        assert!((ok.system_us_per_call["gateway"] - 1.25).abs() < 1e-9);
        assert!((ok.ctx_switches_per_call["gateway"] - 0.0625).abs() < 1e-9);
        assert!((ok.involuntary_per_call["gateway"] - 0.015625).abs() < 1e-9);
        // One connection's worth of work from 16: the rest were stuck.
        let stuck = to_run(&out(2_000, 500.0), 16, 2, &roles, &s, &e);
        assert_eq!(stuck.errors, 1);
        assert!(stuck.error_detail.expect("detail").contains("stuck"));
    }
}
