//! Step 5 of the request path: one Cedar decision (precompiled, per-tool slices, cached
//! per shard) serves both `tools/call` and the `tools/list` filter.

use serde_json::value::RawValue;
use warden_policy::{Action, DecisionKind, Engine, Principal, PrincipalInput, RequestContext};

use super::vocab::Caller;
use crate::audit::ShadowRecord;
use std::collections::HashMap;

use crate::session::Session;
use crate::shard::Shard;
use crate::snapshot::Snapshot;

/// What policy concluded for one request.
#[derive(Debug)]
pub(crate) enum Verdict {
    Allow {
        policy_ids: Vec<String>,
    },
    /// Denied with no policy explaining it (default deny): the tool is hidden, and
    /// answered exactly like an unknown one.
    Hidden,
    /// Denied by a policy with a reason the agent should read.
    Deny {
        reason: String,
        policy_ids: Vec<String>,
    },
    /// A missing scope the user could be granted: answer 403 so the client re-consents.
    StepUp {
        scopes: Vec<String>,
        reason: String,
        policy_ids: Vec<String>,
    },
}

impl Verdict {
    pub(crate) fn kind(&self) -> DecisionKind {
        match self {
            Verdict::Allow { .. } => DecisionKind::Allow,
            Verdict::Hidden => DecisionKind::Hidden,
            Verdict::Deny { .. } => DecisionKind::Deny,
            Verdict::StepUp { .. } => DecisionKind::StepUp,
        }
    }
}

/// Who is asking, for a decision.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Who<'a> {
    pub caller: &'a Caller,
    pub session: &'a Session,
    /// Hash of the session id (never the id) for policy context.
    pub session_hash: Option<&'a str>,
}

const MAX_PRINCIPALS: usize = 50_000;

/// The caller's principal for `engine`, built once per identity and generation.
fn principal(
    cache: &mut HashMap<String, (u64, Principal)>,
    engine: &Engine,
    caller: &Caller,
) -> Principal {
    let anon_scopes: Vec<String> = Vec::new();
    let (iss, sub, email, groups, scopes, client) = match &caller.claims {
        Some(c) => (
            c.iss.as_str(),
            c.sub.as_str(),
            c.email.as_deref(),
            &c.groups[..],
            &c.scopes[..],
            c.client_id.as_deref(),
        ),
        None => (
            "",
            "anonymous",
            None,
            &anon_scopes[..],
            &anon_scopes[..],
            None,
        ),
    };
    // The `act` chain's subjects (no allocation for a token without `act`).
    let actors = match caller.claims.as_ref().and_then(|c| c.act.as_ref()) {
        Some(act) => crate::audit::actors(None, Some(act)),
        None => Vec::new(),
    };
    let key = format!(
        "{iss}\u{0}{sub}\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
        email.unwrap_or(""),
        groups.join(" "),
        scopes.join(" "),
        client.unwrap_or(""),
        actors.join(" ")
    );
    if let Some((g, p)) = cache.get(&key)
        && *g == engine.generation()
    {
        return p.clone();
    }
    let p = engine.principal(&PrincipalInput {
        iss,
        sub,
        email,
        groups,
        scopes,
        client_id: client,
        actors: &actors,
    });
    if cache.len() >= MAX_PRINCIPALS {
        cache.clear();
    }
    cache.insert(key, (engine.generation(), p.clone()));
    p
}

/// Decide `action` on `target` (a namespaced tool, or an upstream for non-tool methods).
pub(crate) fn decide(
    shard: &Shard,
    snap: &Snapshot,
    who: &Who<'_>,
    action: Action,
    target: &str,
    arguments: Option<&RawValue>,
) -> Verdict {
    decide_item(shard, snap, who, action, target, arguments, None)
}

/// [`decide`] about one resource, prompt or completion of the upstream `target`, named in
/// `context.item` as the client names it.
pub(crate) fn decide_item(
    shard: &Shard,
    snap: &Snapshot,
    who: &Who<'_>,
    action: Action,
    target: &str,
    arguments: Option<&RawValue>,
    item: Option<&str>,
) -> Verdict {
    let (caller, session, session_hash) = (who.caller, who.session, who.session_hash);
    let Some(engine) = snap.policy.as_deref() else {
        // No compiled policy (not loaded yet): fail closed.
        return Verdict::Hidden;
    };
    let mut caches = shard.policy.borrow_mut();
    let p = principal(&mut caches.principals, engine, caller);
    let ctx = RequestContext {
        session: session_hash,
        now_unix: shard.clock.unix_secs(),
        protocol_version: &session.protocol_version,
        arguments,
        item,
    };
    let d = caches
        .decisions
        .decide(engine, &p, action, Some(target), &ctx);
    let reason = || {
        d.reason
            .clone()
            .unwrap_or_else(|| warden_policy::DEFAULT_DENY_REASON.to_owned())
    };
    match d.kind(caller.claims.is_some()) {
        DecisionKind::Allow => Verdict::Allow {
            policy_ids: d.policy_ids,
        },
        DecisionKind::Hidden => Verdict::Hidden,
        DecisionKind::StepUp => Verdict::StepUp {
            scopes: d.step_up_scopes.clone().unwrap_or_default(),
            reason: reason(),
            policy_ids: d.policy_ids,
        },
        DecisionKind::Deny => Verdict::Deny {
            reason: reason(),
            policy_ids: d.policy_ids,
        },
    }
}

/// Decide the same request with the shadow policy, if one is configured; `Some` when it
/// disagrees with the live verdict (counted in `warden_policy_shadow_disagreements_total`,
/// and put on the audit record by the caller). Never changes the live decision.
pub(crate) fn shadow(
    shard: &Shard,
    snap: &Snapshot,
    who: &Who<'_>,
    live: &Verdict,
    action: Action,
    target: &str,
    arguments: Option<&RawValue>,
) -> Option<ShadowRecord> {
    shadow_item(shard, snap, who, live, (action, target, None), arguments)
}

/// [`shadow`] of a [`decide_item`] decision: `of` is (action, upstream, item).
pub(crate) fn shadow_item(
    shard: &Shard,
    snap: &Snapshot,
    who: &Who<'_>,
    live: &Verdict,
    of: (Action, &str, Option<&str>),
    arguments: Option<&RawValue>,
) -> Option<ShadowRecord> {
    let (action, target, item) = of;
    let engine = snap.shadow.as_deref()?;
    let mut caches = shard.policy.borrow_mut();
    let p = principal(&mut caches.shadow_principals, engine, who.caller);
    let ctx = RequestContext {
        session: who.session_hash,
        now_unix: shard.clock.unix_secs(),
        protocol_version: &who.session.protocol_version,
        arguments,
        item,
    };
    let d = caches
        .shadow_decisions
        .decide(engine, &p, action, Some(target), &ctx);
    let (live, kind) = (live.kind(), d.kind(who.caller.claims.is_some()));
    if live == kind {
        return None;
    }
    metrics::counter!("warden_policy_shadow_disagreements_total", "live" => live.as_str(), "shadow" => kind.as_str())
        .increment(1);
    Some(ShadowRecord {
        decision: kind.as_str(),
        policy_ids: d.policy_ids,
        reason: d.reason,
    })
}

/// The `tools/list` filter: a tool is listed only when the same decision allows calling it.
pub(crate) fn visible(shard: &Shard, snap: &Snapshot, who: &Who<'_>, tool: &str) -> bool {
    matches!(
        decide(shard, snap, who, Action::CallTool, tool, None),
        Verdict::Allow { .. }
    )
}

/// The prompts and resources list filter: an item of upstream `up` is listed only when the
/// decision its get or read would get is an allow.
pub(crate) fn visible_item(
    shard: &Shard,
    snap: &Snapshot,
    who: &Who<'_>,
    action: Action,
    up: usize,
    item: &str,
) -> bool {
    let Some(u) = snap.upstreams.get(up) else {
        return false;
    };
    let v = decide_item(shard, snap, who, action, &u.name, None, Some(item));
    matches!(v, Verdict::Allow { .. })
}

/// The policy action of a non-tool method that reaches an upstream (one mapping, shared with
/// `warden policy` and the audit replay).
pub(crate) fn action_of(method: &str) -> Option<Action> {
    Action::of_method(method)
}
