//! The browser flow: `GET /authorize`, `POST /login`, `POST /consent` (authorization code with PKCE S256).

use std::sync::Arc;

use axum::body::Bytes;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use super::Inner;
use super::clients::GRANT_CODE;
use super::pages::{
    consent_page, error_page, login_page, param, parse_form, redirect_with, session_cookie,
    set_cookie_value,
};
use super::store::{self, CodeData, MAX_LOGIN_FAILURES, PENDING_TTL, Pending, SESSION_TTL};
use super::throttle::Verdict;

/// RFC 7636 §4.2: 43–128 unreserved characters.
pub fn valid_pkce_string(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

fn redirect_error(
    inner: &Inner,
    redirect_uri: &str,
    state: Option<&str>,
    error: &str,
    desc: &str,
) -> Response {
    let mut p = vec![("error", error), ("error_description", desc)];
    if let Some(s) = state {
        p.push(("state", s));
    }
    p.push(("iss", inner.cfg.issuer.as_str()));
    redirect_with(redirect_uri, &p)
}

/// The login page's list of upstream IdPs, with their status.
async fn idp_list(inner: &Inner) -> Vec<super::pages::Idp> {
    let mut out = Vec::with_capacity(inner.connectors.len());
    for c in &inner.connectors {
        out.push(super::pages::Idp {
            id: c.cfg.id.clone(),
            name: c.display_name().to_owned(),
            down: c.down_reason().await.is_some(),
        });
    }
    out
}

/// `GET /authorize`.
pub async fn authorize(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let q = match parse_form(q.unwrap_or_default().as_bytes()) {
        Ok(q) => q,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    // 1. Errors that cannot go back to the client: unknown client, bad redirect URI.
    let Some(client_id) = param(&q, "client_id") else {
        return error_page(StatusCode::BAD_REQUEST, "client_id is missing");
    };
    let Some(client) = inner.client(client_id).await else {
        return error_page(StatusCode::BAD_REQUEST, "unknown client_id");
    };
    let redirect_uri = match param(&q, "redirect_uri") {
        Some(r) if client.redirect_uris.iter().any(|x| x == r) => r.to_owned(),
        Some(_) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "redirect_uri is not registered for this client",
            );
        }
        None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
        None => return error_page(StatusCode::BAD_REQUEST, "redirect_uri is missing"),
    };
    // 2. Everything else goes back to the client as `error=`.
    let state = param(&q, "state");
    let err = |e: &str, d: &str| redirect_error(&inner, &redirect_uri, state, e, d);
    if param(&q, "response_type") != Some("code") {
        return err(
            "unsupported_response_type",
            "only response_type=code is supported",
        );
    }
    if !client.allows(GRANT_CODE) {
        return err(
            "unauthorized_client",
            "this client may not use the authorization code grant",
        );
    }
    let Some(challenge) = param(&q, "code_challenge") else {
        return err("invalid_request", "code_challenge is required (PKCE)");
    };
    if param(&q, "code_challenge_method") != Some("S256") {
        return err("invalid_request", "code_challenge_method must be S256");
    }
    if challenge.len() != 43 || !valid_pkce_string(challenge) {
        return err("invalid_request", "code_challenge is malformed");
    }
    let resource = match inner.user_resource(param(&q, "resource")) {
        Ok(r) => r,
        Err(d) => return err("invalid_target", d),
    };
    if let Some(s) = state
        && s.len() > 2048
    {
        return err("invalid_request", "state is too long");
    }
    let scope = param(&q, "scope").map(str::to_owned);
    if scope.as_deref().is_some_and(|s| s.len() > 4096) {
        return err("invalid_scope", "scope is too long");
    }
    let csrf = match store::random_token() {
        Ok(c) => c,
        Err(_) => return err("server_error", "random generator failed"),
    };
    let user = match session_cookie(&headers) {
        Some(c) => inner.store.session_user(&c).await,
        None => None,
    };
    let pending = Pending {
        client_id: client.id.clone(),
        redirect_uri: redirect_uri.clone(),
        state: state.map(str::to_owned),
        scope,
        resource,
        code_challenge: challenge.to_owned(),
        csrf: csrf.clone(),
        username: user.clone(),
        expires: inner.store.now() + PENDING_TTL,
    };
    let rid = match inner.store.add_pending(pending.clone()).await {
        Ok(r) => r,
        Err(d) => return err("temporarily_unavailable", d),
    };
    let display = client.display_name();
    let user = match user {
        Some(u) => inner.user(&u).await,
        None => None,
    };
    match user {
        Some(u) => {
            let scopes = inner.grant_user_scopes(&u, pending.scope.as_deref());
            consent_page(
                &u.username,
                &display,
                &scopes,
                &pending.resource,
                &rid,
                &csrf,
            )
        }
        None => {
            let idps = idp_list(&inner).await;
            login_page(
                StatusCode::OK,
                &display,
                &rid,
                &csrf,
                None,
                !inner.users.is_empty(),
                &idps,
            )
        }
    }
}

/// Refuse a form POST that a browser says comes from another site (CSRF defence in depth,
/// beside the per-request CSRF token): `Sec-Fetch-Site: cross-site`, or an `Origin` that is not
/// the issuer's.
pub fn cross_site(inner: &Inner, headers: &HeaderMap) -> Option<Response> {
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let own = url::Url::parse(&inner.cfg.issuer)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    let bad = matches!(site, Some("cross-site")) || origin.is_some_and(|o| o != own);
    bad.then(|| {
        tracing::warn!(origin = ?origin, sec_fetch_site = ?site, "Authorization server: cross-site form POST refused");
        error_page(StatusCode::FORBIDDEN, "cross-site request refused")
    })
}

/// `POST /login`: check the password, start a session, show the consent page.
pub async fn login(
    State(inner): State<Arc<Inner>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = cross_site(&inner, &headers) {
        return r;
    }
    let Ok(f) = parse_form(&body) else {
        return error_page(StatusCode::BAD_REQUEST, "malformed form");
    };
    let (Some(rid), Some(csrf)) = (param(&f, "request_id"), param(&f, "csrf_token")) else {
        return error_page(StatusCode::BAD_REQUEST, "the sign-in form is incomplete");
    };
    let Some((p, _)) = inner.store.pending_checked(rid, csrf).await else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "this sign-in request has expired or is invalid; start again from the application",
        );
    };
    let display = inner
        .client(&p.client_id)
        .await
        .map(|c| c.display_name())
        .unwrap_or_else(|| p.client_id.clone());
    let username = param(&f, "username").unwrap_or_default().to_owned();
    let password = param(&f, "password").unwrap_or_default().to_owned();
    // Throttle per user name (known or not, alike) and per client address.
    let user_key = format!("u:{username}");
    let addr_key = format!("a:{}", peer.ip());
    let keys = [user_key.as_str(), addr_key.as_str()];
    match inner.throttle.check(&keys) {
        Verdict::Refuse(secs) => {
            tracing::warn!(target: "warden::audit", event = "authz.login_throttled", user = ?username, client_addr = %peer.ip(), client = %p.client_id, retry_after = secs, "Authorization server: sign-in refused by throttling");
            metrics::counter!("warden_authz_login_throttled_total").increment(1);
            let mut r = error_page(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed sign-in attempts; try again later",
            );
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
        Verdict::Allow(d) if !d.is_zero() => tokio::time::sleep(d).await,
        Verdict::Allow(_) => {}
    }
    let user = inner.users.get(&username).cloned();
    // Verify against a dummy hash for unknown users so timing does not reveal them.
    let phc = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| inner.dummy_hash.clone());
    let ok = tokio::task::spawn_blocking(move || super::verify_password(&password, &phc))
        .await
        .unwrap_or(false);
    let Some(user) = user.filter(|_| ok) else {
        let failures = inner.store.pending_failure(rid).await;
        let counted = inner.throttle.failure(&keys);
        tracing::info!(target: "warden::audit", event = "authz.login_failed", user = ?username, client_addr = %peer.ip(), client = %p.client_id, failures = counted, "Authorization server: failed sign-in");
        if failures >= MAX_LOGIN_FAILURES {
            inner.store.remove_pending(rid).await;
            return error_page(
                StatusCode::UNAUTHORIZED,
                "too many failed sign-in attempts; start again from the application",
            );
        }
        let idps = idp_list(&inner).await;
        return login_page(
            StatusCode::UNAUTHORIZED,
            &display,
            rid,
            csrf,
            Some("Invalid username or password."),
            true,
            &idps,
        );
    };
    inner.throttle.success(&user_key);
    let cookie = match inner.store.new_session(&user.username).await {
        Ok(c) => c,
        Err(d) => return error_page(StatusCode::SERVICE_UNAVAILABLE, d),
    };
    // Bind the pending request to this user and rotate its CSRF token.
    let Ok(new_csrf) = store::random_token() else {
        return error_page(StatusCode::INTERNAL_SERVER_ERROR, "random generator failed");
    };
    if !inner
        .store
        .bind_pending(rid, p.clone(), &user.username, &new_csrf)
        .await
    {
        return error_page(StatusCode::BAD_REQUEST, "this sign-in request has expired");
    }
    let scopes = inner.grant_user_scopes(&user, p.scope.as_deref());
    let mut r = consent_page(
        &user.username,
        &display,
        &scopes,
        &p.resource,
        rid,
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

/// `POST /consent`: approve → 302 with `code`; deny → 302 with `error=access_denied`.
pub async fn consent(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = cross_site(&inner, &headers) {
        return r;
    }
    let Ok(f) = parse_form(&body) else {
        return error_page(StatusCode::BAD_REQUEST, "malformed form");
    };
    let (Some(rid), Some(csrf)) = (param(&f, "request_id"), param(&f, "csrf_token")) else {
        return error_page(StatusCode::BAD_REQUEST, "the consent form is incomplete");
    };
    let Some((p, _)) = inner.store.pending_checked(rid, csrf).await else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "this authorization request has expired or is invalid",
        );
    };
    // The consent must come from the browser session of the user who signed in.
    let session_user = match session_cookie(&headers) {
        Some(c) => inner.store.session_user(&c).await,
        None => None,
    };
    let (Some(su), Some(pu)) = (session_user, p.username.as_deref()) else {
        return error_page(StatusCode::FORBIDDEN, "not signed in");
    };
    if su != pu {
        return error_page(StatusCode::FORBIDDEN, "session does not match this request");
    }
    // Single use: the pending request is consumed whatever the decision, by exactly one
    // request (a second submit, on any replica, finds it gone).
    if !inner.store.remove_pending(rid).await {
        return error_page(
            StatusCode::BAD_REQUEST,
            "this authorization request has already been answered",
        );
    }
    let state = p.state.as_deref();
    let iss = inner.cfg.issuer.clone();
    match param(&f, "decision") {
        Some("approve") => {}
        _ => {
            return redirect_error(
                &inner,
                &p.redirect_uri,
                state,
                "access_denied",
                "the user denied the request",
            );
        }
    }
    let Some(user) = inner.user(&su).await else {
        return error_page(StatusCode::FORBIDDEN, "unknown user");
    };
    let scopes = inner.grant_user_scopes(&user, p.scope.as_deref());
    let now = inner.store.now();
    let consent = super::records::Consent {
        username: su.clone(),
        client_id: p.client_id.clone(),
        scopes: scopes.clone(),
        resource: p.resource.clone(),
        at: now,
    };
    let keep = now + inner.cfg.refresh_token_ttl.as_secs() as i64;
    if let Err(d) = inner.store.record_consent(&consent, keep).await {
        return redirect_error(&inner, &p.redirect_uri, state, "temporarily_unavailable", d);
    }
    let code = inner
        .store
        .add_code(CodeData {
            client_id: p.client_id.clone(),
            redirect_uri: p.redirect_uri.clone(),
            username: su.clone(),
            scopes,
            resource: p.resource.clone(),
            code_challenge: p.code_challenge.clone(),
            expires: inner.store.now() + inner.cfg.code_ttl.as_secs() as i64,
        })
        .await;
    let code = match code {
        Ok(c) => c,
        Err(d) => {
            return redirect_error(&inner, &p.redirect_uri, state, "temporarily_unavailable", d);
        }
    };
    let mut params = vec![("code", code.as_str())];
    if let Some(s) = state {
        params.push(("state", s));
    }
    params.push(("iss", iss.as_str()));
    redirect_with(&p.redirect_uri, &params)
}
