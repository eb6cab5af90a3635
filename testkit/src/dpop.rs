//! A DPoP client's key and proofs (RFC 9449 §4), made with aws-lc-rs directly — a signing
//! path independent of the jsonwebtoken verifier the gateway uses, so a shared bug shows.
//!
//! Self-contained (aws-lc-rs, base64, serde_json only): the data plane's unit tests include
//! this file by path, since they cannot depend on testkit.

// A test peer: a key the system RNG cannot make is the test's failure, with the reason.
#![allow(clippy::expect_used)]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

enum Signer {
    Es256(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A client's proof-of-possession key pair.
pub struct DpopKey {
    signer: Signer,
    /// The public JWK, as a proof's header carries it.
    pub jwk: Value,
}

impl std::fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopKey").field("jwk", &self.jwk).finish()
    }
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn sha256_b64(b: &[u8]) -> String {
    b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b).as_ref())
}

/// A random `jti`.
pub fn random_jti() -> String {
    let mut b = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut b);
    b64(&b)
}

impl DpopKey {
    /// A fresh P-256 key (proofs signed ES256).
    pub fn es256() -> DpopKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("P-256 key");
        let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .expect("P-256 key");
        let pt = kp.public_key().as_ref().to_vec(); // 0x04 ‖ x ‖ y
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&pt[1..33]), "y": b64(&pt[33..65])});
        DpopKey {
            signer: Signer::Es256(kp),
            jwk,
        }
    }

    /// A fresh Ed25519 key (proofs signed EdDSA).
    pub fn ed25519() -> DpopKey {
        let kp = Ed25519KeyPair::generate().expect("Ed25519 key");
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(kp.public_key().as_ref())});
        DpopKey {
            signer: Signer::Ed25519(kp),
            jwk,
        }
    }

    /// The JWS algorithm of this key's proofs.
    pub fn alg(&self) -> &'static str {
        match self.signer {
            Signer::Es256(_) => "ES256",
            Signer::Ed25519(_) => "EdDSA",
        }
    }

    /// RFC 7638 SHA-256 thumbprint, computed here from the members (not by the gateway's code).
    pub fn thumbprint(&self) -> String {
        let j = &self.jwk;
        let input = match self.signer {
            Signer::Es256(_) => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                j["x"].as_str().unwrap_or(""),
                j["y"].as_str().unwrap_or("")
            ),
            Signer::Ed25519(_) => format!(
                r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                j["x"].as_str().unwrap_or("")
            ),
        };
        sha256_b64(input.as_bytes())
    }

    /// The standard header: `typ: dpop+jwt`, this key's `alg` and public `jwk`.
    pub fn header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": self.alg(), "jwk": self.jwk})
    }

    /// The claims of a proof for `method` `htu` at `iat`, bound to `token` when given.
    pub fn claims(
        &self,
        method: &str,
        htu: &str,
        iat: i64,
        token: Option<&str>,
        nonce: Option<&str>,
    ) -> Value {
        let mut c = json!({"jti": random_jti(), "htm": method, "htu": htu, "iat": iat});
        if let Some(t) = token {
            c["ath"] = json!(ath(t));
        }
        if let Some(n) = nonce {
            c["nonce"] = json!(n);
        }
        c
    }

    /// A valid proof.
    pub fn proof(&self, method: &str, htu: &str, iat: i64, token: Option<&str>) -> String {
        self.sign(&self.header(), &self.claims(method, htu, iat, token, None))
    }

    /// A valid proof carrying a server nonce.
    pub fn proof_with_nonce(
        &self,
        method: &str,
        htu: &str,
        iat: i64,
        token: Option<&str>,
        nonce: &str,
    ) -> String {
        self.sign(
            &self.header(),
            &self.claims(method, htu, iat, token, Some(nonce)),
        )
    }

    /// Sign any header and claims with this key (for proofs broken on purpose).
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        self.sign_bytes(header.to_string().as_bytes(), claims.to_string().as_bytes())
    }

    /// Sign an exact header and payload (JSON a `Value` cannot hold, e.g. duplicate members).
    pub fn sign_bytes(&self, header: &[u8], claims: &[u8]) -> String {
        let input = format!("{}.{}", b64(header), b64(claims));
        let sig = match &self.signer {
            Signer::Es256(kp) => kp
                .sign(&SystemRandom::new(), input.as_bytes())
                .expect("ES256 signature")
                .as_ref()
                .to_vec(),
            Signer::Ed25519(kp) => kp.sign(input.as_bytes()).as_ref().to_vec(),
        };
        format!("{input}.{}", b64(&sig))
    }
}

/// `ath` of an access token: base64url(SHA-256(token)).
pub fn ath(token: &str) -> String {
    sha256_b64(token.as_bytes())
}

/// An HS256 "proof" (a symmetric algorithm a proof must never use), keyed with `secret`.
pub fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

/// An unsigned (`alg: none`) "proof".
pub fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}
