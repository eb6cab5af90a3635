//! RFC 8693 token exchange: a user access token from this server in, a short delegation token out.

use std::collections::HashMap;

use axum::response::Response;
use serde_json::json;

use super::Inner;
use super::client_auth::{Authed, Method};
use super::pages::param;
use super::token::{OAuthError, client_audience, client_scopes, ok_json};
use crate::sts::{DelegationGrant, Sts, delegation_claims};

pub const TT_ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const TT_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

pub async fn exchange(
    inner: &Inner,
    a: &Authed,
    f: &HashMap<String, String>,
) -> Result<Response, OAuthError> {
    if a.client.public || a.method == Method::None {
        return Err(OAuthError::invalid_client(
            "token exchange requires client authentication",
        ));
    }
    let subject = param(f, "subject_token")
        .ok_or_else(|| OAuthError::invalid_request("subject_token is missing"))?;
    match param(f, "subject_token_type") {
        Some(TT_ACCESS | TT_JWT) => {}
        Some(_) => {
            return Err(OAuthError::invalid_request(
                "subject_token_type not supported",
            ));
        }
        None => {
            return Err(OAuthError::invalid_request("subject_token_type is missing"));
        }
    }
    if param(f, "actor_token").is_some() {
        return Err(OAuthError::invalid_request(
            "actor_token is not supported; the authenticated client is the actor",
        ));
    }
    if let Some(t) = param(f, "requested_token_type")
        && t != TT_ACCESS
    {
        return Err(OAuthError::invalid_request(
            "requested_token_type must be urn:ietf:params:oauth:token-type:access_token",
        ));
    }
    let aud = client_audience(&a.client, f, true)?;
    let scopes = client_scopes(&a.client, param(f, "scope"), false)?;

    // The subject token: one of our own user access tokens, unexpired.
    let keys = dataplane::auth::jwks::parse_jwks(
        inner.sts.jwks().to_string().as_bytes(),
        &[
            jsonwebtoken::Algorithm::EdDSA,
            jsonwebtoken::Algorithm::ES256,
        ],
    )
    .map_err(|e| OAuthError::server(format!("own JWKS: {e}")))?;
    let policy = dataplane::auth::jwt::ValidationPolicy {
        issuer: inner.cfg.issuer.clone(),
        audiences: inner.cfg.resources.clone(),
        leeway_secs: 0,
        max_lifetime_secs: inner.cfg.access_token_ttl.as_secs() as i64 + 60,
        token_types: vec!["at+jwt".into()],
    };
    let now = inner.store.now();
    let claims = dataplane::auth::jwt::decode(subject, 16 * 1024, &policy.token_types)
        .and_then(|d| dataplane::auth::jwt::verify(&d, &keys, &policy, now))
        .map_err(|e| OAuthError::invalid_grant(format!("subject_token rejected: {e}")))?;

    // A revoked access token (RFC 7009, or issued from a replayed code) exchanges for nothing.
    if inner
        .store
        .jti_revoked(claims.jti.as_deref().unwrap_or_default())
        .await
    {
        return Err(OAuthError::invalid_grant("subject_token has been revoked"));
    }
    let ttl = a.client.exchange_ttl.as_secs().max(1) as i64;
    let jti = Sts::new_jti().map_err(|e| OAuthError::server(e.to_string()))?;
    let grant = DelegationGrant {
        subject: &claims.sub,
        subject_act: claims.act.as_ref(),
        actor: &a.client.id,
        audience: &aud,
        scopes: &scopes,
        ttl_secs: ttl,
        email: claims.email.as_deref(),
    };
    let c = delegation_claims(&inner.cfg.issuer, &grant, now, &jti);
    let token = inner
        .sts
        .sign(&c)
        .map_err(|e| OAuthError::server(e.to_string()))?;
    Ok(ok_json(json!({
        "access_token": token,
        "issued_token_type": TT_ACCESS,
        "token_type": "Bearer",
        "expires_in": ttl,
        "scope": scopes.join(" "),
    })))
}
