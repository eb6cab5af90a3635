//! The per-shard policy caches: principals built once per identity, decisions per principal
//! and tool. Owned by the shard; filled by the authorize step (`mcp::authz`).

use std::collections::HashMap;

use warden_policy::Principal;

/// Per-shard caches: principals built once per identity, decisions per principal and tool.
#[derive(Debug)]
pub struct PolicyCaches {
    /// (engine generation, principal) per identity key.
    pub(crate) principals: HashMap<String, (u64, Principal)>,
    pub(crate) decisions: warden_policy::DecisionCache,
    /// The same two caches for the shadow policy (its own entities and decisions).
    pub(crate) shadow_principals: HashMap<String, (u64, Principal)>,
    pub(crate) shadow_decisions: warden_policy::DecisionCache,
}

impl Default for PolicyCaches {
    fn default() -> Self {
        PolicyCaches {
            principals: HashMap::new(),
            decisions: warden_policy::DecisionCache::new(100_000),
            shadow_principals: HashMap::new(),
            shadow_decisions: warden_policy::DecisionCache::new(100_000),
        }
    }
}
