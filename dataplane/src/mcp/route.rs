//! Steps 4–5 of the request path: route the message and decide it by policy, producing a
//! plan — a local answer, a refusal, or one upstream exchange.

use serde_json::value::RawValue;
use warden_policy::Action;

use super::authz::{self, Verdict};
use super::call::Meta;
use super::{Caller, Gateway, forward, rewrite};
use crate::jsonrpc::{self, Message, code};
use crate::ratelimit::ToolLimit;
use crate::session::Session;
use crate::snapshot::Snapshot;

/// What a request needs.
pub(super) enum Plan {
    /// Answered by the gateway (ping, tools/list, unknown methods).
    Local(Vec<u8>),
    /// Refused by routing or policy before anything else happens.
    Refused {
        body: Vec<u8>,
        reason: String,
        policy_ids: Vec<String>,
        /// Scopes for a 403 `insufficient_scope` challenge (MCP step-up).
        step_up: Option<Vec<String>>,
        /// Where it would have gone (upstream index, upstream tool name), for the record.
        route: Option<(usize, String)>,
    },
    Forward {
        upstream: usize,
        method: String,
        params: String,
        /// The upstream's tool name, for `tools/call`.
        tool: Option<String>,
        /// The policies that allowed it.
        policy_ids: Vec<String>,
        /// The per-(user, tool) rate limit of the tool called, if one is configured.
        tool_limit: Option<ToolLimit>,
    },
}

impl Gateway {
    /// Decide what a request needs: a local answer, or one upstream exchange.
    pub(super) fn plan(
        &self,
        snap: &Snapshot,
        caller: &Caller,
        session: &Session,
        meta: &Meta,
        msg: &Message<'_>,
        id: &RawValue,
    ) -> Plan {
        let method = msg.method.as_deref().unwrap_or("");
        let who = authz::Who {
            caller,
            session,
            session_hash: meta.session.as_deref(),
        };
        let unknown_tool = || Plan::Refused {
            body: jsonrpc::error(Some(id), code::INVALID_PARAMS, "Unknown tool"),
            reason: "unknown or hidden tool".into(),
            policy_ids: Vec::new(),
            step_up: None,
            route: None,
        };
        match method {
            "ping" => Plan::Local(jsonrpc::result_value(id, &serde_json::json!({}))),
            "tools/list" => Plan::Local(rewrite::tools_list(id, &snap.tools, |name| {
                authz::visible(&self.shard, snap, &who, name)
            })),
            "tools/call" => {
                let Some(call) = rewrite::route_call(msg.params, &snap.tools) else {
                    return unknown_tool();
                };
                let (route, params) = (call.route, call.params);
                match authz::decide(
                    &self.shard,
                    snap,
                    &who,
                    Action::CallTool,
                    call.name,
                    call.arguments.as_deref(),
                ) {
                    Verdict::Allow { policy_ids } => Plan::Forward {
                        upstream: route.upstream,
                        method: "tools/call".into(),
                        params,
                        tool: Some(route.upstream_name.clone()),
                        policy_ids,
                        // Looked up by the exact routed name, after policy: a hidden tool is
                        // never revealed by a 429.
                        tool_limit: snap.settings.rate_limits.per_tool.get(call.name).copied(),
                    },
                    // A hidden tool and an unknown tool get the same answer (no enumeration).
                    Verdict::Hidden => unknown_tool(),
                    Verdict::Deny { reason, policy_ids } => {
                        let result = serde_json::json!({"content": [{"type": "text", "text": reason}], "isError": true});
                        Plan::Refused {
                            body: jsonrpc::result_value(id, &result),
                            reason,
                            policy_ids,
                            step_up: None,
                            route: Some((route.upstream, route.upstream_name.clone())),
                        }
                    }
                    Verdict::StepUp {
                        scopes,
                        reason,
                        policy_ids,
                    } => Plan::Refused {
                        body: Vec::new(),
                        reason,
                        policy_ids,
                        step_up: Some(scopes),
                        route: Some((route.upstream, route.upstream_name.clone())),
                    },
                }
            }
            m if forward::is_passthrough_method(m) => {
                let Some(u) = snap.settings.passthrough_upstream else {
                    return Plan::Local(jsonrpc::error(
                        Some(id),
                        code::METHOD_NOT_FOUND,
                        "Method not found",
                    ));
                };
                let up = &snap.upstreams[u];
                let mut policy_ids = Vec::new();
                if let Some(action) = authz::action_of(m) {
                    match authz::decide(&self.shard, snap, &who, action, &up.name, msg.params) {
                        Verdict::Allow { policy_ids: ids } => policy_ids = ids,
                        Verdict::Hidden | Verdict::StepUp { .. } => {
                            return Plan::Refused {
                                body: jsonrpc::error(
                                    Some(id),
                                    code::INVALID_PARAMS,
                                    warden_policy::DEFAULT_DENY_REASON,
                                ),
                                reason: "denied by policy".into(),
                                policy_ids: Vec::new(),
                                step_up: None,
                                route: Some((u, String::new())),
                            };
                        }
                        Verdict::Deny { reason, policy_ids } => {
                            return Plan::Refused {
                                body: jsonrpc::error(Some(id), code::INVALID_PARAMS, &reason),
                                reason,
                                policy_ids,
                                step_up: None,
                                route: Some((u, String::new())),
                            };
                        }
                    }
                }
                Plan::Forward {
                    upstream: u,
                    tool: None,
                    method: m.to_owned(),
                    params: msg
                        .params
                        .map(|p| p.get().to_owned())
                        .unwrap_or_else(|| "{}".into()),
                    policy_ids,
                    tool_limit: None,
                }
            }
            _ => Plan::Local(jsonrpc::error(
                Some(id),
                code::METHOD_NOT_FOUND,
                "Method not found",
            )),
        }
    }
}
