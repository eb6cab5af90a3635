//! `POST /revoke` (RFC 7009) and `POST /introspect` (RFC 7662, for resource servers that want
//! it), over this server's refresh tokens and its own access tokens.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Inner;
use super::client_auth::{Method, authenticate};
use super::pages::{param, parse_form};
use super::store::sha256_hex;
use super::token::{OAuthError, ok_json};
use dataplane::auth::jwt::Claims;

/// Verify one of our own access tokens (signature, issuer, audience ∈ resources, `at+jwt`,
/// unexpired). Revocation is not judged here.
pub fn own_access_token(inner: &Inner, token: &str) -> Option<Claims> {
    let keys = dataplane::auth::jwks::parse_jwks(
        inner.sts.jwks().to_string().as_bytes(),
        &[
            jsonwebtoken::Algorithm::EdDSA,
            jsonwebtoken::Algorithm::ES256,
        ],
    )
    .ok()?;
    let policy = dataplane::auth::jwt::ValidationPolicy {
        issuer: inner.cfg.issuer.clone(),
        audiences: inner.cfg.resources.clone(),
        leeway_secs: 0,
        max_lifetime_secs: inner.cfg.access_token_ttl.as_secs() as i64 + 60,
        token_types: vec!["at+jwt".into()],
    };
    dataplane::auth::jwt::decode(token, 16 * 1024, &policy.token_types)
        .and_then(|d| dataplane::auth::jwt::verify(&d, &keys, &policy, inner.store.now()))
        .ok()
}

fn form(body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    parse_form(body).map_err(|e| OAuthError::invalid_request(e.to_string()))
}

/// `POST /revoke`: the client's own refresh token (its whole family) or access token.
/// Unknown or invalid tokens get 200 too (RFC 7009 §2.2).
pub async fn revoke(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    match handle_revoke(&inner, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle_revoke(
    inner: &Inner,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, OAuthError> {
    let f = form(body)?;
    let a = authenticate(inner, headers, &f).await?;
    let token =
        param(&f, "token").ok_or_else(|| OAuthError::invalid_request("token is missing"))?;
    let db = &inner.store.db;
    if let Ok(Some(row)) = db.get_refresh(&sha256_hex(token)).await {
        let client = serde_json::from_str::<Value>(&row.value)
            .ok()
            .and_then(|v| v["client_id"].as_str().map(str::to_owned));
        if client.as_deref() != Some(a.client.id.as_str()) {
            return Err(OAuthError::unauthorized_client(
                "the token was issued to another client",
            ));
        }
        inner.store.revoke_family(&row.family, row.expires_at).await;
        tracing::info!(client = %a.client.id, "Authorization server: refresh token revoked (family)");
    } else if let Some(c) = own_access_token(inner, token) {
        if c.client_id.as_deref() != Some(a.client.id.as_str()) {
            return Err(OAuthError::unauthorized_client(
                "the token was issued to another client",
            ));
        }
        if let Some(jti) = &c.jti {
            inner
                .store
                .revoke_jti(jti, c.exp)
                .await
                .map_err(OAuthError::server)?;
            tracing::info!(client = %a.client.id, "Authorization server: access token revoked");
        }
    }
    Ok(ok_json(json!({})))
}

/// `POST /introspect`: confidential clients only. `{"active": false}` for anything not live.
pub async fn introspect(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle_introspect(&inner, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle_introspect(
    inner: &Inner,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, OAuthError> {
    let f = form(body)?;
    let a = authenticate(inner, headers, &f).await?;
    if a.client.public || a.method == Method::None {
        let mut e = OAuthError::invalid_client("introspection requires client authentication");
        e.status = StatusCode::UNAUTHORIZED;
        return Err(e);
    }
    let token =
        param(&f, "token").ok_or_else(|| OAuthError::invalid_request("token is missing"))?;
    let inactive = || Ok(ok_json(json!({"active": false})));
    if let Some(c) = own_access_token(inner, token) {
        if c.jti.is_none()
            || inner
                .store
                .jti_revoked(c.jti.as_deref().unwrap_or(""))
                .await
        {
            return inactive();
        }
        return Ok(ok_json(json!({
            "active": true,
            "token_type": "Bearer",
            "iss": c.iss,
            "sub": c.sub,
            "aud": c.aud,
            "client_id": c.client_id,
            "scope": c.scopes.join(" "),
            "exp": c.exp,
            "iat": c.iat,
        })));
    }
    let db = &inner.store.db;
    if let Ok(Some(row)) = db.get_refresh(&sha256_hex(token)).await
        && !row.used
        && !row.family_revoked
        && row.expires_at > inner.store.now()
    {
        let g: Value = serde_json::from_str(&row.value).unwrap_or(Value::Null);
        return Ok(ok_json(json!({
            "active": true,
            "token_type": "refresh_token",
            "iss": inner.cfg.issuer,
            "sub": g["username"],
            "client_id": g["client_id"],
            "scope": g["scopes"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ")),
            "exp": row.expires_at,
        })));
    }
    inactive()
}
