//! The resource subscriptions of a 2026-07-28 `subscriptions/listen`
//! (`notifications.resourceSubscriptions`): each URI asked for is routed, decided, delegated
//! and audited exactly as the `resources/subscribe` it replaces — the same
//! [`Gateway::request`], one audit record per URI, in the session the gateway holds for the
//! user — and only the URIs that request allowed are acknowledged and told.
//!
//! Where the subscription lives: a 2025-xx upstream is sent that `resources/subscribe` in the
//! user's upstream session, and its updates are read from that session's GET stream; a
//! 2026-07-28 upstream has no `resources/subscribe`, so the decision is answered by the
//! gateway and the client's stream holds a `subscriptions/listen` of its own with that
//! upstream, with a delegation token for this user (`stream_relay.rs`).

use std::sync::Arc;

use serde_json::{Value, json};

use super::pipeline::Gateway;
use super::refusal::Refusal;
use super::vocab::Cx;
use crate::http1::conn::Responder;
use crate::jsonrpc::Message;
use crate::session::Session;

/// URIs one subscription may ask for (each costs a decision and an audit record).
pub const MAX_URIS: usize = 100;
/// The longest URI asked for that is considered.
pub const MAX_URI_LEN: usize = 2048;

/// One resource a subscription was granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribed {
    /// The URI as the client named it (the gateway's naming).
    pub uri: String,
    /// The index of the upstream serving it in the snapshot.
    pub upstream: usize,
    /// The upstream's own URI.
    pub upstream_uri: String,
}

impl Subscribed {
    /// Whether an update of `uri` (the gateway's naming) is one of this resource: the
    /// resource itself or one below it (`<uri>/…`), as an update may name a sub-resource.
    pub fn covers(&self, uri: &str) -> bool {
        uri == self.uri
            || uri
                .strip_prefix(self.uri.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// The URIs a `subscriptions/listen` asks for: none when the filter names none; `-32602`
/// when `resourceSubscriptions` is not an array of strings, or longer than [`MAX_URIS`].
/// Repeated URIs are asked for once.
pub(super) fn requested(notifications: Option<&Value>) -> Result<Vec<String>, Refusal> {
    let Some(v) = notifications.and_then(|n| n.get("resourceSubscriptions")) else {
        return Ok(Vec::new());
    };
    let bad = |why: &str| Refusal::modern_meta_invalid(format!("resourceSubscriptions {why}"));
    let list = v
        .as_array()
        .ok_or_else(|| bad("must be an array of URIs"))?;
    if list.len() > MAX_URIS {
        return Err(bad(&format!("may name at most {MAX_URIS} URIs")));
    }
    let mut uris: Vec<String> = Vec::with_capacity(list.len());
    for u in list {
        let s = u.as_str().ok_or_else(|| bad("must be an array of URIs"))?;
        if s.is_empty() || s.len() > MAX_URI_LEN {
            return Err(bad(&format!(
                "entries must be 1 to {MAX_URI_LEN} bytes long"
            )));
        }
        if !uris.iter().any(|x| x == s) {
            uris.push(s.to_owned());
        }
    }
    Ok(uris)
}

/// Decide each URI as its `resources/subscribe` (one audit record each); the ones allowed,
/// in the order asked. `cx` is the listen request's (a modern one), `session` the user's.
pub(super) async fn decide_each<S: monoio::io::AsyncWriteRent>(
    gw: &Gateway,
    cx: &Cx<'_>,
    session: &Arc<Session>,
    uris: &[String],
) -> Vec<Subscribed> {
    let mut granted = Vec::new();
    for (i, uri) in uris.iter().enumerate() {
        let body = json!({"jsonrpc": "2.0", "id": format!("warden-subscribe-{i}"),
            "method": "resources/subscribe", "params": {"uri": uri}})
        .to_string();
        let Ok(msg) = Message::parse(body.as_bytes()) else {
            continue;
        };
        let answer = gw
            .request::<S>(cx, session, &msg, None::<&mut Responder<'_, S>>)
            .await;
        let Ok(Some(answer)) = answer else { continue };
        let allowed =
            Message::parse(&answer).is_ok_and(|m| m.result.is_some() && m.error.is_none());
        if !allowed {
            continue;
        }
        if let Some((upstream, upstream_uri)) = cx.snap.items.route_uri(uri) {
            granted.push(Subscribed {
                uri: uri.clone(),
                upstream,
                upstream_uri,
            });
        }
    }
    granted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uris_asked_for_are_bounded_strings_asked_once() {
        let n = |v: Value| json!({ "resourceSubscriptions": v });
        assert_eq!(requested(None).unwrap(), Vec::<String>::new());
        assert_eq!(requested(Some(&json!({}))).unwrap(), Vec::<String>::new());
        assert_eq!(
            requested(Some(&n(json!(["a://1", "a://2", "a://1"])))).unwrap(),
            ["a://1", "a://2"]
        );
        let too_many: Vec<String> = (0..=MAX_URIS).map(|i| format!("a://{i}")).collect();
        let too_long = "a".repeat(MAX_URI_LEN + 1);
        for bad in [
            json!("a://1"),
            json!([1]),
            json!([""]),
            json!([too_long]),
            json!(too_many),
        ] {
            assert!(requested(Some(&n(bad.clone()))).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_update_is_told_for_the_resource_and_what_lies_below_it() {
        let s = Subscribed {
            uri: "warden://crm/mem://doc".into(),
            upstream: 0,
            upstream_uri: "mem://doc".into(),
        };
        assert!(s.covers("warden://crm/mem://doc"));
        assert!(s.covers("warden://crm/mem://doc/part"));
        assert!(!s.covers("warden://crm/mem://doc2"));
        assert!(!s.covers("warden://crm/mem://do"));
        assert!(!s.covers("warden://other/mem://doc"));
    }
}
