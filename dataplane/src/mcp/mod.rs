//! The MCP endpoint. [`pipeline`] is the request path on one page; each step is one module
//! below, named in its `//!`; [`vocab`] and [`refusal`] are the vocabulary they share.

mod admit;
mod authn;
mod authz;
mod batch;
mod delegate;
pub mod era;
mod forward;
mod http;
mod input_bridge;
pub mod items;
mod limits;
mod modern;
mod mrtr;
mod notes;
pub mod park;
mod pipeline;
mod record;
mod refusal;
mod rewrite;
mod route;
mod route_items;
mod sessions;
mod sse_legacy;
mod stream;
mod stream_relay;
mod subscribe;
mod vocab;

pub use forward::announces_list_change;
pub use http::{SUPPORTED_VERSIONS, UPSTREAM_VERSION, negotiate_version, speaks};
pub use pipeline::Gateway;
pub use refusal::Blame;
/// Re-exported for `bench/` only: routing is otherwise reachable only through a live shard.
#[doc(hidden)]
pub use rewrite::tools_call_params;
