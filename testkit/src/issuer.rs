//! `TestIssuer`: a real OAuth/OIDC token issuer on 127.0.0.1 with metadata, a JWKS and token minting.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::keys::{self, KeyRing};
pub use crate::keys::{KeyAlg, WEAK_RSA_1024_N};
use crate::util::{self, Server, lock};

/// How `GET /jwks` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum JwksMode {
    /// `200 {"keys":[...]}`.
    #[default]
    Normal,
    /// `500` with an empty body.
    Status500,
    /// `200` with body `not json{` and `content-type: application/json`.
    Garbage,
    /// Never answers (the request is held until the issuer is dropped).
    Hang,
}

#[derive(Debug)]
struct IssuerState {
    ring: KeyRing,
    mode: JwksMode,
    serve_oauth_metadata: bool,
}

#[derive(Debug)]
struct Shared {
    issuer: String,
    state: Mutex<IssuerState>,
    jwks_fetches: AtomicUsize,
    metadata_fetches: AtomicUsize,
    shutdown: watch::Receiver<bool>,
}

/// A token issuer serving `/.well-known/oauth-authorization-server`,
/// `/.well-known/openid-configuration` and `/jwks`. Stops when dropped.
#[derive(Debug)]
pub struct TestIssuer {
    shared: Arc<Shared>,
    server: Server,
}

impl TestIssuer {
    /// Starts an issuer on a free port with one EdDSA key.
    pub async fn start() -> TestIssuer {
        TestIssuer::start_on(0).await
    }

    /// Starts an issuer on 127.0.0.1:`port` (0 = any free port) with one EdDSA key.
    pub async fn start_on(port: u16) -> TestIssuer {
        let listener = util::bind(port).await;
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("testkit: listener has no local address: {e}"));
        let (tx, rx) = util::shutdown_pair();
        let shared = Arc::new(Shared {
            issuer: format!("http://{addr}"),
            state: Mutex::new(IssuerState {
                ring: KeyRing::new(),
                mode: JwksMode::Normal,
                serve_oauth_metadata: true,
            }),
            jwks_fetches: AtomicUsize::new(0),
            metadata_fetches: AtomicUsize::new(0),
            shutdown: rx,
        });
        let router = Router::new()
            .route(
                "/.well-known/oauth-authorization-server",
                get(oauth_metadata),
            )
            .route("/.well-known/openid-configuration", get(oidc_metadata))
            .route("/jwks", get(jwks))
            .with_state(Arc::clone(&shared));
        let server = util::serve(listener, router, tx);
        TestIssuer { shared, server }
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    /// The socket the issuer listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The JWKS URL published in the metadata (`<issuer>/jwks`).
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.shared.issuer)
    }

    /// Generates a key, publishes it in the JWKS and makes it the current signing key; returns its kid.
    pub fn add_key(&self, alg: KeyAlg) -> String {
        lock(&self.shared.state).ring.add(alg)
    }

    /// Drops `kid` from the JWKS. Its private key is kept, so tokens can still be minted with it
    /// (and the current kid is left unchanged even if it is the one removed).
    pub fn remove_key(&self, kid: &str) {
        lock(&self.shared.state).ring.remove(kid);
    }

    /// The kid [`TestIssuer::mint`] signs with.
    pub fn current_kid(&self) -> String {
        lock(&self.shared.state).ring.current().to_owned()
    }

    /// The algorithm of key `kid`, if the issuer has it.
    pub fn key_alg(&self, kid: &str) -> Option<KeyAlg> {
        lock(&self.shared.state).ring.alg(kid)
    }

    /// Changes how `GET /jwks` answers.
    pub fn set_jwks_mode(&self, mode: JwksMode) {
        lock(&self.shared.state).mode = mode;
    }

    /// Raw JWK objects appended after the issuer's own keys in the JWKS (replaces earlier extras).
    pub fn set_extra_jwks_keys(&self, keys: Vec<Value>) {
        lock(&self.shared.state).ring.extra = keys;
    }

    /// Number of `GET /jwks` requests received (any mode, including hanging ones).
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Number of requests to either metadata document (including 404s while OAuth metadata is off).
    pub fn metadata_fetches(&self) -> usize {
        self.shared.metadata_fetches.load(Ordering::SeqCst)
    }

    /// When false, `/.well-known/oauth-authorization-server` answers 404 (OIDC document still served).
    pub fn set_serve_oauth_metadata(&self, on: bool) {
        lock(&self.shared.state).serve_oauth_metadata = on;
    }

    /// Signs `claims` with the current key; header `{alg, kid, typ: "at+jwt"}`.
    pub fn mint(&self, claims: &Value) -> String {
        lock(&self.shared.state).ring.mint(claims)
    }

    /// Signs with key `kid`'s private key and its own algorithm, using `header` verbatim
    /// (its `alg`, `kid`, `typ`, ... are written exactly as given, so tests can lie).
    /// Panics if the issuer has no key `kid` (including removed keys: those still sign).
    pub fn mint_raw(&self, header: &Value, claims: &Value, kid: &str) -> String {
        lock(&self.shared.state).ring.mint_raw(header, claims, kid)
    }

    /// Claims of a valid token: iss, sub, aud, scope, client_id ("test-client"),
    /// iat = nbf = now, exp = now + 300, random jti.
    pub fn claims(&self, sub: &str, aud: &str, scope: &str) -> Value {
        keys::claims(&self.shared.issuer, sub, aud, scope)
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn metadata(shared: &Shared) -> Response {
    let iss = &shared.issuer;
    axum::Json(json!({
        "issuer": iss,
        "jwks_uri": format!("{iss}/jwks"),
        "authorization_endpoint": format!("{iss}/authorize"),
        "token_endpoint": format!("{iss}/token"),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
    }))
    .into_response()
}

async fn oauth_metadata(State(shared): State<Arc<Shared>>) -> Response {
    shared.metadata_fetches.fetch_add(1, Ordering::SeqCst);
    if !lock(&shared.state).serve_oauth_metadata {
        return StatusCode::NOT_FOUND.into_response();
    }
    metadata(&shared)
}

async fn oidc_metadata(State(shared): State<Arc<Shared>>) -> Response {
    shared.metadata_fetches.fetch_add(1, Ordering::SeqCst);
    metadata(&shared)
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    shared.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let (mode, body) = {
        let st = lock(&shared.state);
        (st.mode, st.ring.jwks())
    };
    match mode {
        JwksMode::Normal => axum::Json(body).into_response(),
        JwksMode::Status500 => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        JwksMode::Garbage => {
            ([(header::CONTENT_TYPE, "application/json")], "not json{").into_response()
        }
        JwksMode::Hang => {
            util::stopped(&shared.shutdown).await;
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}
