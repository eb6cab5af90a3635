//! Enterprise-managed authorization (MCP extension
//! `io.modelcontextprotocol/enterprise-managed-authorization`): the RFC 7523 jwt-bearer grant
//! with an Identity Assertion JWT Authorization Grant (ID-JAG, `typ: oauth-id-jag+jwt`) issued
//! by a trusted enterprise IdP (a connector with `accept_id_jag`), so an enterprise can grant
//! an agent access without a browser sign-in.

use std::collections::HashMap;

use axum::response::Response;
use serde_json::Value;

use super::Inner;
use super::client_auth::{Authed, Method};
use super::federate::FedUser;
use super::pages::param;
use super::token::OAuthError;

/// The ID-JAG's `typ` (draft-ietf-oauth-identity-assertion-authz-grant §3).
pub const TYP: &str = "oauth-id-jag+jwt";
/// Longest ID-JAG lifetime accepted (they are meant to be short-lived).
const MAX_LIFETIME: i64 = 600;

fn issuer_hint(token: &str) -> Option<String> {
    use base64::Engine as _;
    let p = token.split('.').nth(1)?;
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(p)
        .ok()?;
    let v: Value = serde_json::from_slice(&b).ok()?;
    v.get("iss")?.as_str().map(str::to_owned)
}

/// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`, `assertion=<ID-JAG>`.
pub async fn jwt_bearer(
    inner: &Inner,
    a: &Authed,
    f: &HashMap<String, String>,
    jkt: Option<&str>,
) -> Result<Response, OAuthError> {
    if a.client.public || a.method == Method::None {
        return Err(OAuthError::invalid_client(
            "the jwt-bearer grant requires client authentication",
        ));
    }
    let assertion =
        param(f, "assertion").ok_or_else(|| OAuthError::invalid_request("assertion is missing"))?;
    let iss = issuer_hint(assertion)
        .ok_or_else(|| OAuthError::invalid_grant("the assertion is not a JWT with an issuer"))?;
    let conn = inner
        .connectors
        .iter()
        .find(|c| c.cfg.accept_id_jag && c.cfg.issuer == iss)
        .cloned()
        .ok_or_else(|| {
            OAuthError::invalid_grant("the assertion's issuer is not trusted for ID-JAGs")
        })?;
    let now = inner.store.now();
    // typ, signature, iss, aud = our issuer, exp/iat, lifetime.
    let c = conn
        .verify_jwt(
            assertion,
            &[TYP.to_owned()],
            &inner.cfg.issuer,
            MAX_LIFETIME,
            now,
        )
        .await
        .map_err(|e| OAuthError::invalid_grant(e.to_string()))?;
    let s = |k: &str| c.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
    if s("client_id") != Some(a.client.id.as_str()) {
        return Err(OAuthError::invalid_grant(
            "the assertion's client_id is not the authenticated client",
        ));
    }
    let resource =
        s("resource").ok_or_else(|| OAuthError::invalid_grant("the assertion has no resource"))?;
    let resource = inner
        .user_resource(Some(resource))
        .map_err(OAuthError::invalid_target)?;
    if let Some(r) = param(f, "resource")
        && r != resource
    {
        return Err(OAuthError::invalid_target(
            "resource differs from the assertion's",
        ));
    }
    let jti = s("jti").ok_or_else(|| OAuthError::invalid_grant("the assertion has no jti"))?;
    let exp = c.get("exp").and_then(Value::as_i64).unwrap_or(now);
    if !inner
        .store
        .first_jti(&format!("id-jag\u{0}{iss}"), jti, exp)
        .await
    {
        return Err(OAuthError::invalid_grant("the assertion was already used"));
    }
    // The user, as the connector's claims mapping names them.
    let m = &conn.cfg.claims;
    let username = s(&m.sub)
        .or_else(|| s("sub"))
        .ok_or_else(|| OAuthError::invalid_grant("the assertion has no subject"))?
        .to_owned();
    if inner.users.contains_key(&username) {
        return Err(OAuthError::invalid_grant(
            "the assertion's subject is a local account",
        ));
    }
    let known = inner.store.fed_user(&username).await;
    if known.as_ref().is_some_and(|k| k.connector != conn.cfg.id) {
        return Err(OAuthError::invalid_grant(
            "the assertion's subject belongs to another identity provider",
        ));
    }
    let groups = match c.get(&m.groups) {
        Some(Value::Array(v)) => v
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => known.as_ref().map(|k| k.groups.clone()).unwrap_or_default(),
    };
    let user = FedUser {
        username: username.clone(),
        connector: conn.cfg.id.clone(),
        email: s(&m.email)
            .map(str::to_owned)
            .or_else(|| known.as_ref().and_then(|k| k.email.clone())),
        name: s(&m.name).map(str::to_owned),
        groups,
    };
    (inner.store)
        .put_fed_user(&user, inner.cfg.refresh_token_ttl.as_secs() as i64)
        .await
        .map_err(OAuthError::server)?;
    // Scopes: the assertion's ∩ the requested ones ∩ what the user's groups allow.
    let granted = s("scope").unwrap_or_default();
    let wanted: Vec<&str> = match param(f, "scope") {
        Some(req) => req
            .split(' ')
            .filter(|x| !x.is_empty() && granted.split(' ').any(|g| g == *x))
            .collect(),
        None => granted.split(' ').filter(|x| !x.is_empty()).collect(),
    };
    let scopes = inner.grant_user_scopes(&user.user(), Some(&wanted.join(" ")));
    tracing::info!(client = %a.client.id, connector = %conn.cfg.id, user = ?username, "Authorization server: ID-JAG accepted");
    super::token::user_tokens(
        inner,
        &a.client,
        &username,
        &scopes,
        &resource,
        super::token::Issue {
            jkt,
            ..Default::default()
        },
    )
    .await
}
