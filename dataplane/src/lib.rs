//! Warden's data plane: monoio shards that authenticate, route and forward MCP traffic.
//!
//! Nothing here blocks or talks to tokio: slow and shared work (JWKS fetches, discovery,
//! token exchange) belongs to the control plane, reached through [`control`].

pub mod audit;
pub mod auth;
pub mod clock;
pub mod control;
pub mod deadline;
pub mod delegation;
pub mod http1;
pub mod jsonrpc;
pub mod mcp;
pub mod meters;
pub mod policy_cache;
pub mod ratelimit;
pub mod secret;
pub mod session;
pub mod shard;
pub mod snapshot;
#[cfg(feature = "testing")]
pub mod testing;
pub mod upstream;
