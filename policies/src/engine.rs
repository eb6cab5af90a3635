//! The compiled engine: per-tool policy slices, principals built once per token, and one decision per request.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityUid, PolicyId, PolicySet, Request,
    RestrictedExpression,
};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::ids;
use crate::schema::ArgType;
use crate::translate::DEFAULT_DENY_REASON;

/// The reason given when a policy could not be evaluated (always a deny).
pub const EVALUATION_ERROR_REASON: &str = "Access denied: the policy could not be evaluated.";
/// The reason given for a method Warden does not know.
pub const UNKNOWN_METHOD_REASON: &str = "Access denied: unknown method.";

/// The MCP operation being authorized.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// `tools/call` (and the `tools/list` filter, with no arguments); the target is a namespaced tool.
    CallTool,
    /// `resources/read`; the target is the upstream it routes to.
    ReadResource,
    /// `prompts/get`; the target is the upstream.
    GetPrompt,
    /// `completion/complete`; the target is the upstream.
    Complete,
    /// Any other method: always denied.
    Other(String),
}

impl Action {
    /// The action of an MCP method that reaches an upstream; `None` for a method policy does
    /// not decide (`logging/setLevel`, a session setting). Unknown methods are `Other` (denied).
    pub fn of_method(method: &str) -> Option<Action> {
        match method {
            "tools/call" => Some(Self::CallTool),
            m if m.starts_with("resources/") => Some(Self::ReadResource),
            m if m.starts_with("prompts/") => Some(Self::GetPrompt),
            "completion/complete" => Some(Self::Complete),
            "logging/setLevel" => None,
            other => Some(Self::Other(other.to_owned())),
        }
    }

    pub(crate) fn index(&self) -> Option<usize> {
        match self {
            Self::CallTool => Some(0),
            Self::ReadResource => Some(1),
            Self::GetPrompt => Some(2),
            Self::Complete => Some(3),
            Self::Other(_) => None,
        }
    }
}

/// The validated token's claims that policy may read (never client-sent identity headers).
#[derive(Debug, Clone, Copy)]
pub struct PrincipalInput<'a> {
    pub iss: &'a str,
    pub sub: &'a str,
    pub email: Option<&'a str>,
    pub groups: &'a [String],
    pub scopes: &'a [String],
    pub client_id: Option<&'a str>,
    /// The `act` chain's subjects, outermost first (empty without `act`).
    pub actors: &'a [String],
}

/// A user's Cedar entities, built once per validated token; cheap to clone.
#[derive(Debug, Clone)]
pub struct Principal(pub(crate) Arc<PrincipalInner>);

#[derive(Debug)]
pub(crate) struct PrincipalInner {
    /// Every input that shapes a decision, canonically encoded: the decision-cache key.
    pub(crate) key: Box<str>,
    pub(crate) uid: EntityUid,
    pub(crate) entities: Vec<Entity>,
    pub(crate) scopes: Vec<String>,
}

impl Principal {
    /// The cache key: equal keys mean equal entities, so equal decisions for one generation.
    pub fn key(&self) -> &str {
        &self.0.key
    }
}

/// Per-request facts for `context`.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    /// A hash of the session id, never the id itself.
    pub session: Option<&'a str>,
    pub now_unix: i64,
    pub protocol_version: &'a str,
    /// The call's `arguments`; `None` for the `tools/list` filter.
    pub arguments: Option<&'a RawValue>,
    /// The item a resource, prompt or completion decision is about, as the client names it
    /// (a namespaced prompt name, a gateway-facing resource URI or URI template); `None` for tools.
    pub item: Option<&'a str>,
}

/// The outcome, with the policies that made it (for the audit trail).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub allow: bool,
    /// The deciding policies' ids, sorted: the permits for an allow, the forbids (or the
    /// policies that failed to evaluate) for a deny; empty for a default deny.
    pub policy_ids: Vec<String>,
    /// For a deny, the text the agent sees.
    pub reason: Option<String>,
    /// When every deciding forbid is a step-up rule: the scopes to ask for (current + needed).
    pub step_up_scopes: Option<Vec<String>>,
}

/// How a decision is answered: the one classification the shards and `warden policy test` share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    Allow,
    /// A deny no policy explains (default deny): the tool is hidden, answered like an unknown one.
    Hidden,
    /// A deny by a policy, with a reason the agent reads.
    Deny,
    /// A deny by step-up rules only: 403 `insufficient_scope`, the client re-consents.
    StepUp,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Hidden => "hidden",
            Self::Deny => "deny",
            Self::StepUp => "step_up",
        }
    }
}

impl Decision {
    /// The answer this decision gets, for a caller with a token (`authenticated`) or without
    /// (an anonymous caller cannot re-consent, so step-up becomes a plain deny).
    pub fn kind(&self, authenticated: bool) -> DecisionKind {
        if self.allow {
            DecisionKind::Allow
        } else if self.policy_ids.is_empty() {
            DecisionKind::Hidden
        } else if self.step_up_scopes.is_some() && authenticated {
            DecisionKind::StepUp
        } else {
            DecisionKind::Deny
        }
    }

    pub(crate) fn deny(reason: &str, policy_ids: Vec<String>) -> Self {
        Self {
            allow: false,
            policy_ids,
            reason: Some(reason.to_owned()),
            step_up_scopes: None,
        }
    }
}

/// What the engine knows about one policy, read from its annotations at compile time.
#[derive(Debug, Clone, Default)]
pub(crate) struct PolicyMeta {
    pub(crate) reason: Option<String>,
    pub(crate) step_up: Option<Vec<String>>,
}

/// The policies that can apply to one resource (tool or upstream) and that resource's entities.
#[derive(Debug)]
pub(crate) struct Slice {
    pub(crate) uid: EntityUid,
    pub(crate) entities: Vec<Entity>,
    pub(crate) policies: PolicySet,
    pub(crate) context_sensitive: bool,
}

/// The compiled policy set of one generation; immutable, shared by every shard.
#[derive(Debug)]
pub struct Engine {
    pub(crate) generation: u64,
    pub(crate) tools: HashMap<String, Slice>,
    pub(crate) upstreams: HashMap<String, Slice>,
    pub(crate) all: PolicySet,
    pub(crate) meta: HashMap<String, PolicyMeta>,
    pub(crate) arg_types: BTreeMap<String, ArgType>,
    pub(crate) actions: [EntityUid; 4],
    pub(crate) types: ids::Types,
    pub(crate) authorizer: Authorizer,
}

impl Engine {
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Build the principal's entities (user, client, groups) once per validated token.
    pub fn principal(&self, p: &PrincipalInput) -> Principal {
        let key = serde_json::json!([
            p.iss,
            p.sub,
            p.email,
            p.groups,
            p.scopes,
            p.client_id,
            p.actors
        ])
        .to_string();
        let uid = ids::uid(
            &self.types.user,
            &serde_json::json!([p.iss, p.sub]).to_string(),
        );
        let mut entities = Vec::with_capacity(2 + p.groups.len());
        let mut attrs = HashMap::from([
            (
                "iss".to_owned(),
                RestrictedExpression::new_string(p.iss.to_owned()),
            ),
            (
                "sub".to_owned(),
                RestrictedExpression::new_string(p.sub.to_owned()),
            ),
            (
                "scopes".to_owned(),
                RestrictedExpression::new_set(
                    p.scopes
                        .iter()
                        .map(|s| RestrictedExpression::new_string(s.clone())),
                ),
            ),
            (
                "actors".to_owned(),
                RestrictedExpression::new_set(
                    p.actors
                        .iter()
                        .map(|s| RestrictedExpression::new_string(s.clone())),
                ),
            ),
        ]);
        if let Some(email) = p.email {
            attrs.insert(
                "email".into(),
                RestrictedExpression::new_string(email.to_owned()),
            );
        }
        if let Some(client_id) = p.client_id {
            let client = ids::uid(&self.types.client, client_id);
            attrs.insert(
                "client".into(),
                RestrictedExpression::new_entity_uid(client.clone()),
            );
            let client_attrs = HashMap::from([(
                "client_id".to_owned(),
                RestrictedExpression::new_string(client_id.to_owned()),
            )]);
            entities.extend(Entity::new(client, client_attrs, HashSet::new()).ok());
        }
        let groups: HashSet<EntityUid> = p
            .groups
            .iter()
            .map(|g| ids::uid(&self.types.group, g))
            .collect();
        entities.extend(groups.iter().map(|g| Entity::with_uid(g.clone())));
        // Literal values cannot fail to evaluate; if Cedar ever refuses, the principal has no
        // entity and every decision for it is a deny (never an allow by omission).
        entities.extend(Entity::new(uid.clone(), attrs, groups).ok());
        Principal(Arc::new(PrincipalInner {
            key: key.into_boxed_str(),
            uid,
            entities,
            scopes: p.scopes.to_vec(),
        }))
    }

    /// One decision, evaluated against the slice of policies that can apply to `tool`.
    pub fn decide(
        &self,
        principal: &Principal,
        action: Action,
        tool: Option<&str>,
        ctx: &RequestContext,
    ) -> Decision {
        let Some(slice) = self.slice(&action, tool) else {
            return self.unknown(&action);
        };
        self.evaluate(
            principal,
            &action,
            slice,
            &slice.policies,
            ctx,
            slice.context_sensitive,
        )
    }

    /// The same decision against the whole policy set (no slicing): for tests and `warden policy test`.
    pub fn decide_unsliced(
        &self,
        principal: &Principal,
        action: Action,
        tool: Option<&str>,
        ctx: &RequestContext,
    ) -> Decision {
        let Some(slice) = self.slice(&action, tool) else {
            return self.unknown(&action);
        };
        self.evaluate(principal, &action, slice, &self.all, ctx, true)
    }

    /// Whether any policy that applies to this tool reads the context (then decisions are not cached).
    pub fn context_sensitive(&self, tool: &str) -> bool {
        self.tools.get(tool).is_some_and(|s| s.context_sensitive)
    }

    pub(crate) fn slice(&self, action: &Action, target: Option<&str>) -> Option<&Slice> {
        let target = target?;
        match action {
            Action::CallTool => self.tools.get(target),
            Action::ReadResource | Action::GetPrompt | Action::Complete => {
                self.upstreams.get(target)
            }
            Action::Other(_) => None,
        }
    }

    pub(crate) fn unknown(&self, action: &Action) -> Decision {
        match action {
            // The same answer as a default deny: a hidden tool and an unknown one look alike.
            Action::Other(_) => Decision::deny(UNKNOWN_METHOD_REASON, Vec::new()),
            _ => Decision::deny(DEFAULT_DENY_REASON, Vec::new()),
        }
    }

    /// The Cedar request and entities for one decision, or the deny that building them ended in.
    pub(crate) fn request(
        &self,
        principal: &Principal,
        action: &Action,
        slice: &Slice,
        ctx: &RequestContext,
        with_context: bool,
    ) -> Result<(Request, Entities), Decision> {
        let Some(action_uid) = action.index().and_then(|i| self.actions.get(i)) else {
            return Err(self.unknown(action));
        };
        let entities = principal
            .0
            .entities
            .iter()
            .chain(slice.entities.iter())
            .cloned();
        let Ok(entities) = Entities::from_entities(entities, None) else {
            return Err(Decision::deny(EVALUATION_ERROR_REASON, Vec::new()));
        };
        // A slice that never reads `context` gets an empty one: building it costs more than deciding.
        let context = if with_context {
            self.context(ctx)
        } else {
            Some(Context::empty())
        };
        let Some(context) = context else {
            return Err(Decision::deny(EVALUATION_ERROR_REASON, Vec::new()));
        };
        let Ok(request) = Request::new(
            principal.0.uid.clone(),
            action_uid.clone(),
            slice.uid.clone(),
            context,
            None,
        ) else {
            return Err(Decision::deny(EVALUATION_ERROR_REASON, Vec::new()));
        };
        Ok((request, entities))
    }

    fn evaluate(
        &self,
        principal: &Principal,
        action: &Action,
        slice: &Slice,
        policies: &PolicySet,
        ctx: &RequestContext,
        with_context: bool,
    ) -> Decision {
        let (request, entities) = match self.request(principal, action, slice, ctx, with_context) {
            Ok(r) => r,
            Err(deny) => return deny,
        };
        let response = self.authorizer.is_authorized(&request, policies, &entities);
        let diagnostics = response.diagnostics();
        // Cedar skips a policy that errors; Warden denies instead, so an erroring forbid never lets a call through.
        let mut errored: Vec<String> = diagnostics
            .errors()
            .map(|e| match e {
                cedar_policy::AuthorizationError::PolicyEvaluationError(e) => {
                    e.policy_id().to_string()
                }
            })
            .collect();
        if !errored.is_empty() {
            errored.sort();
            errored.dedup();
            return Decision::deny(EVALUATION_ERROR_REASON, errored);
        }
        let mut ids: Vec<String> = diagnostics.reason().map(PolicyId::to_string).collect();
        ids.sort();
        if response.decision() == cedar_policy::Decision::Allow {
            return Decision {
                allow: true,
                policy_ids: ids,
                reason: None,
                step_up_scopes: None,
            };
        }
        if ids.is_empty() {
            return Decision::deny(DEFAULT_DENY_REASON, ids);
        }
        let metas: Vec<Option<&PolicyMeta>> = ids.iter().map(|id| self.meta.get(id)).collect();
        let reason = metas
            .iter()
            .flatten()
            .find_map(|m| m.reason.clone())
            .unwrap_or_else(|| DEFAULT_DENY_REASON.to_owned());
        // Step-up only when re-consent could fix every forbid that applied.
        let step_up_scopes = if metas.iter().all(|m| m.is_some_and(|m| m.step_up.is_some())) {
            let mut scopes = principal.0.scopes.clone();
            for needed in metas
                .iter()
                .flatten()
                .filter_map(|m| m.step_up.as_ref())
                .flatten()
            {
                if !scopes.contains(needed) {
                    scopes.push(needed.clone());
                }
            }
            Some(scopes)
        } else {
            None
        };
        Decision {
            allow: false,
            policy_ids: ids,
            reason: Some(reason),
            step_up_scopes,
        }
    }

    /// The Cedar context; `None` if the arguments do not match the types policies were validated against.
    pub(crate) fn context(&self, ctx: &RequestContext) -> Option<Context> {
        let mut pairs = vec![
            (
                "now".to_owned(),
                RestrictedExpression::new_long(ctx.now_unix),
            ),
            (
                "protocol_version".to_owned(),
                RestrictedExpression::new_string(ctx.protocol_version.to_owned()),
            ),
        ];
        if let Some(session) = ctx.session {
            pairs.push((
                "session".to_owned(),
                RestrictedExpression::new_string(session.to_owned()),
            ));
        }
        if let Some(item) = ctx.item {
            pairs.push((
                "item".to_owned(),
                RestrictedExpression::new_string(item.to_owned()),
            ));
        }
        if let Some(raw) = ctx.arguments {
            let Ok(Value::Object(args)) = serde_json::from_str::<Value>(raw.get()) else {
                return None;
            };
            let mut fields = Vec::new();
            for (name, value) in &args {
                // Arguments no tool's schema declares cannot be named by a valid policy: drop them.
                // A declared one of the wrong type is an error (a deny), never silently absent.
                if let Some(t) = self.arg_types.get(name) {
                    fields.push((name.clone(), t.value(value)?));
                }
            }
            pairs.push((
                "arguments".to_owned(),
                RestrictedExpression::new_record(fields).ok()?,
            ));
        }
        Context::from_pairs(pairs).ok()
    }
}
