//! user-service: a demo user directory served as an MCP server over streamable HTTP.
//!
//! It answers four read-only tools (`getUserById`, `searchUsers`, `listUsers`,
//! `getUserPreferences`) at `/mcp` to callers with its Bearer token, reports liveness at
//! an open `GET /health`, and registers itself with the gateway (giving it the token to
//! present) so the gateway can federate its tools. It also serves resources (a user's
//! profile and preferences as templates), prompts and completions. With `--stdio` the
//! same handler is served on stdin/stdout instead: no port, no registration.
//!
//! - this file: the service's [`Config`], [`run`] (serve + self-registration),
//!   [`router`] (`/mcp` and `/health`) and the MCP handler [`UserService`].
//! - [`content`]: the resource templates, prompts and completions.
//! - [`data`]: the user records, generated deterministically at start-up, and the
//!   look-ups over them.
//! - [`tools`]: the tool definitions (input and output JSON Schemas), argument
//!   validation and the tool handlers.

pub mod content;
pub mod data;
pub mod tools;

use axum::Router;
use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CompleteRequestParams, CompleteResult,
        GetPromptRequestParams, GetPromptResponse, Implementation, ListPromptsResult,
        ListResourceTemplatesResult, ListToolsResult, PaginatedRequestParams,
        ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig, Tool,
    },
    service::RequestContext,
};
use serde_json::{Value, json};
use service_kit::{
    auth::BearerAuth,
    registration::{self, GatewayTarget, Registration, UpstreamBearer},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The name this service registers under and announces in `serverInfo`.
pub const SERVICE_NAME: &str = "user-service";
/// Where the binary listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3003";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How the service runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to bind; only the binary uses it, [`run`] takes a bound listener.
    pub listen: String,
    /// The MCP URL the gateway should use. `None`: `http://{bound address}/mcp`, with an
    /// unspecified bind address (`0.0.0.0`, `::`) replaced by loopback.
    pub public_url: Option<String>,
    /// Base URL of the gateway to self-register with; `None` disables registration.
    pub gateway_url: Option<String>,
    /// Bearer token presented to the gateway.
    pub token: String,
    /// Bearer token this service accepts on `/mcp`; given to the gateway at
    /// registration, which presents it on every request.
    pub service_token: String,
    /// Extra `Host` header names accepted on `/mcp` besides loopback (`"*"`: any).
    pub allowed_hosts: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.into(),
            public_url: None,
            gateway_url: Some(service_kit::DEFAULT_GATEWAY_URL.into()),
            token: service_kit::DEFAULT_TOKEN.into(),
            service_token: service_kit::DEFAULT_TOKEN.into(),
            allowed_hosts: Vec::new(),
        }
    }
}

/// Serves on `listener` until `shutdown` is cancelled. When `config.gateway_url` is set,
/// registers with the gateway in the background (retrying while it is unreachable);
/// the service serves whether or not that ever succeeds.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let auth = BearerAuth::new(SERVICE_NAME, &config.service_token)
        .map_err(|e| anyhow::anyhow!("service token: {e}"))?;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| service_kit::mcp::local_mcp_url(addr));
    tracing::info!(%addr, %public_url, users = data::users().len(), "{SERVICE_NAME} listening");

    let registration = config.gateway_url.map(|base_url| {
        (
            GatewayTarget {
                base_url,
                token: config.token,
            },
            Registration {
                name: SERVICE_NAME.into(),
                url: public_url,
                auth: Some(UpstreamBearer::new(config.service_token)),
            },
        )
    });

    let app = router(shutdown.clone(), &config.allowed_hosts, auth);
    registration::serve_registered(listener, app, shutdown, registration)
        .await
        .map_err(|e| anyhow::anyhow!("{SERVICE_NAME} on {addr} stopped: {e}"))?;
    Ok(())
}

/// The service's HTTP surface: the MCP endpoint at `/mcp` behind `auth` (sessions end
/// when `shutdown` is cancelled) and `GET /health`, open to anyone.
pub fn router(shutdown: CancellationToken, allowed_hosts: &[String], auth: BearerAuth) -> Router {
    service_kit::mcp::service_router(|| UserService, health, allowed_hosts, auth, shutdown)
}

fn health() -> Value {
    json!({
        "status": "ok",
        "service": SERVICE_NAME,
        "version": VERSION,
        "users": data::users().len(),
    })
}

/// The handler `--stdio` serves (one session: the client that launched the process):
/// the same tools, resources and prompts as over HTTP; nothing listens or registers.
pub fn stdio_server() -> UserService {
    tracing::info!(
        users = data::users().len(),
        "{SERVICE_NAME} serving MCP on stdin/stdout"
    );
    UserService
}

/// The MCP server handler: static tables over the static directory, so one value per
/// session costs nothing. Nothing it serves changes, so nothing can be subscribed to.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserService;

impl ServerHandler for UserService {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_completions()
            .enable_prompts()
            .enable_resources()
            .enable_tools()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(
                Implementation::new(SERVICE_NAME, VERSION).with_title("User directory"),
            )
            .with_instructions(
                "A directory of demo shop users. Look a user up with getUserById, find \
                 users by name, email or city with searchUsers, page through them with \
                 listUsers (filter by membership tier or country), and read what a user \
                 likes to buy with getUserPreferences. User ids are strings such as \"456\". \
                 Resources: the templates users://{userId}/profile and \
                 users://{userId}/preferences. Prompts: summarise_user and find_users.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools::tools().to_vec()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools::tool(name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let result = tools::call(&request.name, request.arguments.as_ref());
        match &result {
            Ok(r) if r.is_error == Some(true) => {
                tracing::debug!(tool = %request.name, "tool call rejected: {:?}", r.content);
            }
            Ok(_) => tracing::debug!(tool = %request.name, "tool call answered"),
            Err(e) => tracing::debug!(tool = %request.name, "tool call failed: {}", e.message),
        }
        result.map(CallToolResponse::from)
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(
            content::resource_templates(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        content::read(&request.uri).map(ReadResourceResponse::from)
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(content::prompts()))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        content::prompt(&request.name, request.arguments.as_ref()).map(GetPromptResponse::from)
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        content::complete(&request)
    }
}
