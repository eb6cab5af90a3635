//! Warden's embedded OAuth 2.1 authorization server: config, start/stop, and the shared state.
//!
//! Endpoints (see `docs/authorization-server.md`): RFC 8414 / OIDC discovery, `/jwks`,
//! `/authorize` + `/login` + `/consent` (authorization code with PKCE S256 only), `/token`
//! (authorization_code, refresh_token, client_credentials, password for opted-in clients,
//! RFC 8693 token exchange) and `/register` (RFC 7591, public loopback clients only).
//! Every access token is signed by the [`Sts`]; state lives in the STS's [`crate::state::StateStore`].

pub mod cimd;
mod client_auth;
mod clients;
mod connectors;
mod dpop;
mod exchange;
mod federate;
mod idjag;
mod meta;
mod pages;
mod password;
mod records;
mod revoke;
pub mod settings;
mod store;
pub mod throttle;
mod token;
mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, SaltString};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::sts::Sts;
use clients::Client;
use store::Store;

/// The authorization server's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthServerConfig {
    /// Address to listen on (default `127.0.0.1:9000`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The issuer URL, no trailing slash; must equal `Sts::issuer()`.
    pub issuer: String,
    #[serde(default = "default_access_ttl", with = "humantime_serde")]
    pub access_token_ttl: Duration,
    #[serde(default = "default_refresh_ttl", with = "humantime_serde")]
    pub refresh_token_ttl: Duration,
    #[serde(default = "default_code_ttl", with = "humantime_serde")]
    pub code_ttl: Duration,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub scopes: Vec<ScopeConfig>,
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    /// RFC 7591 registration, for public loopback clients only.
    #[serde(default = "yes")]
    pub dynamic_registration: bool,
    /// Allowed RFC 8707 resource / audience values for user tokens; the first is the default.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Algorithms accepted for DPoP proofs at `/token` (RFC 9449 §5.1; asymmetric only).
    #[serde(default = "default_dpop_algs")]
    pub dpop_algorithms: Vec<String>,
    /// Require a nonce issued by `/token` in every DPoP proof (RFC 9449 §8).
    #[serde(default)]
    pub dpop_nonce: bool,
    /// Upstream OpenID Connect IdPs offered on the login page (federated login).
    #[serde(default)]
    pub connectors: Vec<settings::ConnectorConfig>,
    /// A just-rotated refresh token presented again within this long refreshes again instead
    /// of revoking its family (clients retrying after a network error). Default 0: off.
    #[serde(default, with = "humantime_serde")]
    pub refresh_reuse_grace: Duration,
    /// Sign-in throttling per user name and per client address.
    #[serde(default)]
    pub login_throttle: throttle::ThrottleConfig,
    /// Client ID Metadata Documents (https URL client ids); on by default.
    #[serde(default)]
    pub client_id_metadata_documents: cimd::CimdConfig,
}

impl AuthServerConfig {
    /// Whether a member of `groups` may be granted `scope`.
    pub fn may_grant(&self, scope: &str, groups: &[String]) -> bool {
        self.scopes.iter().any(|s| {
            s.name == scope && (s.groups.is_empty() || s.groups.iter().any(|g| groups.contains(g)))
        })
    }

    /// Every scope a member of `groups` may be granted, in configuration order: what a user
    /// asking for no particular scope gets (also what `warden policy test` gives a `user:`).
    pub fn grantable_scopes(&self, groups: &[String]) -> Vec<String> {
        self.scopes
            .iter()
            .filter(|s| self.may_grant(&s.name, groups))
            .map(|s| s.name.clone())
            .collect()
    }
}

/// A user who can log in.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub username: String,
    /// Argon2 PHC string (see [`hash_password`]).
    pub password_hash: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("username", &self.username)
            .field("password_hash", &"...")
            .field("email", &self.email)
            .field("groups", &self.groups)
            .finish()
    }
}

/// A scope and the groups whose members may be granted it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeConfig {
    pub name: String,
    /// Empty: any user may be granted it.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A pre-registered client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub client_id: String,
    #[serde(default)]
    pub public: bool,
    /// Confidential clients: the environment variable holding the secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// private_key_jwt (RFC 7523): the client's public JWKS.
    #[serde(default)]
    pub jwks: Option<Value>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Empty: `authorization_code` and `refresh_token`.
    #[serde(default)]
    pub grant_types: Vec<String>,
    /// Audiences for client_credentials and token exchange.
    #[serde(default)]
    pub allowed_audiences: Vec<String>,
    /// Scopes for client_credentials and token exchange; empty = none.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Lifetime of tokens obtained by token exchange (default 5 s).
    #[serde(default, with = "humantime_serde::option")]
    pub exchange_token_ttl: Option<Duration>,
    /// RFC 9449 §5.2: refuse this client's token requests without a DPoP proof.
    #[serde(default)]
    pub dpop_bound_access_tokens: bool,
}

fn default_dpop_algs() -> Vec<String> {
    vec!["ES256".into(), "EdDSA".into()]
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9000))
}
fn default_access_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_refresh_ttl() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
fn default_code_ttl() -> Duration {
    Duration::from_secs(60)
}
fn yes() -> bool {
    true
}

/// Why the embedded authorization server cannot start or answer, and whose doing it is.
#[derive(Debug, thiserror::Error)]
pub enum AuthServerError {
    /// The operator's `authorization_server` block.
    #[error("{0}")]
    Config(String),
    #[error("authz: cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("authz: {0}")]
    State(#[from] crate::state::StateError),
    /// Randomness, hashing or signing failed inside Warden.
    #[error("{0}")]
    Crypto(String),
    /// A caller of [`AuthServer::mint_user_token`] named a user or resource that is not configured.
    #[error("{0}")]
    Unknown(String),
}

/// Hash a password as an argon2id PHC string (default parameters, random salt). The 19 MiB of
/// argon2 memory is returned to the system afterwards (`password`).
pub fn hash_password(plain: &str) -> Result<String, AuthServerError> {
    let crypto = AuthServerError::Crypto;
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| crypto("system RNG failed".into()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| crypto(format!("salt: {e}")))?;
    password::hash(plain, &salt).map_err(crypto)
}

/// Check a password against a PHC string (with its own parameters; the comparison is
/// constant-time, and argon2's memory is returned to the system afterwards).
pub fn verify_password(plain: &str, phc: &str) -> bool {
    password::verify(plain, phc)
}

/// A configured user, validated.
#[derive(Clone)]
pub(crate) struct User {
    pub username: String,
    pub password_hash: String,
    pub email: Option<String>,
    pub groups: Vec<String>,
}

/// Everything the handlers share.
pub(crate) struct Inner {
    pub cfg: AuthServerConfig,
    pub sts: Arc<Sts>,
    pub users: std::collections::HashMap<String, User>,
    pub clients: std::collections::HashMap<String, Arc<Client>>,
    pub store: Store,
    /// `Secure` on cookies (https issuer).
    pub secure_cookies: bool,
    /// A hash to verify against when the user is unknown, so timing does not reveal usernames.
    pub dummy_hash: String,
    /// Upstream IdPs, in configuration order.
    pub connectors: Vec<Arc<connectors::Connector>>,
    pub throttle: throttle::Throttle,
    /// None when Client ID Metadata Documents are disabled.
    pub cimd: Option<cimd::Cimd>,
}

impl Inner {
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.cfg.issuer)
    }

    /// A configured or dynamically registered client.
    pub async fn client(&self, id: &str) -> Option<Arc<Client>> {
        match self.clients.get(id) {
            Some(c) => Some(c.clone()),
            None => match self.store.registered(id).await {
                Some(c) => Some(c),
                None => match &self.cimd {
                    Some(m) if cimd::is_document_url(id) => match m.client(id).await {
                        Ok(c) => Some(c),
                        Err(e) => {
                            tracing::info!(client_id = ?id, error = %e, "Authorization server: client metadata document refused");
                            None
                        }
                    },
                    _ => None,
                },
            },
        }
    }

    pub fn connector(&self, id: &str) -> Option<Arc<connectors::Connector>> {
        self.connectors.iter().find(|c| c.cfg.id == id).cloned()
    }

    /// A configured user, or a federated one as last seen in its IdP's ID token.
    pub async fn user(&self, name: &str) -> Option<User> {
        match self.users.get(name) {
            Some(u) => Some(u.clone()),
            None => self.store.fed_user(name).await.map(|f| f.user()),
        }
    }

    /// Scopes granted to `user` out of `requested` (space-separated; `None` = every scope the user may have).
    pub fn grant_user_scopes(&self, user: &User, requested: Option<&str>) -> Vec<String> {
        let allowed = |name: &str| self.cfg.may_grant(name, &user.groups);
        match requested {
            None => self.cfg.grantable_scopes(&user.groups),
            Some(req) => {
                let mut out: Vec<String> = Vec::new();
                for s in req.split(' ').filter(|s| !s.is_empty()) {
                    if allowed(s) && !out.iter().any(|o| o == s) {
                        out.push(s.to_owned());
                    }
                }
                out
            }
        }
    }

    /// Resolve an RFC 8707 resource for a user token: must be configured; default the first.
    pub fn user_resource(&self, requested: Option<&str>) -> Result<String, &'static str> {
        match requested {
            Some(r) if self.cfg.resources.iter().any(|x| x == r) => Ok(r.to_owned()),
            Some(_) => Err("resource not served by this authorization server"),
            None => self
                .cfg
                .resources
                .first()
                .cloned()
                .ok_or("no resource configured"),
        }
    }

    /// Sign a user access token (RFC 9068). Returns the token, its lifetime in seconds and its `jti`.
    pub fn user_token(
        &self,
        user: &User,
        client_id: &str,
        scopes: &[String],
        aud: &str,
        jkt: Option<&str>,
    ) -> Result<(String, i64, String), AuthServerError> {
        let now = self.store.now();
        let ttl = self.cfg.access_token_ttl.as_secs() as i64;
        let jti = Sts::new_jti().map_err(|e| AuthServerError::Crypto(e.to_string()))?;
        let mut c = json!({
            "iss": self.cfg.issuer,
            "sub": user.username,
            "aud": aud,
            "client_id": client_id,
            "scope": scopes.join(" "),
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": jti,
            "groups": user.groups,
        });
        if let Some(e) = &user.email {
            c["email"] = Value::String(e.clone());
        }
        // RFC 9449 §6: bound to the DPoP key whose proof came with the request.
        if let Some(j) = jkt {
            c["cnf"] = json!({"jkt": j});
        }
        let t = (self.sts.sign(&c)).map_err(|e| AuthServerError::Crypto(e.to_string()))?;
        Ok((t, ttl, jti))
    }
}

/// A running authorization server. Dropping it stops the listener.
pub struct AuthServer {
    addr: SocketAddr,
    inner: Arc<Inner>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Dropped with the server: stops the connectors' refresher.
    _refresher: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for AuthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl AuthServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting connections.
    pub fn shutdown(self) {
        drop(self);
    }

    /// Mint a user access token directly (for scripts/tests; same claims as the token
    /// endpoint, with `client_id` = `warden-mint`). `scope` is space-separated and is
    /// narrowed to what the user may have; `resource` empty = the default resource.
    pub fn mint_user_token(
        &self,
        username: &str,
        scope: &str,
        resource: &str,
    ) -> Result<String, AuthServerError> {
        let unknown = AuthServerError::Unknown;
        let user = (self.inner.users.get(username))
            .ok_or_else(|| unknown(format!("unknown user {username:?}")))?;
        let scopes = self.inner.grant_user_scopes(user, Some(scope));
        let res = (!resource.is_empty()).then_some(resource);
        let aud = (self.inner.user_resource(res)).map_err(|e| unknown(e.to_owned()))?;
        self.inner
            .user_token(user, "warden-mint", &scopes, &aud, None)
            .map(|(t, _, _)| t)
    }
}

impl AuthServer {
    /// The scopes `username` last consented to for `client_id` (and when), if recorded.
    pub async fn consent_of(&self, username: &str, client_id: &str) -> Option<(Vec<String>, i64)> {
        let c = self.inner.store.consent(username, client_id).await?;
        Some((c.scopes, c.at))
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

fn validate(cfg: &AuthServerConfig, sts: &Sts) -> Result<(), AuthServerError> {
    if cfg.issuer != sts.issuer() {
        return Err(AuthServerError::Config(format!(
            "authz.issuer {:?} must equal the STS issuer {:?}",
            cfg.issuer,
            sts.issuer()
        )));
    }
    let iss = url::Url::parse(&cfg.issuer)
        .map_err(|e| AuthServerError::Config(format!("authz.issuer {:?}: {e}", cfg.issuer)))?;
    if !matches!(iss.scheme(), "http" | "https")
        || iss.query().is_some()
        || iss.fragment().is_some()
        || cfg.issuer.ends_with('/')
    {
        return Err(AuthServerError::Config(format!(
            "authz.issuer {:?}: must be an http(s) URL without query, fragment or trailing slash",
            cfg.issuer
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for u in &cfg.users {
        if u.username.is_empty() || !seen.insert(u.username.as_str()) {
            return Err(AuthServerError::Config(format!(
                "authz.users: username {:?} empty or duplicated",
                u.username
            )));
        }
        PasswordHash::new(&u.password_hash).map_err(|e| {
            AuthServerError::Config(format!(
                "authz.users[{}].password_hash: not a PHC string ({e})",
                u.username
            ))
        })?;
    }
    let mut seen = std::collections::HashSet::new();
    for s in &cfg.scopes {
        if s.name.is_empty() || s.name.contains(' ') || !seen.insert(s.name.as_str()) {
            return Err(AuthServerError::Config(format!(
                "authz.scopes: scope {:?} empty, has a space, or duplicated",
                s.name
            )));
        }
    }
    for r in &cfg.resources {
        url::Url::parse(r).map_err(|e| {
            AuthServerError::Config(format!("authz.resources: {r:?} is not absolute ({e})"))
        })?;
    }
    settings::validate(&cfg.connectors).map_err(|e| AuthServerError::Config(e.to_string()))?;
    if cfg.dpop_algorithms.is_empty()
        || cfg
            .dpop_algorithms
            .iter()
            .any(|a| dataplane::auth::jwks::parse_alg(a).is_none())
    {
        return Err(AuthServerError::Config(format!(
            "authz.dpop_algorithms: {:?}: a non-empty list of asymmetric algorithms (ES256, EdDSA, RS256, ...)",
            cfg.dpop_algorithms
        )));
    }
    Ok(())
}

/// Validate `cfg`, bind `cfg.listen`, and serve on the current tokio runtime. State goes to
/// the STS's store ([`Sts::open`]); an STS without one ([`Sts::new`]) gets an in-memory
/// SQLite store, gone with the process. Times are the STS's clock (its store's).
pub async fn start(cfg: AuthServerConfig, sts: Arc<Sts>) -> Result<AuthServer, AuthServerError> {
    validate(&cfg, &sts)?;
    let state = match sts.store() {
        Some(s) => s.clone(),
        None => crate::state::StateStore::memory(sts.clock().clone()).await?,
    };
    let clients = clients::from_config(&cfg).map_err(AuthServerError::Config)?;
    let users = cfg
        .users
        .iter()
        .map(|u| {
            (
                u.username.clone(),
                User {
                    username: u.username.clone(),
                    password_hash: u.password_hash.clone(),
                    email: u.email.clone(),
                    groups: u.groups.clone(),
                },
            )
        })
        .collect();
    let dummy_hash = hash_password("warden-dummy-password")?;
    let login_throttle = cfg.login_throttle.clone();
    let cimd = match cfg.client_id_metadata_documents.enabled {
        true => Some(
            cimd::Cimd::new(
                cfg.client_id_metadata_documents.clone(),
                sts.clock().clone(),
            )
            .map_err(|e| {
                AuthServerError::Config(format!("authz.client_id_metadata_documents: {e}"))
            })?,
        ),
        false => None,
    };
    let clock = sts.clock().clone();
    let mut conns = Vec::new();
    for c in &cfg.connectors {
        let c = connectors::Connector::new(c.clone(), sts.clock().clone())
            .map_err(|e| AuthServerError::Config(e.to_string()))?;
        conns.push(Arc::new(c));
    }
    // A first discovery before serving, so the login page knows; an IdP that is down does
    // not stop Warden (its users see that it is down, the others are unaffected).
    futures_util::future::join_all(conns.iter().map(|c| c.refresh())).await;
    let bind = |source| AuthServerError::Bind {
        addr: cfg.listen,
        source,
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    let inner = Arc::new(Inner {
        secure_cookies: cfg.issuer.starts_with("https://"),
        cfg,
        sts,
        users,
        clients,
        store: Store::new(state),
        dummy_hash,
        connectors: conns.clone(),
        throttle: throttle::Throttle::new(login_throttle, clock),
        cimd,
    });
    let (refresher, stop_refresh) = tokio::sync::watch::channel(false);
    connectors::spawn_refresher(conns, stop_refresh);
    let app = router(inner.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let serve = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        );
        tokio::select! {
            r = serve => if let Err(e) = r {
                tracing::error!(error = %e, "Authorization server listener failed");
            },
            _ = rx => {}
        }
    });
    tracing::info!(%addr, issuer = %inner.cfg.issuer, "Authorization server listening");
    Ok(AuthServer {
        addr,
        inner,
        stop: Some(tx),
        _refresher: refresher,
    })
}

fn router(inner: Arc<Inner>) -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            get(meta::metadata),
        )
        .route("/.well-known/openid-configuration", get(meta::metadata))
        .route("/jwks", get(meta::jwks))
        .route("/register", post(meta::register))
        .route("/authorize", get(web::authorize))
        .route("/login", post(web::login))
        .route("/consent", post(web::consent))
        .route("/federate", post(federate::start))
        .route("/revoke", post(revoke::revoke))
        .route("/introspect", post(revoke::introspect))
        .route("/federate/callback", get(federate::callback))
        .route("/token", post(token::token))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .layer(axum::middleware::from_fn(meta::cors))
        .with_state(inner)
}
