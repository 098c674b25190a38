//! `gateway`: parse the command line and configuration, then run the library.
//!
//! Invariant: main only parses the command line and starts the library's `run`, the
//! CLI or the stdio bridge.

use std::path::PathBuf;

use clap::Parser;
use gateway::config::{Config, Overrides};

/// MCP federation gateway: one streamable-HTTP MCP endpoint (/mcp) in front of many MCP
/// servers, which register with POST /register. Every route but /health needs
/// "Authorization: Bearer <token>".
///
/// Configuration is layered: defaults, then the TOML file (--config), then the
/// environment (the variables are listed below), then these flags (--token, --listen,
/// --store, --log-json). An unknown key or variable stops start-up.
///
/// With a subcommand, it is instead the operator's client of a running gateway
/// (--url or GATEWAY_URL, --token or MCP_BEARER_TOKEN): `gateway services`,
/// `gateway tools`, `gateway calls`, `gateway call TOOL --args JSON`,
/// `gateway register NAME URL`, `gateway import FILE|URL`, `gateway unregister NAME`,
/// `gateway start|stop|restart NAME`,
/// `gateway logs NAME`; add --json for scripts. `gateway stdio` is an MCP server on
/// stdin/stdout relaying to the gateway's /mcp (one desktop `mcpServers` entry).
#[derive(Parser, Debug)]
#[command(name = "gateway", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Subcommand>,
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

#[derive(clap::Subcommand, Debug)]
enum Subcommand {
    #[command(flatten)]
    Operator(gateway::cli::Command),
    /// An MCP server on stdin/stdout that relays every message to the gateway's /mcp
    /// (--url, with /mcp appended when it has no path; --token or MCP_BEARER_TOKEN), both
    /// ways: one `mcpServers` entry in a desktop client reaches the whole federation.
    /// Only JSON-RPC goes to stdout; logs go to stderr (RUST_LOG).
    Stdio,
}

/// The command line, with `--help` listing every setting's environment variable from
/// the configuration's own definition.
fn command() -> clap::Command {
    use clap::CommandFactory;
    let command = Cli::command();
    let about = command
        .get_long_about()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let vars = Config::environment_variables();
    let mut lines = String::new();
    let mut line = String::from(" ");
    for v in vars {
        if line.len() + v.len() > 86 {
            lines.push_str(&line);
            lines.push('\n');
            line = String::from(" ");
        }
        line.push(' ');
        line.push_str(&v);
    }
    lines.push_str(&line);
    command.long_about(format!(
        "{about}\n\nEnvironment (each is a key of the TOML file, lower-cased without the GATEWAY_ prefix; token is MCP_BEARER_TOKEN; credentials, jwt and import_variables are TOML only):\n{lines}"
    ))
}

fn main() {
    use clap::FromArgMatches;
    let matches = command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // `--token` on the command line sets the server's token too (it is the CLI's
    // token otherwise; both default to MCP_BEARER_TOKEN).
    let token_flag = (matches.value_source("token")
        == Some(clap::parser::ValueSource::CommandLine))
    .then(|| cli.remote.token.clone());
    if let Some(command) = cli.command {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| {
                eprintln!("gateway: cannot start: {e}");
                std::process::exit(2);
            });
        let command = match command {
            Subcommand::Operator(command) => command,
            // Exits without dropping the runtime: a read of stdin may still be blocked.
            Subcommand::Stdio => std::process::exit(
                runtime.block_on(gateway::bridge::run(&cli.remote.url, &cli.remote.token)),
            ),
        };
        match runtime.block_on(gateway::cli::run(cli.remote, command)) {
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
        token: token_flag,
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
    let runtime = service_kit::alloc::runtime()
        .worker_threads(config.workers())
        .build()
        .unwrap_or_else(|e| {
            eprintln!("gateway: cannot start: {e}");
            std::process::exit(2);
        });
    runtime.block_on(serve(config));
}

async fn serve(config: Config) {
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
        super::command().debug_assert();
    }

    #[test]
    fn help_lists_every_settings_variable() {
        let help = super::command().render_long_help().to_string();
        for v in gateway::Config::environment_variables() {
            assert!(help.contains(&v), "{v} missing from --help");
        }
    }
}
