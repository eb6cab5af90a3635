//! `POST /token`: authorization_code (PKCE), refresh_token (rotation), client_credentials, password; RFC 6749 §5.2 errors.
//! A DPoP proof (RFC 9449 §5) makes the access token DPoP-bound (`cnf.jkt`, `token_type: DPoP`)
//! and binds a public client's refresh tokens to the key.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

use super::Inner;
use super::client_auth::{Authed, Method, authenticate};
use super::clients::{
    GRANT_CLIENT_CREDENTIALS, GRANT_CODE, GRANT_EXCHANGE, GRANT_JWT_BEARER, GRANT_PASSWORD,
    GRANT_REFRESH,
};
use super::pages::{param, parse_form};
use super::store;
use super::web::valid_pkce_string;
use crate::sts::Sts;

/// An RFC 6749 §5.2 error response.
#[derive(Debug)]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
    /// `WWW-Authenticate: Basic` when the client tried Basic (RFC 6749 §5.2).
    pub basic_challenge: bool,
    /// `DPoP-Nonce` to retry with (RFC 9449 §8, `use_dpop_nonce`).
    pub dpop_nonce: Option<String>,
}

impl OAuthError {
    pub fn new(error: &'static str, d: impl Into<String>) -> Self {
        let status = match error {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        OAuthError {
            status,
            error,
            description: d.into(),
            basic_challenge: false,
            dpop_nonce: None,
        }
    }
    pub fn invalid_dpop_proof(d: impl Into<String>) -> Self {
        Self::new("invalid_dpop_proof", d)
    }
    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new("invalid_request", d)
    }
    pub fn invalid_client(d: impl Into<String>) -> Self {
        Self::new("invalid_client", d)
    }
    pub fn invalid_client_basic(d: impl Into<String>) -> Self {
        let mut e = Self::new("invalid_client", d);
        e.basic_challenge = true;
        e
    }
    pub fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new("invalid_grant", d)
    }
    pub fn invalid_scope(d: impl Into<String>) -> Self {
        Self::new("invalid_scope", d)
    }
    pub fn invalid_target(d: impl Into<String>) -> Self {
        Self::new("invalid_target", d)
    }
    pub fn unauthorized_client(d: impl Into<String>) -> Self {
        Self::new("unauthorized_client", d)
    }
    pub fn server(d: impl Into<String>) -> Self {
        Self::new("server_error", d)
    }
}

fn no_store(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            axum::Json(json!({"error": self.error, "error_description": self.description})),
        )
            .into_response();
        no_store(&mut r);
        if let Some(n) = self
            .dpop_nonce
            .as_deref()
            .and_then(|n| HeaderValue::from_str(n).ok())
        {
            r.headers_mut().insert("dpop-nonce", n);
        }
        if self.basic_challenge {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"warden\""),
            );
        }
        r
    }
}

/// A successful token response (no-store).
pub fn ok_json(v: Value) -> Response {
    let mut r = (StatusCode::OK, axum::Json(v)).into_response();
    no_store(&mut r);
    r
}

/// `POST /token`.
pub async fn token(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    match handle(&inner, &headers, &body).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = e.error, description = %e.description, "Token request refused");
            e.into_response()
        }
    }
}

async fn handle(inner: &Inner, headers: &HeaderMap, body: &[u8]) -> Result<Response, OAuthError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE)
        && !ct
            .to_str()
            .unwrap_or_default()
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    {
        return Err(OAuthError::invalid_request(
            "the token request must be application/x-www-form-urlencoded",
        ));
    }
    let f = parse_form(body).map_err(|e| OAuthError::invalid_request(e.to_string()))?;
    let grant = param(&f, "grant_type")
        .ok_or_else(|| OAuthError::invalid_request("grant_type is missing"))?
        .to_owned();
    if ![
        GRANT_CODE,
        GRANT_REFRESH,
        GRANT_CLIENT_CREDENTIALS,
        GRANT_PASSWORD,
        GRANT_EXCHANGE,
        GRANT_JWT_BEARER,
    ]
    .contains(&grant.as_str())
    {
        return Err(OAuthError::new(
            "unsupported_grant_type",
            "grant_type not supported",
        ));
    }
    let authed = authenticate(inner, headers, &f).await?;
    if !authed.client.allows(&grant) {
        return Err(OAuthError::unauthorized_client(format!(
            "this client may not use {grant}"
        )));
    }
    // RFC 9449 §5: the proof is checked before the grant, so a bad proof spends no code.
    let jkt = super::dpop::token_proof(inner, headers).await?;
    if jkt.is_none() && authed.client.dpop_bound_access_tokens {
        return Err(OAuthError::invalid_dpop_proof(
            "this client's tokens must be DPoP-bound: send a DPoP proof",
        ));
    }
    let jkt = jkt.as_deref();
    match grant.as_str() {
        GRANT_CODE => authorization_code(inner, &authed, &f, jkt).await,
        GRANT_REFRESH => refresh(inner, &authed, &f, jkt).await,
        GRANT_CLIENT_CREDENTIALS => client_credentials(inner, &authed, &f, jkt),
        GRANT_PASSWORD => password(inner, &authed, &f, jkt).await,
        GRANT_JWT_BEARER => super::idjag::jwt_bearer(inner, &authed, &f, jkt).await,
        _ => super::exchange::exchange(inner, &authed, &f).await,
    }
}

/// RFC 7636 §4.6: BASE64URL(SHA256(verifier)) == challenge.
fn pkce_ok(verifier: &str, challenge: &str) -> bool {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref());
    aws_lc_rs::constant_time::verify_slices_are_equal(computed.as_bytes(), challenge.as_bytes())
        .is_ok()
}

/// `token_type` of a token response: `DPoP` for a bound token (RFC 9449 §5).
fn token_type(jkt: Option<&str>) -> &'static str {
    if jkt.is_some() { "DPoP" } else { "Bearer" }
}

/// Issue access + refresh tokens for a user; `family` continues a rotation chain; `jkt`
/// binds the access token (and a public client's refresh family) to a DPoP key.
/// How tokens are issued: continuing a refresh `family`, bound to a DPoP key (`jkt`),
/// redeeming a `code` (remembered, so a replay can revoke what it issued).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Issue<'a> {
    pub family: Option<&'a str>,
    pub jkt: Option<&'a str>,
    pub code: Option<&'a str>,
}

pub(super) async fn user_tokens(
    inner: &Inner,
    client: &super::clients::Client,
    username: &str,
    scopes: &[String],
    resource: &str,
    how: Issue<'_>,
) -> Result<Response, OAuthError> {
    let Issue { family, jkt, code } = how;
    let user = inner
        .user(username)
        .await
        .ok_or_else(|| OAuthError::invalid_grant("the user no longer exists"))?;
    let (at, ttl, jti) = inner
        .user_token(&user, &client.id, scopes, resource, jkt)
        .map_err(|e| OAuthError::server(e.to_string()))?;
    let now = inner.store.now();
    let mut issued_family = None;
    let mut out = json!({
        "access_token": at,
        "token_type": token_type(jkt),
        "expires_in": ttl,
        "scope": scopes.join(" "),
    });
    if client.allows(GRANT_REFRESH) {
        let family = match family {
            Some(f) => f.to_owned(),
            None => {
                let f = store::random_token().map_err(|e| OAuthError::server(e.to_string()))?;
                // RFC 9449 §5: a public client's refresh tokens are bound to the key too (a
                // confidential client's are bound by its own authentication).
                if let (Some(j), true) = (jkt, client.public) {
                    let until = inner.store.now() + inner.cfg.refresh_token_ttl.as_secs() as i64;
                    inner
                        .store
                        .bind_family(&f, j, until)
                        .await
                        .map_err(OAuthError::server)?;
                }
                f
            }
        };
        let rt = inner
            .store
            .add_refresh(
                &family,
                &client.id,
                username,
                scopes,
                resource,
                inner.cfg.refresh_token_ttl.as_secs() as i64,
            )
            .await
            .map_err(OAuthError::server)?;
        out["refresh_token"] = Value::String(rt);
        issued_family = Some(family);
    }
    // RFC 6749 §4.1.2: remember what this code issued, so a replay can revoke it.
    if let Some(code) = code {
        let keep = inner.cfg.refresh_token_ttl.as_secs().max(ttl as u64) as i64;
        let g = super::records::CodeGrant {
            family: issued_family,
            jti,
            exp: now + ttl,
        };
        inner
            .store
            .link_code(code, &g, now + keep)
            .await
            .map_err(OAuthError::server)?;
    }
    Ok(ok_json(out))
}

async fn authorization_code(
    inner: &Inner,
    a: &Authed,
    f: &HashMap<String, String>,
    jkt: Option<&str>,
) -> Result<Response, OAuthError> {
    let code = param(f, "code").ok_or_else(|| OAuthError::invalid_request("code is missing"))?;
    let verifier = param(f, "code_verifier")
        .ok_or_else(|| OAuthError::invalid_request("code_verifier is missing (PKCE)"))?;
    // Taken out first: a code is single-use even when this request fails.
    let Some(c) = inner.store.take_code(code).await else {
        return Err(replayed_code(inner, code).await);
    };
    if c.client_id != a.client.id {
        return Err(OAuthError::invalid_grant(
            "the code was issued to another client",
        ));
    }
    if param(f, "redirect_uri").is_some_and(|r| r != c.redirect_uri) {
        return Err(OAuthError::invalid_grant("redirect_uri does not match"));
    }
    if !valid_pkce_string(verifier) || !pkce_ok(verifier, &c.code_challenge) {
        return Err(OAuthError::invalid_grant("PKCE verification failed"));
    }
    if let Some(r) = param(f, "resource")
        && r != c.resource
    {
        return Err(OAuthError::invalid_target(
            "resource differs from the authorized one",
        ));
    }
    user_tokens(
        inner,
        &a.client,
        &c.username,
        &c.scopes,
        &c.resource,
        Issue {
            jkt,
            code: Some(code),
            ..Issue::default()
        },
    )
    .await
}

/// A code that is not live: if it was redeemed before, revoke what it issued (RFC 6749 §4.1.2).
async fn replayed_code(inner: &Inner, code: &str) -> OAuthError {
    let Some(g) = inner.store.code_grant(code).await else {
        return OAuthError::invalid_grant("invalid, expired or already used code");
    };
    if let Some(f) = &g.family {
        let until = inner.store.now() + inner.cfg.refresh_token_ttl.as_secs() as i64;
        inner.store.revoke_family(f, until).await;
    }
    if let Err(e) = inner.store.revoke_jti(&g.jti, g.exp).await {
        tracing::error!(
            error = e,
            "Authorization server: could not revoke an access token"
        );
    }
    tracing::warn!(
        "Authorization server: authorization code replayed; the tokens issued from it are revoked"
    );
    OAuthError::invalid_grant(
        "authorization code already used: the tokens issued from it are revoked",
    )
}

/// Requested scope narrowed from `have`: every requested one must be in `have`.
fn narrow(have: &[String], requested: Option<&str>) -> Result<Vec<String>, OAuthError> {
    match requested {
        None => Ok(have.to_vec()),
        Some(r) => {
            let mut out: Vec<String> = Vec::new();
            for s in r.split(' ').filter(|s| !s.is_empty()) {
                if !have.iter().any(|h| h == s) {
                    return Err(OAuthError::invalid_scope(format!(
                        "scope {s:?} was not granted"
                    )));
                }
                if !out.iter().any(|o| o == s) {
                    out.push(s.to_owned());
                }
            }
            Ok(out)
        }
    }
}

async fn refresh(
    inner: &Inner,
    a: &Authed,
    f: &HashMap<String, String>,
    jkt: Option<&str>,
) -> Result<Response, OAuthError> {
    let t = param(f, "refresh_token")
        .ok_or_else(|| OAuthError::invalid_request("refresh_token is missing"))?;
    let r = inner
        .store
        .peek_refresh(t)
        .await
        .map_err(OAuthError::invalid_grant)?;
    if r.client_id != a.client.id {
        inner.store.revoke_family(&r.family, r.expires).await;
        return Err(OAuthError::invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    // A bound family is refreshed only with a proof of its key (RFC 9449 §5); checked before
    // the token is spent, so a thief without the key cannot burn the family either.
    let bound = inner
        .store
        .family_key(&r.family)
        .await
        .map_err(|()| OAuthError::server("state store unavailable"))?;
    if let Some(key) = &bound
        && jkt != Some(key.as_str())
    {
        return Err(OAuthError::invalid_dpop_proof(
            "this refresh token is bound to a DPoP key: send a proof of that key",
        ));
    }
    let scopes = narrow(&r.scopes, param(f, "scope"))?;
    if let Some(res) = param(f, "resource")
        && res != r.resource
    {
        return Err(OAuthError::invalid_target(
            "resource differs from the authorized one",
        ));
    }
    // The user's groups may have changed: keep only scopes still allowed.
    let scopes: Vec<String> = match inner.user(&r.username).await {
        Some(u) => {
            let allowed = inner.grant_user_scopes(&u, Some(&scopes.join(" ")));
            scopes.into_iter().filter(|s| allowed.contains(s)).collect()
        }
        None => return Err(OAuthError::invalid_grant("the user no longer exists")),
    };
    if !r.retry {
        inner
            .store
            .spend_refresh(&r)
            .await
            .map_err(OAuthError::invalid_grant)?;
        let grace = inner.cfg.refresh_reuse_grace.as_secs() as i64;
        if grace > 0 {
            inner
                .store
                .open_grace(&r.hash, inner.store.now() + grace)
                .await;
        }
    }
    if inner.store.family_revoked(&r.family).await {
        return Err(OAuthError::invalid_grant("refresh token revoked"));
    }
    user_tokens(
        inner,
        &a.client,
        &r.username,
        &scopes,
        &r.resource,
        Issue {
            family: Some(&r.family),
            jkt,
            ..Issue::default()
        },
    )
    .await
}

async fn password(
    inner: &Inner,
    a: &Authed,
    f: &HashMap<String, String>,
    jkt: Option<&str>,
) -> Result<Response, OAuthError> {
    let username = param(f, "username")
        .ok_or_else(|| OAuthError::invalid_request("username is missing"))?
        .to_owned();
    let pw = param(f, "password")
        .ok_or_else(|| OAuthError::invalid_request("password is missing"))?
        .to_owned();
    let user = inner.users.get(&username).cloned();
    let phc = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| inner.dummy_hash.clone());
    let ok = tokio::task::spawn_blocking(move || super::verify_password(&pw, &phc))
        .await
        .unwrap_or(false);
    let Some(user) = user.filter(|_| ok) else {
        return Err(OAuthError::invalid_grant("invalid username or password"));
    };
    let resource = inner
        .user_resource(param(f, "resource"))
        .map_err(OAuthError::invalid_target)?;
    let scopes = inner.grant_user_scopes(&user, param(f, "scope"));
    user_tokens(
        inner,
        &a.client,
        &user.username,
        &scopes,
        &resource,
        Issue {
            jkt,
            ..Issue::default()
        },
    )
    .await
}

/// The audience a client asks for (`resource` or `audience`, at most one value); default the first allowed.
pub fn client_audience(
    client: &super::clients::Client,
    f: &HashMap<String, String>,
    required: bool,
) -> Result<String, OAuthError> {
    let aud = match (param(f, "resource"), param(f, "audience")) {
        (Some(r), Some(a)) if r != a => {
            return Err(OAuthError::invalid_target("resource and audience disagree"));
        }
        (Some(r), _) | (None, Some(r)) => r.to_owned(),
        (None, None) if !required => client
            .allowed_audiences
            .first()
            .cloned()
            .ok_or_else(|| OAuthError::invalid_target("no audience allowed for this client"))?,
        (None, None) => {
            return Err(OAuthError::invalid_request(
                "audience (or resource) is required",
            ));
        }
    };
    if !client.allowed_audiences.contains(&aud) {
        return Err(OAuthError::invalid_target(
            "audience not allowed for this client",
        ));
    }
    Ok(aud)
}

/// Requested scopes, each within the client's `scopes`; `None` = `default_all` ? all : none.
pub fn client_scopes(
    client: &super::clients::Client,
    requested: Option<&str>,
    default_all: bool,
) -> Result<Vec<String>, OAuthError> {
    match requested {
        None if default_all => Ok(client.scopes.clone()),
        None => Ok(Vec::new()),
        Some(r) => narrow(&client.scopes, Some(r)).map_err(|_| {
            OAuthError::invalid_scope("requested scope exceeds what this client may obtain")
        }),
    }
}

fn client_credentials(
    inner: &Inner,
    a: &Authed,
    f: &HashMap<String, String>,
    jkt: Option<&str>,
) -> Result<Response, OAuthError> {
    if a.client.public || a.method == Method::None {
        return Err(OAuthError::unauthorized_client(
            "client_credentials is for confidential clients",
        ));
    }
    let aud = client_audience(&a.client, f, false)?;
    let scopes = client_scopes(&a.client, param(f, "scope"), true)?;
    let now = inner.store.now();
    let ttl = inner.cfg.access_token_ttl.as_secs() as i64;
    let jti = Sts::new_jti().map_err(|e| OAuthError::server(e.to_string()))?;
    let mut claims = json!({
        "iss": inner.cfg.issuer,
        "sub": a.client.id,
        "aud": aud,
        "client_id": a.client.id,
        "scope": scopes.join(" "),
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": jti,
    });
    if let Some(j) = jkt {
        claims["cnf"] = json!({"jkt": j});
    }
    let at = inner
        .sts
        .sign(&claims)
        .map_err(|e| OAuthError::server(e.to_string()))?;
    Ok(ok_json(json!({
        "access_token": at,
        "token_type": token_type(jkt),
        "expires_in": ttl,
        "scope": scopes.join(" "),
    })))
}
