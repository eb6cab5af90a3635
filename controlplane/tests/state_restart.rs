//! The real `warden` binary restarted on the same state (SQLite data dir, then PostgreSQL):
//! access token, refresh token and browser session survive; the JWKS keeps the signing kid;
//! rotation continues from the stored ring; a wrong encryption key refuses to start. And two
//! authorization servers on one store behave as one (a login hops between them).
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(
    clippy::disallowed_methods,
    reason = "restarts real processes and waits for them on the real clock"
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use controlplane::Clock;
use serde_json::{Value, json};
use testkit::{TestUpstream, UpstreamOptions};

const CLIENT: &str = "cli";
const REDIRECT: &str = "http://127.0.0.1:19876/callback";
const VERIFIER: &str = "restart-test-verifier-0123456789-abcdefghijklmnop";

struct Setup {
    dir: tempfile::TempDir,
    as_port: u16,
    gw_port: u16,
    admin_port: u16,
    _upstream: TestUpstream,
    http: reqwest::Client,
}

impl Setup {
    async fn new() -> Setup {
        Setup {
            dir: tempfile::tempdir().unwrap(),
            as_port: testkit::stable_port(),
            gw_port: testkit::stable_port(),
            admin_port: testkit::stable_port(),
            _upstream: TestUpstream::start(UpstreamOptions::default()).await,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.as_port)
    }

    fn mcp(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.gw_port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The config file; `state` is the YAML of the `state` block (empty: the data-dir default).
    fn write_config(&self, state: &str) -> PathBuf {
        let hash = controlplane::authz::hash_password("s3cret-pass").unwrap();
        let (iss, mcp) = (self.issuer(), self.mcp());
        let yaml = format!(
            r#"gateway:
  listen: 127.0.0.1:{gw}
  public_url: {mcp}
  shards: 1
admin:
  listen: 127.0.0.1:{admin}
audit:
  sink: file
  dir: {audit}
policy:
  default: allow
issuers:
  - issuer: {iss}
    jwks_min_refetch_interval: 1s
upstreams:
  - name: up0
    url: {up}
authorization_server:
  listen: 127.0.0.1:{asp}
  issuer: {iss}
  resources: [{mcp}]
  users:
    - username: alice
      password_hash: '{hash}'
  scopes:
    - name: mcp:tools
  clients:
    - client_id: {CLIENT}
      public: true
      redirect_uris: [{REDIRECT}]
      grant_types: [authorization_code, refresh_token]
{state}"#,
            gw = self.gw_port,
            admin = self.admin_port,
            asp = self.as_port,
            audit = self.dir.path().join("audit").display(),
            up = self._upstream.url(),
        );
        let p = self.dir.path().join("warden.yaml");
        std::fs::write(&p, yaml).unwrap();
        p
    }

    fn spawn(&self, cfg: &Path) -> (Child, PathBuf) {
        let log = self.dir.path().join(format!(
            "warden-{}.log",
            Instant::now().elapsed().as_nanos()
        ));
        let child = Command::new(env!("CARGO_BIN_EXE_warden"))
            .arg("serve")
            .arg("-c")
            .arg(cfg)
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--shards")
            .arg("1")
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        (child, log)
    }

    /// Start warden and wait until `/readyz` is 200 (issuer keys loaded, catalog discovered).
    async fn start(&self, cfg: &Path) -> Child {
        let (mut child, log) = self.spawn(cfg);
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("http://127.0.0.1:{}/readyz", self.admin_port);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "warden exited ({st}; gateway {}, admin {}, AS {}): {}",
                    self.gw_port,
                    self.admin_port,
                    self.as_port,
                    std::fs::read_to_string(&log).unwrap()
                );
            }
            if let Ok(r) = self.http.get(&url).send().await
                && r.status() == 200
            {
                return child;
            }
            assert!(
                Instant::now() < deadline,
                "warden not ready: {}",
                std::fs::read_to_string(&log).unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Start warden expecting it to refuse; returns what it printed.
    async fn start_refused(&self, cfg: &Path) -> String {
        let (mut child, log) = self.spawn(cfg);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                assert!(!st.success());
                return std::fs::read_to_string(&log).unwrap();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("warden did not refuse to start");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn jwks_kids(&self) -> Vec<String> {
        let j: Value = self
            .http
            .get(format!("{}/jwks", self.issuer()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        j["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn token(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/token", self.issuer()))
            .form(form)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    fn authorize_url(&self) -> String {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, VERIFIER.as_bytes());
        let mut u = url::Url::parse(&format!("{}/authorize", self.issuer())).unwrap();
        u.query_pairs_mut().extend_pairs([
            ("response_type", "code"),
            ("client_id", CLIENT),
            ("redirect_uri", REDIRECT),
            ("code_challenge", &URL_SAFE_NO_PAD.encode(d.as_ref())),
            ("code_challenge_method", "S256"),
            ("state", "xyz"),
            ("scope", "mcp:tools"),
        ]);
        u.to_string()
    }

    /// Approve on a consent page and redeem the code (PKCE): the token response.
    async fn consent_and_redeem(&self, consent_html: &str, cookie: &str) -> Value {
        let mut form = hidden_inputs(consent_html);
        form.push(("decision".into(), "approve".into()));
        let r = self
            .http
            .post(format!("{}/consent", self.issuer()))
            .header("cookie", cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
        let q: HashMap<String, String> = loc
            .query_pairs()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let (st, t) = self
            .token(&[
                ("grant_type", "authorization_code"),
                ("client_id", CLIENT),
                ("code", &q["code"]),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
            ])
            .await;
        assert_eq!(st, 200, "{t}");
        t
    }

    /// The code flow with the login form: (token response, session cookie).
    async fn log_in(&self) -> (Value, String) {
        let html = self
            .http
            .get(self.authorize_url())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(html.contains("action=\"/login\""), "a login form");
        let mut form = hidden_inputs(&html);
        form.push(("username".into(), "alice".into()));
        form.push(("password".into(), "s3cret-pass".into()));
        let r = self
            .http
            .post(format!("{}/login", self.issuer()))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let cookie = r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let html = r.text().await.unwrap();
        (self.consent_and_redeem(&html, &cookie).await, cookie)
    }

    /// With the session cookie, /authorize goes straight to consent (no login form).
    async fn session_still_signed_in(&self, cookie: &str) -> Value {
        let html = self
            .http
            .get(self.authorize_url())
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            !html.contains("action=\"/login\""),
            "the session survived: no login form"
        );
        assert!(html.contains("action=\"/consent\""));
        self.consent_and_redeem(&html, cookie).await
    }

    async fn mcp_post(&self, token: &str, sid: Option<&str>, body: Value) -> reqwest::Response {
        let mut rb = self
            .http
            .post(self.mcp())
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        if let Some(s) = sid {
            rb = rb
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", "2025-06-18");
        }
        rb.body(body.to_string()).send().await.unwrap()
    }

    /// `tools/list` in the MCP session `sid`: the HTTP status.
    async fn list_status(&self, token: &str, sid: &str) -> u16 {
        let body = json!({"jsonrpc":"2.0","id":9,"method":"tools/list"});
        self.mcp_post(token, Some(sid), body)
            .await
            .status()
            .as_u16()
    }

    /// initialize: the new MCP session's id.
    async fn open_session(&self, token: &str) -> String {
        let r = self
            .mcp_post(token, None, json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}))
            .await;
        assert_eq!(r.status(), 200, "the gateway accepts the token");
        r.headers()["mcp-session-id"].to_str().unwrap().to_owned()
    }

    /// initialize + tools/list with `token`: the tool names.
    async fn tools(&self, token: &str) -> Vec<String> {
        let r = self
            .mcp_post(token, None, json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}))
            .await;
        assert_eq!(r.status(), 200, "the gateway accepts the token");
        let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        let r = self
            .mcp_post(
                token,
                Some(&sid),
                json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
            )
            .await;
        assert_eq!(r.status(), 202);
        let r = self
            .mcp_post(
                token,
                Some(&sid),
                json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}),
            )
            .await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn kid_of(jwt: &str) -> String {
    let h = jwt.split('.').next().unwrap();
    let v: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap();
    v["kid"].as_str().unwrap().to_owned()
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for piece in html.split("<input").skip(1) {
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

/// SIGKILL: nothing gets a chance to flush; what was committed must be enough. Then wait
/// until the ports are free again: with io_uring the kernel releases a dead process's
/// listening sockets asynchronously, a moment after the process is reaped.
fn kill(mut c: Child, s: &Setup) {
    c.kill().unwrap();
    c.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    for port in [s.gw_port, s.admin_port, s.as_port] {
        while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "port {port} still held after the process exited"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The whole scenario against one store; `location` opens it from the test between runs.
async fn restart_keeps_state(s: &Setup, cfg: &Path, location: controlplane::state::Location) {
    // Run 1: log in through the embedded AS.
    let w = s.start(cfg).await;
    let (t1, cookie) = s.log_in().await;
    let at = t1["access_token"].as_str().unwrap().to_owned();
    let rt1 = t1["refresh_token"].as_str().unwrap().to_owned();
    let kid0 = kid_of(&at);
    assert_eq!(s.jwks_kids().await, vec![kid0.clone()]);
    assert!(s.tools(&at).await.contains(&"up0_echo".to_string()));
    let sid = s.open_session(&at).await;
    assert_eq!(s.list_status(&at, &sid).await, 200);
    kill(w, s);

    // Run 2: same access token, refresh token, browser session and MCP session (its id is
    // sealed with the ring kept in the store); no new key at restart.
    let w = s.start(cfg).await;
    assert_eq!(s.jwks_kids().await, vec![kid0.clone()], "the same key ring");
    assert!(s.tools(&at).await.contains(&"up0_echo".to_string()));
    assert_eq!(
        s.list_status(&at, &sid).await,
        200,
        "the MCP session survived the restart"
    );
    let (st, t2) = s
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT),
            ("refresh_token", &rt1),
        ])
        .await;
    assert_eq!(st, 200, "the refresh token survived: {t2}");
    let rt2 = t2["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(kid_of(t2["access_token"].as_str().unwrap()), kid0);
    let t3 = s.session_still_signed_in(&cookie).await;
    assert!(
        s.tools(t3["access_token"].as_str().unwrap())
            .await
            .contains(&"up0_echo".to_string())
    );
    kill(w, s);

    // Between runs, the key ring rotates (as the schedule or another replica would).
    {
        let store = controlplane::state::StateStore::open(location.clone(), None, Clock::new())
            .await
            .unwrap();
        let sts =
            controlplane::sts::Sts::open(store, &s.issuer(), controlplane::sts::SigningAlg::EdDSA)
                .await
                .unwrap();
        sts.rotate().await.unwrap();
    }

    // Run 3: rotation continued from the stored ring: new current key, the old one published as previous.
    let w = s.start(cfg).await;
    let kids = s.jwks_kids().await;
    assert_eq!(kids.len(), 2);
    assert_eq!(
        kids[1], kid0,
        "the key that signed the token is still published"
    );
    let kid1 = kids[0].clone();
    assert_ne!(kid1, kid0);
    assert!(
        s.tools(&at).await.contains(&"up0_echo".to_string()),
        "a token signed by the previous key still works"
    );
    let (st, t4) = s
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT),
            ("refresh_token", &rt2),
        ])
        .await;
    assert_eq!(st, 200, "{t4}");
    assert_eq!(
        kid_of(t4["access_token"].as_str().unwrap()),
        kid1,
        "new tokens use the new key"
    );
    // Reuse detection survived the restarts too: the spent token is refused.
    let (st, e) = s
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT),
            ("refresh_token", &rt1),
        ])
        .await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_grant")));
    kill(w, s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_sqlite_data_dir() {
    let s = Setup::new().await;
    let cfg = s.write_config("");
    let db = s.data_dir().join("warden.db");
    restart_keeps_state(
        &s,
        &cfg,
        controlplane::state::Location::SqliteFile(db.clone()),
    )
    .await;
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(s.data_dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "the data dir is private");

    // With an encryption key: plaintext keys are sealed at start; the file then holds no key in
    // clear; the wrong key refuses to start with a clear message.
    let b64 = |b: [u8; 32]| base64::engine::general_purpose::STANDARD.encode(b);
    let key_file = s.dir.path().join("state.key");
    std::fs::write(&key_file, b64([9; 32])).unwrap();
    let sealed = s.write_config(&format!(
        "state:\n  encryption_key_file: {}\n",
        key_file.display()
    ));
    let w = s.start(&sealed).await;
    let kids = s.jwks_kids().await;
    assert_eq!(kids.len(), 2, "same ring after sealing");
    kill(w, &s);
    let pkcs8: Vec<Vec<u8>> = {
        let store = controlplane::state::StateStore::open(
            controlplane::state::Location::SqliteFile(db.clone()),
            Some(controlplane::state::KeyCipher::from_bytes(&[9; 32]).unwrap()),
            Clock::new(),
        )
        .await
        .unwrap();
        store
            .load_keys()
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.pkcs8)
            .collect()
    };
    let mut bytes = std::fs::read(&db).unwrap();
    bytes.extend(std::fs::read(db.with_extension("db-wal")).unwrap_or_default());
    for p in &pkcs8 {
        assert!(
            !bytes.windows(p.len()).any(|w| w == p.as_slice()),
            "no private key in clear"
        );
    }
    std::fs::write(&key_file, b64([10; 32])).unwrap();
    let out = s.start_refused(&sealed).await;
    assert!(out.contains("cannot be decrypted"), "{out}");
    std::fs::remove_file(&key_file).unwrap();
    let none = s.write_config("");
    let out = s.start_refused(&none).await;
    assert!(out.contains("encrypted"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_postgres() {
    let pg = tokio::task::spawn_blocking(testkit::postgres::Postgres::start)
        .await
        .unwrap();
    let url = pg.create_database("warden");
    let s = Setup::new().await;
    let cfg = s.write_config(&format!("state:\n  url: {url}\n"));
    restart_keeps_state(&s, &cfg, controlplane::state::Location::Postgres(url)).await;
    assert!(
        !s.data_dir().exists(),
        "with PostgreSQL nothing is written to the data dir"
    );
}

/// Two authorization servers (replicas) on one store behind a "round-robin balancer": every
/// step of a login lands on the other replica, and single use holds across them.
async fn replicas_share_logins(a_loc: controlplane::state::Location) {
    use controlplane::authz::{self, AuthServerConfig};
    use controlplane::sts::{SigningAlg, Sts};
    let (pa, pb) = (testkit::stable_port(), testkit::stable_port());
    let issuer = format!("http://127.0.0.1:{pa}");
    let hash = authz::hash_password("s3cret-pass").unwrap();
    let mut servers = Vec::new();
    for port in [pa, pb] {
        let store = controlplane::state::StateStore::open(a_loc.clone(), None, Clock::new())
            .await
            .unwrap();
        let sts = Arc::new(Sts::open(store, &issuer, SigningAlg::EdDSA).await.unwrap());
        let cfg: AuthServerConfig = serde_json::from_value(json!({
            "listen": format!("127.0.0.1:{port}"),
            "issuer": issuer,
            "resources": ["http://127.0.0.1:1/mcp"],
            "users": [{"username": "alice", "password_hash": hash}],
            "scopes": [{"name": "mcp:tools"}],
            "clients": [{"client_id": CLIENT, "public": true, "redirect_uris": [REDIRECT]}],
        }))
        .unwrap();
        servers.push((authz::start(cfg, sts.clone()).await.unwrap(), sts));
    }
    let base = |i: usize| format!("http://127.0.0.1:{}", [pa, pb][i]);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    assert_eq!(servers[0].1.jwks(), servers[1].1.jwks(), "one key ring");

    // A registers a client; B knows it.
    let reg: Value = http
        .post(format!("{}/register", base(0)))
        .json(&json!({"redirect_uris": ["http://127.0.0.1:7777/cb"], "application_type": "native"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dyn_id = reg["client_id"].as_str().unwrap();
    let r = http
        .get(format!(
            "{}/authorize?response_type=code&client_id={dyn_id}&code_challenge={}&code_challenge_method=S256",
            base(1),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the registration is visible on the other replica"
    );

    // /authorize on A, /login on B, /consent on A, /token on B.
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, VERIFIER.as_bytes());
    let mut u = url::Url::parse(&format!("{}/authorize", base(0))).unwrap();
    u.query_pairs_mut().extend_pairs([
        ("response_type", "code"),
        ("client_id", CLIENT),
        ("redirect_uri", REDIRECT),
        ("code_challenge", &URL_SAFE_NO_PAD.encode(d.as_ref())),
        ("code_challenge_method", "S256"),
    ]);
    let html = http
        .get(u.as_str())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut form = hidden_inputs(&html);
    form.push(("username".into(), "alice".into()));
    form.push(("password".into(), "s3cret-pass".into()));
    let r = http
        .post(format!("{}/login", base(1)))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the pending request started on A is known to B"
    );
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let html = r.text().await.unwrap();
    let mut form = hidden_inputs(&html);
    form.push(("decision".into(), "approve".into()));
    let r = http
        .post(format!("{}/consent", base(0)))
        .header("cookie", &cookie)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "B's session cookie works on A");
    // The consent is single use on both replicas.
    let again = http
        .post(format!("{}/consent", base(1)))
        .header("cookie", &cookie)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 400);
    let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let code = loc
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let redeem = |i: usize| {
        http.post(format!("{}/token", base(i))).form(&[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
    };
    // The same code at both replicas at once: exactly one succeeds.
    let (x, y) = tokio::join!(redeem(1).send(), redeem(0).send());
    let (x, y) = (x.unwrap(), y.unwrap());
    let mut statuses = [x.status().as_u16(), y.status().as_u16()];
    statuses.sort();
    assert_eq!(
        statuses,
        [200, 400],
        "a code is redeemed once across replicas"
    );
    let t: Value = if x.status() == 200 {
        x.json().await.unwrap()
    } else {
        y.json().await.unwrap()
    };
    let rt = t["refresh_token"].as_str().unwrap().to_owned();
    // The same refresh token at both replicas at once: at most one rotation wins, the other
    // is a reuse that revokes the family — so the winner's new token is dead too. When the
    // reuse is detected before the winner finished, the winner is refused as well (its
    // family is already revoked): [400, 400] is the fail-closed outcome of the same race.
    let refresh = |i: usize, tok: String| {
        http.post(format!("{}/token", base(i))).form(&[
            ("grant_type", "refresh_token".to_owned()),
            ("client_id", CLIENT.to_owned()),
            ("refresh_token", tok),
        ])
    };
    let (x, y) = tokio::join!(refresh(0, rt.clone()).send(), refresh(1, rt.clone()).send());
    let (x, y) = (x.unwrap(), y.unwrap());
    let mut statuses = [x.status().as_u16(), y.status().as_u16()];
    statuses.sort();
    assert!(
        statuses == [200, 400] || statuses == [400, 400],
        "a refresh token is spent at most once across replicas: {statuses:?}"
    );
    if statuses == [200, 400] {
        let won: Value = if x.status() == 200 {
            x.json().await.unwrap()
        } else {
            y.json().await.unwrap()
        };
        let next = won["refresh_token"].as_str().unwrap().to_owned();
        let r = refresh(1, next).send().await.unwrap();
        assert_eq!(
            r.status(),
            400,
            "the family was revoked by the reuse on the other replica"
        );
    }
    // Either way the spent token stays refused.
    let r = refresh(0, rt).send().await.unwrap();
    assert_eq!(r.status(), 400, "a spent refresh token is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    replicas_share_logins(controlplane::state::Location::SqliteFile(
        dir.path().join("w.db"),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_postgres() {
    let pg = tokio::task::spawn_blocking(testkit::postgres::Postgres::start)
        .await
        .unwrap();
    let url = pg.create_database("replicas");
    replicas_share_logins(controlplane::state::Location::Postgres(url)).await;
}
