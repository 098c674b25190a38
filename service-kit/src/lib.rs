//! Shared plumbing for the three processes of the stack (gateway, shopping-service,
//! user-service). Nothing here knows about products, users or the catalog.
//!
//! - [`alloc`]: the global allocator (mimalloc) of every process that links this crate,
//!   and giving free memory back to the system.
//! - [`serve`]: bind and serve an axum router with `TCP_NODELAY` on every accepted
//!   socket and graceful shutdown driven by a [`CancellationToken`]; [`serve::main`],
//!   the body of a service binary's `main`.
//! - [`shutdown`]: a token cancelled on SIGTERM / Ctrl-C.
//! - [`logging`]: `tracing` subscriber set-up (human or JSON lines, to stdout or, for a
//!   process speaking MCP over stdio, to stderr).
//! - [`stdio`]: serving one MCP handler over stdin/stdout until EOF or SIGTERM, the body
//!   of a service binary's `main` in `--stdio` mode.
//! - [`registration`]: a service's self-registration with the gateway
//!   (`POST /register`), retried with capped, jittered backoff, and
//!   [`registration::serve_registered`], serving wrapped in registering and unregistering.
//! - [`client`]: opening an MCP client session over streamable HTTP.
//! - [`mcp`]: the demo services' HTTP surface (`/mcp` behind [`auth`], `GET /health`
//!   open), the rmcp streamable-HTTP server configuration they share, and the shape of
//!   their tool definitions.
//! - [`auth`]: the demo services' Bearer-token check on `/mcp` (a tower layer,
//!   constant-time comparison, 401 with `WWW-Authenticate` as on the gateway).
//! - [`subscriptions`]: which sessions subscribed to which resource URIs (and the open
//!   `subscriptions/listen` streams), and `notifications/resources/updated` to them when
//!   a resource changes.
//! - [`sse_resume`]: closing a request's SSE stream mid-call and noticing when the client
//!   resumes it (SEP-1699), for servers built on rmcp's session manager.
//! - [`tool_args`]: the sentences of the demo services' tool-argument errors and the
//!   JSON type names they use.
//! - [`prng`]: [`prng::SplitMix64`], the fully specified generator the demo services
//!   build their deterministic data sets from.

pub mod alloc;
pub mod auth;
pub mod client;
pub mod logging;
pub mod mcp;
pub mod prng;
pub mod registration;
pub mod serve;
pub mod shutdown;
pub mod sse_resume;
pub mod stdio;
pub mod subscriptions;
pub mod tool_args;

pub use tokio_util::sync::CancellationToken;

/// The Bearer token every component uses when none is configured (`MCP_BEARER_TOKEN`).
pub const DEFAULT_TOKEN: &str = "mcp-token-123";
/// Default address of the gateway, as services see it.
pub const DEFAULT_GATEWAY_URL: &str = "http://127.0.0.1:3001";
