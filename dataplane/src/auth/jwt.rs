//! Strict bearer-JWT validation (RFC 8725, RFC 9068), sans-IO: token bytes, keys and a clock in, claims out.
//!
//! jsonwebtoken is used only for the signature check; every header and claim rule is
//! enforced here, because the crate's defaults accept missing `aud`/`iss`, future
//! `nbf`, `crit` headers and any `typ` (the rules: `docs/security.md`, "Bearer tokens").

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::Value;

use super::jwks::{KeySet, parse_alg};

/// Per-issuer validation rules.
#[derive(Debug, Clone)]
pub struct ValidationPolicy {
    pub issuer: String,
    /// Accepted audiences: the token's `aud` (string, or any element of an array) must equal one exactly.
    pub audiences: Vec<String>,
    /// Clock skew tolerated on `exp`, `nbf`, `iat`, in seconds (capped at 30 by config).
    pub leeway_secs: i64,
    /// Longest accepted lifetime (`exp` − `iat`, or `exp` − now without `iat`), seconds.
    pub max_lifetime_secs: i64,
    /// Accepted `typ` values, lower-case, without the `application/` prefix (default `at+jwt`).
    pub token_types: Vec<String>,
}

/// The claims Warden uses, taken from a validated token only.
#[derive(Clone, PartialEq)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: Option<i64>,
    pub jti: Option<String>,
    /// Short hash of `jti`, computed once per token for audit records.
    pub jti_hash: Option<String>,
    /// The identity sessions are bound to (`session::owner_of(iss, sub)`), computed once per
    /// token rather than once per request.
    pub owner: [u8; 32],
    pub scopes: Vec<String>,
    pub client_id: Option<String>,
    pub email: Option<String>,
    pub groups: Vec<String>,
    /// The token's own `act` claim, kept verbatim for delegation chains.
    pub act: Option<Value>,
    /// `cnf.jkt` (RFC 9449 §6): the token is DPoP-bound to the key with this thumbprint.
    pub cnf_jkt: Option<String>,
}

impl fmt::Debug for Claims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Identifiers are not secrets, but the jti is replay material: never print it.
        f.debug_struct("Claims")
            .field("iss", &self.iss)
            .field("sub", &self.sub)
            .field("aud", &self.aud)
            .field("exp", &self.exp)
            .field("scopes", &self.scopes)
            .field("client_id", &self.client_id)
            .field("jti", &self.jti.as_ref().map(|_| "..."))
            .field("cnf_jkt", &self.cnf_jkt)
            .finish_non_exhaustive()
    }
}

/// Why a token was refused. Every variant is an `invalid_token` 401; the variant is for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token too long")]
    TooLong,
    #[error("token is not a compact JWS")]
    Malformed,
    #[error("token header is invalid")]
    BadHeader,
    #[error("token algorithm not accepted")]
    BadAlgorithm,
    #[error("token carries a crit header")]
    CritHeader,
    #[error("token typ not accepted")]
    BadType,
    #[error("no key for the token's kid")]
    UnknownKey,
    #[error("token signed with an algorithm other than its key's")]
    AlgorithmMismatch,
    #[error("token signature invalid")]
    BadSignature,
    #[error("token claims are invalid")]
    BadClaims,
    #[error("token issuer not trusted")]
    BadIssuer,
    #[error("token audience not accepted")]
    BadAudience,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token lifetime too long")]
    LifetimeTooLong,
}

impl TokenError {
    /// Stable label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            TokenError::TooLong => "too_long",
            TokenError::Malformed => "malformed",
            TokenError::BadHeader => "bad_header",
            TokenError::BadAlgorithm => "bad_alg",
            TokenError::CritHeader => "crit",
            TokenError::BadType => "bad_typ",
            TokenError::UnknownKey => "unknown_kid",
            TokenError::AlgorithmMismatch => "alg_mismatch",
            TokenError::BadSignature => "bad_signature",
            TokenError::BadClaims => "bad_claims",
            TokenError::BadIssuer => "bad_iss",
            TokenError::BadAudience => "bad_aud",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::LifetimeTooLong => "lifetime",
        }
    }
}

/// What the header tells us before any key work.
#[derive(Debug, Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    // Present → refused. `jku`, `x5u`, `jwk`, `x5c` are ignored: keys come only from the issuer's JWKS.
    #[serde(default)]
    crit: Option<Value>,
}

/// Claims as they appear; serde's derive refuses duplicate members of these fields.
#[derive(Debug, Deserialize)]
struct RawClaims {
    iss: Option<Value>,
    sub: Option<Value>,
    aud: Option<Value>,
    exp: Option<Value>,
    nbf: Option<Value>,
    iat: Option<Value>,
    jti: Option<Value>,
    scope: Option<Value>,
    scp: Option<Value>,
    client_id: Option<Value>,
    azp: Option<Value>,
    email: Option<Value>,
    groups: Option<Value>,
    act: Option<Value>,
    cnf: Option<Value>,
}

/// The parts of a token split and decoded, before signature checking.
#[derive(Debug)]
pub struct Decoded<'t> {
    pub kid: Option<String>,
    pub alg: jsonwebtoken::Algorithm,
    pub issuer_hint: Option<String>,
    signing_input: &'t str,
    signature: &'t str,
    payload: Vec<u8>,
}

fn is_b64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Split and decode a compact JWS, checking the header. No key work happens here.
pub fn decode<'t>(
    token: &'t str,
    max_len: usize,
    policy_types: &[String],
) -> Result<Decoded<'t>, TokenError> {
    if token.len() > max_len {
        return Err(TokenError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    if h.is_empty()
        || p.is_empty()
        || s.is_empty()
        || !is_b64url(h)
        || !is_b64url(p)
        || !is_b64url(s)
    {
        return Err(TokenError::Malformed);
    }
    let header_bytes = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| TokenError::Malformed)?;
    let header_text = std::str::from_utf8(&header_bytes).map_err(|_| TokenError::BadHeader)?;
    let header: RawHeader = serde_json::from_str(header_text).map_err(|_| TokenError::BadHeader)?;
    if header.crit.is_some() {
        return Err(TokenError::CritHeader);
    }
    let alg = parse_alg(&header.alg).ok_or(TokenError::BadAlgorithm)?;
    if !policy_types.is_empty() {
        let typ = header.typ.as_deref().map(str::to_ascii_lowercase);
        let typ = typ
            .as_deref()
            .map(|t| t.strip_prefix("application/").unwrap_or(t));
        match typ {
            Some(t) if policy_types.iter().any(|a| a == t) => {}
            _ => return Err(TokenError::BadType),
        }
    }
    let payload = URL_SAFE_NO_PAD
        .decode(p)
        .map_err(|_| TokenError::Malformed)?;
    // Peek at `iss` to pick the issuer; it is checked again after the signature.
    let issuer_hint = serde_json::from_slice::<RawClaims>(&payload)
        .ok()
        .and_then(|c| c.iss)
        .and_then(|v| v.as_str().map(str::to_owned));
    Ok(Decoded {
        kid: header.kid,
        alg,
        issuer_hint,
        signing_input: &token[..h.len() + 1 + p.len()],
        signature: s,
        payload,
    })
}

fn num(v: &Option<Value>) -> Result<Option<i64>, TokenError> {
    match v {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or(TokenError::BadClaims),
        Some(_) => Err(TokenError::BadClaims),
    }
}

fn opt_str(v: Option<Value>) -> Result<Option<String>, TokenError> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(TokenError::BadClaims),
    }
}

fn str_list(v: Option<Value>, split_spaces: bool) -> Result<Vec<String>, TokenError> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::String(s)) if split_spaces => Ok(s
            .split(' ')
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect()),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(a)) => a
            .into_iter()
            .map(|x| match x {
                Value::String(s) => Ok(s),
                _ => Err(TokenError::BadClaims),
            })
            .collect(),
        Some(_) => Err(TokenError::BadClaims),
    }
}

/// Verify the signature with `keys` and check every claim against `policy` at time `now` (Unix seconds).
pub fn verify(
    decoded: &Decoded<'_>,
    keys: &KeySet,
    policy: &ValidationPolicy,
    now: i64,
) -> Result<Claims, TokenError> {
    let key = keys
        .find(decoded.kid.as_deref())
        .ok_or(TokenError::UnknownKey)?;
    if key.alg != decoded.alg {
        return Err(TokenError::AlgorithmMismatch);
    }
    let ok = jsonwebtoken::crypto::verify(
        decoded.signature,
        decoded.signing_input.as_bytes(),
        &key.key,
        key.alg,
    )
    .map_err(|_| TokenError::BadSignature)?;
    if !ok {
        return Err(TokenError::BadSignature);
    }
    check_claims(&decoded.payload, policy, now)
}

/// Claim rules, separated so they are testable without keys.
pub fn check_claims(
    payload: &[u8],
    policy: &ValidationPolicy,
    now: i64,
) -> Result<Claims, TokenError> {
    let text = std::str::from_utf8(payload).map_err(|_| TokenError::BadClaims)?;
    let raw: RawClaims = serde_json::from_str(text).map_err(|_| TokenError::BadClaims)?;
    let iss = match raw.iss {
        Some(Value::String(s)) => s,
        _ => return Err(TokenError::BadIssuer),
    };
    if iss != policy.issuer {
        return Err(TokenError::BadIssuer);
    }
    let sub = match raw.sub {
        Some(Value::String(s)) if !s.is_empty() => s,
        _ => return Err(TokenError::BadClaims),
    };
    let aud = match raw.aud {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) if !a.is_empty() => {
            let mut out = Vec::with_capacity(a.len());
            for x in a {
                match x {
                    Value::String(s) => out.push(s),
                    _ => return Err(TokenError::BadAudience),
                }
            }
            out
        }
        _ => return Err(TokenError::BadAudience),
    };
    if !aud.iter().any(|a| policy.audiences.iter().any(|p| p == a)) {
        return Err(TokenError::BadAudience);
    }
    let exp = num(&raw.exp)?.ok_or(TokenError::BadClaims)?;
    if now >= exp.saturating_add(policy.leeway_secs) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = num(&raw.nbf)?
        && nbf > now.saturating_add(policy.leeway_secs)
    {
        return Err(TokenError::NotYetValid);
    }
    let iat = num(&raw.iat)?;
    if let Some(iat) = iat
        && iat > now.saturating_add(policy.leeway_secs)
    {
        return Err(TokenError::NotYetValid);
    }
    let start = iat.unwrap_or(now).min(now);
    if exp.saturating_sub(start) > policy.max_lifetime_secs {
        return Err(TokenError::LifetimeTooLong);
    }
    let mut scopes = str_list(raw.scope, true)?;
    scopes.extend(str_list(raw.scp, true)?);
    let client_id = match opt_str(raw.client_id)? {
        Some(c) => Some(c),
        None => opt_str(raw.azp)?,
    };
    let act = match raw.act {
        None => None,
        Some(v @ Value::Object(_)) => Some(v),
        Some(_) => return Err(TokenError::BadClaims),
    };
    // A confirmation Warden cannot check (mTLS `x5t#S256`, a raw `jwk`) is refused, not ignored:
    // a sender-constrained token must never pass as a bearer one.
    let cnf_jkt = match raw.cnf {
        None => None,
        Some(Value::Object(mut m)) if m.len() == 1 => match m.remove("jkt") {
            Some(Value::String(j)) if !j.is_empty() => Some(j),
            _ => return Err(TokenError::BadClaims),
        },
        Some(_) => return Err(TokenError::BadClaims),
    };
    let jti = opt_str(raw.jti)?;
    let jti_hash = jti.as_deref().map(crate::audit::short_hash);
    let owner = crate::session::owner_of(&iss, &sub);
    Ok(Claims {
        owner,
        iss,
        sub,
        aud,
        exp,
        iat,
        jti,
        jti_hash,
        scopes,
        client_id,
        email: opt_str(raw.email)?,
        groups: str_list(raw.groups, false)?,
        act,
        cnf_jkt,
    })
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
