//! Per-shard decision cache keyed by (principal, tool, action, generation), for slices that never read the context.

use std::collections::HashMap;

use crate::engine::{Action, Decision, Engine, Principal, RequestContext};

/// One principal's decisions: target → one slot per known action.
type PerPrincipal = HashMap<Box<str>, [Option<Decision>; 4]>;

/// Decisions already made on this shard. Owned by one shard (`&mut self`), so no locks.
///
/// Keyed by the principal's canonical claims (not a hash: two users never share an entry),
/// the target and the action; the whole cache empties when the engine's generation changes.
#[derive(Debug)]
pub struct DecisionCache {
    capacity: usize,
    len: usize,
    generation: Option<u64>,
    entries: HashMap<Box<str>, PerPrincipal>,
}

impl DecisionCache {
    /// A cache holding at most `capacity` decisions; when full it is emptied (simple and
    /// bounded; a token's decisions are rebuilt at about one uncached decision each).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            len: 0,
            generation: None,
            entries: HashMap::new(),
        }
    }

    /// Decisions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// [`Engine::decide`], answered from the cache when the target's policies do not read the context.
    pub fn decide(
        &mut self,
        engine: &Engine,
        principal: &Principal,
        action: Action,
        tool: Option<&str>,
        ctx: &RequestContext,
    ) -> Decision {
        let (Some(index), Some(target)) = (action.index(), tool) else {
            return engine.decide(principal, action, tool, ctx);
        };
        match engine.slice(&action, Some(target)) {
            Some(slice) if !slice.context_sensitive => {}
            _ => return engine.decide(principal, action, tool, ctx),
        }
        if self.generation != Some(engine.generation()) {
            self.clear();
            self.generation = Some(engine.generation());
        }
        if let Some(d) = self
            .entries
            .get(principal.key())
            .and_then(|m| m.get(target))
            .and_then(|a| a.get(index))
            .and_then(Option::as_ref)
        {
            return d.clone();
        }
        let decision = engine.decide(principal, action, tool, ctx);
        if self.len >= self.capacity {
            self.clear();
        }
        if self.capacity > 0 {
            let per_tool = self
                .entries
                .entry(principal.key().into())
                .or_default()
                .entry(target.into())
                .or_default();
            if let Some(slot) = per_tool.get_mut(index) {
                *slot = Some(decision.clone());
                self.len += 1;
            }
        }
        decision
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.len = 0;
    }
}
