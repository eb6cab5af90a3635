//! Token hygiene of the embedded authorization server, on SQLite and on a real PostgreSQL:
//! a replayed code revokes what it issued, refresh reuse revokes the family (with the grace
//! honoured), RFC 7009 revocation and RFC 7662 introspection, sign-in throttling (429 with
//! Retry-After, other users unaffected, audited), cross-site form POSTs refused, RFC 9207
//! `iss`, consent recorded per user and client — and all of it still true after a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(
    clippy::disallowed_methods,
    reason = "mints assertions for the real now (the server runs on the real clock)"
)]

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use controlplane::Clock;
use controlplane::authz::{self, AuthServer, AuthServerConfig};
use controlplane::state::{Location, StateStore};
use controlplane::sts::{SigningAlg, SigningKey, Sts};
use serde_json::{Value, json};

const RES: &str = "http://127.0.0.1:8080/mcp";
const CLI_REDIRECT: &str = "http://localhost:19876/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mJ92K9ZmT6M4vVwqWL5hjpuE6gKqdcKEy";
const XCHG: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const TT_AT: &str = "urn:ietf:params:oauth:token-type:access_token";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn challenge(v: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, v.as_bytes());
    URL_SAFE_NO_PAD.encode(d.as_ref())
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let form = html.split("<form").nth(1).unwrap();
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

struct H {
    srv: AuthServer,
    base: String,
    http: reqwest::Client,
    rs_key: Arc<SigningKey>,
}

/// The server on `loc` (the same port and keys across restarts of one test).
async fn start(loc: &Location, port: u16, rs_key: Arc<SigningKey>, grace: &str) -> H {
    let base = format!("http://127.0.0.1:{port}");
    let store = StateStore::open(loc.clone(), None, Clock::new())
        .await
        .unwrap();
    let sts = Arc::new(Sts::open(store, &base, SigningAlg::EdDSA).await.unwrap());
    let pw = authz::hash_password("judgmentday").unwrap();
    let pw2 = authz::hash_password("yippiekayay").unwrap();
    let cfg = json!({
        "listen": format!("127.0.0.1:{port}"),
        "issuer": base,
        "resources": [RES],
        "refresh_reuse_grace": grace,
        "login_throttle": {"free_failures": 1, "max_failures": 3, "base_delay": "10ms",
                           "max_delay": "40ms", "lockout": "60s"},
        "users": [
            {"username": "sarah.connor", "password_hash": pw, "groups": ["compliance"]},
            {"username": "john.mcclane", "password_hash": pw2, "groups": ["staff"]},
        ],
        "scopes": [{"name": "mcp:tools"}],
        "clients": [
            {"client_id": "mcp-client-cli", "public": true, "redirect_uris": [CLI_REDIRECT]},
            {"client_id": "rs", "jwks": {"keys": [rs_key.public_jwk.clone()]},
             "grant_types": [XCHG], "allowed_audiences": ["https://ledger.example/"],
             "scopes": ["ledger:ListAccounts"]},
        ],
    });
    let cfg: AuthServerConfig = serde_json::from_value(cfg).unwrap();
    let srv = authz::start(cfg, sts).await.unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    H {
        srv,
        base,
        http,
        rs_key,
    }
}

impl H {
    fn authorize_url(&self) -> String {
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
        u.to_string()
    }

    async fn login_form(&self) -> Vec<(String, String)> {
        let r = self.http.get(self.authorize_url()).send().await.unwrap();
        assert_eq!(r.status(), 200);
        hidden_inputs(&r.text().await.unwrap())
    }

    async fn post_login(
        &self,
        form: &[(String, String)],
        user: &str,
        pass: &str,
    ) -> reqwest::Response {
        let mut f = form.to_vec();
        f.push(("username".into(), user.into()));
        f.push(("password".into(), pass.into()));
        self.http
            .post(format!("{}/login", self.base))
            .form(&f)
            .send()
            .await
            .unwrap()
    }

    /// Sign in and approve; the code redirect's query.
    async fn code(&self, user: &str, pass: &str) -> HashMap<String, String> {
        let form = self.login_form().await;
        let r = self.post_login(&form, user, pass).await;
        assert_eq!(r.status(), 200);
        let cookie = r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let html = r.text().await.unwrap();
        let mut f = hidden_inputs(&html);
        f.push(("decision".into(), "approve".into()));
        let r = (self.http.post(format!("{}/consent", self.base)))
            .header("cookie", cookie)
            .form(&f)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
        loc.query_pairs().into_owned().collect()
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let r = (self.http.post(format!("{}{path}", self.base)).form(form))
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    async fn redeem(&self, code: &str) -> (u16, Value) {
        self.post(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", CLI_REDIRECT),
                ("client_id", "mcp-client-cli"),
                ("code_verifier", VERIFIER),
            ],
        )
        .await
    }

    async fn refresh(&self, rt: &str) -> (u16, Value) {
        self.post(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt),
                ("client_id", "mcp-client-cli"),
            ],
        )
        .await
    }

    fn assertion(&self) -> String {
        let n = now();
        let jti = format!(
            "a-{}",
            authz::hash_password("x").unwrap().len() as u64 + n as u64 + rand_u64()
        );
        self.rs_key
            .sign(
                &json!({"iss": "rs", "sub": "rs", "aud": format!("{}/token", self.base),
                        "jti": jti, "iat": n, "exp": n + 60}),
                "JWT",
            )
            .unwrap()
    }

    /// RFC 7662 as the confidential client `rs` (private_key_jwt).
    async fn introspect(&self, token: &str) -> Value {
        let a = self.assertion();
        let (s, v) = self
            .post(
                "/introspect",
                &[
                    ("token", token),
                    ("client_id", "rs"),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &a),
                ],
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// RFC 8693 as `rs`: whether the access token still exchanges for a delegation token.
    async fn exchanges(&self, token: &str) -> bool {
        let a = self.assertion();
        let (s, _) = self
            .post(
                "/token",
                &[
                    ("grant_type", XCHG),
                    ("subject_token", token),
                    ("subject_token_type", TT_AT),
                    ("audience", "https://ledger.example/"),
                    ("client_id", "rs"),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &a),
                ],
            )
            .await;
        s == 200
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    u64::from_le_bytes(b)
}

async fn metadata_issuer(h: &H) -> String {
    let m: Value = (h
        .http
        .get(format!("{}/.well-known/oauth-authorization-server", h.base)))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(m["authorization_response_iss_parameter_supported"], true);
    assert_eq!(m["revocation_endpoint"], format!("{}/revoke", h.base));
    assert_eq!(
        m["introspection_endpoint"],
        format!("{}/introspect", h.base)
    );
    m["issuer"].as_str().unwrap().to_owned()
}

/// Everything, on one store location; then a restart on the same store.
async fn hygiene(loc: Location) {
    let port = testkit::stable_port();
    let key = Arc::new(SigningKey::generate(SigningAlg::EdDSA).unwrap());
    let h = start(&loc, port, key.clone(), "2s").await;

    // RFC 9207: iss on success and on error redirects equals the metadata issuer.
    let iss = metadata_issuer(&h).await;
    let q = h.code("sarah.connor", "judgmentday").await;
    assert_eq!(q["iss"], iss);
    let r = (h.http.get(
        h.authorize_url()
            .replace("response_type=code", "response_type=token"),
    ))
    .send()
    .await
    .unwrap();
    let loc_err = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let qe: HashMap<String, String> = loc_err.query_pairs().into_owned().collect();
    assert_eq!(qe["error"], "unsupported_response_type");
    assert_eq!(qe["iss"], iss);

    // Consent recorded per user and client.
    let (scopes, at) = h
        .srv
        .consent_of("sarah.connor", "mcp-client-cli")
        .await
        .unwrap();
    assert_eq!(scopes, vec!["mcp:tools".to_owned()]);
    assert!((at - now()).abs() < 30);
    assert!(
        h.srv
            .consent_of("john.mcclane", "mcp-client-cli")
            .await
            .is_none()
    );

    // Code replay: the second redemption fails and revokes what the first issued.
    let (s, t) = h.redeem(&q["code"]).await;
    assert_eq!(s, 200, "{t}");
    let at1 = t["access_token"].as_str().unwrap().to_owned();
    let rt1 = t["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(h.introspect(&at1).await["active"], true);
    assert!(h.exchanges(&at1).await);
    let (s, e) = h.redeem(&q["code"]).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")));
    assert!(
        e["error_description"].as_str().unwrap().contains("revoked"),
        "{e}"
    );
    assert_eq!(h.introspect(&at1).await, json!({"active": false}));
    assert!(
        !h.exchanges(&at1).await,
        "a revoked token exchanges for nothing"
    );
    assert_eq!(h.introspect(&rt1).await, json!({"active": false}));
    let (s, e) = h.refresh(&rt1).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")));

    // Rotation with grace: a retry of the just-rotated token within 2 s refreshes again.
    let q = h.code("sarah.connor", "judgmentday").await;
    let (_, t) = h.redeem(&q["code"]).await;
    let rt_a = t["refresh_token"].as_str().unwrap().to_owned();
    let (s, t_b) = h.refresh(&rt_a).await;
    assert_eq!(s, 200, "{t_b}");
    let (s, t_retry) = h.refresh(&rt_a).await;
    assert_eq!(s, 200, "within the grace a replay is a retry: {t_retry}");
    let rt_b = t_b["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(
        h.introspect(&rt_b).await["active"],
        true,
        "the family lives on"
    );
    // After the grace, the same replay revokes the whole family (rt_b included).
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let (s, e) = h.refresh(&rt_a).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "{e}"
    );
    assert!(
        e["error_description"]
            .as_str()
            .unwrap()
            .contains("family is revoked"),
        "{e}"
    );
    let (s, _) = h.refresh(&rt_b).await;
    assert_eq!(s, 400, "the live token of a revoked family is dead");

    // RFC 7009: revoking an access token (as its own client) makes introspection say inactive.
    let q = h.code("john.mcclane", "yippiekayay").await;
    let (_, t) = h.redeem(&q["code"]).await;
    let at_j = t["access_token"].as_str().unwrap().to_owned();
    let rt_j = t["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(h.introspect(&at_j).await["sub"], "john.mcclane");
    let (s, _) = h
        .post(
            "/revoke",
            &[("token", &at_j), ("client_id", "mcp-client-cli")],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(h.introspect(&at_j).await["active"], false);
    let (s, _) = h
        .post(
            "/revoke",
            &[("token", &rt_j), ("client_id", "mcp-client-cli")],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(h.refresh(&rt_j).await.0, 400);
    // Unknown tokens: 200 (RFC 7009 §2.2). Public clients cannot introspect.
    assert_eq!(
        h.post(
            "/revoke",
            &[("token", "nope"), ("client_id", "mcp-client-cli")]
        )
        .await
        .0,
        200
    );
    assert_eq!(
        h.post(
            "/introspect",
            &[("token", &at_j), ("client_id", "mcp-client-cli")]
        )
        .await
        .0,
        401
    );

    // Restart on the same store: consents, revocations and revoked families are still there.
    drop(h);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let h = start(&loc, port, key, "2s").await;
    assert!(
        h.srv
            .consent_of("sarah.connor", "mcp-client-cli")
            .await
            .is_some()
    );
    assert_eq!(h.introspect(&at1).await["active"], false);
    assert_eq!(h.introspect(&at_j).await["active"], false);
    assert_eq!(h.refresh(&rt_b).await.0, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hygiene_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    hygiene(Location::SqliteFile(dir.path().join("warden.db"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hygiene_on_postgres() {
    let pg = tokio::task::spawn_blocking(testkit::postgres::Postgres::start)
        .await
        .unwrap();
    hygiene(Location::Postgres(pg.create_database("hygiene"))).await;
}

/// A writer into a channel, for the audit-event check.
#[derive(Clone)]
struct ToChannel(std::sync::mpsc::Sender<Vec<u8>>);

impl std::io::Write for ToChannel {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.send(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn throttling_429_retry_after_audited_and_cross_site_refused() {
    let (tx, rx) = std::sync::mpsc::channel();
    let sub = tracing_subscriber::fmt()
        .with_writer(move || ToChannel(tx.clone()))
        .with_ansi(false)
        .finish();
    // The process-wide subscriber (no other test in this binary sets one): a thread-local one
    // can miss events whose callsites other tests register concurrently.
    tracing::subscriber::set_global_default(sub).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(SigningKey::generate(SigningAlg::EdDSA).unwrap());
    let h = start(
        &Location::SqliteFile(dir.path().join("t.db")),
        testkit::stable_port(),
        key,
        "0s",
    )
    .await;

    // Cross-site POSTs are refused before anything else (CSRF defence beside the token).
    let form = h.login_form().await;
    let mut f = form.clone();
    f.push(("username".into(), "sarah.connor".into()));
    f.push(("password".into(), "judgmentday".into()));
    for (k, v) in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let r = (h
            .http
            .post(format!("{}/login", h.base))
            .header(k, v)
            .form(&f))
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), 403, "{k}: {v}");
        assert!(
            r.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
    }
    let r = (h
        .http
        .post(format!("{}/login", h.base))
        .header("origin", h.base.clone())
        .form(&f))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "a same-origin POST signs in");

    // Wrong passwords for an unknown user: 401, 401 (delayed), 401 (delayed), then 429.
    let form = h.login_form().await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..4 {
        let r = h.post_login(&form, "nobody", "wrong").await;
        statuses.push(r.status().as_u16());
        retry_after = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
    }
    assert_eq!(statuses, vec![401, 401, 401, 429]);
    let secs: u64 = retry_after.unwrap().parse().unwrap();
    assert!((1..=60).contains(&secs));
    let logs = String::from_utf8_lossy(&rx.try_iter().flatten().collect::<Vec<u8>>()).into_owned();
    assert!(
        logs.contains("event=\"authz.login_throttled\"")
            || logs.contains("event=authz.login_throttled"),
        "{logs}"
    );
    assert!(
        logs.contains("event=\"authz.login_failed\"") || logs.contains("event=authz.login_failed"),
        "{logs}"
    );
    assert!(
        logs.contains("user=\"nobody\""),
        "the user name is an escaped field: {logs}"
    );
    assert!(!logs.contains("wrong"), "no password in the log");
}

/// Per user and per address: a user's failures lock that user out from any address and
/// that address out for any user, while another user from another address signs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_per_user_and_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(SigningKey::generate(SigningAlg::EdDSA).unwrap());
    let mut h = start(
        &Location::SqliteFile(dir.path().join("u.db")),
        testkit::stable_port(),
        key,
        "0s",
    )
    .await;
    let form = h.login_form().await;
    for _ in 0..3 {
        assert_eq!(
            h.post_login(&form, "sarah.connor", "wrong").await.status(),
            401
        );
    }
    let form = h.login_form().await;
    assert_eq!(
        h.post_login(&form, "sarah.connor", "judgmentday")
            .await
            .status(),
        429
    );
    let form = h.login_form().await;
    assert_eq!(
        h.post_login(&form, "john.mcclane", "yippiekayay")
            .await
            .status(),
        429,
        "same address"
    );
    // From another loopback address: john signs in, sarah is still refused.
    h.http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let form = h.login_form().await;
    assert_eq!(
        h.post_login(&form, "john.mcclane", "yippiekayay")
            .await
            .status(),
        200,
        "other user, other address"
    );
    let form = h.login_form().await;
    assert_eq!(
        h.post_login(&form, "sarah.connor", "judgmentday")
            .await
            .status(),
        429,
        "same user, other address"
    );
}
