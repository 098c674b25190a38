//! Serving an axum router: `TCP_NODELAY` on every accepted socket (axum does not set it,
//! and without it a pooled client sees ~40 ms per call from Nagle + delayed ACK) and a
//! graceful shutdown when the given token is cancelled.

use std::net::SocketAddr;

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
