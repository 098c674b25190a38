//! Serving an axum router: `TCP_NODELAY` on every accepted socket (axum does not set it,
//! and without it a pooled client sees ~40 ms per call from Nagle + delayed ACK) and a
//! graceful shutdown when the given token is cancelled; and [`main`], the body of a
//! service binary's `main` around it (signals, bind, run, exit code).

use std::{net::SocketAddr, process::ExitCode};

use axum::{Router, serve::ListenerExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Binds `addr`, naming the address in the error so a taken port is obvious.
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets in-flight
/// requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("cannot set TCP_NODELAY: {e}");
        }
    });
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
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
