//! Test harness for the Employee Directory: an Ed25519 signing key, a JWKS server and a running directory.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use axum::Router;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use demo::directory::{DEFAULT_AUDIENCE, Directory, DirectoryOptions};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

pub const ISSUER: &str = "https://sts.warden.test";
pub const AUDIENCE: &str = DEFAULT_AUDIENCE;
pub const GATEWAY: &str = "ai-identity-gateway";
pub const USER: &str = "john.mcclane@orchestrator.lab";

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

pub struct SigningKey {
    pub kid: String,
    pub pair: Ed25519KeyPair,
}

impl SigningKey {
    pub fn generate(kid: &str) -> SigningKey {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        SigningKey {
            kid: kid.to_owned(),
            pair,
        }
    }

    pub fn jwk(&self) -> Value {
        json!({
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
            "kid": self.kid, "x": b64(self.pair.public_key().as_ref()),
        })
    }

    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(&serde_json::to_vec(header).unwrap()),
            b64(&serde_json::to_vec(claims).unwrap())
        );
        let sig = self.pair.sign(input.as_bytes());
        format!("{input}.{}", b64(sig.as_ref()))
    }

    pub fn token(&self, claims: &Value) -> String {
        self.sign(
            &json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": self.kid }),
            claims,
        )
    }
}

pub struct Harness {
    pub key: SigningKey,
    pub directory: Directory,
    pub http: reqwest::Client,
    _jwks: tokio::task::JoinHandle<()>,
}

pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Harness {
    pub async fn start() -> Harness {
        let key = SigningKey::generate("ed-1");
        let jwks = json!({ "keys": [key.jwk()] });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let jwks_addr: SocketAddr = listener.local_addr().unwrap();
        let router = Router::new().route("/jwks", get(move || async move { axum::Json(jwks) }));
        let jwks_task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        let directory = Directory::start(DirectoryOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            jwks_uri: format!("http://{jwks_addr}/jwks"),
            issuer: ISSUER.to_owned(),
            audience: AUDIENCE.to_owned(),
            gateway_client_id: GATEWAY.to_owned(),
        })
        .unwrap();
        Harness {
            key,
            directory,
            http: reqwest::Client::new(),
            _jwks: jwks_task,
        }
    }

    /// Delegation-token claims for `scope`: user `sub`, gateway `act`, 5 s TTL.
    pub fn delegation(&self, scope: &str) -> Value {
        let iat = now();
        json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": USER, "scope": scope,
            "iat": iat, "exp": iat + 5, "jti": format!("jti-{scope}-{iat}"),
            "client_id": GATEWAY,
            "act": { "sub": GATEWAY, "act": { "sub": "mcp-client-cli" } },
        })
    }

    pub fn token(&self, scope: &str) -> String {
        self.key.token(&self.delegation(scope))
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let url = format!("{}/api/v1{path}", self.directory.url());
        let mut req = self.http.request(method, url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A call with a fresh delegation token for `scope`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        scope: &str,
        body: Option<Value>,
    ) -> Reply {
        let token = self.token(scope);
        self.send(method, path, Some(&token), body).await
    }
}

pub fn ids(v: &Value) -> Vec<&str> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect()
}

pub fn assert_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.body["error"], code, "{}", r.body);
    assert!(r.body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(r.body["message"], r.body["error_description"]);
    assert_eq!(r.headers["content-type"], "application/json");
}

pub fn assert_invalid_token(r: &Reply) {
    assert_error(r, 401, "invalid_token");
    assert_eq!(
        r.headers["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
}
