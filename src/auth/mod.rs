//! How a destination proves who we are: `auth:` with `bearer:`, `basic:` or `oauth2:`.
//!
//! Bearer and basic credentials are fixed: [`AuthSpec::static_header`] turns them into the
//! `Authorization` header when the request is rendered (so `route --render` and `send` show
//! it, as `<secret>`). OAuth2 tokens are short-lived: the [`Authorizer`] holds one
//! [`oauth2::TokenSource`] per destination, which fetches a token once for all concurrent
//! deliveries, refreshes it before it expires and after a 401, and keeps a rotated refresh
//! token durably in the store. A grant the token endpoint refuses (`invalid_grant`) is
//! reported as [`AuthError::Refused`], which delivery turns into a hold of the destination.

pub mod oauth2;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use crate::destination::url_template::encode_component;
pub use crate::destination::AuthSpec;
use crate::destination::Destination;
#[cfg(test)]
use crate::destination::SecretString;
use crate::queue::Store;
pub use oauth2::{Issued, OAuth2Spec};

/// Why no token could be had for a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// The token endpoint refused the grant itself (`invalid_grant`, `invalid_client`,
    /// `unauthorized_client`): retrying cannot help until an operator fixes the
    /// credentials, so the destination is held.
    #[error("the OAuth token endpoint refused the credentials ({error}{}); fix auth.oauth2 of this destination, reload, then release it (hookrouter destination release)", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Refused {
        /// The OAuth error code.
        error: String,
        /// `error_description`, secrets masked.
        description: Option<String>,
    },
    /// The token endpoint could not be reached or answered something else: the delivery
    /// is retried like any transient failure.
    #[error("no OAuth token: {0}")]
    Unavailable(String),
}

/// The OAuth2 token sources of every destination; cheap to clone.
#[derive(Clone)]
pub struct Authorizer {
    inner: Arc<AuthorizerInner>,
}

struct AuthorizerInner {
    client: reqwest::Client,
    store: Option<Store>,
    sources: Mutex<HashMap<String, Arc<oauth2::TokenSource>>>,
}

impl Authorizer {
    /// An authorizer that fetches tokens with `client` and keeps rotated refresh tokens in
    /// `store` (`None`: in memory only, for a one-off `send` of a client-credentials grant).
    pub fn new(client: reqwest::Client, store: Option<Store>) -> Authorizer {
        Authorizer {
            inner: Arc::new(AuthorizerInner {
                client,
                store,
                sources: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The token source of `dest`, if it uses OAuth2. A reload that changed its `oauth2:`
    /// settings gets a new source (and so a new token); an unchanged one keeps its token.
    pub fn source(&self, dest: &Destination) -> Option<Arc<oauth2::TokenSource>> {
        let Some(AuthSpec::OAuth2(spec)) = dest.auth.as_deref() else {
            return None;
        };
        let mut sources = self.inner.sources.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(source) = sources.get(&dest.name) {
            if source.fingerprint() == spec.fingerprint() {
                return Some(source.clone());
            }
        }
        let source = Arc::new(oauth2::TokenSource::new(
            dest.name.clone(),
            spec.clone(),
            self.inner.client.clone(),
            self.inner.store.clone(),
            dest.timeout,
        ));
        sources.insert(dest.name.clone(), source.clone());
        Some(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_encoded_so_they_cannot_change_the_url() {
        assert_eq!(
            encode_component("a b/c?d=e&f#g+h"),
            "a%20b%2Fc%3Fd%3De%26f%23g%2Bh"
        );
        assert_eq!(encode_component("Ada-Lovelace_1.0~"), "Ada-Lovelace_1.0~");
        assert_eq!(encode_component("José"), "Jos%C3%A9");
    }

    #[test]
    fn fixed_credentials_become_a_sensitive_header() {
        let bearer = AuthSpec::Bearer(SecretString::new("tok".into()));
        let v = bearer.static_header().unwrap();
        assert_eq!(v, "Bearer tok");
        assert!(v.is_sensitive());
        let basic = AuthSpec::Basic {
            user: "api".into(),
            password: SecretString::new("pw".into()),
        };
        assert_eq!(basic.static_header().unwrap(), "Basic YXBpOnB3");
        assert!(!format!("{bearer:?}{basic:?}").contains("tok"));
    }
}
