//! Test-only tooling for running the official MCP conformance suite
//! (`@modelcontextprotocol/conformance`) against this workspace; driven by
//! `scripts/conformance.sh`.
//!
//! - [`fixture`]: the MCP server exposing exactly the fixtures the suite's server
//!   scenarios call (binary `conformance-fixture`); run directly, and behind the gateway.
//! - [`proxy`]: a streaming reverse proxy adding the gateway's Bearer token, since the
//!   suite sends none (binary `auth-proxy`).
//! - [`report`]: summarizing one run and comparing two (binary `conformance-report`).

pub mod fixture;
pub mod proxy;
pub mod report;
