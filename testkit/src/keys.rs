//! Signing keys for the test issuer: generation with aws-lc-rs, public JWKs, and raw JWS signing.

use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256,
    RsaKeyPair,
};
use serde_json::{Value, json};

use crate::util::{b64, random_bytes, random_hex};

/// Which kind of key [`crate::TestIssuer::add_key`] creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlg {
    /// Ed25519 (`kty: OKP`, `alg: EdDSA`).
    EdDSA,
    /// ECDSA P-256 with SHA-256 (`kty: EC`, `alg: ES256`).
    ES256,
    /// RSA-2048 PKCS#1 v1.5 with SHA-256 (`kty: RSA`, `alg: RS256`).
    RS256,
    /// A 1024-bit RSA public key published as `RS256`, for "weak key refused" tests.
    ///
    /// aws-lc-rs cannot generate (or sign with) RSA keys under 2048 bits, so this publishes
    /// the fixed modulus [`WEAK_RSA_1024_N`] and has no private key: tokens "signed" with it
    /// carry 128 random bytes as their signature.
    RS256Weak1024,
}

impl KeyAlg {
    /// The JWS `alg` value for this key.
    pub fn jws_alg(self) -> &'static str {
        match self {
            KeyAlg::EdDSA => "EdDSA",
            KeyAlg::ES256 => "ES256",
            KeyAlg::RS256 | KeyAlg::RS256Weak1024 => "RS256",
        }
    }

    fn kid_prefix(self) -> &'static str {
        match self {
            KeyAlg::EdDSA => "ed",
            KeyAlg::ES256 => "es",
            KeyAlg::RS256 => "rs",
            KeyAlg::RS256Weak1024 => "weak",
        }
    }
}

/// Base64url modulus of a fixed 1024-bit RSA key (e = 65537), made once with `openssl genrsa 1024`.
pub const WEAK_RSA_1024_N: &str = "xdaaXseP_PJp6ho7hh47DbV3OCjpqivIkjAvBXSy8XEVQzCxzMSSkq5ddZFfWx-FpPsbihtGfAVODWOG5t2lqmtHX1znhjwKSKiJ-bz5CdN_YhMhsa7vnsNKk_DvRy6_CNuXaoYuGnhPFP8AitkmyEBAYFFB5GuuZNZXk2vaBTU";

#[derive(Debug)]
enum Signer {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
    /// The weak key: public half only.
    PublicOnly {
        sig_len: usize,
    },
}

/// One issuer key: its id, private half and public JWK.
#[derive(Debug)]
pub(crate) struct IssuerKey {
    pub(crate) kid: String,
    pub(crate) alg: KeyAlg,
    pub(crate) jwk: Value,
    signer: Signer,
}

impl IssuerKey {
    /// Generates a fresh key of kind `alg` with a random kid. Panics on rng failure (test setup).
    pub(crate) fn generate(alg: KeyAlg) -> IssuerKey {
        let kid = format!("{}-{}", alg.kid_prefix(), random_hex(8));
        let (signer, mut jwk) = match alg {
            KeyAlg::EdDSA => {
                let kp = Ed25519KeyPair::generate()
                    .unwrap_or_else(|e| panic!("testkit: Ed25519 keygen failed: {e}"));
                let jwk = json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": b64(kp.public_key().as_ref()),
                });
                (Signer::Ed(kp), jwk)
            }
            KeyAlg::ES256 => {
                let kp = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                    .unwrap_or_else(|e| panic!("testkit: P-256 keygen failed: {e}"));
                // Uncompressed SEC1 point: 0x04 || X (32) || Y (32).
                let point = kp.public_key().as_ref();
                let jwk = json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": b64(&point[1..33]),
                    "y": b64(&point[33..65]),
                });
                (Signer::Ec(kp), jwk)
            }
            KeyAlg::RS256 => {
                let kp = RsaKeyPair::generate(KeySize::Rsa2048)
                    .unwrap_or_else(|e| panic!("testkit: RSA keygen failed: {e}"));
                let public = kp.public_key();
                let jwk = json!({
                    "kty": "RSA",
                    "n": b64(public.modulus().big_endian_without_leading_zero()),
                    "e": b64(public.exponent().big_endian_without_leading_zero()),
                });
                (Signer::Rsa(kp), jwk)
            }
            KeyAlg::RS256Weak1024 => {
                let jwk = json!({ "kty": "RSA", "n": WEAK_RSA_1024_N, "e": "AQAB" });
                (Signer::PublicOnly { sig_len: 128 }, jwk)
            }
        };
        if let Some(obj) = jwk.as_object_mut() {
            obj.insert("kid".into(), Value::String(kid.clone()));
            obj.insert("alg".into(), Value::String(alg.jws_alg().into()));
            obj.insert("use".into(), Value::String("sig".into()));
        }
        IssuerKey {
            kid,
            alg,
            jwk,
            signer,
        }
    }

    /// Signs `msg` with this key's own algorithm, returning the raw JWS signature bytes.
    pub(crate) fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        match &self.signer {
            Signer::Ed(kp) => kp.sign(msg).as_ref().to_vec(),
            Signer::Ec(kp) => kp
                .sign(&rng, msg)
                .unwrap_or_else(|e| panic!("testkit: ES256 signing failed: {e}"))
                .as_ref()
                .to_vec(),
            Signer::Rsa(kp) => {
                let mut sig = vec![0u8; kp.public_modulus_len()];
                kp.sign(&RSA_PKCS1_SHA256, &rng, msg, &mut sig)
                    .unwrap_or_else(|e| panic!("testkit: RS256 signing failed: {e}"));
                sig
            }
            Signer::PublicOnly { sig_len } => random_bytes(*sig_len),
        }
    }

    /// Builds a compact JWS: `b64(header).b64(claims).b64(sig)`, header bytes as serialized from `header`.
    pub(crate) fn compact(&self, header: &Value, claims: &Value) -> String {
        let header = serde_json::to_vec(header)
            .unwrap_or_else(|e| panic!("testkit: header not serializable: {e}"));
        let claims = serde_json::to_vec(claims)
            .unwrap_or_else(|e| panic!("testkit: claims not serializable: {e}"));
        let signing_input = format!("{}.{}", b64(&header), b64(&claims));
        let sig = self.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", b64(&sig))
    }
}

/// One key of a ring and whether the JWKS publishes it.
#[derive(Debug)]
struct KeySlot {
    key: IssuerKey,
    /// False once [`KeyRing::remove`] dropped it from the JWKS; it can still sign.
    published: bool,
}

/// An issuer's keys, the JWKS they make and the tokens they sign: the part of a test issuer
/// that needs no server ([`crate::TestIssuer`] serves it over HTTP, [`crate::MemIssuer`]
/// hands it over in memory).
#[derive(Debug)]
pub(crate) struct KeyRing {
    keys: Vec<KeySlot>,
    current: String,
    /// Raw JWK objects published after the ring's own keys.
    pub(crate) extra: Vec<Value>,
}

impl KeyRing {
    /// A ring with one EdDSA key, the current one.
    pub(crate) fn new() -> KeyRing {
        let first = IssuerKey::generate(KeyAlg::EdDSA);
        KeyRing {
            current: first.kid.clone(),
            keys: vec![KeySlot {
                key: first,
                published: true,
            }],
            extra: Vec::new(),
        }
    }

    /// `{"keys": [...]}`: the published keys, then the extras.
    pub(crate) fn jwks(&self) -> Value {
        let keys: Vec<Value> = (self.keys.iter())
            .filter(|s| s.published)
            .map(|s| s.key.jwk.clone())
            .chain(self.extra.iter().cloned())
            .collect();
        json!({ "keys": keys })
    }

    /// Generate a key, publish it and sign with it from now on; its kid.
    pub(crate) fn add(&mut self, alg: KeyAlg) -> String {
        let key = IssuerKey::generate(alg);
        let kid = key.kid.clone();
        self.keys.push(KeySlot {
            key,
            published: true,
        });
        self.current = kid.clone();
        kid
    }

    /// Unpublish `kid`; it still signs, and stays current if it was.
    pub(crate) fn remove(&mut self, kid: &str) {
        for slot in self.keys.iter_mut().filter(|s| s.key.kid == kid) {
            slot.published = false;
        }
    }

    pub(crate) fn current(&self) -> &str {
        &self.current
    }

    pub(crate) fn alg(&self, kid: &str) -> Option<KeyAlg> {
        self.keys
            .iter()
            .find(|s| s.key.kid == kid)
            .map(|s| s.key.alg)
    }

    /// Sign with the current key; header `{alg, kid, typ: "at+jwt"}`.
    pub(crate) fn mint(&self, claims: &Value) -> String {
        let key = self.key(&self.current);
        let header = json!({ "alg": key.alg.jws_alg(), "kid": key.kid, "typ": "at+jwt" });
        key.compact(&header, claims)
    }

    /// Sign with `kid`'s private key, `header` verbatim. Panics without such a key.
    pub(crate) fn mint_raw(&self, header: &Value, claims: &Value, kid: &str) -> String {
        self.key(kid).compact(header, claims)
    }

    fn key(&self, kid: &str) -> &IssuerKey {
        self.keys
            .iter()
            .find(|s| s.key.kid == kid)
            .map(|s| &s.key)
            .unwrap_or_else(|| panic!("testkit: issuer has no key with kid {kid:?}"))
    }
}

/// Claims of a valid token from `issuer`: iss, sub, aud, scope, client_id ("test-client"),
/// iat = nbf = now, exp = now + 300, random jti.
pub(crate) fn claims(issuer: &str, sub: &str, aud: &str, scope: &str) -> Value {
    let now = crate::issuer::now_secs();
    json!({
        "iss": issuer,
        "sub": sub,
        "aud": aud,
        "scope": scope,
        "client_id": "test-client",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": random_hex(16),
    })
}
