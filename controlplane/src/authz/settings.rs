//! Configuration of upstream OpenID Connect connectors (federated login) and its validation.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// One upstream OpenID Connect IdP the login page offers (`authorization_server.connectors[]`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// Short id, `[a-z0-9-]`, unique: part of URLs and of the audit trail.
    pub id: String,
    /// What the login page shows (default: the id).
    #[serde(default)]
    pub name: Option<String>,
    /// The IdP's issuer; ID tokens must carry exactly this `iss`.
    pub issuer: String,
    /// OIDC discovery document (default `<issuer>/.well-known/openid-configuration`).
    #[serde(default)]
    pub discovery_url: Option<String>,
    /// Warden's client id at the IdP; ID tokens must have it in `aud`.
    pub client_id: String,
    /// client_secret_basic: the environment variable holding the secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// private_key_jwt (RFC 7523): PKCS#8 PEM private key file.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// Algorithm of `private_key_file` (default RS256).
    #[serde(default = "default_key_alg")]
    pub private_key_alg: String,
    /// `kid` to put in client assertions.
    #[serde(default)]
    pub private_key_id: Option<String>,
    /// Scopes asked of the IdP (default `openid email profile`).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub claims: ClaimsMapping,
    /// If not empty, only users whose (verified) email is in one of these domains may sign in.
    #[serde(default)]
    pub allowed_email_domains: Vec<String>,
    /// Extra trust anchor (PEM) for the IdP's https endpoints (private CAs, tests).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Timeout for each request to the IdP.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Re-read the discovery document and JWKS this often.
    #[serde(default = "default_refresh", with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// At most one unknown-`kid` JWKS refetch per this interval.
    #[serde(default = "default_min_refetch", with = "humantime_serde")]
    pub min_refetch_interval: Duration,
    /// Accept ID-JAGs (`typ: oauth-id-jag+jwt`) signed by this IdP at the token endpoint
    /// (enterprise-managed authorization, the jwt-bearer grant).
    #[serde(default)]
    pub accept_id_jag: bool,
    /// Clock skew tolerated on `exp`/`iat`/`nbf`.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
}

impl std::fmt::Debug for ConnectorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorConfig")
            .field("id", &self.id)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret_env", &self.client_secret_env)
            .field("private_key_file", &self.private_key_file)
            .finish_non_exhaustive()
    }
}

/// Which ID-token claims become the Warden user's name, email, display name and groups.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimsMapping {
    #[serde(default = "c_sub")]
    pub sub: String,
    #[serde(default = "c_email")]
    pub email: String,
    #[serde(default = "c_name")]
    pub name: String,
    #[serde(default = "c_groups")]
    pub groups: String,
}

impl Default for ClaimsMapping {
    fn default() -> Self {
        ClaimsMapping {
            sub: c_sub(),
            email: c_email(),
            name: c_name(),
            groups: c_groups(),
        }
    }
}

fn c_sub() -> String {
    "sub".into()
}
fn c_email() -> String {
    "email".into()
}
fn c_name() -> String {
    "name".into()
}
fn c_groups() -> String {
    "groups".into()
}
fn default_key_alg() -> String {
    "RS256".into()
}
fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_refresh() -> Duration {
    Duration::from_secs(300)
}
fn default_min_refetch() -> Duration {
    Duration::from_secs(10)
}
fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

/// Why a connector's configuration is refused (the operator's block).
#[derive(Debug, thiserror::Error)]
pub enum ConnectorConfigError {
    #[error("authz.connectors: id {0:?} empty, not [a-z0-9-], or duplicated")]
    BadId(String),
    #[error("authz.connectors[{id}].{field}: {why}")]
    Field {
        id: String,
        field: &'static str,
        why: String,
    },
}

/// Validate every connector (ids, URLs, exactly one client authentication method).
pub fn validate(list: &[ConnectorConfig]) -> Result<(), ConnectorConfigError> {
    let mut seen = std::collections::HashSet::new();
    for c in list {
        let id_ok = !c.id.is_empty()
            && c.id.len() <= 64
            && c.id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !id_ok || !seen.insert(c.id.as_str()) {
            return Err(ConnectorConfigError::BadId(c.id.clone()));
        }
        let field = |field: &'static str, why: String| ConnectorConfigError::Field {
            id: c.id.clone(),
            field,
            why,
        };
        for (name, u) in [
            ("issuer", Some(&c.issuer)),
            ("discovery_url", c.discovery_url.as_ref()),
        ] {
            let Some(u) = u else { continue };
            let p = url::Url::parse(u).map_err(|e| field(name, format!("{u:?}: {e}")))?;
            if !matches!(p.scheme(), "http" | "https") {
                return Err(field(name, format!("{u:?}: must be http(s)")));
            }
        }
        if c.client_id.is_empty() {
            return Err(field("client_id", "must not be empty".into()));
        }
        match (&c.client_secret_env, &c.private_key_file) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(field(
                    "client_secret_env",
                    "exactly one of client_secret_env and private_key_file".into(),
                ));
            }
            (Some(v), None) => {
                if std::env::var(v).map(|s| s.is_empty()).unwrap_or(true) {
                    return Err(field("client_secret_env", format!("{v} is not set")));
                }
            }
            (None, Some(_)) => {
                if !matches!(c.private_key_alg.as_str(), "RS256" | "ES256" | "PS256") {
                    return Err(field(
                        "private_key_alg",
                        format!("{:?}: RS256, PS256 or ES256", c.private_key_alg),
                    ));
                }
            }
        }
        if !c.scopes.iter().any(|s| s == "openid") {
            return Err(field("scopes", "must include openid".into()));
        }
    }
    Ok(())
}
