//! Bearer-token parsing and validation (`auth::jwt::decode`, `verify`, `check_claims`) on
//! arbitrary input. A signature that does not verify is the expected outcome; the target
//! looks for panics, hangs, and claims accepted that break the documented rules.
//!
//! Input: first byte even → the rest is the token text as sent; odd → the rest is
//! `header JSON \0 payload JSON \0 signature`, each base64url-encoded and joined with `.`,
//! so the fuzzer reaches the JSON header and claim rules without having to learn base64.
#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dataplane::auth::jwks::{KeySet, parse_alg, parse_jwks};
use dataplane::auth::jwt::{ValidationPolicy, check_claims, decode, verify};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_700_000_000;

fn keys() -> &'static KeySet {
    static K: OnceLock<KeySet> = OnceLock::new();
    K.get_or_init(|| {
        // RFC 8037 appendix A.2's Ed25519 public key, under a kid and without one.
        let jwks = br#"{"keys":[
            {"kty":"OKP","crv":"Ed25519","kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
        let eddsa = parse_alg("EdDSA").expect("EdDSA is supported");
        parse_jwks(jwks, &[eddsa]).expect("the fixed JWKS loads")
    })
}

fn policy() -> ValidationPolicy {
    ValidationPolicy {
        issuer: "https://issuer.example".to_owned(),
        audiences: vec!["https://warden.example/mcp".to_owned()],
        leeway_secs: 30,
        max_lifetime_secs: 3600,
        token_types: vec!["at+jwt".to_owned()],
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = if mode % 2 == 0 {
        match std::str::from_utf8(rest) {
            Ok(s) => s.to_owned(),
            Err(_) => return,
        }
    } else {
        let mut parts = rest.splitn(3, |b| *b == 0);
        let h = parts.next().unwrap_or_default();
        let p = parts.next().unwrap_or_default();
        let s = parts.next().unwrap_or_default();
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(h),
            URL_SAFE_NO_PAD.encode(p),
            URL_SAFE_NO_PAD.encode(s)
        )
    };
    let policy = policy();
    // The claim rules alone, on the payload bytes as given.
    if mode % 2 == 1 {
        let payload = rest.split(|b| *b == 0).nth(1).unwrap_or_default();
        if let Ok(c) = check_claims(payload, &policy, NOW) {
            assert_eq!(c.iss, policy.issuer);
            assert!(c.aud.iter().any(|a| policy.audiences.contains(a)));
            assert!(!c.sub.is_empty());
            assert!(NOW < c.exp.saturating_add(policy.leeway_secs));
        }
    }
    let Ok(decoded) = decode(&token, 16 * 1024, &policy.token_types) else {
        return;
    };
    // Expected to fail (no one here holds the private key), but never to panic.
    let _ = verify(&decoded, keys(), &policy, NOW);
});
