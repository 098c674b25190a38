//! `gateway`: parse the command line and configuration, then run the library.

use std::path::PathBuf;

use clap::Parser;
use gateway::config::{Config, Overrides};

/// MCP federation gateway: one streamable-HTTP MCP endpoint (/mcp) in front of many MCP
/// servers, which register with POST /register. Every route but /health needs
/// "Authorization: Bearer <token>".
///
/// Configuration is layered: defaults, then the TOML file (--config), then environment
/// (MCP_BEARER_TOKEN, GATEWAY_LISTEN, GATEWAY_STORE, GATEWAY_ALLOWED_HOSTS,
/// GATEWAY_UPSTREAMS, GATEWAY_CALL_TIMEOUT_MS, GATEWAY_CONNECT_TIMEOUT_MS,
/// GATEWAY_HEALTH_INTERVAL_MS, GATEWAY_MAX_BODY_BYTES, GATEWAY_BALANCE,
/// GATEWAY_BREAKER_FAILURES, GATEWAY_BREAKER_COOLDOWN_MS, GATEWAY_DRAIN_TIMEOUT_MS,
/// GATEWAY_LIST_PAGE_SIZE, GATEWAY_ALLOWED_ORIGINS,
/// GATEWAY_LOG_JSON), then these flags.
///
/// With a subcommand, it is instead the operator's client of a running gateway
/// (--url or GATEWAY_URL, --token or MCP_BEARER_TOKEN): `gateway services`,
/// `gateway tools`, `gateway calls`, `gateway call TOOL --args JSON`,
/// `gateway register NAME URL`, `gateway unregister NAME`; add --json for scripts.
#[derive(Parser, Debug)]
#[command(name = "gateway", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<gateway::cli::Command>,
    #[command(flatten)]
    remote: gateway::cli::Remote,
    /// TOML configuration file.
    #[arg(long, short, env = "GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:3001].
    #[arg(long)]
    listen: Option<String>,
    /// Registration store (SQLite file) [default: gateway.db].
    #[arg(long)]
    store: Option<PathBuf>,
    /// Log JSON lines instead of human-readable ones.
    #[arg(long)]
    log_json: bool,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Some(command) = cli.command {
        match gateway::cli::run(cli.remote, command).await {
            Ok(out) => {
                // A reader that stops early (`| head`) is not an error.
                use std::io::Write;
                let mut stdout = std::io::stdout().lock();
                if let Err(e) = writeln!(stdout, "{out}")
                    && e.kind() != std::io::ErrorKind::BrokenPipe
                {
                    eprintln!("gateway: cannot write the output: {e}");
                    std::process::exit(2);
                }
                return;
            }
            Err(failure) => {
                eprintln!("gateway: {}", failure.message);
                std::process::exit(failure.status);
            }
        }
    }
    let overrides = Overrides {
        listen: cli.listen,
        store: cli.store,
        log_json: cli.log_json.then_some(true),
    };
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gateway: {e}");
            std::process::exit(2);
        }
    };
    let _tracing =
        match gateway::observe::traces::init(config.log_json, config.otlp_endpoint.as_deref()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("gateway: cannot start tracing: {e:#}");
                std::process::exit(2);
            }
        };
    let shutdown = service_kit::shutdown::on_signal();
    let result = async {
        let listener = service_kit::serve::bind(&config.listen).await?;
        gateway::run(config, listener, shutdown).await
    }
    .await;
    if let Err(e) = result {
        eprintln!("gateway: {e:#}");
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
