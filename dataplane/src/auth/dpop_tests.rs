//! Every RFC 9449 §4.3 check broken in turn, with proofs made in the test (ES256 and EdDSA).

use serde_json::json;

use super::*;

// The proof maker testkit exports; included by path (the data plane cannot depend on testkit).
#[path = "../../../testkit/src/dpop.rs"]
#[allow(dead_code)]
mod proofs;
use proofs::DpopKey;

const URI: &str = "https://gw.example/mcp";
const NOW: i64 = 1_800_000_000;
const TOKEN: &str = "eyJ0eXAiOiJhdCtqd3QifQ.e30.c2ln";

fn uris() -> Vec<String> {
    vec![normalize_htu(URI).unwrap()]
}

fn check(proof: &str) -> Result<Proof, ProofError> {
    check_at(proof, NOW, &DpopPolicy::default())
}

fn check_at(proof: &str, now: i64, policy: &DpopPolicy) -> Result<Proof, ProofError> {
    let u = uris();
    verify(
        proof,
        policy,
        &Request {
            method: "POST",
            uris: &u,
            access_token: Some(TOKEN),
            now,
        },
    )
}

fn keys() -> [DpopKey; 2] {
    [DpopKey::es256(), DpopKey::ed25519()]
}

#[test]
fn valid_proofs_pass_with_the_keys_thumbprint() {
    for k in keys() {
        let p = check(&k.proof("POST", URI, NOW, Some(TOKEN))).unwrap();
        assert_eq!(p.jkt, k.thumbprint(), "{}", k.alg());
        assert!(check_binding(&p, &k.thumbprint()).is_ok());
        assert_eq!(p.replay_until, NOW + 300);
        assert_eq!(
            thumbprint_of(&k.jwk).as_deref(),
            Some(k.thumbprint().as_str())
        );
    }
}

/// RFC 7638 §3.1's example key and thumbprint, so the thumbprint is the standard's, not ours.
#[test]
fn thumbprint_matches_rfc7638_example() {
    let jwk = json!({"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"});
    assert_eq!(
        thumbprint_of(&jwk).as_deref(),
        Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
    );
}

#[test]
fn missing_or_garbage_proof_is_malformed() {
    for p in ["", "a.b", "a.b.c.d", "not a jwt", "a..c", "a.b.c"] {
        assert_eq!(check(p), Err(ProofError::Malformed), "{p:?}");
    }
    assert_eq!(
        check(&"a".repeat(MAX_PROOF_BYTES + 1)),
        Err(ProofError::Malformed)
    );
}

#[test]
fn wrong_typ_is_refused() {
    for k in keys() {
        let c = k.claims("POST", URI, NOW, Some(TOKEN), None);
        for typ in [json!("JWT"), json!("at+jwt"), json!(null)] {
            let mut h = k.header();
            h["typ"] = typ.clone();
            assert_eq!(check(&k.sign(&h, &c)), Err(ProofError::BadType), "{typ}");
        }
        let mut h = k.header();
        h.as_object_mut().unwrap().remove("typ");
        assert_eq!(check(&k.sign(&h, &c)), Err(ProofError::BadType));
    }
}

#[test]
fn alg_none_and_hs256_are_refused() {
    let k = DpopKey::es256();
    let c = k.claims("POST", URI, NOW, Some(TOKEN), None);
    for none in ["none", "None", "NONE"] {
        let mut h = k.header();
        h["alg"] = json!(none);
        assert_eq!(
            check(&proofs::unsigned(&h, &c)),
            Err(ProofError::Malformed),
            "empty signature"
        );
        let mut forged = proofs::unsigned(&h, &c);
        forged.push_str("AAAA");
        assert_eq!(check(&forged), Err(ProofError::BadAlgorithm), "{none}");
    }
    let mut h = k.header();
    h["alg"] = json!("HS256");
    // Keyed with the public key's x coordinate: the classic confusion attempt.
    let secret = k.jwk["x"].as_str().unwrap().as_bytes().to_vec();
    assert_eq!(
        check(&proofs::hs256(&h, &c, &secret)),
        Err(ProofError::BadAlgorithm)
    );
}

#[test]
fn algorithm_outside_the_allow_list_is_refused() {
    let k = DpopKey::ed25519();
    let policy = DpopPolicy {
        algorithms: vec![Algorithm::ES256],
        ..DpopPolicy::default()
    };
    assert_eq!(
        check_at(&k.proof("POST", URI, NOW, Some(TOKEN)), NOW, &policy),
        Err(ProofError::BadAlgorithm)
    );
    assert_eq!(policy.algs_param(), "ES256");
    assert_eq!(DpopPolicy::default().algs_param(), "ES256 EdDSA");
}

#[test]
fn private_key_in_jwk_is_refused() {
    for k in keys() {
        let c = k.claims("POST", URI, NOW, Some(TOKEN), None);
        for member in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            let mut h = k.header();
            h["jwk"][member] = json!("AQAB");
            assert_eq!(
                check(&k.sign(&h, &c)),
                Err(ProofError::PrivateKey),
                "{member}"
            );
        }
    }
}

#[test]
fn missing_or_mismatched_jwk_is_refused() {
    let k = DpopKey::es256();
    let c = k.claims("POST", URI, NOW, Some(TOKEN), None);
    let mut h = k.header();
    h.as_object_mut().unwrap().remove("jwk");
    assert_eq!(check(&k.sign(&h, &c)), Err(ProofError::BadKey));
    // A symmetric key, a key of another type than the alg, a short coordinate.
    for jwk in [
        json!({"kty": "oct", "k": "AQAB"}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": k.jwk["x"]}),
        json!({"kty": "EC", "crv": "P-256", "x": "AQAB", "y": k.jwk["y"]}),
        json!({"kty": "EC", "crv": "P-384", "x": k.jwk["x"], "y": k.jwk["y"]}),
        json!("a string"),
    ] {
        let mut h = k.header();
        h["jwk"] = jwk.clone();
        let r = check(&k.sign(&h, &c));
        assert!(
            matches!(r, Err(ProofError::BadKey | ProofError::PrivateKey)),
            "{jwk}: {r:?}"
        );
    }
}

#[test]
fn signature_by_another_key_is_refused() {
    for k in keys() {
        let other = if k.alg() == "ES256" {
            DpopKey::es256()
        } else {
            DpopKey::ed25519()
        };
        // Header names k's key; other signs.
        let p = other.sign(&k.header(), &k.claims("POST", URI, NOW, Some(TOKEN), None));
        assert_eq!(check(&p), Err(ProofError::BadSignature), "{}", k.alg());
    }
}

#[test]
fn wrong_thumbprint_is_refused() {
    for k in keys() {
        let p = check(&k.proof("POST", URI, NOW, Some(TOKEN))).unwrap();
        let other = DpopKey::es256();
        assert_eq!(
            check_binding(&p, &other.thumbprint()),
            Err(ProofError::WrongKey)
        );
    }
}

#[test]
fn wrong_htm_is_refused() {
    for k in keys() {
        for m in ["GET", "post", "DELETE"] {
            assert_eq!(
                check(&k.proof(m, URI, NOW, Some(TOKEN))),
                Err(ProofError::WrongMethod),
                "{m}"
            );
        }
    }
}

#[test]
fn htu_is_compared_after_normalisation_ignoring_query_and_fragment() {
    let k = DpopKey::es256();
    for same in [
        "https://gw.example/mcp",
        "HTTPS://GW.EXAMPLE/mcp",
        "https://gw.example:443/mcp",
        "https://gw.example/mcp?x=1",
        "https://gw.example/mcp#frag",
        "https://gw.example/a/../mcp",
    ] {
        assert!(
            check(&k.proof("POST", same, NOW, Some(TOKEN))).is_ok(),
            "{same}"
        );
    }
    for other in [
        "http://gw.example/mcp",
        "https://gw.example:8443/mcp",
        "https://other.example/mcp",
        "https://gw.example/MCP",
        "https://gw.example/mcp/",
        "https://gw.example/",
        "/mcp",
        "urn:x",
    ] {
        assert_eq!(
            check(&k.proof("POST", other, NOW, Some(TOKEN))),
            Err(ProofError::WrongUri),
            "{other}"
        );
    }
}

#[test]
fn stale_and_future_iat_are_refused_at_the_window() {
    for k in keys() {
        assert!(check(&k.proof("POST", URI, NOW - 300, Some(TOKEN))).is_ok());
        assert!(check(&k.proof("POST", URI, NOW + 300, Some(TOKEN))).is_ok());
        assert_eq!(
            check(&k.proof("POST", URI, NOW - 301, Some(TOKEN))),
            Err(ProofError::Stale)
        );
        assert_eq!(
            check(&k.proof("POST", URI, NOW + 301, Some(TOKEN))),
            Err(ProofError::Future)
        );
    }
    // The window is configurable.
    let tight = DpopPolicy {
        iat_window_secs: 10,
        ..DpopPolicy::default()
    };
    let k = DpopKey::es256();
    assert_eq!(
        check_at(&k.proof("POST", URI, NOW - 11, Some(TOKEN)), NOW, &tight),
        Err(ProofError::Stale)
    );
}

#[test]
fn missing_or_wrong_ath_is_refused() {
    for k in keys() {
        assert_eq!(
            check(&k.proof("POST", URI, NOW, None)),
            Err(ProofError::MissingAth)
        );
        assert_eq!(
            check(&k.proof("POST", URI, NOW, Some("another-token"))),
            Err(ProofError::WrongAth)
        );
    }
}

#[test]
fn claims_of_the_wrong_shape_are_refused() {
    let k = DpopKey::es256();
    let base = k.claims("POST", URI, NOW, Some(TOKEN), None);
    for (name, v) in [
        ("jti", json!(null)),
        ("jti", json!("")),
        ("jti", json!(7)),
        ("iat", json!("1800000000")),
        ("htm", json!(["POST"])),
        ("htu", json!(null)),
        ("ath", json!(1)),
        ("nonce", json!({})),
    ] {
        let mut c = base.clone();
        c[name] = v.clone();
        assert_eq!(
            check(&k.sign(&k.header(), &c)),
            Err(ProofError::BadClaims),
            "{name}={v}"
        );
    }
    let mut h = k.header();
    h["crit"] = json!(["exp"]);
    assert_eq!(check(&k.sign(&h, &base)), Err(ProofError::CritHeader));
}

#[test]
fn duplicate_jwk_members_are_refused() {
    let k = DpopKey::es256();
    let other = DpopKey::es256();
    let header = format!(
        r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{{"kty":"EC","crv":"P-256","x":{},"x":{},"y":{}}}}}"#,
        other.jwk["x"], k.jwk["x"], k.jwk["y"]
    );
    let claims = k.claims("POST", URI, NOW, Some(TOKEN), None).to_string();
    let p = k.sign_bytes(header.as_bytes(), claims.as_bytes());
    assert_eq!(check(&p), Err(ProofError::BadKey));
}

#[test]
fn duplicate_claim_members_are_refused() {
    let k = DpopKey::es256();
    let claims = format!(
        r#"{{"jti":"a","htm":"GET","htm":"POST","htu":"{URI}","iat":{NOW},"ath":"{}"}}"#,
        ath_of(TOKEN)
    );
    let p = k.sign_bytes(k.header().to_string().as_bytes(), claims.as_bytes());
    assert_eq!(check(&p), Err(ProofError::BadClaims));
}
