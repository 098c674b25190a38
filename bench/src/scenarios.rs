//! The benchmark: starts the backend, fixtures and gateways as child processes, runs
//! every scenario direct and through the gateway side by side, and reports the rows.
//!
//! Processes (all on 127.0.0.1, ports picked by binding :0):
//! - shopping-service (session mode, the gateway's upstream and the direct target of
//!   session-mode calls) plus the same shop handler in stateless JSON mode on a second
//!   port (the direct target of sessionless calls);
//! - the main gateway, with shopping-service registered: latency, throughput, set-up;
//! - a fixtures process (100 MCP servers of 20 tools each) and a second gateway they are
//!   registered with in steps of 1, 10 and 100: `tools/list` and routing cost;
//! - a third gateway for memory: RSS idle and with many open idle sessions;
//! - with valgrind and not `--quick`: gateway and backend under callgrind.
//!
//! The wrk reference (`wrk.rs`) measures the main gateway and shopping-service again
//! with `wrk` instead of the project's own client, in a section of its own.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::{
    callgrind,
    client::{self, Call, Endpoint, McpClient, Mode},
    load::{self, Concurrent, Stats},
    procs::{self, ChildGuard, Spawn},
    report::{self, Row, Target, Unit},
    wrk,
};

/// The gateway's default token, used for every registration and MCP request to it.
const TOKEN: &str = "mcp-token-123";
/// The token shopping-service requires on `/mcp`: sent by the direct calls, and given
/// to the gateway at registration, which presents it; both paths pay for the check.
const SHOP_TOKEN: &str = "bench-shopping-service-token";
/// Fixture upstreams in the largest `tools/list` step, and tools per fixture.
const FIXTURES: usize = 100;
const FIXTURE_TOOLS: usize = 20;
/// Concurrent workers opening or closing sessions.
const OPENERS: usize = 16;

pub struct Options {
    pub quick: bool,
    pub out: PathBuf,
    pub callgrind: bool,
    /// Groups to run; empty: all.
    pub only: Vec<Group>,
    /// Durations of the wrk runs.
    pub wrk: wrk::Params,
    /// Fail when wrk is missing and cannot be installed (`mcp-bench wrk`), instead of
    /// skipping its section with a note (`mcp-bench run`).
    pub require_wrk: bool,
}

/// Scenario groups, for `--only`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Group {
    /// Sequential tools/call latency, session and sessionless.
    Latency,
    /// Concurrent throughput (16 and 64 clients) and CPU per call.
    Throughput,
    /// Session set-up rate.
    Setup,
    /// tools/list with 1, 10, 100 upstreams; routing cost with 100.
    Catalog,
    /// Gateway RSS idle, with idle sessions, after closing them.
    Memory,
    /// Instructions per call under callgrind.
    Callgrind,
    /// The wrk reference: latency, throughput, CPU and context switches per call with
    /// wrk as the client, plain and capable sessions.
    Wrk,
}

impl Options {
    fn wants(&self, group: Group) -> bool {
        self.only.is_empty() || self.only.contains(&group)
    }
}

/// Sizes of a run: a full run or a brief `--quick` one.
struct Params {
    seq_warmup: u64,
    seq_calls: u64,
    tp_warmup: Duration,
    tp_measure: Duration,
    list_calls: u64,
    route_calls: u64,
    setup_sessions: u64,
    setup_limit: Duration,
    idle_steps: [usize; 2],
    /// Sessions opened holding rmcp's copy (about 95 KiB each).
    held_sessions: usize,
    settle: Duration,
    callgrind_calls: [u64; 2],
}

impl Params {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                seq_warmup: 20,
                seq_calls: 200,
                tp_warmup: Duration::from_millis(200),
                tp_measure: Duration::from_secs(1),
                list_calls: 20,
                route_calls: 100,
                setup_sessions: 100,
                setup_limit: Duration::from_secs(2),
                idle_steps: [100, 200],
                held_sessions: 100,
                settle: Duration::from_millis(300),
                callgrind_calls: [0, 0],
            }
        } else {
            Self {
                seq_warmup: 500,
                seq_calls: 5_000,
                tp_warmup: Duration::from_secs(2),
                tp_measure: Duration::from_secs(10),
                list_calls: 500,
                route_calls: 3_000,
                setup_sessions: 5_000,
                setup_limit: Duration::from_secs(5),
                idle_steps: [1_000, 10_000],
                held_sessions: 2_000,
                settle: Duration::from_secs(1),
                callgrind_calls: [500, 1_500],
            }
        }
    }
}

/// Upper bound for any one sequential loop.
const LOOP_LIMIT: Duration = Duration::from_secs(120);

fn progress(what: &str) {
    eprintln!("mcp-bench: {what}");
}

pub async fn run(opts: Options) -> Result<()> {
    let load_at_start = report::load_average();
    let p = Params::new(opts.quick);
    let dir = tempfile::Builder::new()
        .prefix("mcp-bench-")
        .tempdir()
        .context("creating a temp directory for stores and logs")?;
    let http = client::http_client(128)?;
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut sections = Vec::new();
    let mut data = serde_json::Map::new();

    progress("starting shopping-service and the gateway");
    let shop = Shop::start(dir.path(), true, None).await?;
    let gw = Gateway::start(dir.path(), "gateway-main", Vec::new(), None).await?;
    gw.register_shop(&http, &shop.session_url).await?;
    let direct = |mode| Endpoint {
        url: match mode {
            Mode::Session | Mode::Capable => shop.session_url.clone(),
            Mode::Sessionless => shop.stateless_url.clone(),
        },
        bearer: Some(SHOP_TOKEN.into()),
    };
    let via = gw.endpoint();
    let call = Call::tool("getProductById", r#"{"id":"123"}"#);

    for (mode, label) in [
        (Mode::Session, "session"),
        (Mode::Sessionless, "sessionless"),
    ] {
        if !opts.wants(Group::Latency) {
            break;
        }
        progress(&format!("sequential tools/call, {label} mode"));
        let (d, v) = sequential_pair(&http, &direct(mode), &via, mode, &call, &p).await?;
        for (q, name, target) in [
            (0.5, "p50", Target::RatioAtMost(2.0)),
            (0.9, "p90", Target::None),
            (0.99, "p99", Target::RatioAtMost(2.5)),
        ] {
            rows.push(Row {
                scenario: format!("tools/call sequential {name} ({label}, 1 client)"),
                direct: Some(d.quantile_us(q)),
                via: v.quantile_us(q),
                unit: Unit::Micros,
                target,
                errors: d.errors + v.errors,
            });
        }
        note_errors(&mut notes, &format!("sequential {label} direct"), &d);
        note_errors(&mut notes, &format!("sequential {label} via gateway"), &v);
    }

    for clients in [16, 64] {
        if !opts.wants(Group::Throughput) {
            break;
        }
        progress(&format!("throughput, {clients} concurrent clients"));
        let how = Concurrent {
            mode: Mode::Session,
            clients,
            warmup: p.tp_warmup,
            measure: p.tp_measure,
            max_calls_per_client: 10_000_000,
            cpu_of: vec![shop.guard.pid()],
        };
        let d = load::concurrent(&http, &direct(Mode::Session), &call, &how).await?;
        let how = Concurrent {
            cpu_of: vec![gw.guard.pid(), shop.guard.pid()],
            ..how
        };
        let v = load::concurrent(&http, &via, &call, &how).await?;
        let per_call = |cpu: Duration, calls: u64| cpu.as_secs_f64() * 1e6 / calls.max(1) as f64;
        let backend_direct = per_call(d.cpu[0], d.ok);
        let gateway = per_call(v.cpu[0], v.ok);
        let backend_via = per_call(v.cpu[1], v.ok);
        notes.push(format!(
            "{clients} clients: CPU per call: backend {backend_direct:.1} µs direct, \
             {backend_via:.1} µs behind the gateway; gateway {gateway:.1} µs"
        ));
        rows.push(Row {
            scenario: format!("tools/call throughput ({clients} clients, session each)"),
            direct: Some(d.per_second()),
            via: v.per_second(),
            unit: Unit::PerSecond,
            target: Target::RatioAtLeast(0.5),
            errors: d.errors + v.errors,
        });
        rows.push(Row {
            scenario: format!("tools/call p99 under load ({clients} clients)"),
            direct: Some(d.quantile_us(0.99)),
            via: v.quantile_us(0.99),
            unit: Unit::Micros,
            target: Target::None,
            errors: d.errors + v.errors,
        });
        rows.push(Row {
            scenario: format!(
                "CPU per call under load ({clients} clients): backend process vs gateway process"
            ),
            direct: Some(backend_direct),
            via: gateway,
            unit: Unit::Micros,
            target: Target::None,
            errors: d.errors + v.errors,
        });
        note_errors(&mut notes, &format!("{clients} clients direct"), &d);
        note_errors(&mut notes, &format!("{clients} clients via gateway"), &v);
    }

    if opts.wants(Group::Setup) {
        progress("session set-up rate");
        rows.push(setup_scenario(&http, &direct(Mode::Session), &via, &p, &mut notes).await?);
    }
    if opts.wants(Group::Wrk) {
        progress("wrk reference: plain and capable sessions, direct and through the gateway");
        let section = match wrk::locate_or_install().await {
            Ok(path) => {
                let direct_side = wrk::Side {
                    name: "direct",
                    endpoint: direct(Mode::Session),
                    procs: vec![("backend", shop.guard.pid())],
                };
                let gateway_side = wrk::Side {
                    name: "gateway",
                    endpoint: via.clone(),
                    procs: vec![("gateway", gw.guard.pid()), ("backend", shop.guard.pid())],
                };
                wrk::measure(
                    &path,
                    &http,
                    direct_side,
                    gateway_side,
                    opts.wrk,
                    dir.path(),
                )
                .await
                .context("the wrk reference")?
            }
            Err(reason) if opts.require_wrk => bail!("{reason}"),
            Err(reason) => {
                progress(&format!("wrk reference skipped: {reason}"));
                wrk::Section::skipped(reason)
            }
        };
        sections.push(section.to_report());
        data.insert(
            "wrk".into(),
            serde_json::to_value(&section).context("the wrk figures as JSON")?,
        );
    }
    drop(gw);

    if opts.wants(Group::Catalog) {
        progress(&format!(
            "tools/list with 1, 10 and {FIXTURES} upstreams of {FIXTURE_TOOLS} tools"
        ));
        rows.extend(catalog_scenarios(dir.path(), &http, &p, &mut notes).await?);
    }

    if opts.wants(Group::Memory) {
        progress("gateway memory with idle sessions");
        rows.extend(memory_scenarios(dir.path(), &http, &shop.session_url, &p, &mut notes).await?);
    }

    if !opts.wants(Group::Callgrind) {
        // not asked for
    } else if opts.quick {
        notes.push("callgrind instruction counts are skipped in --quick runs.".into());
    } else if !opts.callgrind {
        notes.push("callgrind instruction counts skipped (--no-callgrind).".into());
    } else if !procs::on_path("valgrind") {
        notes.push(
            "callgrind instruction counts skipped: valgrind is not installed (apt-get install valgrind)."
                .into(),
        );
    } else {
        progress("instructions per call under callgrind (takes a few minutes)");
        let cg_dir = out_dir(&opts.out).join("callgrind");
        std::fs::create_dir_all(&cg_dir)
            .with_context(|| format!("creating {}", cg_dir.display()))?;
        let (more_rows, more) =
            callgrind_scenario(dir.path(), &cg_dir, &shop.session_url, &p).await?;
        rows.extend(more_rows);
        notes.extend(more);
    }
    drop(shop);

    let header = report::Header {
        quick: opts.quick,
        load_at_start,
        notes,
    };
    let text = report::render(&header, &rows, &sections);
    let json = report::render_json(&header, &rows, &sections, data);
    println!("{text}");
    let (md_path, json_path) = out_paths(&opts.out);
    let parent = out_dir(&md_path);
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    std::fs::write(&md_path, &text).with_context(|| format!("writing {}", md_path.display()))?;
    std::fs::write(&json_path, &json)
        .with_context(|| format!("writing {}", json_path.display()))?;
    progress(&format!(
        "results written to {} and {}",
        md_path.display(),
        json_path.display()
    ));
    Ok(())
}

/// Where the markdown and the JSON results go: `--out` and the same path with the
/// extension `.json`; when `--out` itself ends in `.json`, the markdown goes beside it
/// with the extension `.md`.
fn out_paths(out: &Path) -> (PathBuf, PathBuf) {
    if out.extension().is_some_and(|e| e == "json") {
        (out.with_extension("md"), out.to_path_buf())
    } else {
        (out.to_path_buf(), out.with_extension("json"))
    }
}

/// What `mcp-bench load` drives.
pub struct LoadOptions {
    pub url: String,
    pub calls: u64,
    pub clients: u64,
    pub tool: String,
    pub arguments: String,
    pub sessionless: bool,
    pub token: String,
}

/// `mcp-bench load`: a fixed number of calls on an endpoint started elsewhere.
pub async fn load_command(o: LoadOptions) -> Result<()> {
    let clients = o.clients.clamp(1, 1024);
    // Idle connections kept for more than one per client: a pooled connection whose SSE
    // answer just ended may not be back in the pool for the next request yet.
    let http = client::http_client(clients as usize * 2 + 16)?;
    let endpoint = Endpoint {
        url: o.url.clone(),
        bearer: Some(o.token.clone()),
    };
    let mode = if o.sessionless {
        Mode::Sessionless
    } else {
        Mode::Session
    };
    let call = Call::tool(&o.tool, &o.arguments);
    let opened = load::open_clients(&http, &endpoint, mode, clients as usize, 16).await?;
    let per_client = o.calls / clients;
    let start = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut c in opened {
        let call = call.clone();
        tasks.spawn(async move {
            let stats = load::sequential(&mut c, &call, 0, per_client, LOOP_LIMIT).await;
            (stats, c)
        });
    }
    let mut total = Stats::new();
    let mut done = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (stats, c) = joined.context("a load task panicked")?;
        total.merge(stats);
        done.push(c);
    }
    total.window = start.elapsed();
    let close_errors = load::close_all(done, 16).await;
    println!(
        "{} calls ({} errors{}) by {clients} clients in {:.2} s: {:.0}/s, p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs",
        total.ok,
        total.errors + close_errors,
        total
            .first_error
            .as_deref()
            .map(|e| format!(", first: {e}"))
            .unwrap_or_default(),
        total.window.as_secs_f64(),
        total.per_second(),
        total.quantile_us(0.5),
        total.quantile_us(0.9),
        total.quantile_us(0.99),
    );
    if total.errors + close_errors > 0 {
        bail!("{} calls failed", total.errors + close_errors);
    }
    Ok(())
}

fn out_dir(out: &Path) -> PathBuf {
    match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn note_errors(notes: &mut Vec<String>, what: &str, stats: &Stats) {
    if let Some(e) = &stats.first_error {
        notes.push(format!("{what}: {} errors, first: {e}", stats.errors));
    }
}

/// Session set-up rate, direct and via the gateway; the sessions are closed after.
async fn setup_scenario(
    http: &reqwest::Client,
    direct: &Endpoint,
    via: &Endpoint,
    p: &Params,
    notes: &mut Vec<String>,
) -> Result<Row> {
    let mut setup = Vec::new();
    for endpoint in [direct, via] {
        let (stats, open) =
            load::session_setup(http, endpoint, 8, p.setup_sessions, p.setup_limit).await?;
        let close_errors = load::close_all(open, OPENERS).await;
        setup.push((stats, close_errors));
    }
    note_errors(notes, "session set-up direct", &setup[0].0);
    note_errors(notes, "session set-up via gateway", &setup[1].0);
    Ok(Row {
        scenario: "session set-up rate (initialize + initialized, 8 clients)".into(),
        direct: Some(setup[0].0.per_second()),
        via: setup[1].0.per_second(),
        unit: Unit::PerSecond,
        target: Target::None,
        errors: setup.iter().map(|(s, c)| s.errors + c).sum(),
    })
}

/// Sequential loops on one client each, direct and via the gateway, interleaved in two
/// halves (direct, via, direct, via) so slow drift of the machine hits both alike.
async fn sequential_pair(
    http: &reqwest::Client,
    direct: &Endpoint,
    via: &Endpoint,
    mode: Mode,
    call: &Call,
    p: &Params,
) -> Result<(Stats, Stats)> {
    let mut d_client = McpClient::connect(http, direct, mode)
        .await
        .context("connecting directly")?;
    let mut v_client = McpClient::connect(http, via, mode)
        .await
        .context("connecting through the gateway")?;
    let mut d = Stats::new();
    let mut v = Stats::new();
    let half = p.seq_calls / 2;
    for _ in 0..2 {
        d.merge(load::sequential(&mut d_client, call, p.seq_warmup, half, LOOP_LIMIT).await);
        v.merge(load::sequential(&mut v_client, call, p.seq_warmup, half, LOOP_LIMIT).await);
    }
    for c in [d_client, v_client] {
        c.close().await.context("closing a sequential client")?;
    }
    Ok((d, v))
}

/// Sequential p50 of `call` on a fresh session at `endpoint`.
async fn p50_of(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    call: &Call,
    warmup: u64,
    calls: u64,
) -> Result<Stats> {
    let mut client = McpClient::connect(http, endpoint, Mode::Session).await?;
    let stats = load::sequential(&mut client, call, warmup, calls, LOOP_LIMIT).await;
    client.close().await?;
    Ok(stats)
}

/// `tools/list` through a gateway with 1, 10 and 100 fixture upstreams (20 tools each),
/// and the cost of routing one call with 1 and with 100 upstreams registered.
async fn catalog_scenarios(
    dir: &Path,
    http: &reqwest::Client,
    p: &Params,
    notes: &mut Vec<String>,
) -> Result<Vec<Row>> {
    let addrs = procs::free_addrs(FIXTURES)?;
    let mut args = vec![
        "serve-fixture".to_string(),
        "--tools".into(),
        FIXTURE_TOOLS.to_string(),
        "--name".into(),
        "fx".into(),
    ];
    for a in &addrs {
        args.extend(["--listen".to_string(), a.clone()]);
    }
    let mut fixtures = ChildGuard::spawn(Spawn {
        name: "fixtures",
        args,
        env: Vec::new(),
        log: dir.join("fixtures.log"),
        valgrind: None,
    })?;
    for a in &addrs {
        fixtures
            .wait_healthy(&format!("http://{a}"), Duration::from_secs(30))
            .await?;
    }
    // One server offering as many tools as all fixtures together: the cost of the
    // payload alone, without a gateway.
    let big_addr = procs::free_addrs(1)?.remove(0);
    let mut big = ChildGuard::spawn(Spawn {
        name: "big fixture",
        args: vec![
            "serve-fixture".into(),
            "--tools".into(),
            (FIXTURES * FIXTURE_TOOLS).to_string(),
            "--name".into(),
            "big".into(),
            "--listen".into(),
            big_addr.clone(),
        ],
        env: Vec::new(),
        log: dir.join("big-fixture.log"),
        valgrind: None,
    })?;
    big.wait_healthy(&format!("http://{big_addr}"), Duration::from_secs(30))
        .await?;
    let gw = Gateway::start(dir, "gateway-catalog", Vec::new(), None).await?;
    let via = gw.endpoint();
    let fixture_url = |i: usize| format!("http://{}/mcp", addrs[i]);
    let route = Call::tool(
        &crate::roles::fixture_tool_name("fx-1", 0),
        r#"{"id":"123"}"#,
    );
    let list = |n: usize, all_pages: bool| Call::List {
        expect_tools: n * FIXTURE_TOOLS,
        all_pages,
    };
    let warm = p.list_calls / 10 + 1;

    let mut registered = 0;
    // (one request p50, all pages p50, errors) per step.
    let mut base = (0.0, 0.0, 0);
    let mut rows = Vec::new();
    let mut route_at_1 = None;
    for step in [1, 10, FIXTURES] {
        while registered < step {
            gw.register(
                http,
                &format!("fx-{}", registered + 1),
                &fixture_url(registered),
                None,
            )
            .await?;
            registered += 1;
        }
        let tools = step * FIXTURE_TOOLS;
        let one = p50_of(http, &via, &list(step, false), warm, p.list_calls).await?;
        let all = p50_of(http, &via, &list(step, true), warm, p.list_calls).await?;
        note_errors(notes, &format!("tools/list with {step} upstreams"), &one);
        note_errors(
            notes,
            &format!("tools/list, all pages, with {step} upstreams"),
            &all,
        );
        let (one_p50, all_p50) = (one.quantile_us(0.5), all.quantile_us(0.5));
        if step == 1 {
            let direct = Endpoint {
                url: fixture_url(0),
                bearer: Some(TOKEN.into()),
            };
            let d = p50_of(http, &direct, &list(1, true), warm, p.list_calls).await?;
            note_errors(notes, "tools/list direct", &d);
            rows.push(Row {
                scenario: format!("tools/list p50, 1 upstream ({FIXTURE_TOOLS} tools)"),
                direct: Some(d.quantile_us(0.5)),
                via: one_p50,
                unit: Unit::Micros,
                target: Target::None,
                errors: d.errors + one.errors,
            });
            route_at_1 = Some(p50_of(http, &via, &route, p.seq_warmup, p.route_calls).await?);
            base = (one_p50, all_p50, one.errors + all.errors);
            continue;
        }
        rows.push(Row {
            scenario: format!(
                "tools/list p50, one request, {step} upstreams ({tools} tools) vs 1 upstream via gateway"
            ),
            direct: Some(base.0),
            via: one_p50,
            unit: Unit::Micros,
            target: if step == FIXTURES {
                Target::RatioAtMost(1.5)
            } else {
                Target::None
            },
            errors: base.2 + one.errors,
        });
        rows.push(Row {
            scenario: format!(
                "tools/list p50, all pages, {step} upstreams ({tools} tools) vs 1 upstream via gateway"
            ),
            direct: Some(base.1),
            via: all_p50,
            unit: Unit::Micros,
            target: Target::None,
            errors: base.2 + all.errors,
        });
        if step == FIXTURES {
            let direct = Endpoint {
                url: format!("http://{big_addr}/mcp"),
                bearer: Some(TOKEN.into()),
            };
            let d = p50_of(http, &direct, &list(FIXTURES, true), warm, p.list_calls).await?;
            note_errors(notes, "tools/list direct from one big server", &d);
            rows.push(Row {
                scenario: format!(
                    "tools/list p50, all pages, {tools} tools: one server direct vs {FIXTURES} upstreams via gateway"
                ),
                direct: Some(d.quantile_us(0.5)),
                via: all_p50,
                unit: Unit::Micros,
                target: Target::None,
                errors: d.errors + all.errors,
            });
        }
    }
    let at_1 = route_at_1.context("the 1-upstream step ran")?;
    let at_100 = p50_of(http, &via, &route, p.seq_warmup, p.route_calls).await?;
    note_errors(notes, "routing with 1 upstream", &at_1);
    note_errors(
        notes,
        &format!("routing with {FIXTURES} upstreams"),
        &at_100,
    );
    rows.push(Row {
        scenario: format!(
            "tools/call p50 via gateway, {FIXTURES} upstreams ({} tools) vs 1 upstream",
            FIXTURES * FIXTURE_TOOLS
        ),
        direct: Some(at_1.quantile_us(0.5)),
        via: at_100.quantile_us(0.5),
        unit: Unit::Micros,
        target: Target::RatioAtMost(1.1),
        errors: at_1.errors + at_100.errors,
    });
    drop(gw);
    drop(fixtures);
    drop(big);
    Ok(rows)
}

/// Gateway RSS idle, with many open idle sessions, and after closing them (twice, to
/// tell allocator retention from a leak).
async fn memory_scenarios(
    dir: &Path,
    http: &reqwest::Client,
    shop_url: &str,
    p: &Params,
    notes: &mut Vec<String>,
) -> Result<Vec<Row>> {
    let gw = Gateway::start(dir, "gateway-memory", Vec::new(), None).await?;
    gw.register_shop(http, shop_url).await?;
    let via = gw.endpoint();
    let call = Call::tool("getProductById", r#"{"id":"123"}"#);
    // Warm: the upstream session, connection pools and allocator arenas in use.
    let warm = p50_of(http, &via, &call, 0, p.seq_warmup.max(100)).await?;
    note_errors(notes, "memory warm-up calls", &warm);
    let mib = |kib: u64| kib as f64 / 1024.0;
    let rss = |gw: &Gateway| -> Result<u64> { gw.guard.rss_kib() };

    tokio::time::sleep(p.settle).await;
    let idle = rss(&gw)?;
    let [small, large] = p.idle_steps;
    let mut open = load::open_clients(http, &via, Mode::Session, small, OPENERS).await?;
    tokio::time::sleep(p.settle).await;
    let at_small = rss(&gw)?;
    open.extend(load::open_clients(http, &via, Mode::Session, large - small, OPENERS).await?);
    tokio::time::sleep(p.settle).await;
    let at_large = rss(&gw)?;
    let mut close_errors = load::close_all(open, OPENERS).await;
    tokio::time::sleep(p.settle).await;
    let closed_1 = rss(&gw)?;
    // Second cycle: a leak grows again, allocator retention does not.
    let again = load::open_clients(http, &via, Mode::Session, large, OPENERS).await?;
    close_errors += load::close_all(again, OPENERS).await;
    tokio::time::sleep(p.settle).await;
    let closed_2 = rss(&gw)?;
    if close_errors > 0 {
        notes.push(format!(
            "memory: {close_errors} session DELETEs failed (sessions may linger)"
        ));
    }
    // Sessions holding rmcp's copy (the SDKs' clients, which open a GET stream at once;
    // here a `ping` restores the copy): what they cost, and whether it comes back.
    let held_n = p.held_sessions;
    let held = load::open_clients_then(http, &via, Call::Ping, held_n, OPENERS).await?;
    tokio::time::sleep(p.settle).await;
    let at_held = rss(&gw)?;
    close_errors += load::close_all(held, OPENERS).await;
    tokio::time::sleep(p.settle).await;
    let closed_held = rss(&gw)?;
    let per_held = at_held.saturating_sub(closed_2) as f64 / held_n as f64;
    let per_session = at_large.saturating_sub(idle) as f64 / large as f64;
    let growth_per_session = closed_2.saturating_sub(closed_1) as f64 * 1024.0 / large as f64;
    notes.push(format!(
        "memory: RSS idle {:.1} MiB, {small} sessions {:.1} MiB, {large} sessions {:.1} MiB, \
         after closing {:.1} MiB, after a second open/close cycle of {large} {:.1} MiB \
         ({growth_per_session:.0} bytes per session per cycle); {held_n} sessions \
         holding rmcp's copy {:.1} MiB, after closing them {:.1} MiB",
        mib(idle),
        mib(at_small),
        mib(at_large),
        mib(closed_1),
        mib(closed_2),
        mib(at_held),
        mib(closed_held)
    ));
    let rows = vec![
        Row {
            scenario: "gateway RSS idle (shopping-service registered, warmed up)".into(),
            direct: None,
            via: mib(idle),
            unit: Unit::MiB,
            target: Target::ValueAtMost(25.0),
            errors: warm.errors,
        },
        Row {
            scenario: format!("gateway RSS with {small} idle sessions vs idle"),
            direct: Some(mib(idle)),
            via: mib(at_small),
            unit: Unit::MiB,
            target: Target::None,
            errors: 0,
        },
        Row {
            scenario: format!("gateway RSS with {large} idle sessions vs idle"),
            direct: Some(mib(idle)),
            via: mib(at_large),
            unit: Unit::MiB,
            target: Target::None,
            errors: 0,
        },
        Row {
            scenario: format!("gateway RSS per idle session at {large}"),
            direct: None,
            via: per_session,
            unit: Unit::KiB,
            target: Target::ValueAtMost(64.0),
            errors: 0,
        },
        Row {
            scenario: format!("gateway RSS after closing the {large} sessions vs idle"),
            direct: Some(mib(idle)),
            via: mib(closed_1),
            unit: Unit::MiB,
            target: Target::RatioAtMost(1.25),
            errors: close_errors,
        },
        Row {
            scenario: format!(
                "gateway RSS after a 2nd open/close cycle of {large} vs after the 1st"
            ),
            direct: Some(mib(closed_1)),
            via: mib(closed_2),
            unit: Unit::MiB,
            target: Target::RatioAtMost(1.05),
            errors: 0,
        },
        Row {
            scenario: format!(
                "gateway RSS per session holding rmcp's copy (ping after initialize) at {held_n}"
            ),
            direct: None,
            via: per_held,
            unit: Unit::KiB,
            target: Target::None,
            errors: 0,
        },
        Row {
            scenario: format!(
                "gateway RSS after closing the {held_n} sessions holding rmcp's copy vs idle"
            ),
            direct: Some(mib(idle)),
            via: mib(closed_held),
            unit: Unit::MiB,
            target: Target::RatioAtMost(1.25),
            errors: 0,
        },
    ];
    drop(gw);
    Ok(rows)
}

/// Instructions per proxied call in the gateway process and per direct call in the
/// backend process, each from two callgrind runs of different lengths, for a plain
/// session and for a capable one ([`Mode::Capable`]).
async fn callgrind_scenario(
    dir: &Path,
    cg_dir: &Path,
    shop_url: &str,
    p: &Params,
) -> Result<(Vec<Row>, Vec<String>)> {
    let call = Call::tool("getProductById", r#"{"id":"123"}"#);
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for (mode, kind) in [(Mode::Session, "plain"), (Mode::Capable, "capable")] {
        let mut gateway = Vec::new();
        let mut backend = Vec::new();
        for n in p.callgrind_calls {
            let profile = cg_dir.join(format!("gateway-{kind}-{n}.out"));
            let mut gw = Gateway::start(
                dir,
                &format!("gateway-callgrind-{kind}-{n}"),
                // No health pings during the run: only calls should differ between runs.
                vec![("GATEWAY_HEALTH_INTERVAL_MS".into(), "3600000".into())],
                Some(callgrind::valgrind_args(&profile)),
            )
            .await?;
            // A client of its own, so its pooled connections close before the gateway stops.
            let http = client::http_client(4)?;
            gw.register_shop(&http, shop_url).await?;
            fixed_calls(&http, &gw.endpoint(), mode, &call, n).await?;
            drop(http);
            gw.guard
                .stop(Duration::from_secs(180))
                .context("stopping the gateway under callgrind")?;
            gateway.push((n, callgrind::read_total(&profile)?));

            let profile = cg_dir.join(format!("backend-{kind}-{n}.out"));
            let shop = Shop::start(dir, false, Some(callgrind::valgrind_args(&profile))).await?;
            let http = client::http_client(4)?;
            let endpoint = Endpoint {
                url: shop.session_url.clone(),
                bearer: Some(SHOP_TOKEN.into()),
            };
            fixed_calls(&http, &endpoint, mode, &call, n).await?;
            drop(http);
            let mut shop = shop;
            shop.guard
                .stop(Duration::from_secs(180))
                .context("stopping shopping-service under callgrind")?;
            backend.push((n, callgrind::read_total(&profile)?));
        }
        let gw_ir = callgrind::per_call(gateway[0], gateway[1])?;
        let be_ir = callgrind::per_call(backend[0], backend[1])?;
        notes.push(format!(
            "callgrind, {kind} sessions: gateway {:?}, backend {:?} (calls, total Ir); profiles in {}",
            gateway,
            backend,
            cg_dir.display()
        ));
        let long = cg_dir.join(format!("gateway-{kind}-{}.out", p.callgrind_calls[1]));
        for inclusive in [false, true] {
            match callgrind::annotate(&long, inclusive) {
                Ok(path) => notes.push(format!("callgrind_annotate: {}", path.display())),
                Err(e) => notes.push(format!("callgrind_annotate failed: {e:#}")),
            }
        }
        rows.push(Row {
            scenario: format!(
                "instructions per tools/call (callgrind), {kind} session: backend server side vs gateway"
            ),
            direct: Some(be_ir),
            via: gw_ir,
            unit: Unit::Instructions,
            target: Target::ValueAtMost(100_000.0),
            errors: 0,
        });
    }
    Ok((rows, notes))
}

/// Exactly `n` sequential calls on a fresh session; any failure fails the run (the
/// instruction count would be meaningless).
async fn fixed_calls(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    mode: Mode,
    call: &Call,
    n: u64,
) -> Result<()> {
    let mut client = McpClient::connect(http, endpoint, mode).await?;
    for i in 0..n {
        client
            .call(call)
            .await
            .with_context(|| format!("call {i} of {n} under callgrind"))?;
    }
    client.close().await
}

/// shopping-service in a child process.
struct Shop {
    guard: ChildGuard,
    session_url: String,
    stateless_url: String,
}

impl Shop {
    async fn start(dir: &Path, stateless: bool, valgrind: Option<Vec<String>>) -> Result<Self> {
        let addrs = procs::free_addrs(2)?;
        let mut args = vec![
            "serve-shopping".to_string(),
            "--listen".into(),
            addrs[0].clone(),
            "--token".into(),
            SHOP_TOKEN.into(),
        ];
        if stateless {
            args.extend(["--stateless-listen".to_string(), addrs[1].clone()]);
        }
        let limit = health_limit(valgrind.is_some());
        let mut guard = ChildGuard::spawn(Spawn {
            name: "shopping-service",
            args,
            env: Vec::new(),
            log: unique_log(dir, "shopping"),
            valgrind,
        })?;
        guard
            .wait_healthy(&format!("http://{}", addrs[0]), limit)
            .await?;
        if stateless {
            guard
                .wait_healthy(&format!("http://{}", addrs[1]), limit)
                .await?;
        }
        Ok(Self {
            guard,
            session_url: format!("http://{}/mcp", addrs[0]),
            stateless_url: format!("http://{}/mcp", addrs[1]),
        })
    }
}

/// A gateway in a child process, with a fresh store.
struct Gateway {
    guard: ChildGuard,
    base: String,
}

impl Gateway {
    async fn start(
        dir: &Path,
        name: &str,
        env: Vec<(String, String)>,
        valgrind: Option<Vec<String>>,
    ) -> Result<Self> {
        let addr = procs::free_addrs(1)?.remove(0);
        let store = dir.join(format!("{name}.db"));
        let limit = health_limit(valgrind.is_some());
        // The memory scenario holds 10,000 sessions of one credential, past the
        // defaults of a production gateway: room for them (and nothing else changed).
        let mut env = env;
        // The gateway's worker threads, as the gateway binary sizes its runtime: the
        // role's runtime is the bench's own, sized by tokio's variable.
        env.push(("TOKIO_WORKER_THREADS".into(), gateway_workers().to_string()));
        for (key, value) in [
            ("GATEWAY_MAX_SESSIONS_PER_CREDENTIAL", "20000"),
            ("GATEWAY_MAX_SESSIONS", "20000"),
            // The catalog scenarios measure the whole listing (2,000 tools), which tool
            // search's `auto` would replace with its meta-tools (`mcp-bench search`
            // measures that).
            ("GATEWAY_TOOL_SEARCH", "off"),
        ] {
            if !env.iter().any(|(k, _)| k == key) {
                env.push((key.into(), value.into()));
            }
        }
        let mut guard = ChildGuard::spawn(Spawn {
            name,
            args: vec![
                "serve-gateway".into(),
                "--listen".into(),
                addr.clone(),
                "--store".into(),
                store.display().to_string(),
            ],
            env,
            log: unique_log(dir, name),
            valgrind,
        })?;
        let base = format!("http://{addr}");
        guard.wait_healthy(&base, limit).await?;
        Ok(Self { guard, base })
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint {
            url: format!("{}/mcp", self.base),
            bearer: Some(TOKEN.into()),
        }
    }

    /// `POST /register` of shopping-service at `url`, with the token it requires.
    async fn register_shop(&self, http: &reqwest::Client, url: &str) -> Result<()> {
        self.register(http, "shopping-service", url, Some(SHOP_TOKEN))
            .await
    }

    /// `POST /register`, with the token the gateway is to present to the server if it
    /// needs one; any answer but 200/201 fails with the gateway's message.
    async fn register(
        &self,
        http: &reqwest::Client,
        name: &str,
        url: &str,
        bearer: Option<&str>,
    ) -> Result<()> {
        let mut body = json!({"name": name, "url": url});
        if let Some(token) = bearer {
            body["auth"] = json!({ "bearer": token });
        }
        let resp = http
            .post(format!("{}/register", self.base))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {}/register for {name}", self.base))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            bail!("registering {name} ({url}) with the gateway: HTTP {status}: {body}");
        }
        Ok(())
    }
}

fn health_limit(under_valgrind: bool) -> Duration {
    Duration::from_secs(if under_valgrind { 180 } else { 30 })
}

/// A log path in `dir` not used yet by this run.
fn unique_log(dir: &Path, name: &str) -> PathBuf {
    (0..)
        .map(|i| dir.join(format!("{name}-{i}.log")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| dir.join(format!("{name}.log")))
}

/// The gateway's worker threads for this run: `MCP_BENCH_GATEWAY_WORKERS` (the gateway's
/// `worker_threads`), else the gateway's default.
pub fn gateway_workers() -> usize {
    std::env::var("MCP_BENCH_GATEWAY_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| gateway::Config::default().workers())
}
