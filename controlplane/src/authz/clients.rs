//! Clients: configured ones validated at start, dynamically registered loopback ones, redirect URI rules.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dataplane::auth::jwks::KeySet;
use jsonwebtoken::Algorithm;

use super::AuthServerConfig;
use super::store::sha256_hex;

pub const GRANT_CODE: &str = "authorization_code";
pub const GRANT_REFRESH: &str = "refresh_token";
pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
pub const GRANT_PASSWORD: &str = "password";
pub const GRANT_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 7523 §2.1, with an ID-JAG (enterprise-managed authorization).
pub const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub const ALL_GRANTS: [&str; 6] = [
    GRANT_CODE,
    GRANT_REFRESH,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_PASSWORD,
    GRANT_EXCHANGE,
    GRANT_JWT_BEARER,
];

/// Algorithms accepted for client assertions.
pub const ASSERTION_ALGS: [Algorithm; 6] = [
    Algorithm::EdDSA,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::PS384,
];

/// A client as the handlers see it.
pub struct Client {
    pub id: String,
    pub public: bool,
    /// SHA-256 of the secret (compared in constant time).
    pub secret_sha256: Option<String>,
    pub jwks: Option<KeySet>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub allowed_audiences: Vec<String>,
    pub scopes: Vec<String>,
    pub exchange_ttl: Duration,
    /// Display name for the consent page (registered clients may send one).
    pub name: Option<String>,
    pub dynamic: bool,
    /// RFC 9449 §5.2: every token request must carry a DPoP proof.
    pub dpop_bound_access_tokens: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("public", &self.public)
            .field("dynamic", &self.dynamic)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// The name shown on the consent page; self-registered clients are marked as unverified.
    pub fn display_name(&self) -> String {
        match (&self.name, self.dynamic) {
            (Some(n), true) => format!("{n} (self-registered {}, unverified)", self.id),
            (None, true) => format!("{} (self-registered, unverified)", self.id),
            (Some(n), false) => n.clone(),
            (None, false) => self.id.clone(),
        }
    }

    pub fn allows(&self, grant: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant)
    }
}

/// Why a redirect URI is refused (RFC 6749 §3.1.2: absolute, no fragment).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectUriError {
    #[error("redirect URI {0:?} is not absolute ({1})")]
    NotAbsolute(String, url::ParseError),
    #[error("redirect URI {0:?} has a fragment")]
    Fragment(String),
    #[error("redirect URI {0:?} is not a hierarchical URL")]
    NotHierarchical(String),
}

/// Absolute URL without a fragment.
pub fn check_redirect_uri(u: &str) -> Result<url::Url, RedirectUriError> {
    let p = url::Url::parse(u).map_err(|e| RedirectUriError::NotAbsolute(u.to_owned(), e))?;
    if p.fragment().is_some() {
        return Err(RedirectUriError::Fragment(u.to_owned()));
    }
    if p.cannot_be_a_base() {
        return Err(RedirectUriError::NotHierarchical(u.to_owned()));
    }
    Ok(p)
}

/// `http://localhost:*`, `http://127.0.0.1:*` or `http://[::1]:*` (RFC 8252 §7.3), no userinfo.
pub fn is_loopback_http(u: &str) -> bool {
    let Ok(p) = check_redirect_uri(u) else {
        return false;
    };
    if p.scheme() != "http" || !p.username().is_empty() || p.password().is_some() {
        return false;
    }
    match p.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a == std::net::Ipv4Addr::LOCALHOST,
        Some(url::Host::Ipv6(a)) => a == std::net::Ipv6Addr::LOCALHOST,
        None => false,
    }
}

/// Validate the configured clients and load their secrets and keys.
pub fn from_config(cfg: &AuthServerConfig) -> Result<HashMap<String, Arc<Client>>, String> {
    let mut out = HashMap::new();
    for c in &cfg.clients {
        let id = &c.client_id;
        if id.is_empty() || id.len() > 200 {
            return Err("authz.clients: client_id empty or too long".into());
        }
        if out.contains_key(id) {
            return Err(format!("authz.clients: client_id {id:?} appears twice"));
        }
        let secret_sha256 = match (&c.secret_env, c.public) {
            (Some(_), true) => {
                return Err(format!(
                    "authz.clients[{id}]: a public client must not have secret_env"
                ));
            }
            (Some(var), false) => {
                let s = std::env::var(var).map_err(|_| {
                    format!(
                        "authz.clients[{id}]: environment variable {var} (secret_env) is not set"
                    )
                })?;
                if s.len() < 16 {
                    return Err(format!(
                        "authz.clients[{id}]: the secret in {var} is shorter than 16 characters"
                    ));
                }
                Some(sha256_hex(&s))
            }
            (None, _) => None,
        };
        if c.public && c.jwks.is_some() {
            return Err(format!(
                "authz.clients[{id}]: a public client must not have jwks"
            ));
        }
        if !c.public && secret_sha256.is_none() && c.jwks.is_none() {
            return Err(format!(
                "authz.clients[{id}]: a confidential client needs secret_env (or jwks for private_key_jwt)"
            ));
        }
        let jwks = match &c.jwks {
            None => None,
            Some(v) => Some(
                dataplane::auth::jwks::parse_jwks(v.to_string().as_bytes(), &ASSERTION_ALGS)
                    .map_err(|e| format!("authz.clients[{id}].jwks: {e}"))?,
            ),
        };
        for u in &c.redirect_uris {
            check_redirect_uri(u).map_err(|e| format!("authz.clients[{id}]: {e}"))?;
        }
        let grant_types = if c.grant_types.is_empty() {
            vec![GRANT_CODE.to_owned(), GRANT_REFRESH.to_owned()]
        } else {
            c.grant_types.clone()
        };
        for g in &grant_types {
            if !ALL_GRANTS.contains(&g.as_str()) {
                return Err(format!("authz.clients[{id}]: unknown grant type {g:?}"));
            }
            if c.public
                && (g == GRANT_CLIENT_CREDENTIALS || g == GRANT_EXCHANGE || g == GRANT_JWT_BEARER)
            {
                return Err(format!(
                    "authz.clients[{id}]: a public client cannot use {g}"
                ));
            }
        }
        if grant_types.iter().any(|g| g == GRANT_CODE) && c.redirect_uris.is_empty() {
            return Err(format!(
                "authz.clients[{id}]: authorization_code needs at least one redirect URI"
            ));
        }
        let exchange_ttl = c.exchange_token_ttl.unwrap_or(Duration::from_secs(5));
        if exchange_ttl.is_zero() {
            return Err(format!("authz.clients[{id}]: exchange_token_ttl is zero"));
        }
        out.insert(
            id.clone(),
            Arc::new(Client {
                id: id.clone(),
                public: c.public,
                secret_sha256,
                jwks,
                redirect_uris: c.redirect_uris.clone(),
                grant_types,
                allowed_audiences: c.allowed_audiences.clone(),
                scopes: c.scopes.clone(),
                exchange_ttl,
                name: None,
                dynamic: false,
                dpop_bound_access_tokens: c.dpop_bound_access_tokens,
            }),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_rules() {
        assert!(is_loopback_http("http://localhost:3334/oauth/callback"));
        assert!(is_loopback_http("http://127.0.0.1:1/cb"));
        assert!(is_loopback_http("http://[::1]:8080/cb"));
        assert!(!is_loopback_http("https://localhost:3334/cb"));
        assert!(!is_loopback_http("http://evil.example/cb"));
        assert!(!is_loopback_http("http://localhost.evil.example/cb"));
        assert!(!is_loopback_http("http://user@localhost/cb"));
        assert!(!is_loopback_http("http://localhost/cb#frag"));
        assert!(!is_loopback_http("http://127.0.0.2/cb"));
    }
}
