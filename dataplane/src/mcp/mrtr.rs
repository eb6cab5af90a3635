//! Multi round-trip requests (2026-07-28 MRTR) through the gateway. An upstream's
//! `InputRequiredResult` reaches the client with its `requestState` wrapped: sealed (AEAD,
//! the session key ring, a label of its own) together with the user it was issued to, the
//! request it belongs to (method and name or URI) and an expiry. The client's retry brings
//! the wrapper back; only an intact wrapper of this user, for this request, in time, is
//! unwrapped to the upstream's own state — anything else is refused and nothing is sent.

use serde_json::{Map, Value};

use crate::session::SessionKeys;

/// How long a wrapped state may come back: a user answering a prompt, not a stored handle.
pub const STATE_TTL_SECS: i64 = 600;

/// What a wrapped state is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// The user (`owner_of(iss, sub)`).
    pub owner: [u8; 32],
    /// SHA-256 of method ‖ NUL ‖ name-or-URI.
    pub request: [u8; 32],
}

impl Binding {
    pub fn new(owner: [u8; 32], method: &str, name: &str) -> Binding {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(method.as_bytes());
        ctx.update(&[0]);
        ctx.update(name.as_bytes());
        let mut request = [0u8; 32];
        request.copy_from_slice(ctx.finish().as_ref());
        Binding { owner, request }
    }
}

/// Why a presented state is refused (for the audit record; the client is told one thing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateError {
    /// Not sealed by this ring: tampered, forged, or from another deployment.
    Forged,
    /// Sealed for another user.
    OtherUser,
    /// Sealed for another request (method, tool, prompt or resource).
    OtherRequest,
    Expired,
}

impl StateError {
    pub fn why(self) -> &'static str {
        match self {
            StateError::Forged => "requestState not sealed by this gateway (tampered or forged)",
            StateError::OtherUser => "requestState sealed for another user",
            StateError::OtherRequest => "requestState sealed for another request",
            StateError::Expired => "requestState expired",
        }
    }
}

/// Wrap an upstream's `requestState`: owner ‖ request ‖ expiry (LE) ‖ the state, sealed.
pub fn seal(keys: &SessionKeys, b: &Binding, upstream_state: &str, now: i64) -> Option<String> {
    let mut body = Vec::with_capacity(72 + upstream_state.len());
    body.extend_from_slice(&b.owner);
    body.extend_from_slice(&b.request);
    body.extend_from_slice(&(now + STATE_TTL_SECS).to_le_bytes());
    body.extend_from_slice(upstream_state.as_bytes());
    keys.seal_state(body).ok()
}

/// The upstream's state inside a wrapper, if the wrapper is this gateway's, for `b`, in time.
pub fn open(
    keys: &SessionKeys,
    b: &Binding,
    wrapped: &str,
    now: i64,
) -> Result<String, StateError> {
    if wrapped.len() > 64 * 1024 {
        return Err(StateError::Forged);
    }
    let plain = keys.open_state(wrapped).ok_or(StateError::Forged)?;
    let (owner, rest) = plain.split_at_checked(32).ok_or(StateError::Forged)?;
    let (request, rest) = rest.split_at_checked(32).ok_or(StateError::Forged)?;
    let (exp, state) = rest.split_at_checked(8).ok_or(StateError::Forged)?;
    if owner != b.owner {
        return Err(StateError::OtherUser);
    }
    if request != b.request {
        return Err(StateError::OtherRequest);
    }
    let exp = i64::from_le_bytes(exp.try_into().map_err(|_| StateError::Forged)?);
    if now > exp {
        return Err(StateError::Expired);
    }
    String::from_utf8(state.to_vec()).map_err(|_| StateError::Forged)
}

/// In a result object: wrap its `requestState` (when it is an `input_required` result).
/// `false` when a state was there and could not be sealed (the caller answers an error).
pub fn wrap_result(
    result: &mut Map<String, Value>,
    keys: &SessionKeys,
    b: &Binding,
    now: i64,
) -> bool {
    if result.get("resultType").and_then(Value::as_str) != Some("input_required") {
        return true;
    }
    let Some(Value::String(state)) = result.get("requestState") else {
        return true;
    };
    match seal(keys, b, state, now) {
        Some(w) => {
            result.insert("requestState".into(), Value::String(w));
            true
        }
        None => false,
    }
}

/// In a retry's params: the wrapper back to the upstream's state. `Ok(false)`: no state.
pub fn unwrap_params(
    params: &mut Map<String, Value>,
    keys: &SessionKeys,
    b: &Binding,
    now: i64,
) -> Result<bool, StateError> {
    let Some(v) = params.get("requestState") else {
        return Ok(false);
    };
    let Value::String(w) = v else {
        return Err(StateError::Forged);
    };
    let state = open(keys, b, w, now)?;
    params.insert("requestState".into(), Value::String(state));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> SessionKeys {
        SessionKeys::generate("k1").unwrap()
    }

    #[test]
    fn a_wrapped_state_opens_only_for_its_user_request_and_time() {
        let k = keys();
        let b = Binding::new([1; 32], "tools/call", "up_ask");
        let w = seal(&k, &b, "upstream-state", 1000).unwrap();
        assert!(!w.contains("upstream-state"));
        assert_eq!(open(&k, &b, &w, 1000).unwrap(), "upstream-state");
        let other_user = Binding::new([2; 32], "tools/call", "up_ask");
        assert_eq!(open(&k, &other_user, &w, 1000), Err(StateError::OtherUser));
        let other_tool = Binding::new([1; 32], "tools/call", "up_other");
        assert_eq!(
            open(&k, &other_tool, &w, 1000),
            Err(StateError::OtherRequest)
        );
        assert_eq!(
            open(&k, &b, &w, 1000 + STATE_TTL_SECS + 1),
            Err(StateError::Expired)
        );
        // One character changed, or another ring: forged.
        let mut t = w.clone().into_bytes();
        let i = t.len() / 2;
        t[i] = if t[i] == b'A' { b'B' } else { b'A' };
        let t = String::from_utf8(t).unwrap();
        assert_eq!(open(&k, &b, &t, 1000), Err(StateError::Forged));
        assert_eq!(open(&keys(), &b, &w, 1000), Err(StateError::Forged));
        // A session id or DPoP nonce of the same ring never opens as a state.
        let nonce = k.seal_nonce(1000).unwrap();
        assert_eq!(open(&k, &b, &nonce, 1000), Err(StateError::Forged));
    }

    #[test]
    fn only_input_required_results_are_wrapped() {
        let k = keys();
        let b = Binding::new([1; 32], "tools/call", "t");
        let mut done: Map<String, Value> =
            serde_json::from_str(r#"{"resultType":"complete","requestState":"x"}"#).unwrap();
        assert!(wrap_result(&mut done, &k, &b, 5));
        assert_eq!(done["requestState"], "x");
        let mut ask: Map<String, Value> =
            serde_json::from_str(r#"{"resultType":"input_required","requestState":"x"}"#).unwrap();
        assert!(wrap_result(&mut ask, &k, &b, 5));
        let w = ask["requestState"].as_str().unwrap().to_owned();
        assert_ne!(w, "x");
        let mut retry: Map<String, Value> =
            serde_json::from_value(serde_json::json!({"name": "t", "requestState": w})).unwrap();
        assert_eq!(unwrap_params(&mut retry, &k, &b, 6), Ok(true));
        assert_eq!(retry["requestState"], "x");
        let mut none: Map<String, Value> = Map::new();
        assert_eq!(unwrap_params(&mut none, &k, &b, 6), Ok(false));
        let mut bad: Map<String, Value> =
            serde_json::from_value(serde_json::json!({"requestState": 7})).unwrap();
        assert_eq!(unwrap_params(&mut bad, &k, &b, 6), Err(StateError::Forged));
    }
}
