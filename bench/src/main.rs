//! `mcp-bench`: the gateway benchmark. One binary plays every part: `run` is the
//! benchmark (a load generator speaking real MCP over streamable HTTP), and hidden role
//! subcommands let it spawn *itself* as the gateway, the shopping-service backend and the
//! fixture MCP servers, each in its own process, so that RSS and callgrind see the
//! gateway alone.
//!
//! Modules and what each owns:
//! - [`scenarios`]: the benchmark itself: starts the processes, runs every scenario
//!   direct and through the gateway, and builds the result rows.
//! - [`client`]: a lean MCP client (initialize, sessions, `tools/call`, `tools/list`,
//!   JSON and SSE bodies) on a pooled `TCP_NODELAY` reqwest client.
//! - [`load`]: closed loops (sequential, concurrent, session set-up, idle sessions) and
//!   their HDR-histogram statistics.
//! - [`procs`]: child processes (a guard that stops them on drop), ports, `/health`
//!   waits, RSS from `/proc`.
//! - [`callgrind`]: instructions per call under `valgrind --tool=callgrind`.
//! - [`roles`]: the role subcommands (`serve-gateway`, `serve-shopping`,
//!   `serve-fixture`) and the fixture MCP server.
//! - [`report`]: the markdown table and its header (date, machine, commit), the
//!   sections after it, and the same as JSON.
//! - [`wrk`]: the wrk reference: the same call measured with `wrk` as the client,
//!   plain and capable sessions, direct and through the gateway.
//! - [`search`]: tool search: `tools/list` size in search mode against the full
//!   listing (2,000 tools), and `search_tools` latency over 10,000 tools.
//! - [`stdio`]: a stdio upstream: shopping-service's stdio handler called over its
//!   pipe by a lean line client, and through the gateway (which runs it) with `wrk`.
//! - [`cluster`]: replicas on one PostgreSQL store (#15): per-call cost against the
//!   SQLite store, registration propagation between replicas, and wrk through HAProxy
//!   to one replica and to two.
//!
//! Load only ever targets 127.0.0.1, and every loop is bounded in count and time.

mod callgrind;
mod client;
mod cluster;
mod load;
mod procs;
mod report;
mod roles;
mod scenarios;
mod search;
mod stdio;
mod wrk;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// MCP gateway benchmark: direct vs through-the-gateway, side by side in one run.
#[derive(Parser, Debug)]
#[command(name = "mcp-bench", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run every scenario and print the results table (also written to --out).
    Run {
        /// Run every scenario briefly (CI smoke run; numbers are not meaningful).
        #[arg(long)]
        quick: bool,
        /// Where to write the markdown results (the JSON goes beside it, as .json).
        #[arg(long, default_value = "bench-results/latest.md")]
        out: PathBuf,
        /// Skip the callgrind instruction counts even when valgrind is installed.
        #[arg(long)]
        no_callgrind: bool,
        /// Run only these scenario groups (comma-separated).
        #[arg(long, value_delimiter = ',', value_enum)]
        only: Vec<scenarios::Group>,
    },
    /// A stdio upstream: shopping-service's stdio handler over its pipe by a lean line
    /// client (1 and 16 calls in flight), and through the gateway, which runs it, with
    /// wrk (1 and 16 connections).
    Stdio {
        /// One-second runs without warm-up (smoke run; numbers are not meaningful).
        #[arg(long)]
        quick: bool,
        /// Where to write the markdown results (the JSON goes beside it, as .json).
        #[arg(long, default_value = "bench-results/stdio.md")]
        out: PathBuf,
    },
    /// Run only the wrk reference (`run --only wrk`, but failing when wrk is missing and
    /// cannot be installed): latency at 1 connection, throughput at 16 and 64, CPU and
    /// context switches per call, plain and capable sessions, direct and via the gateway.
    Wrk {
        /// One-second runs without warm-up (smoke run; numbers are not meaningful).
        #[arg(long)]
        quick: bool,
        /// Where to write the markdown results (the JSON goes beside it, as .json).
        #[arg(long, default_value = "bench-results/wrk.md")]
        out: PathBuf,
        /// Seconds each measured wrk run lasts (default 5, 1 with --quick).
        #[arg(long)]
        seconds: Option<u64>,
        /// Seconds of the unrecorded wrk run before each measured one (default 1, 0
        /// with --quick).
        #[arg(long)]
        warmup: Option<u64>,
    },
    /// Drive an already running MCP endpoint: `clients` sessions calling `getProductById`
    /// (or TOOL) in a closed loop, `calls` calls in all; prints latency and rate. For
    /// profiling a gateway started by hand (perf, strace, valgrind).
    #[command(hide = true)]
    Load {
        /// The MCP endpoint, e.g. http://127.0.0.1:3001/mcp.
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 1000)]
        calls: u64,
        #[arg(long, default_value_t = 1)]
        clients: u64,
        #[arg(long, default_value = "getProductById")]
        tool: String,
        #[arg(long, default_value = r#"{"id":"123"}"#)]
        arguments: String,
        /// Sessionless plain-JSON posts instead of sessions.
        #[arg(long)]
        sessionless: bool,
        #[arg(long, env = "MCP_BEARER_TOKEN", default_value = "mcp-token-123")]
        token: String,
    },
    /// (internal) Serve the gateway, as the `gateway` binary does.
    #[command(hide = true)]
    ServeGateway {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        store: PathBuf,
        /// A TOML configuration file (stdio upstreams, say).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// (internal) Serve shopping-service's stdio handler on stdin/stdout.
    #[command(hide = true)]
    ServeShoppingStdio,
    /// (internal) Serve shopping-service (session mode) and, optionally, the same shop
    /// handler in stateless JSON mode on a second address.
    #[command(hide = true)]
    ServeShopping {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        stateless_listen: Option<String>,
        /// The Bearer token /mcp requires (both servers).
        #[arg(long)]
        token: String,
    },
    /// (internal) Serve fixture MCP servers with N tools each, one per --listen address,
    /// named NAME-1, NAME-2, ...
    #[command(hide = true)]
    ServeFixture {
        #[arg(long, required = true)]
        listen: Vec<String>,
        #[arg(long)]
        tools: usize,
        #[arg(long)]
        name: String,
        /// Tools about different things (for tool search), not one template.
        #[arg(long)]
        varied: bool,
    },
    /// Replicas on one PostgreSQL store (#15), against a throwaway PostgreSQL on
    /// loopback: per-call cost of the PostgreSQL store against the SQLite store (wrk, 1
    /// and 16 connections, side by side), registration on replica A heard as
    /// `tools/list_changed` by a client of replica B (N cycles), and wrk at 16 and 64
    /// connections through HAProxy (deploy/haproxy/haproxy.cfg) to one replica, then two.
    Cluster {
        /// Each part briefly: one-second wrk runs without warm-up, one round, five
        /// cycles (smoke run; numbers are not meaningful).
        #[arg(long)]
        quick: bool,
        /// Where to write the markdown results (the JSON goes beside it, as .json).
        #[arg(long, default_value = "bench-results/cluster.md")]
        out: PathBuf,
        /// Seconds each measured wrk run lasts (default 5, 1 with --quick).
        #[arg(long)]
        seconds: Option<u64>,
        /// Seconds of the unrecorded wrk run before each measured one (default 1, 0
        /// with --quick).
        #[arg(long)]
        warmup: Option<u64>,
        /// Side-by-side rounds of the store and balancer parts, alternating their
        /// order (default 2, 1 with --quick).
        #[arg(long)]
        rounds: Option<u32>,
        /// Register/unregister cycles of the propagation part (default 100, 5 with
        /// --quick).
        #[arg(long)]
        iterations: Option<u32>,
        /// Run only these parts (comma-separated).
        #[arg(long, value_delimiter = ',', value_enum)]
        only: Vec<cluster::Part>,
        /// The HAProxy configuration (default: the repository's deploy/haproxy/haproxy.cfg).
        #[arg(long)]
        haproxy_cfg: Option<PathBuf>,
    },
    /// Tool search at catalog sizes agents cannot hold: `tools/list` of a 2,000-tool
    /// catalog in search mode against the full listing, and `search_tools` latency over
    /// a 10,000-tool catalog (the first search, which builds the index, and the rest).
    Search {
        /// Fewer searches (smoke run; numbers are not meaningful).
        #[arg(long)]
        quick: bool,
        /// Where to write the markdown results (the JSON goes beside it, as .json).
        #[arg(long, default_value = "bench-results/search.md")]
        out: PathBuf,
    },
}

fn main() {
    // The gateway's role runs as the gateway binary does: its workers give freed memory
    // back when its trimmer asks.
    let runtime = match service_kit::alloc::runtime().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mcp-bench: cannot start: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(run());
}

async fn run() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            quick,
            out,
            no_callgrind,
            only,
        } => {
            scenarios::run(scenarios::Options {
                quick,
                out,
                callgrind: !no_callgrind,
                only,
                wrk: wrk::Params::new(quick),
                require_wrk: false,
            })
            .await
        }
        Command::Wrk {
            quick,
            out,
            seconds,
            warmup,
        } => {
            let defaults = wrk::Params::new(quick);
            scenarios::run(scenarios::Options {
                quick,
                out,
                callgrind: false,
                only: vec![scenarios::Group::Wrk],
                wrk: wrk::Params {
                    warmup_secs: warmup.unwrap_or(defaults.warmup_secs),
                    measure_secs: seconds.unwrap_or(defaults.measure_secs).max(1),
                },
                require_wrk: true,
            })
            .await
        }
        Command::Load {
            url,
            calls,
            clients,
            tool,
            arguments,
            sessionless,
            token,
        } => {
            scenarios::load_command(scenarios::LoadOptions {
                url,
                calls,
                clients,
                tool,
                arguments,
                sessionless,
                token,
            })
            .await
        }
        Command::ServeGateway {
            listen,
            store,
            config,
        } => roles::serve_gateway(listen, store, config).await,
        Command::ServeShoppingStdio => roles::serve_shopping_stdio().await,
        Command::Stdio { quick, out } => stdio_command(quick, out).await,
        Command::ServeShopping {
            listen,
            stateless_listen,
            token,
        } => roles::serve_shopping(listen, stateless_listen, token).await,
        Command::ServeFixture {
            listen,
            tools,
            name,
            varied,
        } => roles::serve_fixtures(listen, tools, name, varied).await,
        Command::Search { quick, out } => search_command(quick, out).await,
        Command::Cluster {
            quick,
            out,
            seconds,
            warmup,
            rounds,
            iterations,
            only,
            haproxy_cfg,
        } => {
            let defaults = wrk::Params::new(quick);
            let opts = cluster::Options {
                quick,
                params: wrk::Params {
                    warmup_secs: warmup.unwrap_or(defaults.warmup_secs),
                    measure_secs: seconds.unwrap_or(defaults.measure_secs).max(1),
                },
                rounds: rounds.unwrap_or(if quick { 1 } else { 2 }).max(1),
                iterations: iterations.unwrap_or(if quick { 5 } else { 100 }).max(1),
                only,
                haproxy_cfg: haproxy_cfg.unwrap_or_else(cluster::default_haproxy_cfg),
            };
            cluster_command(opts, out).await
        }
    };
    if let Err(e) = result {
        eprintln!("mcp-bench: {e:#}");
        std::process::exit(1);
    }
}

/// `mcp-bench stdio`: measures, then writes the markdown report and the JSON beside it.
async fn stdio_command(quick: bool, out: PathBuf) -> anyhow::Result<()> {
    let load_at_start = report::load_average();
    let scratch = tempfile::tempdir()?;
    let section = stdio::measure(
        wrk::Params::new(quick),
        scratch.path(),
        scenarios::gateway_workers(),
    )
    .await?;
    write_report(
        quick,
        load_at_start,
        &out,
        "A stdio upstream: direct over its pipe, and through the gateway",
        stdio::markdown(&section),
        &section,
    )
}

/// `mcp-bench search`: measures, then writes the markdown report and the JSON beside it.
async fn search_command(quick: bool, out: PathBuf) -> anyhow::Result<()> {
    let load_at_start = report::load_average();
    let scratch = tempfile::tempdir()?;
    let section = search::measure(quick, scratch.path()).await?;
    write_report(
        quick,
        load_at_start,
        &out,
        "Tool search: listing size and search latency",
        search::markdown(&section),
        &section,
    )
}

/// `mcp-bench cluster`: measures, then writes the markdown report and the JSON beside it.
async fn cluster_command(opts: cluster::Options, out: PathBuf) -> anyhow::Result<()> {
    let load_at_start = report::load_average();
    let scratch = tempfile::Builder::new()
        .prefix("mcp-bench-cluster-")
        .tempdir()?;
    let section = cluster::measure(&opts, scratch.path()).await?;
    write_report(
        opts.quick,
        load_at_start,
        &out,
        "Replicas on PostgreSQL (#15)",
        cluster::markdown(&section),
        &section,
    )
}

/// One section's report: the markdown (printed too) at `out`, `data` as JSON beside it.
fn write_report(
    quick: bool,
    load_at_start: String,
    out: &std::path::Path,
    title: &str,
    markdown: String,
    data: &impl serde::Serialize,
) -> anyhow::Result<()> {
    let header = report::Header {
        quick,
        load_at_start,
        notes: Vec::new(),
    };
    let text = report::render(
        &header,
        &[],
        &[report::Section {
            title: title.into(),
            lines: vec![markdown],
            rows: Vec::new(),
            notes: Vec::new(),
        }],
    );
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, &text)?;
    std::fs::write(
        out.with_extension("json"),
        serde_json::to_string_pretty(data)?,
    )?;
    println!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
