//! Step 3 of the request path: authentication. The token from the one `Authorization`
//! header (`Bearer`, or `DPoP` with its proof), validated against the per-shard cache; an
//! unknown `kid` triggers one shared JWKS refetch through the control plane. A DPoP-bound
//! token (`cnf.jkt`) passes only with a valid proof of its key, never used before on any
//! shard or replica (RFC 9449 §7; `docs/security.md`, "DPoP").

use std::sync::Arc;
use std::time::Duration;

use super::http::{self, Scheme};
use super::refusal::{Blame, Refusal};
use super::vocab::Caller;
use crate::auth::AuthOutcome;
use crate::auth::dpop::{self, DpopMode, ProofError};
use crate::auth::jwt::{Claims, TokenError};
use crate::auth::replay::ReplayError;
use crate::control::ProofUse;
use crate::http1::conn::Request;
use crate::session::owner_of;
use crate::shard::Shard;
use crate::snapshot::Snapshot;

/// The caller, or why the request is refused (counted in `warden_auth_failures_total`).
pub(super) async fn authenticate(
    shard: &Shard,
    snap: &Arc<Snapshot>,
    req: &Request,
) -> Result<Caller, Refusal> {
    let st = &snap.settings;
    if !st.auth_enabled {
        return Ok(Caller {
            claims: None,
            owner: owner_of("", "anonymous"),
            token: None,
            next_nonce: None,
        });
    }
    let failed = |label: &'static str, r: Refusal| {
        metrics::counter!("warden_auth_failures_total", "reason" => label).increment(1);
        Err(r)
    };
    if req
        .head
        .query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("access_token=")))
    {
        return failed("query_token", Refusal::token_in_query());
    }
    let credentials = match req.head.count("authorization") {
        0 => return failed("missing", Refusal::token_missing()),
        1 => req
            .head
            .get_str("authorization")
            .and_then(http::credentials),
        _ => return failed("duplicate_header", Refusal::repeated_authorization()),
    };
    let Some((scheme, token)) = credentials else {
        return failed(
            "not_bearer",
            Refusal::token_invalid("not_bearer", Blame::Agent),
        );
    };
    let now = shard.clock.unix_secs();
    let (mut outcome, hit) =
        shard
            .cache
            .borrow_mut()
            .authenticate(token, &snap.issuers, st.max_token_bytes, now);
    shard.meters.token_cache_lookup(hit);
    let mut keys_fetched = true;
    if let AuthOutcome::UnknownKid { issuer } = outcome {
        // Ask the control plane (debounced and rate-limited there), then try once more
        // against whatever snapshot is current.
        keys_fetched = shard
            .shared
            .control
            .refresh_jwks(issuer, Duration::from_secs(3))
            .await;
        let fresh = shard.shared.snapshot.load_full();
        outcome = shard
            .cache
            .borrow_mut()
            .authenticate(token, &fresh.issuers, st.max_token_bytes, now)
            .0;
    }
    match outcome {
        AuthOutcome::Valid(claims) => {
            let next_nonce = match sender_constraint(shard, snap, req, scheme, token, &claims).await
            {
                Ok(n) => n,
                Err((label, r)) => {
                    tracing::debug!(reason = label, "DPoP binding refused");
                    return failed(label, r);
                }
            };
            Ok(Caller {
                owner: claims.owner,
                claims: Some(claims),
                token: Some(Arc::<str>::from(token).into()),
                next_nonce,
            })
        }
        AuthOutcome::Invalid(e) => {
            tracing::debug!(reason = e.label(), "Bearer token refused");
            failed(e.label(), Refusal::token_invalid(e.label(), Blame::Agent))
        }
        // Still unknown after the refetch: a foreign or forged key — unless the refetch did
        // not finish within the wait (a failed refetch that answers in time still says
        // "agent": the control plane reports completion, not success).
        AuthOutcome::UnknownKid { .. } => {
            let label = TokenError::UnknownKey.label();
            let blame = if keys_fetched {
                Blame::Agent
            } else {
                Blame::IdentityProvider
            };
            failed(label, Refusal::token_invalid(label, blame))
        }
    }
}

type Refused = (&'static str, Refusal);

fn proof_refused(e: ProofError) -> Refused {
    (e.label(), Refusal::dpop_invalid(e.label(), e.to_string()))
}

fn binding_refused(label: &'static str) -> Refused {
    (label, Refusal::token_invalid(label, Blame::Agent))
}

/// RFC 9449 §7 for a valid token: how it was presented, its proof (§4.3), the server nonce
/// (§9) and replay (§11.1) — the process-wide set first, then, with replicas, the shared
/// store. Returns a fresh nonce to send along when the client's is getting old.
async fn sender_constraint(
    shard: &Shard,
    snap: &Arc<Snapshot>,
    req: &Request,
    scheme: Scheme,
    token: &str,
    claims: &Claims,
) -> Result<Option<String>, Refused> {
    let st = &snap.settings;
    let Some(issuer) = snap.issuers.iter().find(|i| i.policy.issuer == claims.iss) else {
        return Err(binding_refused(TokenError::BadIssuer.label()));
    };
    let dp = &issuer.dpop;
    let Some(jkt) = claims.cnf_jkt.as_deref() else {
        return match (scheme, dp.mode) {
            // The DPoP scheme promises a bound token (RFC 9449 §7.1).
            (Scheme::Dpop, _) => Err(binding_refused("dpop_unbound_token")),
            (Scheme::Bearer, DpopMode::Required) => Err(binding_refused("dpop_required")),
            (Scheme::Bearer, _) => Ok(None),
        };
    };
    if dp.mode == DpopMode::Off {
        return Err(binding_refused("dpop_off"));
    }
    // A bound token as a bearer token would be a stolen token that works (RFC 9449 §7.2).
    if scheme == Scheme::Bearer {
        return Err(binding_refused("dpop_bound_token_as_bearer"));
    }
    let proof = match req.head.count("dpop") {
        0 => return Err(proof_refused(ProofError::Missing)),
        1 => req.head.get_str("dpop").unwrap_or(""),
        _ => return Err(proof_refused(ProofError::Repeated)),
    };
    // The request's URI: the public URL, or the one its (already admitted) Host names.
    let mut uris = vec![st.public_htu.clone()];
    if let Some(u) = req
        .head
        .get_str("host")
        .and_then(|h| dpop::normalize_htu(&format!("{}://{h}{}", st.public_scheme, st.mcp_path)))
        && u != uris[0]
    {
        uris.push(u);
    }
    let now = shard.clock.unix_secs();
    let p = dpop::verify(
        proof,
        dp,
        &dpop::Request {
            method: http::method_label(req.head.method),
            uris: &uris,
            access_token: Some(token),
            now,
        },
    )
    .map_err(proof_refused)?;
    dpop::check_binding(&p, jkt).map_err(proof_refused)?;
    let mut next_nonce = None;
    if dp.require_nonce {
        let keys = &st.session_keys;
        // A nonce from any replica's ring, issued at most its lifetime ago (a few seconds of
        // clock difference between replicas tolerated).
        let age = p
            .nonce
            .as_deref()
            .and_then(|n| keys.open_nonce(n))
            .map(|issued| now - issued)
            .filter(|age| (-5..=dp.nonce_lifetime_secs).contains(age));
        let Some(age) = age else {
            metrics::counter!("warden_dpop_nonces_issued_total").increment(1);
            return match keys.seal_nonce(now) {
                Ok(n) => Err((ProofError::Nonce.label(), Refusal::dpop_nonce(n))),
                Err(_) => Err((
                    "dpop_unavailable",
                    Refusal::dpop_unavailable("no DPoP nonce could be sealed"),
                )),
            };
        };
        if age > dp.nonce_lifetime_secs / 2 {
            next_nonce = keys.seal_nonce(now).ok();
        }
    }
    match shard
        .shared
        .dpop_replay
        .first_use(p.replay_key, p.replay_until, now)
    {
        Ok(()) => {}
        Err(ReplayError::Replayed) => return Err(proof_refused(ProofError::Replayed)),
        Err(ReplayError::Full) => {
            return Err((
                "dpop_unavailable",
                Refusal::dpop_unavailable("DPoP replay set full"),
            ));
        }
    }
    if shard.shared.dpop_shared_replay {
        match shard
            .shared
            .control
            .dpop_proof(p.replay_key, p.replay_until, Duration::from_secs(2))
            .await
        {
            ProofUse::First => {}
            ProofUse::Replayed => return Err(proof_refused(ProofError::Replayed)),
            ProofUse::Unavailable => {
                return Err((
                    "dpop_unavailable",
                    Refusal::dpop_unavailable(
                        "DPoP proofs could not be checked at the state store",
                    ),
                ));
            }
        }
    }
    Ok(next_nonce)
}
