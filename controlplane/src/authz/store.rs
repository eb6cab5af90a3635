//! In-memory state: pending authorization requests, login sessions, codes, refresh tokens, registered clients.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dashmap::DashMap;

use super::clients::Client;

/// Caps that bound memory whatever unauthenticated callers do.
pub const MAX_PENDING: usize = 10_000;
pub const MAX_SESSIONS: usize = 10_000;
pub const MAX_CODES: usize = 10_000;
pub const MAX_REGISTERED: usize = 1_000;
pub const MAX_JTIS: usize = 100_000;
/// A pending authorization request lives this long (login + consent).
pub const PENDING_TTL: i64 = 600;
/// A browser login session lives this long.
pub const SESSION_TTL: i64 = 8 * 3600;
/// Failed logins allowed on one pending request.
pub const MAX_LOGIN_FAILURES: u32 = 5;

/// Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// 32 random bytes, URL-safe base64 (256 bits).
pub fn random_token() -> Result<String, String> {
    use base64::Engine as _;
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| "system RNG failed".to_string())?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// SHA-256, hex; secrets are stored and looked up by this only.
pub fn sha256_hex(s: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
    dataplane::audit::hex(d.as_ref())
}

/// A validated authorization request waiting for login and consent.
#[derive(Debug, Clone)]
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
    pub failures: u32,
    pub expires: i64,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub username: String,
    pub expires: i64,
}

#[derive(Debug, Clone)]
pub struct CodeData {
    pub client_id: String,
    pub redirect_uri: String,
    pub username: String,
    pub scopes: Vec<String>,
    pub resource: String,
    pub code_challenge: String,
    pub expires: i64,
}

#[derive(Debug)]
pub struct RefreshData {
    pub family: String,
    pub client_id: String,
    pub username: String,
    pub scopes: Vec<String>,
    pub resource: String,
    pub expires: i64,
    pub used: AtomicBool,
}

/// All mutable state, keyed by SHA-256 of the secret where the key is a secret.
#[derive(Default)]
pub struct Store {
    pub pending: DashMap<String, Pending>,
    pub sessions: DashMap<String, Session>,
    pub codes: DashMap<String, CodeData>,
    pub refresh: DashMap<String, Arc<RefreshData>>,
    /// Refresh families revoked because an old token was replayed.
    pub revoked_families: DashMap<String, i64>,
    pub registered: DashMap<String, Arc<Client>>,
    /// private_key_jwt assertion `jti`s already seen (client, jti) → exp.
    pub jtis: DashMap<String, i64>,
}

fn purge<V>(map: &DashMap<String, V>, cap: usize, exp: impl Fn(&V) -> i64) -> bool {
    if map.len() >= cap / 2 {
        let t = now();
        map.retain(|_, v| exp(v) > t);
    }
    map.len() < cap
}

impl Store {
    pub fn registered(&self, id: &str) -> Option<Arc<Client>> {
        self.registered.get(id).map(|c| c.clone())
    }

    pub fn add_pending(&self, p: Pending) -> Result<String, &'static str> {
        if !purge(&self.pending, MAX_PENDING, |p| p.expires) {
            return Err("too many pending authorization requests");
        }
        let id = random_token().map_err(|_| "RNG failed")?;
        self.pending.insert(id.clone(), p);
        Ok(id)
    }

    /// The pending request `id` if it exists, has not expired and `csrf` matches.
    pub fn pending_checked(&self, id: &str, csrf: &str) -> Option<Pending> {
        let p = self.pending.get(id)?.clone();
        let ok = p.expires > now()
            && aws_lc_rs::constant_time::verify_slices_are_equal(
                p.csrf.as_bytes(),
                csrf.as_bytes(),
            )
            .is_ok();
        ok.then_some(p)
    }

    pub fn new_session(&self, username: &str) -> Result<String, &'static str> {
        if !purge(&self.sessions, MAX_SESSIONS, |s| s.expires) {
            return Err("too many sessions");
        }
        let cookie = random_token().map_err(|_| "RNG failed")?;
        self.sessions.insert(
            sha256_hex(&cookie),
            Session {
                username: username.to_owned(),
                expires: now() + SESSION_TTL,
            },
        );
        Ok(cookie)
    }

    pub fn session_user(&self, cookie: &str) -> Option<String> {
        let s = self.sessions.get(&sha256_hex(cookie))?;
        (s.expires > now()).then(|| s.username.clone())
    }

    pub fn add_code(&self, c: CodeData) -> Result<String, &'static str> {
        if !purge(&self.codes, MAX_CODES, |c| c.expires) {
            return Err("too many outstanding codes");
        }
        let code = random_token().map_err(|_| "RNG failed")?;
        self.codes.insert(sha256_hex(&code), c);
        Ok(code)
    }

    /// Remove and return the code: it is single-use whatever happens next.
    pub fn take_code(&self, code: &str) -> Option<CodeData> {
        let (_, c) = self.codes.remove(&sha256_hex(code))?;
        (c.expires > now()).then_some(c)
    }

    /// Store a new refresh token for `family`; returns the token.
    pub fn add_refresh(
        &self,
        family: &str,
        client_id: &str,
        username: &str,
        scopes: &[String],
        resource: &str,
        ttl: i64,
    ) -> Result<String, &'static str> {
        let t = now();
        if self.refresh.len() > 100_000 {
            self.refresh.retain(|_, r| r.expires > t);
        }
        let tok = random_token().map_err(|_| "RNG failed")?;
        self.refresh.insert(
            sha256_hex(&tok),
            Arc::new(RefreshData {
                family: family.to_owned(),
                client_id: client_id.to_owned(),
                username: username.to_owned(),
                scopes: scopes.to_vec(),
                resource: resource.to_owned(),
                expires: t + ttl,
                used: AtomicBool::new(false),
            }),
        );
        Ok(tok)
    }

    /// Look a refresh token up without spending it. A replayed (already used) token
    /// revokes its family.
    pub fn peek_refresh(&self, tok: &str) -> Result<Arc<RefreshData>, &'static str> {
        let r = self
            .refresh
            .get(&sha256_hex(tok))
            .map(|r| r.clone())
            .ok_or("unknown refresh token")?;
        if self.revoked_families.contains_key(&r.family) {
            return Err("refresh token revoked");
        }
        if r.used.load(Ordering::Acquire) {
            self.revoked_families.insert(r.family.clone(), r.expires);
            return Err("refresh token reused: its family is revoked");
        }
        if r.expires <= now() {
            return Err("refresh token expired");
        }
        Ok(r)
    }

    /// Spend a refresh token (after the request was validated); a lost race counts as reuse.
    pub fn spend_refresh(&self, r: &RefreshData) -> Result<(), &'static str> {
        if r.used.swap(true, Ordering::AcqRel) {
            self.revoked_families.insert(r.family.clone(), r.expires);
            return Err("refresh token reused: its family is revoked");
        }
        Ok(())
    }

    pub fn family_revoked(&self, family: &str) -> bool {
        self.revoked_families.contains_key(family)
    }

    /// Record an assertion `jti`; false when already seen (replay).
    pub fn first_jti(&self, client: &str, jti: &str, exp: i64) -> bool {
        let t = now();
        if self.jtis.len() >= MAX_JTIS / 2 {
            self.jtis.retain(|_, e| *e > t);
        }
        if self.jtis.len() >= MAX_JTIS {
            return false;
        }
        let key = format!("{client}\u{0}{jti}");
        match self.jtis.entry(key) {
            dashmap::Entry::Occupied(_) => false,
            dashmap::Entry::Vacant(v) => {
                v.insert(exp);
                true
            }
        }
    }
}
