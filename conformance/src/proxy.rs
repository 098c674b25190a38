//! `auth-proxy`: a streaming HTTP reverse proxy that adds `Authorization: Bearer <token>`.
//!
//! The conformance suite's server mode sends no credentials, and the gateway wants a
//! Bearer token on `/mcp`; the gateway run goes through this proxy. Every request is
//! forwarded to the upstream origin with its method, path, query and headers unchanged
//! (`Host` and `Origin` included, exactly as received), except that `Authorization` is
//! set to the configured token and the hop-by-hop headers of RFC 9110 §7.6.1 are dropped
//! (hyper frames each hop itself). Status, headers and body come back the same way.
//! Bodies stream in both directions, frame by frame, so SSE responses arrive as the
//! upstream sends them and a client that hangs up closes the upstream connection.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, StatusCode, Uri, Version, header};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Default listen address of the `auth-proxy` binary.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3011";

/// The proxy's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Upstream base URL: `http://host:port`, optionally with a path prefix.
    pub upstream: Uri,
    /// The Bearer token put on every forwarded request.
    pub token: String,
}

impl Config {
    /// Validates `upstream` (an absolute `http://` URL without a query).
    pub fn new(upstream: &str, token: impl Into<String>) -> anyhow::Result<Self> {
        let upstream: Uri = upstream
            .parse()
            .map_err(|e| anyhow::anyhow!("bad upstream URL {upstream:?}: {e}"))?;
        if upstream.scheme_str() != Some("http") || upstream.authority().is_none() {
            anyhow::bail!("upstream must be an absolute http:// URL, got {upstream}");
        }
        if upstream.query().is_some() {
            anyhow::bail!("upstream must not carry a query, got {upstream}");
        }
        let token = token.into();
        HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| anyhow::anyhow!("the token is not a valid header value"))?;
        Ok(Self { upstream, token })
    }
}

struct Proxy {
    client: Client<HttpConnector, Body>,
    /// `scheme://authority` plus the upstream path prefix without a trailing slash.
    base: String,
    authorization: HeaderValue,
}

/// Serves the proxy on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    tracing::info!(
        addr = %listener.local_addr()?,
        upstream = %config.upstream,
        "auth proxy listening"
    );
    service_kit::serve::serve(listener, router(&config)?, shutdown).await?;
    Ok(())
}

/// The proxy as an axum router (every method and path).
pub fn router(config: &Config) -> anyhow::Result<Router> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    let scheme = config.upstream.scheme_str().unwrap_or("http");
    let authority = config
        .upstream
        .authority()
        .ok_or_else(|| anyhow::anyhow!("upstream has no host"))?;
    let prefix = config.upstream.path().trim_end_matches('/');
    let proxy = Proxy {
        client,
        base: format!("{scheme}://{authority}{prefix}"),
        authorization: HeaderValue::from_str(&format!("Bearer {}", config.token))?,
    };
    Ok(Router::new().fallback(forward).with_state(Arc::new(proxy)))
}

async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let target = format!("{}{path_and_query}", proxy.base);
    parts.uri = match target.parse() {
        Ok(uri) => uri,
        Err(e) => return bad_gateway(format!("cannot build upstream URI {target}: {e}")),
    };
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(header::AUTHORIZATION, proxy.authorization.clone());
    let method = parts.method.clone();
    let upstream_request = Request::from_parts(parts, body);
    match proxy.client.request(upstream_request).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            tracing::debug!(%method, path = %path_and_query, status = %parts.status, "forwarded");
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Err(e) => {
            tracing::warn!(%method, path = %path_and_query, "upstream request failed: {e:#}");
            bad_gateway(format!("upstream request failed: {e}"))
        }
    }
}

fn bad_gateway(message: String) -> Response {
    (
        StatusCode::BAD_GATEWAY,
        axum::Json(json!({"error": "bad_gateway", "message": message})),
    )
        .into_response()
}

/// Removes the hop-by-hop headers: the fixed set and any named in `Connection`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_accepts_http_origins_only() {
        assert!(Config::new("http://127.0.0.1:3001", "t").is_ok());
        assert!(Config::new("http://127.0.0.1:3001/base/", "t").is_ok());
        assert!(Config::new("https://127.0.0.1:3001", "t").is_err());
        assert!(Config::new("/mcp", "t").is_err());
        assert!(Config::new("http://127.0.0.1:3001/?a=1", "t").is_err());
        assert!(Config::new("http://127.0.0.1:3001", "bad\ntoken").is_err());
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-hop"),
        );
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::HOST, HeaderValue::from_static("localhost:1"));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example.com"),
        );
        strip_hop_by_hop(&mut headers);
        let left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["host", "origin"]);
    }
}
