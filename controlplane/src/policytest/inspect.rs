//! `warden token inspect`: decode a token without trusting it, then validate it exactly as
//! the gateway would (the issuer's JWKS fetched now, `dataplane::auth::verify_uncached`) and
//! say what Warden concludes. Never prints the signature, the raw token or its `jti`.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dataplane::auth::{AuthOutcome, verify_uncached};
use dataplane::clock::Clock;
use serde_json::Value;

use super::suite::PrincipalSpec;
use crate::Config;
use crate::issuers::IssuerRuntime;

/// A token's header and claims, decoded and not trusted.
#[derive(Debug, Clone)]
pub struct Unverified {
    pub header: Value,
    pub claims: Value,
}

/// Split and decode a compact JWS without checking anything.
pub fn decode(token: &str) -> Result<Unverified, String> {
    let parts: Vec<&str> = token.trim().split('.').collect();
    let [h, p, _sig] = parts[..] else {
        return Err("not a compact JWS (three dot-separated parts)".into());
    };
    let part = |name: &str, s: &str| -> Result<Value, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| format!("{name} is not base64url"))?;
        serde_json::from_slice(&bytes).map_err(|_| format!("{name} is not a JSON object"))
    };
    Ok(Unverified {
        header: part("header", h)?,
        claims: part("payload", p)?,
    })
}

fn list(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => Some(
            s.split(' ')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        Value::Array(a) => Some(
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
        ),
        _ => None,
    }
}

/// The claims of an unverified token as a principal (for `policy explain --token`).
pub fn unverified_claims(token: &str) -> Result<PrincipalSpec, String> {
    let c = decode(token)?.claims;
    let s = |k: &str| c[k].as_str().map(str::to_owned);
    Ok(PrincipalSpec {
        user: None,
        iss: s("iss"),
        sub: s("sub"),
        email: s("email"),
        scopes: list(&c["scope"])
            .or_else(|| list(&c["scp"]))
            .or(Some(Vec::new())),
        groups: list(&c["groups"]).or(Some(Vec::new())),
        client: s("client_id").or_else(|| s("azp")),
        act: Some(dataplane::audit::actors(None, c.get("act"))),
    })
}

/// What `token inspect` found, in words; `valid` is the verdict.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub text: String,
    pub valid: bool,
}

/// Decode, then validate against the configured issuers at `clock`'s time.
pub async fn inspect(cfg: &Config, token: &str, clock: &Clock) -> Inspection {
    let mut text = String::new();
    let u = match decode(token) {
        Ok(u) => u,
        Err(e) => {
            return Inspection {
                text: format!("not a token Warden can read: {e}\n"),
                valid: false,
            };
        }
    };
    let h = &u.header;
    let _ = writeln!(
        text,
        "header: alg {} kid {} typ {}",
        h["alg"], h["kid"], h["typ"]
    );
    let c = &u.claims;
    let now = clock.unix_secs();
    let _ = writeln!(text, "claims (not yet trusted):");
    for k in [
        "iss",
        "sub",
        "aud",
        "client_id",
        "azp",
        "email",
        "scope",
        "scp",
        "groups",
        "act",
    ] {
        if !c[k].is_null() {
            let _ = writeln!(text, "  {k}: {}", c[k]);
        }
    }
    for k in ["iat", "nbf", "exp"] {
        if let Some(t) = c[k].as_i64() {
            let _ = writeln!(text, "  {k}: {t} ({:+} s from now)", t - now);
        }
    }
    if !c["jti"].is_null() {
        let _ = writeln!(text, "  jti: present (not shown)");
    }
    let iss = c["iss"].as_str().unwrap_or_default();
    let Some(ic) = cfg.issuers.iter().find(|i| i.issuer == iss) else {
        let trusted: Vec<&str> = cfg.issuers.iter().map(|i| i.issuer.as_str()).collect();
        let _ = writeln!(
            text,
            "verdict: refused: issuer {iss:?} is not trusted (trusted: {trusted:?})"
        );
        return Inspection { text, valid: false };
    };
    let public = cfg.gateway.public_url.to_string();
    let mut rt = match IssuerRuntime::new(ic.clone(), &public, clock.clone()).with_ca() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(text, "verdict: cannot check: {e}");
            return Inspection { text, valid: false };
        }
    };
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(3))
        .timeout(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build();
    let fetched = match &http {
        Ok(h) => rt.refresh(h).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = fetched {
        let _ = writeln!(
            text,
            "verdict: cannot check: the issuer's keys could not be fetched: {e}"
        );
        return Inspection { text, valid: false };
    }
    let states = [rt.state()];
    match verify_uncached(token.trim(), &states, cfg.limits.max_token_bytes, now).0 {
        AuthOutcome::Valid(claims) => {
            let _ = writeln!(
                text,
                "verdict: valid: Warden accepts it (issuer {}, sub {}, scopes [{}], expires in {} s)",
                claims.iss,
                claims.sub,
                claims.scopes.join(" "),
                claims.exp - now
            );
            Inspection { text, valid: true }
        }
        AuthOutcome::Invalid(e) => {
            let _ = writeln!(text, "verdict: refused: {e} ({})", e.label());
            Inspection { text, valid: false }
        }
        AuthOutcome::UnknownKid { .. } => {
            let _ = writeln!(
                text,
                "verdict: refused: its kid is not among the keys the issuer publishes now"
            );
            Inspection { text, valid: false }
        }
    }
}
