//! Serving an axum router: `TCP_NODELAY` on every accepted socket (axum does not set it,
//! and without it a pooled client sees ~40 ms per call from Nagle + delayed ACK), bounds
//! on what a client can make the process hold ([`Limits`]: connections, the time to send
//! a request's header and body, the header's size), and a graceful shutdown when the
//! given token is cancelled; and [`main`], the body of a service binary's `main` around
//! it (signals, bind, run, exit code).

use std::{net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use axum::{Router, body::Body, extract::ConnectInfo};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

/// What one process lets its clients hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once; past it, new ones wait in the listen backlog until
    /// one closes.
    pub max_connections: usize,
    /// A request's header must arrive whole within this time; it also closes a
    /// kept-alive connection that starts no new request within it.
    pub header_read_timeout: Duration,
    /// A request's body must arrive whole within this time (an error for the handler
    /// reading it, then the connection closes).
    pub body_read_timeout: Duration,
    /// The largest request header block (a larger one gets 431).
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
        }
    }
}

/// Binds `addr`, naming the address in the error so a taken port is obvious.
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

/// Serves `router` on `listener` with the default [`Limits`] until `shutdown` is
/// cancelled, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, router, shutdown, Limits::default()).await
}

/// [`serve`] within `limits`, of any service taking axum's requests: a router, or a
/// router inside layers composed around it (one future for the stack, where each
/// `Router::layer` boxes the route's future again). Each request carries the client's
/// address (`ConnectInfo<SocketAddr>`).
pub async fn serve_with<S, B>(
    listener: TcpListener,
    service: S,
    shutdown: CancellationToken,
    limits: Limits,
) -> std::io::Result<()>
where
    S: tower::Service<
            http::Request<Body>,
            Response = http::Response<B>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    loop {
        let slot = tokio::select! {
            s = Arc::clone(&slots).acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        let (tcp, remote) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was
                // accepted: wait a little instead of spinning.
                tracing::warn!("accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("cannot set TCP_NODELAY: {e}");
        }
        let app = service.clone();
        let body_timeout = limits.body_read_timeout;
        let service =
            hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let mut request = request
                    .map(|b| Body::new(tower_http::timeout::DeadlineBody::new(body_timeout, b)));
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(remote));
                app.clone().oneshot(request)
            });
        let connection = builder.serve_connection(TokioIo::new(tcp), service);
        let stop = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut connection = std::pin::pin!(connection.with_upgrades());
            let result = tokio::select! {
                r = connection.as_mut() => r,
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%remote, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// A service binary's `main` once its command line is parsed and logging is set up:
/// binds `listen`, runs `run` with the listener and a token cancelled on SIGTERM /
/// Ctrl-C, and turns an error into a line `{error_prefix}: {error}` on stderr and a
/// failing exit code.
pub async fn main<F, Fut>(error_prefix: &str, listen: &str, run: F) -> ExitCode
where
    F: FnOnce(TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let shutdown = crate::shutdown::on_signal();
    let result = async {
        let listener = bind(listen).await?;
        run(listener, shutdown).await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{error_prefix}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
