//! Sealed session ids: AES-256-GCM over what any replica needs to serve a session.
//!
//! The id a client holds is `base64url(kid_len ‖ kid ‖ nonce ‖ ciphertext ‖ tag)` of
//! `owner(32) ‖ issued_at(8, LE) ‖ version_len(1) ‖ version ‖ client_init`. Any shard of
//! any replica with the key ring opens it, so no sticky routing is needed. The key id is
//! authenticated (it is the AEAD's associated data, after a fixed label), nonces are random
//! (96 bits; rotate keys well before 2^32 sessions per key), and a key ring lets a new key
//! seal while older ones still open live sessions.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const LABEL: &[u8] = b"warden-session-v1\0";
/// The associated-data label of DPoP nonces: a nonce never opens as a session id, nor back.
const NONCE_LABEL: &[u8] = b"warden-dpop-nonce-v1\0";
/// Associated data of a sealed MRTR `requestState` (2026-07-28): never opens as anything else.
const STATE_LABEL: &[u8] = b"warden-mrtr-state-v1\0";
const TAG_LEN: usize = 16;
/// Ids longer than this are refused before any decoding work (a bound for hostile input).
pub const MAX_ID_LEN: usize = 8192;

/// What a sealed id carries.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    /// SHA-256 of `iss` + NUL + `sub`.
    pub owner: [u8; 32],
    pub issued_at: i64,
    pub protocol_version: String,
    /// The client's `initialize` params, replayed to upstreams when a replica opens its own
    /// upstream session for this client.
    pub client_init: Option<String>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("issued_at", &self.issued_at)
            .field("protocol_version", &self.protocol_version)
            .finish_non_exhaustive()
    }
}

/// Why a key ring could not be loaded (the operator's file or variable).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyRingError {
    #[error("session key ring is empty")]
    Empty,
    #[error("session key {index}: expected `kid:base64url(32 bytes)`")]
    Malformed { index: usize },
    #[error("session key {index}: key id must be 1-32 characters of [A-Za-z0-9._-]")]
    BadKid { index: usize },
    #[error("session key {index}: the key must be 32 bytes (base64url)")]
    BadKey { index: usize },
    #[error("session key id {0:?} appears twice")]
    Duplicate(String),
    #[error("system RNG failed")]
    Rng,
    /// A value `open` could not give back as it was: a protocol version over 255 bytes
    /// (its length is one byte) or an empty `client_init` (read back as none).
    #[error("session value cannot be sealed: protocol version over 255 bytes or empty client_init")]
    Unsealable,
}

/// The session key ring: the first key seals, every key opens.
pub struct SessionKeys {
    keys: Vec<(String, LessSafeKey)>,
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys")
            .field("kids", &self.kids())
            .finish_non_exhaustive()
    }
}

impl SessionKeys {
    /// Parse `kid:base64url(32 bytes)` entries, one per line or comma separated; blank lines
    /// and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<SessionKeys, KeyRingError> {
        let mut keys: Vec<(String, LessSafeKey)> = Vec::new();
        let entries = text
            .split(['\n', ','])
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        for (index, entry) in entries.enumerate() {
            let (kid, b64) = entry
                .split_once(':')
                .ok_or(KeyRingError::Malformed { index })?;
            let kid = kid.trim();
            if kid.is_empty()
                || kid.len() > 32
                || !kid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(KeyRingError::BadKid { index });
            }
            let raw = URL_SAFE_NO_PAD
                .decode(b64.trim().trim_end_matches('='))
                .map_err(|_| KeyRingError::BadKey { index })?;
            if raw.len() != 32 {
                return Err(KeyRingError::BadKey { index });
            }
            if keys.iter().any(|(k, _)| k == kid) {
                return Err(KeyRingError::Duplicate(kid.to_owned()));
            }
            let key =
                UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| KeyRingError::BadKey { index })?;
            keys.push((kid.to_owned(), LessSafeKey::new(key)));
        }
        if keys.is_empty() {
            return Err(KeyRingError::Empty);
        }
        Ok(SessionKeys { keys })
    }

    /// A fresh random one-key ring (a single process without configured keys).
    pub fn generate(kid: &str) -> Result<SessionKeys, KeyRingError> {
        Self::parse(&format!("{kid}:{}", Self::new_key_text()?))
    }

    /// 32 random bytes, base64url: one key for a key-ring file.
    pub fn new_key_text() -> Result<String, KeyRingError> {
        let mut raw = [0u8; 32];
        aws_lc_rs::rand::fill(&mut raw).map_err(|_| KeyRingError::Rng)?;
        Ok(URL_SAFE_NO_PAD.encode(raw))
    }

    /// Key ids in ring order (the first seals).
    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(|(k, _)| k.as_str()).collect()
    }

    /// Seal `s` with the current key. Refuses (`Unsealable`) what `open` would not give
    /// back unchanged, so every id it returns opens to exactly `s`.
    pub fn seal(&self, s: &Sealed) -> Result<String, KeyRingError> {
        let version = s.protocol_version.as_bytes();
        if version.len() > 255 || s.client_init.as_deref() == Some("") {
            return Err(KeyRingError::Unsealable);
        }
        let init = s.client_init.as_deref().unwrap_or("").as_bytes();
        let mut body = Vec::with_capacity(41 + version.len() + init.len() + TAG_LEN);
        body.extend_from_slice(&s.owner);
        body.extend_from_slice(&s.issued_at.to_le_bytes());
        body.push(version.len() as u8);
        body.extend_from_slice(version);
        body.extend_from_slice(init);
        self.seal_envelope(LABEL, body)
    }

    /// Open an id sealed by any key of the ring; `None` for anything else (forged, altered,
    /// sealed by a key no longer in the ring, or not an id at all).
    pub fn open(&self, id: &str) -> Option<Sealed> {
        if id.len() > MAX_ID_LEN {
            return None;
        }
        let plain = self.open_envelope(LABEL, id)?;
        let plain = plain.as_slice();
        let owner: [u8; 32] = plain.get(..32)?.try_into().ok()?;
        let issued_at = i64::from_le_bytes(plain.get(32..40)?.try_into().ok()?);
        let vlen = usize::from(*plain.get(40)?);
        let protocol_version = std::str::from_utf8(plain.get(41..41 + vlen)?)
            .ok()?
            .to_owned();
        let init = std::str::from_utf8(plain.get(41 + vlen..)?).ok()?;
        Some(Sealed {
            owner,
            issued_at,
            protocol_version,
            client_init: (!init.is_empty()).then(|| init.to_owned()),
        })
    }

    /// A DPoP nonce (RFC 9449 §9) issued at `now`: the time sealed under the current key with
    /// its own label, so any replica with the ring opens it and it never opens as a session id.
    pub fn seal_nonce(&self, now: i64) -> Result<String, KeyRingError> {
        self.seal_envelope(NONCE_LABEL, now.to_le_bytes().to_vec())
    }

    /// When a DPoP nonce sealed by any key of the ring was issued; `None` for anything else.
    pub fn open_nonce(&self, text: &str) -> Option<i64> {
        if text.len() > 256 {
            return None;
        }
        let plain = self.open_envelope(NONCE_LABEL, text)?;
        Some(i64::from_le_bytes(plain.as_slice().try_into().ok()?))
    }

    /// An MRTR `requestState` wrapper (see `mcp::mrtr`), sealed under the current key with its
    /// own label, so any replica with the ring opens it and nothing else opens as one.
    pub fn seal_state(&self, body: Vec<u8>) -> Result<String, KeyRingError> {
        self.seal_envelope(STATE_LABEL, body)
    }

    /// The plaintext of a `requestState` wrapper sealed by any key of the ring.
    pub fn open_state(&self, text: &str) -> Option<Vec<u8>> {
        self.open_envelope(STATE_LABEL, text)
    }

    /// `body` sealed under the current key with associated data `label ‖ kid`:
    /// base64url(kid length ‖ kid ‖ nonce ‖ ciphertext ‖ tag).
    fn seal_envelope(&self, label: &[u8], mut body: Vec<u8>) -> Result<String, KeyRingError> {
        let (kid, key) = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| KeyRingError::Rng)?;
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(label, kid).as_slice()),
            &mut body,
        )
        .map_err(|_| KeyRingError::Rng)?;
        let mut out = Vec::with_capacity(1 + kid.len() + NONCE_LEN + body.len());
        out.push(kid.len() as u8);
        out.extend_from_slice(kid.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// The plaintext of an envelope sealed with `label` by any key of the ring.
    fn open_envelope(&self, label: &[u8], text: &str) -> Option<Vec<u8>> {
        let raw = URL_SAFE_NO_PAD.decode(text).ok()?;
        let kid_len = usize::from(*raw.first()?);
        let kid = std::str::from_utf8(raw.get(1..1 + kid_len)?).ok()?;
        let nonce: [u8; NONCE_LEN] = raw
            .get(1 + kid_len..1 + kid_len + NONCE_LEN)?
            .try_into()
            .ok()?;
        let mut body = raw.get(1 + kid_len + NONCE_LEN..)?.to_vec();
        let (_, key) = self.keys.iter().find(|(k, _)| k == kid)?;
        let len = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(label, kid).as_slice()),
                &mut body,
            )
            .ok()?
            .len();
        body.truncate(len);
        Some(body)
    }
}

fn aad(label: &[u8], kid: &str) -> Vec<u8> {
    let mut a = label.to_vec();
    a.extend_from_slice(kid.as_bytes());
    a
}

#[cfg(test)]
#[path = "seal_tests.rs"]
mod tests;
