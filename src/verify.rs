//! `X-KEY` verification: the only way to obtain a [`Verified`] request.
//!
//! Mindstamp's key is a plain shared secret, so it is compared in constant time. `subtle`'s
//! `ct_eq` returns early when lengths differ, which would leak the key's length; comparing
//! fixed-length SHA-256 digests of the presented and configured keys avoids that. Every
//! configured key is compared (no early exit), so timing does not reveal which one matched.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The accepted keys, kept only as digests so the plaintext never sits in memory dumps or logs.
#[derive(Clone)]
pub struct KeySet {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeySet({} keys)", self.digests.len())
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Why a request was not verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No `X-KEY` header.
    #[error("the X-KEY header is missing")]
    Missing,
    /// An `X-KEY` header that matches no configured key.
    #[error("the X-KEY header does not match any configured key")]
    Wrong,
}

/// Proof that a request carried a valid key; only [`KeySet::verify`] makes one.
#[derive(Debug)]
pub struct Verified<T> {
    inner: T,
}

impl<T> Verified<T> {
    /// The verified payload.
    pub fn get(&self) -> &T {
        &self.inner
    }

    /// Mutable access, e.g. to read a verified request's body.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Takes the verified payload out.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// Derives a new verified value from this one (a verified request's parsed body is as
    /// authentic as the request).
    pub fn try_map<U, E>(self, f: impl FnOnce(T) -> Result<U, E>) -> Result<Verified<U>, E> {
        f(self.inner).map(|inner| Verified { inner })
    }
}

impl KeySet {
    /// Builds a key set from the configured keys.
    pub fn new<S: AsRef<str>>(keys: &[S]) -> Self {
        KeySet {
            digests: keys.iter().map(|k| digest(k.as_ref().as_bytes())).collect(),
        }
    }

    /// How many keys are accepted (for `check` output: never the keys themselves).
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// True if no key is configured (validation refuses such configs).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Checks the presented header value and wraps `payload` as verified.
    pub fn verify<T>(
        &self,
        presented: Option<&[u8]>,
        payload: T,
    ) -> Result<Verified<T>, VerifyError> {
        let presented = presented.ok_or(VerifyError::Missing)?;
        let d = digest(presented);
        let matched = self
            .digests
            .iter()
            .fold(subtle::Choice::from(0), |acc, k| acc | k.ct_eq(&d));
        if bool::from(matched) {
            Ok(Verified { inner: payload })
        } else {
            Err(VerifyError::Wrong)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_configured_key_verifies() {
        let keys = KeySet::new(&["old", "new"]);
        assert!(keys.verify(Some(b"old"), ()).is_ok());
        assert!(keys.verify(Some(b"new"), ()).is_ok());
        assert_eq!(
            keys.verify(Some(b"ne"), ()).unwrap_err(),
            VerifyError::Wrong
        );
        assert_eq!(keys.verify(Some(b""), ()).unwrap_err(), VerifyError::Wrong);
        assert_eq!(keys.verify(None, ()).unwrap_err(), VerifyError::Missing);
    }
}
