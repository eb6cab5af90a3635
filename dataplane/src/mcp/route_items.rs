//! Steps 7–8 for resources, prompts and completions: the lists answered from the snapshot's
//! [`ItemTable`] (each entry filtered by the same decision a read or get would get), and
//! `resources/read`, `resources/subscribe`, `resources/unsubscribe`, `prompts/get` and
//! `completion/complete` routed by exact lookup, decided by policy with the item in
//! `context.item`, and put on the record exactly as `tools/call` is.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::value::RawValue;
use warden_policy::Action;

use super::authz::{self, Verdict, Who};
use super::items::ItemTable;
use super::record::Audit;
use super::refusal::Refusal;
use super::route::{Forward, Plan};
use super::vocab::Cx;
use crate::jsonrpc::{self, Message};

/// Methods answered or routed here.
pub fn is_item_method(m: &str) -> bool {
    matches!(
        m,
        "resources/list"
            | "resources/templates/list"
            | "prompts/list"
            | "resources/read"
            | "resources/subscribe"
            | "resources/unsubscribe"
            | "prompts/get"
            | "completion/complete"
    )
}

/// Methods that reach an upstream (and so get an audit record, like `tools/call`).
pub fn is_routed_item_method(m: &str) -> bool {
    is_item_method(m) && !m.ends_with("/list")
}

/// The prompt name or resource URI a routed item request names, as the client sent it
/// (for records; at most 256 characters).
pub fn item_name(method: &str, params: Option<&RawValue>) -> Option<String> {
    if !is_routed_item_method(method) {
        return None;
    }
    let p: serde_json::Value = serde_json::from_str(params?.get()).ok()?;
    let field = match method {
        "prompts/get" => "/name",
        "completion/complete" => match p.pointer("/ref/type").and_then(|t| t.as_str()) {
            Some("ref/prompt") => "/ref/name",
            _ => "/ref/uri",
        },
        _ => "/uri",
    };
    let s = p.pointer(field)?.as_str()?;
    Some(s.chars().take(256).collect())
}

/// Where a routed item request goes.
struct Target {
    upstream: usize,
    action: Action,
    /// What policy decides on (`context.item`): the client's name for it.
    item: String,
    /// The upstream's name for it, for the record.
    upstream_item: String,
    /// "prompt" or "resource", for the unknown answer.
    kind: &'static str,
    params: String,
}

/// Route and decide one item request; `None` when `method` is not one.
pub(super) fn plan(
    cx: &Cx<'_>,
    who: &Who<'_>,
    method: &str,
    msg: &Message<'_>,
    id: &RawValue,
    rec: &mut Option<Audit>,
) -> Option<Result<Plan, Refusal>> {
    if !is_item_method(method) {
        return None;
    }
    let t = &*cx.snap.items;
    let visible = |action: Action, up: usize, item: &str| {
        authz::visible_item(cx.shard, cx.snap, who, action, up, item)
    };
    let local = |body| Some(Ok(Plan::Local(body)));
    match method {
        "prompts/list" => {
            let shown = t.prompt_order.iter().filter_map(|n| {
                let r = t.prompts.get(n)?;
                visible(Action::GetPrompt, r.upstream, n).then_some(&*r.definition)
            });
            return local(super::items::list_result(id, "prompts", shown));
        }
        "resources/list" | "resources/templates/list" => {
            let (list, key) = match method {
                "resources/list" => (&t.resources, "resources"),
                _ => (&t.templates, "resourceTemplates"),
            };
            let shown = list
                .iter()
                .filter(|r| visible(Action::ReadResource, r.upstream, &r.uri))
                .map(|r| &*r.definition);
            return local(super::items::list_result(id, key, shown));
        }
        _ => {}
    }
    Some(target(t, method, msg.params).and_then(|target| decide(cx, who, method, id, target, rec)))
}

/// Look the item up and rewrite its name or URI to the upstream's.
fn target(t: &ItemTable, method: &str, params: Option<&RawValue>) -> Result<Target, Refusal> {
    let kind = if method.starts_with("prompts/") {
        "prompt"
    } else {
        "resource"
    };
    let unknown = || Refusal::unknown_item(kind);
    let raw = params.map_or("{}", RawValue::get);
    let mut map: BTreeMap<Cow<'_, str>, Box<RawValue>> =
        serde_json::from_str(raw).map_err(|_| unknown())?;
    let string = |v: &RawValue| serde_json::from_str::<String>(v.get()).ok();
    let (upstream, item, upstream_item, action) = match method {
        "prompts/get" => {
            let name = map
                .get("name")
                .and_then(|v| string(v))
                .ok_or_else(unknown)?;
            let r = t.prompts.get(&name).ok_or_else(unknown)?;
            map.insert("name".into(), to_raw(&r.upstream_name)?);
            (r.upstream, name, r.upstream_name.clone(), Action::GetPrompt)
        }
        "completion/complete" => {
            let mut reference: BTreeMap<String, serde_json::Value> = map
                .get("ref")
                .and_then(|v| serde_json::from_str(v.get()).ok())
                .ok_or_else(unknown)?;
            let field = |k: &str| reference.get(k).and_then(|v| v.as_str()).map(str::to_owned);
            let (u, item, theirs, key) = match field("type").as_deref() {
                Some("ref/prompt") => {
                    let name = field("name").ok_or_else(unknown)?;
                    let r = t.prompts.get(&name).ok_or_else(unknown)?;
                    (r.upstream, name, r.upstream_name.clone(), "name")
                }
                Some("ref/resource") => {
                    let uri = field("uri").ok_or_else(unknown)?;
                    let (u, theirs) = t.route_uri(&uri).ok_or_else(unknown)?;
                    (u, uri, theirs, "uri")
                }
                _ => return Err(unknown()),
            };
            reference.insert(key.into(), serde_json::Value::String(theirs.clone()));
            let r = serde_json::value::to_raw_value(&reference).map_err(|_| unknown())?;
            map.insert("ref".into(), r);
            (u, item, theirs, Action::Complete)
        }
        _ => {
            let uri = map.get("uri").and_then(|v| string(v)).ok_or_else(unknown)?;
            let (u, theirs) = t.route_uri(&uri).ok_or_else(unknown)?;
            map.insert("uri".into(), to_raw(&theirs)?);
            (u, uri, theirs, Action::ReadResource)
        }
    };
    let params = serde_json::to_string(&map).map_err(|_| unknown())?;
    Ok(Target {
        upstream,
        action,
        item,
        upstream_item,
        kind,
        params,
    })
}

fn to_raw(s: &str) -> Result<Box<RawValue>, Refusal> {
    jsonrpc::raw(serde_json::to_string(s).unwrap_or_default())
        .ok_or_else(|| Refusal::invalid_request("Invalid Request"))
}

/// Policy on one routed item, then the plan; the route and deciding policies go on the record.
fn decide(
    cx: &Cx<'_>,
    who: &Who<'_>,
    method: &str,
    id: &RawValue,
    t: Target,
    rec: &mut Option<Audit>,
) -> Result<Plan, Refusal> {
    let (shard, snap) = (cx.shard, cx.snap);
    let up = &snap.upstreams[t.upstream];
    let item = Some(t.item.as_str());
    let verdict = authz::decide_item(shard, snap, who, t.action.clone(), &up.name, None, item);
    let of = (t.action, up.name.as_str(), item);
    if let (Some(s), Some(a)) = (
        authz::shadow_item(shard, snap, who, &verdict, of, None),
        rec.as_mut(),
    ) {
        a.shadow(s);
    }
    let mut routed = |ids: Vec<String>| {
        if let Some(a) = rec.as_mut() {
            a.route(&up.name, Some(&t.upstream_item));
            let spoken = snap.settings.upstream_protocols.get(&up.id);
            a.upstream_protocol(spoken.map(String::as_str));
            a.policies(ids);
        }
    };
    match verdict {
        Verdict::Allow { policy_ids } => {
            routed(policy_ids);
            // 2026-07-28 has no `resources/subscribe`: a subscription to a modern upstream's
            // resource is held by the client's stream as a `subscriptions/listen` with that
            // upstream — a modern client's own listen (`subscribe.rs`), or a 2025 session's
            // GET stream, from what the session holds (`stream_relay.rs`).
            if method.starts_with("resources/")
                && method.ends_with("subscribe")
                && (snap.settings.upstream_protocols.get(&up.id))
                    .is_some_and(|v| super::era::is_modern(v))
            {
                if cx.modern.is_none() {
                    hold_subscription(who, method, &t.item, &t.upstream_item, up.id)?;
                }
                let done = jsonrpc::result_value(id, &serde_json::json!({}));
                return Ok(Plan::Local(done));
            }
            Ok(Plan::Forward(Forward {
                upstream: t.upstream,
                method: method.to_owned(),
                params: t.params,
                tool: None,
                tool_limit: None,
                uri_prefix: snap.items.uri_prefix(t.upstream).map(str::to_owned),
            }))
        }
        // A hidden item and an unknown one get the same answer (no enumeration).
        Verdict::Hidden => Err(Refusal::unknown_item(t.kind)),
        Verdict::Deny { reason, policy_ids } => {
            routed(policy_ids);
            Err(Refusal::denied_method(reason, None))
        }
        Verdict::StepUp {
            scopes,
            reason,
            policy_ids,
        } => {
            routed(policy_ids);
            Err(Refusal::step_up(scopes, reason))
        }
    }
}

/// A 2025 session's `resources/subscribe` (or `unsubscribe`) of a 2026-07-28 upstream's
/// resource, held by the session (at most [`super::subscribe::MAX_URIS`]).
fn hold_subscription(
    who: &Who<'_>,
    method: &str,
    item: &str,
    theirs: &str,
    uid: u32,
) -> Result<(), Refusal> {
    let held = &who.session.modern_subscriptions;
    if method == "resources/unsubscribe" {
        held.remove(item);
        return Ok(());
    }
    let limit = super::subscribe::MAX_URIS;
    if held.len() >= limit && !held.contains_key(item) {
        return Err(Refusal::too_many_subscriptions(limit));
    }
    held.insert(item.to_owned(), (uid, theirs.to_owned()));
    Ok(())
}
