//! Step 9 of the request path: delegation. For each allowed call on an upstream that takes
//! delegation tokens, an RFC 8693 token for that one user, upstream and tool (cached per
//! shard until shortly before it expires); the gateway's own service token for sessions
//! and non-tool methods; the static credential otherwise.

use std::time::Duration;

use super::record::Audit;
use super::refusal::Refusal;
use super::vocab::{Caller, Cx, Outbound};
use crate::audit::DelegationRecord;
use crate::control::{DelegationError, Subject};
use crate::delegation::{Key, Source};
use crate::secret::Secret;
use crate::shard::Shard;
use crate::snapshot::{Upstream, UpstreamCredential};
use crate::upstream::UpError;

/// The credential of one call, on the record; `Err` = no token, nothing is sent.
pub(super) async fn for_call(
    cx: &Cx<'_>,
    up: &Upstream,
    tool: Option<&str>,
    rec: &mut Option<Audit>,
) -> Result<Outbound, Refusal> {
    if let (Some(a), Some(_), Some(g)) = (
        rec.as_mut(),
        up.delegation.as_ref(),
        cx.snap.settings.delegation_client_id.as_deref(),
    ) {
        a.acting(g);
    }
    match call_auth(cx.shard, up, tool, cx.caller).await {
        Ok(auth) => {
            let exp = auth.as_ref().map(|(_, d)| d.exp);
            let mut out = cx.meta.outbound(auth.map(|(h, d)| {
                if let Some(a) = rec.as_mut() {
                    a.delegation(d);
                }
                h
            }));
            out.auth_exp = exp;
            Ok(out)
        }
        Err(e) => {
            metrics::counter!("warden_delegation_failures_total", "upstream" => up.name.clone())
                .increment(1);
            Err(Refusal::delegation_failed(&up.name, &e))
        }
    }
}

fn credential_header(up: &Upstream) -> Option<Secret<String>> {
    match &up.credential {
        UpstreamCredential::None => None,
        UpstreamCredential::Bearer(t) => Some(Secret::new(format!("Bearer {}", t.expose()))),
    }
}

/// How long a shard waits for the control plane to produce a token.
const DELEGATION_WAIT: Duration = Duration::from_secs(10);

/// The gateway's own credential for sessions and non-tool methods: a service token
/// (sub = the gateway) when the upstream takes delegation tokens, else the static one.
pub(super) async fn session_auth(
    shard: &Shard,
    up: &Upstream,
) -> Result<Option<Secret<String>>, UpError> {
    let Some(d) = &up.delegation else {
        return Ok(credential_header(up));
    };
    let key = Key {
        issuer: String::new(),
        subject: String::new(),
        client: String::new(),
        act: String::new(),
        upstream: up.id,
        tool: String::new(),
        scopes: Vec::new(),
    };
    let got = shard
        .delegations
        .obtain(
            &shard.shared.control,
            key,
            Subject::Gateway,
            &d.audience,
            SERVICE_TOKEN_TTL,
            DELEGATION_WAIT,
        )
        .await;
    match got {
        Ok((t, _)) => Ok(Some(Secret::new(format!("Bearer {}", t.token.expose())))),
        Err(e) => {
            tracing::warn!(upstream = %up.name, error = %e, "No service token for the upstream");
            Err(UpError::Credential)
        }
    }
}

/// Lifetime of the gateway's own service tokens, in seconds.
const SERVICE_TOKEN_TTL: i64 = 60;

/// The `Authorization` value for one call: a delegation token minted for this user, this
/// upstream and this tool when the upstream takes delegation; `None` = the session credential.
async fn call_auth(
    shard: &Shard,
    up: &Upstream,
    tool: Option<&str>,
    caller: &Caller,
) -> Result<Option<(Secret<String>, DelegationRecord)>, DelegationError> {
    let Some(d) = &up.delegation else {
        return Ok(None);
    };
    let Some(tool) = tool else {
        return Ok(None);
    };
    let Some(td) = d.tools.get(tool) else {
        // Fail closed: a tool without delegation settings is never called.
        return Err(DelegationError::Refused(format!(
            "no delegation is configured for tool '{tool}'"
        )));
    };
    let Some(claims) = &caller.claims else {
        return Err(DelegationError::Refused(
            "delegation needs an authenticated user".into(),
        ));
    };
    let key = Key {
        issuer: claims.iss.clone(),
        subject: claims.sub.clone(),
        client: claims.client_id.clone().unwrap_or_default(),
        act: claims
            .act
            .as_ref()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        upstream: up.id,
        tool: tool.to_owned(),
        scopes: td.scopes.clone(),
    };
    let subject = Subject::User {
        sub: claims.sub.clone(),
        email: claims.email.clone(),
        act: claims.act.clone(),
        subject_token: caller.token.clone(),
    };
    let (t, source) = shard
        .delegations
        .obtain(
            &shard.shared.control,
            key,
            subject,
            &d.audience,
            td.ttl_secs,
            DELEGATION_WAIT,
        )
        .await?;
    let label = if source == Source::Cache {
        "cache"
    } else {
        "fresh"
    };
    shard.meters.delegation_token(label);
    let rec = DelegationRecord {
        jti: t.jti.clone(),
        aud: d.audience.clone(),
        scope: t.scope.clone(),
        exp: t.exp,
        cached: source == Source::Cache,
    };
    Ok(Some((
        Secret::new(format!("Bearer {}", t.token.expose())),
        rec,
    )))
}
