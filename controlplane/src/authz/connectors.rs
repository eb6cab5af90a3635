//! Upstream OpenID Connect IdPs at run time: discovery, JWKS with refetch and last-known-good,
//! the status the login page shows, client authentication to the IdP and ID-token validation.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dataplane::auth::jwks::{self, KeySet};
use dataplane::auth::jwt::{self, TokenError, ValidationPolicy};
use dataplane::clock::{Clock, Instant};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tokio::sync::RwLock;

use super::settings::ConnectorConfig;

/// Algorithms accepted on ID tokens (never `none`, never HMAC).
const ID_TOKEN_ALGS: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
/// Largest discovery document, JWKS or token response read from an IdP.
const MAX_DOC: usize = 256 * 1024;
/// Longest ID token considered.
const MAX_ID_TOKEN: usize = 16 * 1024;
/// Longest accepted ID-token lifetime.
const MAX_ID_TOKEN_LIFETIME: i64 = 24 * 3600;

/// Why a connector could not be used; the variant says whose fault it is.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectorError {
    /// The IdP is unreachable or answered with something unusable (the IdP's side).
    #[error("{0}")]
    Unavailable(String),
    /// The IdP refused or failed the code exchange (the IdP's answer).
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
    /// The ID token failed validation (the IdP's token, or someone tampering with it).
    #[error("ID token refused: {0}")]
    BadIdToken(String),
    /// The operator's connector settings cannot be used (key file, CA file).
    #[error("connector {id}: {why}")]
    Config { id: String, why: String },
}

#[derive(Debug, Clone)]
struct Endpoints {
    authorization: String,
    token: String,
    jwks: String,
}

#[derive(Debug, Default)]
struct Live {
    endpoints: Option<Endpoints>,
    /// Last-known-good keys: kept when a refetch fails.
    keys: Option<Arc<KeySet>>,
    /// Why the last refresh failed (None: it succeeded).
    down: Option<String>,
    last_attempt: Option<Instant>,
    last_refetch: Option<Instant>,
}

/// One connector: settings, HTTP client, live discovery state.
pub struct Connector {
    pub cfg: ConnectorConfig,
    http: reqwest::Client,
    secret: Option<String>,
    key: Option<Signer>,
    clock: Clock,
    live: RwLock<Live>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("id", &self.cfg.id)
            .finish_non_exhaustive()
    }
}

/// The private key Warden signs its client assertions to the IdP with (private_key_jwt).
enum Signer {
    Rsa(RsaKeyPair, &'static dyn sig::RsaEncoding),
    Ec(EcdsaKeyPair),
}

impl Signer {
    /// A PKCS#8 PEM private key for `alg` (RS256, PS256 or ES256).
    fn from_pem(pem: &str, alg: &str) -> Result<Signer, String> {
        let b64: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .map(str::trim)
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "not a PEM file".to_owned())?;
        let rsa = |enc: &'static dyn sig::RsaEncoding| {
            RsaKeyPair::from_pkcs8(&der)
                .map(|k| Signer::Rsa(k, enc))
                .map_err(|e| format!("not a PKCS#8 RSA private key ({e})"))
        };
        match alg {
            "RS256" => rsa(&sig::RSA_PKCS1_SHA256),
            "PS256" => rsa(&sig::RSA_PSS_SHA256),
            "ES256" => EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                .map(Signer::Ec)
                .map_err(|e| format!("not a PKCS#8 P-256 private key ({e})")),
            a => Err(format!("unsupported private_key_alg {a:?}")),
        }
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, &'static str> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        match self {
            Signer::Rsa(k, enc) => {
                let mut out = vec![0u8; k.public_modulus_len()];
                k.sign(*enc, &rng, msg, &mut out)
                    .map_err(|_| "RSA signing failed")?;
                Ok(out)
            }
            Signer::Ec(k) => k
                .sign(&rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "ECDSA signing failed"),
        }
    }
}

/// What the IdP's ID token says about the user, after validation.
#[derive(Debug, Clone)]
pub struct IdClaims {
    pub claims: serde_json::Map<String, Value>,
}

impl Connector {
    /// Build the runtime (reads the key and CA files); fetches nothing yet.
    pub fn new(cfg: ConnectorConfig, clock: Clock) -> Result<Connector, ConnectorError> {
        let bad = |why: String| ConnectorError::Config {
            id: cfg.id.clone(),
            why,
        };
        let mut b = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(f) = &cfg.ca_file {
            let pem = std::fs::read(f).map_err(|e| bad(format!("{}: {e}", f.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| bad(format!("{}: {e}", f.display())))?;
            b = b.add_root_certificate(cert);
        }
        let http = b.build().map_err(|e| bad(e.to_string()))?;
        let secret = match &cfg.client_secret_env {
            Some(v) => Some(std::env::var(v).map_err(|_| bad(format!("{v} is not set")))?),
            None => None,
        };
        let key = match &cfg.private_key_file {
            Some(f) => {
                let pem =
                    std::fs::read_to_string(f).map_err(|e| bad(format!("{}: {e}", f.display())))?;
                Some(
                    Signer::from_pem(&pem, &cfg.private_key_alg)
                        .map_err(|e| bad(format!("{}: {e}", f.display())))?,
                )
            }
            None => None,
        };
        Ok(Connector {
            cfg,
            http,
            secret,
            key,
            clock,
            live: RwLock::new(Live::default()),
        })
    }

    pub fn display_name(&self) -> &str {
        self.cfg.name.as_deref().unwrap_or(&self.cfg.id)
    }

    /// Why this IdP is unusable now (None: it answered the last refresh).
    pub async fn down_reason(&self) -> Option<String> {
        let l = self.live.read().await;
        match (&l.down, &l.endpoints, &l.keys) {
            (Some(d), _, _) => Some(d.clone()),
            (None, Some(_), Some(_)) => None,
            _ => Some("not contacted yet".into()),
        }
    }

    /// Whether a scheduled refresh is due.
    pub async fn refresh_due(&self) -> bool {
        let l = self.live.read().await;
        let every = if l.down.is_some() {
            self.cfg.min_refetch_interval
        } else {
            self.cfg.refresh_interval
        };
        l.last_attempt.is_none_or(|t| self.clock.since(t) >= every)
    }

    /// Re-read discovery and JWKS. On failure the last-known-good keys stay, and the
    /// connector is reported down until a refresh succeeds.
    pub async fn refresh(&self) {
        self.live.write().await.last_attempt = Some(self.clock.now());
        let res = self.fetch().await;
        let mut l = self.live.write().await;
        match res {
            Ok((ep, keys)) => {
                if l.down.take().is_some() {
                    tracing::info!(connector = %self.cfg.id, "Identity provider reachable again");
                }
                l.endpoints = Some(ep);
                l.keys = Some(Arc::new(keys));
            }
            Err(e) => {
                tracing::warn!(connector = %self.cfg.id, error = ?e.to_string(), "Identity provider unavailable");
                l.down = Some(e.to_string());
            }
        }
    }

    /// Mark the IdP down after a failed request (the login page says so).
    pub async fn mark_down(&self, why: &str) {
        self.live.write().await.down = Some(why.to_owned());
    }

    async fn get_json(&self, url: &str) -> Result<Value, ConnectorError> {
        let un = |e: String| ConnectorError::Unavailable(format!("{url}: {e}"));
        let r = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| un(e.to_string()))?;
        if !r.status().is_success() {
            return Err(un(format!("HTTP {}", r.status())));
        }
        let b = r.bytes().await.map_err(|e| un(e.to_string()))?;
        if b.len() > MAX_DOC {
            return Err(un("document too large".into()));
        }
        serde_json::from_slice(&b).map_err(|e| un(e.to_string()))
    }

    async fn fetch(&self) -> Result<(Endpoints, KeySet), ConnectorError> {
        let url = self.cfg.discovery_url.clone().unwrap_or_else(|| {
            format!(
                "{}/.well-known/openid-configuration",
                self.cfg.issuer.trim_end_matches('/')
            )
        });
        let doc = self.get_json(&url).await?;
        let s = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_owned);
        if s("issuer").as_deref() != Some(self.cfg.issuer.as_str()) {
            return Err(ConnectorError::Unavailable(format!(
                "{url}: discovery issuer is not {:?}",
                self.cfg.issuer
            )));
        }
        let (Some(authorization), Some(token), Some(jwks_uri)) = (
            s("authorization_endpoint"),
            s("token_endpoint"),
            s("jwks_uri"),
        ) else {
            return Err(ConnectorError::Unavailable(format!(
                "{url}: discovery lacks an endpoint"
            )));
        };
        let keys = self.fetch_keys(&jwks_uri).await?;
        Ok((
            Endpoints {
                authorization,
                token,
                jwks: jwks_uri,
            },
            keys,
        ))
    }

    async fn fetch_keys(&self, uri: &str) -> Result<KeySet, ConnectorError> {
        let doc = self.get_json(uri).await?;
        let bytes = serde_json::to_vec(&doc).unwrap_or_default();
        jwks::parse_jwks(&bytes, &ID_TOKEN_ALGS)
            .map_err(|e| ConnectorError::Unavailable(format!("{uri}: {e}")))
    }

    /// The IdP's authorization URL for a sign-in (code + PKCE S256 + nonce).
    pub async fn authorization_url(
        &self,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        challenge: &str,
    ) -> Result<String, ConnectorError> {
        let ep = self.live.read().await.endpoints.clone();
        let ep = ep.ok_or_else(|| ConnectorError::Unavailable("not discovered".into()))?;
        let mut u = url::Url::parse(&ep.authorization)
            .map_err(|e| ConnectorError::Unavailable(format!("authorization_endpoint: {e}")))?;
        u.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.cfg.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &self.cfg.scopes.join(" "))
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(u.into())
    }

    /// Redeem the IdP's code (client_secret_basic or private_key_jwt); the raw ID token.
    pub async fn redeem(
        &self,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<String, ConnectorError> {
        let ep = self.live.read().await.endpoints.clone();
        let ep = ep.ok_or_else(|| ConnectorError::Unavailable("not discovered".into()))?;
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", redirect_uri.to_owned()),
            ("code_verifier", verifier.to_owned()),
        ];
        let mut req = self.http.post(&ep.token);
        if let Some(s) = &self.secret {
            // RFC 6749 §2.3.1: form-encode both parts before Basic.
            let enc =
                |x: &str| url::form_urlencoded::byte_serialize(x.as_bytes()).collect::<String>();
            req = req.basic_auth(enc(&self.cfg.client_id), Some(enc(s)));
        } else {
            form.push(("client_id", self.cfg.client_id.clone()));
            form.push((
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
            ));
            form.push(("client_assertion", self.client_assertion(&ep.token)?));
        }
        let r = req
            .form(&form)
            .send()
            .await
            .map_err(|e| ConnectorError::Unavailable(format!("token endpoint: {e}")))?;
        let status = r.status();
        let b = r
            .bytes()
            .await
            .map_err(|e| ConnectorError::Unavailable(format!("token endpoint: {e}")))?;
        if b.len() > MAX_DOC {
            return Err(ConnectorError::Refused("token response too large".into()));
        }
        let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
        if !status.is_success() {
            let e = v.get("error").and_then(Value::as_str).unwrap_or("error");
            return Err(ConnectorError::Refused(format!("HTTP {status} {e}")));
        }
        v.get("id_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ConnectorError::Refused("no id_token in the token response".into()))
    }

    /// An RFC 7523 client assertion for the IdP's token endpoint.
    fn client_assertion(&self, aud: &str) -> Result<String, ConnectorError> {
        let bad = |why: String| ConnectorError::Config {
            id: self.cfg.id.clone(),
            why,
        };
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| bad("no private key".into()))?;
        let now = self.clock.unix_secs();
        let jti = super::store::random_token().map_err(|e| bad(e.to_string()))?;
        let mut h = json!({"alg": self.cfg.private_key_alg, "typ": "JWT"});
        if let Some(k) = &self.cfg.private_key_id {
            h["kid"] = Value::String(k.clone());
        }
        let c = json!({
            "iss": self.cfg.client_id, "sub": self.cfg.client_id, "aud": aud,
            "iat": now, "exp": now + 60, "jti": jti,
        });
        let mut out = URL_SAFE_NO_PAD.encode(h.to_string());
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(c.to_string()));
        let s = key.sign(out.as_bytes()).map_err(|e| bad(e.to_owned()))?;
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(s));
        Ok(out)
    }

    /// Validate an ID token strictly: signature against the IdP's JWKS (one rate-limited
    /// refetch for an unknown `kid`), `iss`, `aud` ∋ our client id, `azp`, `exp`/`iat`/`nbf`,
    /// and `nonce`. Returns the claims.
    pub async fn validate_id_token(
        &self,
        token: &str,
        nonce: &str,
        now: i64,
    ) -> Result<IdClaims, ConnectorError> {
        let bad = |e: &str| ConnectorError::BadIdToken(e.to_owned());
        let header = token.split('.').next().unwrap_or_default();
        let hv: Value = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| bad("malformed header"))?;
        // An access token or an ID-JAG is not an ID token.
        if let Some(t) = hv.get("typ").and_then(Value::as_str)
            && !t.eq_ignore_ascii_case("jwt")
        {
            return Err(bad("typ is not JWT"));
        }
        let claims =
            (self.verify_jwt(token, &[], &self.cfg.client_id, MAX_ID_TOKEN_LIFETIME, now)).await?;
        let nonce_ok = claims
            .get("nonce")
            .and_then(Value::as_str)
            .is_some_and(|n| {
                aws_lc_rs::constant_time::verify_slices_are_equal(n.as_bytes(), nonce.as_bytes())
                    .is_ok()
            });
        if !nonce_ok {
            return Err(bad("nonce does not match the sign-in request"));
        }
        // OIDC Core §3.1.3.7: with several audiences, azp must be us; if present it must be us.
        let multi = claims
            .get("aud")
            .and_then(Value::as_array)
            .is_some_and(|a| a.len() > 1);
        match claims.get("azp").and_then(Value::as_str) {
            Some(a) if a != self.cfg.client_id => return Err(bad("azp is another client")),
            None if multi => return Err(bad("several audiences and no azp")),
            _ => {}
        }
        Ok(IdClaims { claims })
    }

    /// Verify a JWT this IdP signed: `typ` among `types` (empty: not checked), signature
    /// against the JWKS (one rate-limited refetch for an unknown `kid`), `iss`, `aud` ∋
    /// `audience`, `exp`/`nbf`, `iat` (required) and the lifetime bound. The claims.
    pub async fn verify_jwt(
        &self,
        token: &str,
        types: &[String],
        audience: &str,
        max_lifetime: i64,
        now: i64,
    ) -> Result<serde_json::Map<String, Value>, ConnectorError> {
        let bad = |e: &str| ConnectorError::BadIdToken(e.to_owned());
        let decoded = jwt::decode(token, MAX_ID_TOKEN, types).map_err(|e| bad(&e.to_string()))?;
        let policy = ValidationPolicy {
            issuer: self.cfg.issuer.clone(),
            audiences: vec![audience.to_owned()],
            leeway_secs: self.cfg.leeway.as_secs().min(300) as i64,
            max_lifetime_secs: max_lifetime,
            token_types: types.to_vec(),
        };
        let keys = self.live.read().await.keys.clone().unwrap_or_default();
        let mut res = jwt::verify(&decoded, &keys, &policy, now);
        if res == Err(TokenError::UnknownKey) && self.refetch_allowed().await {
            let uri = self
                .live
                .read()
                .await
                .endpoints
                .as_ref()
                .map(|e| e.jwks.clone());
            if let Some(uri) = uri
                && let Ok(k) = self.fetch_keys(&uri).await
            {
                let k = Arc::new(k);
                self.live.write().await.keys = Some(k.clone());
                res = jwt::verify(&decoded, &k, &policy, now);
            }
        }
        res.map_err(|e| bad(&e.to_string()))?;
        let payload = token.split('.').nth(1).unwrap_or_default();
        let claims: serde_json::Map<String, Value> = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| bad("malformed claims"))?;
        if claims.get("iat").and_then(Value::as_i64).is_none() {
            return Err(bad("iat is missing"));
        }
        Ok(claims)
    }

    async fn refetch_allowed(&self) -> bool {
        let mut l = self.live.write().await;
        let ok = l
            .last_refetch
            .is_none_or(|t| self.clock.since(t) >= self.cfg.min_refetch_interval);
        if ok {
            l.last_refetch = Some(self.clock.now());
        }
        ok
    }
}

/// Keep every connector's discovery and keys fresh until the server stops.
pub fn spawn_refresher(list: Vec<Arc<Connector>>, mut stop: tokio::sync::watch::Receiver<bool>) {
    if list.is_empty() {
        return;
    }
    tokio::spawn(async move {
        loop {
            for c in &list {
                if c.refresh_due().await {
                    c.refresh().await;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.changed() => return,
            }
        }
    });
}
