//! Opening an MCP client session over streamable HTTP, as the gateway does towards its
//! upstreams and as shopping-service does towards the gateway.
//!
//! The reqwest client sets `TCP_NODELAY` and keeps pooled connections; the SSE reconnect
//! backoff is capped (rmcp's default doubles without bound); concurrent POSTs are raised
//! from rmcp's 16 so one session multiplexes a busy gateway's calls.

use rustls_pki_types::CertificateDer;
use std::{sync::Arc, time::Duration};

use rmcp::{
    ClientHandler, RoleClient, ServiceError,
    model::{ClientCapabilities, ClientConfig, Implementation, ProtocolVersion},
    service::{ClientInitializeError, ClientLifecycleMode, ClientServiceExt, RunningService},
    transport::{
        StreamableHttpClientTransport,
        common::client_side_sse::ExponentialBackoff,
        streamable_http_client::{
            StreamableHttpClient, StreamableHttpClientTransportConfig, StreamableHttpError,
        },
    },
};

/// How a client session is opened.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Name announced in `clientInfo`.
    pub client_name: String,
    /// Bearer token sent with every request, if any.
    pub bearer: Option<String>,
    /// Upper bound for connecting and the `initialize` handshake.
    pub connect_timeout: Duration,
    /// Concurrent POSTs multiplexed over the session.
    pub max_concurrent_requests: usize,
    /// Let rmcp re-initialize by itself and repeat requests when the server answers
    /// 404 (session expired). The gateway turns this off: it wants to know, re-read the
    /// backend's lists, and decide itself what may be repeated.
    pub reinit_on_expired_session: bool,
    /// How often a broken SSE response stream is resumed before the request fails, and
    /// the first delay (doubling, capped at 5 s).
    pub sse_retries: usize,
    pub sse_retry_base: Duration,
    /// Largest SSE message accepted from the server (rmcp's default, 16 MiB, when
    /// `None`).
    pub max_response_bytes: Option<usize>,
    /// Probe with `server/discover` first and speak 2026-07-28 to a server that answers
    /// it; the 2025-era `initialize` handshake otherwise (and always, when false).
    pub discover: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            client_name: "mcp-client".into(),
            bearer: None,
            connect_timeout: Duration::from_secs(5),
            max_concurrent_requests: 256,
            reinit_on_expired_session: true,
            sse_retries: 5,
            sse_retry_base: Duration::from_millis(200),
            max_response_bytes: None,
            discover: false,
        }
    }
}

/// An initialized client session; `.peer()` is cheap to clone and multiplexes calls.
pub type ClientSession = RunningService<RoleClient, ClientConfig>;

/// The client identity announced in `initialize` for the given options.
pub fn client_config(options: &ClientOptions) -> ClientConfig {
    // The `initialize` handshake is the 2025 era's: it asks for that era's newest
    // revision (2026-07-28 is reached through `server/discover`, see `discover`). A
    // server that echoes whatever it is asked would otherwise "agree" to 2026-07-28
    // in a session, which that revision does not have.
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new(options.client_name.clone(), env!("CARGO_PKG_VERSION")),
    )
    .with_protocol_version(ProtocolVersion::V_2025_11_25)
}

/// The reqwest client used for MCP traffic: pooled, `TCP_NODELAY`, bounded connect time.
pub fn http_client(connect_timeout: Duration) -> reqwest::Client {
    http_client_builder(connect_timeout)
        .build()
        .expect("reqwest client with static settings")
}

/// [`http_client`]'s settings, for a caller that adds its own (a resolver, say). TLS
/// (for `https` URLs) trusts Mozilla's roots ([`tls_config`]).
pub fn http_client_builder(connect_timeout: Duration) -> reqwest::ClientBuilder {
    http_client_builder_with(connect_timeout, default_tls())
}

/// [`http_client_builder`] with a TLS configuration of the caller's (more trusted CAs).
pub fn http_client_builder_with(
    connect_timeout: Duration,
    tls: Arc<rustls::ClientConfig>,
) -> reqwest::ClientBuilder {
    ensure_tls_provider();
    reqwest::Client::builder()
        .tcp_nodelay(true)
        // An MCP endpoint that redirects is misconfigured; and the policy costs every call.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        // Below the servers' own idle limit (service_kit::serve closes a kept-alive
        // connection after its header read timeout, 10 s by default).
        .pool_idle_timeout(Duration::from_secs(5))
        // Straight to the address the resolver gave: an environment proxy
        // (HTTP_PROXY, ALL_PROXY) would resolve the name itself, past the gateway's
        // network guard.
        .no_proxy()
        .use_preconfigured_tls((*tls).clone())
}

/// Makes ring the process's rustls provider, once: HTTP clients built without a TLS
/// configuration of their own (reqwest's defaults, the OTLP exporter's) use it. Every
/// process of the workspace calls this before it builds a client.
pub fn ensure_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err: a provider is installed already, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// TLS for HTTP clients: rustls with the ring provider, trusting Mozilla's roots
/// (webpki-roots) and `extra` CAs; HTTP/1.1 only.
pub fn tls_config(extra: &[CertificateDer<'static>]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for ca in extra {
        if let Err(e) = roots.add(ca.clone()) {
            tracing::warn!("a CA certificate is not usable: {e}");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The default [`tls_config`] (Mozilla's roots), built once.
pub fn default_tls() -> Arc<rustls::ClientConfig> {
    static TLS: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    Arc::clone(TLS.get_or_init(|| tls_config(&[])))
}

/// The certificates of a PEM file (CAs to trust), or what is wrong with it.
pub fn pem_certificates(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}

/// Opens and initializes an MCP session with the server at `url` (its MCP endpoint).
pub async fn connect(url: &str, options: &ClientOptions) -> anyhow::Result<ClientSession> {
    connect_with(url, options, client_config(options)).await
}

/// Like [`connect`], with a handler of the caller's that hears the server's
/// notifications (list changes, logging, progress).
pub async fn connect_with<H: ClientHandler + Clone>(
    url: &str,
    options: &ClientOptions,
    handler: H,
) -> anyhow::Result<RunningService<RoleClient, H>> {
    connect_via(url, options, handler, http_client(options.connect_timeout)).await
}

/// Like [`connect_with`], over an HTTP client of the caller's (one that wraps
/// [`http_client`] to watch the SSE streams, say).
pub async fn connect_via<H: ClientHandler + Clone, C: StreamableHttpClient + Clone>(
    url: &str,
    options: &ClientOptions,
    handler: H,
    client: C,
) -> anyhow::Result<RunningService<RoleClient, H>> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_string())
        .max_concurrent_requests(options.max_concurrent_requests);
    config.auth_header = options.bearer.clone();
    config.reinit_on_expired_session = options.reinit_on_expired_session;
    if let Some(max) = options.max_response_bytes {
        config.max_sse_event_size = max;
    }
    let mut backoff = ExponentialBackoff::default();
    backoff.max_times = Some(options.sse_retries);
    backoff.base_duration = options.sse_retry_base;
    backoff.max_delay = Some(Duration::from_secs(5));
    config.retry_config = Arc::new(backoff);
    let attempt = |lifecycle| {
        let transport = StreamableHttpClientTransport::with_client(client.clone(), config.clone());
        handler.clone().serve_with_lifecycle(transport, lifecycle)
    };
    let connect = async {
        if !options.discover {
            return attempt(ClientLifecycleMode::Initialize).await;
        }
        // A server that answers `server/discover` and speaks 2026-07-28 gets it; one that
        // does not answer it (or times out) gets `initialize` (rmcp's fallback); one that
        // answers it without 2026-07-28 among its revisions, `initialize` here.
        let modern = ClientLifecycleMode::Auto {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            legacy_version: Some(ProtocolVersion::V_2025_11_25),
        };
        match attempt(modern).await {
            Err(ClientInitializeError::NoCompatibleProtocolVersion { .. }) => {
                attempt(ClientLifecycleMode::Initialize).await
            }
            other => other,
        }
    };
    let session = tokio::time::timeout(options.connect_timeout, connect)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no MCP answer from {url} within {} ms",
                options.connect_timeout.as_millis()
            )
        })?
        .map_err(|e| {
            // When both `server/discover` and `initialize` failed, the second says why.
            let e = match e {
                ClientInitializeError::LegacyFallbackFailed { fallback, .. } => *fallback,
                other => other,
            };
            let why = match &e {
                ClientInitializeError::TransportError { error, .. } => root_cause(error),
                other => other.to_string(),
            };
            anyhow::anyhow!("MCP initialize with {url} failed: {why}")
        })?;
    Ok(session)
}

/// A client-side call failure in words a person can act on: for transport failures the
/// innermost cause ("Connection refused (os error 111)") rather than rmcp's type names.
pub fn describe(e: &ServiceError) -> String {
    match e {
        ServiceError::TransportSend(d) => root_cause(d),
        other => other.to_string(),
    }
}

/// The innermost error of a chain ("Connection refused (os error 111)"), which is what a
/// person needs to read; the outer layers only repeat where it happened.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    loop {
        // rmcp wraps the HTTP client's error without exposing it as a source.
        if let Some(StreamableHttpError::Client(inner)) =
            current.downcast_ref::<StreamableHttpError<reqwest::Error>>()
        {
            current = inner;
            continue;
        }
        match current.source() {
            Some(next) => current = next,
            None => return without_response_body(&current.to_string()),
        }
    }
}

/// `text` without the response body rmcp quotes after an HTTP error status
/// ("unexpected server response: HTTP 401 Unauthorized: <body>" keeps only the status):
/// a body may reflect the request's headers, and with them a credential.
pub fn without_response_body(text: &str) -> String {
    const MARK: &str = "unexpected server response: ";
    let Some(at) = text.find(MARK) else {
        return text.to_string();
    };
    let rest = &text[at + MARK.len()..];
    let status = rest
        .strip_prefix("HTTP ")
        .and_then(|r| r.get(..3))
        .filter(|d| d.bytes().all(|b| b.is_ascii_digit()));
    match status {
        Some(code) => format!("{}the backend answered HTTP {code}", &text[..at]),
        None => format!(
            "{}the backend's answer is not a JSON-RPC message",
            &text[..at]
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::without_response_body;

    #[test]
    fn response_bodies_are_cut_after_the_status() {
        assert_eq!(
            without_response_body(
                "connect: unexpected server response: HTTP 401 Unauthorized: echo Authorization: Bearer s3cret"
            ),
            "connect: the backend answered HTTP 401"
        );
        assert_eq!(
            without_response_body("unexpected server response: garbage s3cret"),
            "the backend's answer is not a JSON-RPC message"
        );
        assert_eq!(
            without_response_body("Connection refused (os error 111)"),
            "Connection refused (os error 111)"
        );
    }
}
