//! Why a decision came out as it did: the decision the shards make (same slice, same engine),
//! the Cedar request built for it, and every policy's part — deciding, satisfied but
//! overridden, not satisfied (and which scope part failed), erroring, or outside the slice.
//! Also the comparisons a reviewer needs: which tools' policies changed between two engines,
//! which tools no permit can reach.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use cedar_policy::{
    ActionConstraint, Effect, EntityUid, Policy, PolicyId, PolicySet, PrincipalConstraint,
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::engine::{Action, Decision, DecisionKind, Engine, Principal, RequestContext, Slice};

/// What one policy did for one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum PolicyOutcome {
    /// It made the decision (a permit of an allow, a forbid of a deny).
    Decided,
    /// Its scope and condition hold but it did not decide (a permit beaten by a forbid).
    Satisfied,
    /// It does not apply: which part of it failed.
    NotSatisfied(String),
    /// Evaluating it failed (the decision is then a deny naming it).
    Error(String),
    /// Not in this target's slice: its resource scope cannot match the target.
    OutsideSlice,
}

/// One policy's line in an explanation.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyTrace {
    pub id: String,
    pub effect: &'static str,
    #[serde(flatten)]
    pub outcome: PolicyOutcome,
    /// The policy's Cedar text, annotations included.
    pub text: String,
}

/// A decision with everything that made it.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub decision: Decision,
    pub kind: DecisionKind,
    /// The principal's entities (user, client, groups) as Cedar JSON.
    pub principal: Value,
    pub action: String,
    pub resource: String,
    /// The context the slice was evaluated with (`{}` when no policy of the slice reads it).
    pub context: Value,
    pub policies: Vec<PolicyTrace>,
}

fn effect(p: &Policy) -> &'static str {
    match p.effect() {
        Effect::Permit => "permit",
        Effect::Forbid => "forbid",
    }
}

impl Engine {
    /// Explain [`Engine::decide`] for this request: the same decision, and each policy's part.
    pub fn explain(
        &self,
        principal: &Principal,
        action: Action,
        target: Option<&str>,
        ctx: &RequestContext,
    ) -> Explanation {
        let decision = self.decide(principal, action.clone(), target, ctx);
        let kind = decision.kind(true);
        let principal_json = json!(
            principal
                .0
                .entities
                .iter()
                .filter_map(|e| e.to_json_value().ok())
                .collect::<Vec<_>>()
        );
        let action_name = match &action {
            Action::CallTool => "tools/call".to_owned(),
            Action::ReadResource => "resources/read".to_owned(),
            Action::GetPrompt => "prompts/get".to_owned(),
            Action::Complete => "completion/complete".to_owned(),
            Action::Other(m) => m.clone(),
        };
        let Some(slice) = self.slice(&action, target) else {
            return Explanation {
                decision,
                kind,
                principal: principal_json,
                action: action_name,
                resource: format!("{} (unknown: no policy can apply)", target.unwrap_or("-")),
                context: json!({}),
                policies: Vec::new(),
            };
        };
        let context = if slice.context_sensitive {
            self.context_json(ctx)
        } else {
            json!({})
        };
        let policies = self.trace(principal, &action, slice, ctx, &decision);
        Explanation {
            decision,
            kind,
            principal: principal_json,
            action: format!("Action::\"{action_name}\""),
            resource: slice.uid.to_string(),
            context,
            policies,
        }
    }

    fn trace(
        &self,
        principal: &Principal,
        action: &Action,
        slice: &Slice,
        ctx: &RequestContext,
        decision: &Decision,
    ) -> Vec<PolicyTrace> {
        let in_slice: HashSet<&PolicyId> = slice.policies.policies().map(Policy::id).collect();
        let built = self.request(principal, action, slice, ctx, slice.context_sensitive);
        let mut out: Vec<PolicyTrace> = self
            .all
            .policies()
            .map(|p| {
                let outcome = if !in_slice.contains(p.id()) {
                    PolicyOutcome::OutsideSlice
                } else if decision.policy_ids.iter().any(|d| d == &p.id().to_string()) {
                    match &decision.reason {
                        Some(r) if r == crate::EVALUATION_ERROR_REASON => {
                            PolicyOutcome::Error("evaluation failed".into())
                        }
                        _ => PolicyOutcome::Decided,
                    }
                } else {
                    match &built {
                        Err(_) => PolicyOutcome::Error("the request could not be built".into()),
                        Ok((request, entities)) => self.alone(p, request, entities, principal),
                    }
                };
                PolicyTrace {
                    id: p.id().to_string(),
                    effect: effect(p),
                    outcome,
                    text: p.to_string(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// One policy evaluated by itself: satisfied, not (and which part), or an error.
    fn alone(
        &self,
        p: &Policy,
        request: &cedar_policy::Request,
        entities: &cedar_policy::Entities,
        principal: &Principal,
    ) -> PolicyOutcome {
        let mut single = PolicySet::new();
        if single.add(p.clone()).is_err() {
            return PolicyOutcome::Error("could not be evaluated alone".into());
        }
        let response = self.authorizer.is_authorized(request, &single, entities);
        if let Some(e) = response.diagnostics().errors().next() {
            return PolicyOutcome::Error(e.to_string());
        }
        if response.diagnostics().reason().any(|id| id == p.id()) {
            return PolicyOutcome::Satisfied;
        }
        let action_ok = match (p.action_constraint(), request.action()) {
            (ActionConstraint::Any, _) => true,
            (ActionConstraint::Eq(a), Some(r)) => &a == r,
            (ActionConstraint::In(list), Some(r)) => list.iter().any(|a| a == r),
            (_, None) => false,
        };
        if !action_ok {
            return PolicyOutcome::NotSatisfied(
                "its action scope does not include this action".into(),
            );
        }
        let uid = &principal.0.uid;
        let mut ancestors: BTreeSet<String> = entities
            .ancestors(uid)
            .map(|a| a.map(EntityUid::to_string).collect())
            .unwrap_or_default();
        ancestors.insert(uid.to_string());
        let principal_ok = match p.principal_constraint() {
            PrincipalConstraint::Any | PrincipalConstraint::Is(_) => true,
            PrincipalConstraint::Eq(u) => &u == uid,
            PrincipalConstraint::In(u) | PrincipalConstraint::IsIn(_, u) => {
                ancestors.contains(&u.to_string())
            }
        };
        if !principal_ok {
            return PolicyOutcome::NotSatisfied(
                "its principal scope does not match this user".into(),
            );
        }
        PolicyOutcome::NotSatisfied(
            match p.effect() {
                Effect::Forbid => "its condition is false (the `unless` holds or the `when` fails)",
                Effect::Permit => "its condition is false",
            }
            .into(),
        )
    }

    /// The context as JSON, arguments limited to the declared ones (as the engine builds it).
    fn context_json(&self, ctx: &RequestContext) -> Value {
        let mut c = json!({ "now": ctx.now_unix, "protocol_version": ctx.protocol_version });
        if let Some(s) = ctx.session {
            c["session"] = json!(s);
        }
        if let Some(raw) = ctx.arguments {
            let args: BTreeMap<String, Value> = serde_json::from_str(raw.get()).unwrap_or_default();
            let kept: BTreeMap<&String, &Value> = args
                .iter()
                .filter(|(k, _)| self.arg_types.contains_key(*k))
                .collect();
            c["arguments"] = json!(kept);
        }
        c
    }

    /// Every policy id, sorted.
    pub fn policy_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.all.policies().map(|p| p.id().to_string()).collect();
        ids.sort();
        ids
    }

    /// Tools no permit for `tools/call` can reach (under `default: deny`, nobody can call them).
    pub fn unreachable_tools(&self) -> Vec<String> {
        let call = &self.actions[0];
        let mut out: Vec<String> = self
            .tools
            .iter()
            .filter(|(_, slice)| {
                !slice.policies.policies().any(|p| {
                    p.effect() == Effect::Permit
                        && match p.action_constraint() {
                            ActionConstraint::Any => true,
                            ActionConstraint::Eq(a) => &a == call,
                            ActionConstraint::In(list) => list.contains(call),
                        }
                })
            })
            .map(|(name, _)| name.clone())
            .collect();
        out.sort();
        out
    }

    /// Tools whose applicable policies differ between `old` and this engine (added, removed,
    /// or any policy of its slice changed in text or annotations), sorted.
    pub fn changed_tools(&self, old: &Engine) -> Vec<String> {
        fn texts(s: &Slice) -> BTreeSet<String> {
            s.policies
                .policies()
                .map(|p| format!("{}\n{p}", p.id()))
                .collect()
        }
        let names: BTreeSet<&String> = self.tools.keys().chain(old.tools.keys()).collect();
        names
            .into_iter()
            .filter(|n| self.tools.get(*n).map(texts) != old.tools.get(*n).map(texts))
            .cloned()
            .collect()
    }

    /// The namespaced tools this engine was compiled for, sorted.
    pub fn tool_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tools.keys().cloned().collect();
        v.sort();
        v
    }
}
