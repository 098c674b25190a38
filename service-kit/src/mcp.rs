//! The rmcp streamable-HTTP server configuration shared by the demo services.

use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
use tokio_util::sync::CancellationToken;

/// Host names accepted in the `Host` header by default (DNS-rebinding protection):
/// loopback only. Deployments behind other names add theirs (`--allowed-hosts`).
pub const LOOPBACK_HOSTS: &[&str] = &["localhost", "127.0.0.1", "::1", "[::1]"];

/// Session-mode server config with the given extra allowed hosts. An entry `*`
/// disables the Host check altogether (for deployments that do it at their edge).
pub fn server_config(
    allowed_hosts: &[String],
    shutdown: CancellationToken,
) -> StreamableHttpServerConfig {
    let config = StreamableHttpServerConfig::default().with_cancellation_token(shutdown);
    if allowed_hosts.iter().any(|h| h == "*") {
        return config.disable_allowed_hosts();
    }
    let hosts = LOOPBACK_HOSTS
        .iter()
        .map(|h| h.to_string())
        .chain(allowed_hosts.iter().cloned());
    config.with_allowed_hosts(hosts)
}
