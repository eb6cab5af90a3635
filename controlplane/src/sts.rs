//! Warden's embedded security token service: signing keys (EdDSA or ES256) that rotate,
//! a JWKS publishing the current and previous key, and RFC 9068 `at+jwt` signing.
//!
//! Signing uses aws-lc-rs key pairs parsed once. jsonwebtoken's signer re-parses the
//! PKCS#8 key on every signature (see `docs/architecture.md`, "Tokens"); verification
//! everywhere else still goes through jsonwebtoken.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dataplane::clock::Clock;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::state::{StateStore, StoredKey};

/// Signature algorithm of the STS keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum SigningAlg {
    #[default]
    EdDSA,
    ES256,
}

enum Pair {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
}

/// One signing key with its public JWK.
pub struct SigningKey {
    pub kid: String,
    pub alg: SigningAlg,
    pair: Pair,
    pub public_jwk: Value,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("private", &"...")
            .finish()
    }
}

/// Why signing failed.
#[derive(Debug, thiserror::Error)]
#[error("STS: {0}")]
pub struct StsError(pub String);

fn random_hex(n: usize) -> Result<String, StsError> {
    let mut b = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| StsError("system RNG failed".into()))?;
    Ok(dataplane::audit::hex(&b))
}

impl SigningKey {
    /// Generate a fresh key.
    pub fn generate(alg: SigningAlg) -> Result<SigningKey, StsError> {
        let kid = format!("warden-{}", random_hex(8)?);
        let der = Self::generate_pkcs8(alg)?;
        Self::from_pkcs8(&der, &kid)
    }

    /// Load a PKCS#8 private key (Ed25519 or P-256), DER bytes, with a given `kid`.
    pub fn from_pkcs8(der: &[u8], kid: &str) -> Result<SigningKey, StsError> {
        if let Ok(pair) = Ed25519KeyPair::from_pkcs8(der) {
            let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
            let jwk =
                json!({"kty":"OKP","crv":"Ed25519","x":x,"kid":kid,"alg":"EdDSA","use":"sig"});
            return Ok(SigningKey {
                kid: kid.to_owned(),
                alg: SigningAlg::EdDSA,
                pair: Pair::Ed(pair),
                public_jwk: jwk,
            });
        }
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|_| StsError("private key is neither Ed25519 nor P-256 PKCS#8".into()))?;
        let p = pair.public_key().as_ref();
        if p.len() != 65 {
            return Err(StsError("unexpected P-256 public key encoding".into()));
        }
        let (x, y) = (
            URL_SAFE_NO_PAD.encode(&p[1..33]),
            URL_SAFE_NO_PAD.encode(&p[33..65]),
        );
        let jwk = json!({"kty":"EC","crv":"P-256","x":x,"y":y,"kid":kid,"alg":"ES256","use":"sig"});
        Ok(SigningKey {
            kid: kid.to_owned(),
            alg: SigningAlg::ES256,
            pair: Pair::Ec(pair),
            public_jwk: jwk,
        })
    }

    /// A PKCS#8 DER export of a freshly generated key (for tests and `warden` tooling).
    pub fn generate_pkcs8(alg: SigningAlg) -> Result<Vec<u8>, StsError> {
        let rng = SystemRandom::new();
        Ok(match alg {
            SigningAlg::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| StsError("key generation failed".into()))?
                .as_ref()
                .to_vec(),
            SigningAlg::ES256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| StsError("key generation failed".into()))?
                    .as_ref()
                    .to_vec()
            }
        })
    }

    /// Sign `claims` as a compact JWS with header `{alg, kid, typ}`.
    pub fn sign(&self, claims: &Value, typ: &str) -> Result<String, StsError> {
        let alg = match self.alg {
            SigningAlg::EdDSA => "EdDSA",
            SigningAlg::ES256 => "ES256",
        };
        let header = json!({"alg": alg, "kid": self.kid, "typ": typ});
        let mut out = URL_SAFE_NO_PAD.encode(header.to_string());
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let sig = match &self.pair {
            Pair::Ed(k) => k.sign(out.as_bytes()).as_ref().to_vec(),
            Pair::Ec(k) => k
                .sign(&SystemRandom::new(), out.as_bytes())
                .map_err(|_| StsError("ECDSA signing failed".into()))?
                .as_ref()
                .to_vec(),
        };
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(sig));
        Ok(out)
    }
}

#[derive(Debug)]
struct KeyRing {
    current: Arc<SigningKey>,
    previous: Option<Arc<SigningKey>>,
    /// The current key's rotation counter (the store's `generation`) and creation time.
    generation: i64,
    created_at: i64,
}

/// How often a durable STS re-reads the key ring, so every replica publishes the same JWKS
/// within this delay of a rotation elsewhere.
pub const RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3);

/// The token service: one issuer, a rotating key ring; durable when opened on a [`StateStore`].
#[derive(Debug)]
pub struct Sts {
    issuer: String,
    alg: SigningAlg,
    ring: ArcSwap<KeyRing>,
    /// None: keys live and die with this process ([`Sts::new`], for tests and benches).
    store: Option<StateStore>,
    /// Key ages and token times (the store's clock when there is a store).
    clock: Clock,
}

fn alg_name(a: SigningAlg) -> &'static str {
    match a {
        SigningAlg::EdDSA => "EdDSA",
        SigningAlg::ES256 => "ES256",
    }
}

fn ring_from(keys: &[StoredKey]) -> Result<KeyRing, StsError> {
    let load = |k: &StoredKey| {
        SigningKey::from_pkcs8(&k.pkcs8, &k.kid)
            .map(Arc::new)
            .map_err(|e| StsError(format!("stored signing key {}: {}", k.kid, e.0)))
    };
    let cur = keys
        .first()
        .ok_or_else(|| StsError("no signing key in the state store".into()))?;
    Ok(KeyRing {
        current: load(cur)?,
        previous: keys.get(1).map(load).transpose()?,
        generation: cur.generation,
        created_at: cur.created_at,
    })
}

impl Sts {
    /// An STS whose keys live only in this process (tests, benches, library callers that
    /// bring no store), on `clock`.
    pub fn new(issuer: &str, alg: SigningAlg, clock: Clock) -> Result<Sts, StsError> {
        let current = Arc::new(SigningKey::generate(alg)?);
        Ok(Sts {
            issuer: issuer.trim_end_matches('/').to_owned(),
            alg,
            ring: ArcSwap::from_pointee(KeyRing {
                current,
                previous: None,
                generation: 1,
                created_at: clock.unix_secs(),
            }),
            store: None,
            clock,
        })
    }

    /// An STS whose key ring is the store's: the keys a previous run (or another replica)
    /// made are used; the first start makes generation 1. A stored key of another algorithm
    /// than `alg` is rotated out at once. The STS runs on the store's clock.
    pub async fn open(store: StateStore, issuer: &str, alg: SigningAlg) -> Result<Sts, StsError> {
        let db = |e: crate::state::StateError| StsError(e.to_string());
        let mut keys = store.load_keys().await.map_err(db)?;
        if keys.is_empty() {
            let k = Self::fresh_key(alg, 1, store.now())?;
            // Another replica may have made generation 1 meanwhile: then its key is used.
            store.insert_key(&k).await.map_err(db)?;
            keys = store.load_keys().await.map_err(db)?;
        }
        let sts = Sts {
            issuer: issuer.trim_end_matches('/').to_owned(),
            alg,
            ring: ArcSwap::from_pointee(ring_from(&keys)?),
            clock: store.clock().clone(),
            store: Some(store),
        };
        if keys[0].alg != alg_name(alg) {
            tracing::info!(stored = %keys[0].alg, configured = alg_name(alg), "STS: signing algorithm changed; rotating");
            sts.rotate().await?;
        }
        tracing::info!(kid = %sts.current_kid(), generation = sts.ring.load().generation, "STS key ring loaded");
        Ok(sts)
    }

    fn fresh_key(alg: SigningAlg, generation: i64, now: i64) -> Result<StoredKey, StsError> {
        Ok(StoredKey {
            generation,
            kid: format!("warden-{}", random_hex(8)?),
            alg: alg_name(alg).to_owned(),
            created_at: now,
            pkcs8: SigningKey::generate_pkcs8(alg)?,
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The clock this STS dates keys and tokens by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The state store this STS keeps its keys in (None for [`Sts::new`]).
    pub fn store(&self) -> Option<&StateStore> {
        self.store.as_ref()
    }

    /// Make a new current key; the old one stays published (as previous) so tokens it
    /// signed keep verifying until they expire. With a store, the new key is generation
    /// current + 1: when several replicas rotate at once exactly one insert wins and every
    /// one of them adopts that key.
    pub async fn rotate(&self) -> Result<(), StsError> {
        let old = self.ring.load_full();
        let Some(store) = &self.store else {
            let next = Arc::new(SigningKey::generate(self.alg)?);
            self.ring.store(Arc::new(KeyRing {
                current: next,
                previous: Some(old.current.clone()),
                generation: old.generation + 1,
                created_at: self.clock.unix_secs(),
            }));
            return Ok(());
        };
        let k = Self::fresh_key(self.alg, old.generation + 1, self.clock.unix_secs())?;
        let won = store
            .insert_key(&k)
            .await
            .map_err(|e| StsError(e.to_string()))?;
        if !won {
            tracing::info!(
                generation = k.generation,
                "STS: another replica rotated first; adopting its key"
            );
        }
        self.reload().await?;
        Ok(())
    }

    /// Re-read the key ring from the store (no-op without one); true when it changed.
    pub async fn reload(&self) -> Result<bool, StsError> {
        let Some(store) = &self.store else {
            return Ok(false);
        };
        let keys = store
            .load_keys()
            .await
            .map_err(|e| StsError(e.to_string()))?;
        let cur = self.ring.load();
        let same = keys.first().map(|k| k.kid.as_str()) == Some(cur.current.kid.as_str())
            && keys.get(1).map(|k| k.kid.as_str()) == cur.previous.as_ref().map(|p| p.kid.as_str());
        if same {
            return Ok(false);
        }
        self.ring.store(Arc::new(ring_from(&keys)?));
        Ok(true)
    }

    /// Rotate when the current key is `period` old (by its stored creation time, so the
    /// schedule survives restarts), else pick up what other replicas did. Runs until aborted.
    pub async fn maintain(self: Arc<Self>, period: std::time::Duration) {
        let period = period.max(std::time::Duration::from_secs(60)).as_secs() as i64;
        let mut t = tokio::time::interval(RELOAD_INTERVAL);
        loop {
            t.tick().await;
            if let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "STS: reloading the key ring failed; keeping the current one");
                continue;
            }
            if self.clock.unix_secs() - self.ring.load().created_at >= period {
                match self.rotate().await {
                    Ok(()) => tracing::info!(kid = %self.current_kid(), "STS signing key rotated"),
                    Err(e) => tracing::error!(error = %e, "STS key rotation failed"),
                }
            }
        }
    }

    pub fn current_kid(&self) -> String {
        self.ring.load().current.kid.clone()
    }

    /// The kids published in the JWKS, current first.
    pub fn kids(&self) -> Vec<String> {
        let ring = self.ring.load();
        let mut v = vec![ring.current.kid.clone()];
        if let Some(p) = &ring.previous {
            v.push(p.kid.clone());
        }
        v
    }

    /// The public JWKS: current and previous key.
    pub fn jwks(&self) -> Value {
        let ring = self.ring.load();
        let mut keys = vec![ring.current.public_jwk.clone()];
        if let Some(p) = &ring.previous {
            keys.push(p.public_jwk.clone());
        }
        json!({ "keys": keys })
    }

    /// Sign claims as an RFC 9068 access token with the current key.
    pub fn sign(&self, claims: &Value) -> Result<String, StsError> {
        self.ring.load().current.sign(claims, "at+jwt")
    }

    /// A fresh `jti`.
    pub fn new_jti() -> Result<String, StsError> {
        random_hex(16)
    }
}

/// RFC 7638 JWK thumbprint (SHA-256, base64url) of an OKP or EC public key.
pub fn thumbprint(jwk: &Value) -> String {
    let f = |k: &str| jwk.get(k).and_then(Value::as_str).unwrap_or("");
    // Required members only, lexicographic order, no whitespace.
    let canonical = match f("kty") {
        "OKP" => format!(r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#, f("crv"), f("x")),
        "EC" => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            f("crv"),
            f("x"),
            f("y")
        ),
        _ => String::new(),
    };
    URL_SAFE_NO_PAD.encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref(),
    )
}

/// What shapes one delegation token (RFC 8693 §4.1 `act`, RFC 9068 claims).
#[derive(Debug, Clone)]
pub struct DelegationGrant<'a> {
    pub subject: &'a str,
    /// The inbound token's own `act`, nested inside ours.
    pub subject_act: Option<&'a Value>,
    /// The gateway's client id: `act.sub` and `client_id`.
    pub actor: &'a str,
    pub audience: &'a str,
    pub scopes: &'a [String],
    pub ttl_secs: i64,
    /// Extra user claims worth carrying (email).
    pub email: Option<&'a str>,
}

/// The claims of a delegation token issued at `now` (Unix seconds).
pub fn delegation_claims(issuer: &str, g: &DelegationGrant<'_>, now: i64, jti: &str) -> Value {
    let mut act = json!({ "sub": g.actor });
    if let Some(prior) = g.subject_act {
        act["act"] = prior.clone();
    }
    let mut c = json!({
        "iss": issuer,
        "sub": g.subject,
        "aud": g.audience,
        "scope": g.scopes.join(" "),
        "client_id": g.actor,
        "act": act,
        "jti": jti,
        "iat": now,
        "nbf": now,
        "exp": now + g.ttl_secs,
    });
    if let Some(e) = g.email {
        c["email"] = Value::String(e.to_owned());
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn signs_and_verifies_with_published_keys() {
        for alg in [SigningAlg::EdDSA, SigningAlg::ES256] {
            let sts = Sts::new("http://127.0.0.1:9000/", alg, Clock::new()).unwrap();
            assert_eq!(sts.issuer(), "http://127.0.0.1:9000");
            let prior = json!({"sub": "agent-7"});
            let scopes = vec!["ledger:ListAccounts".to_string()];
            let g = DelegationGrant {
                subject: "john",
                subject_act: Some(&prior),
                actor: "warden",
                audience: "https://ledger/",
                scopes: &scopes,
                ttl_secs: 5,
                email: None,
            };
            let claims = delegation_claims(sts.issuer(), &g, 1_000, "j1");
            assert_eq!(
                claims["act"],
                json!({"sub": "warden", "act": {"sub": "agent-7"}})
            );
            assert_eq!(claims["exp"], 1_005);
            let tok = sts.sign(&claims).unwrap();
            let keys = dataplane::auth::jwks::parse_jwks(
                sts.jwks().to_string().as_bytes(),
                &[
                    jsonwebtoken::Algorithm::EdDSA,
                    jsonwebtoken::Algorithm::ES256,
                ],
            )
            .unwrap();
            let policy = dataplane::auth::jwt::ValidationPolicy {
                issuer: sts.issuer().into(),
                audiences: vec!["https://ledger/".into()],
                leeway_secs: 5,
                max_lifetime_secs: 60,
                token_types: vec!["at+jwt".into()],
            };
            let d = dataplane::auth::jwt::decode(&tok, 16384, &policy.token_types).unwrap();
            let c = dataplane::auth::jwt::verify(&d, &keys, &policy, 1_001).unwrap();
            assert_eq!(c.sub, "john");
            // After rotation the old token still verifies (previous key published), new ones use the new kid.
            let old_kid = sts.current_kid();
            sts.rotate().await.unwrap();
            assert_ne!(sts.current_kid(), old_kid);
            let keys = dataplane::auth::jwks::parse_jwks(
                sts.jwks().to_string().as_bytes(),
                &[
                    jsonwebtoken::Algorithm::EdDSA,
                    jsonwebtoken::Algorithm::ES256,
                ],
            )
            .unwrap();
            assert_eq!(keys.len(), 2);
            assert!(dataplane::auth::jwt::verify(&d, &keys, &policy, 1_001).is_ok());
        }
    }
}
