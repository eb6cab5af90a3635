//! Step 5 of the request path: one Cedar decision (precompiled, per-tool slices, cached
//! per shard) serves both `tools/call` and the `tools/list` filter.

use serde_json::value::RawValue;
use warden_policy::{Action, Engine, Principal, PrincipalInput, RequestContext};

use super::vocab::Caller;
use crate::policy_cache::PolicyCaches;
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

/// Who is asking, for a decision.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Who<'a> {
    pub caller: &'a Caller,
    pub session: &'a Session,
    /// Hash of the session id (never the id) for policy context.
    pub session_hash: Option<&'a str>,
}

const MAX_PRINCIPALS: usize = 50_000;

fn principal(caches: &mut PolicyCaches, engine: &Engine, caller: &Caller) -> Principal {
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
    let key = format!(
        "{iss}\u{0}{sub}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
        email.unwrap_or(""),
        groups.join(" "),
        scopes.join(" "),
        client.unwrap_or("")
    );
    if let Some((g, p)) = caches.principals.get(&key)
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
    });
    if caches.principals.len() >= MAX_PRINCIPALS {
        caches.principals.clear();
    }
    caches
        .principals
        .insert(key, (engine.generation(), p.clone()));
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
    let (caller, session, session_hash) = (who.caller, who.session, who.session_hash);
    let Some(engine) = snap.policy.as_deref() else {
        // No compiled policy (not loaded yet): fail closed.
        return Verdict::Hidden;
    };
    let mut caches = shard.policy.borrow_mut();
    let p = principal(&mut caches, engine, caller);
    let ctx = RequestContext {
        session: session_hash,
        now_unix: shard.clock.unix_secs(),
        protocol_version: &session.protocol_version,
        arguments,
    };
    let d = caches
        .decisions
        .decide(engine, &p, action, Some(target), &ctx);
    if d.allow {
        return Verdict::Allow {
            policy_ids: d.policy_ids,
        };
    }
    if d.policy_ids.is_empty() {
        return Verdict::Hidden;
    }
    let reason = d
        .reason
        .unwrap_or_else(|| warden_policy::DEFAULT_DENY_REASON.to_owned());
    match d.step_up_scopes {
        Some(scopes) if caller.claims.is_some() => Verdict::StepUp {
            scopes,
            reason,
            policy_ids: d.policy_ids,
        },
        _ => Verdict::Deny {
            reason,
            policy_ids: d.policy_ids,
        },
    }
}

/// The `tools/list` filter: a tool is listed only when the same decision allows calling it.
pub(crate) fn visible(shard: &Shard, snap: &Snapshot, who: &Who<'_>, tool: &str) -> bool {
    matches!(
        decide(shard, snap, who, Action::CallTool, tool, None),
        Verdict::Allow { .. }
    )
}

/// The policy action of a non-tool method that reaches an upstream.
pub(crate) fn action_of(method: &str) -> Option<Action> {
    match method {
        m if m.starts_with("resources/") => Some(Action::ReadResource),
        m if m.starts_with("prompts/") => Some(Action::GetPrompt),
        "completion/complete" => Some(Action::Complete),
        // A session setting, not data: not policy-checked.
        "logging/setLevel" => None,
        other => Some(Action::Other(other.to_owned())),
    }
}
