//! Sealed session ids (`session::seal`): `SessionKeys::open` on arbitrary input must never
//! panic (and never open a forgery), and seal → open must round-trip every `Sealed` value
//! that `seal` accepts.
//!
//! Input: first byte even → the rest, as text and as base64url of its bytes, is offered to
//! `open`; odd → the rest is decoded into a `Sealed` value, sealed and opened again.
#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dataplane::session::{Sealed, SessionKeys};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

fn ring() -> &'static SessionKeys {
    static K: OnceLock<SessionKeys> = OnceLock::new();
    K.get_or_init(|| {
        SessionKeys::parse(
            "k2:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\n\
             k1:HyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4",
        )
        .expect("the fixed key ring loads")
    })
}

fn sealed(u: &mut Unstructured<'_>) -> Result<Sealed> {
    Ok(Sealed {
        owner: u.arbitrary()?,
        issued_at: u.arbitrary()?,
        protocol_version: u.arbitrary()?,
        client_init: u.arbitrary()?,
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let keys = ring();
    if mode % 2 == 0 {
        // Nothing here was sealed by the ring: opening must fail, quietly.
        if let Ok(s) = std::str::from_utf8(rest) {
            assert!(keys.open(s).is_none());
        }
        assert!(keys.open(&URL_SAFE_NO_PAD.encode(rest)).is_none());
        return;
    }
    let Ok(sealed) = sealed(&mut Unstructured::new(rest)) else {
        return;
    };
    let Ok(id) = keys.seal(&sealed) else {
        return;
    };
    let opened = keys.open(&id);
    assert_eq!(opened.as_ref(), Some(&sealed), "seal → open lost the value");
    // One flipped character is a different (forged) id.
    let mut forged = id.into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("base64url is ASCII");
    if let Some(o) = keys.open(&forged) {
        panic!("a forged id opened: {o:?}");
    }
});
