//! The `conformance-fixture` binary: the conformance suite's fixture MCP server at
//! `/mcp` (and `GET /health`) until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use clap::Parser;
use conformance::fixture::{self, Config, DEFAULT_LISTEN, Revision};

/// MCP server exposing the fixtures the official conformance suite's server scenarios
/// expect (tools test_*, resources test://*, prompts test_*, completions, logging),
/// over streamable HTTP at /mcp; health at /health.
///
/// --revision 2026 (the default) serves every protocol revision up to 2026-07-28:
/// 2025-era sessions as before, and 2026-07-28 requests (server/discover, stateless,
/// multi round-trip requests, subscriptions/listen, the tasks extension) with the
/// suite's 2026 diagnostic tools; the 2025-era tools that ask the client mid-call
/// (test_sampling, test_elicitation*) ask a 2026-07-28 request with input_required.
/// --revision 2025 serves only the revisions up to 2025-11-25 (no server/discover, no
/// 2026-07-28 protocol), so a client must talk 2025-11-25 to it; its sessions get the
/// same 2026 diagnostic tools (but the tasks), implemented the 2025 way (requests to
/// the client within the call, notifications on the session), for scoring a client
/// that translates between the eras.
#[derive(Debug, Parser)]
#[command(name = "conformance-fixture", version)]
struct Cli {
    /// Address to listen on (port 0: any free port; the bound address is logged).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: String,

    /// Extra Host header names accepted on /mcp besides loopback, comma-separated
    /// ("*" accepts any).
    #[arg(long, value_delimiter = ',')]
    allowed_hosts: Vec<String>,

    /// The protocol revisions served: 2025 (2024-11-05 to 2025-11-25 only) or 2026
    /// (every revision, 2026-07-28 included).
    #[arg(long, default_value_t = Revision::V2026)]
    revision: Revision,

    /// Log one JSON object per line instead of human-readable lines.
    #[arg(long)]
    log_json: bool,

    /// Serve one session on stdin and stdout instead of HTTP (logs go to stderr); exit
    /// when stdin closes.
    #[arg(long)]
    stdio: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.stdio {
        // stdout carries the protocol: every log line goes to stderr.
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .init();
    } else {
        service_kit::logging::init(cli.log_json);
    }
    let config = Config {
        allowed_hosts: cli.allowed_hosts,
        revision: cli.revision,
    };
    tracing::info!(revision = %cli.revision, "conformance fixture revisions");
    let shutdown = service_kit::shutdown::on_signal();
    let result = async {
        if cli.stdio {
            return fixture::run_stdio(config, shutdown).await;
        }
        let listener = service_kit::serve::bind(&cli.listen).await?;
        fixture::run(config, listener, shutdown).await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conformance-fixture: {e:#}");
            ExitCode::FAILURE
        }
    }
}
