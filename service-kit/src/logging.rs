//! `tracing` subscriber set-up shared by the binaries. The filter comes from `RUST_LOG`
//! (default `info`); `json` selects one JSON object per line for log shippers. Logs go
//! to stdout ([`init`]) unless the process speaks MCP over stdin/stdout, where stdout
//! carries protocol messages only and logs go to stderr ([`init_to`] with
//! [`Output::Stderr`]). Colours only when the stream written is a terminal and
//! `NO_COLOR` is unset or empty ([`colours`]): a log file, a pipe, systemd's journal or
//! `docker logs` get plain text.

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

/// Whether log lines written to `output` get ANSI colours: only on a terminal, and not
/// when `NO_COLOR` is set to anything but the empty string (<https://no-color.org>).
pub fn colours(output: Output) -> bool {
    let terminal = match output {
        Output::Stdout => std::io::stdout().is_terminal(),
        Output::Stderr => std::io::stderr().is_terminal(),
    };
    terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The filter of every process's log lines: `RUST_LOG`, else `info` (rmcp's own at
/// `warn`).
pub fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rmcp=warn"))
}

/// Installs the global subscriber, writing to stdout. Calling it twice is harmless (the
/// second call is a no-op), which keeps in-process test set-ups simple.
pub fn init(json: bool) {
    init_to(json, Output::Stdout);
}

/// [`init`], writing to `output`, in colour only as [`colours`] says.
pub fn init_to(json: bool, output: Output) {
    let builder = fmt()
        .with_env_filter(filter())
        .with_target(true)
        .with_ansi(colours(output));
    let _ = match (output, json) {
        (Output::Stdout, false) => builder.try_init(),
        (Output::Stdout, true) => builder.json().try_init(),
        (Output::Stderr, json) => {
            let builder = builder.with_writer(std::io::stderr);
            if json {
                builder.json().try_init()
            } else {
                builder.try_init()
            }
        }
    };
}
