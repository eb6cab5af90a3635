//! End-to-end tests of the Enterprise Ledger against a real JWKS server and real signed tokens.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
#![allow(
    clippy::disallowed_methods,
    reason = "mints tokens for the real now, as a remote client would"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use demo::ledger::{Ledger, LedgerOptions};
use serde_json::{Value, json};

const ISSUER: &str = "https://sts.warden.test";
const AUDIENCE: &str = "https://enterprise-ledger.orchestrator.lab/";
const GATEWAY: &str = "ai-identity-gateway";
const USER: &str = "john.mcclane@orchestrator.lab";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

struct SigningKey {
    kid: String,
    pair: Ed25519KeyPair,
}

impl SigningKey {
    fn generate(kid: &str) -> SigningKey {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        SigningKey {
            kid: kid.to_owned(),
            pair,
        }
    }

    fn jwk(&self) -> Value {
        json!({
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
            "kid": self.kid, "x": b64(self.pair.public_key().as_ref()),
        })
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(&serde_json::to_vec(header).unwrap()),
            b64(&serde_json::to_vec(claims).unwrap())
        );
        let sig = self.pair.sign(input.as_bytes());
        format!("{input}.{}", b64(sig.as_ref()))
    }

    fn token(&self, claims: &Value) -> String {
        self.sign(
            &json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": self.kid }),
            claims,
        )
    }
}

/// A JWKS endpoint whose key set can be swapped and whose hits are counted.
struct Jwks {
    addr: SocketAddr,
    keys: Arc<ArcSwap<Value>>,
    hits: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

type JwksState = (Arc<ArcSwap<Value>>, Arc<AtomicUsize>);

async fn serve_jwks(State((keys, hits)): State<JwksState>) -> axum::Json<Value> {
    hits.fetch_add(1, Ordering::SeqCst);
    axum::Json(keys.load().as_ref().clone())
}

impl Jwks {
    async fn start(jwks: Value) -> Jwks {
        let keys = Arc::new(ArcSwap::from_pointee(jwks));
        let hits = Arc::new(AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new()
            .route("/jwks", get(serve_jwks))
            .with_state((Arc::clone(&keys), Arc::clone(&hits)));
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Jwks {
            addr,
            keys,
            hits,
            _task: task,
        }
    }
}

struct Harness {
    key: SigningKey,
    jwks: Jwks,
    ledger: Ledger,
    http: reqwest::Client,
}

impl Harness {
    async fn start() -> Harness {
        let key = SigningKey::generate("ed-1");
        let jwks = Jwks::start(json!({ "keys": [key.jwk()] })).await;
        let ledger = Ledger::start(LedgerOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            jwks_uri: format!("http://{}/jwks", jwks.addr),
            issuer: ISSUER.to_owned(),
            audience: AUDIENCE.to_owned(),
            gateway_client_id: GATEWAY.to_owned(),
        })
        .unwrap();
        Harness {
            key,
            jwks,
            ledger,
            http: reqwest::Client::new(),
        }
    }

    /// Delegation-token claims for `scope`: user `sub`, gateway `act`, 5 s TTL.
    fn delegation(&self, scope: &str) -> Value {
        let iat = now();
        json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": USER, "scope": scope,
            "iat": iat, "exp": iat + 5, "jti": format!("jti-{scope}-{iat}"),
            "client_id": GATEWAY,
            "act": { "sub": GATEWAY, "act": { "sub": "mcp-client-cli" } },
        })
    }

    /// A client_credentials token of the gateway itself (discovery).
    fn gateway_token(&self) -> String {
        let iat = now();
        self.key.token(&json!({
            "iss": ISSUER, "aud": [AUDIENCE, "https://other.example/"], "sub": GATEWAY,
            "iat": iat, "exp": iat + 60, "jti": "cc-1",
        }))
    }

    async fn post(
        &self,
        token: Option<&str>,
        session: Option<&str>,
        body: Value,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self
            .http
            .post(self.ledger.url())
            .header("accept", "application/json, text/event-stream")
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(s) = session {
            req = req.header("mcp-session-id", s);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        (status, headers, body)
    }

    /// `initialize` + `notifications/initialized` with the gateway's own token; returns the session id.
    async fn session(&self) -> String {
        let token = self.gateway_token();
        let (status, headers, body) = self
            .post(
                Some(&token),
                None,
                json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": { "name": "warden", "version": "0" } } }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["result"]["protocolVersion"], "2025-11-25");
        let session = headers["mcp-session-id"].to_str().unwrap().to_owned();
        let (status, _, _) = self
            .post(
                Some(&token),
                Some(&session),
                json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
            )
            .await;
        assert_eq!(status, 202);
        session
    }

    async fn call(
        &self,
        token: &str,
        session: &str,
        tool: &str,
        args: Value,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        self.post(
            Some(token),
            Some(session),
            json!({ "jsonrpc": "2.0", "id": 7, "method": "tools/call",
                    "params": { "name": tool, "arguments": args } }),
        )
        .await
    }
}

fn assert_invalid_token(status: u16, headers: &reqwest::header::HeaderMap, body: &Value) {
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_token", "{body}");
    assert!(body["error_description"].is_string(), "{body}");
    assert_eq!(
        headers["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    assert_eq!(headers["content-type"], "application/json");
}

#[tokio::test]
async fn valid_delegation_token_lists_eight_accounts() {
    let h = Harness::start().await;
    let session = h.session().await;

    let (status, _, body) = h
        .post(
            Some(&h.gateway_token()),
            Some(&session),
            json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list" }),
        )
        .await;
    assert_eq!(status, 200);
    let tools = body["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "listAccounts",
            "getAccount",
            "getTransactions",
            "updateAccountStatus",
            "getCustomerPII",
            "getAuditLog"
        ]
    );
    let get_txns = &tools[2]["inputSchema"];
    assert_eq!(get_txns["required"], json!(["accountId"]));
    assert!(get_txns["properties"]["limit"]["description"].is_string());

    let (status, _, body) = h
        .post(
            Some(&h.gateway_token()),
            Some(&session),
            json!({ "jsonrpc": "2.0", "id": 3, "method": "ping" }),
        )
        .await;
    assert_eq!((status, &body["result"]), (200, &json!({})));

    let token = h.key.token(&h.delegation("ledger:ListAccounts"));
    let (status, headers, body) = h.call(&token, &session, "listAccounts", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    let result = &body["result"];
    assert_eq!(result["structuredContent"]["count"], 8);
    assert_eq!(
        result["structuredContent"]["accounts"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
    let text: Value = serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(text, result["structuredContent"]);

    let (_, _, body) = h
        .call(
            &token,
            &session,
            "listAccounts",
            json!({ "status": "frozen" }),
        )
        .await;
    let frozen = &body["result"]["structuredContent"]["accounts"];
    assert_eq!(frozen.as_array().unwrap().len(), 1);
    assert_eq!(frozen[0]["accountId"], "ACC-1006");
}

#[tokio::test]
async fn wrong_scope_is_403_insufficient_scope() {
    let h = Harness::start().await;
    let session = h.session().await;
    let token = h.key.token(&h.delegation("ledger:GetAccount"));
    let (status, headers, body) = h.call(&token, &session, "listAccounts", json!({})).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "insufficient_scope");
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("scope=\"ledger:ListAccounts\"")
    );
    assert!(h.ledger.received().is_empty());
}

#[tokio::test]
async fn wrong_audience_is_401() {
    let h = Harness::start().await;
    let session = h.session().await;
    let mut claims = h.delegation("ledger:ListAccounts");
    claims["aud"] = json!("https://employee-directory.orchestrator.lab/");
    let token = h.key.token(&claims);
    let (status, headers, body) = h.call(&token, &session, "listAccounts", json!({})).await;
    assert_invalid_token(status, &headers, &body);
}

#[tokio::test]
async fn missing_act_is_401_for_calls_but_fine_for_discovery() {
    let h = Harness::start().await;
    let session = h.session().await;
    let mut claims = h.delegation("ledger:ListAccounts");
    claims.as_object_mut().unwrap().remove("act");
    let token = h.key.token(&claims);
    let (status, headers, body) = h.call(&token, &session, "listAccounts", json!({})).await;
    assert_invalid_token(status, &headers, &body);
    assert!(body["error_description"].as_str().unwrap().contains("act"));

    let (status, _, _) = h
        .post(
            Some(&token),
            Some(&session),
            json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list" }),
        )
        .await;
    assert_eq!(status, 200);

    // An act chain whose current actor is not the gateway is refused too.
    let mut claims = h.delegation("ledger:ListAccounts");
    claims["act"] = json!({ "sub": "rogue-agent" });
    let (status, headers, body) = h
        .call(&h.key.token(&claims), &session, "listAccounts", json!({}))
        .await;
    assert_invalid_token(status, &headers, &body);
}

#[tokio::test]
async fn expired_token_is_401() {
    let h = Harness::start().await;
    let session = h.session().await;
    let mut claims = h.delegation("ledger:ListAccounts");
    claims["iat"] = json!(now() - 15);
    claims["exp"] = json!(now() - 10);
    let token = h.key.token(&claims);
    let (status, headers, body) = h.call(&token, &session, "listAccounts", json!({})).await;
    assert_invalid_token(status, &headers, &body);
    let why = body["error_description"].as_str().unwrap();
    assert!(why.contains("xpired"), "{why}");

    // Within the 5 s leeway: still accepted.
    claims["exp"] = json!(now() - 2);
    let token = h.key.token(&claims);
    let (status, _, body) = h.call(&token, &session, "listAccounts", json!({})).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn typ_jwt_and_bad_signatures_are_401() {
    let h = Harness::start().await;
    let session = h.session().await;
    let claims = h.delegation("ledger:ListAccounts");

    let jwt = h.key.sign(
        &json!({ "alg": "EdDSA", "typ": "JWT", "kid": "ed-1" }),
        &claims,
    );
    let (status, headers, body) = h.call(&jwt, &session, "listAccounts", json!({})).await;
    assert_invalid_token(status, &headers, &body);

    // Signed by a key the JWKS does not hold, under the published kid.
    let stranger = SigningKey::generate("ed-1");
    let forged = stranger.token(&claims);
    let (status, headers, body) = h.call(&forged, &session, "listAccounts", json!({})).await;
    assert_invalid_token(status, &headers, &body);

    let (status, headers, body) = h
        .post(
            None,
            Some(&session),
            json!({ "jsonrpc": "2.0", "id": 1, "method": "ping" }),
        )
        .await;
    assert_invalid_token(status, &headers, &body);

    let (status, headers, body) = h
        .post(
            Some("not.a.jwt"),
            Some(&session),
            json!({ "jsonrpc": "2.0", "id": 1, "method": "ping" }),
        )
        .await;
    assert_invalid_token(status, &headers, &body);
}

#[tokio::test]
async fn get_transactions_shows_the_flagged_withdrawal() {
    let h = Harness::start().await;
    let session = h.session().await;
    let token = h.key.token(&h.delegation("ledger:ListTransactions"));
    let (status, _, body) = h
        .call(
            &token,
            &session,
            "getTransactions",
            json!({ "accountId": "ACC-1003" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let out = &body["result"]["structuredContent"];
    let txns = out["transactions"].as_array().unwrap();
    assert_eq!(txns.len(), 4);
    assert!(txns.iter().all(|t| t["accountId"] == "ACC-1003"));
    let stamps: Vec<&str> = txns
        .iter()
        .map(|t| t["timestamp"].as_str().unwrap())
        .collect();
    let mut sorted = stamps.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(stamps, sorted, "newest first");
    let flagged: Vec<&Value> = txns.iter().filter(|t| t["flagged"] == true).collect();
    assert_eq!(flagged.len(), 1);
    assert_eq!(flagged[0]["amount"], -48_500.0);
    assert_eq!(flagged[0]["type"], "withdrawal");
    assert!(flagged[0]["flagReason"].is_string());
    assert_eq!(out["flaggedCount"], 1);

    let (_, _, body) = h
        .call(
            &token,
            &session,
            "getTransactions",
            json!({ "accountId": "ACC-1003", "limit": 2 }),
        )
        .await;
    assert_eq!(body["result"]["structuredContent"]["count"], 2);
}

#[tokio::test]
async fn received_records_claims_and_hash_never_the_token() {
    let h = Harness::start().await;
    let session = h.session().await;
    let claims = h.delegation("ledger:GetAccount ledger:ReadPII");
    let token = h.key.token(&claims);
    h.call(
        &token,
        &session,
        "getAccount",
        json!({ "accountId": "ACC-1001" }),
    )
    .await;
    h.call(
        &token,
        &session,
        "getCustomerPII",
        json!({ "customerId": "CUST-002" }),
    )
    .await;

    let received = h.ledger.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].tool, "getAccount");
    assert_eq!(received[1].tool, "getCustomerPII");
    assert_eq!(received[0].claims, claims);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(received[0].token_sha256, hex);
    assert!(received[0].at <= SystemTime::now());
    let debug = format!("{received:?}");
    assert!(!debug.contains(&token));
    let signature = token.rsplit('.').next().unwrap();
    assert!(!debug.contains(signature));
}

#[tokio::test]
async fn tools_return_errors_and_keep_state() {
    let h = Harness::start().await;
    let session = h.session().await;
    let token = h.key.token(
        &h.delegation("ledger:GetAccount ledger:UpdateAccount ledger:ReadAudit ledger:ReadPII"),
    );

    let (_, _, body) = h
        .call(
            &token,
            &session,
            "getAccount",
            json!({ "accountId": "ACC-9999" }),
        )
        .await;
    assert_eq!(body["result"]["isError"], true);
    assert_eq!(body["result"]["content"][0]["text"], "Account not found");

    let (_, _, body) = h.call(&token, &session, "getAccount", json!({})).await;
    assert_eq!(body["result"]["isError"], true);

    let (_, _, body) = h
        .call(
            &token,
            &session,
            "getCustomerPII",
            json!({ "customerId": "CUST-003" }),
        )
        .await;
    let pii = &body["result"]["structuredContent"];
    assert_eq!(pii["fullName"], "Priya Raman");
    assert!(
        pii["ssn"].is_string()
            && pii["dateOfBirth"].is_string()
            && pii["address"]["city"].is_string()
    );

    let (_, _, body) = h
        .call(
            &token,
            &session,
            "updateAccountStatus",
            json!({ "accountId": "ACC-1003", "status": "frozen", "reason": "flagged wire under review" }),
        )
        .await;
    let out = &body["result"]["structuredContent"];
    assert_eq!(out["account"]["status"], "frozen", "{body}");
    assert_eq!(out["previousStatus"], "active");

    let (_, _, body) = h
        .call(
            &token,
            &session,
            "getAccount",
            json!({ "accountId": "ACC-1003" }),
        )
        .await;
    assert_eq!(body["result"]["structuredContent"]["status"], "frozen");

    let (_, _, body) = h
        .call(
            &token,
            &session,
            "getAuditLog",
            json!({ "accountId": "ACC-1003" }),
        )
        .await;
    let entries = &body["result"]["structuredContent"]["entries"];
    assert_eq!(entries[0]["action"], "account.status_changed");
    assert_eq!(entries[0]["actor"], USER);
    assert_eq!(
        entries[0]["actingParty"],
        json!([GATEWAY, "mcp-client-cli"])
    );
    assert_eq!(entries.as_array().unwrap().len(), 3);

    let (_, _, body) = h.call(&token, &session, "getAuditLog", json!({})).await;
    assert_eq!(body["result"]["structuredContent"]["count"], 6);

    let (_, _, body) = h.call(&token, &session, "noSuchTool", json!({})).await;
    assert_eq!(body["error"]["code"], -32602);
}

#[tokio::test]
async fn sessions_get_and_delete() {
    let h = Harness::start().await;
    let token = h.gateway_token();
    let ping = json!({ "jsonrpc": "2.0", "id": 1, "method": "ping" });
    let (status, _, _) = h.post(Some(&token), None, ping.clone()).await;
    assert_eq!(status, 400);
    let (status, _, _) = h.post(Some(&token), Some("nope"), ping.clone()).await;
    assert_eq!(status, 404);

    let session = h.session().await;
    let resp = h
        .http
        .get(h.ledger.url())
        .bearer_auth(&token)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);

    let resp = h
        .http
        .delete(h.ledger.url())
        .bearer_auth(&token)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (status, _, _) = h.post(Some(&token), Some(&session), ping).await;
    assert_eq!(status, 404);

    let addr = h.ledger.addr();
    drop(h.ledger);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "stopped on drop"
    );
}

#[tokio::test]
async fn unknown_kid_refetches_the_jwks_at_most_every_five_seconds() {
    let h = Harness::start().await;
    let session = h.session().await;
    assert_eq!(h.jwks.hits.load(Ordering::SeqCst), 1);

    let rotated = SigningKey::generate("ed-2");
    h.jwks
        .keys
        .store(Arc::new(json!({ "keys": [h.key.jwk(), rotated.jwk()] })));
    let token = rotated.token(&h.delegation("ledger:ListAccounts"));
    // Within 5 s of the first fetch: no refetch, the new kid is unknown.
    for _ in 0..3 {
        let (status, _, _) = h.call(&token, &session, "listAccounts", json!({})).await;
        assert_eq!(status, 401);
    }
    assert_eq!(h.jwks.hits.load(Ordering::SeqCst), 1);

    tokio::time::sleep(demo::ledger::JWKS_REFETCH_INTERVAL + Duration::from_millis(200)).await;
    let token = rotated.token(&h.delegation("ledger:ListAccounts"));
    let (status, _, body) = h.call(&token, &session, "listAccounts", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.jwks.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn start_outside_a_runtime_is_an_error() {
    let err = std::thread::spawn(|| {
        Ledger::start(LedgerOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            jwks_uri: "http://127.0.0.1:9/jwks".into(),
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            gateway_client_id: GATEWAY.into(),
        })
        .err()
    })
    .join()
    .unwrap();
    assert!(err.unwrap().contains("tokio runtime"));
}
