//! Who may read the console: anyone who reaches a loopback admin listener; otherwise (or
//! when `admin.console.require_auth` is set) only a bearer token from a trusted issuer
//! carrying the admin scope, or the configured static credential (compared in constant time).
//! Fails closed: with neither configured, a non-loopback console answers 401 to everyone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use dataplane::auth::{AuthOutcome, IssuerState, TokenCache};
use serde::Deserialize;

/// The `admin.console` block of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Require authentication even on a loopback listener (a shared host).
    #[serde(default)]
    pub require_auth: bool,
    /// The scope a bearer token from a trusted issuer must carry.
    #[serde(default = "default_scope")]
    pub admin_scope: String,
    /// A file holding a static bearer credential (one line, at least 32 characters).
    #[serde(default)]
    pub credential_file: Option<PathBuf>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            require_auth: false,
            admin_scope: default_scope(),
            credential_file: None,
        }
    }
}

fn default_scope() -> String {
    "warden:admin".into()
}

/// Why the console's static credential could not be loaded (the operator's file).
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("admin.console.credential_file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin.console.credential_file {}: shorter than 32 characters", path.display())]
    TooShort { path: PathBuf },
}

/// The decided access rule, built once at start.
#[derive(Clone)]
pub struct Access {
    required: bool,
    scope: String,
    /// SHA-256 of the static credential.
    credential: Option<[u8; 32]>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("required", &self.required)
            .field("scope", &self.scope)
            .field("credential", &self.credential.map(|_| "..."))
            .finish()
    }
}

fn sha(b: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b);
    let mut k = [0u8; 32];
    k.copy_from_slice(d.as_ref());
    k
}

/// Why a console request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No usable credential (401).
    #[error("the console requires a bearer token (admin scope) or the console credential")]
    Missing,
    /// A token that did not verify, or a wrong credential (401).
    #[error("the bearer token or credential was not accepted")]
    Invalid,
    /// A valid token without the admin scope (403).
    #[error("the token lacks the console's admin scope")]
    Scope,
}

impl Access {
    /// The rule for a listener at `listen`: loopback is open unless `require_auth`.
    pub fn new(listen: SocketAddr, cfg: &ConsoleConfig) -> Result<Access, CredentialError> {
        let credential = match &cfg.credential_file {
            Some(path) => {
                let raw =
                    std::fs::read_to_string(path).map_err(|source| CredentialError::Read {
                        path: path.clone(),
                        source,
                    })?;
                let c = raw.trim();
                if c.len() < 32 {
                    return Err(CredentialError::TooShort { path: path.clone() });
                }
                Some(sha(c.as_bytes()))
            }
            None => None,
        };
        Ok(Access {
            required: cfg.require_auth || !listen.ip().is_loopback(),
            scope: cfg.admin_scope.clone(),
            credential,
        })
    }

    pub fn required(&self) -> bool {
        self.required
    }

    /// Check one request's `Authorization` header value.
    pub fn check(
        &self,
        authorization: Option<&str>,
        issuers: &[Arc<IssuerState>],
        max_token_bytes: usize,
        now_secs: i64,
    ) -> Result<(), Denied> {
        if !self.required {
            return Ok(());
        }
        let token = authorization
            .and_then(|h| {
                h.split_once(' ')
                    .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
            })
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty())
            .ok_or(Denied::Missing)?;
        if let Some(want) = &self.credential {
            // Equal-length digests compared in constant time: neither the credential's
            // length nor its prefix leaks through timing.
            if aws_lc_rs::constant_time::verify_slices_are_equal(&sha(token.as_bytes()), want)
                .is_ok()
            {
                return Ok(());
            }
        }
        // A one-entry cache: the same strict verification as the data plane, no state kept.
        match TokenCache::new(1)
            .authenticate(token, issuers, max_token_bytes, now_secs)
            .0
        {
            AuthOutcome::Valid(c) if c.scopes.contains(&self.scope) => Ok(()),
            AuthOutcome::Valid(_) => Err(Denied::Scope),
            _ => Err(Denied::Invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_open_anything_else_requires_auth() {
        let cfg = ConsoleConfig::default();
        let open = |a: &str| !Access::new(a.parse().unwrap(), &cfg).unwrap().required();
        assert!(open("127.0.0.1:9090"));
        assert!(open("[::1]:9090"));
        assert!(!open("0.0.0.0:9090"));
        assert!(!open("[::]:9090"));
        assert!(!open("10.1.2.3:9090"));
        let forced = ConsoleConfig {
            require_auth: true,
            ..ConsoleConfig::default()
        };
        assert!(
            Access::new("127.0.0.1:1".parse().unwrap(), &forced)
                .unwrap()
                .required()
        );
    }

    #[test]
    fn static_credential_and_fail_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cred");
        let cred = "0123456789abcdef0123456789abcdef-console";
        std::fs::write(&path, format!("{cred}\n")).unwrap();
        let cfg = ConsoleConfig {
            credential_file: Some(path.clone()),
            ..ConsoleConfig::default()
        };
        let a = Access::new("0.0.0.0:9090".parse().unwrap(), &cfg).unwrap();
        let check = |h: Option<&str>| a.check(h, &[], 8192, 0);
        assert_eq!(check(Some(&format!("Bearer {cred}"))), Ok(()));
        assert_eq!(check(Some(&format!("bearer {cred}"))), Ok(()));
        assert_eq!(
            check(Some(&format!("Bearer {cred}x"))),
            Err(Denied::Invalid)
        );
        assert_eq!(check(Some("Bearer 0123")), Err(Denied::Invalid));
        assert_eq!(check(Some(&format!("Basic {cred}"))), Err(Denied::Missing));
        assert_eq!(check(None), Err(Denied::Missing));
        // Nothing configured on a public listener: nobody gets in.
        let closed =
            Access::new("0.0.0.0:9090".parse().unwrap(), &ConsoleConfig::default()).unwrap();
        assert_eq!(
            closed.check(Some(&format!("Bearer {cred}")), &[], 8192, 0),
            Err(Denied::Invalid)
        );
        // The credential never shows in Debug.
        assert!(!format!("{a:?}").contains("0123456789"));
        // A short credential is refused at start.
        std::fs::write(&path, "short").unwrap();
        assert!(matches!(
            Access::new("0.0.0.0:1".parse().unwrap(), &cfg),
            Err(CredentialError::TooShort { .. })
        ));
    }
}
