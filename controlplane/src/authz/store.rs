//! The authorization server's state on the [`StateStore`]: pending requests, login sessions, codes, refresh tokens, registered clients, assertion jtis.
//!
//! Every secret (code, refresh token, session cookie, request id) is stored and looked up by
//! its SHA-256 only. A store error fails closed: the lookup finds nothing, the insert is refused.

use std::sync::Arc;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use super::clients::Client;
use crate::state::{Kind, StateError, StateStore};

/// Caps that bound the tables whatever unauthenticated callers do.
pub const MAX_PENDING: usize = 10_000;
pub const MAX_SESSIONS: usize = 10_000;
pub const MAX_CODES: usize = 10_000;
pub const MAX_REGISTERED: usize = 1_000;
pub const MAX_JTIS: usize = 100_000;
/// Outstanding DPoP nonces of the token endpoint.
pub const MAX_NONCES: usize = 100_000;
/// Refresh families bound to a DPoP key.
pub const MAX_BINDINGS: usize = 1_000_000;
/// Federated sign-ins in progress, and federated user profiles.
pub const MAX_FED_STATES: usize = 10_000;
pub const MAX_FED_USERS: usize = 1_000_000;
/// A pending authorization request lives this long (login + consent).
pub const PENDING_TTL: i64 = 600;
/// A browser login session lives this long.
pub const SESSION_TTL: i64 = 8 * 3600;
/// Failed logins allowed on one pending request.
pub const MAX_LOGIN_FAILURES: u32 = 5;
/// Registered clients do not expire.
const NEVER: i64 = i64::MAX;

/// The system's random number generator failed (Warden's host, never a caller).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("system RNG failed")]
pub struct RngFailed;

/// 32 random bytes, URL-safe base64 (256 bits).
pub fn random_token() -> Result<String, RngFailed> {
    use base64::Engine as _;
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| RngFailed)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// SHA-256, hex; secrets are stored and looked up by this only.
pub fn sha256_hex(s: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
    dataplane::audit::hex(d.as_ref())
}

/// A validated authorization request waiting for login and consent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub scope: Option<String>,
    pub resource: String,
    pub code_challenge: String,
    /// Anti-CSRF token echoed by the login and consent forms.
    pub csrf: String,
    /// Set once the user logged in (or had a session): consent must come from this user.
    pub username: Option<String>,
    pub expires: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session {
    username: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodeData {
    pub client_id: String,
    pub redirect_uri: String,
    pub username: String,
    pub scopes: Vec<String>,
    pub resource: String,
    pub code_challenge: String,
    pub expires: i64,
}

/// What a refresh token grants (stored as JSON beside its hash and family).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RefreshGrant {
    client_id: String,
    username: String,
    scopes: Vec<String>,
    resource: String,
}

#[derive(Debug, Clone)]
pub struct RefreshData {
    pub(super) hash: String,
    /// A just-rotated token presented again within the reuse grace: refresh again, spend nothing.
    pub retry: bool,
    pub family: String,
    pub client_id: String,
    pub username: String,
    pub scopes: Vec<String>,
    pub resource: String,
    pub expires: i64,
}

/// A dynamically registered client as stored (public, loopback redirect URIs only).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Registered {
    id: String,
    redirect_uris: Vec<String>,
    grant_types: Vec<String>,
    name: Option<String>,
    /// RFC 9449 §5.2 client metadata (absent in rows written before DPoP: false).
    #[serde(default)]
    dpop_bound_access_tokens: bool,
}

/// The authorization server's view of the state store.
pub struct Store {
    pub(super) db: StateStore,
    /// Registered clients never change once stored, so lookups are cached (at most
    /// `MAX_REGISTERED`, the table's own cap).
    clients: DashMap<String, Arc<Client>>,
}

pub(super) fn warn(e: &StateError) {
    tracing::warn!(error = %e, "Authorization server: state store error; failing closed");
}

pub(super) fn refuse(e: StateError) -> &'static str {
    match e {
        StateError::Full(what) => match what {
            "pending authorization requests" => "too many pending authorization requests",
            "sessions" => "too many sessions",
            "outstanding codes" => "too many outstanding codes",
            "DPoP nonces" => "too many outstanding DPoP nonces; try again later",
            "DPoP-bound refresh families" => "too many DPoP-bound refresh tokens",
            _ => "registration limit reached; try again later",
        },
        e => {
            warn(&e);
            "state store unavailable"
        }
    }
}

fn client_of(r: Registered) -> Client {
    Client {
        id: r.id,
        public: true,
        secret_sha256: None,
        jwks: None,
        redirect_uris: r.redirect_uris,
        grant_types: r.grant_types,
        allowed_audiences: Vec::new(),
        scopes: Vec::new(),
        exchange_ttl: std::time::Duration::from_secs(5),
        name: r.name,
        dynamic: true,
        dpop_bound_access_tokens: r.dpop_bound_access_tokens,
    }
}

impl Store {
    /// Unix seconds on the state store's clock (every expiry here is judged by it).
    pub fn now(&self) -> i64 {
        self.db.now()
    }

    pub fn new(db: StateStore) -> Store {
        Store {
            db,
            clients: DashMap::new(),
        }
    }

    pub async fn registered(&self, id: &str) -> Option<Arc<Client>> {
        if let Some(c) = self.clients.get(id) {
            return Some(c.clone());
        }
        let (v, _) = self
            .db
            .get_record(Kind::Client, id)
            .await
            .map_err(|e| warn(&e))
            .ok()??;
        let r: Registered = serde_json::from_str(&v).ok()?;
        let c = Arc::new(client_of(r));
        if self.clients.len() < MAX_REGISTERED {
            self.clients.insert(id.to_owned(), c.clone());
        }
        Some(c)
    }

    /// Store a registered (public, dynamic) client; refused at `MAX_REGISTERED`.
    pub async fn register(
        &self,
        id: &str,
        redirect_uris: &[String],
        grant_types: &[String],
        name: Option<String>,
        dpop_bound_access_tokens: bool,
    ) -> Result<(), &'static str> {
        let r = Registered {
            id: id.to_owned(),
            redirect_uris: redirect_uris.to_vec(),
            grant_types: grant_types.to_vec(),
            name,
            dpop_bound_access_tokens,
        };
        let v = serde_json::to_string(&r).map_err(|_| "cannot encode the client")?;
        match self
            .db
            .insert_record(Kind::Client, id, &v, NEVER, MAX_REGISTERED)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err("client id collision"),
            Err(e) => Err(refuse(e)),
        }
    }

    pub async fn add_pending(&self, p: Pending) -> Result<String, &'static str> {
        let id = random_token().map_err(|_| "RNG failed")?;
        let v = serde_json::to_string(&p).map_err(|_| "cannot encode the request")?;
        match self
            .db
            .insert_record(Kind::Pending, &sha256_hex(&id), &v, p.expires, MAX_PENDING)
            .await
        {
            Ok(true) => Ok(id),
            Ok(false) => Err("request id collision"),
            Err(e) => Err(refuse(e)),
        }
    }

    /// The pending request `id` if it exists, has not expired and `csrf` matches; with its failure count.
    pub async fn pending_checked(&self, id: &str, csrf: &str) -> Option<(Pending, u32)> {
        let (v, failures) = self
            .db
            .get_record(Kind::Pending, &sha256_hex(id))
            .await
            .map_err(|e| warn(&e))
            .ok()??;
        let p: Pending = serde_json::from_str(&v).ok()?;
        let ok = p.expires > self.now()
            && aws_lc_rs::constant_time::verify_slices_are_equal(
                p.csrf.as_bytes(),
                csrf.as_bytes(),
            )
            .is_ok();
        ok.then_some((p, failures.clamp(0, u32::MAX as i64) as u32))
    }

    /// Bind the request to the user who signed in and rotate its CSRF token; false when gone.
    pub async fn bind_pending(&self, id: &str, mut p: Pending, username: &str, csrf: &str) -> bool {
        p.username = Some(username.to_owned());
        p.csrf = csrf.to_owned();
        let Ok(v) = serde_json::to_string(&p) else {
            return false;
        };
        self.db
            .update_record(Kind::Pending, &sha256_hex(id), &v)
            .await
            .map_err(|e| warn(&e))
            .unwrap_or(false)
    }

    /// Count one failed sign-in (atomically, across replicas); the new count.
    pub async fn pending_failure(&self, id: &str) -> u32 {
        match self.db.bump_record(Kind::Pending, &sha256_hex(id)).await {
            Ok(Some(n)) => n.clamp(0, u32::MAX as i64) as u32,
            Ok(None) => MAX_LOGIN_FAILURES,
            Err(e) => {
                warn(&e);
                MAX_LOGIN_FAILURES
            }
        }
    }

    /// Consume the pending request; true for exactly one caller.
    pub async fn remove_pending(&self, id: &str) -> bool {
        matches!(
            self.db.take_record(Kind::Pending, &sha256_hex(id)).await,
            Ok(Some(_))
        )
    }

    pub async fn new_session(&self, username: &str) -> Result<String, &'static str> {
        let cookie = random_token().map_err(|_| "RNG failed")?;
        let v = serde_json::to_string(&Session {
            username: username.to_owned(),
        })
        .map_err(|_| "cannot encode the session")?;
        match self
            .db
            .insert_record(
                Kind::Session,
                &sha256_hex(&cookie),
                &v,
                self.now() + SESSION_TTL,
                MAX_SESSIONS,
            )
            .await
        {
            Ok(true) => Ok(cookie),
            Ok(false) => Err("session id collision"),
            Err(e) => Err(refuse(e)),
        }
    }

    pub async fn session_user(&self, cookie: &str) -> Option<String> {
        let (v, _) = self
            .db
            .get_record(Kind::Session, &sha256_hex(cookie))
            .await
            .map_err(|e| warn(&e))
            .ok()??;
        serde_json::from_str::<Session>(&v).ok().map(|s| s.username)
    }

    pub async fn add_code(&self, c: CodeData) -> Result<String, &'static str> {
        let code = random_token().map_err(|_| "RNG failed")?;
        let v = serde_json::to_string(&c).map_err(|_| "cannot encode the code")?;
        match self
            .db
            .insert_record(Kind::Code, &sha256_hex(&code), &v, c.expires, MAX_CODES)
            .await
        {
            Ok(true) => Ok(code),
            Ok(false) => Err("code collision"),
            Err(e) => Err(refuse(e)),
        }
    }

    /// Remove and return the code (`DELETE … RETURNING`): single-use on every replica.
    pub async fn take_code(&self, code: &str) -> Option<CodeData> {
        let v = self
            .db
            .take_record(Kind::Code, &sha256_hex(code))
            .await
            .map_err(|e| warn(&e))
            .ok()??;
        let c: CodeData = serde_json::from_str(&v).ok()?;
        (c.expires > self.now()).then_some(c)
    }

    /// Store a new refresh token for `family`; returns the token.
    pub async fn add_refresh(
        &self,
        family: &str,
        client_id: &str,
        username: &str,
        scopes: &[String],
        resource: &str,
        ttl: i64,
    ) -> Result<String, &'static str> {
        let tok = random_token().map_err(|_| "RNG failed")?;
        let g = RefreshGrant {
            client_id: client_id.to_owned(),
            username: username.to_owned(),
            scopes: scopes.to_vec(),
            resource: resource.to_owned(),
        };
        let v = serde_json::to_string(&g).map_err(|_| "cannot encode the grant")?;
        self.db
            .insert_refresh(&sha256_hex(&tok), family, &v, self.now() + ttl)
            .await
            .map_err(refuse)?;
        Ok(tok)
    }

    /// Look a refresh token up without spending it. A replayed (already used) token
    /// revokes its family.
    pub async fn peek_refresh(&self, tok: &str) -> Result<RefreshData, &'static str> {
        let hash = sha256_hex(tok);
        let row = self
            .db
            .get_refresh(&hash)
            .await
            .map_err(refuse)?
            .ok_or("unknown refresh token")?;
        if row.family_revoked {
            return Err("refresh token revoked");
        }
        let retry = row.used && self.in_grace(&hash).await;
        if row.used && !retry {
            self.revoke_family(&row.family, row.expires_at).await;
            tracing::warn!("Authorization server: refresh token reused; its family is revoked");
            return Err("refresh token reused: its family is revoked");
        }
        if row.expires_at <= self.now() {
            return Err("refresh token expired");
        }
        let g: RefreshGrant =
            serde_json::from_str(&row.value).map_err(|_| "unreadable refresh token")?;
        Ok(RefreshData {
            hash,
            retry,
            family: row.family,
            client_id: g.client_id,
            username: g.username,
            scopes: g.scopes,
            resource: g.resource,
            expires: row.expires_at,
        })
    }

    /// Spend a refresh token (after the request was validated); a lost race — on this
    /// replica or another — counts as reuse.
    pub async fn spend_refresh(&self, r: &RefreshData) -> Result<(), &'static str> {
        match self.db.spend_refresh(&r.hash).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.revoke_family(&r.family, r.expires).await;
                Err("refresh token reused: its family is revoked")
            }
            Err(e) => Err(refuse(e)),
        }
    }

    pub async fn revoke_family(&self, family: &str, expires: i64) {
        if let Err(e) = self.db.revoke_family(family, expires).await {
            tracing::error!(error = %e, "Authorization server: could not record a revoked refresh family");
        }
    }

    /// Fails closed: a store error counts as revoked.
    pub async fn family_revoked(&self, family: &str) -> bool {
        self.db.family_revoked(family).await.unwrap_or_else(|e| {
            warn(&e);
            true
        })
    }

    /// Record an assertion `jti`; false when already seen (replay) or the store fails.
    pub async fn first_jti(&self, client: &str, jti: &str, exp: i64) -> bool {
        let key = sha256_hex(&format!("{client}\u{0}{jti}"));
        match self
            .db
            .insert_record(Kind::Jti, &key, "", exp, MAX_JTIS)
            .await
        {
            Ok(inserted) => inserted,
            Err(e) => {
                warn(&e);
                false
            }
        }
    }

    // ---- DPoP (RFC 9449 §5, §8, §11.1) ----

    /// Record a token-endpoint proof's first use (shared by every replica on the store);
    /// false on a replay or a store failure (fail closed).
    pub async fn first_proof(&self, replay_key: &[u8; 32], until: i64) -> bool {
        let key = format!("as:{}", dataplane::audit::hex(replay_key));
        match self.db.first_use(Kind::DpopProof, &key, until).await {
            Ok(first) => first,
            Err(e) => {
                warn(&e);
                false
            }
        }
    }

    /// A fresh DPoP nonce, live for `ttl` seconds on every replica.
    pub async fn new_dpop_nonce(&self, ttl: i64) -> Result<String, &'static str> {
        let n = random_token().map_err(|_| "the random number generator failed")?;
        self.db
            .insert_record(
                Kind::DpopNonce,
                &sha256_hex(&n),
                "",
                self.now() + ttl,
                MAX_NONCES,
            )
            .await
            .map_err(refuse)?;
        Ok(n)
    }

    /// Whether `nonce` is one this server issued and it is still live.
    pub async fn dpop_nonce_live(&self, nonce: &str) -> bool {
        matches!(
            self.db
                .get_record(Kind::DpopNonce, &sha256_hex(nonce))
                .await,
            Ok(Some(_))
        )
    }

    /// Bind a public client's refresh family to a DPoP key (kept while the family may live).
    pub async fn bind_family(
        &self,
        family: &str,
        jkt: &str,
        expires: i64,
    ) -> Result<(), &'static str> {
        self.db
            .insert_record(
                Kind::DpopBinding,
                &sha256_hex(family),
                jkt,
                expires,
                MAX_BINDINGS,
            )
            .await
            .map(|_| ())
            .map_err(refuse)
    }

    /// The DPoP key a refresh family is bound to. A store error is "bound to no key anyone
    /// has" (fail closed), never "unbound".
    pub async fn family_key(&self, family: &str) -> Result<Option<String>, ()> {
        match self
            .db
            .get_record(Kind::DpopBinding, &sha256_hex(family))
            .await
        {
            Ok(r) => Ok(r.map(|(jkt, _)| jkt)),
            Err(e) => {
                warn(&e);
                Err(())
            }
        }
    }

    // ---- federated login ----

    pub async fn add_fed_state(
        &self,
        state: &str,
        f: &super::federate::FedState,
    ) -> Result<(), &'static str> {
        let v = serde_json::to_string(f).map_err(|_| "cannot encode the sign-in")?;
        match self
            .db
            .insert_record(
                Kind::FedState,
                &sha256_hex(state),
                &v,
                f.expires,
                MAX_FED_STATES,
            )
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err("state collision"),
            Err(e) => Err(refuse(e)),
        }
    }

    /// Remove and return the federated sign-in for `state`: single use on every replica.
    pub async fn take_fed_state(&self, state: &str) -> Option<super::federate::FedState> {
        let v = self
            .db
            .take_record(Kind::FedState, &sha256_hex(state))
            .await
            .map_err(|e| warn(&e))
            .ok()??;
        let f: super::federate::FedState = serde_json::from_str(&v).ok()?;
        (f.expires > self.now()).then_some(f)
    }

    /// Store (or refresh) a federated user's profile, kept `ttl` seconds after the last sign-in.
    pub async fn put_fed_user(
        &self,
        u: &super::federate::FedUser,
        ttl: i64,
    ) -> Result<(), &'static str> {
        let v = serde_json::to_string(u).map_err(|_| "cannot encode the user")?;
        let key = &u.username;
        let until = self.now() + ttl;
        // Replace: take the old row (if any), insert the new one.
        let _ = self
            .db
            .take_record(Kind::FedUser, key)
            .await
            .map_err(refuse)?;
        match self
            .db
            .insert_record(Kind::FedUser, key, &v, until, MAX_FED_USERS)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(refuse(e)),
        }
    }

    pub async fn fed_user(&self, username: &str) -> Option<super::federate::FedUser> {
        let (v, _) = self
            .db
            .get_record(Kind::FedUser, username)
            .await
            .map_err(|e| warn(&e))
            .ok()??;
        serde_json::from_str(&v).ok()
    }
}
