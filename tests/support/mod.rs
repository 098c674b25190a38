//! Test support: start the real components in-process on ephemeral loopback ports and
//! talk real HTTP to them.

#![allow(dead_code)]

pub mod fixture;
pub mod hostile;
pub mod postgres;
pub mod procs;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::{Value, json};
use service_kit::client::{ClientOptions, ClientSession};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "mcp-token-123";

/// A 2025-era session of rmcp's client, with `handler`, at `mcp_url` (with the
/// gateway's token).
pub async fn session_with<H: rmcp::ClientHandler + Clone>(
    mcp_url: &str,
    name: &str,
    handler: H,
) -> rmcp::service::RunningService<rmcp::RoleClient, H> {
    service_kit::client::connect_with(
        mcp_url,
        &ClientOptions {
            client_name: name.into(),
            bearer: Some(TOKEN.into()),
            ..ClientOptions::default()
        },
        handler,
    )
    .await
    .expect("a 2025-era session with the gateway")
}

/// A 2025-era session client (an rmcp `ClientHandler`) that counts the
/// `tools/list_changed` notifications it gets.
#[derive(Clone, Default)]
pub struct Counting(pub std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl rmcp::ClientHandler for Counting {
    async fn on_tool_list_changed(
        &self,
        _context: rmcp::service::NotificationContext<rmcp::RoleClient>,
    ) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The Bearer token a demo service started by the test support accepts on `/mcp`
/// (`shopping-service` or `user-service`): its own, not the gateway's [`TOKEN`], so the
/// gateway can only reach it with the credential the service registered.
pub fn service_token(service: &str) -> String {
    format!("{service}-accepts-0123456789")
}

/// A component running in this process.
pub struct Running {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

/// Anything with an HTTP base URL: an in-process component or a child process.
pub trait Target {
    fn base_url(&self) -> String;
    fn mcp(&self) -> String {
        format!("{}/mcp", self.base_url())
    }
}

impl Target for Running {
    fn base_url(&self) -> String {
        self.base()
    }
}

impl Target for procs::Proc {
    fn base_url(&self) -> String {
        self.base()
    }
}

impl Running {
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }
    /// Stops the component and waits (bounded) until its port is closed.
    pub async fn stop(self) {
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(10), self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("component on {} failed: {e:#}", self.addr),
            Ok(Err(e)) => panic!("component on {} panicked: {e}", self.addr),
            Err(_) => panic!("component on {} did not stop within 10 s", self.addr),
        }
    }
}

async fn ephemeral() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind ephemeral port")
}

fn spawn<F>(listener: TcpListener, f: impl FnOnce(TcpListener, CancellationToken) -> F) -> Running
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let addr = listener.local_addr().expect("local addr");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(f(listener, shutdown.clone()));
    Running {
        addr,
        shutdown,
        task,
    }
}

/// A gateway configuration for tests: temp store, short timeouts, quick health checks.
pub fn gateway_config(store: &Path) -> gateway::Config {
    gateway::Config {
        store: store.to_path_buf(),
        call_timeout_ms: 5_000,
        connect_timeout_ms: 2_000,
        health_interval_ms: 500,
        ..gateway::Config::default()
    }
}

pub async fn start_gateway(config: gateway::Config) -> Running {
    start_gateway_on(ephemeral().await, config)
}

pub fn start_gateway_on(listener: TcpListener, config: gateway::Config) -> Running {
    spawn(listener, move |l, s| gateway::run(config, l, s))
}

/// shopping-service, registering with `gateway` (and calling through it) when given;
/// its `/mcp` accepts [`service_token`]`("shopping-service")`.
pub async fn start_shopping(gateway: Option<&Running>) -> Running {
    let config = shopping_service::Config {
        gateway_url: gateway.map(Running::base),
        register: gateway.is_some(),
        service_token: service_token(shopping_service::SERVICE_NAME),
        ..shopping_service::Config::default()
    };
    spawn(ephemeral().await, move |l, s| {
        shopping_service::run(config, l, s)
    })
}

/// user-service, registering with `gateway` when given; its `/mcp` accepts
/// [`service_token`]`("user-service")`.
pub async fn start_user(gateway: Option<&Running>) -> Running {
    let config = user_service::Config {
        gateway_url: gateway.map(Running::base),
        service_token: service_token(user_service::SERVICE_NAME),
        ..user_service::Config::default()
    };
    spawn(ephemeral().await, move |l, s| {
        user_service::run(config, l, s)
    })
}

/// A fixture MCP server offering `tools` (each echoes its call).
pub async fn start_fixture(name: &str, tools: &[&str]) -> Running {
    serve_fixture(fixture::Fixture::new(name, tools)).await
}

/// Serves `fixture` (keep a clone to read its counters) on an ephemeral port.
pub async fn serve_fixture(fixture: fixture::Fixture) -> Running {
    serve_fixture_on(ephemeral().await, fixture)
}

/// A test CA and a certificate it signed for `localhost` and 127.0.0.1: (CA PEM,
/// server certificate PEM, server key PEM).
pub fn test_certificates() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "gateway test CA");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("server key");
    let server =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("server params");
    let cert = server.signed_by(&key, &issuer).expect("server certificate");
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// Serves `fixture` over TLS (HTTP/1.1) with this certificate and key, on an ephemeral
/// port.
pub async fn serve_fixture_tls(
    fixture: fixture::Fixture,
    cert_pem: &str,
    key_pem: &str,
) -> Running {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key PEM");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server TLS config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    spawn(ephemeral().await, move |listener, shutdown| async move {
        let router = fixture.router(shutdown.clone());
        loop {
            let (tcp, _) = tokio::select! {
                a = listener.accept() => a?,
                _ = shutdown.cancelled() => return Ok(()),
            };
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        use tower::ServiceExt;
                        router.clone().oneshot(request.map(axum::body::Body::new))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    })
}

/// Serves a hostile MCP server on an ephemeral port.
pub async fn serve_hostile(hostile: hostile::Hostile) -> Running {
    spawn(ephemeral().await, move |l, s| hostile.serve(l, s))
}

/// Serves `fixture` on `listener`.
pub fn serve_fixture_on(listener: TcpListener, fixture: fixture::Fixture) -> Running {
    spawn(listener, move |l, s| fixture.serve(l, s))
}

/// The gateway and both services, registered, in a temp dir that lives with the value.
pub struct Stack {
    pub gateway: Running,
    pub shopping: Running,
    pub user: Running,
    pub dir: tempfile::TempDir,
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// The stack with the gateway's configuration changed by `tune`.
    pub async fn start_with(tune: impl FnOnce(&mut gateway::Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = gateway_config(&dir.path().join("gw.db"));
        tune(&mut config);
        let gateway = start_gateway(config).await;
        let shopping = start_shopping(Some(&gateway)).await;
        let user = start_user(Some(&gateway)).await;
        wait_for_services(&gateway, &["shopping-service", "user-service"]).await;
        Self {
            gateway,
            shopping,
            user,
            dir,
        }
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("gw.db")
    }

    pub async fn stop(self) {
        self.shopping.stop().await;
        self.user.stop().await;
        self.gateway.stop().await;
    }
}

pub fn http() -> reqwest::Client {
    service_kit::client::ensure_tls_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// A client without the usual request timeout (a test that sets its own per request).
pub fn http_no_timeout() -> reqwest::Client {
    service_kit::client::ensure_tls_provider();
    reqwest::Client::new()
}

/// Polls `check` every 25 ms until it holds, failing the test after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `path` on `gateway` with the test token: status and JSON body (`null` when not JSON).
pub async fn get_json(gateway: &impl Target, path: &str) -> (u16, Value) {
    let resp = http()
        .get(format!("{}{path}", gateway.base_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Calls and failed calls (any outcome but ok) per minute (its start, Unix ms), from the
/// gateway's /calls (its newest 1000).
pub async fn calls_per_minute(gw: &impl Target) -> std::collections::BTreeMap<i64, (u64, u64)> {
    let (status, calls) = get_json(gw, "/calls?limit=1000").await;
    assert_eq!(status, 200, "{calls}");
    let mut minutes: std::collections::BTreeMap<i64, (u64, u64)> = Default::default();
    for call in calls["calls"].as_array().expect("calls") {
        let m = minutes
            .entry(call["at"].as_i64().expect("at") / 60_000 * 60_000)
            .or_default();
        m.0 += 1;
        m.1 += u64::from(call["outcome"] != "ok");
    }
    minutes
}

/// `GET /services` as JSON.
pub async fn services(gateway: &impl Target) -> Value {
    let (status, body) = get_json(gateway, "/services").await;
    assert_eq!(status, 200, "GET /services: {body}");
    body
}

/// The state of `name` in `/services`, if listed.
pub async fn service_state(gateway: &impl Target, name: &str) -> Option<String> {
    let s = services(gateway).await;
    s["services"]
        .as_array()?
        .iter()
        .find(|x| x["name"] == name)
        .and_then(|x| x["state"].as_str().map(str::to_string))
}

/// Waits until every service in `names` is registered and healthy.
pub async fn wait_for_services(gateway: &impl Target, names: &[&str]) {
    for name in names {
        wait_until(
            &format!("{name} to be registered and healthy"),
            Duration::from_secs(20),
            || async { service_state(gateway, name).await.as_deref() == Some("healthy") },
        )
        .await;
    }
}

/// A sessionless JSON-RPC post to `/mcp` with the token: (HTTP status, JSON body).
pub async fn rpc(gateway: &impl Target, method: &str, params: Value) -> (u16, Value) {
    let mut body = json!({"jsonrpc": "2.0", "id": 1, "method": method});
    if !params.is_null() {
        body["params"] = params;
    }
    let resp = http()
        .post(gateway.mcp())
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("POST /mcp");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, value)
}

/// `tools/call` over a sessionless post; returns the JSON-RPC response.
pub async fn call(gateway: &impl Target, tool: &str, arguments: Value) -> Value {
    rpc(
        gateway,
        "tools/call",
        json!({"name": tool, "arguments": arguments}),
    )
    .await
    .1
}

/// Names in a sessionless `tools/list`.
pub async fn tool_names(gateway: &impl Target) -> Vec<String> {
    let (status, body) = rpc(gateway, "tools/list", Value::Null).await;
    assert_eq!(status, 200, "{body}");
    body["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools in {body}"))
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_string())
        .collect()
}

/// An rmcp client session with the gateway, authenticated.
pub async fn mcp_client(gateway: &impl Target) -> ClientSession {
    service_kit::client::connect(
        &gateway.mcp(),
        &ClientOptions {
            client_name: "e2e-test".into(),
            bearer: Some(TOKEN.into()),
            ..ClientOptions::default()
        },
    )
    .await
    .expect("MCP session with the gateway")
}

/// POST /register with the token: (status, body).
pub async fn register(gateway: &impl Target, name: &str, url: &str) -> (u16, Value) {
    register_with(gateway, json!({"name": name, "url": url})).await
}

/// POST /register with any body: (status, body).
pub async fn register_with(gateway: &impl Target, body: Value) -> (u16, Value) {
    register_as(gateway, TOKEN, body).await
}

/// POST /register with any body and `token`: (status, body).
pub async fn register_as(gateway: &impl Target, token: &str, body: Value) -> (u16, Value) {
    let resp = http()
        .post(format!("{}/register", gateway.base_url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("POST /register");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("register JSON"))
}

/// The token of the test credential `name` (see [`credential`]).
pub fn credential_token(name: &str) -> String {
    format!("{name}-token-0123456789")
}

/// A credential `name` with `scopes` and the token [`credential_token`] gives it.
pub fn credential(name: &str, scopes: &[&str]) -> gateway::config::Credential {
    gateway::config::Credential {
        name: name.into(),
        token: credential_token(name),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        services: None,
        tools: None,
        virtual_servers: None,
    }
}

/// The value of `series` (name and labels, as exposed) in the gateway's `/metrics`.
pub async fn metric(gateway: &impl Target, series: &str) -> Option<f64> {
    let text = http()
        .get(format!("{}/metrics", gateway.base_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a number"))
}

/// How many `method` requests the pass-through path has answered itself
/// (`mcp_gateway_passthrough_requests_total`; 0 before the first).
pub async fn passthrough_served(gateway: &impl Target, method: &str) -> u64 {
    let series = format!("mcp_gateway_passthrough_requests_total{{method=\"{method}\"}}");
    metric(gateway, &series).await.unwrap_or(0.0) as u64
}

/// Any axum router served on `listener` (a stand-in collector, say).
pub fn serve_router(listener: TcpListener, router: axum::Router) -> Running {
    spawn(listener, move |l, s| async move {
        service_kit::serve::serve(l, router, s).await?;
        Ok(())
    })
}

/// The conformance fixture with `config` on an ephemeral loopback port, until the
/// token is cancelled.
pub async fn start_conformance_fixture(
    config: conformance::fixture::Config,
) -> (std::net::SocketAddr, tokio_util::sync::CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = tokio_util::sync::CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        let _ = conformance::fixture::run(config, listener, token).await;
    });
    (addr, stop)
}

/// The conformance fixture's configuration as a 2025-era backend (the `initialize`
/// handshake, server-to-client requests mid-call), which the gateway translates for
/// 2026-07-28 clients.
pub fn legacy_fixture() -> conformance::fixture::Config {
    conformance::fixture::Config {
        revision: conformance::fixture::Revision::V2025,
        ..Default::default()
    }
}

/// Reads `resp`'s body into `seen` until it contains `needle`; fails the test when the
/// stream ends or errs first, or when 10 s pass without it.
pub async fn read_until(resp: &mut reqwest::Response, seen: &mut String, needle: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(needle) {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("no {needle} within 10 s; the stream so far: {seen}"))
            .unwrap_or_else(|e| panic!("the stream failed before {needle}: {e}; so far: {seen}"))
            .unwrap_or_else(|| panic!("the stream ended before {needle}; so far: {seen}"));
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// `DELETE /mcp` of session `session` at `base` (a gateway's base URL) with `token`,
/// naming protocol revision `version` (`None`: no `Mcp-Protocol-Version` header): the
/// status.
pub async fn end_session(base: &str, token: &str, session: &str, version: Option<&str>) -> u16 {
    let mut req = http()
        .delete(format!("{base}/mcp"))
        .bearer_auth(token)
        .header("mcp-session-id", session);
    if let Some(version) = version {
        req = req.header("mcp-protocol-version", version);
    }
    req.send().await.expect("DELETE /mcp").status().as_u16()
}
