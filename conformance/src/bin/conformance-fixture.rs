//! The `conformance-fixture` binary: the conformance suite's fixture MCP server at
//! `/mcp` (and `GET /health`) until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use clap::Parser;
use conformance::fixture::{self, Config, DEFAULT_LISTEN};

/// MCP server exposing the fixtures the official conformance suite's server scenarios
/// expect (tools test_*, resources test://*, prompts test_*, completions, logging),
/// over streamable HTTP at /mcp; health at /health.
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

    /// Log one JSON object per line instead of human-readable lines.
    #[arg(long)]
    log_json: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    service_kit::logging::init(cli.log_json);
    let config = Config {
        allowed_hosts: cli.allowed_hosts,
    };
    let shutdown = service_kit::shutdown::on_signal();
    let result = async {
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
