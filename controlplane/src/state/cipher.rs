//! AES-256-GCM sealing of signing keys at rest, with the `kid` as associated data.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;

use super::StateError;

/// The key that seals signing keys (32 bytes). `Debug` prints nothing of it.
pub struct KeyCipher {
    key: LessSafeKey,
}

impl fmt::Debug for KeyCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyCipher(...)")
    }
}

/// Why a configured state key cannot be used (the operator's key file or variable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not base64")]
    NotBase64,
    #[error("the key must be 32 bytes, got {0}")]
    Length(usize),
    #[error("unusable AES-256 key")]
    Unusable,
}

impl KeyCipher {
    /// From base64 text (standard or URL-safe alphabet, padding optional, surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<KeyCipher, KeyError> {
        let t = text.trim();
        let engines = [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        let bytes = engines
            .iter()
            .find_map(|e| e.decode(t).ok())
            .ok_or(KeyError::NotBase64)?;
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<KeyCipher, KeyError> {
        if bytes.len() != 32 {
            return Err(KeyError::Length(bytes.len()));
        }
        let k = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| KeyError::Unusable)?;
        Ok(KeyCipher {
            key: LessSafeKey::new(k),
        })
    }

    /// `nonce || ciphertext || tag`; a fresh random 96-bit nonce per seal (keys are sealed rarely).
    pub fn seal(&self, kid: &str, plain: &[u8]) -> Result<Vec<u8>, StateError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| StateError::Key("system RNG failed".into()))?;
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(kid.as_bytes()),
                &mut buf,
            )
            .map_err(|_| StateError::Key("sealing a signing key failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    pub fn open(&self, kid: &str, sealed: &[u8]) -> Result<Vec<u8>, StateError> {
        let wrong = || {
            StateError::Key(format!(
                "signing key {kid} cannot be decrypted: state.encryption_key_file / state.encryption_key_env is not the key it was stored with"
            ))
        };
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(wrong());
        }
        let (n, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(n).map_err(|_| wrong())?;
        let mut buf = ct.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut buf)
            .map_err(|_| wrong())?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_binds_the_kid() {
        let c = KeyCipher::from_bytes(&[7u8; 32]).unwrap();
        let s = c.seal("k1", b"secret pkcs8").unwrap();
        assert!(!s.windows(12).any(|w| w == b"secret pkcs8"));
        assert_eq!(c.open("k1", &s).unwrap(), b"secret pkcs8");
        // Another kid (a row's material moved to another row) or another key: refused.
        assert!(c.open("k2", &s).is_err());
        let other = KeyCipher::from_bytes(&[8u8; 32]).unwrap();
        assert!(other.open("k1", &s).is_err());
        assert_eq!(
            KeyCipher::from_base64("c2hvcnQ=").unwrap_err(),
            KeyError::Length(5)
        );
        assert_eq!(
            KeyCipher::from_base64("not base64!").unwrap_err(),
            KeyError::NotBase64
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let again = KeyCipher::from_base64(&format!("{b64}\n")).unwrap();
        assert_eq!(again.open("k1", &s).unwrap(), b"secret pkcs8");
    }
}
