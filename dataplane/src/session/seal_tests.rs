use super::*;

fn sample() -> Sealed {
    Sealed {
        owner: [7u8; 32],
        issued_at: 1_700_000_000,
        protocol_version: "2025-06-18".into(),
        client_init: Some(r#"{"capabilities":{},"clientInfo":{"name":"t","version":"1"}}"#.into()),
    }
}

fn ring(text: &str) -> SessionKeys {
    SessionKeys::parse(text).unwrap()
}

const K1: &str = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE";
const K2: &str = "k2:AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI";

#[test]
fn seal_then_open_round_trips_and_ids_are_visible_ascii() {
    let keys = ring(K1);
    let id = keys.seal(&sample()).unwrap();
    assert!(id.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    assert_eq!(keys.open(&id), Some(sample()));
    // Random nonces: the same contents never give the same id.
    assert_ne!(id, keys.seal(&sample()).unwrap());
    let bare = Sealed {
        client_init: None,
        ..sample()
    };
    assert_eq!(keys.open(&keys.seal(&bare).unwrap()), Some(bare));
}

#[test]
fn rotation_keeps_old_sessions_until_the_old_key_leaves_the_ring() {
    let old = ring(K1);
    let id = old.seal(&sample()).unwrap();
    // New key first (seals), old key still listed (opens).
    let rotated = ring(&format!("{K2}\n{K1}"));
    assert_eq!(rotated.open(&id), Some(sample()));
    let new_id = rotated.seal(&sample()).unwrap();
    assert_eq!(ring(K2).open(&new_id), Some(sample()));
    assert_eq!(
        old.open(&new_id),
        None,
        "sealed with k2, k1 alone cannot open it"
    );
    // Old key removed: its sessions end.
    assert_eq!(ring(K2).open(&id), None);
}

#[test]
fn forged_altered_and_garbage_ids_do_not_open() {
    let keys = ring(K1);
    let id = keys.seal(&sample()).unwrap();
    let mut raw = URL_SAFE_NO_PAD.decode(&id).unwrap();
    for i in [0usize, 3, 20, raw.len() / 2, raw.len() - 1] {
        raw[i] ^= 1;
        assert_eq!(keys.open(&URL_SAFE_NO_PAD.encode(&raw)), None, "byte {i}");
        raw[i] ^= 1;
    }
    // The kid is authenticated: relabelling a k1 id as k2 under a ring with both fails.
    let both = ring(&format!("{K1},{K2}"));
    let mut relabelled = raw.clone();
    relabelled[2] = b'2';
    assert_eq!(both.open(&URL_SAFE_NO_PAD.encode(&relabelled)), None);
    for junk in ["", "x", "!!!!", &"A".repeat(MAX_ID_LEN + 1), "AAAA"] {
        assert_eq!(keys.open(junk), None);
    }
    // Another ring with the same kid but another key.
    let other = ring("k1:AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM");
    assert_eq!(other.open(&id), None);
}

#[test]
fn key_rings_are_parsed_strictly_and_never_printed() {
    assert_eq!(SessionKeys::parse("").unwrap_err(), KeyRingError::Empty);
    assert_eq!(
        SessionKeys::parse("# only a comment\n").unwrap_err(),
        KeyRingError::Empty
    );
    assert_eq!(
        SessionKeys::parse("nokey").unwrap_err(),
        KeyRingError::Malformed { index: 0 }
    );
    assert_eq!(
        SessionKeys::parse("k:AQID").unwrap_err(),
        KeyRingError::BadKey { index: 0 }
    );
    assert_eq!(
        SessionKeys::parse(&format!("{K1}\nbad kid:AQID")).unwrap_err(),
        KeyRingError::BadKid { index: 1 }
    );
    assert_eq!(
        SessionKeys::parse(&format!("{K1},{K1}")).unwrap_err(),
        KeyRingError::Duplicate("k1".into())
    );
    let keys = ring(&format!("# ring\n{K2}\n\n{K1}\n"));
    assert_eq!(keys.kids(), vec!["k2", "k1"]);
    let dbg = format!("{keys:?} {:?}", sample());
    assert!(!dbg.contains("AgICAg") && !dbg.contains("AQEBAQ") && !dbg.contains("clientInfo"));
    let g = SessionKeys::generate("local").unwrap();
    assert_eq!(g.open(&g.seal(&sample()).unwrap()), Some(sample()));
}

/// Found by fuzzing (`fuzz/fuzz_targets/seal.rs`): `seal` used to accept values that `open`
/// gives back changed — an empty `client_init` came back as none, and a protocol version
/// over 255 bytes was cut to 255 (or, cut inside a UTF-8 character, never opened at all).
/// It now refuses them, so every id it returns opens to exactly what was sealed.
#[test]
fn values_open_cannot_give_back_are_refused_by_seal() {
    let keys = ring(K1);
    let empty_init = Sealed {
        client_init: Some(String::new()),
        ..sample()
    };
    assert_eq!(keys.seal(&empty_init), Err(KeyRingError::Unsealable));
    for version in ["v".repeat(256), format!("{}é", "v".repeat(254))] {
        let long = Sealed {
            protocol_version: version,
            ..sample()
        };
        assert_eq!(keys.seal(&long), Err(KeyRingError::Unsealable));
    }
    // The longest version that fits still round-trips.
    let longest = Sealed {
        protocol_version: "v".repeat(255),
        ..sample()
    };
    let id = keys.seal(&longest).unwrap();
    assert_eq!(keys.open(&id), Some(longest));
}

#[test]
fn dpop_nonces_open_on_any_ring_with_the_key_and_never_as_session_ids() {
    let keys = ring(K1);
    let n = keys.seal_nonce(1_700_000_000).unwrap();
    assert_eq!(keys.open_nonce(&n), Some(1_700_000_000));
    // Another replica with the same ring opens it; a ring without the key does not.
    assert_eq!(ring(K1).open_nonce(&n), Some(1_700_000_000));
    assert_eq!(ring(K2).open_nonce(&n), None);
    // Domain separation: a nonce is not a session id, and a session id is not a nonce.
    assert_eq!(keys.open(&n), None);
    assert_eq!(keys.open_nonce(&keys.seal(&sample()).unwrap()), None);
    // Altered or foreign text.
    let mut bad = n.clone().into_bytes();
    let last = bad.len() - 2;
    bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
    assert_eq!(keys.open_nonce(std::str::from_utf8(&bad).unwrap()), None);
    assert_eq!(keys.open_nonce("conformance-rs-dpop-nonce"), None);
}
