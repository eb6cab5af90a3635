//! The hashes are argon2's own: each side verifies the other's, with the PHC string's parameters.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use super::{hash, verify};

fn salt(byte: u8) -> SaltString {
    SaltString::encode_b64(&[byte; 16]).unwrap()
}

#[test]
fn a_hash_verifies_and_a_wrong_password_does_not() {
    let phc = hash("correct horse", &salt(1)).unwrap();
    assert!(verify("correct horse", &phc));
    assert!(!verify("correct hors", &phc));
    assert!(!verify("", &phc));
}

#[test]
fn the_parameters_are_argon2s_defaults_not_weakened() {
    let phc = hash("pw", &salt(2)).unwrap();
    let h = PasswordHash::new(&phc).unwrap();
    assert_eq!(h.algorithm, Algorithm::Argon2id.ident());
    assert_eq!(h.version, Some(0x13));
    let p = Params::try_from(&h).unwrap();
    assert_eq!((p.m_cost(), p.t_cost(), p.p_cost()), (19_456, 2, 1));
    // The same string as argon2's own hasher with the same salt: the same bytes.
    let theirs = Argon2::default()
        .hash_password(b"pw", &salt(2))
        .unwrap()
        .to_string();
    assert_eq!(phc, theirs);
}

#[test]
fn strings_from_argon2_itself_verify_with_their_own_parameters() {
    for (alg, m, t, p) in [
        (Algorithm::Argon2id, 19_456, 2, 1),
        (Algorithm::Argon2id, 64, 3, 2),
        (Algorithm::Argon2i, 32, 1, 1),
        (Algorithm::Argon2d, 32, 2, 1),
    ] {
        let argon2 = Argon2::new(alg, Version::V0x13, Params::new(m, t, p, None).unwrap());
        let phc = argon2
            .hash_password(b"s3cret", &salt(3))
            .unwrap()
            .to_string();
        assert!(verify("s3cret", &phc), "{phc}");
        assert!(!verify("s3cres", &phc), "{phc}");
    }
    // And argon2's verifier accepts ours.
    let ours = hash("s3cret", &salt(4)).unwrap();
    let h = PasswordHash::new(&ours).unwrap();
    assert!(Argon2::default().verify_password(b"s3cret", &h).is_ok());
    assert!(Argon2::default().verify_password(b"s3cre", &h).is_err());
}

#[test]
fn malformed_strings_never_verify() {
    let good = hash("pw", &salt(5)).unwrap();
    let no_hash = good.rsplit_once('$').unwrap().0.to_owned();
    let other_version = good.replace("v=19", "v=16");
    let bad_alg = good.replace("argon2id", "argon2x");
    let short_hash = format!("{no_hash}$AAAA");
    for phc in ["", "plain", "$argon2id$", &no_hash, &bad_alg, &short_hash] {
        assert!(!verify("pw", phc), "{phc:?}");
    }
    // Version 0x10 is a valid argon2 version: a different hash, not a parse failure.
    assert!(!verify("pw", &other_version));
}
