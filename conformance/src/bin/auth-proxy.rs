//! The `auth-proxy` binary: forwards every request to `--upstream` with
//! `Authorization: Bearer <token>` added, until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use clap::Parser;
use conformance::proxy::{self, Config, DEFAULT_LISTEN};

/// Streaming HTTP reverse proxy that adds a Bearer token: method, path, query, headers
/// (Host and Origin included) and status pass through unchanged, bodies stream both
/// ways (SSE included).
#[derive(Debug, Parser)]
#[command(name = "auth-proxy", version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: String,

    /// Upstream base URL, e.g. http://127.0.0.1:3001.
    #[arg(long)]
    upstream: String,

    /// Bearer token put on every forwarded request.
    #[arg(
        long,
        env = "MCP_BEARER_TOKEN",
        default_value = service_kit::DEFAULT_TOKEN,
        hide_env_values = true
    )]
    token: String,

    /// Log one JSON object per line instead of human-readable lines.
    #[arg(long)]
    log_json: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    service_kit::logging::init(cli.log_json);
    let shutdown = service_kit::shutdown::on_signal();
    let result = async {
        let config = Config::new(&cli.upstream, cli.token)?;
        let listener = service_kit::serve::bind(&cli.listen).await?;
        proxy::run(config, listener, shutdown).await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("auth-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}
