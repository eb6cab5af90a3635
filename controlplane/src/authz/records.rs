//! Token-hygiene and consent records on the state store (SQLite or PostgreSQL, shared by
//! replicas): what each redeemed code issued (a replayed code revokes it, RFC 6749 §4.1.2),
//! revoked access-token `jti`s (RFC 7009, reported by introspection), the refresh-token reuse
//! grace window, and consent per user and client.

use serde::{Deserialize, Serialize};

use super::store::{Store, refuse, sha256_hex, warn};
use crate::state::Kind;

pub const MAX_CODE_GRANTS: usize = 1_000_000;
pub const MAX_REVOKED: usize = 1_000_000;
pub const MAX_GRACE: usize = 100_000;
pub const MAX_CONSENTS: usize = 1_000_000;

/// What one authorization code issued.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodeGrant {
    pub family: Option<String>,
    pub jti: String,
    /// The access token's expiry (its jti is revoked until then).
    pub exp: i64,
}

/// A user's recorded consent to a client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Consent {
    pub username: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub resource: String,
    pub at: i64,
}

fn consent_key(user: &str, client: &str) -> String {
    sha256_hex(&format!("{user}\u{0}{client}"))
}

impl Store {
    /// Remember what `code` issued, until `until`.
    pub async fn link_code(
        &self,
        code: &str,
        g: &CodeGrant,
        until: i64,
    ) -> Result<(), &'static str> {
        let v = serde_json::to_string(g).map_err(|_| "cannot encode the grant")?;
        self.db
            .insert_record(
                Kind::CodeGrant,
                &sha256_hex(code),
                &v,
                until,
                MAX_CODE_GRANTS,
            )
            .await
            .map(|_| ())
            .map_err(refuse)
    }

    /// What a (spent) code issued, if it was redeemed.
    pub async fn code_grant(&self, code: &str) -> Option<CodeGrant> {
        let (v, _) = (self.db.get_record(Kind::CodeGrant, &sha256_hex(code)).await)
            .map_err(|e| warn(&e))
            .ok()??;
        serde_json::from_str(&v).ok()
    }

    /// Revoke an access token by `jti` until its expiry.
    pub async fn revoke_jti(&self, jti: &str, exp: i64) -> Result<(), &'static str> {
        if exp <= self.now() {
            return Ok(());
        }
        self.db
            .insert_record(Kind::RevokedJti, &sha256_hex(jti), "", exp, MAX_REVOKED)
            .await
            .map(|_| ())
            .map_err(refuse)
    }

    /// Whether an access token was revoked; a store error counts as revoked (fail closed).
    pub async fn jti_revoked(&self, jti: &str) -> bool {
        match self.db.get_record(Kind::RevokedJti, &sha256_hex(jti)).await {
            Ok(r) => r.is_some(),
            Err(e) => {
                warn(&e);
                true
            }
        }
    }

    /// Open the reuse grace of a just-spent refresh token (by hash) until `until`.
    pub async fn open_grace(&self, hash: &str, until: i64) {
        if let Err(e) = (self.db)
            .insert_record(Kind::RefreshGrace, hash, "", until, MAX_GRACE)
            .await
        {
            warn(&e);
        }
    }

    /// Whether a spent refresh token (by hash) is still within its reuse grace.
    pub async fn in_grace(&self, hash: &str) -> bool {
        matches!(
            self.db.get_record(Kind::RefreshGrace, hash).await,
            Ok(Some(_))
        )
    }

    /// Record (or replace) a user's consent to a client.
    pub async fn record_consent(&self, c: &Consent, until: i64) -> Result<(), &'static str> {
        let key = consent_key(&c.username, &c.client_id);
        let v = serde_json::to_string(c).map_err(|_| "cannot encode the consent")?;
        let _ = self
            .db
            .take_record(Kind::Consent, &key)
            .await
            .map_err(refuse)?;
        self.db
            .insert_record(Kind::Consent, &key, &v, until, MAX_CONSENTS)
            .await
            .map(|_| ())
            .map_err(refuse)
    }

    pub async fn consent(&self, user: &str, client: &str) -> Option<Consent> {
        let (v, _) = (self
            .db
            .get_record(Kind::Consent, &consent_key(user, client))
            .await)
            .map_err(|e| warn(&e))
            .ok()??;
        serde_json::from_str(&v).ok()
    }
}
