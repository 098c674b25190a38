//! `mcp-bench stdio`: a call to a stdio upstream through the gateway, against the same
//! server called over stdio directly by a lean client.
//!
//! The server is shopping-service's stdio handler (`serve-shopping-stdio`, this binary
//! as a child). *Direct*: a lean line client here writes `tools/call getProductById` to
//! the child's stdin and reads the answer off its stdout, with 1 and with 16 calls
//! outstanding (each answer sends the next request), for a fixed time after a warm-up.
//! *Through the gateway*: the gateway runs the same role as a configured stdio upstream
//! and `wrk` calls it over HTTP with plain sessions, at 1 and 16 connections. CPU per
//! call is read from /proc for the child (both sides) and the gateway.
//!
//! The two clients differ (a pipe against HTTP), so the direct figure is what the
//! server costs over its own transport; the gateway's figure adds HTTP, the session,
//! policy and the relay over the pipe. Loopback only; every loop is bounded in time.

use std::{
    collections::HashMap,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::{
    client::Endpoint,
    procs::{ChildGuard, Spawn, cpu_time},
    wrk,
};

/// Calls outstanding (direct) and connections (through the gateway).
pub const CONCURRENCY: [u32; 2] = [1, 16];

/// One direct measurement.
#[derive(Clone, Debug, Serialize)]
pub struct Direct {
    pub concurrency: u32,
    pub calls: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// The child's CPU time per call, in µs.
    pub cpu_us_per_call: f64,
}

/// The section: direct runs, then the gateway's wrk runs.
#[derive(Clone, Debug, Serialize)]
pub struct Section {
    pub direct: Vec<Direct>,
    pub wrk_version: String,
    pub gateway: Vec<wrk::Run>,
}

const CALL: &str =
    r#""method":"tools/call","params":{"name":"getProductById","arguments":{"id":"123"}}"#;

/// Measures the child `serve-shopping-stdio` directly with `concurrency` calls in flight.
pub async fn direct(concurrency: u32, warmup: Duration, measure: Duration) -> Result<Direct> {
    let exe = std::env::current_exe().context("locating mcp-bench")?;
    let mut child = tokio::process::Command::new(&exe)
        .arg("serve-shopping-stdio")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting serve-shopping-stdio")?;
    let pid = child.id().context("child pid")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    stdin
        .write_all(
            concat!(
                r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"mcp-bench","version":"1"}}}"#,
                "\n",
                r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                "\n"
            )
            .as_bytes(),
        )
        .await?;
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .context("no initialize answer within 10 s")??
        .context("the child closed stdout")?;
    if !first.contains("\"result\"") {
        bail!("initialize failed: {first}");
    }
    let mut next_id: u64 = 1;
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    let send = |id: u64| format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},{CALL}}}\n");
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let started = Instant::now();
    let measure_from = started + warmup;
    let end = measure_from + measure;
    let mut cpu_from = None;
    let mut counted = 0u64;
    for _ in 0..concurrency {
        stdin.write_all(send(next_id).as_bytes()).await?;
        sent.insert(next_id, Instant::now());
        next_id += 1;
    }
    stdin.flush().await?;
    while !sent.is_empty() {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .context("no answer within 10 s")??
            .context("the child closed stdout")?;
        let value: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("not JSON: {line:.200}"))?;
        let Some(id) = value["id"].as_u64() else {
            continue; // a notification
        };
        let at = sent.remove(&id).context("an answer to no request")?;
        if value.get("result").is_none() || value["result"]["isError"] == true {
            bail!("call {id} failed: {line:.300}");
        }
        let now = Instant::now();
        if now >= measure_from && now < end {
            if cpu_from.is_none() {
                cpu_from = Some((now, cpu_time(pid)?));
            }
            histogram.record(now.duration_since(at).as_micros().max(1) as u64)?;
            counted += 1;
        }
        if now < end {
            stdin.write_all(send(next_id).as_bytes()).await?;
            stdin.flush().await?;
            sent.insert(next_id, Instant::now());
            next_id += 1;
        }
    }
    let (from, cpu_before) = cpu_from.context("no call in the measured window")?;
    let seconds = Instant::now().duration_since(from).as_secs_f64();
    let cpu = cpu_time(pid)?.saturating_sub(cpu_before);
    drop(stdin);
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    Ok(Direct {
        concurrency,
        calls: counted,
        seconds,
        per_second: counted as f64 / seconds,
        p50_us: histogram.value_at_quantile(0.5) as f64,
        p99_us: histogram.value_at_quantile(0.99) as f64,
        cpu_us_per_call: cpu.as_secs_f64() * 1e6 / counted.max(1) as f64,
    })
}

/// The whole section: direct at each concurrency, then the gateway with wrk.
pub async fn measure(params: wrk::Params, scratch: &Path, workers: usize) -> Result<Section> {
    let warmup = Duration::from_secs(params.warmup_secs);
    let secs = Duration::from_secs(params.measure_secs);
    let mut direct_runs = Vec::new();
    for c in CONCURRENCY {
        eprintln!("mcp-bench: stdio direct, {c} in flight");
        direct_runs.push(direct(c, warmup, secs).await?);
    }

    let wrk_bin = wrk::locate_or_install()
        .await
        .map_err(|e| anyhow::anyhow!("wrk: {e}"))?;
    let exe = std::env::current_exe().context("locating mcp-bench")?;
    let addr = crate::procs::free_addrs(1)?.remove(0);
    let config = scratch.join("gateway-stdio.toml");
    std::fs::write(
        &config,
        format!(
            "call_log = true\n[[upstreams]]\nname = \"shopping-service\"\ncommand = {:?}\nargs = [\"serve-shopping-stdio\"]\n",
            exe.display().to_string()
        ),
    )?;
    let mut gateway = ChildGuard::spawn(Spawn {
        name: "gateway",
        args: vec![
            "serve-gateway".into(),
            "--listen".into(),
            addr.clone(),
            "--store".into(),
            scratch.join("gw-stdio.db").display().to_string(),
            "--config".into(),
            config.display().to_string(),
        ],
        env: vec![
            ("MCP_BEARER_TOKEN".into(), TOKEN.into()),
            ("TOKIO_WORKER_THREADS".into(), workers.to_string()),
        ],
        log: scratch.join("gateway-stdio.log"),
        valgrind: None,
    })?;
    let base = format!("http://{addr}");
    gateway.wait_healthy(&base, Duration::from_secs(30)).await?;
    let http = crate::client::http_client(64)?;
    // The child's pid, once the service is healthy.
    let deadline = Instant::now() + Duration::from_secs(30);
    let child = loop {
        let services: serde_json::Value = http
            .get(format!("{base}/services/shopping-service"))
            .bearer_auth(TOKEN)
            .send()
            .await?
            .json()
            .await?;
        if services["state"] == "healthy"
            && let Some(pid) = services["instances"][0]["process"]["pid"].as_u64()
        {
            break pid as u32;
        }
        if Instant::now() > deadline {
            bail!("the stdio upstream did not become healthy: {services}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let side = wrk::Side {
        name: "gateway",
        endpoint: Endpoint {
            url: format!("{base}/mcp"),
            bearer: Some(TOKEN.into()),
        },
        procs: vec![("gateway", gateway.pid()), ("backend", child)],
    };
    eprintln!("mcp-bench: stdio through the gateway (wrk)");
    let (wrk_version, runs) =
        wrk::plain_runs(&wrk_bin, &http, &side, &CONCURRENCY, params, scratch).await?;
    gateway.check_alive()?;
    Ok(Section {
        direct: direct_runs,
        wrk_version,
        gateway: runs,
    })
}

const TOKEN: &str = "bench-stdio-token-0123456789";

/// The section as markdown rows.
pub fn markdown(section: &Section) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| `getProductById` on shopping-service's stdio handler | direct (lean line client over the pipe) | through the gateway (wrk over HTTP, {}) | ratio |",
        section.wrk_version
    );
    let _ = writeln!(out, "|---|---:|---:|---:|");
    for (d, g) in section.direct.iter().zip(&section.gateway) {
        let c = d.concurrency;
        let _ = writeln!(
            out,
            "| p50 / p99, {c} in flight | {:.0} / {:.0} µs | {:.0} / {:.0} µs | {:.2}× |",
            d.p50_us,
            d.p99_us,
            g.p50_us,
            g.p99_us,
            g.p50_us / d.p50_us.max(1.0)
        );
        let _ = writeln!(
            out,
            "| throughput, {c} in flight | {:.0}/s | {:.0}/s{} | {:.2}× |",
            d.per_second,
            g.per_second,
            if g.errors > 0 {
                format!(" ({} errors)", g.errors)
            } else {
                String::new()
            },
            g.per_second / d.per_second.max(1.0)
        );
        let _ = writeln!(
            out,
            "| CPU per call, {c} in flight | {:.0} µs (server) | {:.0} µs gateway + {:.0} µs server | |",
            d.cpu_us_per_call,
            g.cpu_us_per_call
                .get("gateway")
                .copied()
                .unwrap_or_default(),
            g.cpu_us_per_call
                .get("backend")
                .copied()
                .unwrap_or_default(),
        );
    }
    out
}
