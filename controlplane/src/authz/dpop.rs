//! DPoP proofs at `/token` (RFC 9449 §5, §8): the same checks as the gateway's, with the
//! token endpoint's URI, no access token, nonces and replays kept in the state store the
//! replicas share.

use axum::http::HeaderMap;
use dataplane::auth::dpop::{self, DpopMode, DpopPolicy, ProofError};
use dataplane::auth::jwks::parse_alg;

use super::Inner;
use super::token::OAuthError;

/// How long a `/token` nonce is accepted.
const NONCE_TTL: i64 = 300;

/// The request's DPoP proof, checked: the thumbprint of its key, or `None` without a proof.
pub(super) async fn token_proof(
    inner: &Inner,
    headers: &HeaderMap,
) -> Result<Option<String>, OAuthError> {
    let mut values = headers.get_all("dpop").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(refused(ProofError::Repeated));
    }
    let proof = value.to_str().map_err(|_| refused(ProofError::Malformed))?;
    let policy = DpopPolicy {
        mode: DpopMode::Optional,
        algorithms: inner
            .cfg
            .dpop_algorithms
            .iter()
            .filter_map(|a| parse_alg(a))
            .collect(),
        iat_window_secs: 300,
        require_nonce: inner.cfg.dpop_nonce,
        nonce_lifetime_secs: NONCE_TTL,
    };
    let uris = [dpop::normalize_htu(&inner.token_endpoint()).unwrap_or_default()];
    let now = inner.store.now();
    let p = dpop::verify(
        proof,
        &policy,
        &dpop::Request {
            method: "POST",
            uris: &uris,
            access_token: None,
            now,
        },
    )
    .map_err(refused)?;
    if inner.cfg.dpop_nonce {
        let live = match p.nonce.as_deref() {
            Some(n) => inner.store.dpop_nonce_live(n).await,
            None => false,
        };
        if !live {
            let nonce = inner
                .store
                .new_dpop_nonce(NONCE_TTL)
                .await
                .map_err(OAuthError::server)?;
            let mut e = OAuthError::new(
                "use_dpop_nonce",
                "Authorization server requires nonce in DPoP proof",
            );
            e.dpop_nonce = Some(nonce);
            return Err(e);
        }
    }
    if !inner.store.first_proof(&p.replay_key, p.replay_until).await {
        return Err(refused(ProofError::Replayed));
    }
    Ok(Some(p.jkt))
}

fn refused(e: ProofError) -> OAuthError {
    OAuthError::invalid_dpop_proof(e.to_string())
}
