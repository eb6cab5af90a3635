//! Demo peers for Warden: the Enterprise Ledger (MCP) and the Employee Directory (REST + OpenAPI) resource servers from the seed scenario.
// They stand for remote servers with clocks of their own, so they read the real one and do
// not take the gateway's injected clock (a test stepping Warden's mock must not move theirs).
#![allow(clippy::disallowed_methods)]

mod auth;
pub mod directory;
pub mod ledger;
