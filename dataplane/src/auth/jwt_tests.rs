use super::*;

fn policy() -> ValidationPolicy {
    ValidationPolicy {
        issuer: "https://as.example".into(),
        audiences: vec!["https://gw.example/mcp".into()],
        leeway_secs: 30,
        max_lifetime_secs: 86_400,
        token_types: vec!["at+jwt".into()],
    }
}

fn claims(v: serde_json::Value) -> Result<Claims, TokenError> {
    check_claims(v.to_string().as_bytes(), &policy(), 1_000_000)
}

fn good() -> serde_json::Value {
    serde_json::json!({"iss":"https://as.example","sub":"u","aud":"https://gw.example/mcp","exp":1_000_100,"iat":999_990,"scope":"a b"})
}

#[test]
fn accepts_a_good_token() {
    let c = claims(good()).unwrap();
    assert_eq!(c.sub, "u");
    assert_eq!(c.scopes, vec!["a", "b"]);
    // The identity sessions are bound to, computed once with the claims.
    assert_eq!(c.owner, crate::session::owner_of("https://as.example", "u"));
}

#[test]
fn exp_rules() {
    let mut v = good();
    v.as_object_mut().unwrap().remove("exp");
    assert_eq!(claims(v).unwrap_err(), TokenError::BadClaims);
    let mut v = good();
    v["exp"] = "1000100".into();
    assert_eq!(claims(v).unwrap_err(), TokenError::BadClaims);
    // Boundary: exp + leeway == now is expired; one second before is not.
    let mut v = good();
    v["exp"] = (1_000_000 - 30).into();
    v["iat"] = 999_000.into();
    assert_eq!(claims(v).unwrap_err(), TokenError::Expired);
    let mut v = good();
    v["exp"] = (1_000_000 - 29).into();
    v["iat"] = 999_000.into();
    assert!(claims(v).is_ok());
}

#[test]
fn nbf_iat_and_lifetime() {
    let mut v = good();
    v["nbf"] = 1_000_031.into();
    assert_eq!(claims(v).unwrap_err(), TokenError::NotYetValid);
    let mut v = good();
    v["iat"] = 1_000_031.into();
    assert_eq!(claims(v).unwrap_err(), TokenError::NotYetValid);
    let mut v = good();
    v["exp"] = (1_000_000 + 90_000).into();
    assert_eq!(claims(v).unwrap_err(), TokenError::LifetimeTooLong);
}

#[test]
fn aud_and_iss_rules() {
    let mut v = good();
    v.as_object_mut().unwrap().remove("aud");
    assert_eq!(claims(v).unwrap_err(), TokenError::BadAudience);
    let mut v = good();
    v["aud"] = "https://other.example/mcp".into();
    assert_eq!(claims(v).unwrap_err(), TokenError::BadAudience);
    let mut v = good();
    v["aud"] = 5.into();
    assert_eq!(claims(v).unwrap_err(), TokenError::BadAudience);
    let mut v = good();
    v["aud"] = serde_json::json!(["https://other.example", "https://gw.example/mcp"]);
    assert!(claims(v).is_ok());
    let mut v = good();
    v["iss"] = serde_json::json!(["https://as.example"]);
    assert_eq!(claims(v).unwrap_err(), TokenError::BadIssuer);
    let mut v = good();
    v.as_object_mut().unwrap().remove("iss");
    assert_eq!(claims(v).unwrap_err(), TokenError::BadIssuer);
    let mut v = good();
    v["iss"] = "https://as.example/".into();
    assert_eq!(claims(v).unwrap_err(), TokenError::BadIssuer);
}

#[test]
fn duplicate_members_are_refused() {
    let raw = r#"{"iss":"https://as.example","sub":"u","sub":"admin","aud":"https://gw.example/mcp","exp":1000100}"#;
    assert_eq!(
        check_claims(raw.as_bytes(), &policy(), 1_000_000).unwrap_err(),
        TokenError::BadClaims
    );
}

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

#[test]
fn header_rules() {
    let types = vec!["at+jwt".to_string()];
    let p = b64(&good().to_string());
    let tok = |h: &str| format!("{}.{}.c2ln", b64(h), p);
    assert!(
        decode(
            &tok(r#"{"alg":"EdDSA","typ":"at+jwt","kid":"k"}"#),
            16384,
            &types
        )
        .is_ok()
    );
    assert!(
        decode(
            &tok(r#"{"alg":"EdDSA","typ":"application/at+JWT","kid":"k"}"#),
            16384,
            &types
        )
        .is_ok()
    );
    assert_eq!(
        decode(&tok(r#"{"alg":"none","typ":"at+jwt"}"#), 16384, &types).unwrap_err(),
        TokenError::BadAlgorithm
    );
    assert_eq!(
        decode(&tok(r#"{"alg":"NONE","typ":"at+jwt"}"#), 16384, &types).unwrap_err(),
        TokenError::BadAlgorithm
    );
    assert_eq!(
        decode(&tok(r#"{"alg":"HS256","typ":"at+jwt"}"#), 16384, &types).unwrap_err(),
        TokenError::BadAlgorithm
    );
    assert_eq!(
        decode(&tok(r#"{"alg":"EdDSA","typ":"JWT"}"#), 16384, &types).unwrap_err(),
        TokenError::BadType
    );
    assert_eq!(
        decode(&tok(r#"{"alg":"EdDSA"}"#), 16384, &types).unwrap_err(),
        TokenError::BadType
    );
    assert_eq!(
        decode(
            &tok(r#"{"alg":"EdDSA","typ":"at+jwt","crit":["exp"]}"#),
            16384,
            &types
        )
        .unwrap_err(),
        TokenError::CritHeader
    );
    assert_eq!(
        decode(
            &tok(r#"{"alg":"EdDSA","alg":"none","typ":"at+jwt"}"#),
            16384,
            &types
        )
        .unwrap_err(),
        TokenError::BadHeader
    );
    // Segments, encodings, sizes.
    assert_eq!(
        decode("a.b", 16384, &types).unwrap_err(),
        TokenError::Malformed
    );
    assert_eq!(
        decode("a.b.c.d.e", 16384, &types).unwrap_err(),
        TokenError::Malformed
    );
    assert_eq!(
        decode(
            &format!("{}.{}.", b64(r#"{"alg":"EdDSA","typ":"at+jwt"}"#), p),
            16384,
            &types
        )
        .unwrap_err(),
        TokenError::Malformed
    );
    assert_eq!(
        decode(
            &format!("{} .{}.c2ln", b64(r#"{"alg":"EdDSA"}"#), p),
            16384,
            &types
        )
        .unwrap_err(),
        TokenError::Malformed
    );
    assert_eq!(
        decode(
            &format!("{}=.{}.c2ln", b64(r#"{"alg":"EdDSA"}"#), p),
            16384,
            &types
        )
        .unwrap_err(),
        TokenError::Malformed
    );
    assert_eq!(
        decode(
            &format!("{}.{}.c2ln", URL_SAFE_NO_PAD.encode([0xff, 0xfe, 0x7b]), p),
            16384,
            &types
        )
        .unwrap_err(),
        TokenError::BadHeader
    );
    assert_eq!(
        decode(&"a".repeat(16385), 16384, &types).unwrap_err(),
        TokenError::TooLong
    );
}

#[test]
fn cnf_jkt_is_read_and_other_confirmations_are_refused() {
    let mut v = good();
    v["cnf"] = serde_json::json!({"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"});
    assert_eq!(
        claims(v).unwrap().cnf_jkt.as_deref(),
        Some("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I")
    );
    assert_eq!(claims(good()).unwrap().cnf_jkt, None);
    for cnf in [
        serde_json::json!({"x5t#S256": "abc"}),
        serde_json::json!({"jkt": "a", "x5t#S256": "abc"}),
        serde_json::json!({"jkt": 1}),
        serde_json::json!({"jkt": ""}),
        serde_json::json!("jkt"),
        serde_json::json!({}),
    ] {
        let mut v = good();
        v["cnf"] = cnf.clone();
        assert_eq!(claims(v).unwrap_err(), TokenError::BadClaims, "{cnf}");
    }
}
