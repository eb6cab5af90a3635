use serde_json::json;

use super::*;
use crate::jsonrpc::code;
use crate::snapshot::ToolRoute;

fn head(headers: &[(&str, &str)]) -> Head {
    let mut raw = String::from("POST /mcp HTTP/1.1\r\nHost: a\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("Content-Length: 0\r\n\r\n");
    crate::http1::parse::parse_head(raw.as_bytes(), 16384)
        .unwrap()
        .unwrap()
        .0
}

fn meta() -> Value {
    json!({META_VERSION: "2026-07-28", META_CAPABILITIES: {}})
}

fn body(method: &str, mut params: Value) -> Vec<u8> {
    params["_meta"] = meta();
    serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .unwrap()
}

/// A table with `up_sql`, whose `region` (string) and `opts.limit` (integer) are mirrored.
fn tools() -> ToolTable {
    let mut t = ToolTable::default();
    t.routes.insert(
        "up_sql".into(),
        ToolRoute {
            upstream: 0,
            upstream_name: "sql".into(),
            definition: RawValue::from_string("{}".into()).unwrap(),
            param_headers: vec![
                ParamHeader {
                    name: "Region".into(),
                    lower: "region".into(),
                    path: vec!["region".into()],
                },
                ParamHeader {
                    name: "Limit".into(),
                    lower: "limit".into(),
                    path: vec!["opts".into(), "limit".into()],
                },
            ],
        },
    );
    t
}

/// The `-32020` message of checking `headers` against `body`, or `None` when it passes.
fn check(headers: &[(&str, &str)], body: &[u8]) -> Option<String> {
    let msg = Message::parse(body).unwrap();
    let m = detect(msg.params, Some("2026-07-28")).unwrap().unwrap();
    match check_headers(&head(headers), &msg, &m, &tools()) {
        Ok(()) => None,
        Err(r) => {
            assert_eq!(r.status(), 400);
            let v: Value = serde_json::from_slice(&r.body(msg.id)).unwrap();
            assert_eq!(v["error"]["code"], code::HEADER_MISMATCH, "{v}");
            Some(v["error"]["message"].as_str().unwrap().to_owned())
        }
    }
}

#[test]
fn legacy_requests_are_not_modern() {
    for params in [
        None,
        Some(r#"{"name":"x"}"#),
        Some(r#"{"_meta":{"progressToken":1}}"#),
        Some(r#"{"_meta":7}"#),
        Some("[1]"),
    ] {
        let raw = params.map(|p| RawValue::from_string(p.into()).unwrap());
        assert!(
            detect(raw.as_deref(), Some("2026-07-28"))
                .unwrap()
                .is_none(),
            "{params:?}"
        );
    }
}

#[test]
fn modern_meta_is_read_and_checked() {
    let p = RawValue::from_string(
        json!({"_meta": {META_VERSION: "2026-07-28", META_CAPABILITIES: {"elicitation": {}}, META_CLIENT: {"name": "c"}}})
            .to_string(),
    )
    .unwrap();
    let m = detect(Some(&p), Some("2026-07-28")).unwrap().unwrap();
    assert_eq!(m.version, "2026-07-28");
    assert_eq!(m.capabilities, json!({"elicitation": {}}));
    assert_eq!(m.client_info, Some(json!({"name": "c"})));
    // Unknown version: -32022 naming what is served and what was asked.
    let p = RawValue::from_string(
        json!({"_meta": {META_VERSION: "1900-01-01", META_CAPABILITIES: {}}}).to_string(),
    )
    .unwrap();
    let r = detect(Some(&p), Some("1900-01-01")).unwrap_err();
    assert_eq!(r.status(), 400);
    let v: Value = serde_json::from_slice(&r.body(None)).unwrap();
    assert_eq!(v["error"]["code"], code::UNSUPPORTED_VERSION);
    assert_eq!(v["error"]["data"]["requested"], "1900-01-01");
    assert_eq!(v["error"]["data"]["supported"][0], "2026-07-28");
    assert!(
        v["error"]["data"]["supported"]
            .as_array()
            .unwrap()
            .contains(&json!("2025-11-25"))
    );
    // Required capabilities missing, or not an object: -32602.
    for meta in [
        json!({META_VERSION: "2026-07-28"}),
        json!({META_VERSION: "2026-07-28", META_CAPABILITIES: []}),
        json!({META_VERSION: 2026}),
    ] {
        let p = RawValue::from_string(json!({"_meta": meta}).to_string()).unwrap();
        let r = detect(Some(&p), Some("2026-07-28")).unwrap_err();
        let v: Value = serde_json::from_slice(&r.body(None)).unwrap();
        assert_eq!(v["error"]["code"], code::INVALID_PARAMS, "{meta}");
        assert_eq!(r.status(), 400);
    }
}

/// The header is judged before the version: a body asking for an unknown revision under a
/// header naming another (or none) is a header mismatch, not an unsupported version.
#[test]
fn header_mismatch_comes_before_the_version() {
    let p = RawValue::from_string(
        json!({"_meta": {META_VERSION: "v999.0.0", META_CAPABILITIES: {}}}).to_string(),
    )
    .unwrap();
    for header in [Some("2026-07-28"), None] {
        let r = detect(Some(&p), header).unwrap_err();
        let v: Value = serde_json::from_slice(&r.body(None)).unwrap();
        assert_eq!(v["error"]["code"], code::HEADER_MISMATCH, "{header:?}: {v}");
        assert_eq!(r.status(), 400);
    }
    // Agreeing on an unknown revision: -32022.
    let r = detect(Some(&p), Some(" v999.0.0 ")).unwrap_err();
    let v: Value = serde_json::from_slice(&r.body(None)).unwrap();
    assert_eq!(v["error"]["code"], code::UNSUPPORTED_VERSION, "{v}");
}

#[test]
fn matching_headers_pass() {
    let b = body("tools/list", json!({}));
    assert_eq!(
        check(
            &[
                ("MCP-Protocol-Version", "2026-07-28"),
                ("Mcp-Method", "tools/list")
            ],
            &b
        ),
        None
    );
    let b = body(
        "tools/call",
        json!({"name": "up_sql", "arguments": {"region": "us-west1", "opts": {"limit": 42}}}),
    );
    let ok = [
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", "tools/call"),
        ("Mcp-Name", "up_sql"),
        ("Mcp-Param-Region", "us-west1"),
        ("mcp-param-limit", "42.0"), // names case-insensitive, integers compared as numbers
    ];
    assert_eq!(check(&ok, &b), None);
    // Base64 names and values are decoded before comparing.
    let b = body("resources/read", json!({"uri": "file:///Hello, 世界"}));
    let name = format!("=?base64?{}?=", STANDARD.encode("file:///Hello, 世界"));
    assert_eq!(
        check(
            &[
                ("MCP-Protocol-Version", "2026-07-28"),
                ("Mcp-Method", "resources/read"),
                ("Mcp-Name", &name)
            ],
            &b
        ),
        None
    );
}

#[test]
fn every_mismatch_is_refused() {
    let call = body(
        "tools/call",
        json!({"name": "up_sql", "arguments": {"region": "us-west1"}}),
    );
    let v = ("MCP-Protocol-Version", "2026-07-28");
    let m = ("Mcp-Method", "tools/call");
    let n = ("Mcp-Name", "up_sql");
    let r = ("Mcp-Param-Region", "us-west1");
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![m, n, r], "MCP-Protocol-Version header is required"),
        (
            vec![("MCP-Protocol-Version", "2025-11-25"), m, n, r],
            "does not match body value '2026-07-28'",
        ),
        (vec![v, n, r], "Mcp-Method header is required"),
        (
            vec![v, ("Mcp-Method", "tools/list"), n, r],
            "Mcp-Method header value 'tools/list'",
        ),
        (vec![v, m, r], "Mcp-Name header is required"),
        (
            vec![v, m, ("Mcp-Name", "up_other"), r],
            "Mcp-Name header value 'up_other'",
        ),
        (
            vec![v, m, ("Mcp-Name", "=?base64?!!!?="), r],
            "invalid Base64",
        ),
        (vec![v, m, n], "Mcp-Param-Region header is required"),
        (
            vec![v, m, n, ("Mcp-Param-Region", "eu-west1")],
            "does not match the body",
        ),
        (
            vec![v, m, n, r, ("Mcp-Param-Limit", "5")],
            "present but the argument is not",
        ),
        (vec![v, m, n, r, r], "repeated Mcp-Param-Region"),
        (vec![v, v, m, n, r], "repeated MCP-Protocol-Version"),
    ];
    for (headers, want) in cases {
        let got = check(&headers, &call).unwrap_or_else(|| panic!("{headers:?} passed"));
        assert!(got.contains(want), "{headers:?}: {got}");
    }
}

#[test]
fn values_round_trip_through_the_base64_sentinel() {
    for v in [
        "us-west1",
        "Hello, 世界",
        " padded ",
        "line1\nline2",
        "=?base64?literal?=",
    ] {
        let e = encode_value(v);
        assert!(e.bytes().all(|b| (0x20..0x7f).contains(&b)), "{e}");
        assert_eq!(decode_value(&e, "x").unwrap(), v);
    }
    assert_eq!(encode_value("us-west1"), "us-west1");
    assert_eq!(encode_value(" padded "), "=?base64?IHBhZGRlZCA=?=");
    let args = json!({"region": "us-west1", "opts": {"limit": 7}});
    let h = param_headers(&tools().routes["up_sql"].param_headers, &args);
    assert_eq!(
        h,
        vec![
            ("mcp-param-region".to_owned(), "us-west1".to_owned()),
            ("mcp-param-limit".to_owned(), "7".to_owned())
        ]
    );
}
