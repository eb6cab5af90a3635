//! Arguments can never change the request's path, host or headers: they stay inside one segment or value.

mod common;

use serde_json::json;
use warden_bridge::CallError;

#[expect(clippy::unwrap_used, reason = "test helper")]
fn repo_path(repo: &str) -> String {
    common::edge()
        .build_request("edge_getRepo", Some(&json!({"org": "acme", "repo": repo})))
        .unwrap()
        .path_and_query
}

#[test]
fn hostile_path_values_stay_inside_one_segment() {
    let cases = [
        ("../../admin", "/v2/orgs/acme/repos/..%2F..%2Fadmin"),
        ("..", "/v2/orgs/acme/repos/%2E%2E"),
        (".", "/v2/orgs/acme/repos/%2E"),
        ("?x=1", "/v2/orgs/acme/repos/%3Fx%3D1"),
        ("#frag", "/v2/orgs/acme/repos/%23frag"),
        ("a/b", "/v2/orgs/acme/repos/a%2Fb"),
        (
            "a\r\nHost: evil",
            "/v2/orgs/acme/repos/a%0D%0AHost%3A%20evil",
        ),
        (
            "ünï cødé",
            "/v2/orgs/acme/repos/%C3%BCn%C3%AF%20c%C3%B8d%C3%A9",
        ),
        ("%2e%2e", "/v2/orgs/acme/repos/%252e%252e"),
        ("//evil.example", "/v2/orgs/acme/repos/%2F%2Fevil.example"),
        ("a;b=c", "/v2/orgs/acme/repos/a%3Bb%3Dc"),
        ("my-repo_1.0~x", "/v2/orgs/acme/repos/my-repo_1.0~x"),
    ];
    for (repo, want) in cases {
        assert_eq!(repo_path(repo), want, "repo = {repo:?}");
    }
}

#[test]
fn empty_path_parameter_is_refused() {
    let err = common::edge()
        .build_request("edge_getRepo", Some(&json!({"org": "acme", "repo": ""})))
        .unwrap_err();
    assert_eq!(
        err,
        CallError::InvalidArguments("`repo`: path parameter must not be empty".into())
    );
    let err = common::edge()
        .build_request("edge_getRepo", Some(&json!({"org": "acme"})))
        .unwrap_err();
    assert_eq!(
        err,
        CallError::InvalidArguments("`repo`: is required".into())
    );
}

#[test]
fn query_arrays_explode_by_default_and_join_when_told() {
    let req = common::edge()
        .build_request(
            "edge_getRepo",
            Some(&json!({
                "org": "acme", "repo": "r",
                "labels": ["bug", "good first", "a&b"],
                "ids": [1, 2, 3],
                "sort": "name"
            })),
        )
        .unwrap();
    assert_eq!(
        req.path_and_query,
        "/v2/orgs/acme/repos/r?labels=bug&labels=good%20first&labels=a%26b&sort=name&ids=1,2,3"
    );
}

#[test]
fn headers_with_control_characters_are_refused() {
    let b = common::edge();
    for bad in ["a\r\nX-Injected: 1", "a\nb", "a\rb", "nul\0", "ü"] {
        let err = b
            .build_request(
                "edge_getRepo",
                Some(&json!({"org": "o", "repo": "r", "X-Request-Id": bad})),
            )
            .unwrap_err();
        assert!(
            matches!(&err, CallError::InvalidArguments(m) if m.starts_with("`X-Request-Id`: header value may only contain printable ASCII")),
            "{bad:?}: {err}"
        );
    }
    let ok = b
        .build_request(
            "edge_getRepo",
            Some(&json!({"org": "o", "repo": "r", "X-Request-Id": "abc-123"})),
        )
        .unwrap();
    assert!(
        ok.headers
            .contains(&("X-Request-Id".into(), "abc-123".into()))
    );
}

#[test]
fn credential_and_cookie_parameters_are_never_arguments() {
    let b = common::edge();
    let t = b.tool("edge_getRepo").unwrap();
    let props = t.input_schema["properties"].as_object().unwrap();
    assert!(!props.contains_key("Authorization"));
    assert!(!props.contains_key("session"));
    for (key, value) in [
        ("Authorization", "Bearer stolen"),
        ("session", "s"),
        ("Host", "evil"),
    ] {
        let err = b
            .build_request(
                "edge_getRepo",
                Some(&json!({"org": "o", "repo": "r", key: value})),
            )
            .unwrap_err();
        assert!(
            matches!(&err, CallError::InvalidArguments(m) if m.contains("is not a known property")),
            "{key}: {err}"
        );
    }
    assert!(
        b.warnings()
            .iter()
            .any(|w| w.contains("`Authorization` is set by the gateway"))
    );
    assert!(
        b.warnings()
            .iter()
            .any(|w| w.contains("cookie parameter `session` dropped"))
    );
}
