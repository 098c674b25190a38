//! `tracing` subscriber set-up shared by the binaries. The filter comes from `RUST_LOG`
//! (default `info`); `json` selects one JSON object per line for log shippers.

use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global subscriber. Calling it twice is harmless (the second call is a
/// no-op), which keeps in-process test set-ups simple.
pub fn init(json: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rmcp=warn"));
    let builder = fmt().with_env_filter(filter).with_target(true);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
