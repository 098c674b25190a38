//! Test-only tooling for running the official MCP conformance suite
//! (`@modelcontextprotocol/conformance`) against this workspace; driven by
//! `scripts/conformance.sh`.
//!
//! - [`fixture`]: the MCP server exposing exactly the fixtures the suite's server
//!   scenarios call (binary `conformance-fixture`); run directly, and behind the gateway.
//!   `--revision 2026` (the default) serves 2025-era sessions and 2026-07-28 requests
//!   (the 2026 diagnostic tools: [`fixture::modern`], [`fixture::tasks`]);
//!   `--revision 2025` only the revisions up to 2025-11-25.
//! - [`proxy`]: a streaming reverse proxy adding the gateway's Bearer token, since the
//!   suite sends none (binary `auth-proxy`).
//! - [`report`]: summarizing one run and comparing two (binary `conformance-report`).

pub mod fixture;
pub mod proxy;
pub mod report;
