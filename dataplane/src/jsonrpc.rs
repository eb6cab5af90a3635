//! JSON-RPC 2.0 envelopes for MCP, parsed borrowed with `params`/`result` kept raw.
//!
//! serde_json with `RawValue` parses the envelope (simd-json has no raw values to forward);
//! the structural checks of large bodies run on simd-json's tape (`jsonrpc_tape.rs`), where
//! the instruction counts in `docs/performance.md` show it cheaper.

use std::borrow::Cow;
use std::collections::HashSet;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Standard JSON-RPC error codes used by Warden.
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Upstream refused, failed, timed out or answered garbage.
    pub const UPSTREAM_ERROR: i64 = -32002;
    /// The gateway is overloaded or not ready.
    pub const UNAVAILABLE: i64 = -32003;
    /// No delegation token could be obtained; the call was not forwarded.
    pub const DELEGATION_FAILED: i64 = -32004;
    /// 2026-07-28 `HeaderMismatch`: mirrored headers missing, malformed or unlike the body.
    pub const HEADER_MISMATCH: i64 = -32020;
    /// 2026-07-28 `MissingRequiredClientCapability`.
    pub const MISSING_CAPABILITY: i64 = -32021;
    /// 2026-07-28 `UnsupportedProtocolVersion`.
    pub const UNSUPPORTED_VERSION: i64 = -32022;
}

/// The code a modern (2026-07-28) client receives for `c`. That revision reserves
/// -32020..-32099 for its own codes and retires -32002 and -32042, so Warden's own
/// conditions move outside the JSON-RPC reserved range (same last digits, -31xxx), a
/// relayed "resource not found" (-32002) becomes -32602 as the revision defines it, and any
/// other code of the reserved sub-range the revision does not define becomes -32603.
pub fn modern_code(c: i64) -> i64 {
    match c {
        code::UPSTREAM_ERROR => -31002,
        code::UNAVAILABLE => -31003,
        code::DELEGATION_FAILED => -31004,
        crate::ratelimit::JSONRPC_CODE => -31029,
        code::HEADER_MISMATCH | code::MISSING_CAPABILITY | code::UNSUPPORTED_VERSION => c,
        -32099..=-32020 => code::INTERNAL_ERROR,
        _ => c,
    }
}

/// [`modern_code`] for an error a legacy upstream sent (its -32002 is "resource not found").
pub fn modern_upstream_code(c: i64) -> i64 {
    match c {
        code::UPSTREAM_ERROR => code::INVALID_PARAMS,
        code::HEADER_MISMATCH | code::MISSING_CAPABILITY | code::UNSUPPORTED_VERSION => c,
        -32099..=-32020 => code::INTERNAL_ERROR,
        _ => c,
    }
}

#[path = "jsonrpc_tape.rs"]
mod tape;

#[cfg(test)]
#[path = "jsonrpc_order_tests.rs"]
mod order_tests;

/// One JSON-RPC message as received (request, notification or response).
#[derive(Debug, Deserialize)]
pub struct Message<'a> {
    #[serde(borrow)]
    pub jsonrpc: Option<&'a str>,
    #[serde(borrow, default)]
    pub id: Option<&'a RawValue>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(borrow, default)]
    pub params: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub error: Option<&'a RawValue>,
}

/// What kind of message it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notification,
    Response,
}

/// Why a body is not a usable JSON-RPC message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    Parse,
    Envelope,
    Batch,
}

/// Deepest JSON nesting accepted, envelope included: serde_json's default limit, so every
/// message Warden forwards is one a serde_json-based upstream can parse.
pub const MAX_DEPTH: usize = 128;

/// Whether arrays/objects in `body` nest deeper than `max`. A linear scan that skips strings;
/// it does not validate, the parser does that afterwards.
fn nesting_exceeds(body: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Whether an object in the message repeats a member name (compared after unescaping):
/// anywhere in the envelope and everything under it (`id`, `params` at any depth), except
/// inside `result`/`error`, which Warden relays without reading. A duplicate is refused, never
/// resolved first- or last-wins: the router, the policy and the audit record must all see the
/// same `params.name` (docs/security.md, "HTTP").
fn has_duplicate_members(text: &str) -> bool {
    let mut de = serde_json::Deserializer::from_str(text);
    Unique { top: true }.deserialize(&mut de).is_err()
}

/// Walks one JSON value, failing on a repeated member name. serde_json's own depth limit
/// bounds the recursion (and `MAX_DEPTH` was checked before).
#[derive(Clone, Copy)]
struct Unique {
    /// The envelope: its `result`/`error` members are not walked.
    top: bool,
}

/// Member names seen in one object: a short list, a set once objects get large (so a body
/// of thousands of members costs linear time, not quadratic).
#[derive(Default)]
struct Names<'de> {
    few: Vec<Cow<'de, str>>,
    many: HashSet<Cow<'de, str>>,
}

impl<'de> Names<'de> {
    /// Adds `k`; false if it was already there.
    fn insert(&mut self, k: Cow<'de, str>) -> bool {
        if self.many.is_empty() {
            if self.few.contains(&k) {
                return false;
            }
            self.few.push(k);
            if self.few.len() > 16 {
                self.many.extend(self.few.drain(..));
            }
            return true;
        }
        self.many.insert(k)
    }
}

/// A member name, borrowed when it has no escapes.
struct Name;

impl<'de> DeserializeSeed<'de> for Name {
    type Value = Cow<'de, str>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Name {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a member name")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

impl<'de> DeserializeSeed<'de> for Unique {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Unique {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Unique { top: false })?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut names = Names::default();
        while let Some(k) = map.next_key_seed(Name)? {
            let relayed = self.top && (k == "result" || k == "error");
            if !names.insert(k) {
                return Err(de::Error::custom("duplicate member"));
            }
            if relayed {
                map.next_value::<IgnoredAny>()?;
            } else {
                map.next_value_seed(Unique { top: false })?;
            }
        }
        Ok(())
    }
}

impl<'a> Message<'a> {
    /// Parse one message, refusing batches, envelope errors and repeated member names.
    pub fn parse(body: &'a [u8]) -> Result<Message<'a>, Invalid> {
        Self::parse_with(body, body.len() >= tape::THRESHOLD)
    }

    /// [`Message::parse`], with the structural checks on simd-json's tape when `tape`
    /// (falling back to the serde_json checks whenever the tape pass is unsure), whatever
    /// the size: for the benchmarks that chose the threshold, and the tests.
    pub fn parse_with(body: &'a [u8], tape: bool) -> Result<Message<'a>, Invalid> {
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if first == Some(&b'[') {
            return Err(Invalid::Batch);
        }
        let text = std::str::from_utf8(body).map_err(|_| Invalid::Parse)?;
        let checked = if tape {
            tape::check(body)
        } else {
            tape::Checked::Unsure
        };
        // `params`/`result` stay raw, so serde_json's own recursion limit never looks inside
        // them: a body nesting deeper than `MAX_DEPTH` is refused as unparseable, before any
        // other refusal. On the serde_json path the byte scan runs only when the other checks
        // cannot stand in for it: a duplicate walk that finished saw every value but the
        // relayed `result`/`error` below serde_json's recursion limit (127 < `MAX_DEPTH`), so a
        // request or notification that passed it is shallow enough without a scan.
        let unsure = checked == tape::Checked::Unsure;
        let too_deep = || unsure && nesting_exceeds(body, MAX_DEPTH);
        let m: Message<'a> = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(_) if too_deep() => return Err(Invalid::Parse),
            Err(e) if e.is_data() => return Err(Invalid::Envelope),
            Err(_) => return Err(Invalid::Parse),
        };
        let duplicate = match checked {
            _ if m.jsonrpc != Some("2.0") => None,
            tape::Checked::Clean => Some(false),
            tape::Checked::Duplicate => Some(true),
            tape::Checked::Unsure => Some(has_duplicate_members(text)),
        };
        let walked_all = duplicate == Some(false) && m.result.is_none() && m.error.is_none();
        if !walked_all && too_deep() {
            return Err(Invalid::Parse);
        }
        if duplicate != Some(false) {
            return Err(Invalid::Envelope);
        }
        if let Some(id) = m.id {
            // Any JSON string (kept raw, so it round-trips byte for byte), or an integer: MCP
            // forbids a null id, and JSON-RPC numbers "SHOULD NOT contain fractional parts".
            // The raw text of a number is what the sender wrote, so a `.`, `e` or `E` in it
            // is a fraction or an exponent; inside a string it is just a character.
            let s = id.get().as_bytes();
            let ok = match s.first() {
                Some(b'"') => true,
                Some(b'-' | b'0'..=b'9') => s.iter().all(|b| b.is_ascii_digit() || *b == b'-'),
                _ => false,
            };
            if !ok {
                return Err(Invalid::Envelope);
            }
        }
        match (&m.method, m.id, m.result.is_some() || m.error.is_some()) {
            (Some(_), _, true) => Err(Invalid::Envelope),
            (Some(_), _, false) => Ok(m),
            (None, Some(_), true) => Ok(m),
            _ => Err(Invalid::Envelope),
        }
    }

    pub fn kind(&self) -> Kind {
        match (&self.method, self.id) {
            (Some(_), Some(_)) => Kind::Request,
            (Some(_), None) => Kind::Notification,
            (None, _) => Kind::Response,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: i64,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a serde_json::Value>,
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    jsonrpc: &'static str,
    id: &'a RawValue,
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ResultEnvelope<'a> {
    jsonrpc: &'static str,
    id: &'a RawValue,
    result: &'a RawValue,
}

/// A JSON `null`, for ids of messages that had none.
pub fn null() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).unwrap_or_default()
}

/// Serialize an error response; `id` is `None` → `null` (parse errors).
pub fn error(id: Option<&RawValue>, code: i64, message: &str) -> Vec<u8> {
    error_with_data(id, code, message, None)
}

/// Serialize an error response with `data`.
pub fn error_with_data(
    id: Option<&RawValue>,
    code: i64,
    message: &str,
    data: Option<&serde_json::Value>,
) -> Vec<u8> {
    let null = null();
    let env = ErrorEnvelope {
        jsonrpc: "2.0",
        id: id.unwrap_or(&null),
        error: ErrorBody {
            code,
            message,
            data,
        },
    };
    serde_json::to_vec(&env).unwrap_or_else(|_| {
        br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"internal error"}}"#
            .to_vec()
    })
}

/// Serialize a successful response with a raw `result`.
pub fn result(id: &RawValue, result: &RawValue) -> Vec<u8> {
    let env = ResultEnvelope {
        jsonrpc: "2.0",
        id,
        result,
    };
    serde_json::to_vec(&env)
        .unwrap_or_else(|_| error(Some(id), code::INTERNAL_ERROR, "internal error"))
}

/// Serialize a successful response from a `serde_json::Value`.
pub fn result_value(id: &RawValue, result: &serde_json::Value) -> Vec<u8> {
    match serde_json::value::to_raw_value(result) {
        Ok(raw) => self::result(id, &raw),
        Err(_) => error(Some(id), code::INTERNAL_ERROR, "internal error"),
    }
}

/// Build a raw JSON value from a string known to be JSON.
pub fn raw(s: String) -> Option<Box<RawValue>> {
    RawValue::from_string(s).ok()
}

#[cfg(test)]
#[path = "jsonrpc_tape_tests.rs"]
mod tape_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_messages() {
        let m = Message::parse(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).unwrap();
        assert_eq!(m.kind(), Kind::Request);
        let m =
            Message::parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(m.kind(), Kind::Notification);
        let m = Message::parse(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap();
        assert_eq!(m.kind(), Kind::Response);
    }

    #[test]
    fn refuses_deep_nesting_inside_raw_params() {
        let ok = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{}1{}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(Message::parse(ok.as_bytes()).is_ok());
        let deep = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{}1{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert_eq!(Message::parse(deep.as_bytes()).unwrap_err(), Invalid::Parse);
        // Brackets inside strings do not count.
        let s = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{"a":"{}\"{}"}}}}"#,
            "[".repeat(500),
            "{".repeat(500)
        );
        assert!(Message::parse(s.as_bytes()).is_ok());
    }

    #[test]
    fn refuses_bad_envelopes() {
        assert_eq!(Message::parse(b"[{}]").unwrap_err(), Invalid::Batch);
        assert_eq!(Message::parse(b"{not json").unwrap_err(), Invalid::Parse);
        assert_eq!(Message::parse(&[0xff, 0xfe]).unwrap_err(), Invalid::Parse);
        assert_eq!(
            Message::parse(br#"{"id":1,"method":"x"}"#).unwrap_err(),
            Invalid::Envelope
        );
        assert_eq!(
            Message::parse(br#"{"jsonrpc":"2.0","id":{},"method":"x"}"#).unwrap_err(),
            Invalid::Envelope
        );
        assert_eq!(
            Message::parse(br#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#).unwrap_err(),
            Invalid::Envelope
        );
        assert_eq!(
            Message::parse(br#"{"jsonrpc":"2.0","id":1,"method":"x","result":{}}"#).unwrap_err(),
            Invalid::Envelope
        );
        assert_eq!(
            Message::parse(br#"{"jsonrpc":"2.0"}"#).unwrap_err(),
            Invalid::Envelope
        );
        assert_eq!(
            Message::parse(br#"{"jsonrpc":"2.0","method":5}"#).unwrap_err(),
            Invalid::Envelope
        );
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{deep}}}"#);
        assert!(Message::parse(body.as_bytes()).is_err());
    }

    #[test]
    fn duplicate_members_are_refused_anywhere_but_relayed_results() {
        let refused = [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","na\u006de":"b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"arguments":{"k":[{"v":1,"v":2}]}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","x":1,"x":2}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","method":"y"}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{},"result":{}}"#,
        ];
        for body in refused {
            assert_eq!(
                Message::parse(body.as_bytes()).unwrap_err(),
                Invalid::Envelope,
                "{body}"
            );
        }
        // Many members: still refused, still fast.
        let mut big: String = (0..5000).map(|i| format!(r#""k{i}":{i},"#)).collect();
        big.push_str(r#""k7":0"#);
        let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{{big}}}}}"#);
        assert_eq!(
            Message::parse(body.as_bytes()).unwrap_err(),
            Invalid::Envelope
        );
        let accepted = [
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":{"n":1},"b":{"n":2},"c":[{"n":1},{"n":1}]}}"#,
            // A result is relayed, not read: its members are the upstream's business.
            r#"{"jsonrpc":"2.0","id":1,"result":{"x":1,"x":2}}"#,
        ];
        for body in accepted {
            assert!(Message::parse(body.as_bytes()).is_ok(), "{body}");
        }
    }

    #[test]
    fn string_ids_are_any_string_and_numbers_are_integers() {
        for id in [
            r#""req.1""#,
            r#""1e5""#,
            r#""a.b.E""#,
            r#""""#,
            "42",
            "-3",
            "0",
        ] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
            let m = Message::parse(body.as_bytes()).unwrap_or_else(|e| panic!("{id}: {e:?}"));
            let raw = m.id.unwrap();
            assert_eq!(raw.get(), id, "kept byte for byte");
            let back = error(Some(raw), code::INTERNAL_ERROR, "x");
            let v: serde_json::Value = serde_json::from_slice(&back).unwrap();
            let sent: serde_json::Value = serde_json::from_str(id).unwrap();
            assert_eq!(v["id"], sent, "round trip of {id}");
        }
        for id in ["1.5", "1e5", "1E5", "-2.0", "true", "[1]"] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
            assert_eq!(
                Message::parse(body.as_bytes()).unwrap_err(),
                Invalid::Envelope,
                "{id}"
            );
        }
    }

    #[test]
    fn errors_keep_the_id() {
        let id = RawValue::from_string("\"abc\"".into()).unwrap();
        let e = error(Some(&id), code::METHOD_NOT_FOUND, "nope");
        let v: serde_json::Value = serde_json::from_slice(&e).unwrap();
        assert_eq!(v["id"], "abc");
        assert_eq!(v["error"]["code"], -32601);
        let e = error(None, code::PARSE_ERROR, "bad");
        let v: serde_json::Value = serde_json::from_slice(&e).unwrap();
        assert!(v["id"].is_null());
    }
}
