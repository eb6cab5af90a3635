//! Step 3 of the request path: authentication. A bearer token from the one `Authorization`
//! header, validated against the per-shard cache; an unknown `kid` triggers one shared
//! JWKS refetch through the control plane.

use std::sync::Arc;
use std::time::Duration;

use super::http;
use super::refusal::{Blame, Refusal};
use super::vocab::Caller;
use crate::auth::AuthOutcome;
use crate::auth::jwt::TokenError;
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
    let token = match req.head.count("authorization") {
        0 => return failed("missing", Refusal::token_missing()),
        1 => req.head.get_str("authorization").and_then(http::bearer),
        _ => return failed("duplicate_header", Refusal::repeated_authorization()),
    };
    let Some(token) = token else {
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
    let lookup = if hit { "hit" } else { "miss" };
    metrics::counter!("warden_token_cache_lookups_total", "result" => lookup).increment(1);
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
        AuthOutcome::Valid(claims) => Ok(Caller {
            owner: owner_of(&claims.iss, &claims.sub),
            claims: Some(claims),
            token: Some(Arc::<str>::from(token).into()),
        }),
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
