//! Warden's per-tool authorization engine: config rules and `.cedar` files compiled into per-tool Cedar slices.
#![forbid(unsafe_code)]

mod cache;
mod compile;
mod config;
mod engine;
mod explain;
mod ids;
mod rego;
mod schema;
mod translate;

pub use cache::DecisionCache;
pub use compile::{CONFIG_FILE, compile, compile_catalog};
pub use config::{
    DefaultDecision, PolicyConfig, PolicyError, PolicyFile, ShadowPolicy, ToolInfo, ToolRule,
};
pub use engine::{
    Action, Decision, DecisionKind, EVALUATION_ERROR_REASON, Engine, Principal, PrincipalInput,
    RequestContext, UNKNOWN_METHOD_REASON,
};
pub use explain::{Explanation, PolicyOutcome, PolicyTrace};
pub use rego::import_rego;
pub use schema::BASE_SCHEMA;
pub use translate::{DEFAULT_DENY_REASON, translate};
