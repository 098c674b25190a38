//! `mcp-bench cluster`: gateway replicas on one PostgreSQL store (issue #15), three
//! measurements, each against a throwaway PostgreSQL this run starts on loopback
//! (`initdb` and `pg_ctl` from Debian's `/usr/lib/postgresql/N/bin`, as the `postgres`
//! user through `runuser` when root, trust authentication, no fsync), as the cluster
//! tests do:
//!
//! 1. **store**: the per-call cost of the PostgreSQL store against the SQLite store. Two
//!    gateways, one on each store, both fronting the same shopping-service, measured
//!    side by side with the wrk reference's plain sessions (`tools/call
//!    getProductById`, 1 and 16 connections): throughput, p50, p99, and CPU per call of
//!    the gateway, the backend and the PostgreSQL server (postmaster and its children).
//!    Rounds alternate which store goes first.
//! 2. **propagation**: two replicas on one store; an rmcp session client (2025-11-25,
//!    its GET stream open) on replica B with an `on_tool_list_changed` handler; N times,
//!    a one-tool fixture is registered on replica A (`POST /register`) and then
//!    unregistered (`DELETE /services/NAME`): the time from A's answer to B's client
//!    hearing `notifications/tools/list_changed`, each way. After each notification B's
//!    `tools/list` is checked to say what the notification announced.
//! 3. **balancer**: HAProxy with the repository's `deploy/haproxy/haproxy.cfg`
//!    (round-robin, no stickiness) in front of one replica (`GATEWAY_1`), then of two
//!    (`GATEWAY_1`, `GATEWAY_2`), with wrk at 16 and 64 connections through it, beside
//!    the same calls straight to replica 1 (the cost of the hop).
//!
//! Every process listens on 127.0.0.1; every wait and loop is bounded in time.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    client::{self, Endpoint},
    procs::{self, ChildGuard, Spawn},
    scenarios, wrk,
};

/// The gateways' token (their `MCP_BEARER_TOKEN`), for MCP and the admin API.
const TOKEN: &str = "bench-cluster-token-0123456789";
/// The token shopping-service requires, given to the gateway at registration.
const SHOP_TOKEN: &str = "bench-cluster-shop-token";
/// Every replica's `GATEWAY_CLUSTER_KEY` (16 characters or more).
const CLUSTER_KEY: &str = "mcp-bench cluster key, not a secret";
/// Connection counts of the store comparison and of the balancer.
const STORE_CONNECTIONS: [u32; 2] = [1, 16];
const BALANCER_CONNECTIONS: [u32; 2] = [16, 64];
/// The fixture registered and unregistered in the propagation loop, and its one tool.
const FIXTURE: &str = "propagated";
const FIXTURE_TOOL: &str = "propagated_1_tool00";
/// How long B's client may take to hear one change before it counts as missed.
const HEAR_LIMIT: Duration = Duration::from_secs(10);
/// After a notification, how long more are counted as extra for the same change.
const SETTLE: Duration = Duration::from_millis(20);

/// The parts of `mcp-bench cluster`, for `--only`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    /// Per-call cost: a gateway on PostgreSQL against one on SQLite.
    Store,
    /// Registration on replica A heard as `list_changed` by a client of replica B.
    Propagation,
    /// wrk through HAProxy: one replica, then two.
    Balancer,
}

pub struct Options {
    pub quick: bool,
    pub params: wrk::Params,
    /// Side-by-side rounds of the store and balancer parts.
    pub rounds: u32,
    /// Register/unregister cycles of the propagation part.
    pub iterations: u32,
    pub only: Vec<Part>,
    pub haproxy_cfg: PathBuf,
}

impl Options {
    fn wants(&self, part: Part) -> bool {
        self.only.is_empty() || self.only.contains(&part)
    }
}

/// The default HAProxy configuration: the repository's, beside this crate.
pub fn default_haproxy_cfg() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy/haproxy.cfg")
}

/// Everything measured, as the JSON report holds it.
#[derive(Debug, Serialize)]
pub struct Section {
    pub quick: bool,
    pub wrk_version: String,
    pub postgres_version: String,
    pub haproxy_version: Option<String>,
    pub gateway_workers: usize,
    pub warmup_secs: u64,
    pub measure_secs: u64,
    pub store: Vec<StoreRound>,
    pub propagation: Option<Propagation>,
    pub balancer: Vec<BalancerRound>,
    pub notes: Vec<String>,
}

/// One wrk run with the PostgreSQL server's CPU over the whole step it belongs to.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub run: wrk::Run,
    /// CPU time of the PostgreSQL server (postmaster, its children, and children it
    /// reaped) over the whole step: sessions opened, warm-up, measured run, sessions
    /// closed.
    pub postgres_cpu_ms: f64,
    /// `postgres_cpu_ms` divided by the measured calls: an upper bound of the server's
    /// CPU per call (the step holds more than the measured calls).
    pub postgres_us_per_call_bound: f64,
}

/// One side-by-side round of the store comparison.
#[derive(Debug, Serialize)]
pub struct StoreRound {
    /// Which store went first at each connection count.
    pub first: String,
    pub sqlite: Vec<Step>,
    pub postgres: Vec<Step>,
}

/// Latencies of one kind of change, in µs.
#[derive(Debug, Default, Serialize)]
pub struct Latencies {
    /// From the answer of replica A to B's client hearing `list_changed`; negative
    /// when B's client heard it before A's answer reached the bench.
    pub samples_us: Vec<i64>,
    /// From the request sent to A to B's client hearing it.
    pub from_request_us: Vec<i64>,
    /// Changes heard before A's answer arrived (negative samples).
    pub before_answer: u32,
    /// Changes not heard within the limit.
    pub missed: u32,
    /// Notifications heard within 20 ms after the first for the same change.
    pub extra: u32,
    /// Times B's `tools/list` did not yet show the change when the notification came.
    pub list_lagged: u32,
}

impl Latencies {
    fn quantile(samples: &[i64], q: f64) -> Option<i64> {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return None;
        }
        // Nearest rank: the smallest sample with at least q of them at or below it.
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        Some(sorted[rank - 1])
    }
}

#[derive(Debug, Serialize)]
pub struct Propagation {
    pub iterations: u32,
    pub register: Latencies,
    pub unregister: Latencies,
    /// The protocol revision B's client session agreed to.
    pub protocol_version: String,
}

/// One round of the balancer part: straight to replica 1, through HAProxy to replica 1
/// alone, through HAProxy to replicas 1 and 2.
#[derive(Debug, Serialize)]
pub struct BalancerRound {
    pub order: Vec<String>,
    pub direct: Vec<Step>,
    pub one: Vec<Step>,
    pub two: Vec<Step>,
}

fn progress(what: &str) {
    eprintln!("mcp-bench: cluster: {what}");
}

pub async fn measure(opts: &Options, scratch: &Path) -> Result<Section> {
    let wrk_bin = if opts.wants(Part::Store) || opts.wants(Part::Balancer) {
        Some(
            wrk::locate_or_install()
                .await
                .map_err(|e| anyhow::anyhow!("wrk: {e}"))?,
        )
    } else {
        None
    };
    progress("starting PostgreSQL on loopback");
    let pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .context("starting PostgreSQL")??;
    let http = client::http_client(128)?;
    let mut section = Section {
        quick: opts.quick,
        wrk_version: String::new(),
        postgres_version: pg.version(),
        haproxy_version: None,
        gateway_workers: scenarios::gateway_workers(),
        warmup_secs: opts.params.warmup_secs,
        measure_secs: opts.params.measure_secs,
        store: Vec::new(),
        propagation: None,
        balancer: Vec::new(),
        notes: Vec::new(),
    };
    let shop = if opts.wants(Part::Store) || opts.wants(Part::Balancer) {
        Some(start_shop(scratch).await?)
    } else {
        None
    };
    let ctx = Ctx {
        http: &http,
        pg: &pg,
        scratch,
        params: opts.params,
    };
    if let (true, Some(wrk_bin), Some((shop, shop_url))) =
        (opts.wants(Part::Store), &wrk_bin, &shop)
    {
        store_part(&ctx, opts, wrk_bin, shop, shop_url, &mut section).await?;
    }
    if opts.wants(Part::Propagation) {
        section.propagation = Some(propagation_part(&ctx, opts.iterations).await?);
    }
    if let (true, Some(wrk_bin), Some((shop, shop_url))) =
        (opts.wants(Part::Balancer), &wrk_bin, &shop)
    {
        balancer_part(&ctx, opts, wrk_bin, shop, shop_url, &mut section).await?;
    }
    Ok(section)
}

/// What every part needs.
struct Ctx<'a> {
    http: &'a reqwest::Client,
    pg: &'a Postgres,
    scratch: &'a Path,
    params: wrk::Params,
}

impl Ctx<'_> {
    /// wrk at `c` connections on `side` (its sessions opened before and closed after),
    /// with the PostgreSQL server's CPU over the whole step.
    async fn step(&self, wrk_bin: &Path, side: &wrk::Side, c: u32) -> Result<(String, Step)> {
        let pg_before = self.pg.cpu();
        let (version, mut runs) =
            wrk::plain_runs(wrk_bin, self.http, side, &[c], self.params, self.scratch)
                .await
                .with_context(|| format!("wrk on {} at {c} connections", side.name))?;
        let pg_cpu = self.pg.cpu().saturating_sub(pg_before);
        let run = runs.pop().context("one wrk run")?;
        let ms = pg_cpu.as_secs_f64() * 1e3;
        Ok((
            version,
            Step {
                postgres_us_per_call_bound: ms * 1e3 / run.requests.max(1) as f64,
                postgres_cpu_ms: ms,
                run,
            },
        ))
    }
}

/// shopping-service in session mode, requiring `SHOP_TOKEN`: (its process, /mcp URL).
async fn start_shop(scratch: &Path) -> Result<(ChildGuard, String)> {
    let addr = procs::free_addrs(1)?.remove(0);
    let mut guard = ChildGuard::spawn(Spawn {
        name: "shopping-service",
        args: vec![
            "serve-shopping".into(),
            "--listen".into(),
            addr.clone(),
            "--token".into(),
            SHOP_TOKEN.into(),
        ],
        env: Vec::new(),
        log: scratch.join("shopping.log"),
        valgrind: None,
    })?;
    guard
        .wait_healthy(&format!("http://{addr}"), Duration::from_secs(30))
        .await?;
    Ok((guard, format!("http://{addr}/mcp")))
}

/// A gateway in a child process.
struct Gateway {
    guard: ChildGuard,
    addr: String,
}

impl Gateway {
    /// A gateway on `store` (a SQLite file or a PostgreSQL URL: then with the cluster
    /// key and a call log file of its own), healthy and, on PostgreSQL, in the cluster.
    async fn start(scratch: &Path, name: &str, store: &str) -> Result<Self> {
        let addr = procs::free_addrs(1)?.remove(0);
        let mut env = vec![
            ("MCP_BEARER_TOKEN".to_string(), TOKEN.to_string()),
            (
                "TOKIO_WORKER_THREADS".into(),
                scenarios::gateway_workers().to_string(),
            ),
        ];
        let cluster = store.starts_with("postgres://");
        if cluster {
            env.push(("GATEWAY_CLUSTER_KEY".into(), CLUSTER_KEY.into()));
            env.push((
                "GATEWAY_CALL_LOG_STORE".into(),
                scratch
                    .join(format!("{name}-calls.db"))
                    .display()
                    .to_string(),
            ));
        }
        let mut guard = ChildGuard::spawn(Spawn {
            name,
            args: vec![
                "serve-gateway".into(),
                "--listen".into(),
                addr.clone(),
                "--store".into(),
                store.into(),
            ],
            env,
            log: scratch.join(format!("{name}.log")),
            valgrind: None,
        })?;
        guard
            .wait_healthy(&format!("http://{addr}"), Duration::from_secs(30))
            .await?;
        let gw = Self { guard, addr };
        Ok(gw)
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint {
            url: format!("{}/mcp", self.base()),
            bearer: Some(TOKEN.into()),
        }
    }

    async fn health(&self, http: &reqwest::Client) -> Result<Value> {
        Ok(http
            .get(format!("{}/health", self.base()))
            .send()
            .await?
            .json()
            .await?)
    }

    /// Waits until this replica's store answers and it counts `replicas` live ones.
    async fn wait_cluster(&mut self, http: &reqwest::Client, replicas: usize) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.guard.check_alive()?;
            let h = self.health(http).await.unwrap_or_default();
            let live = h["cluster"]["replicas"].as_array().map_or(0, Vec::len);
            if h["cluster"]["storeAvailable"] == true && live >= replicas {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not join a cluster of {replicas} within 30 s: {h}; its log ends with:\n{}",
                    self.addr,
                    self.guard.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `POST /register`; the status (200 or 201) or an error with the answer.
    async fn register(
        &self,
        http: &reqwest::Client,
        name: &str,
        url: &str,
        bearer: Option<&str>,
    ) -> Result<u16> {
        let mut body = json!({"name": name, "url": url});
        if let Some(token) = bearer {
            body["auth"] = json!({ "bearer": token });
        }
        let resp = http
            .post(format!("{}/register", self.base()))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {}/register of {name}", self.base()))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            bail!("registering {name} on {}: HTTP {status}: {text}", self.addr);
        }
        Ok(status.as_u16())
    }

    /// Waits until this gateway's instance of `service` is healthy (connected).
    async fn wait_service(&self, http: &reqwest::Client, service: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s: Value = match http
                .get(format!("{}/services/{service}", self.base()))
                .bearer_auth(TOKEN)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => r.json().await.unwrap_or_default(),
                _ => Value::Null,
            };
            if s["state"] == "healthy" {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{service} is not healthy on {} after 30 s: {s}", self.addr);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Part 1: a gateway on SQLite and one on PostgreSQL, side by side.
async fn store_part(
    ctx: &Ctx<'_>,
    opts: &Options,
    wrk_bin: &Path,
    shop: &ChildGuard,
    shop_url: &str,
    section: &mut Section,
) -> Result<()> {
    progress("store: a gateway on SQLite and one on PostgreSQL, both fronting shopping-service");
    let sqlite_store = ctx.scratch.join("gateway-sqlite.db");
    let mut sqlite = Gateway::start(
        ctx.scratch,
        "gateway-sqlite",
        &sqlite_store.display().to_string(),
    )
    .await?;
    let url = ctx.pg.database("store")?;
    let mut postgres = Gateway::start(ctx.scratch, "gateway-postgres", &url).await?;
    postgres.wait_cluster(ctx.http, 1).await?;
    for gw in [&sqlite, &postgres] {
        gw.register(ctx.http, "shopping-service", shop_url, Some(SHOP_TOKEN))
            .await?;
        gw.wait_service(ctx.http, "shopping-service").await?;
    }
    let side = |name, gw: &Gateway| wrk::Side {
        name,
        endpoint: gw.endpoint(),
        procs: vec![("gateway", gw.guard.pid()), ("backend", shop.pid())],
    };
    let sides = [side("sqlite", &sqlite), side("postgres", &postgres)];
    for round in 0..opts.rounds {
        // Alternate which store goes first, so that neither always runs on a machine
        // warmed (or loaded) by the other.
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut steps: [Vec<Step>; 2] = [Vec::new(), Vec::new()];
        for c in STORE_CONNECTIONS {
            for &i in &order {
                progress(&format!(
                    "store: round {}, {} store, {c} connection(s)",
                    round + 1,
                    sides[i].name
                ));
                let (version, step) = ctx.step(wrk_bin, &sides[i], c).await?;
                section.wrk_version = version;
                steps[i].push(step);
            }
        }
        let [sqlite_steps, postgres_steps] = steps;
        section.store.push(StoreRound {
            first: sides[order[0]].name.into(),
            sqlite: sqlite_steps,
            postgres: postgres_steps,
        });
    }
    sqlite.guard.check_alive()?;
    postgres.guard.check_alive()?;
    Ok(())
}

/// B's client: hears `tools/list_changed` and sends the instant it did.
#[derive(Clone)]
struct Watcher {
    heard: tokio::sync::mpsc::UnboundedSender<Instant>,
    info: rmcp::model::ClientConfig,
}

impl rmcp::ClientHandler for Watcher {
    async fn on_tool_list_changed(
        &self,
        _context: rmcp::service::NotificationContext<rmcp::RoleClient>,
    ) {
        let _ = self.heard.send(Instant::now());
    }

    fn get_info(&self) -> rmcp::model::ClientConfig {
        self.info.clone()
    }
}

/// Part 2: registration on replica A heard by a client of replica B.
async fn propagation_part(ctx: &Ctx<'_>, iterations: u32) -> Result<Propagation> {
    progress("propagation: two replicas on one store, a fixture registered on A, a client on B");
    let url = ctx.pg.database("propagation")?;
    let mut a = Gateway::start(ctx.scratch, "replica-a", &url).await?;
    let mut b = Gateway::start(ctx.scratch, "replica-b", &url).await?;
    a.wait_cluster(ctx.http, 2).await?;
    b.wait_cluster(ctx.http, 2).await?;
    let fixture_addr = procs::free_addrs(1)?.remove(0);
    let mut fixture = ChildGuard::spawn(Spawn {
        name: "fixture",
        args: vec![
            "serve-fixture".into(),
            "--listen".into(),
            fixture_addr.clone(),
            "--tools".into(),
            "1".into(),
            "--name".into(),
            FIXTURE.into(),
        ],
        env: Vec::new(),
        log: ctx.scratch.join("fixture.log"),
        valgrind: None,
    })?;
    fixture
        .wait_healthy(&format!("http://{fixture_addr}"), Duration::from_secs(30))
        .await?;
    let fixture_url = format!("http://{fixture_addr}/mcp");

    let options = service_kit::client::ClientOptions {
        client_name: "mcp-bench-watcher".into(),
        bearer: Some(TOKEN.into()),
        reinit_on_expired_session: false,
        ..Default::default()
    };
    let (tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let watcher = Watcher {
        heard: tx,
        info: service_kit::client::client_config(&options),
    };
    let client = service_kit::client::connect_with(&b.endpoint().url, &options, watcher)
        .await
        .context("B's client session")?;
    let protocol_version = client
        .peer_info()
        .map(|i| i.protocol_version.to_string())
        .unwrap_or_default();

    let mut register = Latencies::default();
    let mut unregister = Latencies::default();
    // Cycle 0 is not recorded: it shows the GET stream works before timing starts (a
    // first change missed there fails the run).
    for i in 0..=iterations {
        for adding in [true, false] {
            // Nothing pending before the change is made.
            while heard.try_recv().is_ok() {}
            let sent = Instant::now();
            let resp = if adding {
                ctx.http
                    .post(format!("{}/register", a.base()))
                    .bearer_auth(TOKEN)
                    .json(&json!({"name": FIXTURE, "url": fixture_url}))
                    .send()
                    .await
            } else {
                ctx.http
                    .delete(format!("{}/services/{FIXTURE}", a.base()))
                    .bearer_auth(TOKEN)
                    .send()
                    .await
            }
            .context("a change on replica A")?;
            let answered = Instant::now();
            let status = resp.status().as_u16();
            let want = if adding { 201 } else { 200 };
            if status != want {
                let text = resp.text().await.unwrap_or_default();
                bail!(
                    "cycle {i}: replica A answered {status} (not {want}) to the {}: {text}",
                    if adding {
                        "registration"
                    } else {
                        "unregistration"
                    }
                );
            }
            let got = tokio::time::timeout(HEAR_LIMIT, heard.recv()).await;
            let stats = if adding {
                &mut register
            } else {
                &mut unregister
            };
            let at = match got {
                Ok(Some(at)) => at,
                Ok(None) => bail!("B's client session ended"),
                Err(_) if i == 0 => bail!(
                    "B's client did not hear the first change within {} s; replica B's log ends with:\n{}",
                    HEAR_LIMIT.as_secs(),
                    b.guard.log_tail()
                ),
                Err(_) => {
                    stats.missed += 1;
                    wait_listed(&client, adding).await?;
                    continue;
                }
            };
            // Does B's listing show the change the notification announced?
            let listed = client
                .list_all_tools()
                .await
                .context("tools/list on B")?
                .iter()
                .any(|t| t.name == FIXTURE_TOOL);
            if i == 0 {
                wait_listed(&client, adding).await?;
                continue;
            }
            if listed != adding {
                stats.list_lagged += 1;
                wait_listed(&client, adding).await?;
            }
            stats.from_request_us.push(signed_micros(sent, at));
            if at < answered {
                stats.before_answer += 1;
            }
            stats.samples_us.push(signed_micros(answered, at));
            tokio::time::sleep(SETTLE).await;
            while heard.try_recv().is_ok() {
                stats.extra += 1;
            }
        }
    }
    let _ = client.cancel().await;
    a.guard.check_alive()?;
    b.guard.check_alive()?;
    fixture.check_alive()?;
    Ok(Propagation {
        iterations,
        register,
        unregister,
        protocol_version,
    })
}

/// Microseconds from `from` to `to`, negative when `to` came first.
fn signed_micros(from: Instant, to: Instant) -> i64 {
    let us = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    if to >= from {
        us(to.duration_since(from))
    } else {
        -us(from.duration_since(to))
    }
}

/// Waits (up to the hearing limit) until B lists the fixture's tool, or no longer does.
async fn wait_listed<S: rmcp::service::Service<rmcp::RoleClient>>(
    client: &rmcp::service::RunningService<rmcp::RoleClient, S>,
    present: bool,
) -> Result<()> {
    let deadline = Instant::now() + HEAR_LIMIT;
    loop {
        let tools = client.list_all_tools().await.context("tools/list on B")?;
        if tools.iter().any(|t| t.name == FIXTURE_TOOL) == present {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "replica B still {} {FIXTURE_TOOL} after {} s",
                if present { "lacks" } else { "lists" },
                HEAR_LIMIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// HAProxy with the repository's configuration, stopped (killed) when dropped.
struct Haproxy {
    child: std::process::Child,
    base: String,
}

impl Haproxy {
    async fn start(
        binary: &Path,
        cfg: &Path,
        replicas: &[&Gateway],
        http: &reqwest::Client,
        scratch: &Path,
    ) -> Result<Self> {
        let listen = procs::free_addrs(1)?.remove(0);
        let mut command = Command::new(binary);
        command
            .args(["-db", "-f"])
            .arg(cfg)
            .env("LB_LISTEN", &listen)
            .env_remove("GATEWAY_1")
            .env_remove("GATEWAY_2")
            .env_remove("GATEWAY_3")
            .stdin(Stdio::null())
            // The configuration logs every request to stdout (`log stdout`): kept as
            // it is, and thrown away.
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(scratch.join("haproxy.err"))?);
        for (n, gw) in replicas.iter().enumerate() {
            command.env(format!("GATEWAY_{}", n + 1), &gw.addr);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut lb = Self {
            child,
            base: format!("http://{listen}"),
        };
        // Healthy through it, and every replica answering through it (each /health
        // names the replica that answered).
        let mut seen = std::collections::BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.len() < replicas.len() {
            if let Ok(Some(status)) = lb.child.try_wait() {
                bail!(
                    "haproxy exited ({status}): {}",
                    std::fs::read_to_string(scratch.join("haproxy.err")).unwrap_or_default()
                );
            }
            if let Ok(r) = http.get(format!("{}/health", lb.base)).send().await
                && r.status().is_success()
                && let Ok(h) = r.json::<Value>().await
                && let Some(id) = h["cluster"]["replica"].as_str()
            {
                seen.insert(id.to_string());
            }
            if Instant::now() > deadline {
                bail!(
                    "through haproxy, {} of {} replicas answered within 30 s",
                    seen.len(),
                    replicas.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(lb)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// HAProxy's binary: `$HAPROXY`, on the PATH, or Debian's `/usr/sbin/haproxy`.
fn haproxy_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HAPROXY") {
        return Some(p.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("haproxy"))
        .find(|p| p.is_file())
}

/// `haproxy -v`'s first line.
fn haproxy_version(binary: &Path) -> String {
    Command::new(binary)
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.split(" - ").next().unwrap_or(l).trim().to_string())
        })
        .unwrap_or_else(|| "haproxy, version unknown".into())
}

/// Part 3: wrk straight to replica 1, through HAProxy to replica 1, and to both.
async fn balancer_part(
    ctx: &Ctx<'_>,
    opts: &Options,
    wrk_bin: &Path,
    shop: &ChildGuard,
    shop_url: &str,
    section: &mut Section,
) -> Result<()> {
    let binary = haproxy_binary().context(
        "haproxy is not installed (apt-get install haproxy): the balancer part needs it",
    )?;
    if !opts.haproxy_cfg.is_file() {
        bail!(
            "no HAProxy configuration at {} (--haproxy-cfg)",
            opts.haproxy_cfg.display()
        );
    }
    section.haproxy_version = Some(haproxy_version(&binary));
    progress("balancer: two replicas on one store, shopping-service registered through replica 1");
    let url = ctx.pg.database("balancer")?;
    let mut r1 = Gateway::start(ctx.scratch, "replica-1", &url).await?;
    let mut r2 = Gateway::start(ctx.scratch, "replica-2", &url).await?;
    r1.wait_cluster(ctx.http, 2).await?;
    r2.wait_cluster(ctx.http, 2).await?;
    r1.register(ctx.http, "shopping-service", shop_url, Some(SHOP_TOKEN))
        .await?;
    r1.wait_service(ctx.http, "shopping-service").await?;
    r2.wait_service(ctx.http, "shopping-service").await?;
    let replicas = [("gateway-1", r1.guard.pid()), ("gateway-2", r2.guard.pid())];
    for round in 0..opts.rounds {
        let order: [&str; 3] = if round % 2 == 0 {
            ["direct", "one", "two"]
        } else {
            ["two", "one", "direct"]
        };
        let mut out = BalancerRound {
            order: order.iter().map(|s| s.to_string()).collect(),
            direct: Vec::new(),
            one: Vec::new(),
            two: Vec::new(),
        };
        for what in order {
            let lb = match what {
                "one" => Some(
                    Haproxy::start(&binary, &opts.haproxy_cfg, &[&r1], ctx.http, ctx.scratch)
                        .await?,
                ),
                "two" => Some(
                    Haproxy::start(
                        &binary,
                        &opts.haproxy_cfg,
                        &[&r1, &r2],
                        ctx.http,
                        ctx.scratch,
                    )
                    .await?,
                ),
                _ => None,
            };
            let mut procs = Vec::new();
            if let Some(lb) = &lb {
                procs.push(("haproxy", lb.pid()));
            }
            procs.extend(replicas);
            procs.push(("backend", shop.pid()));
            let side = wrk::Side {
                name: match what {
                    "one" => "lb-one",
                    "two" => "lb-two",
                    _ => "replica-1",
                },
                endpoint: Endpoint {
                    url: match &lb {
                        Some(lb) => format!("{}/mcp", lb.base),
                        None => r1.endpoint().url,
                    },
                    bearer: Some(TOKEN.into()),
                },
                procs,
            };
            for c in BALANCER_CONNECTIONS {
                progress(&format!(
                    "balancer: round {}, {}, {c} connections",
                    round + 1,
                    side.name
                ));
                let (version, step) = ctx.step(wrk_bin, &side, c).await?;
                section.wrk_version = version;
                match what {
                    "one" => out.one.push(step),
                    "two" => out.two.push(step),
                    _ => out.direct.push(step),
                }
            }
            drop(lb);
        }
        section.balancer.push(out);
    }
    r1.guard.check_alive()?;
    r2.guard.check_alive()?;
    Ok(())
}

/// A throwaway PostgreSQL server on a free loopback port (trust authentication, no
/// fsync), its data in a temporary directory; stopped (immediate) when dropped.
struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// `runuser -u postgres --` when running as root (PostgreSQL refuses root).
    as_postgres: bool,
}

impl Postgres {
    fn start() -> Result<Self> {
        let bin = postgres_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("mcp-bench-pg-")
            .tempdir()
            .context("a temporary directory for PostgreSQL")?;
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .status()
                .context("chown of the PostgreSQL directory")?;
            if !status.success() {
                bail!("chown -R postgres: {} failed", dir.path().display());
            }
        }
        let port = procs::free_addrs(1)?[0]
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .context("a free port")?;
        let pg = Self {
            dir,
            bin,
            port,
            as_postgres,
        };
        let data = pg.data().display().to_string();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "gateway",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off -c max_connections=200",
            pg.port,
            pg.dir.path().display()
        );
        let log = pg.dir.path().join("server.log").display().to_string();
        pg.run(
            "pg_ctl",
            &[
                "-D", &data, "-o", &options, "-l", &log, "-w", "-t", "30", "start",
            ],
        )?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<()> {
        let out = self
            .command(program)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {program}"))?;
        if !out.status.success() {
            bail!(
                "{program} {args:?} failed: {}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
            );
        }
        Ok(())
    }

    /// A new, empty database; its URL.
    fn database(&self, name: &str) -> Result<String> {
        self.run(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "gateway",
                name,
            ],
        )?;
        Ok(format!(
            "postgres://gateway:secret@127.0.0.1:{}/{name}",
            self.port
        ))
    }

    fn version(&self) -> String {
        Command::new(self.bin.join("postgres"))
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "PostgreSQL, version unknown".into())
    }

    /// CPU time of the server: the postmaster (with the children it reaped) and its
    /// live children (a backend per connection, the background workers). Zero when
    /// `/proc` cannot say.
    fn cpu(&self) -> Duration {
        let Some(master) = std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
        else {
            return Duration::ZERO;
        };
        let mut ticks = 0u64;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let Some(f) = procs::stat_fields(&stat) else {
                continue;
            };
            if pid == master {
                ticks += f.utime + f.stime + f.cutime + f.cstime;
            } else if f.ppid == master {
                ticks += f.utime + f.stime;
            }
        }
        Duration::from_secs_f64(ticks as f64 / crate::procs::clock_ticks_per_second() as f64)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "stop"])
            .stdin(Stdio::null())
            .output();
    }
}

/// The directory of `initdb`: on the PATH, else Debian's newest
/// `/usr/lib/postgresql/N/bin`.
fn postgres_bin() -> Result<PathBuf> {
    // A link on the PATH (Debian's /usr/local/bin/initdb, say) leads to the directory
    // that holds the other programs too (createdb, pg_ctl).
    if let Some(dir) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("initdb"))
            .find(|p| p.is_file())
            .and_then(|p| std::fs::canonicalize(p).ok())
            .and_then(|p| p.parent().map(Path::to_path_buf))
    }) && dir.join("createdb").is_file()
    {
        return Ok(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, p)| p.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p).context(
        "PostgreSQL's initdb is not installed (apt-get install postgresql): the cluster benchmark starts its own server",
    )
}

/// The section as markdown: a table per part (one per round), then the notes.
pub fn markdown(s: &Section) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}; {}; {}; gateway worker threads: {}; wrk runs of {} s{}.\n",
        s.postgres_version,
        s.haproxy_version.as_deref().unwrap_or("haproxy not used"),
        s.wrk_version,
        s.gateway_workers,
        s.measure_secs,
        if s.warmup_secs > 0 {
            format!(" after a {} s warm-up run", s.warmup_secs)
        } else {
            " (no warm-up run)".into()
        }
    );
    for (n, round) in s.store.iter().enumerate() {
        let _ = writeln!(
            out,
            "### Per-call cost: PostgreSQL store vs SQLite store, round {} ({} first)\n",
            n + 1,
            round.first
        );
        let _ = writeln!(
            out,
            "| wrk, plain sessions, `getProductById` | SQLite store | PostgreSQL store | PostgreSQL ÷ SQLite |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|");
        for (q, p) in round.sqlite.iter().zip(&round.postgres) {
            let (a, b) = (&q.run, &p.run);
            let c = a.connections;
            let row = |out: &mut String, what: &str, x: f64, y: f64, unit: &str| {
                let _ = writeln!(
                    out,
                    "| {what}, {c} conn. | {x:.1}{unit} | {y:.1}{unit} | {:.2}× |",
                    y / x.max(f64::MIN_POSITIVE)
                );
            };
            let _ = writeln!(
                out,
                "| throughput, {c} conn. | {:.0}/s | {:.0}/s | {:.2}× |",
                a.per_second,
                b.per_second,
                b.per_second / a.per_second.max(1.0)
            );
            row(&mut out, "p50", a.p50_us, b.p50_us, " µs");
            row(&mut out, "p99", a.p99_us, b.p99_us, " µs");
            row(
                &mut out,
                "gateway CPU per call",
                role(a, "gateway"),
                role(b, "gateway"),
                " µs",
            );
            row(
                &mut out,
                "backend CPU per call",
                role(a, "backend"),
                role(b, "backend"),
                " µs",
            );
            let _ = writeln!(
                out,
                "| PostgreSQL server CPU over the step ÷ measured calls (bound), {c} conn. | {:.1} µs ({:.0} ms) | {:.1} µs ({:.0} ms) | |",
                q.postgres_us_per_call_bound,
                q.postgres_cpu_ms,
                p.postgres_us_per_call_bound,
                p.postgres_cpu_ms
            );
            let _ = writeln!(out, "| errors, {c} conn. | {} | {} | |", a.errors, b.errors);
        }
        out.push('\n');
    }
    if let Some(p) = &s.propagation {
        let _ = writeln!(
            out,
            "### Registration propagation: change on replica A → `tools/list_changed` at B's client\n"
        );
        let _ = writeln!(
            out,
            "{} register/unregister cycles (after one unrecorded), B's client an rmcp session at {} with its GET stream. Times from A's answer (201 or 200) reaching the bench to B's client hearing `list_changed`: negative when B's client heard it first (A commits and notifies before it answers).\n",
            p.iterations, p.protocol_version
        );
        let _ = writeln!(
            out,
            "| change on A | heard | p50 | p99 | max | min | p50 from the request sent | heard before A's answer | missed | extra notifications | B's list behind |"
        );
        let _ = writeln!(
            out,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for (what, l) in [
            ("register (`POST /register`, 201)", &p.register),
            ("unregister (`DELETE /services/…`, 200)", &p.unregister),
        ] {
            let q = |samples: &[i64], q: f64| {
                Latencies::quantile(samples, q)
                    .map_or_else(|| "—".to_string(), |v| format!("{:.2} ms", v as f64 / 1e3))
            };
            let _ = writeln!(
                out,
                "| {what} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                l.samples_us.len(),
                q(&l.samples_us, 0.5),
                q(&l.samples_us, 0.99),
                q(&l.samples_us, 1.0),
                q(&l.samples_us, 0.0),
                q(&l.from_request_us, 0.5),
                l.before_answer,
                l.missed,
                l.extra,
                l.list_lagged
            );
        }
        out.push('\n');
    }
    for (n, round) in s.balancer.iter().enumerate() {
        let _ = writeln!(
            out,
            "### Through HAProxy: one replica, then two, round {} (order: {})\n",
            n + 1,
            round.order.join(", ")
        );
        let _ = writeln!(
            out,
            "| wrk, plain sessions, `getProductById` | straight to replica 1 | HAProxy → replica 1 | HAProxy → replicas 1+2 | two ÷ one |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|");
        for ((d, one), two) in round.direct.iter().zip(&round.one).zip(&round.two) {
            let c = d.run.connections;
            let _ = writeln!(
                out,
                "| throughput, {c} conn. | {:.0}/s | {:.0}/s | {:.0}/s | {:.2}× |",
                d.run.per_second,
                one.run.per_second,
                two.run.per_second,
                two.run.per_second / one.run.per_second.max(1.0)
            );
            for (name, f) in [
                ("p50", (|r: &wrk::Run| r.p50_us) as fn(&wrk::Run) -> f64),
                ("p99", |r: &wrk::Run| r.p99_us),
            ] {
                let _ = writeln!(
                    out,
                    "| {name}, {c} conn. | {:.0} µs | {:.0} µs | {:.0} µs | {:.2}× |",
                    f(&d.run),
                    f(&one.run),
                    f(&two.run),
                    f(&two.run) / f(&one.run).max(1.0)
                );
            }
            for who in ["haproxy", "gateway-1", "gateway-2", "backend"] {
                let cell = |r: &wrk::Run| {
                    r.cpu_us_per_call
                        .get(who)
                        .map_or_else(|| "—".to_string(), |v| format!("{v:.1} µs"))
                };
                let _ = writeln!(
                    out,
                    "| {who} CPU per call, {c} conn. | {} | {} | {} | |",
                    cell(&d.run),
                    cell(&one.run),
                    cell(&two.run)
                );
            }
            let _ = writeln!(
                out,
                "| PostgreSQL CPU over the step ÷ measured calls (bound), {c} conn. | {:.1} µs | {:.1} µs | {:.1} µs | |",
                d.postgres_us_per_call_bound,
                one.postgres_us_per_call_bound,
                two.postgres_us_per_call_bound
            );
            let _ = writeln!(
                out,
                "| errors, {c} conn. | {} | {} | {} | |",
                d.run.errors, one.run.errors, two.run.errors
            );
        }
        out.push('\n');
    }
    let mut notes = s.notes.clone();
    let runs = s
        .store
        .iter()
        .flat_map(|r| r.sqlite.iter().chain(&r.postgres))
        .chain(
            s.balancer
                .iter()
                .flat_map(|r| r.direct.iter().chain(&r.one).chain(&r.two)),
        );
    for step in runs {
        if let Some(detail) = &step.run.error_detail {
            notes.push(format!(
                "{} connections: {} errors: {detail}",
                step.run.connections, step.run.errors
            ));
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(out, "Notes:\n");
        for n in notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    out
}

fn role(run: &wrk::Run, who: &str) -> f64 {
    run.cpu_us_per_call.get(who).copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let samples: Vec<i64> = (1..=100).rev().collect();
        assert_eq!(Latencies::quantile(&samples, 0.5), Some(50));
        assert_eq!(Latencies::quantile(&samples, 0.99), Some(99));
        assert_eq!(Latencies::quantile(&samples, 1.0), Some(100));
        assert_eq!(Latencies::quantile(&samples, 0.0), Some(1));
        assert_eq!(Latencies::quantile(&[], 0.5), None);
    }

    #[test]
    fn the_repository_haproxy_cfg_is_found() {
        assert!(default_haproxy_cfg().is_file());
    }
}
