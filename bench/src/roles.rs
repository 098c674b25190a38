//! The role subcommands `mcp-bench` spawns itself as: the gateway, the shopping-service
//! backend, and fixture MCP servers (N tools each, several on several ports in one
//! process). Each serves until SIGTERM/Ctrl-C and exits normally then, so that a run
//! under callgrind writes its profile.

use std::{path::PathBuf, sync::Arc};

use axum::{Json, Router, routing::get};
use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, InitializeResult,
        ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    },
    service::RequestContext,
    transport::streamable_http_server::{
        StreamableHttpService, session::local::LocalSessionManager,
    },
};
use serde_json::json;
use service_kit::CancellationToken;

/// `serve-gateway`: exactly what the `gateway` binary does (configuration from the
/// environment, `GATEWAY_*` and `RUST_LOG` included, and from a TOML file when given),
/// with listen address and store given on the command line.
pub async fn serve_gateway(
    listen: String,
    store: PathBuf,
    config: Option<PathBuf>,
) -> anyhow::Result<()> {
    let overrides = gateway::config::Overrides {
        listen: Some(listen),
        store: Some(store),
        ..Default::default()
    };
    let config = gateway::Config::load(config.as_deref(), &overrides)?;
    service_kit::logging::init(config.log_json);
    let shutdown = service_kit::shutdown::on_signal();
    let listener = service_kit::serve::bind(&config.listen).await?;
    gateway::run(config, listener, shutdown).await
}

/// `serve-shopping-stdio`: shopping-service as `shopping-service --stdio` runs it (one
/// session on stdin and stdout, logs on stderr, no gateway), until stdin closes or
/// SIGTERM. Exits the process: a blocking stdin read would keep the runtime alive.
pub async fn serve_shopping_stdio() -> anyhow::Result<()> {
    service_kit::logging::init_to(false, service_kit::logging::Output::Stderr);
    let shutdown = service_kit::shutdown::on_signal();
    let config = shopping_service::Config {
        gateway_url: None,
        register: false,
        ..shopping_service::Config::default()
    };
    let handler = shopping_service::stdio_server(&config, shutdown.clone());
    let result =
        service_kit::stdio::serve(handler, tokio::io::stdin(), tokio::io::stdout(), shutdown).await;
    if let Err(e) = &result {
        eprintln!("mcp-bench serve-shopping-stdio: {e:#}");
    }
    std::process::exit(i32::from(result.is_err()));
}

/// `serve-shopping`: shopping-service as its binary runs it (session mode, no gateway,
/// `/mcp` requiring `token`), plus optionally the same shop handler served statelessly
/// with JSON answers behind the same Bearer check, the direct counterpart of the
/// gateway's sessionless mode.
pub async fn serve_shopping(
    listen: String,
    stateless: Option<String>,
    token: String,
) -> anyhow::Result<()> {
    service_kit::logging::init(false);
    let shutdown = service_kit::shutdown::on_signal();
    let auth = service_kit::auth::BearerAuth::new(shopping_service::SERVICE_NAME, &token)
        .map_err(|e| anyhow::anyhow!("--token: {e}"))?;
    let config = shopping_service::Config {
        listen: listen.clone(),
        gateway_url: None,
        register: false,
        service_token: token,
        ..shopping_service::Config::default()
    };
    let listener = service_kit::serve::bind(&listen).await?;
    let sessions = shopping_service::run(config, listener, shutdown.clone());
    let Some(addr) = stateless else {
        return sessions.await;
    };
    let listener = service_kit::serve::bind(&addr).await?;
    let shop = Arc::new(shopping_service::tools::Shop::new(None));
    let mcp = StreamableHttpService::new(
        move || Ok(shopping_service::tools::ShopServer::new(Arc::clone(&shop))),
        Arc::new(LocalSessionManager::default()),
        service_kit::mcp::server_config(&[], shutdown.clone())
            .with_legacy_session_mode(false)
            .with_json_response(true)
            .with_sse_retry(None),
    );
    let router = service_kit::mcp::protected_mcp(mcp, auth)
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }));
    let stateless = async {
        service_kit::serve::serve(listener, router, shutdown.clone())
            .await
            .map_err(|e| anyhow::anyhow!("serving stateless shop on {addr} failed: {e}"))
    };
    tokio::try_join!(sessions, stateless).map(|_| ())
}

/// `serve-fixture`: one fixture server per address, named `{name}-1`, `{name}-2`, ...
pub async fn serve_fixtures(
    listen: Vec<String>,
    tools: usize,
    name: String,
    varied: bool,
) -> anyhow::Result<()> {
    service_kit::logging::init(false);
    let shutdown = service_kit::shutdown::on_signal();
    let mut servers = tokio::task::JoinSet::new();
    for (i, addr) in listen.iter().enumerate() {
        let server = format!("{name}-{}", i + 1);
        let fixture = if varied {
            Fixture::varied(&server, tools)
        } else {
            Fixture::new(&server, tools)
        };
        let listener = service_kit::serve::bind(addr).await?;
        let shutdown = shutdown.clone();
        let addr = addr.clone();
        servers.spawn(async move {
            fixture
                .serve(listener, shutdown)
                .await
                .map_err(|e| anyhow::anyhow!("fixture on {addr} failed: {e}"))
        });
    }
    while let Some(joined) = servers.join_next().await {
        joined??;
    }
    Ok(())
}

/// The name of tool `i` of fixture `server`: unique across fixtures, so that the
/// gateway lists every tool under its own name (no qualification).
pub fn fixture_tool_name(server: &str, i: usize) -> String {
    format!("{}_tool{i:02}", server.replace('-', "_"))
}

/// An MCP server offering `n` tools with realistic definitions; each call echoes which
/// server and tool ran and its arguments.
#[derive(Clone)]
pub struct Fixture {
    name: Arc<str>,
    tools: Arc<Vec<Tool>>,
}

impl Fixture {
    pub fn new(name: &str, n: usize) -> Self {
        let tools = (0..n)
            .filter_map(|i| {
                let tool = fixture_tool_name(name, i);
                serde_json::from_value(json!({
                    "name": tool,
                    "title": format!("Tool {i} of {name}"),
                    "description": format!(
                        "Looks up one record of kind {i} in {name} by its id and returns it \
                         with its attributes; read-only, idempotent."
                    ),
                    "inputSchema": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "string", "description": "Record id, e.g. \"123\"."},
                            "verbose": {"type": "boolean", "description": "Include every attribute."}
                        },
                        "required": ["id"],
                        "additionalProperties": false
                    },
                    "annotations": {"readOnlyHint": true, "idempotentHint": true}
                }))
                .ok()
            })
            .collect();
        Self {
            name: name.into(),
            tools: Arc::new(tools),
        }
    }

    /// `n` tools whose names and descriptions differ in what they are about (a noun and
    /// a domain drawn from short word lists): a catalog a search index can tell apart.
    pub fn varied(name: &str, n: usize) -> Self {
        const NOUNS: [&str; 24] = [
            "invoice",
            "customer",
            "shipment",
            "ticket",
            "employee",
            "contract",
            "payment",
            "product",
            "warehouse",
            "meeting",
            "document",
            "repository",
            "incident",
            "lead",
            "campaign",
            "budget",
            "server",
            "alert",
            "patient",
            "booking",
            "course",
            "recipe",
            "vehicle",
            "playlist",
        ];
        const VERBS: [&str; 8] = [
            "get", "list", "create", "update", "delete", "search", "export", "archive",
        ];
        const DOMAINS: [&str; 12] = [
            "billing",
            "logistics",
            "support",
            "human resources",
            "legal",
            "finance",
            "inventory",
            "calendar",
            "engineering",
            "sales",
            "marketing",
            "healthcare",
        ];
        let server = name.replace('-', "_");
        let tools = (0..n)
            .filter_map(|i| {
                let noun = NOUNS[i % NOUNS.len()];
                let verb = VERBS[(i / NOUNS.len()) % VERBS.len()];
                let domain = DOMAINS[(i / (NOUNS.len() * VERBS.len())) % DOMAINS.len()];
                serde_json::from_value(json!({
                    "name": format!("{server}_{verb}_{noun}_{i}"),
                    "description": format!(
                        "{verb} a {noun} record in the {domain} system of {name} (variant {i})."
                    ),
                    "inputSchema": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "string", "description": format!("The {noun}'s id.")},
                            "fields": {"type": "array", "items": {"type": "string"},
                                       "description": "Attributes to return."}
                        },
                        "required": ["id"]
                    }
                }))
                .ok()
            })
            .collect();
        Self {
            name: name.into(),
            tools: Arc::new(tools),
        }
    }

    async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let config = service_kit::mcp::server_config(&[], shutdown.clone());
        let service = StreamableHttpService::new(
            move || Ok(self.clone()),
            Arc::new(LocalSessionManager::default()),
            config,
        );
        let router = Router::new()
            .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
            .nest_service("/mcp", service);
        service_kit::serve::serve(listener, router, shutdown).await
    }
}

impl ServerHandler for Fixture {
    fn get_info(&self) -> ServerConfig {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(self.name.to_string(), "0.0.1"))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools.to_vec()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if !self.tools.iter().any(|t| t.name == request.name) {
            return Err(ErrorData::invalid_params(
                format!("fixture {} has no tool {}", self.name, request.name),
                None,
            ));
        }
        Ok(CallToolResult::structured(json!({
            "server": &*self.name,
            "tool": request.name,
            "arguments": request.arguments,
        }))
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_has_the_requested_tools_with_unique_names() {
        let f = Fixture::new("fx-7", 20);
        assert_eq!(f.tools.len(), 20);
        assert_eq!(f.tools[3].name, "fx_7_tool03");
        assert_eq!(fixture_tool_name("fx-7", 3), "fx_7_tool03");
    }
}
