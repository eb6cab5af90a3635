//! Behaviour suites on the socket-free harness (`controlplane::testing::Harness`): routing,
//! policy, sessions and token validation through the real shard and snapshot, in memory.
//! The socket tests beside this directory keep one happy path per concern end to end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod aggregate;
mod audit;
mod delegation;
mod discovery;
mod dpop;
mod env;
mod eras;
mod input_bridge;
mod policy;
mod routing;
mod sessions;
mod streams;
mod tokens;
mod versions;
