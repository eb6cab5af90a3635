//! Demo peers for Warden: the Enterprise Ledger (MCP) and the Employee Directory (REST + OpenAPI) resource servers from the seed scenario.
// They stand for remote servers with clocks of their own: they read the system clock, except
// that token expiry is judged by a `Now` their host may hand them (`warden demo` shares its
// clock with them, so a test that steps it opens no skew).
#![allow(clippy::disallowed_methods)]

mod auth;
pub mod directory;
pub mod ledger;

pub use auth::Now;
