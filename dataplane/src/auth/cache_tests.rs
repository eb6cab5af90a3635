//! The verified-token cache on a mock clock: hits while the token lives, never past `exp`.

use super::*;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use std::time::Duration;

use crate::clock::Clock;

const ISS: &str = "https://as.example";
const AUD: &str = "https://gw.example/mcp";
const LEEWAY: i64 = 30;

/// One Ed25519 issuer as the shards see it, and its signing key.
fn issuer() -> (Ed25519KeyPair, Arc<IssuerState>) {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let x = URL_SAFE_NO_PAD.encode(key.public_key().as_ref());
    let set =
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1", "use": "sig"}]});
    let keys = jwks::parse_jwks(
        set.to_string().as_bytes(),
        &[jsonwebtoken::Algorithm::EdDSA],
    )
    .unwrap();
    let state = IssuerState {
        policy: ValidationPolicy {
            issuer: ISS.into(),
            audiences: vec![AUD.into()],
            leeway_secs: LEEWAY,
            max_lifetime_secs: 86_400,
            token_types: vec!["at+jwt".into()],
        },
        dpop: Default::default(),
        keys: Arc::new(keys),
        keys_generation: 1,
        usable: true,
    };
    (key, Arc::new(state))
}

fn mint(key: &Ed25519KeyPair, claims: &Value) -> String {
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let input = format!(
        "{}.{}",
        b64(&json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "k1"})),
        b64(claims)
    );
    let sig = URL_SAFE_NO_PAD.encode(key.sign(input.as_bytes()).as_ref());
    format!("{input}.{sig}")
}

#[test]
fn a_cached_token_stops_being_accepted_when_the_mock_passes_exp() {
    let (clock, mock) = Clock::mock_at(1_700_000_000_000);
    let (key, state) = issuer();
    let issuers = [state];
    let t0 = clock.unix_secs();
    let tok = mint(
        &key,
        &json!({"iss": ISS, "sub": "alice", "aud": AUD, "iat": t0, "exp": t0 + 60}),
    );
    let mut cache = TokenCache::new(16);
    let mut auth = || cache.authenticate(&tok, &issuers, 16 * 1024, clock.unix_secs());

    let (outcome, hit) = auth();
    assert!(matches!(outcome, AuthOutcome::Valid(_)) && !hit, "verified");
    mock.advance(Duration::from_secs(59));
    let (outcome, hit) = auth();
    assert!(
        matches!(outcome, AuthOutcome::Valid(_)) && hit,
        "cached a second before exp"
    );

    // At exp the cache never answers; full verification still allows the leeway.
    mock.advance(Duration::from_secs(1));
    let (outcome, hit) = auth();
    assert!(
        matches!(outcome, AuthOutcome::Valid(_)) && !hit,
        "re-verified at exp"
    );
    let (_, hit) = auth();
    assert!(!hit, "and still not served from the cache");

    // Past exp + leeway: refused.
    mock.advance(Duration::from_secs(LEEWAY as u64));
    let (outcome, hit) = auth();
    assert!(
        matches!(outcome, AuthOutcome::Invalid(TokenError::Expired)) && !hit,
        "expired on the mock clock: {outcome:?}"
    );
}
