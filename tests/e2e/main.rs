//! End-to-end tests of the whole stack: the gateway, shopping-service, user-service and
//! fixture MCP servers run in-process on ephemeral loopback ports; every check goes over
//! real HTTP (and real `curl` for the seed's commands).

#[path = "../support/mod.rs"]
mod support;

mod attacks;
mod auth;
mod bridge;
mod cli;
mod cluster;
mod compose;
mod dashboard;
mod definitions;
mod deploy;
mod docs;
mod faults;
mod federation;
mod import;
mod observe;
mod persistence;
mod protocol;
mod registration;
mod rounds;
mod search;
mod seed;
mod servers;
mod stdio;
mod transparency;
mod trust;
