//! Client authentication at the token endpoint: none, client_secret_basic, client_secret_post, private_key_jwt (RFC 7523).

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{HeaderMap, header};
use base64::Engine as _;

use super::Inner;
use super::clients::Client;
use super::pages::param;
use super::store::sha256_hex;
use super::token::OAuthError;

pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How the client authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    None,
    Basic,
    Post,
    PrivateKeyJwt,
}

/// An authenticated (or, for public clients, identified) client.
pub struct Authed {
    pub client: Arc<Client>,
    pub method: Method,
}

fn pct_decode(s: &str) -> Option<String> {
    // RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding.
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = b.get(i + 1..i + 3)?;
                let h = std::str::from_utf8(h).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn basic_credentials(h: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let mut it = h.get_all(header::AUTHORIZATION).iter();
    let Some(v) = it.next() else { return Ok(None) };
    if it.next().is_some() {
        return Err(OAuthError::invalid_request("two Authorization headers"));
    }
    let bad = || OAuthError::invalid_client_basic("malformed Basic credentials");
    let v = v.to_str().map_err(|_| bad())?;
    let (scheme, rest) = v.split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client_basic(
            "unsupported Authorization scheme",
        ));
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (id, secret) = raw.split_once(':').ok_or_else(bad)?;
    Ok(Some((
        pct_decode(id).ok_or_else(bad)?,
        pct_decode(secret).ok_or_else(bad)?,
    )))
}

fn secret_matches(client: &Client, presented: &str) -> bool {
    match &client.secret_sha256 {
        Some(h) => aws_lc_rs::constant_time::verify_slices_are_equal(
            h.as_bytes(),
            sha256_hex(presented).as_bytes(),
        )
        .is_ok(),
        None => false,
    }
}

/// Identify and authenticate the client of a token request.
pub async fn authenticate(
    inner: &Inner,
    headers: &HeaderMap,
    f: &HashMap<String, String>,
) -> Result<Authed, OAuthError> {
    let basic = basic_credentials(headers)?;
    let post_secret = param(f, "client_secret");
    let assertion = param(f, "client_assertion");
    let form_id = param(f, "client_id");
    let n = usize::from(basic.is_some())
        + usize::from(post_secret.is_some())
        + usize::from(assertion.is_some());
    if n > 1 {
        return Err(OAuthError::invalid_request(
            "more than one client authentication method",
        ));
    }
    if let Some((id, secret)) = basic {
        if form_id.is_some_and(|f| f != id) {
            return Err(OAuthError::invalid_request("client_id mismatch"));
        }
        let client = inner
            .client(&id)
            .await
            .ok_or_else(|| OAuthError::invalid_client_basic("client authentication failed"))?;
        if client.public {
            // Some public clients send Basic with an empty secret.
            if secret.is_empty() {
                return Ok(Authed {
                    client,
                    method: Method::None,
                });
            }
            return Err(OAuthError::invalid_client_basic(
                "client authentication failed",
            ));
        }
        if !secret_matches(&client, &secret) {
            return Err(OAuthError::invalid_client_basic(
                "client authentication failed",
            ));
        }
        return Ok(Authed {
            client,
            method: Method::Basic,
        });
    }
    if let Some(a) = assertion {
        if param(f, "client_assertion_type") != Some(ASSERTION_TYPE) {
            return Err(OAuthError::invalid_request(
                "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ));
        }
        let client = verify_assertion(inner, a, form_id).await?;
        return Ok(Authed {
            client,
            method: Method::PrivateKeyJwt,
        });
    }
    let id = form_id.ok_or_else(|| OAuthError::invalid_client("client authentication missing"))?;
    let client = inner
        .client(id)
        .await
        .ok_or_else(|| OAuthError::invalid_client("client authentication failed"))?;
    match post_secret {
        Some(s) if !client.public && secret_matches(&client, s) => Ok(Authed {
            client,
            method: Method::Post,
        }),
        Some(_) => Err(OAuthError::invalid_client("client authentication failed")),
        None if client.public => Ok(Authed {
            client,
            method: Method::None,
        }),
        None => Err(OAuthError::invalid_client("client authentication missing")),
    }
}

/// RFC 7523 §3: iss = sub = client_id, aud = token endpoint or issuer, exp, single-use jti.
async fn verify_assertion(
    inner: &Inner,
    assertion: &str,
    form_id: Option<&str>,
) -> Result<Arc<Client>, OAuthError> {
    let fail = || OAuthError::invalid_client("client assertion rejected");
    let decoded = dataplane::auth::jwt::decode(assertion, 8192, &[]).map_err(|_| fail())?;
    // The issuer (client id) is read unverified only to pick the key set; it is checked after the signature.
    let id = decoded.issuer_hint.clone().ok_or_else(fail)?;
    if form_id.is_some_and(|f| f != id) {
        return Err(fail());
    }
    let client = inner.client(&id).await.ok_or_else(fail)?;
    let keys = client.jwks.as_ref().ok_or_else(fail)?;
    let policy = dataplane::auth::jwt::ValidationPolicy {
        issuer: id.clone(),
        audiences: vec![inner.token_endpoint(), inner.cfg.issuer.clone()],
        leeway_secs: 30,
        max_lifetime_secs: 600,
        token_types: Vec::new(),
    };
    let claims = dataplane::auth::jwt::verify(&decoded, keys, &policy, inner.store.now())
        .map_err(|_| fail())?;
    if claims.sub != id {
        return Err(fail());
    }
    let jti = claims
        .jti
        .as_deref()
        .filter(|j| !j.is_empty())
        .ok_or_else(fail)?;
    if !inner.store.first_jti(&id, jti, claims.exp + 30).await {
        return Err(OAuthError::invalid_client("client assertion replayed"));
    }
    Ok(client)
}
