//! Warden's control plane: configuration, issuer discovery and JWKS, upstream catalog,
//! the admin port, and the supervisor that runs the data-plane shards.

pub mod admin;
pub mod audit;
pub mod authz;
pub mod catalog;
mod catalog_headers;
mod catalog_items;
pub mod config;
pub mod console;
mod control;
pub mod delegate;
pub mod demo;
pub mod gateway;
pub mod issuers;
pub mod logs;
pub mod metrics;
pub mod otlp;
pub mod policy;
pub mod policytest;
mod rediscovery;
pub mod reload;
pub mod state;
pub mod sts;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(test)]
mod testlog;
pub mod tls;
mod upstream_watch;

pub use config::Config;
pub use dataplane::clock::{Clock, MockClock};
pub use gateway::{Running, StartError, StartOptions, start, start_file, start_with};
