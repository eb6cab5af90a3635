//! Turn a JWKS document into verification keys, each pinned to exactly one algorithm.
//!
//! Refused at load (and reported, never used): symmetric `oct` keys, RSA keys under
//! 2048 bits, keys whose `use` is not `sig`, keys of unsupported types or curves,
//! keys whose `alg` is not allowed for the issuer, and duplicate `kid`s.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// One usable verification key.
#[derive(Clone)]
pub struct VerifyKey {
    pub alg: Algorithm,
    pub key: DecodingKey,
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyKey")
            .field("alg", &self.alg)
            .field("key", &"...")
            .finish()
    }
}

/// The usable keys of one issuer, by `kid`.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub by_kid: HashMap<String, VerifyKey>,
    /// A key published without `kid`; used only for tokens without `kid`, and only when it is the sole key.
    pub anonymous: Option<VerifyKey>,
    /// Keys that were refused, with the reason, for logs and metrics.
    pub refused: Vec<(String, &'static str)>,
}

impl KeySet {
    pub fn len(&self) -> usize {
        self.by_kid.len() + usize::from(self.anonymous.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Find the key for a token header's `kid`.
    pub fn find(&self, kid: Option<&str>) -> Option<&VerifyKey> {
        match kid {
            Some(k) => self.by_kid.get(k),
            None if self.by_kid.is_empty() => self.anonymous.as_ref(),
            None => None,
        }
    }
}

/// Why a JWKS document as a whole could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("JWKS is not a JSON object with a \"keys\" array")]
    NotAKeySet,
    #[error("JWKS contains no usable key")]
    NoUsableKey,
}

/// Parse an algorithm name exactly as written (case-sensitive; `none` and HMAC are never accepted).
pub fn parse_alg(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Build a key set from JWKS bytes, keeping only keys whose algorithm is in `allowed`.
pub fn parse_jwks(bytes: &[u8], allowed: &[Algorithm]) -> Result<KeySet, JwksError> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|_| JwksError::NotAKeySet)?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(JwksError::NotAKeySet)?;
    let mut set = KeySet::default();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for jwk in keys {
        let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned);
        let label = kid.clone().unwrap_or_else(|| "<no kid>".into());
        match parse_key(jwk, allowed) {
            Ok(k) => match kid {
                Some(kid) => {
                    *seen.entry(kid.clone()).or_default() += 1;
                    set.by_kid.insert(kid, k);
                }
                None if set.anonymous.is_none() => set.anonymous = Some(k),
                None => set.refused.push((label, "more than one key without kid")),
            },
            Err(reason) => set.refused.push((label, reason)),
        }
    }
    // A kid published twice is ambiguous: use neither.
    for (kid, n) in seen {
        if n > 1 {
            set.by_kid.remove(&kid);
            set.refused.push((kid, "duplicate kid"));
        }
    }
    if set.is_empty() {
        return Err(JwksError::NoUsableKey);
    }
    Ok(set)
}

fn str_field<'a>(jwk: &'a Value, name: &str) -> Result<&'a str, &'static str> {
    jwk.get(name)
        .and_then(Value::as_str)
        .ok_or("missing or non-string key parameter")
}

fn parse_key(jwk: &Value, allowed: &[Algorithm]) -> Result<VerifyKey, &'static str> {
    if let Some(u) = jwk.get("use")
        && u.as_str() != Some("sig")
    {
        return Err("key use is not \"sig\"");
    }
    let kty = str_field(jwk, "kty")?;
    let declared = match jwk.get("alg") {
        None => None,
        Some(v) => Some(parse_alg(v.as_str().ok_or("non-string alg")?).ok_or("unsupported alg")?),
    };
    let (alg, key) = match kty {
        "oct" => return Err("symmetric (oct) keys are refused"),
        "RSA" => {
            let n = str_field(jwk, "n")?;
            let e = str_field(jwk, "e")?;
            let n_bytes = URL_SAFE_NO_PAD
                .decode(n)
                .map_err(|_| "bad RSA modulus encoding")?;
            let bits = significant_bits(&n_bytes);
            if bits < 2048 {
                return Err("RSA key shorter than 2048 bits");
            }
            let alg = declared.unwrap_or(Algorithm::RS256);
            if !matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ) {
                return Err("alg does not match an RSA key");
            }
            (
                alg,
                DecodingKey::from_rsa_components(n, e).map_err(|_| "bad RSA key")?,
            )
        }
        "EC" => {
            let alg = match (str_field(jwk, "crv")?, declared) {
                ("P-256", None | Some(Algorithm::ES256)) => Algorithm::ES256,
                ("P-384", None | Some(Algorithm::ES384)) => Algorithm::ES384,
                _ => return Err("unsupported curve or alg mismatch"),
            };
            let key = DecodingKey::from_ec_components(str_field(jwk, "x")?, str_field(jwk, "y")?)
                .map_err(|_| "bad EC key")?;
            (alg, key)
        }
        "OKP" => {
            if str_field(jwk, "crv")? != "Ed25519"
                || !matches!(declared, None | Some(Algorithm::EdDSA))
            {
                return Err("unsupported curve or alg mismatch");
            }
            let x = str_field(jwk, "x")?;
            if URL_SAFE_NO_PAD.decode(x).map(|b| b.len()) != Ok(32) {
                return Err("bad Ed25519 key");
            }
            (
                Algorithm::EdDSA,
                DecodingKey::from_ed_components(x).map_err(|_| "bad Ed25519 key")?,
            )
        }
        _ => return Err("unsupported key type"),
    };
    if !allowed.contains(&alg) {
        return Err("algorithm not allowed for this issuer");
    }
    Ok(VerifyKey { alg, key })
}

fn significant_bits(be: &[u8]) -> usize {
    match be.iter().position(|b| *b != 0) {
        None => 0,
        Some(i) => (be.len() - i) * 8 - be[i].leading_zeros() as usize,
    }
}
