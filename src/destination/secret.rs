//! A secret value of the config (a token, a password, a URL from `${VAR}`), never shown.

use std::fmt;

/// A string that must never reach a log or an error message: its `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps `value`.
    pub fn new(value: String) -> Self {
        SecretString(value)
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Is `presented` this secret? Compared in constant time over SHA-256 digests of both:
    /// `subtle`'s `ct_eq` on the raw bytes returns early when the lengths differ, which
    /// tells an attacker the secret's length; digests are always 32 bytes.
    pub fn matches(&self, presented: &[u8]) -> bool {
        use sha2::{Digest, Sha256};
        use subtle::ConstantTimeEq;
        let ours: [u8; 32] = Sha256::digest(self.0.as_bytes()).into();
        let theirs: [u8; 32] = Sha256::digest(presented).into();
        ours.ct_eq(&theirs).into()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

#[cfg(test)]
mod tests {
    use super::SecretString;

    #[test]
    fn a_secret_matches_itself_only() {
        let s = SecretString::new("s3cret-token".into());
        assert!(s.matches(b"s3cret-token"));
        for other in [&b""[..], b"s3cret", b"s3cret-token ", b"S3cret-token", b"x"] {
            assert!(!s.matches(other), "{other:?}");
        }
    }
}
