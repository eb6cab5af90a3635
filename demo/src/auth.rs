//! Bearer-token validation shared by the demo resource servers: a JWKS cache fetched over HTTP and RFC 9068 / RFC 8693 checks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::http::{HeaderMap, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio::sync::Mutex;

/// Allowed clock skew on `exp`, in seconds.
pub const LEEWAY_SECS: u64 = 5;
/// Minimum time between two JWKS fetches (the first fetch is never delayed).
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(5);
/// Deepest `act` nesting accepted.
const MAX_ACT_DEPTH: usize = 8;

/// The time a resource server judges `exp` by, in Unix seconds: the system clock, or its
/// host's (`warden demo` runs the peers in its own process and hands them its clock, so a
/// test that steps that clock opens no skew between the gateway and its upstreams).
#[derive(Clone)]
pub struct Now(Arc<dyn Fn() -> u64 + Send + Sync>);

impl Now {
    /// The system clock.
    pub fn system() -> Now {
        Now(Arc::new(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        }))
    }

    /// Unix seconds from `f`.
    pub fn from_fn(f: impl Fn() -> u64 + Send + Sync + 'static) -> Now {
        Now(Arc::new(f))
    }

    pub fn unix_secs(&self) -> u64 {
        (self.0)()
    }
}

impl std::fmt::Debug for Now {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Now(..)")
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// `401 invalid_token` with this description.
    Invalid(String),
    /// The signing keys could not be obtained: `503`.
    Unavailable(String),
}

fn invalid(msg: impl Into<String>) -> AuthError {
    AuthError::Invalid(msg.into())
}

/// One verification key from the JWKS, with the only algorithm it may be used with.
#[derive(Clone)]
struct Key {
    key: DecodingKey,
    alg: Algorithm,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("alg", &self.alg).finish()
    }
}

/// Verifies a resource server's bearer tokens against the issuer's JWKS.
#[derive(Debug)]
pub struct Verifier {
    /// Log prefix of the server using it, e.g. `ledger`.
    server: &'static str,
    jwks_uri: String,
    issuer: String,
    audience: String,
    http: reqwest::Client,
    keys: ArcSwap<HashMap<String, Key>>,
    /// When the JWKS was last fetched (successfully or not); serializes fetches.
    last_fetch: Mutex<Option<Instant>>,
    /// What `exp` is judged by.
    now: Now,
}

impl Verifier {
    /// A verifier with an empty key cache; the JWKS is fetched on first use.
    pub fn new(
        server: &'static str,
        jwks_uri: String,
        issuer: String,
        audience: String,
        now: Now,
    ) -> Result<Verifier, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("cannot build the JWKS HTTP client: {e}"))?;
        Ok(Verifier {
            server,
            jwks_uri,
            issuer,
            audience,
            http,
            keys: ArcSwap::from_pointee(HashMap::new()),
            last_fetch: Mutex::new(None),
            now,
        })
    }

    /// Checks `typ`, signature (alg pinned to the key), `iss`, `aud` and `exp`; returns the claims.
    pub async fn verify(&self, token: &str) -> Result<Value, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| invalid(format!("malformed token header: {e}")))?;
        let typ = header.typ.as_deref().unwrap_or("");
        if !typ.eq_ignore_ascii_case("at+jwt") && !typ.eq_ignore_ascii_case("application/at+jwt") {
            return Err(invalid(format!(
                "token typ must be at+jwt, got {:?}",
                header.typ.as_deref().unwrap_or("none")
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| invalid("token header has no kid"))?;
        let key = self.key(&kid).await?;
        if header.alg != key.alg {
            return Err(invalid(format!(
                "token alg {:?} does not match key {kid} ({:?})",
                header.alg, key.alg
            )));
        }
        let mut validation = Validation::new(key.alg);
        validation.leeway = LEEWAY_SECS;
        // `exp` is checked below against `self.now` (jsonwebtoken would read the system clock).
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&[self.issuer.as_str()]);
        validation.set_audience(&[self.audience.as_str()]);
        let data = jsonwebtoken::decode::<Value>(token, &key.key, &validation)
            .map_err(|e| invalid(format!("token rejected: {e}")))?;
        if !data.claims.is_object() {
            return Err(invalid("token claims are not an object"));
        }
        let exp = data
            .claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or_else(|| invalid("token rejected: exp is not a number"))?;
        if exp.saturating_add(LEEWAY_SECS) < self.now.unix_secs() {
            return Err(invalid("token rejected: expired"));
        }
        Ok(data.claims)
    }

    /// The key `kid`, refetching the JWKS (at most once per [`JWKS_REFETCH_INTERVAL`]) if unknown.
    async fn key(&self, kid: &str) -> Result<Key, AuthError> {
        if let Some(k) = self.keys.load().get(kid) {
            return Ok(k.clone());
        }
        let mut last = self.last_fetch.lock().await;
        // Another request may have refreshed while this one waited for the lock.
        if let Some(k) = self.keys.load().get(kid) {
            return Ok(k.clone());
        }
        if last.is_some_and(|t| t.elapsed() < JWKS_REFETCH_INTERVAL) {
            return Err(invalid(format!("unknown signing key {kid:?}")));
        }
        *last = Some(Instant::now());
        let keys = self.fetch().await?;
        tracing::debug!(count = keys.len(), uri = %self.jwks_uri, "{}: JWKS fetched", self.server);
        let found = keys.get(kid).cloned();
        self.keys.store(Arc::new(keys));
        found.ok_or_else(|| invalid(format!("unknown signing key {kid:?}")))
    }

    async fn fetch(&self) -> Result<HashMap<String, Key>, AuthError> {
        let unavailable = |e: reqwest::Error| {
            AuthError::Unavailable(format!("cannot fetch JWKS {}: {e}", self.jwks_uri))
        };
        let jwks: Value = self
            .http
            .get(&self.jwks_uri)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(unavailable)?
            .json()
            .await
            .map_err(unavailable)?;
        let list = jwks
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| AuthError::Unavailable("JWKS has no keys array".to_owned()))?;
        Ok(list.iter().filter_map(parse_jwk).collect())
    }
}

/// An Ed25519 (`OKP`) or P-256 (`EC`) signing JWK with a kid; anything else is skipped.
fn parse_jwk(jwk: &Value) -> Option<(String, Key)> {
    let s = |name: &str| jwk.get(name).and_then(Value::as_str);
    let kid = s("kid")?;
    if s("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let (alg, key) = match (s("kty")?, s("crv")?) {
        ("OKP", "Ed25519") => (Algorithm::EdDSA, DecodingKey::from_ed_components(s("x")?)),
        ("EC", "P-256") => (
            Algorithm::ES256,
            DecodingKey::from_ec_components(s("x")?, s("y")?),
        ),
        _ => return None,
    };
    if let Some(declared) = s("alg") {
        let ok = match alg {
            Algorithm::EdDSA => declared == "EdDSA" || declared == "Ed25519",
            _ => declared == "ES256",
        };
        if !ok {
            return None;
        }
    }
    Some((
        kid.to_owned(),
        Key {
            key: key.ok()?,
            alg,
        },
    ))
}

/// The `act` chain of a delegation token, outermost (current) actor first.
pub fn act_chain(claims: &Value) -> Result<Vec<String>, AuthError> {
    let mut chain = Vec::new();
    let mut act = claims.get("act");
    while let Some(a) = act {
        if chain.len() == MAX_ACT_DEPTH {
            return Err(invalid("act chain too deep"));
        }
        let Some(sub) = a.get("sub").and_then(Value::as_str) else {
            return Err(invalid("act must be an object with a string sub"));
        };
        chain.push(sub.to_owned());
        act = a.get("act");
    }
    Ok(chain)
}

/// Checks the delegation claims every delegated call needs: `sub`, `iat`, and `act.sub == gateway`.
pub fn check_delegation(claims: &Value, gateway_client_id: &str) -> Result<Vec<String>, AuthError> {
    if claims
        .get("sub")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(invalid("token has no sub"));
    }
    if claims.get("iat").and_then(Value::as_f64).is_none() {
        return Err(invalid("token has no iat"));
    }
    let chain = act_chain(claims)?;
    match chain.first() {
        None => Err(invalid("not a delegation token: no act claim")),
        Some(actor) if actor != gateway_client_id => Err(invalid(format!(
            "act.sub is {actor:?}, expected {gateway_client_id:?}"
        ))),
        Some(_) => Ok(chain),
    }
}

/// The token's scopes: `scope` as a space-separated string (or an array of strings).
pub fn scopes(claims: &Value) -> Vec<String> {
    match claims.get("scope") {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// Lower-case hex SHA-256 of the token: what the servers record instead of the token.
pub fn token_sha256(token: &str) -> String {
    use std::fmt::Write as _;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    digest.as_ref().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The bearer token of the request.
pub fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| AuthError::Invalid("missing Authorization header".to_owned()))?;
    let value = value
        .to_str()
        .map_err(|_| AuthError::Invalid("Authorization header is not ASCII".to_owned()))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(AuthError::Invalid(
            "Authorization must be a Bearer token".to_owned(),
        )),
    }
}

/// What a delegation log line shows of a token: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    /// `sub`, or `-`.
    pub sub: String,
    /// The `act` chain joined with ` > `; empty for a direct token.
    pub act: String,
    /// `aud` as JSON.
    pub aud: String,
    /// `scope`, or `-`.
    pub scope: String,
    /// `jti`, or `-`.
    pub jti: String,
    /// `exp - iat` in seconds, `-1` if either is missing.
    pub ttl_secs: i64,
}

impl ChainSummary {
    /// The summary of validated claims.
    pub fn of(claims: &Value) -> ChainSummary {
        let str_claim = |n: &str| {
            claims
                .get(n)
                .and_then(Value::as_str)
                .unwrap_or("-")
                .to_owned()
        };
        let ttl_secs = match (
            claims.get("exp").and_then(Value::as_i64),
            claims.get("iat").and_then(Value::as_i64),
        ) {
            (Some(exp), Some(iat)) => exp - iat,
            _ => -1,
        };
        ChainSummary {
            sub: str_claim("sub"),
            act: act_chain(claims).unwrap_or_default().join(" > "),
            aud: claims.get("aud").map(Value::to_string).unwrap_or_default(),
            scope: str_claim("scope"),
            jti: str_claim("jti"),
            ttl_secs,
        }
    }
}

/// `n` random bytes from the system CSPRNG as lower-case hex; `None` if the RNG fails.
pub fn random_hex(n: usize) -> Option<String> {
    use std::fmt::Write as _;
    let mut buf = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut buf).ok()?;
    Some(buf.iter().fold(String::with_capacity(n * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}
