//! DPoP end to end (RFC 9449, MCP SEP-1932): a client written from the RFC obtains a
//! DPoP-bound token from the embedded authorization server (authorization code + PKCE + a
//! proof at `/token`), calls the demo's tools through Warden with a fresh proof per request,
//! and refreshes with its key; plus the token endpoint's refusals and nonces.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(
    clippy::disallowed_methods,
    reason = "proofs carry the real now (the servers run on the real clock)"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use controlplane::Clock;
use controlplane::authz::{self, AuthServerConfig};
use controlplane::demo::{self, DemoOptions};
use controlplane::sts::{SigningAlg, Sts};
use serde_json::{Value, json};
use testkit::DpopKey;

mod common;

const REDIRECT: &str = "http://localhost:19876/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mJ92K9ZmT6M4vVwqWL5hjpuE6gKqdcKEy";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn claims(jwt: &str) -> Value {
    let p = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
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
            tag[start..end]
                .replace("&quot;", "\"")
                .replace("&amp;", "&")
        };
        out.push((attr("name"), attr("value")));
    }
    out
}

/// The browser's part of the code flow (login and consent forms); the code.
async fn authorization_code(http: &reqwest::Client, issuer: &str, resource: &str) -> String {
    let ch = URL_SAFE_NO_PAD.encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, VERIFIER.as_bytes()).as_ref(),
    );
    let mut u = url::Url::parse(&format!("{issuer}/authorize")).unwrap();
    u.query_pairs_mut().extend_pairs([
        ("response_type", "code"),
        ("client_id", "mcp-client-cli"),
        ("redirect_uri", REDIRECT),
        ("code_challenge", &ch),
        ("code_challenge_method", "S256"),
        ("scope", "mcp:tools"),
        ("state", "st"),
        ("resource", resource),
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
    form.push(("username".into(), "john.mcclane@orchestrator.lab".into()));
    form.push(("password".into(), "yippiekayay".into()));
    let r = http
        .post(format!("{issuer}/login"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let mut form = hidden_inputs(&r.text().await.unwrap());
    form.push(("decision".into(), "approve".into()));
    let r = http
        .post(format!("{issuer}/consent"))
        .header("cookie", cookie)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let q: HashMap<String, String> = loc.query_pairs().into_owned().collect();
    q["code"].clone()
}

/// `POST /token` with an optional proof: status, body, and the `DPoP-Nonce` header.
async fn token(
    http: &reqwest::Client,
    issuer: &str,
    proof: Option<&str>,
    form: &[(&str, &str)],
) -> (u16, Value, Option<String>) {
    let mut r = http.post(format!("{issuer}/token")).form(form);
    if let Some(p) = proof {
        r = r.header("dpop", p);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let nonce = r
        .headers()
        .get("dpop-nonce")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, r.json().await.unwrap(), nonce)
}

/// A DPoP client of the gateway: every request gets a fresh proof bound to its token.
struct Mcp<'a> {
    http: &'a reqwest::Client,
    url: String,
    key: &'a DpopKey,
    token: String,
    sid: Option<String>,
}

impl Mcp<'_> {
    async fn post(&self, scheme: &str, body: &Value) -> reqwest::Response {
        let proof = self.key.proof("POST", &self.url, now(), Some(&self.token));
        let mut r = self
            .http
            .post(&self.url)
            .header("authorization", format!("{scheme} {}", self.token))
            .header("dpop", proof)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string());
        if let Some(s) = &self.sid {
            r = r
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", "2025-11-25");
        }
        r.send().await.unwrap()
    }

    async fn connect(&mut self) {
        let r = self.post("DPoP", &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"dpop-e2e","version":"1"}}})).await;
        assert_eq!(r.status(), 200);
        self.sid = Some(r.headers()["mcp-session-id"].to_str().unwrap().to_owned());
        let r = self
            .post(
                "DPoP",
                &json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
            )
            .await;
        assert_eq!(r.status(), 202);
    }

    async fn rpc(&self, id: i64, method: &str, params: Value) -> Value {
        let r = self
            .post(
                "DPoP",
                &json!({"jsonrpc":"2.0","id":id,"method":method,"params":params}),
            )
            .await;
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        if text.starts_with('{') {
            serde_json::from_str(&text).unwrap()
        } else {
            common::last_sse_message(&text)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_pkce_dpop_token_then_tools_through_warden_then_refresh_with_the_key() {
    let d = demo::start(DemoOptions {
        gateway: any_port(),
        auth_server: any_port(),
        admin: any_port(),
        ledger: any_port(),
        shards: Some(2),
        audit_dir: common::audit_dir().into(),
        state: None,
        shadow_policy: None,
        connectors: Vec::new(),
        cimd_test_ca: None,
        clock: Clock::new(),
    })
    .await
    .expect("demo starts");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let iss = d.issuer.clone();
    let token_url = format!("{iss}/token");

    // Discovery says DPoP on both sides.
    let asm: Value = http
        .get(format!("{iss}/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        asm["dpop_signing_alg_values_supported"],
        json!(["ES256", "EdDSA"])
    );
    let prm_url = d
        .mcp_url
        .replace("/mcp", "/.well-known/oauth-protected-resource/mcp");
    let prm: Value = http
        .get(prm_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        prm["dpop_signing_alg_values_supported"],
        json!(["ES256", "EdDSA"])
    );
    assert_eq!(prm["dpop_bound_access_tokens_required"], false);

    let key = DpopKey::es256();
    let code = authorization_code(&http, &iss, &d.mcp_url).await;
    let code_form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("client_id", "mcp-client-cli"),
        ("code_verifier", VERIFIER),
    ];
    // A proof for another URI is refused before the grant: the code is not spent.
    let bad = key.proof("POST", &format!("{iss}/authorize"), now(), None);
    let (s, e, _) = token(&http, &iss, Some(&bad), &code_form).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "{e}"
    );
    let (s, t, _) = token(
        &http,
        &iss,
        Some(&key.proof("POST", &token_url, now(), None)),
        &code_form,
    )
    .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["token_type"], "DPoP");
    let at = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&at)["cnf"], json!({"jkt": key.thumbprint()}));
    let rt = t["refresh_token"].as_str().unwrap().to_owned();

    // Tools through Warden, a fresh proof per request.
    let mut mcp = Mcp {
        http: &http,
        url: d.mcp_url.clone(),
        key: &key,
        token: at.clone(),
        sid: None,
    };
    mcp.connect().await;
    let tools = mcp.rpc(1, "tools/list", json!({})).await;
    assert!(
        tools["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "enterprise_ledger_listAccounts"),
        "{tools}"
    );
    let v = mcp
        .rpc(
            2,
            "tools/call",
            json!({"name":"enterprise_ledger_listAccounts","arguments":{}}),
        )
        .await;
    assert_eq!(
        v["result"]["structuredContent"]["accounts"]
            .as_array()
            .unwrap()
            .len(),
        8,
        "{v}"
    );
    // The ledger got its delegation token, never the user's, nor the proof.
    let got = d.ledger.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].claims["sub"], "john.mcclane@orchestrator.lab");

    // The same token as a bearer token, or with another key's proof: refused, not forwarded.
    let r = mcp
        .post("Bearer", &json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"enterprise_ledger_listAccounts","arguments":{}}}))
        .await;
    assert_eq!(r.status(), 401);
    let thief = DpopKey::es256();
    let stolen = Mcp {
        http: &http,
        url: d.mcp_url.clone(),
        key: &thief,
        token: at.clone(),
        sid: mcp.sid.clone(),
    };
    let r = stolen
        .post("DPoP", &json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"enterprise_ledger_listAccounts","arguments":{}}}))
        .await;
    assert_eq!(r.status(), 401);
    let ch: Vec<&str> = r
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        ch.iter()
            .any(|c| c.starts_with("DPoP error=\"invalid_dpop_proof\"")),
        "{ch:?}"
    );
    assert_eq!(d.ledger.received().len(), 1);

    // The refresh token is bound to the key (a public client): no proof, or another key's,
    // is refused without spending it; the key's proof rotates it and binds the new token.
    let refresh_form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", rt.as_str()),
        ("client_id", "mcp-client-cli"),
    ];
    let (s, e, _) = token(&http, &iss, None, &refresh_form).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "{e}"
    );
    let (s, e, _) = token(
        &http,
        &iss,
        Some(&thief.proof("POST", &token_url, now(), None)),
        &refresh_form,
    )
    .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "{e}"
    );
    let proof = key.proof("POST", &token_url, now(), None);
    let (s, t2, _) = token(&http, &iss, Some(&proof), &refresh_form).await;
    assert_eq!(s, 200, "{t2}");
    assert_eq!(t2["token_type"], "DPoP");
    assert_eq!(
        claims(t2["access_token"].as_str().unwrap())["cnf"]["jkt"],
        key.thumbprint()
    );
    // The same proof again at /token is a replay.
    let rt2 = t2["refresh_token"].as_str().unwrap().to_owned();
    let (s, e, _) = token(
        &http,
        &iss,
        Some(&proof),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt2),
            ("client_id", "mcp-client-cli"),
        ],
    )
    .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "{e}"
    );
    assert!(
        e["error_description"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{e}"
    );
    // The audit trail (on disk, hash-chained) says which calls were sender-constrained, and
    // by which key: the allowed call and the two refusals after authentication.
    d.gateway.shutdown().await;
    let mut calls = Vec::new();
    for f in controlplane::audit::chain_files(&d.audit_dir).unwrap() {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            let r: Value = serde_json::from_str(line).unwrap();
            if r["method"] == "tools/call" {
                calls.push(r);
            }
        }
    }
    assert_eq!(calls.len(), 3, "{calls:#?}");
    assert_eq!(calls[0]["decision"], "allow");
    assert_eq!(calls[0]["sender_constrained"], true);
    assert_eq!(calls[0]["jkt"], key.thumbprint());
    for refused in &calls[1..] {
        assert_eq!(refused["decision"], "unauthenticated", "{refused}");
        assert_eq!(refused["sender_constrained"], false, "{refused}");
    }
}

/// The token endpoint with nonces required and a client that must use DPoP.
#[tokio::test]
async fn token_endpoint_nonces_and_dpop_bound_clients() {
    let port = testkit::stable_port();
    let base = format!("http://127.0.0.1:{port}");
    let sts = Arc::new(Sts::new(&base, SigningAlg::EdDSA, Clock::new()).unwrap());
    let hash = authz::hash_password("pw").unwrap();
    let cfg: AuthServerConfig = serde_json::from_value(json!({
        "listen": format!("127.0.0.1:{port}"),
        "issuer": base,
        "resources": ["http://127.0.0.1:8080/mcp"],
        "dpop_nonce": true,
        "users": [{"username": "u", "password_hash": hash}],
        "scopes": [{"name": "mcp:tools"}],
        "clients": [
            {"client_id": "must-dpop", "public": true, "grant_types": ["password"], "dpop_bound_access_tokens": true},
            {"client_id": "may-dpop", "public": true, "grant_types": ["password"]},
        ],
    }))
    .unwrap();
    let _srv = authz::start(cfg, sts).await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{base}/token");
    let form = |client: &'static str| {
        [
            ("grant_type", "password"),
            ("client_id", client),
            ("username", "u"),
            ("password", "pw"),
        ]
    };
    let key = DpopKey::ed25519();
    // dpop_bound_access_tokens: no proof, no token.
    let (s, e, _) = token(&http, &base, None, &form("must-dpop")).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "{e}"
    );
    // Nonce required: the first proof gets use_dpop_nonce and a nonce; a made-up one too.
    let (s, e, nonce) = token(
        &http,
        &base,
        Some(&key.proof("POST", &url, now(), None)),
        &form("must-dpop"),
    )
    .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("use_dpop_nonce")),
        "{e}"
    );
    let nonce = nonce.expect("a DPoP-Nonce header");
    // Browser clients may read it (CORS).
    let r = http
        .post(&url)
        .header("dpop", key.proof("POST", &url, now(), None))
        .form(&form("must-dpop"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-expose-headers"], "DPoP-Nonce");
    assert!(r.headers().contains_key("dpop-nonce"));
    let (s, e, _) = token(
        &http,
        &base,
        Some(&key.proof_with_nonce("POST", &url, now(), None, "made-up")),
        &form("must-dpop"),
    )
    .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("use_dpop_nonce")),
        "{e}"
    );
    // With the nonce: a bound token.
    let (s, t, _) = token(
        &http,
        &base,
        Some(&key.proof_with_nonce("POST", &url, now(), None, &nonce)),
        &form("must-dpop"),
    )
    .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["token_type"], "DPoP");
    assert_eq!(
        claims(t["access_token"].as_str().unwrap())["cnf"]["jkt"],
        key.thumbprint()
    );
    // A client free to choose gets a bearer token without a proof.
    let (s, t, _) = token(&http, &base, None, &form("may-dpop")).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(claims(t["access_token"].as_str().unwrap()).get("cnf"), None);
    // Broken proofs at /token: alg none, a private key, a stale iat.
    let mut h = key.header();
    h["alg"] = json!("none");
    let none = format!(
        "{}AAAA",
        testkit::dpop::unsigned(&h, &key.claims("POST", &url, now(), None, Some(&nonce)))
    );
    let mut h = key.header();
    h["jwk"]["d"] = json!("AQAB");
    let private = key.sign(&h, &key.claims("POST", &url, now(), None, Some(&nonce)));
    let stale = key.proof_with_nonce("POST", &url, now() - 600, None, &nonce);
    for (what, p) in [("none", none), ("private", private), ("stale", stale)] {
        let (s, e, _) = token(&http, &base, Some(&p), &form("may-dpop")).await;
        assert_eq!(
            (s, e["error"].as_str()),
            (400, Some("invalid_dpop_proof")),
            "{what}: {e}"
        );
    }
    // Registration takes dpop_bound_access_tokens (RFC 9449 §5.2).
    let r: Value = http
        .post(format!("{base}/register"))
        .json(&json!({"redirect_uris": ["http://127.0.0.1:5555/cb"], "dpop_bound_access_tokens": true, "application_type": "native"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["dpop_bound_access_tokens"], true, "{r}");
}

#[tokio::test]
async fn token_endpoint_dpop_algorithms_must_be_asymmetric() {
    let sts = Arc::new(Sts::new("http://127.0.0.1:1", SigningAlg::EdDSA, Clock::new()).unwrap());
    for algs in [json!(["HS256"]), json!(["none"]), json!([])] {
        let cfg: AuthServerConfig = serde_json::from_value(json!({
            "listen": "127.0.0.1:0", "issuer": "http://127.0.0.1:1", "dpop_algorithms": algs,
        }))
        .unwrap();
        let e = authz::start(cfg, sts.clone())
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(e, authz::AuthServerError::Config(_)), "{e:?}");
        assert!(e.to_string().contains("authz.dpop_algorithms"), "{e}");
    }
}
