//! DPoP proofs at the resource server (RFC 9449 §4.3, MCP SEP-1932), sans-IO: the proof,
//! the request's method and URI, the access token and a clock in; the key's thumbprint and
//! the proof's replay key out.
//!
//! jsonwebtoken checks the signature only; the header, the embedded key and every claim are
//! checked here. What the rules are and which test shows each: `docs/security.md`, "DPoP".

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::jwks::parse_alg;

/// Proofs longer than this are refused before any decoding (a proof is a few hundred bytes;
/// an RSA-4096 key in the header makes it about 1.5 KB).
pub const MAX_PROOF_BYTES: usize = 8192;

/// How an issuer's tokens relate to DPoP (`dpop:` in the issuer's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DpopMode {
    /// Only DPoP-bound tokens (`cnf.jkt`) with a valid proof are accepted.
    Required,
    /// Bearer tokens are accepted; a bound token still needs its proof.
    #[default]
    Optional,
    /// The `DPoP` scheme is not accepted; a bound token is refused (it cannot be verified).
    Off,
}

/// Per-issuer DPoP rules.
#[derive(Debug, Clone)]
pub struct DpopPolicy {
    pub mode: DpopMode,
    /// Accepted proof algorithms (asymmetric only; `none` and HMAC never parse).
    pub algorithms: Vec<Algorithm>,
    /// `|now - iat|` allowed, seconds (SEP-1932: ±5 minutes).
    pub iat_window_secs: i64,
    /// Proofs must carry a nonce this gateway issued (RFC 9449 §9).
    pub require_nonce: bool,
    /// How long an issued nonce is accepted, seconds.
    pub nonce_lifetime_secs: i64,
}

impl Default for DpopPolicy {
    fn default() -> Self {
        DpopPolicy {
            mode: DpopMode::Optional,
            algorithms: vec![Algorithm::ES256, Algorithm::EdDSA],
            iat_window_secs: 300,
            require_nonce: false,
            nonce_lifetime_secs: 300,
        }
    }
}

impl DpopPolicy {
    /// The `algs` parameter of the `DPoP` challenge (RFC 9449 §7.1).
    pub fn algs_param(&self) -> String {
        self.algorithms
            .iter()
            .map(|a| alg_name(*a))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The JWS name of an algorithm.
pub fn alg_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
        _ => "unsupported",
    }
}

/// The request a proof must match.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The HTTP method, upper-case (`POST`).
    pub method: &'a str,
    /// The URIs the request may be known by (the public URL, the Host-header form),
    /// already normalised with [`normalize_htu`].
    pub uris: &'a [String],
    /// The access token the proof must be bound to (`ath`); `None` at a token endpoint.
    pub access_token: Option<&'a str>,
    pub now: i64,
}

/// A proof that passed every check but replay and nonce, which need state.
#[derive(Clone, PartialEq, Eq)]
pub struct Proof {
    /// RFC 7638 SHA-256 thumbprint of the proof's key, base64url.
    pub jkt: String,
    /// SHA-256 of `jkt` ‖ NUL ‖ `jti`: the key of the replay set (never the `jti` itself).
    pub replay_key: [u8; 32],
    /// Until when (Unix seconds) the proof could still pass the `iat` check.
    pub replay_until: i64,
    pub nonce: Option<String>,
}

impl fmt::Debug for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proof")
            .field("jkt", &self.jkt)
            .field("replay_until", &self.replay_until)
            .finish_non_exhaustive()
    }
}

/// Why a proof was refused: `invalid_dpop_proof` (or `use_dpop_nonce`) on the wire; the
/// variant is for the audit record and the metric label. Always the agent's doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("no DPoP proof")]
    Missing,
    #[error("more than one DPoP header")]
    Repeated,
    #[error("DPoP proof is not a compact JWS")]
    Malformed,
    #[error("DPoP proof typ is not dpop+jwt")]
    BadType,
    #[error("DPoP proof algorithm not accepted")]
    BadAlgorithm,
    #[error("DPoP proof carries a crit header")]
    CritHeader,
    #[error("DPoP proof has no usable public jwk")]
    BadKey,
    #[error("DPoP proof jwk contains private key members")]
    PrivateKey,
    #[error("DPoP proof signature invalid")]
    BadSignature,
    #[error("DPoP proof claims are invalid")]
    BadClaims,
    #[error("DPoP proof htm does not match the request method")]
    WrongMethod,
    #[error("DPoP proof htu does not match the request URI")]
    WrongUri,
    #[error("DPoP proof iat too old")]
    Stale,
    #[error("DPoP proof iat in the future")]
    Future,
    #[error("DPoP proof has no ath")]
    MissingAth,
    #[error("DPoP proof ath does not match the access token")]
    WrongAth,
    #[error("DPoP proof key does not match the token's cnf.jkt")]
    WrongKey,
    #[error("DPoP proof jti already used")]
    Replayed,
    #[error("DPoP proof has no nonce, or one this gateway did not issue or that expired")]
    Nonce,
}

impl ProofError {
    /// Stable label for metrics and audit reasons.
    pub fn label(self) -> &'static str {
        match self {
            ProofError::Missing => "dpop_missing",
            ProofError::Repeated => "dpop_repeated",
            ProofError::Malformed => "dpop_malformed",
            ProofError::BadType => "dpop_bad_typ",
            ProofError::BadAlgorithm => "dpop_bad_alg",
            ProofError::CritHeader => "dpop_crit",
            ProofError::BadKey => "dpop_bad_key",
            ProofError::PrivateKey => "dpop_private_key",
            ProofError::BadSignature => "dpop_bad_signature",
            ProofError::BadClaims => "dpop_bad_claims",
            ProofError::WrongMethod => "dpop_htm",
            ProofError::WrongUri => "dpop_htu",
            ProofError::Stale => "dpop_iat_stale",
            ProofError::Future => "dpop_iat_future",
            ProofError::MissingAth => "dpop_ath_missing",
            ProofError::WrongAth => "dpop_ath",
            ProofError::WrongKey => "dpop_jkt",
            ProofError::Replayed => "dpop_replay",
            ProofError::Nonce => "dpop_nonce",
        }
    }
}

/// The header as sent; kept raw, `jwk` is parsed by its own derive, so duplicate members
/// are refused there too.
#[derive(Deserialize)]
struct Header {
    typ: Option<String>,
    alg: String,
    jwk: Option<Box<RawValue>>,
    crit: Option<Value>,
}

/// The members of a JWK that matter here. Private members are named so their presence is seen.
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
    d: Option<Value>,
    p: Option<Value>,
    q: Option<Value>,
    dp: Option<Value>,
    dq: Option<Value>,
    qi: Option<Value>,
    oth: Option<Value>,
    k: Option<Value>,
}

#[derive(Deserialize)]
struct Claims {
    jti: Option<Value>,
    htm: Option<Value>,
    htu: Option<Value>,
    iat: Option<Value>,
    ath: Option<Value>,
    nonce: Option<Value>,
}

fn is_b64url(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn b64(s: &str) -> Result<Vec<u8>, ProofError> {
    URL_SAFE_NO_PAD.decode(s).map_err(|_| ProofError::BadKey)
}

/// The proof's key: the verification key and its RFC 7638 thumbprint input.
fn public_key(jwk: &str, alg: Algorithm) -> Result<(DecodingKey, String), ProofError> {
    let raw: RawJwk = serde_json::from_str(jwk).map_err(|_| ProofError::BadKey)?;
    if raw.d.is_some()
        || raw.p.is_some()
        || raw.q.is_some()
        || raw.dp.is_some()
        || raw.dq.is_some()
        || raw.qi.is_some()
        || raw.oth.is_some()
        || raw.k.is_some()
    {
        return Err(ProofError::PrivateKey);
    }
    // RFC 7638 §3.2: the required members only, in lexicographic order, no whitespace.
    // serde_json writes strings with the escaping RFC 8259 requires.
    let j = |s: &str| serde_json::to_string(s).unwrap_or_default();
    match (raw.kty.as_str(), alg) {
        ("EC", Algorithm::ES256 | Algorithm::ES384) => {
            let (crv, len) = if alg == Algorithm::ES256 {
                ("P-256", 32)
            } else {
                ("P-384", 48)
            };
            let (Some(c), Some(x), Some(y)) = (raw.crv.as_deref(), &raw.x, &raw.y) else {
                return Err(ProofError::BadKey);
            };
            if c != crv || b64(x)?.len() != len || b64(y)?.len() != len {
                return Err(ProofError::BadKey);
            }
            let key = DecodingKey::from_ec_components(x, y).map_err(|_| ProofError::BadKey)?;
            let tp = format!(
                "{{\"crv\":{},\"kty\":\"EC\",\"x\":{},\"y\":{}}}",
                j(c),
                j(x),
                j(y)
            );
            Ok((key, tp))
        }
        ("OKP", Algorithm::EdDSA) => {
            let (Some(c), Some(x)) = (raw.crv.as_deref(), &raw.x) else {
                return Err(ProofError::BadKey);
            };
            if c != "Ed25519" || b64(x)?.len() != 32 {
                return Err(ProofError::BadKey);
            }
            let key = DecodingKey::from_ed_components(x).map_err(|_| ProofError::BadKey)?;
            Ok((
                key,
                format!("{{\"crv\":\"Ed25519\",\"kty\":\"OKP\",\"x\":{}}}", j(x)),
            ))
        }
        (
            "RSA",
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512,
        ) => {
            let (Some(n), Some(e)) = (&raw.n, &raw.e) else {
                return Err(ProofError::BadKey);
            };
            let modulus = b64(n)?;
            let significant = modulus.iter().skip_while(|b| **b == 0).count();
            if significant < 256 {
                return Err(ProofError::BadKey);
            }
            let key = DecodingKey::from_rsa_components(n, e).map_err(|_| ProofError::BadKey)?;
            Ok((
                key,
                format!("{{\"e\":{},\"kty\":\"RSA\",\"n\":{}}}", j(e), j(n)),
            ))
        }
        _ => Err(ProofError::BadKey),
    }
}

/// RFC 7638 thumbprint (SHA-256, base64url) of a public JWK given as JSON, for any key type
/// the proofs accept; `None` for anything else. Used by the authorization server too.
pub fn thumbprint_of(jwk: &Value) -> Option<String> {
    let alg = match (
        jwk.get("kty").and_then(Value::as_str),
        jwk.get("crv").and_then(Value::as_str),
    ) {
        (Some("EC"), Some("P-256")) => Algorithm::ES256,
        (Some("EC"), Some("P-384")) => Algorithm::ES384,
        (Some("OKP"), _) => Algorithm::EdDSA,
        (Some("RSA"), _) => Algorithm::RS256,
        _ => return None,
    };
    public_key(&jwk.to_string(), alg)
        .ok()
        .map(|(_, tp)| sha256_b64(&tp))
}

fn sha256_b64(s: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
    URL_SAFE_NO_PAD.encode(d.as_ref())
}

/// `ath`: base64url(SHA-256(access token)) (RFC 9449 §4.2).
pub fn ath_of(token: &str) -> String {
    sha256_b64(token)
}

/// Normalise an HTTP URI for `htu` comparison (RFC 9449 §4.3 step 9, RFC 3986 §6.2.2–6.2.3):
/// scheme and host lower-cased, the default port dropped, dot segments removed, an empty
/// path as `/`; query and fragment ignored. `None` unless an absolute http(s) URI.
pub fn normalize_htu(uri: &str) -> Option<String> {
    let mut u = url::Url::parse(uri).ok()?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return None;
    }
    u.set_query(None);
    u.set_fragment(None);
    Some(u.to_string())
}

fn int(v: &Option<Value>) -> Result<i64, ProofError> {
    match v {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .ok_or(ProofError::BadClaims),
        _ => Err(ProofError::BadClaims),
    }
}

fn text(v: Option<Value>) -> Result<Option<String>, ProofError> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ProofError::BadClaims),
    }
}

/// Check a proof (the `DPoP` header's value) against the request, RFC 9449 §4.3 steps 1–11
/// except replay (step 12, needs the replay set) and the nonce's origin (step 10, needs the
/// key ring): the caller checks those with the returned [`Proof`].
pub fn verify(proof: &str, policy: &DpopPolicy, req: &Request<'_>) -> Result<Proof, ProofError> {
    if proof.len() > MAX_PROOF_BYTES {
        return Err(ProofError::Malformed);
    }
    // 1–2. One well-formed compact JWS.
    let mut parts = proof.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ProofError::Malformed);
    };
    if !is_b64url(h) || !is_b64url(p) || !is_b64url(s) {
        return Err(ProofError::Malformed);
    }
    let header_bytes = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| ProofError::Malformed)?;
    let header: Header =
        serde_json::from_slice(&header_bytes).map_err(|_| ProofError::Malformed)?;
    // 4. typ dpop+jwt.
    if !header
        .typ
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("dpop+jwt"))
    {
        return Err(ProofError::BadType);
    }
    if header.crit.is_some() {
        return Err(ProofError::CritHeader);
    }
    // 5. An asymmetric algorithm from the allow-list (`none` and HS* never parse).
    let alg = parse_alg(&header.alg)
        .filter(|a| policy.algorithms.contains(a))
        .ok_or(ProofError::BadAlgorithm)?;
    // 7. A public key in `jwk`, of the algorithm's type.
    let jwk = header.jwk.as_ref().ok_or(ProofError::BadKey)?;
    let (key, tp_input) = public_key(jwk.get(), alg)?;
    // 6. The signature, with that key.
    let ok = jsonwebtoken::crypto::verify(s, &proof.as_bytes()[..h.len() + 1 + p.len()], &key, alg)
        .map_err(|_| ProofError::BadSignature)?;
    if !ok {
        return Err(ProofError::BadSignature);
    }
    // 3. The claims (duplicate members refused by the derive).
    let payload = URL_SAFE_NO_PAD
        .decode(p)
        .map_err(|_| ProofError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| ProofError::BadClaims)?;
    let jti = text(claims.jti)?
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or(ProofError::BadClaims)?;
    let htm = text(claims.htm)?.ok_or(ProofError::BadClaims)?;
    let htu = text(claims.htu)?.ok_or(ProofError::BadClaims)?;
    let iat = int(&claims.iat)?;
    let ath = text(claims.ath)?;
    let nonce = text(claims.nonce)?;
    // 8. htm.
    if htm != req.method {
        return Err(ProofError::WrongMethod);
    }
    // 9. htu, ignoring query and fragment, after normalisation.
    let htu = normalize_htu(&htu).ok_or(ProofError::WrongUri)?;
    if !req.uris.contains(&htu) {
        return Err(ProofError::WrongUri);
    }
    // 11. iat within the window.
    if iat < req.now.saturating_sub(policy.iat_window_secs) {
        return Err(ProofError::Stale);
    }
    if iat > req.now.saturating_add(policy.iat_window_secs) {
        return Err(ProofError::Future);
    }
    // 12 (first half). ath binds the proof to the presented token.
    if let Some(token) = req.access_token {
        let ath = ath.ok_or(ProofError::MissingAth)?;
        if !constant_time_eq(ath.as_bytes(), ath_of(token).as_bytes()) {
            return Err(ProofError::WrongAth);
        }
    }
    let jkt = sha256_b64(&tp_input);
    let mut rk = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    rk.update(jkt.as_bytes());
    rk.update(&[0]);
    rk.update(jti.as_bytes());
    let mut replay_key = [0u8; 32];
    replay_key.copy_from_slice(rk.finish().as_ref());
    Ok(Proof {
        jkt,
        replay_key,
        replay_until: iat.saturating_add(policy.iat_window_secs),
        nonce,
    })
}

/// Compare two digests without an early exit (the token's `ath` is not secret, but cheap).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `cnf.jkt` of a token must equal the proof key's thumbprint (RFC 9449 §7.1).
pub fn check_binding(proof: &Proof, cnf_jkt: &str) -> Result<(), ProofError> {
    if constant_time_eq(proof.jkt.as_bytes(), cnf_jkt.as_bytes()) {
        Ok(())
    } else {
        Err(ProofError::WrongKey)
    }
}

#[cfg(test)]
#[path = "dpop_tests.rs"]
mod tests;
