//! `mcp-bench search`: tool search at catalog sizes an agent cannot hold.
//!
//! *Listing size*: one fixture server with 2,000 tools (varied names and descriptions,
//! `serve-fixture --varied`) behind a gateway with `tool_search = "off"`, whose
//! `tools/list` pages (followed by `nextCursor`) are summed, and behind one with
//! `tool_search = "on"`, whose `tools/list` is the three meta-tools. *Search latency*:
//! five such servers (10,000 tools) behind a gateway in search mode; the first
//! `search_tools` (which builds the catalog's index) is timed alone, then a fixed list of
//! queries is searched in turn, each a sessionless POST, timed at the client. Loopback
//! only; every loop is bounded in count.

use std::{path::Path, time::Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};

use crate::procs::{ChildGuard, Spawn, free_addrs};

const TOKEN: &str = "bench-search-token-0123456789";
/// Tools per fixture server (the gateway's default `max_list_items` is 10,000).
const PER_SERVER: usize = 2_000;

/// Tasks in words, searched in turn.
const QUERIES: [&str; 12] = [
    "export an invoice from billing",
    "find the customer record",
    "archive an old shipment",
    "which support tickets are open",
    "update an employee in human resources",
    "delete a contract",
    "search payments in finance",
    "list warehouse inventory",
    "create a meeting on the calendar",
    "get the incident report from engineering",
    "sales leads this quarter",
    "book a course",
];

#[derive(Clone, Debug, Serialize)]
pub struct Section {
    /// `tools/list` of 2,000 tools: every page's bytes summed, and the pages.
    pub full_listing_bytes: usize,
    pub full_listing_pages: usize,
    /// `tools/list` in search mode: the three meta-tools.
    pub search_listing_bytes: usize,
    /// The catalog searched, and the first search's time (it builds the index), in ms.
    pub catalog_tools: usize,
    pub first_search_ms: f64,
    /// The searches after it.
    pub searches: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub async fn measure(quick: bool, scratch: &Path) -> Result<Section> {
    let http = crate::client::http_client(8)?;
    let fixtures_addrs = free_addrs(5)?;
    let mut fixtures = ChildGuard::spawn(Spawn {
        name: "fixtures",
        args: [
            "serve-fixture",
            "--varied",
            "--tools",
            &PER_SERVER.to_string(),
            "--name",
            "catalog",
        ]
        .into_iter()
        .map(String::from)
        .chain(
            fixtures_addrs
                .iter()
                .flat_map(|a| ["--listen".to_string(), a.clone()]),
        )
        .collect(),
        env: Vec::new(),
        log: scratch.join("fixtures.log"),
        valgrind: None,
    })?;
    for addr in &fixtures_addrs {
        fixtures
            .wait_healthy(
                &format!("http://{addr}"),
                std::time::Duration::from_secs(30),
            )
            .await?;
    }
    let urls: Vec<String> = fixtures_addrs
        .iter()
        .map(|a| format!("http://{a}/mcp"))
        .collect();

    // Listing size: 2,000 tools, listed whole and in search mode.
    let (mut off, off_base) = gateway(scratch, "off").await?;
    register(&http, &off_base, &urls[..1]).await?;
    let (full_listing_bytes, full_listing_pages) = listing(&http, &off_base).await?;
    off.stop(std::time::Duration::from_secs(5))?;
    let (mut on, on_base) = gateway(scratch, "on").await?;
    register(&http, &on_base, &urls[..1]).await?;
    let (search_listing_bytes, pages) = listing(&http, &on_base).await?;
    if pages != 1 {
        bail!("search mode listed {pages} pages");
    }

    // Search latency: 10,000 tools.
    register(&http, &on_base, &urls[1..]).await?;
    let began = Instant::now();
    let hits = search(&http, &on_base, QUERIES[0]).await?;
    let first_search_ms = began.elapsed().as_secs_f64() * 1000.0;
    if hits == 0 {
        bail!("the first search found nothing");
    }
    let rounds = if quick { 2 } else { 40 };
    let mut histogram = Histogram::<u64>::new(3)?;
    for _ in 0..rounds {
        for query in QUERIES {
            let began = Instant::now();
            search(&http, &on_base, query).await?;
            histogram.record(began.elapsed().as_micros() as u64)?;
        }
    }
    on.stop(std::time::Duration::from_secs(5))?;
    fixtures.stop(std::time::Duration::from_secs(5))?;
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(Section {
        full_listing_bytes,
        full_listing_pages,
        search_listing_bytes,
        catalog_tools: PER_SERVER * urls.len(),
        first_search_ms,
        searches: histogram.len(),
        p50_ms: ms(histogram.value_at_quantile(0.5)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        max_ms: ms(histogram.max()),
    })
}

/// A gateway (`serve-gateway`) with `tool_search = MODE`, healthy: it and its base URL.
async fn gateway(scratch: &Path, mode: &str) -> Result<(ChildGuard, String)> {
    let addr = free_addrs(1)?.remove(0);
    let mut child = ChildGuard::spawn(Spawn {
        name: "gateway",
        args: vec![
            "serve-gateway".into(),
            "--listen".into(),
            addr.clone(),
            "--store".into(),
            scratch
                .join(format!("gw-search-{mode}.db"))
                .display()
                .to_string(),
        ],
        env: vec![
            ("MCP_BEARER_TOKEN".into(), TOKEN.into()),
            ("GATEWAY_TOOL_SEARCH".into(), mode.into()),
            ("GATEWAY_CALL_LOG".into(), "false".into()),
        ],
        log: scratch.join(format!("gateway-search-{mode}.log")),
        valgrind: None,
    })?;
    let base = format!("http://{addr}");
    child
        .wait_healthy(&base, std::time::Duration::from_secs(30))
        .await?;
    Ok((child, base))
}

async fn register(http: &reqwest::Client, base: &str, urls: &[String]) -> Result<()> {
    for (i, url) in urls.iter().enumerate() {
        let name = format!("catalog-{}", i + 1);
        let resp = http
            .post(format!("{base}/register"))
            .bearer_auth(TOKEN)
            .json(&json!({"name": name, "url": url}))
            .send()
            .await
            .with_context(|| format!("POST {base}/register"))?;
        if !resp.status().is_success() {
            let status = resp.status();
            bail!("registering {url}: HTTP {status}: {}", resp.text().await?);
        }
    }
    Ok(())
}

async fn rpc(http: &reqwest::Client, base: &str, method: &str, params: Value) -> Result<String> {
    let resp = http
        .post(format!("{base}/mcp"))
        .bearer_auth(TOKEN)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .send()
        .await
        .with_context(|| format!("{method} to {base}"))?;
    let status = resp.status();
    let body = resp.text().await?;
    if !status.is_success() {
        bail!("{method}: HTTP {status}: {body}");
    }
    Ok(body)
}

/// Every page of `tools/list`: bytes in all, and pages.
async fn listing(http: &reqwest::Client, base: &str) -> Result<(usize, usize)> {
    let (mut bytes, mut pages, mut cursor) = (0, 0, None::<String>);
    loop {
        let params = match &cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let body = rpc(http, base, "tools/list", params).await?;
        bytes += body.len();
        pages += 1;
        let value: Value = serde_json::from_str(&body)?;
        match value["result"]["nextCursor"].as_str() {
            Some(next) if pages < 1000 => cursor = Some(next.to_string()),
            Some(_) => bail!("tools/list did not end within 1000 pages"),
            None => return Ok((bytes, pages)),
        }
    }
}

/// One `search_tools`: how many results it returned.
async fn search(http: &reqwest::Client, base: &str, query: &str) -> Result<usize> {
    let body = rpc(
        http,
        base,
        "tools/call",
        json!({"name": "search_tools", "arguments": {"query": query, "limit": 10}}),
    )
    .await?;
    let value: Value = serde_json::from_str(&body)?;
    value["result"]["structuredContent"]["results"]
        .as_array()
        .map(Vec::len)
        .with_context(|| format!("search_tools answered {body}"))
}

pub fn markdown(s: &Section) -> String {
    format!(
        "| measure | value |\n| --- | --- |\n\
         | `tools/list` of 2,000 tools, every page ({} pages) | {} bytes |\n\
         | `tools/list` in search mode (3 meta-tools) | {} bytes ({:.2}% of it) |\n\
         | first `search_tools` over {} tools (builds the index) | {:.1} ms |\n\
         | `search_tools` over {} tools, {} searches: p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |\n",
        s.full_listing_pages,
        s.full_listing_bytes,
        s.search_listing_bytes,
        100.0 * s.search_listing_bytes as f64 / s.full_listing_bytes.max(1) as f64,
        s.catalog_tools,
        s.first_search_ms,
        s.catalog_tools,
        s.searches,
        s.p50_ms,
        s.p99_ms,
        s.max_ms,
    )
}
