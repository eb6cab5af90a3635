//! DPoP proofs (`auth::dpop::verify`, `thumbprint_of`, `normalize_htu`) on arbitrary input. A
//! signature that does not verify is the expected outcome; the target looks for panics and
//! hangs in the header, JWK and claim handling, and for a proof accepted that breaks a rule.
//!
//! Input: first byte even → the rest is the proof text as sent; odd → the rest is
//! `header JSON \0 claims JSON \0 signature`, each base64url-encoded and joined with `.`, so
//! the fuzzer reaches the JSON rules without having to learn base64.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dataplane::auth::dpop::{DpopPolicy, Request, normalize_htu, thumbprint_of, verify};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_800_000_000;
const URI: &str = "https://gw.example/mcp";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let proof = if mode % 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let mut parts = rest.splitn(3, |b| *b == 0);
        let (h, c, s) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(h)
            && let Some(jwk) = v.get("jwk")
        {
            let _ = thumbprint_of(jwk);
        }
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(h),
            URL_SAFE_NO_PAD.encode(c),
            URL_SAFE_NO_PAD.encode(s)
        )
    };
    if let Some(u) = normalize_htu(&String::from_utf8_lossy(rest)) {
        // Normalising is idempotent.
        assert_eq!(normalize_htu(&u).as_deref(), Some(u.as_str()));
    }
    let uris = [normalize_htu(URI).expect("the fixed URI normalises")];
    let policy = DpopPolicy::default();
    let req = Request {
        method: "POST",
        uris: &uris,
        access_token: Some("token"),
        now: NOW,
    };
    if let Ok(p) = verify(&proof, &policy, &req) {
        // Only a proof that passed every rule gets here (which needs a real signature).
        assert!(p.replay_until <= NOW + 2 * policy.iat_window_secs);
        assert!(!p.jkt.is_empty());
    }
});
