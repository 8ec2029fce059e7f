//! Standard Webhooks signatures on what hookrouter forwards, so receivers can verify that a
//! request came from us and was not replayed long after (standardwebhooks.com).
//!
//! `webhook-signature` is `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")), where
//! the key is the base64 part of a `whsec_...` secret, `id` is the delivery id (stable across
//! retries, so receivers can de-duplicate) and `timestamp` is the Unix time of the attempt.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The decoded signing key of a destination. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<secret>)")
    }
}

/// Why a `sign.secret` was refused (the message never contains the secret).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The part after `whsec_` is not base64.
    #[error("the secret must be \"whsec_\" followed by base64 (as Standard Webhooks secrets are)")]
    NotBase64,
    /// Too short to be a real key.
    #[error("the secret must decode to at least 16 bytes (it decodes to {0})")]
    TooShort(usize),
}

impl SigningKey {
    /// Parses a `whsec_...` secret (the prefix is optional, as in the reference libraries).
    pub fn parse(secret: &str) -> Result<SigningKey, KeyError> {
        let b64 = secret
            .trim()
            .strip_prefix("whsec_")
            .unwrap_or(secret.trim());
        let key = B64.decode(b64).map_err(|_| KeyError::NotBase64)?;
        if key.len() < 16 {
            return Err(KeyError::TooShort(key.len()));
        }
        Ok(SigningKey(key))
    }

    /// The `webhook-signature` value for one message.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        // HMAC accepts keys of any length, so this cannot fail; fall back to an empty
        // signature (which a receiver rejects) rather than panic.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            return String::new();
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector from the Standard Webhooks specification (also in FIELDS.md).
    #[test]
    fn the_standard_webhooks_test_vector_passes() {
        let key = SigningKey::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let sig = key.sign(
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn bad_secrets_are_refused_without_echoing_them() {
        let err = SigningKey::parse("whsec_not*base64!").unwrap_err();
        assert_eq!(err, KeyError::NotBase64);
        assert!(!err.to_string().contains("not*base64"));
        assert_eq!(
            SigningKey::parse("whsec_AAAA").unwrap_err(),
            KeyError::TooShort(3)
        );
        assert!(!format!(
            "{:?}",
            SigningKey::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap()
        )
        .contains("C2FV"));
    }
}
