//! The immutable, generation-numbered view of the world the control plane publishes to shards.
//!
//! A request loads the current snapshot once and uses it to the end, so it sees exactly
//! one generation. Publishing is one `ArcSwap::store`: lock-free for readers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::value::RawValue;

use crate::auth::IssuerState;
use crate::http1::conn::ConnLimits;

/// Everything a shard needs, as of one generation.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub settings: Arc<Settings>,
    pub issuers: Vec<Arc<IssuerState>>,
    pub upstreams: Vec<Arc<Upstream>>,
    pub tools: Arc<ToolTable>,
    /// Resources, templates and prompts of every upstream, namespaced (`crate::mcp::items`).
    pub items: Arc<crate::mcp::items::ItemTable>,
    /// The compiled policy set for this generation; `None` until one compiled (fail closed).
    pub policy: Option<Arc<warden_policy::Engine>>,
    /// `policy.shadow` compiled for the same catalog: decided beside `policy` on every call,
    /// disagreements counted and audited, never enforced.
    pub shadow: Option<Arc<warden_policy::Engine>>,
}

/// Listener and protocol settings.
#[derive(Debug)]
pub struct Settings {
    /// The exact resource identifier clients use, e.g. `https://gw.example/mcp`.
    pub public_url: String,
    /// Where the protected resource metadata lives (path-suffixed form).
    pub resource_metadata_url: String,
    /// The RFC 9728 document, pre-serialized.
    pub resource_metadata_json: Vec<u8>,
    pub mcp_path: String,
    /// Allowed `Origin` values (exact match, lower-case scheme and host).
    pub allowed_origins: Vec<String>,
    /// Host header values accepted (DNS-rebinding defence); empty = any.
    pub allowed_hosts: Vec<String>,
    /// When false this listener serves without authentication (loopback only; conformance testing).
    pub auth_enabled: bool,
    /// Scopes to name in 401 challenges.
    pub challenge_scope: String,
    pub max_token_bytes: usize,
    pub limits: ConnLimits,
    /// Idle and absolute session lifetimes.
    pub session_life: crate::session::Lifetimes,
    /// The key ring sealing and opening session ids (reloadable; `Debug` prints key ids only).
    pub session_keys: Arc<crate::session::SessionKeys>,
    pub max_connections_per_shard: usize,
    /// Requests a shard handles at once; beyond it a fast 503 (`limits.max_in_flight_per_shard`).
    pub max_in_flight_per_shard: usize,
    /// Per-user and per-tool rate limits (`rate_limits`).
    pub rate_limits: crate::ratelimit::Limits,
    pub server_name: String,
    pub server_version: String,
    /// Combined, labelled upstream `instructions` for `initialize`.
    pub instructions: Option<String>,
    /// Forward `logging/setLevel` and client notifications to this upstream (set when there is
    /// exactly one; resources, prompts and completions are aggregated over all).
    pub passthrough_upstream: Option<usize>,
    /// Capabilities advertised by `initialize`, pre-serialized.
    pub capabilities_json: String,
    /// Serve the 2024-11-05 HTTP+SSE transport (`GET /sse`, `POST /messages`) too.
    pub legacy_sse: bool,
    /// Upstream id → the revision discovery found it speaking (2026-07-28 = stateless).
    pub upstream_protocols: std::collections::HashMap<u32, String>,
    /// The gateway's client id in delegation chains (`act.sub`), when delegation is configured.
    pub delegation_client_id: Option<String>,
    /// The `algs` of the `DPoP` challenge, when some issuer takes DPoP proofs.
    pub dpop_algs: Option<String>,
    /// The public URL as a proof's `htu` must name it (normalised, `dpop::normalize_htu`).
    pub public_htu: String,
    /// The public URL's scheme, for the `htu` of a request known by its Host header.
    pub public_scheme: String,
}

impl Settings {
    /// The modern revision an upstream speaks, when it speaks one (else it is sessioned).
    pub fn modern_upstream(&self, id: u32) -> Option<&str> {
        self.upstream_protocols
            .get(&id)
            .map(String::as_str)
            .filter(|v| crate::mcp::era::is_modern(v))
    }
}

/// How the gateway authenticates itself to an upstream for discovery and sessions.
#[derive(Clone, Debug)]
pub enum UpstreamCredential {
    None,
    Bearer(crate::secret::Secret<String>),
}

/// One upstream MCP server, with its address already resolved by the control plane.
#[derive(Debug)]
pub struct Upstream {
    pub id: u32,
    pub name: String,
    pub namespace: String,
    /// `host[:port]` for the Host header.
    pub authority: String,
    pub path: String,
    pub addrs: Vec<SocketAddr>,
    /// TLS to the upstream (`https://`), with the roots the control plane loaded.
    pub tls: Option<UpstreamTls>,
    pub credential: UpstreamCredential,
    pub timeout: Duration,
    pub max_response_bytes: usize,
    /// Per-call delegation (RFC 8693): when set, every call to this upstream carries a
    /// token minted for that one call, and sessions use a gateway service token.
    pub delegation: Option<UpstreamDelegation>,
    /// A REST API bridged from its OpenAPI spec: calls become single HTTP requests.
    pub bridge: Option<Arc<warden_bridge::Bridge>>,
}

/// Delegation settings of one upstream (the seed's `tokenExchange` block).
#[derive(Debug, Clone)]
pub struct UpstreamDelegation {
    /// The `aud` of every token for this upstream.
    pub audience: String,
    /// Upstream tool name → its scopes and TTL. A tool not listed cannot be called.
    pub tools: HashMap<String, ToolDelegation>,
}

/// Scopes and lifetime of the tokens for one tool.
#[derive(Debug, Clone)]
pub struct ToolDelegation {
    pub scopes: Vec<String>,
    pub ttl_secs: i64,
}

/// Where a namespaced tool goes.
#[derive(Debug)]
pub struct ToolRoute {
    pub upstream: usize,
    /// The tool's name at its upstream.
    pub upstream_name: String,
    /// The tool's definition with the namespaced name, as served in `tools/list`.
    pub definition: Box<RawValue>,
    /// Parameters its `inputSchema` mirrors into `Mcp-Param-*` headers (`x-mcp-header`).
    pub param_headers: Vec<ParamHeader>,
}

/// A tool parameter mirrored into an `Mcp-Param-{name}` header (2026-07-28 `x-mcp-header`),
/// validated when the catalog was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamHeader {
    /// The `x-mcp-header` value as declared.
    pub name: String,
    /// Lower-cased, as the header name is matched.
    pub lower: String,
    /// The chain of `properties` keys from the schema root to the parameter.
    pub path: Vec<String>,
}

/// Exact-match routing table for tools, and the merged list.
#[derive(Debug, Default)]
pub struct ToolTable {
    pub routes: HashMap<String, ToolRoute>,
    /// Namespaced names in list order.
    pub order: Vec<String>,
}

/// Shared handle to the current snapshot.
pub type SnapshotCell = Arc<ArcSwap<Snapshot>>;

/// TLS settings of an upstream, built by the control plane (roots from its CA file).
#[derive(Clone)]
pub struct UpstreamTls {
    pub connector: monoio_rustls::TlsConnector,
    pub server_name: rustls_pki_types::ServerName<'static>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}
