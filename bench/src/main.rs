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
//! - [`report`]: the markdown table and its header (date, machine, commit).
//!
//! Load only ever targets 127.0.0.1, and every loop is bounded in count and time.

mod callgrind;
mod client;
mod load;
mod procs;
mod report;
mod roles;
mod scenarios;

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
        /// Where to write the markdown results.
        #[arg(long, default_value = "bench-results/latest.md")]
        out: PathBuf,
        /// Skip the callgrind instruction counts even when valgrind is installed.
        #[arg(long)]
        no_callgrind: bool,
        /// Run only these scenario groups (comma-separated).
        #[arg(long, value_delimiter = ',', value_enum)]
        only: Vec<scenarios::Group>,
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
    },
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
    },
}

#[tokio::main]
async fn main() {
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
        Command::ServeGateway { listen, store } => roles::serve_gateway(listen, store).await,
        Command::ServeShopping {
            listen,
            stateless_listen,
            token,
        } => roles::serve_shopping(listen, stateless_listen, token).await,
        Command::ServeFixture {
            listen,
            tools,
            name,
        } => roles::serve_fixtures(listen, tools, name).await,
    };
    if let Err(e) = result {
        eprintln!("mcp-bench: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
