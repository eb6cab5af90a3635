//! Token authentication: the per-shard verified-token cache in front of strict JWT validation.

pub mod dpop;
pub mod jwks;
pub mod jwt;
pub mod replay;

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use jwt::{Claims, TokenError, ValidationPolicy};

/// One trusted issuer as the shards see it: rules plus the current keys.
#[derive(Debug)]
pub struct IssuerState {
    pub policy: ValidationPolicy,
    /// How this issuer's tokens relate to DPoP proofs.
    pub dpop: dpop::DpopPolicy,
    pub keys: Arc<jwks::KeySet>,
    /// Bumped on every key change; cached verifications from older keys are re-checked.
    pub keys_generation: u64,
    /// False until a JWKS was loaded, or once the keys are older than the allowed staleness.
    pub usable: bool,
}

/// What authentication concluded.
#[derive(Debug)]
pub enum AuthOutcome {
    Valid(Rc<Claims>),
    Invalid(TokenError),
    /// The token names a `kid` its issuer does not (yet) publish: worth one shared refetch.
    UnknownKid {
        issuer: usize,
    },
}

#[derive(Debug)]
struct Entry {
    claims: Rc<Claims>,
    issuer: usize,
    keys_generation: u64,
}

/// Per-shard cache of verified tokens, keyed by SHA-256 of the token, expiring with the token.
#[derive(Debug)]
pub struct TokenCache {
    map: HashMap<[u8; 32], Entry>,
    capacity: usize,
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        TokenCache {
            map: HashMap::with_capacity(capacity.min(4096)),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn key(token: &str) -> [u8; 32] {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let mut k = [0u8; 32];
        k.copy_from_slice(d.as_ref());
        k
    }

    /// Authenticate `token` at `now` (Unix seconds) against `issuers`.
    pub fn authenticate(
        &mut self,
        token: &str,
        issuers: &[Arc<IssuerState>],
        max_token_bytes: usize,
        now: i64,
    ) -> (AuthOutcome, bool) {
        if token.len() > max_token_bytes {
            return (AuthOutcome::Invalid(TokenError::TooLong), false);
        }
        let key = Self::key(token);
        if let Some(e) = self.map.get(&key) {
            let fresh = issuers.get(e.issuer).is_some_and(|i| {
                i.usable
                    && i.keys_generation == e.keys_generation
                    && i.policy.issuer == e.claims.iss
            });
            // Strictly before exp: a cached entry never outlives its token, even within leeway.
            if fresh && now < e.claims.exp {
                return (AuthOutcome::Valid(e.claims.clone()), true);
            }
            self.map.remove(&key);
        }
        let (outcome, issuer) = verify_uncached(token, issuers, max_token_bytes, now);
        if let (AuthOutcome::Valid(c), Some(idx)) = (&outcome, issuer) {
            if self.map.len() >= self.capacity {
                // Drop expired entries first; if still full, start over (cheap, rare, bounded).
                self.map.retain(|_, e| e.claims.exp > now);
                if self.map.len() >= self.capacity {
                    self.map.clear();
                }
            }
            self.map.insert(
                key,
                Entry {
                    claims: c.clone(),
                    issuer: idx,
                    keys_generation: issuers[idx].keys_generation,
                },
            );
        }
        (outcome, false)
    }
}

/// Full validation without the cache; also says which issuer the token claimed.
pub fn verify_uncached(
    token: &str,
    issuers: &[Arc<IssuerState>],
    max_token_bytes: usize,
    now: i64,
) -> (AuthOutcome, Option<usize>) {
    let outcome = verify_inner(token, issuers, max_token_bytes, now);
    let idx = match &outcome {
        (AuthOutcome::Valid(_), i) => *i,
        _ => None,
    };
    (outcome.0, idx)
}

fn verify_inner(
    token: &str,
    issuers: &[Arc<IssuerState>],
    max_token_bytes: usize,
    now: i64,
) -> (AuthOutcome, Option<usize>) {
    // All issuers share the accepted token types in practice; use the union for the header check,
    // then the chosen issuer's policy for the claims.
    let types: Vec<String> = issuers
        .iter()
        .flat_map(|i| i.policy.token_types.iter().cloned())
        .collect();
    let decoded = match jwt::decode(token, max_token_bytes, &types) {
        Ok(d) => d,
        Err(e) => return (AuthOutcome::Invalid(e), None),
    };
    let Some(idx) = decoded
        .issuer_hint
        .as_deref()
        .and_then(|h| issuers.iter().position(|i| i.policy.issuer == h))
    else {
        return (AuthOutcome::Invalid(TokenError::BadIssuer), None);
    };
    let issuer = &issuers[idx];
    if !issuer.usable {
        return (AuthOutcome::Invalid(TokenError::UnknownKey), Some(idx));
    }
    if !issuer.policy.token_types.is_empty() {
        // Re-check typ against this issuer's own list.
        if jwt::decode(token, max_token_bytes, &issuer.policy.token_types).is_err() {
            return (AuthOutcome::Invalid(TokenError::BadType), Some(idx));
        }
    }
    let outcome = match jwt::verify(&decoded, &issuer.keys, &issuer.policy, now) {
        Ok(c) => AuthOutcome::Valid(Rc::new(c)),
        Err(TokenError::UnknownKey) => AuthOutcome::UnknownKid { issuer: idx },
        Err(e) => AuthOutcome::Invalid(e),
    };
    (outcome, Some(idx))
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
