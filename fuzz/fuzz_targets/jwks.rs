//! JWKS loading (`auth::jwks::parse_jwks`) on arbitrary bytes: an issuer's document is
//! hostile input. Must never panic; a loaded set is never empty and holds only allowed
//! algorithms.
#![no_main]

use dataplane::auth::jwks::{parse_alg, parse_jwks};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte: which algorithms the issuer allows (a bit each).
    let Some((&mask, doc)) = data.split_first() else {
        return;
    };
    let names = [
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
    ];
    let allowed: Vec<_> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| *i == 8 || mask & (1 << i) != 0)
        .filter_map(|(_, n)| parse_alg(n))
        .collect();
    if let Ok(set) = parse_jwks(doc, &allowed) {
        assert!(!set.is_empty());
    }
});
