//! A destination's `auth:`, compiled: fixed credentials (bearer, basic) or the settings of
//! an OAuth2 grant. The tokens themselves are fetched by `auth/`.

use std::fmt;

use base64::Engine as _;
use http::HeaderValue;
use sha2::{Digest, Sha256};

use super::SecretString;

/// A destination's `auth:`, validated.
pub enum AuthSpec {
    /// `bearer: { token }`, `bearer: { file }` or `bearer: "${VAR}"`: `Authorization:
    /// Bearer <token>` (the token as written, without the word Bearer).
    Bearer(SecretString),
    /// `basic: { user, password }`: `Authorization: Basic base64(user:password)`.
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: SecretString,
    },
    /// `oauth2:`: a token from the token endpoint, refreshed as needed.
    OAuth2(OAuth2Spec),
}

impl fmt::Debug for AuthSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthSpec::Bearer(_) => f.write_str("Bearer(<secret>)"),
            AuthSpec::Basic { user, .. } => write!(f, "Basic({user:?}, <secret>)"),
            AuthSpec::OAuth2(spec) => spec.fmt(f),
        }
    }
}

impl AuthSpec {
    /// The `Authorization` value of a fixed credential (bearer, basic), marked sensitive;
    /// `None` for OAuth2, whose token is added when the request is sent.
    pub fn static_header(&self) -> Option<HeaderValue> {
        let text = match self {
            AuthSpec::Bearer(token) => format!("Bearer {}", token.expose()),
            AuthSpec::Basic { user, password } => {
                let pair = format!("{user}:{}", password.expose());
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            }
            AuthSpec::OAuth2(_) => return None,
        };
        let mut value = HeaderValue::from_str(&text).ok()?;
        value.set_sensitive(true);
        Some(value)
    }

    /// `bearer`, `basic` or `oauth2`, for summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthSpec::Bearer(_) => "bearer",
            AuthSpec::Basic { .. } => "basic",
            AuthSpec::OAuth2(_) => "oauth2",
        }
    }
}

/// `auth.oauth2:` of a destination, validated.
#[derive(Clone)]
pub struct OAuth2Spec {
    /// Where tokens come from.
    pub token_url: reqwest::Url,
    /// `client_id`.
    pub client_id: String,
    /// `client_secret`.
    pub client_secret: SecretString,
    /// `refresh_token`: present, the refresh-token grant; absent, client credentials.
    pub refresh_token: Option<SecretString>,
    /// `scopes`, sent space-separated as `scope` when not empty.
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for OAuth2Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2")
            .field(
                "token_url_host",
                &super::show_url(&self.token_url, super::UrlView::Host),
            )
            .field("grant", &self.grant())
            .field("scopes", &self.scopes)
            .finish()
    }
}

impl OAuth2Spec {
    /// `refresh_token` or `client_credentials`.
    pub fn grant(&self) -> &'static str {
        if self.refresh_token.is_some() {
            "refresh_token"
        } else {
            "client_credentials"
        }
    }

    /// A digest of every setting: a reload that changes one gets a new token source.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [
            self.token_url.as_str(),
            &self.client_id,
            self.client_secret.expose(),
            self.refresh_token.as_ref().map_or("", |t| t.expose()),
            &self.scopes.join(" "),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().into()
    }
}
