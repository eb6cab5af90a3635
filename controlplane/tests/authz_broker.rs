//! The embedded authorization server as an identity broker: federated login to upstream
//! OpenID Connect IdPs (a small in-process IdP per test, on 127.0.0.1:0), private_key_jwt to
//! the IdP, strict ID-token validation (tampered, wrong audience, wrong nonce, unknown key),
//! claims mapping into groups and scopes, two IdPs with one stopped mid-test.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(
    clippy::disallowed_methods,
    reason = "mints tokens for the real now (the server runs on the real clock)"
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use controlplane::authz::{self, AuthServer, AuthServerConfig};
use controlplane::state::{Location, StateStore};
use controlplane::sts::{SigningAlg, SigningKey, Sts};
use serde_json::{Value, json};
use tokio::sync::Mutex;

const RES: &str = "http://127.0.0.1:8080/mcp";
const CLI_REDIRECT: &str = "http://localhost:19876/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mJ92K9ZmT6M4vVwqWL5hjpuE6gKqdcKEy";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn challenge(verifier: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    URL_SAFE_NO_PAD.encode(d.as_ref())
}

fn b64json(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// How the test IdP spoils its next ID token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Good,
    Tampered,
    WrongAudience,
    WrongNonce,
    /// Signed by a key the JWKS does not publish.
    UnknownKey,
}

struct Grant {
    nonce: String,
    challenge: String,
    redirect_uri: String,
}

/// A minimal OpenID provider: discovery, JWKS, an authorization endpoint that signs the
/// configured user in at once, and a token endpoint that checks PKCE and the client's
/// private_key_jwt assertion (ES256) before returning an ID token.
struct Idp {
    issuer: String,
    client_id: String,
    key: SigningKey,
    other_key: SigningKey,
    /// The public key of Warden's client assertions.
    client_pub: Vec<u8>,
    user: Value,
    mode: Mutex<Mode>,
    grants: Mutex<HashMap<String, Grant>>,
    assertions_ok: AtomicUsize,
}

async fn idp_discovery(State(idp): State<Arc<Idp>>) -> Response {
    axum::Json(json!({
        "issuer": idp.issuer,
        "authorization_endpoint": format!("{}/auth", idp.issuer),
        "token_endpoint": format!("{}/token", idp.issuer),
        "jwks_uri": format!("{}/jwks", idp.issuer),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
    }))
    .into_response()
}

async fn idp_jwks(State(idp): State<Arc<Idp>>) -> Response {
    axum::Json(json!({"keys": [idp.key.public_jwk]})).into_response()
}

async fn idp_auth(
    State(idp): State<Arc<Idp>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    assert_eq!(q["client_id"], idp.client_id);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q["scope"].split(' ').any(|s| s == "openid"));
    let code = format!("code-{}", q["state"].len() + idp.grants.lock().await.len());
    idp.grants.lock().await.insert(
        code.clone(),
        Grant {
            nonce: q["nonce"].clone(),
            challenge: q["code_challenge"].clone(),
            redirect_uri: q["redirect_uri"].clone(),
        },
    );
    let mut u = url::Url::parse(&q["redirect_uri"]).unwrap();
    u.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &q["state"])
        .append_pair("iss", &idp.issuer);
    (StatusCode::FOUND, [("location", u.to_string())]).into_response()
}

async fn idp_token(
    State(idp): State<Arc<Idp>>,
    _h: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let err = |e: &str| (StatusCode::BAD_REQUEST, axum::Json(json!({"error": e}))).into_response();
    // private_key_jwt (RFC 7523 §2.2): ES256 over header.payload, iss = sub = client_id, aud = token endpoint.
    if f.get("client_assertion_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    {
        return err("invalid_client");
    }
    let a = &f["client_assertion"];
    let parts: Vec<&str> = a.split('.').collect();
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    let input = format!("{}.{}", parts[0], parts[1]);
    let pk = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        &idp.client_pub,
    );
    if pk.verify(input.as_bytes(), &sig).is_err() {
        return err("invalid_client");
    }
    let c = b64json(parts[1]);
    if c["iss"] != idp.client_id.as_str()
        || c["sub"] != idp.client_id.as_str()
        || c["aud"] != format!("{}/token", idp.issuer).as_str()
        || c["exp"].as_i64().unwrap() < now()
        || b64json(parts[0])["alg"] != "ES256"
    {
        return err("invalid_client");
    }
    idp.assertions_ok.fetch_add(1, Ordering::SeqCst);
    let Some(g) = idp.grants.lock().await.remove(&f["code"]) else {
        return err("invalid_grant");
    };
    if challenge(&f["code_verifier"]) != g.challenge || f["redirect_uri"] != g.redirect_uri {
        return err("invalid_grant");
    }
    let mode = *idp.mode.lock().await;
    let mut claims = idp.user.clone();
    claims["iss"] = json!(idp.issuer);
    claims["aud"] = json!(if mode == Mode::WrongAudience {
        "someone-else"
    } else {
        idp.client_id.as_str()
    });
    claims["nonce"] = json!(if mode == Mode::WrongNonce {
        "not-the-nonce"
    } else {
        g.nonce.as_str()
    });
    claims["iat"] = json!(now());
    claims["exp"] = json!(now() + 300);
    let key = if mode == Mode::UnknownKey {
        &idp.other_key
    } else {
        &idp.key
    };
    let mut id_token = key.sign(&claims, "JWT").unwrap();
    if mode == Mode::Tampered {
        // Change the payload, keep the signature.
        let p: Vec<&str> = id_token.split('.').collect();
        let mut c = b64json(p[1]);
        c["groups"] = json!(["compliance", "admins"]);
        let forged = URL_SAFE_NO_PAD.encode(c.to_string());
        id_token = format!("{}.{}.{}", p[0], forged, p[2]);
    }
    axum::Json(json!({"access_token": "idp-at", "token_type": "Bearer", "id_token": id_token}))
        .into_response()
}

/// A running test IdP; dropping `stop` stops it.
struct IdpHandle {
    idp: Arc<Idp>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn start_idp(client_id: &str, client_pub: Vec<u8>, user: Value) -> IdpHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let idp = Arc::new(Idp {
        issuer,
        client_id: client_id.into(),
        key: SigningKey::generate(SigningAlg::EdDSA).unwrap(),
        other_key: SigningKey::generate(SigningAlg::EdDSA).unwrap(),
        client_pub,
        user,
        mode: Mutex::new(Mode::Good),
        grants: Mutex::new(HashMap::new()),
        assertions_ok: AtomicUsize::new(0),
    });
    use axum::routing::{get, post};
    let app = axum::Router::new()
        .route("/.well-known/openid-configuration", get(idp_discovery))
        .route("/jwks", get(idp_jwks))
        .route("/auth", get(idp_auth))
        .route("/token", post(idp_token))
        .with_state(idp.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    IdpHandle {
        idp,
        stop: Some(tx),
    }
}

/// Warden's client key for private_key_jwt: (PEM file, raw public key).
fn client_key(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, Vec<u8>) {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.as_ref()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
    let path = dir.join(format!("{name}.pem"));
    std::fs::write(&path, pem).unwrap();
    (path, kp.public_key().as_ref().to_vec())
}

struct H {
    /// The confidential client `agent` (private_key_jwt) for the jwt-bearer grant.
    agent_key: SigningKey,
    /// The configuration and store, for a restart.
    cfg: Value,
    loc: Option<Location>,
    srv: Option<AuthServer>,
    base: String,
    http: reqwest::Client,
    idps: Vec<IdpHandle>,
    _dir: tempfile::TempDir,
}

/// Warden with `users` (JSON users) and one connector per entry of `idps` (id, user claims).
async fn setup(idps: &[(&str, Value)], local_users: Value) -> H {
    setup_on(idps, local_users, None).await
}

/// The server on `loc` (None: the STS's in-memory store).
async fn serve(cfg: &Value, loc: Option<&Location>) -> AuthServer {
    let base = cfg["issuer"].as_str().unwrap();
    let sts = match loc {
        None => Sts::new(base, SigningAlg::EdDSA, controlplane::Clock::new()).unwrap(),
        Some(l) => {
            let store = StateStore::open(l.clone(), None, controlplane::Clock::new())
                .await
                .unwrap();
            Sts::open(store, base, SigningAlg::EdDSA).await.unwrap()
        }
    };
    let cfg: AuthServerConfig = serde_json::from_value(cfg.clone()).unwrap();
    authz::start(cfg, Arc::new(sts)).await.unwrap()
}

async fn setup_on(idps: &[(&str, Value)], local_users: Value, loc: Option<Location>) -> H {
    let dir = tempfile::tempdir().unwrap();
    let mut handles = Vec::new();
    let mut connectors = Vec::new();
    for (id, user) in idps {
        let (pem, public) = client_key(dir.path(), id);
        let h = start_idp(&format!("warden-at-{id}"), public, user.clone()).await;
        connectors.push(json!({
            "id": id, "name": format!("{id} SSO"), "issuer": h.idp.issuer,
            "client_id": h.idp.client_id,
            "private_key_file": pem, "private_key_alg": "ES256", "private_key_id": "warden-1",
            "scopes": ["openid", "email", "profile", "groups"],
            "claims": {"sub": "preferred_username", "groups": "roles"},
            "allowed_email_domains": ["corp.example", "partner.example"],
            "refresh_interval": "1s", "min_refetch_interval": "1s", "timeout": "2s",
            "accept_id_jag": *id == "corp",
        }));
        handles.push(h);
    }
    let port = testkit::stable_port();
    let base = format!("http://127.0.0.1:{port}");
    let agent_key = SigningKey::generate(SigningAlg::EdDSA).unwrap();
    let cfg = json!({
        "listen": format!("127.0.0.1:{port}"),
        "issuer": base,
        "resources": [RES],
        "users": local_users,
        "scopes": [{"name": "mcp:tools"}, {"name": "pii:read", "groups": ["compliance"]}],
        "clients": [
            {"client_id": "mcp-client-cli", "public": true, "redirect_uris": [CLI_REDIRECT]},
            {"client_id": "agent", "jwks": {"keys": [agent_key.public_jwk.clone()]},
             "grant_types": ["urn:ietf:params:oauth:grant-type:jwt-bearer"]},
        ],
        "connectors": connectors,
    });
    let srv = serve(&cfg, loc.as_ref()).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    H {
        agent_key,
        cfg,
        loc,
        srv: Some(srv),
        base,
        http,
        idps: handles,
        _dir: dir,
    }
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Hidden inputs of the form in `html` that contains `marker`.
fn form_with(html: &str, marker: &str) -> Vec<(String, String)> {
    let form = html
        .split("<form")
        .find(|f| f.contains(marker))
        .unwrap_or_else(|| panic!("no form with {marker} in {html}"));
    let form = &form[..form.find("</form>").unwrap()];
    let mut out = Vec::new();
    for piece in form.split("<input").skip(1) {
        let tag = &piece[..piece.find('>').unwrap()];
        if !tag.contains("type=\"hidden\"") {
            continue;
        }
        let attr = |n: &str| {
            let start = tag.find(&format!("{n}=\"")).unwrap() + n.len() + 2;
            let end = start + tag[start..].find('"').unwrap();
            unescape(&tag[start..end])
        };
        out.push((attr("name"), attr("value")));
    }
    out
}

/// The outcome of a federated sign-in attempt.
enum Outcome {
    /// The token response.
    Tokens(Value),
    /// An error page: status and HTML.
    Page(u16, String),
}

impl H {
    async fn login_page(&self) -> String {
        let mut u = url::Url::parse(&format!("{}/authorize", self.base)).unwrap();
        u.query_pairs_mut().extend_pairs([
            ("response_type", "code"),
            ("client_id", "mcp-client-cli"),
            ("redirect_uri", CLI_REDIRECT),
            ("code_challenge", &challenge(VERIFIER)),
            ("code_challenge_method", "S256"),
            ("state", "st"),
            ("resource", RES),
        ]);
        let r = self.http.get(u.as_str()).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    /// The browser flow through connector `id`: login page → /federate → IdP → callback →
    /// consent → code → token.
    async fn federated(&self, id: &str) -> Outcome {
        let html = self.login_page().await;
        let form = form_with(&html, &format!("value=\"{id}\""));
        let r = (self
            .http
            .post(format!("{}/federate", self.base))
            .form(&form))
        .send()
        .await
        .unwrap();
        if r.status() != 302 {
            return Outcome::Page(r.status().as_u16(), r.text().await.unwrap());
        }
        let to_idp = r.headers()["location"].to_str().unwrap().to_owned();
        let r = self.http.get(&to_idp).send().await.unwrap();
        assert_eq!(r.status(), 302);
        let back = r.headers()["location"].to_str().unwrap().to_owned();
        assert!(back.starts_with(&format!("{}/federate/callback?", self.base)));
        let r = self.http.get(&back).send().await.unwrap();
        let status = r.status().as_u16();
        let cookie = r
            .headers()
            .get("set-cookie")
            .map(|c| c.to_str().unwrap().to_owned());
        let html = r.text().await.unwrap();
        if status != 200 {
            assert!(cookie.is_none(), "a refused sign-in sets no session");
            return Outcome::Page(status, html);
        }
        let cookie = cookie.unwrap().split(';').next().unwrap().to_owned();
        let mut form = form_with(&html, "action=\"/consent\"");
        form.push(("decision".into(), "approve".into()));
        let r = (self.http.post(format!("{}/consent", self.base)))
            .header("cookie", &cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
        let q: HashMap<String, String> = loc.query_pairs().into_owned().collect();
        assert_eq!(q["iss"], self.base, "RFC 9207 iss");
        let r = (self.http.post(format!("{}/token", self.base)))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &q["code"]),
                ("redirect_uri", CLI_REDIRECT),
                ("client_id", "mcp-client-cli"),
                ("code_verifier", VERIFIER),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        Outcome::Tokens(r.json().await.unwrap())
    }

    async fn refresh(&self, rt: &str) -> (u16, Value) {
        let r = (self.http.post(format!("{}/token", self.base)))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt),
                ("client_id", "mcp-client-cli"),
            ])
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }
}

fn tokens(o: Outcome) -> Value {
    match o {
        Outcome::Tokens(t) => t,
        Outcome::Page(s, html) => panic!("sign-in failed with {s}: {html}"),
    }
}

fn page(o: Outcome) -> (u16, String) {
    match o {
        Outcome::Tokens(t) => panic!("tokens issued where none should be: {t}"),
        Outcome::Page(s, h) => (s, h),
    }
}

fn at_claims(t: &Value) -> Value {
    b64json(
        t["access_token"]
            .as_str()
            .unwrap()
            .split('.')
            .nth(1)
            .unwrap(),
    )
}

fn alice() -> Value {
    json!({"sub": "idp-0001", "preferred_username": "alice", "email": "alice@corp.example",
           "email_verified": true, "name": "Alice", "roles": ["staff", "compliance"]})
}

fn bob() -> Value {
    json!({"sub": "idp-0002", "preferred_username": "bob", "email": "bob@partner.example",
           "roles": ["staff"]})
}

#[tokio::test]
async fn federated_login_maps_claims_with_private_key_jwt() {
    let h = setup(&[("corp", alice())], json!([])).await;
    let html = h.login_page().await;
    // No local users: no password form, one button per connector.
    assert!(!html.contains("action=\"/login\""), "{html}");
    assert!(html.contains("Sign in with corp SSO"), "{html}");
    let t = tokens(h.federated("corp").await);
    let c = at_claims(&t);
    // Claims mapping: sub ← preferred_username, groups ← roles, so the group-gated scope is granted.
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["email"], "alice@corp.example");
    assert_eq!(c["groups"], json!(["staff", "compliance"]));
    assert_eq!(c["scope"], "mcp:tools pii:read");
    assert_eq!(c["iss"], h.base);
    // Warden authenticated to the IdP with a valid ES256 client assertion.
    assert_eq!(h.idps[0].idp.assertions_ok.load(Ordering::SeqCst), 1);
    // The federated user's profile is stored: refresh works without the IdP.
    let (s, r) = h.refresh(t["refresh_token"].as_str().unwrap()).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(at_claims(&r)["sub"], "alice");
}

#[tokio::test]
async fn bad_id_tokens_are_refused_and_nothing_is_issued() {
    let h = setup(&[("corp", alice())], json!([])).await;
    for (mode, why) in [
        (Mode::Tampered, "tampered payload"),
        (Mode::WrongAudience, "wrong audience"),
        (Mode::WrongNonce, "wrong nonce"),
        (Mode::UnknownKey, "key not in the IdP's JWKS"),
    ] {
        *h.idps[0].idp.mode.lock().await = mode;
        let (s, html) = page(h.federated("corp").await);
        assert_eq!(s, 403, "{why}: {html}");
        assert!(html.contains("ID token was not valid"), "{why}: {html}");
        assert!(html.contains("Nothing was issued"), "{why}: {html}");
    }
    *h.idps[0].idp.mode.lock().await = Mode::Good;
    assert_eq!(
        at_claims(&tokens(h.federated("corp").await))["sub"],
        "alice"
    );
}

#[tokio::test]
async fn a_replayed_or_forged_callback_is_refused() {
    let h = setup(&[("corp", alice())], json!([])).await;
    let r = (h
        .http
        .get(format!("{}/federate/callback?code=x&state=forged", h.base)))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    // A /federate POST without the login form's CSRF token is refused.
    let html = h.login_page().await;
    let mut form = form_with(&html, "value=\"corp\"");
    for (k, v) in form.iter_mut() {
        if k == "csrf_token" {
            *v = "forged".into();
        }
    }
    let r = (h.http.post(format!("{}/federate", h.base)).form(&form))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn email_domains_are_enforced() {
    let outsider = json!({"sub": "x", "preferred_username": "mallory",
                          "email": "mallory@evil.example", "roles": ["compliance"]});
    let h = setup(&[("corp", outsider)], json!([])).await;
    let (s, html) = page(h.federated("corp").await);
    assert_eq!(s, 403);
    assert!(html.contains("email domain is not allowed"), "{html}");
}

#[tokio::test]
async fn two_idps_one_stopped_mid_test() {
    let pw = authz::hash_password("judgmentday").unwrap();
    let local = json!([{"username": "sarah.connor", "password_hash": pw, "groups": ["staff"]}]);
    let mut h = setup(&[("corp", alice()), ("partner", bob())], local).await;
    let html = h.login_page().await;
    // Local users and both connectors are offered.
    assert!(html.contains("action=\"/login\""), "{html}");
    assert!(html.contains("Sign in with corp SSO") && html.contains("Sign in with partner SSO"));
    let before = tokens(h.federated("partner").await);
    assert_eq!(at_claims(&before)["sub"], "bob");
    // Stop the partner IdP; the refresher notices within a few seconds.
    drop(h.idps[1].stop.take());
    let mut down = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let html = h.login_page().await;
        if html.contains("<strong>partner SSO</strong> is unavailable right now") {
            assert!(html.contains("Sign in with corp SSO"), "{html}");
            assert!(!html.contains("Sign in with partner SSO"), "{html}");
            down = true;
            break;
        }
    }
    assert!(down, "the login page never said the partner IdP is down");
    // Users of the other IdP are unaffected.
    assert_eq!(
        at_claims(&tokens(h.federated("corp").await))["sub"],
        "alice"
    );
    // A sign-in through the stopped IdP is refused with a clear page (a stale form still posts).
    let stale = form_with(&h.login_page().await, "value=\"corp\"")
        .into_iter()
        .map(|(k, v)| {
            if k == "connector" {
                (k, "partner".to_owned())
            } else {
                (k, v)
            }
        })
        .collect::<Vec<_>>();
    let r = (h.http.post(format!("{}/federate", h.base)).form(&stale))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("partner SSO is unavailable") && html.contains("nothing was issued"),
        "{html}"
    );
    // Tokens already issued to the partner's user keep working: refresh needs no IdP.
    let (s, r) = h.refresh(before["refresh_token"].as_str().unwrap()).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(at_claims(&r)["sub"], "bob");
}

impl H {
    /// The jwt-bearer grant as the confidential client `agent` (private_key_jwt).
    async fn jwt_bearer(&self, assertion: &str) -> (u16, Value) {
        let n = now();
        let mut jti = [0u8; 12];
        aws_lc_rs::rand::fill(&mut jti).unwrap();
        let client_assertion = self
            .agent_key
            .sign(
                &json!({"iss": "agent", "sub": "agent", "aud": format!("{}/token", self.base),
                        "jti": URL_SAFE_NO_PAD.encode(jti), "iat": n, "exp": n + 60}),
                "JWT",
            )
            .unwrap();
        let r = (self.http.post(format!("{}/token", self.base)))
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion),
                ("scope", "mcp:tools pii:read"),
                ("client_id", "agent"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &client_assertion),
            ])
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }
}

/// An ID-JAG as the enterprise IdP `idp` would mint it; `edit` spoils it.
fn id_jag(idp: &Idp, warden: &str, typ: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut jti = [0u8; 12];
    aws_lc_rs::rand::fill(&mut jti).unwrap();
    let mut c = json!({
        "iss": idp.issuer, "sub": "idp-0003", "preferred_username": "dana", "roles": ["compliance"],
        "aud": warden, "resource": RES, "client_id": "agent", "scope": "mcp:tools pii:read",
        "jti": URL_SAFE_NO_PAD.encode(jti), "iat": now(), "exp": now() + 300,
    });
    edit(&mut c);
    idp.key.sign(&c, typ).unwrap()
}

#[tokio::test]
async fn enterprise_managed_authorization_with_an_id_jag() {
    let h = setup(&[("corp", alice()), ("partner", bob())], json!([])).await;
    let corp = &h.idps[0].idp;
    let good = id_jag(corp, &h.base, "oauth-id-jag+jwt", |_| {});
    let (s, t) = h.jwt_bearer(&good).await;
    assert_eq!(s, 200, "{t}");
    let c = at_claims(&t);
    // Mapped like a federated sign-in: sub ← preferred_username, groups ← roles.
    assert_eq!(c["sub"], "dana");
    assert_eq!(c["client_id"], "agent");
    assert_eq!(c["aud"], RES);
    assert_eq!(c["scope"], "mcp:tools pii:read");
    assert_eq!(c["groups"], json!(["compliance"]));
    // Replay of the same ID-JAG (jti) is refused.
    let (s, e) = h.jwt_bearer(&good).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "{e}"
    );
    let refused: Vec<(&str, String)> = vec![
        ("typ JWT", id_jag(corp, &h.base, "JWT", |_| {})),
        (
            "aud another AS",
            id_jag(corp, &h.base, "oauth-id-jag+jwt", |c| {
                c["aud"] = json!("https://other.example")
            }),
        ),
        (
            "client_id another client",
            id_jag(corp, &h.base, "oauth-id-jag+jwt", |c| {
                c["client_id"] = json!("mcp-client-cli")
            }),
        ),
        (
            "no resource",
            id_jag(corp, &h.base, "oauth-id-jag+jwt", |c| {
                c.as_object_mut().unwrap().remove("resource");
            }),
        ),
        (
            "expired",
            id_jag(corp, &h.base, "oauth-id-jag+jwt", |c| {
                c["iat"] = json!(now() - 900);
                c["exp"] = json!(now() - 600);
            }),
        ),
        (
            "issuer not trusted for ID-JAGs",
            id_jag(&h.idps[1].idp, &h.base, "oauth-id-jag+jwt", |_| {}),
        ),
    ];
    for (why, a) in refused {
        let (s, e) = h.jwt_bearer(&a).await;
        assert_eq!(s, 400, "{why}: {e}");
        assert_eq!(e["error"], "invalid_grant", "{why}: {e}");
    }
    let (s, e) = h
        .jwt_bearer(&id_jag(corp, &h.base, "oauth-id-jag+jwt", |c| {
            c["resource"] = json!("https://elsewhere.example/mcp")
        }))
        .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("invalid_target")),
        "{e}"
    );
    // A tampered ID-JAG (payload changed, signature kept) is refused.
    let p: Vec<&str> = good.split('.').collect();
    let mut forged = b64json(p[1]);
    forged["jti"] = json!("fresh");
    let forged = format!(
        "{}.{}.{}",
        p[0],
        URL_SAFE_NO_PAD.encode(forged.to_string()),
        p[2]
    );
    assert_eq!(h.jwt_bearer(&forged).await.0, 400);
}

/// Federated sign-ins and users on a real PostgreSQL: after a restart on the same database
/// the federated user's refresh token still works (profile from the `fed_user` row), and a
/// sign-in state cannot be used twice across the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_rows_persist_on_postgres() {
    let pg = tokio::task::spawn_blocking(testkit::postgres::Postgres::start)
        .await
        .unwrap();
    let loc = Location::Postgres(pg.create_database("broker"));
    let mut h = setup_on(&[("corp", alice())], json!([]), Some(loc)).await;
    let t = tokens(h.federated("corp").await);
    // A sign-in started before the restart ...
    let html = h.login_page().await;
    let form = form_with(&html, "value=\"corp\"");
    let r = (h.http.post(format!("{}/federate", h.base)).form(&form))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let to_idp = r.headers()["location"].to_str().unwrap().to_owned();
    // Stop the server, then start it again on the same port and database.
    h.srv = None;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    h.srv = Some(serve(&h.cfg, h.loc.as_ref()).await);
    // ... finishes after it: the state row (PostgreSQL) is found once.
    let back = h.http.get(&to_idp).send().await.unwrap().headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    let r = h.http.get(&back).send().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "the federated sign-in continues on the restarted server"
    );
    let r = h.http.get(&back).send().await.unwrap();
    assert_eq!(r.status(), 400, "a callback state is single use");
    // The federated user (fed_user row) still refreshes.
    let (s, r) = h.refresh(t["refresh_token"].as_str().unwrap()).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(at_claims(&r)["sub"], "alice");
    assert_eq!(at_claims(&r)["groups"], json!(["staff", "compliance"]));
}
