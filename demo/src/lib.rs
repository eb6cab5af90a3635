//! Demo peers for Warden: the Enterprise Ledger MCP resource server from the "MCP server is a resource server" scenario.

pub mod ledger;
