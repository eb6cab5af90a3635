//! Federated login: `POST /federate` sends the browser to an upstream IdP (code + PKCE S256 +
//! nonce), `GET /federate/callback` redeems the IdP's code, validates its ID token, maps the
//! claims to a Warden user (groups usable in Cedar as `principal in Group::"…"`) and
//! continues with the consent page like a local sign-in.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::connectors::{Connector, ConnectorError};
use super::pages::{consent_page, error_page, param, parse_form, set_cookie_value};
use super::store::{self, SESSION_TTL};
use super::{Inner, User};

/// A federated sign-in waiting for the IdP's answer (keyed by the hash of `state`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FedState {
    pub request_id: String,
    pub csrf: String,
    pub connector: String,
    pub nonce: String,
    pub verifier: String,
    pub expires: i64,
}

/// A federated user as last seen in an ID token (keyed by the Warden username).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FedUser {
    pub username: String,
    pub connector: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub groups: Vec<String>,
}

impl FedUser {
    pub fn user(&self) -> User {
        User {
            username: self.username.clone(),
            password_hash: String::new(),
            email: self.email.clone(),
            groups: self.groups.clone(),
        }
    }
}

/// Where the IdP sends the browser back.
pub fn callback_uri(inner: &Inner) -> String {
    format!("{}/federate/callback", inner.cfg.issuer)
}

fn pkce_pair() -> Result<(String, String), store::RngFailed> {
    let verifier = store::random_token()?;
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref());
    Ok((verifier, challenge))
}

/// `POST /federate` (form: `request_id`, `csrf_token`, `connector`): 302 to the IdP.
pub async fn start(
    State(inner): State<Arc<Inner>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = super::web::cross_site(&inner, &headers) {
        return r;
    }
    let Ok(f) = parse_form(&body) else {
        return error_page(StatusCode::BAD_REQUEST, "malformed form");
    };
    let (Some(rid), Some(csrf), Some(cid)) = (
        param(&f, "request_id"),
        param(&f, "csrf_token"),
        param(&f, "connector"),
    ) else {
        return error_page(StatusCode::BAD_REQUEST, "the sign-in form is incomplete");
    };
    if inner.store.pending_checked(rid, csrf).await.is_none() {
        return error_page(
            StatusCode::BAD_REQUEST,
            "this sign-in request has expired or is invalid; start again from the application",
        );
    }
    let Some(conn) = inner.connector(cid) else {
        return error_page(StatusCode::BAD_REQUEST, "unknown identity provider");
    };
    if conn.down_reason().await.is_some() {
        // It may be back: one refresh (rate-limited by the refresher's schedule) before refusing.
        if conn.refresh_due().await {
            conn.refresh().await;
        }
        if conn.down_reason().await.is_some() {
            return unavailable(&conn);
        }
    }
    let (Ok(state), Ok(nonce), Ok((verifier, challenge))) =
        (store::random_token(), store::random_token(), pkce_pair())
    else {
        return error_page(StatusCode::INTERNAL_SERVER_ERROR, "random generator failed");
    };
    let fs = FedState {
        request_id: rid.to_owned(),
        csrf: csrf.to_owned(),
        connector: conn.cfg.id.clone(),
        nonce: nonce.clone(),
        verifier,
        expires: inner.store.now() + store::PENDING_TTL,
    };
    if let Err(d) = inner.store.add_fed_state(&state, &fs).await {
        return error_page(StatusCode::SERVICE_UNAVAILABLE, d);
    }
    let url = match conn
        .authorization_url(&callback_uri(&inner), &state, &nonce, &challenge)
        .await
    {
        Ok(u) => u,
        Err(_) => return unavailable(&conn),
    };
    let Ok(loc) = HeaderValue::from_str(&url) else {
        return unavailable(&conn);
    };
    let mut r = StatusCode::FOUND.into_response();
    r.headers_mut().insert(header::LOCATION, loc);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn unavailable(conn: &Connector) -> Response {
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!(
            "{} is unavailable right now; nothing was issued. Try again later or choose another sign-in method.",
            conn.display_name()
        ),
    )
}

/// `GET /federate/callback?code=…&state=…[&iss=…]`: finish the federated sign-in.
pub async fn callback(State(inner): State<Arc<Inner>>, RawQuery(q): RawQuery) -> Response {
    let Ok(q) = parse_form(q.unwrap_or_default().as_bytes()) else {
        return error_page(StatusCode::BAD_REQUEST, "malformed callback");
    };
    let Some(state) = param(&q, "state") else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "the identity provider's answer has no state",
        );
    };
    // Single use: taken whatever happens next.
    let Some(fs) = inner.store.take_fed_state(state).await else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "this sign-in has expired or was already used; start again from the application",
        );
    };
    let Some(conn) = inner.connector(&fs.connector) else {
        return error_page(StatusCode::BAD_REQUEST, "unknown identity provider");
    };
    // RFC 9207: an IdP that says who answered must be the one we asked (mix-up defence).
    if let Some(iss) = param(&q, "iss")
        && iss != conn.cfg.issuer
    {
        return refused(&conn, "the answer came from another issuer");
    }
    if let Some(e) = param(&q, "error") {
        tracing::info!(connector = %conn.cfg.id, error = ?e, "Federated sign-in: the identity provider returned an error");
        return refused(&conn, "the identity provider did not sign you in");
    }
    let Some(code) = param(&q, "code") else {
        return refused(&conn, "the identity provider's answer has no code");
    };
    let Some((p, _)) = inner.store.pending_checked(&fs.request_id, &fs.csrf).await else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "this sign-in request has expired; start again from the application",
        );
    };
    let id_token = match conn.redeem(code, &callback_uri(&inner), &fs.verifier).await {
        Ok(t) => t,
        Err(ConnectorError::Unavailable(why)) => {
            conn.mark_down(&why).await;
            return unavailable(&conn);
        }
        Err(e) => return refused(&conn, &e.to_string()),
    };
    let claims = match conn
        .validate_id_token(&id_token, &fs.nonce, inner.store.now())
        .await
    {
        Ok(c) => c.claims,
        Err(e) => {
            tracing::warn!(connector = %conn.cfg.id, error = ?e.to_string(), "Federated sign-in: ID token refused");
            return refused(&conn, "the identity provider's ID token was not valid");
        }
    };
    let user = match map_claims(&inner, &conn, &claims).await {
        Ok(u) => u,
        Err(why) => return refused(&conn, why),
    };
    if let Err(d) = inner
        .store
        .put_fed_user(&user, inner.cfg.refresh_token_ttl.as_secs() as i64)
        .await
    {
        return error_page(StatusCode::SERVICE_UNAVAILABLE, d);
    }
    tracing::info!(connector = %conn.cfg.id, user = ?user.username, "Federated sign-in");
    let cookie = match inner.store.new_session(&user.username).await {
        Ok(c) => c,
        Err(d) => return error_page(StatusCode::SERVICE_UNAVAILABLE, d),
    };
    let Ok(new_csrf) = store::random_token() else {
        return error_page(StatusCode::INTERNAL_SERVER_ERROR, "random generator failed");
    };
    if !inner
        .store
        .bind_pending(&fs.request_id, p.clone(), &user.username, &new_csrf)
        .await
    {
        return error_page(StatusCode::BAD_REQUEST, "this sign-in request has expired");
    }
    let display = inner
        .client(&p.client_id)
        .await
        .map(|c| c.display_name())
        .unwrap_or_else(|| p.client_id.clone());
    let scopes = inner.grant_user_scopes(&user.user(), p.scope.as_deref());
    let mut r = consent_page(
        &user.username,
        &display,
        &scopes,
        &p.resource,
        &fs.request_id,
        &new_csrf,
    );
    if let Ok(v) = HeaderValue::from_str(&set_cookie_value(
        &cookie,
        inner.secure_cookies,
        SESSION_TTL,
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

fn refused(conn: &Connector, why: &str) -> Response {
    error_page(
        StatusCode::FORBIDDEN,
        &format!(
            "Sign-in with {} failed: {why}. Nothing was issued.",
            conn.display_name()
        ),
    )
}

fn claim_str<'a>(c: &'a serde_json::Map<String, Value>, k: &str) -> Option<&'a str> {
    c.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Map validated ID-token claims to a Warden user (claims mapping, allowed email domains).
async fn map_claims(
    inner: &Inner,
    conn: &Connector,
    c: &serde_json::Map<String, Value>,
) -> Result<FedUser, &'static str> {
    let m = &conn.cfg.claims;
    let username = claim_str(c, &m.sub).ok_or("the ID token lacks the subject claim")?;
    if username.len() > 256 || username.chars().any(char::is_control) {
        return Err("the subject claim is not a usable user name");
    }
    let email = claim_str(c, &m.email).map(str::to_owned);
    if !conn.cfg.allowed_email_domains.is_empty() {
        let verified = c.get("email_verified").and_then(Value::as_bool) != Some(false);
        let domain_ok = email
            .as_deref()
            .and_then(|e| e.rsplit_once('@'))
            .is_some_and(|(_, d)| {
                conn.cfg
                    .allowed_email_domains
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(d))
            });
        if !verified || !domain_ok {
            return Err("your email domain is not allowed to sign in here");
        }
    }
    let groups = match c.get(&m.groups) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    // A local user, or a user of another connector, keeps their name.
    if inner.users.contains_key(username) {
        return Err("this user name belongs to a local account");
    }
    if let Some(prev) = inner.store.fed_user(username).await
        && prev.connector != conn.cfg.id
    {
        return Err("this user name belongs to another identity provider");
    }
    Ok(FedUser {
        username: username.to_owned(),
        connector: conn.cfg.id.clone(),
        email,
        name: claim_str(c, &m.name).map(str::to_owned),
        groups,
    })
}
