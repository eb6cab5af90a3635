//! Real test peers for Warden's tests: a token issuer with a JWKS and an MCP upstream that records what it receives.
// Test peers, not the gateway: a std Mutex around their recorded state is fine here.
#![allow(clippy::disallowed_types)]
#![forbid(unsafe_code)]

pub mod issuer;
mod keys;
pub mod postgres;
pub mod upstream;
mod util;

pub use issuer::{JwksMode, KeyAlg, TestIssuer};
pub use upstream::{Recorded, TestUpstream, UpstreamMode, UpstreamOptions};
