//! The embedded authorization server over real HTTP: code + PKCE through the HTML forms, refresh
//! rotation, registration, password and client_credentials grants, RFC 8693 exchange with three
//! client authentication methods, and the RFC 6749 §5.2 errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(
    clippy::disallowed_methods,
    reason = "mints and checks tokens for the real now (the server runs on the real clock)"
)]

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use controlplane::authz::{self, AuthServer, AuthServerConfig};
use controlplane::sts::{SigningAlg, SigningKey, Sts};
use serde_json::{Value, json};

const GW_SECRET_ENV: &str = "WARDEN_AUTHZ_TEST_GATEWAY_SECRET";
const GW_SECRET: &str = "gateway-secret-0123456789abcdef";
const RES: &str = "http://127.0.0.1:8080/mcp";
const LEDGER: &str = "https://ledger.example/";
const CLI_REDIRECT: &str = "http://localhost:19876/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mJ92K9ZmT6M4vVwqWL5hjpuE6gKqdcKEy";
const TT_AT: &str = "urn:ietf:params:oauth:token-type:access_token";
const XCHG: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// Client secrets come from environment variables, and `env::set_var` needs `unsafe`
/// (forbidden here): each test re-runs itself in a child process that has them.
fn run_in_child(test: &str) -> bool {
    if std::env::var(GW_SECRET_ENV).is_ok() {
        return false;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(GW_SECRET_ENV, GW_SECRET)
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child test {test} failed:\n{text}");
    assert!(text.contains("1 passed"), "child ran no test:\n{text}");
    true
}

struct H {
    srv: AuthServer,
    sts: Arc<Sts>,
    base: String,
    http: reqwest::Client,
    client_key: SigningKey,
}

fn free_port() -> u16 {
    // The issuer (and so the STS) must know the port before the server binds.
    testkit::stable_port()
}

async fn setup() -> H {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let sts = Arc::new(Sts::new(&base, SigningAlg::EdDSA, controlplane::Clock::new()).unwrap());
    let client_key = SigningKey::generate(SigningAlg::EdDSA).unwrap();
    let john = authz::hash_password("yippiekayay").unwrap();
    let sarah = authz::hash_password("judgmentday").unwrap();
    let cfg = json!({
        "listen": format!("127.0.0.1:{port}"),
        "issuer": base,
        "resources": [RES, "http://127.0.0.1:8081/mcp"],
        "users": [
            {"username": "john.mcclane", "password_hash": john, "email": "john@example.com", "groups": ["staff"]},
            {"username": "sarah.connor", "password_hash": sarah, "groups": ["staff", "compliance"]},
        ],
        "scopes": [
            {"name": "mcp:tools"},
            {"name": "pii:read", "groups": ["compliance"]},
            {"name": "audit:read", "groups": ["auditors"]},
        ],
        "clients": [
            {"client_id": "mcp-client-cli", "public": true, "redirect_uris": [CLI_REDIRECT]},
            {"client_id": "loadtest", "public": true, "grant_types": ["password"]},
            {"client_id": "ai-identity-gateway", "secret_env": GW_SECRET_ENV,
             "grant_types": ["client_credentials", XCHG],
             "allowed_audiences": [LEDGER], "scopes": ["ledger:ListAccounts", "ledger:ReadPII"]},
            {"client_id": "gateway-jwt", "jwks": {"keys": [client_key.public_jwk.clone()]},
             "grant_types": [XCHG], "allowed_audiences": [LEDGER], "scopes": ["ledger:ListAccounts"],
             "exchange_token_ttl": "5s"},
        ],
    });
    let cfg: AuthServerConfig = serde_json::from_value(cfg).unwrap();
    let srv = authz::start(cfg, sts.clone()).await.unwrap();
    assert_eq!(srv.addr().port(), port);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    H {
        srv,
        sts,
        base,
        http,
        client_key,
    }
}

fn challenge(verifier: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    URL_SAFE_NO_PAD.encode(d.as_ref())
}

fn claims(jwt: &str) -> Value {
    let p = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// `name` → `value` of every hidden input in the first form of `html`.
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

fn query_of(location: &str) -> HashMap<String, String> {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

impl H {
    fn authorize_url(&self, extra: &[(&str, &str)]) -> String {
        let mut u = url::Url::parse(&format!("{}/authorize", self.base)).unwrap();
        u.query_pairs_mut().extend_pairs(extra);
        u.to_string()
    }

    /// GET /authorize → login form → POST /login → consent form → POST /consent; returns the 302 query.
    async fn browser_flow(
        &self,
        params: &[(&str, &str)],
        user: &str,
        pass: &str,
        decision: &str,
    ) -> (HashMap<String, String>, String) {
        let r = self
            .http
            .get(self.authorize_url(params))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let html = r.text().await.unwrap();
        assert!(html.contains("<form method=\"post\" action=\"/login\">"));
        assert!(html.contains("name=\"username\"") && html.contains("name=\"password\""));
        let mut form = hidden_inputs(&html);
        form.push(("username".into(), user.into()));
        form.push(("password".into(), pass.into()));
        let r = self
            .http
            .post(format!("{}/login", self.base))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let cookie = r
            .headers()
            .get("set-cookie")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
        assert!(cookie.contains("Path=/") && !cookie.contains("Secure"));
        let cookie = cookie.split(';').next().unwrap().to_owned();
        let html = r.text().await.unwrap();
        assert!(html.contains("action=\"/consent\""));
        let mut form = hidden_inputs(&html);
        form.push(("decision".into(), decision.into()));
        let r = self
            .http
            .post(format!("{}/consent", self.base))
            .header("cookie", &cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        let loc = r.headers()["location"].to_str().unwrap().to_owned();
        assert!(loc.starts_with(CLI_REDIRECT));
        (query_of(&loc), html)
    }

    async fn token(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/token", self.base))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert_eq!(r.headers()["cache-control"], "no-store");
        (status, r.json().await.unwrap())
    }

    async fn token_basic(&self, id: &str, secret: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/token", self.base))
            .basic_auth(id, Some(secret))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert_eq!(r.headers()["cache-control"], "no-store");
        (status, r.json().await.unwrap())
    }

    /// A full code flow for the CLI client; returns the token response.
    async fn code_tokens(&self, user: &str, pass: &str, scope: &str) -> Value {
        let ch = challenge(VERIFIER);
        let (q, _) = self
            .browser_flow(
                &[
                    ("response_type", "code"),
                    ("client_id", "mcp-client-cli"),
                    ("redirect_uri", CLI_REDIRECT),
                    ("code_challenge", &ch),
                    ("code_challenge_method", "S256"),
                    ("scope", scope),
                    ("state", "st"),
                    ("resource", RES),
                ],
                user,
                pass,
                "approve",
            )
            .await;
        let (s, body) = self
            .token(&[
                ("grant_type", "authorization_code"),
                ("code", &q["code"]),
                ("redirect_uri", CLI_REDIRECT),
                ("client_id", "mcp-client-cli"),
                ("code_verifier", VERIFIER),
            ])
            .await;
        assert_eq!(s, 200, "{body}");
        body
    }

    fn assertion(&self, aud: &str, jti: &str, exp_in: i64) -> String {
        let now = now();
        self.client_key
            .sign(
                &json!({"iss": "gateway-jwt", "sub": "gateway-jwt", "aud": aud,
                        "jti": jti, "iat": now, "exp": now + exp_in}),
                "JWT",
            )
            .unwrap()
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn metadata_and_jwks() {
    if run_in_child("metadata_and_jwks") {
        return;
    }
    let h = setup().await;
    for p in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let m: Value = h
            .http
            .get(format!("{}{p}", h.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(m["issuer"], h.base.as_str());
        assert_eq!(m["authorization_endpoint"], format!("{}/authorize", h.base));
        assert_eq!(m["token_endpoint"], format!("{}/token", h.base));
        assert_eq!(m["registration_endpoint"], format!("{}/register", h.base));
        assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(m["response_types_supported"], json!(["code"]));
        assert_eq!(
            m["scopes_supported"],
            json!(["mcp:tools", "pii:read", "audit:read"])
        );
        assert!(
            m["token_endpoint_auth_methods_supported"]
                .as_array()
                .unwrap()
                .contains(&json!("private_key_jwt"))
        );
    }
    let j: Value = h
        .http
        .get(format!("{}/jwks", h.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(j, h.sts.jwks());
    // CORS for browser clients on the token endpoint, none on the cookie pages.
    let r = h
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/token", h.base))
        .header("origin", "http://localhost:6274")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let r = h
        .http
        .get(format!("{}/authorize", h.base))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn code_flow_pkce_and_scopes() {
    if run_in_child("code_flow_pkce_and_scopes") {
        return;
    }
    let h = setup().await;
    // sarah (compliance) gets pii:read; audit:read is not hers; unknown scopes are dropped.
    let t = h
        .code_tokens(
            "sarah.connor",
            "judgmentday",
            "mcp:tools pii:read audit:read x:y",
        )
        .await;
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["scope"], "mcp:tools pii:read");
    assert_eq!(t["expires_in"], 3600);
    assert!(t["refresh_token"].is_string());
    let at = t["access_token"].as_str().unwrap();
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(at.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["typ"], "at+jwt");
    let c = claims(at);
    assert_eq!(c["iss"], h.base.as_str());
    assert_eq!(c["sub"], "sarah.connor");
    assert_eq!(c["aud"], RES);
    assert_eq!(c["client_id"], "mcp-client-cli");
    assert_eq!(c["scope"], "mcp:tools pii:read");
    assert_eq!(c["groups"], json!(["staff", "compliance"]));
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        3600
    );
    assert!(c["jti"].is_string());
    // john (no compliance group) asks for pii:read and does not get it; the consent page says so.
    let ch = challenge(VERIFIER);
    let (q, consent_html) = h
        .browser_flow(
            &[
                ("response_type", "code"),
                ("client_id", "mcp-client-cli"),
                ("redirect_uri", CLI_REDIRECT),
                ("code_challenge", &ch),
                ("code_challenge_method", "S256"),
                ("scope", "mcp:tools pii:read"),
                ("state", "abc"),
                ("resource", "http://127.0.0.1:8081/mcp"),
            ],
            "john.mcclane",
            "yippiekayay",
            "approve",
        )
        .await;
    assert!(consent_html.contains("mcp:tools") && !consent_html.contains("pii:read"));
    assert_eq!(q["state"], "abc");
    assert_eq!(q["iss"], h.base.as_str());
    let code = q["code"].clone();
    // Wrong verifier → invalid_grant, and the code is spent.
    let wrong = "x".repeat(50);
    let (s, e) = h
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CLI_REDIRECT),
            ("client_id", "mcp-client-cli"),
            ("code_verifier", &wrong),
        ])
        .await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")));
    let (q, _) = h
        .browser_flow(
            &[
                ("response_type", "code"),
                ("client_id", "mcp-client-cli"),
                ("redirect_uri", CLI_REDIRECT),
                ("code_challenge", &ch),
                ("code_challenge_method", "S256"),
                ("scope", "mcp:tools pii:read"),
                ("resource", "http://127.0.0.1:8081/mcp"),
            ],
            "john.mcclane",
            "yippiekayay",
            "approve",
        )
        .await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", q["code"].as_str()),
        ("redirect_uri", CLI_REDIRECT),
        ("client_id", "mcp-client-cli"),
        ("code_verifier", VERIFIER),
    ];
    let (s, t) = h.token(&form).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["scope"], "mcp:tools");
    let c = claims(t["access_token"].as_str().unwrap());
    assert_eq!(c["aud"], "http://127.0.0.1:8081/mcp");
    assert_eq!(c["email"], "john@example.com");
    // Reusing the code fails.
    let (s, e) = h.token(&form).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")));
    // Missing verifier → invalid_request.
    let (s, e) = h
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", "whatever"),
            ("client_id", "mcp-client-cli"),
        ])
        .await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_request")));
}

#[tokio::test]
async fn authorize_errors_and_deny() {
    if run_in_child("authorize_errors_and_deny") {
        return;
    }
    let h = setup().await;
    let ch = challenge(VERIFIER);
    let get = |params: Vec<(&'static str, String)>| {
        let u = {
            let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            h.authorize_url(&p)
        };
        let http = h.http.clone();
        async move { http.get(u).send().await.unwrap() }
    };
    let base = |extra: &[(&'static str, &str)]| {
        let mut v: Vec<(&'static str, String)> = vec![
            ("response_type", "code".into()),
            ("client_id", "mcp-client-cli".into()),
            ("redirect_uri", CLI_REDIRECT.into()),
            ("state", "s1".into()),
        ];
        for (k, x) in extra {
            v.retain(|(kk, _)| kk != k);
            if !x.is_empty() {
                v.push((k, (*x).to_owned()));
            }
        }
        v
    };
    // Unknown client, unregistered redirect: an HTML page, never a redirect.
    let r = get(base(&[("client_id", "nope"), ("code_challenge", &ch)])).await;
    assert_eq!(r.status(), 400);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let r = get(base(&[
        ("redirect_uri", "http://evil.example/cb"),
        ("code_challenge", &ch),
    ]))
    .await;
    assert_eq!(r.status(), 400);
    // PKCE missing / plain → invalid_request by redirect, state kept.
    for extra in [
        vec![],
        vec![
            ("code_challenge", ch.as_str()),
            ("code_challenge_method", "plain"),
        ],
        vec![("code_challenge", ch.as_str())],
    ] {
        let r = get(base(&extra)).await;
        assert_eq!(r.status(), 302);
        let q = query_of(r.headers()["location"].to_str().unwrap());
        assert_eq!(q["error"], "invalid_request");
        assert_eq!(q["state"], "s1");
    }
    let r = get(base(&[
        ("code_challenge", &ch),
        ("code_challenge_method", "S256"),
        ("response_type", "token"),
    ]))
    .await;
    assert_eq!(
        query_of(r.headers()["location"].to_str().unwrap())["error"],
        "unsupported_response_type"
    );
    let r = get(base(&[
        ("code_challenge", &ch),
        ("code_challenge_method", "S256"),
        ("resource", "https://elsewhere.example/"),
    ]))
    .await;
    assert_eq!(
        query_of(r.headers()["location"].to_str().unwrap())["error"],
        "invalid_target"
    );
    // Deny → access_denied.
    let (q, _) = h
        .browser_flow(
            &[
                ("response_type", "code"),
                ("client_id", "mcp-client-cli"),
                ("redirect_uri", CLI_REDIRECT),
                ("code_challenge", &ch),
                ("code_challenge_method", "S256"),
                ("state", "s2"),
            ],
            "john.mcclane",
            "yippiekayay",
            "deny",
        )
        .await;
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], "s2");
    // Wrong password → 401 with the form again.
    let r = get(base(&[
        ("code_challenge", &ch),
        ("code_challenge_method", "S256"),
    ]))
    .await;
    let mut form = hidden_inputs(&r.text().await.unwrap());
    form.push(("username".into(), "john.mcclane".into()));
    form.push(("password".into(), "wrong".into()));
    let r = h
        .http
        .post(format!("{}/login", h.base))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    // Consent without the session cookie is refused.
    let form: Vec<(String, String)> = hidden_inputs(&r.text().await.unwrap())
        .into_iter()
        .chain([("decision".to_string(), "approve".to_string())])
        .collect();
    let r = h
        .http
        .post(format!("{}/consent", h.base))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 302);
}

#[tokio::test]
async fn refresh_rotation_and_family_revocation() {
    if run_in_child("refresh_rotation_and_family_revocation") {
        return;
    }
    let h = setup().await;
    let t = h
        .code_tokens("sarah.connor", "judgmentday", "mcp:tools pii:read")
        .await;
    let rt1 = t["refresh_token"].as_str().unwrap().to_owned();
    let refresh = |rt: String, scope: Option<&'static str>| {
        let h = &h;
        async move {
            let mut f = vec![
                ("grant_type", "refresh_token".to_owned()),
                ("refresh_token", rt),
                ("client_id", "mcp-client-cli".to_owned()),
            ];
            if let Some(s) = scope {
                f.push(("scope", s.to_owned()));
            }
            let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
            h.token(&f).await
        }
    };
    // Widening is refused without spending the token; narrowing works and rotates.
    let (s, e) = refresh(rt1.clone(), Some("pii:read audit:read")).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_scope")));
    let (s, t2) = refresh(rt1.clone(), Some("pii:read")).await;
    assert_eq!(s, 200, "{t2}");
    assert_eq!(t2["scope"], "pii:read");
    assert_eq!(claims(t2["access_token"].as_str().unwrap())["aud"], RES);
    let rt2 = t2["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rt1, rt2);
    // The narrowed grant cannot widen back.
    let (s, e) = refresh(rt2.clone(), Some("pii:read mcp:tools")).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_scope")));
    let (s, t3) = refresh(rt2.clone(), None).await;
    assert_eq!(s, 200, "{t3}");
    assert_eq!(t3["scope"], "pii:read");
    let rt3 = t3["refresh_token"].as_str().unwrap().to_owned();
    // The old token is rejected after use, and that replay revokes the family: rt3 dies too.
    let (s, e) = refresh(rt1, None).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")));
    let (s, e) = refresh(rt3, None).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")));
    // Same on a second chain, replaying the token just before the live one.
    let t = h
        .code_tokens("john.mcclane", "yippiekayay", "mcp:tools")
        .await;
    let a = t["refresh_token"].as_str().unwrap().to_owned();
    let (s, tb) = refresh(a.clone(), None).await;
    assert_eq!(s, 200);
    let b = tb["refresh_token"].as_str().unwrap().to_owned();
    // Replaying `a` fails and revokes the family: `b` is dead too.
    let (s, e) = refresh(a, None).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")));
    let (s, e) = refresh(b, None).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")));
}

#[tokio::test]
async fn dynamic_registration() {
    if run_in_child("dynamic_registration") {
        return;
    }
    let h = setup().await;
    let reg = |mut body: Value| {
        // Every registration says what it is (MCP 2025-11-25); tests of that: authz_hygiene.rs.
        if body.is_object() && body.get("application_type").is_none() {
            body["application_type"] = json!("native");
        }
        let http = h.http.clone();
        let url = format!("{}/register", h.base);
        async move {
            let r = http.post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, c) = reg(json!({
        "redirect_uris": ["http://localhost:3334/oauth/callback"],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "client_name": "MCP CLI Proxy",
    }))
    .await;
    assert_eq!(s, 201, "{c}");
    let id = c["client_id"].as_str().unwrap().to_owned();
    assert!(c["client_id_issued_at"].is_i64());
    assert_eq!(
        c["redirect_uris"],
        json!(["http://localhost:3334/oauth/callback"])
    );
    assert_eq!(c["token_endpoint_auth_method"], "none");
    // The registered client can start a flow with its exact redirect URI only.
    let ch = challenge(VERIFIER);
    let mk = |redirect: &str| {
        h.authorize_url(&[
            ("response_type", "code"),
            ("client_id", &id),
            ("redirect_uri", redirect),
            ("code_challenge", &ch),
            ("code_challenge_method", "S256"),
        ])
    };
    let r = h
        .http
        .get(mk("http://localhost:3334/oauth/callback"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("unverified"));
    let r = h
        .http
        .get(mk("http://localhost:3335/oauth/callback"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    for (body, err) in [
        (
            json!({"redirect_uris": ["https://evil.example/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": ["http://localhost.evil.example/cb"]}),
            "invalid_redirect_uri",
        ),
        (json!({"redirect_uris": []}), "invalid_redirect_uri"),
        (
            json!({"redirect_uris": ["http://127.0.0.1:9/cb"], "token_endpoint_auth_method": "client_secret_basic"}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": ["http://[::1]:9/cb"], "grant_types": ["client_credentials"]}),
            "invalid_client_metadata",
        ),
    ] {
        let (s, e) = reg(body).await;
        assert_eq!((s, e["error"].as_str()), (400, Some(err)));
    }
}

#[tokio::test]
async fn password_and_client_credentials() {
    if run_in_child("password_and_client_credentials") {
        return;
    }
    let h = setup().await;
    let (s, t) = h
        .token(&[
            ("grant_type", "password"),
            ("client_id", "loadtest"),
            ("username", "sarah.connor"),
            ("password", "judgmentday"),
            ("scope", "mcp:tools pii:read"),
        ])
        .await;
    assert_eq!(s, 200, "{t}");
    let c = claims(t["access_token"].as_str().unwrap());
    assert_eq!(
        (c["sub"].as_str(), c["aud"].as_str()),
        (Some("sarah.connor"), Some(RES))
    );
    assert_eq!(c["client_id"], "loadtest");
    assert_eq!(c["scope"], "mcp:tools pii:read");
    let (s, e) = h
        .token(&[
            ("grant_type", "password"),
            ("client_id", "loadtest"),
            ("username", "sarah.connor"),
            ("password", "wrong"),
        ])
        .await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")));
    let (s, e) = h
        .token(&[
            ("grant_type", "password"),
            ("client_id", "mcp-client-cli"),
            ("username", "sarah.connor"),
            ("password", "judgmentday"),
        ])
        .await;
    assert_eq!((s, e["error"].as_str()), (400, Some("unauthorized_client")));
    // client_credentials: confidential client, audience from the allowed list.
    let (s, t) = h
        .token_basic(
            "ai-identity-gateway",
            GW_SECRET,
            &[
                ("grant_type", "client_credentials"),
                ("resource", LEDGER),
                ("scope", "ledger:ListAccounts"),
            ],
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let c = claims(t["access_token"].as_str().unwrap());
    assert_eq!(c["sub"], "ai-identity-gateway");
    assert_eq!(c["aud"], LEDGER);
    assert_eq!(c["scope"], "ledger:ListAccounts");
    let (s, e) = h
        .token_basic(
            "ai-identity-gateway",
            GW_SECRET,
            &[("grant_type", "client_credentials"), ("audience", RES)],
        )
        .await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_target")));
    let (s, e) = h
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", "mcp-client-cli"),
        ])
        .await;
    assert_eq!((s, e["error"].as_str()), (400, Some("unauthorized_client")));
    let (s, e) = h
        .token(&[("grant_type", "implicit"), ("client_id", "loadtest")])
        .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
}

#[tokio::test]
async fn token_exchange() {
    if run_in_child("token_exchange") {
        return;
    }
    let h = setup().await;
    let prior = json!({"sub": "agent-7"});
    // A user token with an `act` of its own (minted then re-signed with an act claim).
    let user = h
        .srv
        .mint_user_token("john.mcclane", "mcp:tools", "")
        .unwrap();
    let mut uc = claims(&user);
    assert_eq!(uc["aud"], RES);
    uc["act"] = prior.clone();
    let subject = h.sts.sign(&uc).unwrap();
    let base = |extra: &[(&'static str, &'static str)]| {
        let mut f: Vec<(&'static str, String)> = vec![
            ("grant_type", XCHG.into()),
            ("subject_token", subject.clone()),
            ("subject_token_type", TT_AT.into()),
            ("audience", LEDGER.into()),
            ("scope", "ledger:ListAccounts".into()),
        ];
        for (k, v) in extra {
            f.retain(|(kk, _)| kk != k);
            f.push((k, (*v).to_owned()));
        }
        f
    };
    let check = |s: u16, t: &Value| {
        assert_eq!(s, 200, "{t}");
        assert_eq!(t["issued_token_type"], TT_AT);
        assert_eq!(t["token_type"], "Bearer");
        assert_eq!(t["expires_in"], 5);
        assert_eq!(t["scope"], "ledger:ListAccounts");
        claims(t["access_token"].as_str().unwrap())
    };
    // client_secret_basic
    let f = base(&[]);
    let (s, t) = h
        .token_basic("ai-identity-gateway", GW_SECRET, &pairs(&f))
        .await;
    let c = check(s, &t);
    assert_eq!(c["sub"], "john.mcclane");
    assert_eq!(c["aud"], LEDGER);
    assert_eq!(c["scope"], "ledger:ListAccounts");
    assert_eq!(
        c["act"],
        json!({"sub": "ai-identity-gateway", "act": prior})
    );
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 5);
    assert_eq!(c["email"], "john@example.com");
    // client_secret_post
    let mut f = base(&[]);
    f.push(("client_id", "ai-identity-gateway".into()));
    f.push(("client_secret", GW_SECRET.into()));
    let (s, t) = h.token(&pairs(&f)).await;
    let c = check(s, &t);
    assert_eq!(c["act"]["sub"], "ai-identity-gateway");
    // private_key_jwt, audience = token endpoint; the same assertion twice is a replay.
    let assertion = h.assertion(&format!("{}/token", h.base), "j-1", 60);
    let mut f = base(&[(
        "client_assertion_type",
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    )]);
    f.push(("client_assertion", assertion.clone()));
    let (s, t) = h.token(&pairs(&f)).await;
    let c = check(s, &t);
    assert_eq!(c["act"]["sub"], "gateway-jwt");
    assert_eq!(c["client_id"], "gateway-jwt");
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 5);
    let (s, e) = h.token(&pairs(&f)).await;
    assert_eq!((s, e["error"].as_str()), (401, Some("invalid_client")));
    // aud = issuer also accepted; an expired assertion and one for another audience are not.
    for (aud, jti, exp_in, ok) in [
        (h.base.clone(), "j-2", 60, true),
        (format!("{}/token", h.base), "j-3", -120, false),
        ("https://other.example/token".to_owned(), "j-4", 60, false),
    ] {
        let mut f = base(&[(
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        )]);
        f.push(("client_assertion", h.assertion(&aud, jti, exp_in)));
        let (s, e) = h.token(&pairs(&f)).await;
        assert_eq!(s == 200, ok, "{aud} {jti}: {e}");
    }
    // A key the client did not register.
    let other = SigningKey::generate(SigningAlg::EdDSA).unwrap();
    let forged = other
        .sign(
            &json!({"iss": "gateway-jwt", "sub": "gateway-jwt", "aud": h.base, "jti": "j-5", "exp": now() + 60}),
            "JWT",
        )
        .unwrap();
    let mut f = base(&[(
        "client_assertion_type",
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    )]);
    f.push(("client_assertion", forged));
    let (s, e) = h.token(&pairs(&f)).await;
    assert_eq!((s, e["error"].as_str()), (401, Some("invalid_client")));

    // Refusals.
    let r = h
        .http
        .post(format!("{}/token", h.base))
        .basic_auth("ai-identity-gateway", Some("wrong-secret"))
        .form(&pairs(&base(&[])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
    for (extra, status, err) in [
        (
            vec![("audience", "https://hr.example/")],
            400,
            "invalid_target",
        ),
        (
            vec![("scope", "ledger:ListAccounts ledger:Delete")],
            400,
            "invalid_scope",
        ),
        (vec![("subject_token", "not-a-jwt")], 400, "invalid_grant"),
        (
            vec![(
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:id_token",
            )],
            400,
            "invalid_request",
        ),
        (
            vec![(
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:refresh_token",
            )],
            400,
            "invalid_request",
        ),
    ] {
        let (s, e) = h
            .token_basic("ai-identity-gateway", GW_SECRET, &pairs(&base(&extra)))
            .await;
        assert_eq!(
            (s, e["error"].as_str()),
            (status, Some(err)),
            "{extra:?}: {e}"
        );
    }
    // Expired subject token (signed by this server, exp in the past).
    let mut old = claims(&user);
    old["iat"] = json!(now() - 7200);
    old["nbf"] = json!(now() - 7200);
    old["exp"] = json!(now() - 3600);
    let expired = h.sts.sign(&old).unwrap();
    let mut f = base(&[]);
    f.retain(|(k, _)| *k != "subject_token");
    f.push(("subject_token", expired));
    let (s, e) = h
        .token_basic("ai-identity-gateway", GW_SECRET, &pairs(&f))
        .await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")));
    // A token for another audience (e.g. a delegation token) is not a valid subject.
    let (_, t) = h
        .token_basic("ai-identity-gateway", GW_SECRET, &pairs(&base(&[])))
        .await;
    let mut f = base(&[]);
    f.retain(|(k, _)| *k != "subject_token");
    f.push((
        "subject_token",
        t["access_token"].as_str().unwrap().to_owned(),
    ));
    let (s, e) = h
        .token_basic("ai-identity-gateway", GW_SECRET, &pairs(&f))
        .await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")));
    // A public client cannot exchange.
    let mut f = base(&[]);
    f.push(("client_id", "mcp-client-cli".into()));
    let (s, e) = h.token(&pairs(&f)).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("unauthorized_client")));
}

fn pairs<'a>(f: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    f.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn config_validation() {
    if run_in_child("config_validation") {
        return;
    }
    let sts = Arc::new(
        Sts::new(
            "http://127.0.0.1:1",
            SigningAlg::EdDSA,
            controlplane::Clock::new(),
        )
        .unwrap(),
    );
    let try_start = |v: Value| {
        let sts = sts.clone();
        async move {
            let cfg: AuthServerConfig = serde_json::from_value(v).unwrap();
            let e = authz::start(cfg, sts).await.map(|_| ()).unwrap_err();
            // Every one of these is the operator's configuration, and says which key.
            assert!(matches!(e, authz::AuthServerError::Config(_)), "{e:?}");
            e.to_string()
        }
    };
    let e = try_start(json!({"listen": "127.0.0.1:0", "issuer": "http://127.0.0.1:2"})).await;
    assert!(e.contains("must equal the STS issuer"), "{e}");
    let e = try_start(
        json!({"listen": "127.0.0.1:0", "issuer": "http://127.0.0.1:1",
        "clients": [{"client_id": "a", "public": true, "redirect_uris": ["http://localhost/cb"]},
                    {"client_id": "a", "public": true, "redirect_uris": ["http://localhost/cb"]}]}),
    )
    .await;
    assert!(e.contains("appears twice"), "{e}");
    let e = try_start(json!({"listen": "127.0.0.1:0", "issuer": "http://127.0.0.1:1",
        "clients": [{"client_id": "a", "public": true, "secret_env": GW_SECRET_ENV, "redirect_uris": ["http://localhost/cb"]}]}))
    .await;
    assert!(e.contains("must not have secret_env"), "{e}");
    let e = try_start(
        json!({"listen": "127.0.0.1:0", "issuer": "http://127.0.0.1:1",
        "clients": [{"client_id": "a", "grant_types": ["client_credentials"]}]}),
    )
    .await;
    assert!(e.contains("needs secret_env"), "{e}");
    let e = try_start(
        json!({"listen": "127.0.0.1:0", "issuer": "http://127.0.0.1:1",
        "clients": [{"client_id": "a", "public": true, "redirect_uris": ["/relative"]}]}),
    )
    .await;
    assert!(e.contains("not absolute"), "{e}");
    // Defaults and strictness of the YAML form.
    let cfg: AuthServerConfig = serde_yaml_ng::from_str("issuer: http://127.0.0.1:9000\n").unwrap();
    assert_eq!(cfg.listen.to_string(), "127.0.0.1:9000");
    assert_eq!(cfg.access_token_ttl.as_secs(), 3600);
    assert_eq!(cfg.code_ttl.as_secs(), 60);
    assert!(cfg.dynamic_registration);
    assert!(serde_yaml_ng::from_str::<AuthServerConfig>("issuer: x\nbogus: 1\n").is_err());
}
