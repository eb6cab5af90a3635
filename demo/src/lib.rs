//! Demo peers for Warden: the Enterprise Ledger (MCP) and the Employee Directory (REST + OpenAPI) resource servers from the seed scenario.

mod auth;
pub mod directory;
pub mod ledger;
