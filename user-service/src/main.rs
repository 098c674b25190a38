//! The `user-service` binary: command line and environment into a [`Config`], then
//! [`user_service::run`] until SIGTERM or Ctrl-C; with `--stdio`,
//! [`user_service::stdio_server`] on stdin/stdout until EOF or SIGTERM (logs on stderr,
//! no port, no registration).

use std::process::ExitCode;

use clap::{Parser, builder::BoolishValueParser};
use service_kit::logging::Output;
use user_service::{Config, DEFAULT_LISTEN};

/// Demo user directory served as an MCP server: tools getUserById, searchUsers,
/// listUsers and getUserPreferences over streamable HTTP at /mcp, health at /health,
/// or over stdin/stdout with --stdio. In HTTP mode it registers itself with the MCP
/// federation gateway on start-up (unless --no-register), retrying while the gateway is
/// unreachable.
#[derive(Debug, Parser)]
#[command(name = "user-service", version)]
struct Cli {
    /// Serve MCP over stdin/stdout (newline-delimited JSON-RPC) instead of HTTP: logs go
    /// to stderr, nothing listens, nothing registers; exits when stdin closes.
    #[arg(long)]
    stdio: bool,

    /// Address to listen on.
    #[arg(long, env = "USER_SERVICE_LISTEN", default_value = DEFAULT_LISTEN)]
    listen: String,

    /// MCP URL the gateway should use to reach this service
    /// [default: http://<listen address>/mcp].
    #[arg(long, env = "USER_SERVICE_PUBLIC_URL", value_parser = http_url)]
    public_url: Option<String>,

    /// Base URL of the gateway to register with.
    #[arg(
        long,
        env = "GATEWAY_URL",
        default_value = service_kit::DEFAULT_GATEWAY_URL,
        value_parser = http_url
    )]
    gateway_url: String,

    /// Do not register with the gateway.
    #[arg(long, env = "NO_REGISTER", value_parser = BoolishValueParser::new())]
    no_register: bool,

    /// Bearer token presented to the gateway.
    #[arg(
        long,
        env = "MCP_BEARER_TOKEN",
        default_value = service_kit::DEFAULT_TOKEN,
        hide_env_values = true
    )]
    token: String,

    /// Bearer token this service requires on /mcp; the gateway is given it at
    /// registration and presents it [default: the --token value, MCP_BEARER_TOKEN].
    #[arg(long, env = "USER_SERVICE_TOKEN", hide_env_values = true)]
    service_token: Option<String>,

    /// Extra Host header names accepted on /mcp besides loopback, comma-separated
    /// ("*" accepts any).
    #[arg(long, env = "ALLOWED_HOSTS", value_delimiter = ',')]
    allowed_hosts: Vec<String>,

    /// Log one JSON object per line instead of human-readable lines.
    #[arg(long, env = "LOG_JSON", value_parser = BoolishValueParser::new())]
    log_json: bool,
}

impl Cli {
    fn into_config(self) -> Config {
        let service_token = self
            .service_token
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| self.token.clone());
        Config {
            listen: self.listen,
            public_url: self.public_url,
            gateway_url: (!self.no_register).then_some(self.gateway_url),
            token: self.token,
            service_token,
            allowed_hosts: service_kit::mcp::allowed_hosts(self.allowed_hosts),
        }
    }
}

/// Accepts absolute `http://` and `https://` URLs with a host.
fn http_url(value: &str) -> Result<String, String> {
    let url = url::Url::parse(value).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("expected an http:// or https:// URL".into());
    }
    Ok(value.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.stdio {
        service_kit::logging::init_to(cli.log_json, Output::Stderr);
        return service_kit::stdio::main("user-service", |_shutdown| user_service::stdio_server())
            .await;
    }
    service_kit::logging::init(cli.log_json);
    let config = cli.into_config();
    let listen = config.listen.clone();
    service_kit::serve::main("user-service", &listen, |listener, shutdown| {
        user_service::run(config, listener, shutdown)
    })
    .await
}
