//! The shopping-service binary: parses the command line (with environment fallbacks),
//! sets up logging and signal handling, binds, and runs [`shopping_service::run`]; with
//! `--stdio`, serves [`shopping_service::stdio_server`] on stdin/stdout instead (logs on
//! stderr, no port, no registration).

use std::process::ExitCode;

use clap::{Parser, builder::BoolishValueParser};
use service_kit::logging::Output;
use shopping_service::{Config, DEFAULT_LISTEN, run, stdio_server};

/// Demo shop MCP server: a product catalog, baskets, orders and recommendations,
/// served over streamable HTTP at /mcp (plus GET /health), or over stdin/stdout with
/// --stdio. Registers itself with the MCP gateway (HTTP mode) and reads user
/// preferences from user-service through it.
#[derive(Debug, Parser)]
#[command(name = "shopping-service", version, long_about = None)]
struct Cli {
    /// Serve MCP over stdin/stdout (newline-delimited JSON-RPC) instead of HTTP: logs go to stderr, nothing listens, nothing registers; exits when stdin closes. The gateway is still used for recommendations.
    #[arg(long)]
    stdio: bool,

    /// Address to listen on.
    #[arg(long, env = "SHOPPING_SERVICE_LISTEN", default_value = DEFAULT_LISTEN)]
    listen: String,

    /// MCP URL the gateway should use to reach this service [default: http://<listen address>/mcp].
    #[arg(long, env = "SHOPPING_SERVICE_PUBLIC_URL")]
    public_url: Option<String>,

    /// Base URL of the gateway, for self-registration and service-to-service calls; empty disables both.
    #[arg(long, env = "GATEWAY_URL", default_value = service_kit::DEFAULT_GATEWAY_URL)]
    gateway_url: String,

    /// Do not register with the gateway (it is still used for service-to-service calls).
    #[arg(long, env = "NO_REGISTER", value_parser = BoolishValueParser::new(), default_value_t = false,
        num_args = 0, default_missing_value = "true")]
    no_register: bool,

    /// Bearer token for the gateway.
    #[arg(long, env = "MCP_BEARER_TOKEN", default_value = service_kit::DEFAULT_TOKEN, hide_env_values = true, hide_default_value = true)]
    token: String,

    /// Bearer token this service requires on /mcp; the gateway is given it at registration and presents it [default: the --token value, MCP_BEARER_TOKEN].
    #[arg(long, env = "SHOPPING_SERVICE_TOKEN", hide_env_values = true)]
    service_token: Option<String>,

    /// Extra Host header names to accept besides loopback, comma-separated ("*" accepts any).
    #[arg(long, env = "ALLOWED_HOSTS", value_delimiter = ',')]
    allowed_hosts: Vec<String>,

    /// Log one JSON object per line instead of human-readable text.
    #[arg(long, env = "LOG_JSON", value_parser = BoolishValueParser::new(), default_value_t = false,
        num_args = 0, default_missing_value = "true")]
    log_json: bool,
}

impl Cli {
    fn into_config(self) -> Config {
        let gateway_url = Some(self.gateway_url.trim().to_string()).filter(|u| !u.is_empty());
        let service_token = self
            .service_token
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| self.token.clone());
        Config {
            listen: self.listen,
            public_url: self.public_url.filter(|u| !u.trim().is_empty()),
            gateway_url,
            register: !self.no_register,
            token: self.token,
            service_token,
            allowed_hosts: service_kit::mcp::allowed_hosts(self.allowed_hosts),
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.stdio {
        service_kit::logging::init_to(cli.log_json, Output::Stderr);
        let config = cli.into_config();
        return service_kit::stdio::main("shopping-service: error", |shutdown| {
            stdio_server(&config, shutdown)
        })
        .await;
    }
    service_kit::logging::init(cli.log_json);
    let config = cli.into_config();
    let listen = config.listen.clone();
    service_kit::serve::main("shopping-service: error", &listen, |listener, shutdown| {
        run(config, listener, shutdown)
    })
    .await
}
