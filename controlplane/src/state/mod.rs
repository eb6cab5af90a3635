//! Durable state of the embedded authorization server, the STS key ring and session revocations: SQLite or PostgreSQL.
//!
//! One [`StateStore`] with two backends behind the same async methods: SQLite (one file, or
//! `:memory:` for library callers and tests; its connection lives on a dedicated thread, so no
//! tokio worker or shard ever waits on disk) and PostgreSQL (several replicas on one database).
//! Secrets are never stored: codes, refresh tokens, session cookies and request ids are keyed by
//! their SHA-256; signing keys are sealed with AES-256-GCM when an encryption key is configured.
//! See `docs/authorization-server.md`, "State".

mod cipher;
mod migrations;
mod postgres;
mod sqlite;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use dataplane::clock::Clock;
use serde::Deserialize;

pub use cipher::KeyCipher;

/// Kinds of short-lived records in the `records` table, with their row caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A validated authorization request waiting for login and consent.
    Pending,
    /// A browser login session (keyed by the cookie's hash).
    Session,
    /// An authorization code (keyed by its hash).
    Code,
    /// A dynamically registered client (never expires).
    Client,
    /// A private_key_jwt assertion `jti` already seen.
    Jti,
    /// The session key ring used when the config names none (sealed like signing keys).
    SessionKey,
    /// A DPoP proof already used at the gateway or the token endpoint (keyed by SHA-256 of
    /// thumbprint and `jti`).
    DpopProof,
    /// A DPoP nonce issued by the token endpoint (keyed by its hash).
    DpopNonce,
    /// The DPoP key (value: thumbprint) a public client's refresh family is bound to.
    DpopBinding,
    /// A federated sign-in waiting for the upstream IdP (keyed by the hash of its `state`).
    FedState,
    /// A federated user's profile as last seen in an upstream ID token (keyed by username).
    FedUser,
    /// What an authorization code issued (refresh family, access-token jti), so that a
    /// replayed code revokes it (keyed by the code's hash).
    CodeGrant,
    /// An access token revoked before its expiry (keyed by its `jti`).
    RevokedJti,
    /// A just-rotated refresh token within its reuse grace (keyed by its hash).
    RefreshGrace,
    /// A user's consent to a client (keyed by user and client).
    Consent,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Pending => "pending",
            Kind::Session => "session",
            Kind::Code => "code",
            Kind::Client => "client",
            Kind::Jti => "jti",
            Kind::SessionKey => "session_key",
            Kind::DpopProof => "dpop_proof",
            Kind::DpopNonce => "dpop_nonce",
            Kind::DpopBinding => "dpop_binding",
            Kind::FedState => "fed_state",
            Kind::FedUser => "fed_user",
            Kind::CodeGrant => "code_grant",
            Kind::RevokedJti => "revoked_jti",
            Kind::RefreshGrace => "refresh_grace",
            Kind::Consent => "consent",
        }
    }

    /// The error for a kind at its cap.
    pub(crate) fn full(self) -> StateError {
        StateError::Full(match self {
            Kind::Pending => "pending authorization requests",
            Kind::Session => "sessions",
            Kind::Code => "outstanding codes",
            Kind::Client => "registered clients",
            Kind::Jti => "assertion ids",
            Kind::SessionKey => "session keys",
            Kind::DpopProof => "DPoP proofs",
            Kind::DpopNonce => "DPoP nonces",
            Kind::DpopBinding => "DPoP-bound refresh families",
            Kind::FedState => "federated sign-ins in progress",
            Kind::FedUser => "federated users",
            Kind::CodeGrant => "redeemed codes",
            Kind::RevokedJti => "revoked access tokens",
            Kind::RefreshGrace => "refresh tokens in their reuse grace",
            Kind::Consent => "consents",
        })
    }
}

/// Most session revocations one `session_revocations_since` call returns.
pub const REVOCATION_BATCH: usize = 10_000;

/// The `state` block of the configuration. `Debug` hides a password in the URL.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// `sqlite:/path/warden.db`, `postgres://user:pass@host:5432/db`, or `memory` (tests only).
    #[serde(default)]
    pub url: Option<String>,
    /// Read the URL from this environment variable instead (it may carry a password).
    #[serde(default)]
    pub url_env: Option<String>,
    /// 32 random bytes, base64: seals signing keys at rest (AES-256-GCM).
    #[serde(default)]
    pub encryption_key_file: Option<PathBuf>,
    /// The same key from an environment variable.
    #[serde(default)]
    pub encryption_key_env: Option<String>,
}

impl fmt::Debug for StateConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("url_env", &self.url_env)
            .field("encryption_key_file", &self.encryption_key_file)
            .field("encryption_key_env", &self.encryption_key_env)
            .finish()
    }
}

/// The URL with any password replaced by `...` (for logs and `Debug`).
pub fn redact_url(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut p) if p.password().is_some() => {
            let _ = p.set_password(Some("..."));
            p.to_string()
        }
        Ok(_) => u.to_owned(),
        Err(_) if !u.contains('@') => u.to_owned(),
        Err(_) => "...".to_owned(),
    }
}

impl StateConfig {
    /// Check the block's shape; `file` names the config in errors (the messages name the key).
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.url.is_some() && self.url_env.is_some() {
            return Err((
                "state.url_env".into(),
                "give `url` or `url_env`, not both".into(),
            ));
        }
        if self.encryption_key_file.is_some() && self.encryption_key_env.is_some() {
            return Err((
                "state.encryption_key_env".into(),
                "give `encryption_key_file` or `encryption_key_env`, not both".into(),
            ));
        }
        if let Some(u) = &self.url {
            Location::parse(u).map_err(|e| ("state.url".into(), e.to_string()))?;
        }
        Ok(())
    }

    /// The URL to open: `url`, the variable named by `url_env`, or `None` (the caller's default).
    pub fn resolved_url(&self) -> Result<Option<String>, StateError> {
        match (&self.url, &self.url_env) {
            (Some(u), _) => Ok(Some(u.clone())),
            (None, Some(var)) => std::env::var(var).map(Some).map_err(|_| {
                StateError::Config(format!(
                    "state.url_env: environment variable {var} is not set"
                ))
            }),
            (None, None) => Ok(None),
        }
    }

    /// The signing-key cipher, when a key is configured.
    pub fn cipher(&self) -> Result<Option<KeyCipher>, StateError> {
        match (&self.encryption_key_file, &self.encryption_key_env) {
            (Some(f), _) => {
                let text = std::fs::read_to_string(f).map_err(|e| {
                    StateError::Config(format!("state.encryption_key_file: {}: {e}", f.display()))
                })?;
                KeyCipher::from_base64(&text).map(Some).map_err(|e| {
                    StateError::Config(format!("state.encryption_key_file: {}: {e}", f.display()))
                })
            }
            (None, Some(var)) => {
                let text = std::env::var(var).map_err(|_| {
                    StateError::Config(format!(
                        "state.encryption_key_env: environment variable {var} is not set"
                    ))
                })?;
                KeyCipher::from_base64(&text).map(Some).map_err(|e| {
                    StateError::Config(format!("state.encryption_key_env: {var}: {e}"))
                })
            }
            (None, None) => Ok(None),
        }
    }
}

/// Where the state lives, parsed from a URL.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// SQLite in memory: gone with the process (library callers, tests).
    Memory,
    SqliteFile(PathBuf),
    /// A PostgreSQL connection URL (may hold a password: never printed).
    Postgres(String),
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Memory => f.write_str("Memory"),
            Location::SqliteFile(p) => write!(f, "SqliteFile({})", p.display()),
            Location::Postgres(_) => f.write_str("Postgres(...)"),
        }
    }
}

impl Location {
    /// Where `state.url` points; a URL that names no supported store is the operator's
    /// [`StateError::Config`].
    pub fn parse(url: &str) -> Result<Location, StateError> {
        let refuse = |why: String| Err(StateError::Config(why));
        if url == "memory" || url == "sqlite::memory:" {
            return Ok(Location::Memory);
        }
        if let Some(p) = url.strip_prefix("sqlite:") {
            let p = p.strip_prefix("//").unwrap_or(p);
            if p.is_empty() {
                return refuse(
                    "sqlite: needs a file path, e.g. sqlite:/var/lib/warden/warden.db".into(),
                );
            }
            return Ok(Location::SqliteFile(PathBuf::from(p)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            if let Err(e) = url.parse::<tokio_postgres::Config>() {
                return refuse(format!("not a valid PostgreSQL URL: {e}"));
            }
            return Ok(Location::Postgres(url.to_owned()));
        }
        refuse("must start with sqlite:, postgres:// or be `memory`".into())
    }
}

/// The default store of `warden serve` / `warden demo`: `sqlite:<dir>/warden.db`, creating
/// `dir` (mode 0700: it holds signing keys) on first start.
pub fn data_dir_url(dir: &std::path::Path) -> Result<String, StateError> {
    use std::os::unix::fs::DirBuilderExt as _;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| StateError::Config(format!("--data-dir {}: {e}", dir.display())))?;
        tracing::info!(dir = %dir.display(), "State: data directory created");
    }
    Ok(format!("sqlite:{}", dir.join("warden.db").display()))
}

impl StateConfig {
    /// Fill in the data directory's database when the block names no URL (the CLI's default).
    pub fn or_data_dir(
        cfg: Option<StateConfig>,
        dir: &std::path::Path,
    ) -> Result<StateConfig, StateError> {
        let mut c = cfg.unwrap_or_default();
        if c.url.is_none() && c.url_env.is_none() {
            c.url = Some(data_dir_url(dir)?);
        }
        Ok(c)
    }
}

/// Why the state store failed, and whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The operator's configuration (URL, encryption key).
    #[error("{0}")]
    Config(String),
    /// The database holds a schema this binary does not know: refuse rather than misread it.
    #[error(
        "the state database has schema version {found}, newer than this binary supports ({supported}); run a newer warden or restore a backup"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    /// Signing keys are sealed with another key, or sealed and no key was given.
    #[error("{0}")]
    Key(String),
    /// A table is at its cap (unauthenticated callers cannot grow it further).
    #[error("too many {0}")]
    Full(&'static str),
    /// The database itself (I/O, connection, SQL).
    #[error("state database: {0}")]
    Db(String),
    #[error("state store stopped")]
    Closed,
}

impl From<rusqlite::Error> for StateError {
    fn from(e: rusqlite::Error) -> Self {
        StateError::Db(e.to_string())
    }
}

impl From<tokio_postgres::Error> for StateError {
    fn from(e: tokio_postgres::Error) -> Self {
        StateError::Db(e.to_string())
    }
}

/// One stored STS signing key (the private key decrypted; `Debug` hides it).
#[derive(Clone)]
pub struct StoredKey {
    /// Rotation counter: the highest is the current key, the next the previous one.
    pub generation: i64,
    pub kid: String,
    pub alg: String,
    pub created_at: i64,
    pub pkcs8: Vec<u8>,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("generation", &self.generation)
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("pkcs8", &"...")
            .finish()
    }
}

/// A refresh token row (looked up by the token's hash).
#[derive(Debug, Clone)]
pub struct RefreshRow {
    pub family: String,
    /// JSON of the grant (client, user, scopes, resource).
    pub value: String,
    pub used: bool,
    pub expires_at: i64,
    pub family_revoked: bool,
}

/// A key row as stored (sealed or not).
pub(crate) struct RawKey {
    pub generation: i64,
    pub kid: String,
    pub alg: String,
    pub created_at: i64,
    pub enc: String,
    pub material: Vec<u8>,
}

enum Backend {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Pg),
}

struct Inner {
    backend: Backend,
    cipher: Option<KeyCipher>,
    location: Location,
    /// What "expired" is judged by (the control plane's clock).
    clock: Clock,
}

/// The state store: cheap to clone, shared by the authorization server, the STS and the gateway.
#[derive(Clone)]
pub struct StateStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for StateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateStore")
            .field("location", &self.inner.location)
            .field("encrypted_keys", &self.inner.cipher.is_some())
            .finish()
    }
}

/// Dispatch one call to the backend.
macro_rules! on_backend {
    ($self:ident, $b:ident => $e:expr) => {
        match &$self.inner.backend {
            Backend::Sqlite($b) => $e,
            Backend::Postgres($b) => $e,
        }
    };
}

/// How often expired rows are deleted.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(60);

impl StateStore {
    /// Open (and migrate) the store at `location`; `cipher` seals signing keys; rows expire
    /// by `clock`.
    pub async fn open(
        location: Location,
        cipher: Option<KeyCipher>,
        clock: Clock,
    ) -> Result<StateStore, StateError> {
        let backend = match &location {
            Location::Memory => Backend::Sqlite(sqlite::Sqlite::open(None).await?),
            Location::SqliteFile(p) => {
                Backend::Sqlite(sqlite::Sqlite::open(Some(p.clone())).await?)
            }
            Location::Postgres(url) => Backend::Postgres(postgres::Pg::open(url).await?),
        };
        if cipher.is_none() && location != Location::Memory {
            tracing::warn!(
                "State: signing keys are stored unencrypted; set state.encryption_key_file or state.encryption_key_env to seal them"
            );
        }
        let s = StateStore {
            inner: Arc::new(Inner {
                backend,
                cipher,
                location,
                clock,
            }),
        };
        s.seal_plaintext_keys().await?;
        s.spawn_purger();
        Ok(s)
    }

    /// An in-memory SQLite store (library callers and tests; nothing touches the disk).
    pub async fn memory(clock: Clock) -> Result<StateStore, StateError> {
        Self::open(Location::Memory, None, clock).await
    }

    /// Open from a `state` block; `default_url` applies when it names no URL.
    pub async fn from_config(
        cfg: &StateConfig,
        default_url: &str,
        clock: Clock,
    ) -> Result<StateStore, StateError> {
        let url = cfg
            .resolved_url()?
            .unwrap_or_else(|| default_url.to_owned());
        let loc =
            Location::parse(&url).map_err(|e| StateError::Config(format!("state.url: {e}")))?;
        Self::open(loc, cfg.cipher()?, clock).await
    }

    pub fn location(&self) -> &Location {
        &self.inner.location
    }

    /// The clock rows expire by (the STS and the authorization server on this store use it too).
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// Unix seconds on the store's clock.
    pub fn now(&self) -> i64 {
        self.inner.clock.unix_secs()
    }

    /// Delete expired rows every [`PURGE_INTERVAL`]; the task ends with the last clone of the store.
    fn spawn_purger(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut t = tokio::time::interval(PURGE_INTERVAL);
            t.tick().await;
            loop {
                t.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let me = StateStore { inner };
                match me.purge_expired(me.now()).await {
                    Ok(n) if n > 0 => tracing::debug!(rows = n, "State: expired rows purged"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "State: purging expired rows failed"),
                }
            }
        });
    }

    /// Delete every expired row (records, refresh tokens, revoked families, session revocations).
    pub async fn purge_expired(&self, now: i64) -> Result<u64, StateError> {
        on_backend!(self, b => b.purge_expired(now).await)
    }

    // ---- short-lived records (pending requests, sessions, codes, registered clients, jtis) ----

    /// Insert a new record unless `key` exists (then `Ok(false)`); fails with `Full` at `cap` live rows.
    pub async fn insert_record(
        &self,
        kind: Kind,
        key: &str,
        value: &str,
        expires_at: i64,
        cap: usize,
    ) -> Result<bool, StateError> {
        on_backend!(self, b => b.insert_record(kind, key.to_owned(), value.to_owned(), expires_at, cap as i64, self.now()).await)
    }

    /// Record `key`'s first use until `expires_at`: true the first time (on any replica sharing
    /// the store), false while a live row exists. One statement; no cap.
    pub async fn first_use(
        &self,
        kind: Kind,
        key: &str,
        expires_at: i64,
    ) -> Result<bool, StateError> {
        on_backend!(self, b => b.first_use(kind, key.to_owned(), expires_at, self.now()).await)
    }

    /// The record's value and counter, unless missing or expired.
    pub async fn get_record(
        &self,
        kind: Kind,
        key: &str,
    ) -> Result<Option<(String, i64)>, StateError> {
        on_backend!(self, b => b.get_record(kind, key.to_owned(), self.now()).await)
    }

    /// Replace a live record's value; false when it is gone.
    pub async fn update_record(
        &self,
        kind: Kind,
        key: &str,
        value: &str,
    ) -> Result<bool, StateError> {
        on_backend!(self, b => b.update_record(kind, key.to_owned(), value.to_owned(), self.now()).await)
    }

    /// Add one to a live record's counter and return the new count (None when it is gone).
    pub async fn bump_record(&self, kind: Kind, key: &str) -> Result<Option<i64>, StateError> {
        on_backend!(self, b => b.bump_record(kind, key.to_owned(), self.now()).await)
    }

    /// Delete and return a record in one statement: exactly one caller, on any replica, gets it.
    pub async fn take_record(&self, kind: Kind, key: &str) -> Result<Option<String>, StateError> {
        on_backend!(self, b => b.take_record(kind, key.to_owned(), self.now()).await)
    }

    /// Live records of a kind.
    pub async fn count_records(&self, kind: Kind) -> Result<i64, StateError> {
        on_backend!(self, b => b.count_records(kind, self.now()).await)
    }

    // ---- refresh tokens ----

    pub async fn insert_refresh(
        &self,
        hash: &str,
        family: &str,
        value: &str,
        expires_at: i64,
    ) -> Result<(), StateError> {
        on_backend!(self, b => b.insert_refresh(hash.to_owned(), family.to_owned(), value.to_owned(), expires_at).await)
    }

    pub async fn get_refresh(&self, hash: &str) -> Result<Option<RefreshRow>, StateError> {
        on_backend!(self, b => b.get_refresh(hash.to_owned()).await)
    }

    /// Mark the token used (`UPDATE … WHERE used = false`): true for exactly one caller.
    pub async fn spend_refresh(&self, hash: &str) -> Result<bool, StateError> {
        on_backend!(self, b => b.spend_refresh(hash.to_owned()).await)
    }

    pub async fn revoke_family(&self, family: &str, expires_at: i64) -> Result<(), StateError> {
        on_backend!(self, b => b.revoke_family(family.to_owned(), expires_at).await)
    }

    pub async fn family_revoked(&self, family: &str) -> Result<bool, StateError> {
        on_backend!(self, b => b.family_revoked(family.to_owned()).await)
    }

    // ---- MCP session revocations (sealed session ids) ----

    /// Record that the session whose id hashes to `id_hash` ended; kept until `expires_at_unix`.
    pub async fn revoke_session(
        &self,
        id_hash: [u8; 32],
        expires_at_unix: i64,
    ) -> Result<(), StateError> {
        on_backend!(self, b => b.revoke_session(id_hash, expires_at_unix).await)
    }

    /// Revocations recorded after `cursor` (0 at first), in order, and the cursor to pass next
    /// (at most [`REVOCATION_BATCH`] per call: call again while a full batch comes back).
    pub async fn session_revocations_since(
        &self,
        cursor: i64,
    ) -> Result<(Vec<([u8; 32], i64)>, i64), StateError> {
        on_backend!(self, b => b.session_revocations_since(cursor).await)
    }

    // ---- the default session key ring ----

    /// The session key ring text (`kid:base64url(32 bytes)`) stored for configs without
    /// `sessions.keys_file`; made and stored on first use. Replicas on one database race to
    /// store theirs and all adopt the winner's, so they serve each other's sessions.
    pub async fn default_session_keys(&self) -> Result<String, StateError> {
        const ID: &str = "default";
        if let Some((v, _)) = self.get_record(Kind::SessionKey, ID).await? {
            return self.open_secret(ID, &v);
        }
        let kid = format!("s{}", self.now());
        let text = dataplane::session::SessionKeys::new_key_text()
            .map(|k| format!("{kid}:{k}"))
            .map_err(|e| StateError::Key(e.to_string()))?;
        let stored = match &self.inner.cipher {
            Some(c) => format!(
                "aes256gcm:{}",
                base64::engine::general_purpose::STANDARD.encode(c.seal(ID, text.as_bytes())?)
            ),
            None => format!("none:{text}"),
        };
        self.insert_record(Kind::SessionKey, ID, &stored, i64::MAX, 16)
            .await?;
        match self.get_record(Kind::SessionKey, ID).await? {
            Some((v, _)) => self.open_secret(ID, &v),
            None => Err(StateError::Key(
                "the stored session key ring vanished".into(),
            )),
        }
    }

    fn open_secret(&self, id: &str, stored: &str) -> Result<String, StateError> {
        let bad = || StateError::Key(format!("the stored session key ring {id:?} is unreadable"));
        match (stored.split_once(':'), &self.inner.cipher) {
            (Some(("none", text)), _) => Ok(text.to_owned()),
            (Some(("aes256gcm", b)), Some(c)) => {
                let sealed = base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|_| bad())?;
                String::from_utf8(c.open(id, &sealed)?).map_err(|_| bad())
            }
            (Some(("aes256gcm", _)), None) => Err(StateError::Key(
                "the stored session key ring is encrypted: configure the same state.encryption_key_file or state.encryption_key_env".into(),
            )),
            _ => Err(bad()),
        }
    }

    // ---- STS signing keys ----

    /// The current and previous signing keys (highest generation first), decrypted.
    pub async fn load_keys(&self) -> Result<Vec<StoredKey>, StateError> {
        let raw = on_backend!(self, b => b.load_keys().await)?;
        raw.into_iter().map(|k| self.open_key(k)).collect()
    }

    /// Insert a key as `generation` unless another replica already did (then `Ok(false)`); keys
    /// older than the previous one are deleted in the same transaction.
    pub async fn insert_key(&self, k: &StoredKey) -> Result<bool, StateError> {
        let (enc, material) = match &self.inner.cipher {
            Some(c) => ("aes256gcm".to_owned(), c.seal(&k.kid, &k.pkcs8)?),
            None => ("none".to_owned(), k.pkcs8.clone()),
        };
        let raw = RawKey {
            generation: k.generation,
            kid: k.kid.clone(),
            alg: k.alg.clone(),
            created_at: k.created_at,
            enc,
            material,
        };
        on_backend!(self, b => b.insert_key(raw).await)
    }

    fn open_key(&self, k: RawKey) -> Result<StoredKey, StateError> {
        let pkcs8 = match (k.enc.as_str(), &self.inner.cipher) {
            ("none", _) => k.material,
            ("aes256gcm", Some(c)) => c.open(&k.kid, &k.material)?,
            ("aes256gcm", None) => {
                return Err(StateError::Key(
                    "the stored signing keys are encrypted: configure the same state.encryption_key_file or state.encryption_key_env".into(),
                ));
            }
            (other, _) => {
                return Err(StateError::Key(format!(
                    "signing key {} uses unknown encryption {other:?}",
                    k.kid
                )));
            }
        };
        Ok(StoredKey {
            generation: k.generation,
            kid: k.kid,
            alg: k.alg,
            created_at: k.created_at,
            pkcs8,
        })
    }

    /// With a key configured, seal keys an earlier start stored in plaintext.
    async fn seal_plaintext_keys(&self) -> Result<(), StateError> {
        let Some(c) = &self.inner.cipher else {
            return Ok(());
        };
        // The default session key ring too (stored before a key was configured).
        if let Some((v, _)) = self.get_record(Kind::SessionKey, "default").await?
            && let Some(text) = v.strip_prefix("none:")
        {
            let sealed = c.seal("default", text.as_bytes())?;
            let v = format!(
                "aes256gcm:{}",
                base64::engine::general_purpose::STANDARD.encode(sealed)
            );
            self.update_record(Kind::SessionKey, "default", &v).await?;
            tracing::info!("State: sealed the plaintext session key ring");
        }
        let raw = on_backend!(self, b => b.load_keys().await)?;
        for k in raw {
            match k.enc.as_str() {
                "none" => {
                    let sealed = c.seal(&k.kid, &k.material)?;
                    on_backend!(self, b => b.reseal_key(k.generation, sealed).await)?;
                    tracing::info!(kid = %k.kid, "State: sealed a plaintext signing key");
                }
                // Proves the key is the right one before anything is served.
                _ => {
                    self.open_key(k)?;
                }
            }
        }
        Ok(())
    }

    /// The schema version in the database (for tests and `/admin`).
    pub async fn schema_version(&self) -> Result<i64, StateError> {
        on_backend!(self, b => b.schema_version().await)
    }

    /// Overwrite the schema version (tests of the newer-schema refusal).
    #[doc(hidden)]
    pub async fn force_schema_version(&self, v: i64) -> Result<(), StateError> {
        on_backend!(self, b => b.force_schema_version(v).await)
    }
}
