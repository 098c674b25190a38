//! `tracing` subscriber set-up shared by the binaries. The filter comes from `RUST_LOG`
//! (default `info`); `json` selects one JSON object per line for log shippers. Logs go
//! to stdout ([`init`]) unless the process speaks MCP over stdin/stdout, where stdout
//! carries protocol messages only and logs go to stderr ([`init_to`] with
//! [`Output::Stderr`]).

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt};

/// Where log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Standard output: the HTTP processes' default.
    Stdout,
    /// Standard error: for a process whose stdout is an MCP stdio transport.
    Stderr,
}

/// Installs the global subscriber, writing to stdout. Calling it twice is harmless (the
/// second call is a no-op), which keeps in-process test set-ups simple.
pub fn init(json: bool) {
    init_to(json, Output::Stdout);
}

/// [`init`], writing to `output`. On stderr, colours are used only when stderr is a
/// terminal (a desktop client's log file gets no escape codes).
pub fn init_to(json: bool, output: Output) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rmcp=warn"));
    let builder = fmt().with_env_filter(filter).with_target(true);
    let _ = match (output, json) {
        (Output::Stdout, false) => builder.try_init(),
        (Output::Stdout, true) => builder.json().try_init(),
        (Output::Stderr, json) => {
            let builder = builder
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal());
            if json {
                builder.json().try_init()
            } else {
                builder.try_init()
            }
        }
    };
}
