//! Serving one MCP server handler over stdin/stdout: newline-delimited JSON-RPC through
//! rmcp's stdio transport ([`rmcp::transport::io::stdio_pipes`]: non-blocking pipes when
//! both streams are pipes, as a client launching a server makes them). The process
//! serves the one client that launched it until that client closes stdin (EOF) or the
//! process gets SIGTERM / Ctrl-C. No port is bound and nothing registers with a gateway.
//!
//! Invariant: while serving, nothing but JSON-RPC messages is written to stdout; logs
//! (set up with `logging::init_to(.., Output::Stderr)`) and errors go to stderr.

use std::process::ExitCode;

use rmcp::{ServerHandler, ServiceExt, service::ServerInitializeError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

/// Serves `handler` to the client at the other end of `reader` / `writer` until the
/// client closes `reader` or `shutdown` is cancelled. A client that goes away before
/// `initialize` is a clean end too; a first message other than `initialize` is an
/// error.
pub async fn serve<S, R, W>(
    handler: S,
    reader: R,
    writer: W,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    S: ServerHandler,
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let running = tokio::select! {
        running = handler.serve_with_ct((reader, writer), shutdown.child_token()) => running,
        () = shutdown.cancelled() => {
            tracing::info!("stopped before the client initialized");
            return Ok(());
        }
    };
    let running = match running {
        Ok(running) => running,
        Err(ServerInitializeError::ConnectionClosed(_) | ServerInitializeError::Cancelled) => {
            tracing::info!("the client went away before initializing");
            return Ok(());
        }
        Err(e) => anyhow::bail!("MCP handshake over stdio failed: {e}"),
    };
    tracing::info!("serving MCP over stdio");
    let reason = running
        .waiting()
        .await
        .map_err(|e| anyhow::anyhow!("the stdio session task failed: {e}"))?;
    tracing::info!(?reason, "stdio session ended");
    Ok(())
}

/// A service binary's `main` in stdio mode, once its command line is parsed and logging
/// set up to stderr: serves `make_handler(shutdown)` on the process's stdin/stdout
/// (`shutdown` is cancelled on SIGTERM / Ctrl-C), stops on EOF or that signal, and exits
/// the process (an error becomes `{error_prefix}: {error}` on stderr and a failing
/// status).
///
/// It exits rather than returning because a blocking stdin read (stdin not a pipe: a
/// terminal or a file) cannot be cancelled, and the runtime would wait for it forever
/// when dropped.
pub async fn main<S, F>(error_prefix: &str, make_handler: F) -> ExitCode
where
    S: ServerHandler,
    F: FnOnce(CancellationToken) -> S,
{
    let shutdown = crate::shutdown::on_signal();
    let handler = make_handler(shutdown.clone());
    let (reader, writer) = rmcp::transport::io::stdio_pipes();
    let code = match serve(handler, reader, writer, shutdown).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{error_prefix}: {e:#}");
            1
        }
    };
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rmcp::model::{ServerCapabilities, ServerConfig};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    use super::*;

    #[derive(Clone)]
    struct Empty;

    impl ServerHandler for Empty {
        fn get_info(&self) -> ServerConfig {
            ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
        }
    }

    const WAIT: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn answers_initialize_and_ends_when_the_input_closes() {
        let (client_in, server_in) = tokio::io::duplex(64 * 1024);
        let (server_out, client_out) = tokio::io::duplex(64 * 1024);
        let served = tokio::spawn(serve(
            Empty,
            server_in,
            server_out,
            CancellationToken::new(),
        ));
        let mut input = client_in;
        input
            .write_all(
                br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}
"#,
            )
            .await
            .expect("write");
        let mut lines = BufReader::new(client_out).lines();
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("an answer in time")
            .expect("read")
            .expect("a line");
        let answer: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(answer["id"], 1);
        assert!(
            answer["result"]["capabilities"]["tools"].is_object(),
            "{answer}"
        );
        drop(input);
        tokio::time::timeout(WAIT, served)
            .await
            .expect("serving ends after EOF")
            .expect("no panic")
            .expect("a clean end");
    }

    #[tokio::test]
    async fn ends_cleanly_on_shutdown_and_on_eof_before_initialize() {
        let (_client_in, server_in) = tokio::io::duplex(1024);
        let (server_out, _client_out) = tokio::io::duplex(1024);
        let shutdown = CancellationToken::new();
        let served = tokio::spawn(serve(Empty, server_in, server_out, shutdown.clone()));
        shutdown.cancel();
        tokio::time::timeout(WAIT, served)
            .await
            .expect("serving ends after shutdown")
            .expect("no panic")
            .expect("a clean end");

        let (client_in, server_in) = tokio::io::duplex(1024);
        let (server_out, _client_out) = tokio::io::duplex(1024);
        drop(client_in);
        tokio::time::timeout(
            WAIT,
            serve(Empty, server_in, server_out, CancellationToken::new()),
        )
        .await
        .expect("serving ends after EOF")
        .expect("a clean end");
    }
}
