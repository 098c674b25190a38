//! `mcp-federation`: the whole demo stack in one process (`cargo run`): the gateway on
//! 127.0.0.1:3001, shopping-service on :3002 and user-service on :3003, each on its own
//! listener, the services registering with the gateway over HTTP exactly as they do when
//! run as separate binaries. Ctrl-C stops all three.

use clap::Parser;

/// Runs the gateway and both demo services together on their default ports.
///
/// The token is MCP_BEARER_TOKEN (default mcp-token-123); the gateway reads its usual
/// configuration: GATEWAY_CONFIG (or --config) for a TOML file, then every GATEWAY_*
/// variable (GATEWAY_STORE, GATEWAY_OTLP_ENDPOINT, ...; see `gateway --help`). Each service requires a Bearer token on /mcp, MCP_BEARER_TOKEN
/// unless its own variable says otherwise, and registers it with the gateway, which
/// presents it. To run the pieces separately use the `gateway`, `shopping-service` and
/// `user-service` binaries.
#[derive(Parser, Debug)]
#[command(name = "mcp-federation", version, about, long_about)]
struct Cli {
    /// The gateway's TOML configuration file.
    #[arg(long, short, env = "GATEWAY_CONFIG")]
    config: Option<std::path::PathBuf>,

    /// Gateway registration store (SQLite file) [default: GATEWAY_STORE, else gateway.db].
    #[arg(long)]
    store: Option<std::path::PathBuf>,

    /// Bearer token shopping-service requires on /mcp [default: MCP_BEARER_TOKEN].
    #[arg(long, env = "SHOPPING_SERVICE_TOKEN", hide_env_values = true)]
    shopping_service_token: Option<String>,

    /// Bearer token user-service requires on /mcp [default: MCP_BEARER_TOKEN].
    #[arg(long, env = "USER_SERVICE_TOKEN", hide_env_values = true)]
    user_service_token: Option<String>,
}

fn main() {
    let cli = Cli::parse();
    // Its workers give freed memory back when the gateway's trimmer asks.
    let runtime = match service_kit::alloc::runtime().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mcp-federation: cannot start: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("mcp-federation: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = gateway::Config::load(
        cli.config.as_deref(),
        &gateway::config::Overrides {
            store: cli.store,
            ..Default::default()
        },
    )?;
    // The stack's own virtual server, unless the configuration defines one so named.
    if !config.virtual_servers.iter().any(|s| s.name == "customers") {
        config.virtual_servers.push(customers());
    }
    // The gateway's own log set-up: JSON lines when asked, OTLP traces when configured.
    let _tracing =
        gateway::observe::traces::init(config.log_json, config.otlp_endpoint.as_deref())?;
    let shutdown = service_kit::shutdown::on_signal();
    let gateway_url = format!("http://{}", config.listen);
    let token = config.token.clone();
    let own_or_gateway = |own: Option<String>| {
        own.filter(|t| !t.is_empty())
            .unwrap_or_else(|| token.clone())
    };
    let shopping_token = own_or_gateway(cli.shopping_service_token);
    let user_token = own_or_gateway(cli.user_service_token);

    let gw_listener = service_kit::serve::bind(&config.listen).await?;
    let shop_listener = service_kit::serve::bind(shopping_service::DEFAULT_LISTEN).await?;
    let user_listener = service_kit::serve::bind(user_service::DEFAULT_LISTEN).await?;

    let shopping = shopping_service::Config {
        gateway_url: Some(gateway_url.clone()),
        token: token.clone(),
        service_token: shopping_token,
        ..Default::default()
    };
    let user = user_service::Config {
        gateway_url: Some(gateway_url.clone()),
        token,
        service_token: user_token,
        ..Default::default()
    };
    tracing::info!(
        "stack starting: gateway {gateway_url}/mcp, shopping-service http://{}, user-service http://{}",
        shopping_service::DEFAULT_LISTEN,
        user_service::DEFAULT_LISTEN
    );
    // If one part fails, stop the others rather than run a stack with a hole in it.
    let stop_all = |name: &'static str, r: anyhow::Result<()>| {
        if r.is_err() {
            shutdown.cancel();
        }
        r.map_err(|e| e.context(name))
    };
    let (g, s, u) = tokio::join!(
        async {
            stop_all(
                "gateway",
                gateway::run(config, gw_listener, shutdown.clone()).await,
            )
        },
        async {
            stop_all(
                "shopping-service",
                shopping_service::run(shopping, shop_listener, shutdown.clone()).await,
            )
        },
        async {
            stop_all(
                "user-service",
                user_service::run(user, user_listener, shutdown.clone()).await,
            )
        },
    );
    g.and(s).and(u)
}

/// `customers` (at `/servers/customers/mcp`, defined in `docs/customers-server.json`):
/// both services' tools, and `getCustomerOverview(userId)`, which runs `getUserById`,
/// `getUserOrders` and `getPersonalizedRecommendations` at once.
fn customers() -> gateway::servers::Definition {
    serde_json::from_str(include_str!("../docs/customers-server.json"))
        .expect("the stack's virtual server is a valid definition")
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    #[test]
    fn the_stacks_virtual_server_compiles() {
        let server = super::customers().compile().expect("compiles");
        assert_eq!(server.definition.composites[0].required(), ["userId"]);
    }
}
