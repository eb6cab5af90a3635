//! Steps 7–8 of the request path: route the message (a namespaced tool to its upstream; a
//! resource, prompt or completion by [`super::route_items`]; `logging/setLevel` to the one
//! passthrough upstream) and authorize it by policy, producing a plan — a local answer or
//! one upstream exchange — or a refusal.

use serde_json::value::RawValue;
use warden_policy::Action;

use super::authz::{self, Verdict};
use super::record::Audit;
use super::refusal::Refusal;
use super::rewrite;
use super::vocab::Cx;
use crate::jsonrpc::{self, Message};
use crate::ratelimit::ToolLimit;
use crate::session::Session;

/// Methods relayed to the single passthrough upstream when there is one (resources, prompts
/// and completions are aggregated over every upstream instead: [`super::route_items`]).
pub fn is_passthrough_method(m: &str) -> bool {
    m == "logging/setLevel"
}

/// What an allowed request needs.
pub(super) enum Plan {
    /// Answered by the gateway (ping, tools/list).
    Local(Vec<u8>),
    /// One upstream exchange.
    Forward(Forward),
}

/// An allowed upstream exchange.
pub(super) struct Forward {
    pub upstream: usize,
    pub method: String,
    pub params: String,
    /// The upstream's tool name, for `tools/call`.
    pub tool: Option<String>,
    /// The per-(user, tool) rate limit of the tool called, if one is configured.
    pub tool_limit: Option<ToolLimit>,
    /// The prefix the upstream's resource URIs get in its answer (several resource upstreams).
    pub uri_prefix: Option<String>,
}

/// Route and decide one request. The route and the deciding policies go on the record as
/// they are learnt, so a refusal's record says where the call would have gone.
pub(super) fn plan(
    cx: &Cx<'_>,
    session: &Session,
    msg: &Message<'_>,
    id: &RawValue,
    rec: &mut Option<Audit>,
) -> Result<Plan, Refusal> {
    let (shard, snap) = (cx.shard, cx.snap);
    let method = msg.method.as_deref().unwrap_or("");
    let who = authz::Who {
        caller: cx.caller,
        session,
        session_hash: cx.meta.session(),
    };
    let routed = |rec: &mut Option<Audit>, up: usize, tool: Option<&str>, ids: Vec<String>| {
        if let Some(a) = rec.as_mut() {
            let u = &snap.upstreams[up];
            a.route(&u.name, tool);
            a.upstream_protocol(
                snap.settings
                    .upstream_protocols
                    .get(&u.id)
                    .map(String::as_str),
            );
            a.policies(ids);
        }
    };
    if let Some(p) = super::route_items::plan(cx, &who, method, msg, id, rec) {
        return p;
    }
    match method {
        "ping" => Ok(Plan::Local(jsonrpc::result_value(
            id,
            &serde_json::json!({}),
        ))),
        "tools/list" => Ok(Plan::Local(rewrite::tools_list(id, &snap.tools, |name| {
            authz::visible(shard, snap, &who, name)
        }))),
        "tools/call" => {
            let call =
                rewrite::route_call(msg.params, &snap.tools).ok_or_else(Refusal::unknown_tool)?;
            let (route, params) = (call.route, call.params);
            let args = call.arguments.as_deref();
            let verdict = authz::decide(shard, snap, &who, Action::CallTool, call.name, args);
            let shadow = authz::shadow(
                shard,
                snap,
                &who,
                &verdict,
                Action::CallTool,
                call.name,
                args,
            );
            if let (Some(s), Some(a)) = (shadow, rec.as_mut()) {
                a.shadow(s);
            }
            let tool = route.upstream_name.as_str();
            match verdict {
                Verdict::Allow { policy_ids } => {
                    routed(rec, route.upstream, Some(tool), policy_ids);
                    Ok(Plan::Forward(Forward {
                        upstream: route.upstream,
                        method: "tools/call".into(),
                        params,
                        tool: Some(tool.to_owned()),
                        tool_limit: snap.settings.rate_limits.per_tool.get(call.name).copied(),
                        uri_prefix: snap.items.uri_prefix(route.upstream).map(str::to_owned),
                    }))
                }
                // A hidden tool and an unknown tool get the same answer (no enumeration).
                Verdict::Hidden => Err(Refusal::unknown_tool()),
                Verdict::Deny { reason, policy_ids } => {
                    routed(rec, route.upstream, Some(tool), policy_ids);
                    Err(Refusal::denied_tool(reason))
                }
                Verdict::StepUp {
                    scopes,
                    reason,
                    policy_ids,
                } => {
                    routed(rec, route.upstream, Some(tool), policy_ids);
                    Err(Refusal::step_up(scopes, reason))
                }
            }
        }
        m if is_passthrough_method(m) => {
            let u = snap
                .settings
                .passthrough_upstream
                .ok_or_else(Refusal::unknown_method)?;
            let up = &snap.upstreams[u];
            let mut ids = Vec::new();
            if let Some(action) = authz::action_of(m) {
                let verdict =
                    authz::decide(shard, snap, &who, action.clone(), &up.name, msg.params);
                let shadow =
                    authz::shadow(shard, snap, &who, &verdict, action, &up.name, msg.params);
                if let (Some(s), Some(a)) = (shadow, rec.as_mut()) {
                    a.shadow(s);
                }
                match verdict {
                    Verdict::Allow { policy_ids } => ids = policy_ids,
                    Verdict::Hidden | Verdict::StepUp { .. } => {
                        routed(rec, u, None, Vec::new());
                        let deny = warden_policy::DEFAULT_DENY_REASON.to_owned();
                        return Err(Refusal::denied_method(deny, Some("denied by policy")));
                    }
                    Verdict::Deny { reason, policy_ids } => {
                        routed(rec, u, None, policy_ids);
                        return Err(Refusal::denied_method(reason, None));
                    }
                }
            }
            routed(rec, u, None, ids);
            // 2026-07-28 has no logging/setLevel: the level travels in each request's _meta.
            if snap.settings.modern_upstream(up.id).is_some() {
                session
                    .log_level
                    .store(Some(std::sync::Arc::new(log_level(msg)?)));
                return Ok(Plan::Local(jsonrpc::result_value(
                    id,
                    &serde_json::json!({}),
                )));
            }
            Ok(Plan::Forward(Forward {
                upstream: u,
                tool: None,
                method: m.to_owned(),
                params: msg
                    .params
                    .map(|p| p.get().to_owned())
                    .unwrap_or_else(|| "{}".into()),
                tool_limit: None,
                uri_prefix: None,
            }))
        }
        _ => Err(Refusal::unknown_method()),
    }
}

/// The level of a `logging/setLevel` (RFC 5424 names, as MCP defines them).
fn log_level(msg: &Message<'_>) -> Result<String, Refusal> {
    const LEVELS: [&str; 8] = [
        "debug",
        "info",
        "notice",
        "warning",
        "error",
        "critical",
        "alert",
        "emergency",
    ];
    let p: serde_json::Value = msg
        .params
        .and_then(|p| serde_json::from_str(p.get()).ok())
        .unwrap_or_default();
    p.get("level")
        .and_then(serde_json::Value::as_str)
        .filter(|l| LEVELS.contains(l))
        .map(str::to_owned)
        .ok_or_else(Refusal::bad_log_level)
}
