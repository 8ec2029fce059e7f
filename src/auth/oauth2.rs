//! One destination's OAuth2 access token: fetched from `token_url` with the
//! client-credentials or the refresh-token grant, shared, refreshed, and its rotated
//! refresh token kept in the store.
//!
//! - **Single flight**: the state sits behind an async mutex held across the fetch, so
//!   concurrent deliveries wait for the one fetch in progress and all use its token; those
//!   that waited for a fetch that failed share its failure instead of asking again.
//! - **Expiry**: a token is used until `expires_in` minus a margin (a tenth of its
//!   lifetime, at most a minute) and then refreshed before the next request. A token
//!   without `expires_in` (Salesforce) is used until a 401.
//! - **401**: [`TokenSource::invalidate`] drops the token that was refused (only if it is
//!   still the current one, so eight concurrent 401s cause one refresh).
//! - **Rotation**: a `refresh_token` in the answer replaces ours; it is stored (synced)
//!   before the access token is handed out. The stored one is used after a restart as long
//!   as `routes.yaml` still has the refresh token it replaced; an operator who writes a new
//!   one into the config starts from that.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{encode_component, AuthError};
pub use crate::destination::auth::OAuth2Spec;
use crate::destination::SecretString;
use crate::http_client::{describe_error, mask, read_body};
use crate::queue::Store;

/// OAuth error codes that mean the credentials themselves are refused (RFC 6749 5.2), and
/// HubSpot's `status` for a revoked refresh token.
const REFUSED: [&str; 4] = [
    "invalid_grant",
    "invalid_client",
    "unauthorized_client",
    "BAD_REFRESH_TOKEN",
];
/// The longest margin before expiry at which a token is refreshed.
const MAX_MARGIN: Duration = Duration::from_secs(60);

/// An access token handed to a request.
#[derive(Clone)]
pub struct Issued {
    /// The token (the `Authorization: Bearer` value without the word Bearer).
    pub token: Arc<SecretString>,
    /// Which fetch it came from, so a 401 drops only this one.
    pub generation: u64,
    /// When to fetch another one before using it again.
    refresh_at: Option<Instant>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Issued {
    fn fresh(&self, now: Instant) -> bool {
        self.refresh_at.is_none_or(|at| now < at)
    }
}

/// What the store keeps for a destination: the refresh token the endpoint rotated to, and
/// the digest of the configured one it replaced.
#[derive(Serialize, Deserialize)]
struct StoredCredential {
    /// SHA-256 (hex) of the refresh token in the config when this one was received.
    configured: String,
    /// The refresh token to use now.
    refresh_token: String,
}

struct State {
    current: Option<Issued>,
    /// The refresh token to use (the stored rotation, or the configured one); read from
    /// the store at the first fetch.
    refresh_token: Option<String>,
    loaded: bool,
    /// The latest fetch's failure, shared with those who waited for it.
    last_error: Option<AuthError>,
    generation: u64,
}

/// One destination's token, shared by all its deliveries.
pub struct TokenSource {
    destination: String,
    spec: OAuth2Spec,
    fingerprint: [u8; 32],
    client: reqwest::Client,
    store: Option<Store>,
    timeout: Duration,
    /// Fetches finished, read before waiting for the lock (see the module doc).
    fetches: AtomicU64,
    state: tokio::sync::Mutex<State>,
}

/// The token endpoint's answer (RFC 6749 5.1 and 5.2; HubSpot adds `status`).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
    refresh_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    status: Option<String>,
    message: Option<String>,
}

impl TokenSource {
    /// A source with no token yet; the first [`TokenSource::token`] fetches one.
    pub fn new(
        destination: String,
        spec: OAuth2Spec,
        client: reqwest::Client,
        store: Option<Store>,
        timeout: Duration,
    ) -> TokenSource {
        TokenSource {
            destination,
            fingerprint: spec.fingerprint(),
            spec,
            client,
            store,
            timeout,
            fetches: AtomicU64::new(0),
            state: tokio::sync::Mutex::new(State {
                current: None,
                refresh_token: None,
                loaded: false,
                last_error: None,
                generation: 0,
            }),
        }
    }

    /// The digest of the settings this source was made from.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// A token that is not about to expire: the current one, or a new one fetched once for
    /// everyone waiting.
    pub async fn token(&self) -> Result<Issued, AuthError> {
        let seen = self.fetches.load(Ordering::Acquire);
        let mut state = self.state.lock().await;
        if let Some(issued) = state.current.as_ref().filter(|t| t.fresh(Instant::now())) {
            return Ok(issued.clone());
        }
        if self.fetches.load(Ordering::Acquire) != seen {
            if let Some(e) = &state.last_error {
                // A fetch finished while this request waited, and failed: share its answer.
                return Err(e.clone());
            }
        }
        let result = self.fetch(&mut state).await;
        self.fetches.fetch_add(1, Ordering::AcqRel);
        match result {
            Ok(issued) => {
                state.last_error = None;
                state.current = Some(issued.clone());
                Ok(issued)
            }
            Err(e) => {
                state.current = None;
                state.last_error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// The receiver answered 401 to `used`: drop it, unless a newer one replaced it.
    pub async fn invalidate(&self, used: &Issued) {
        let mut state = self.state.lock().await;
        if state
            .current
            .as_ref()
            .is_some_and(|t| t.generation == used.generation)
        {
            state.current = None;
        }
    }

    fn configured_digest(&self) -> String {
        let configured = self.spec.refresh_token.as_ref().map_or("", |t| t.expose());
        hex(&Sha256::digest(configured.as_bytes()))
    }

    /// The refresh token to use: the one stored after a rotation, if the config still has
    /// the token it replaced; else the configured one.
    fn load_refresh_token(&self, state: &mut State) {
        if state.loaded {
            return;
        }
        state.loaded = true;
        let Some(configured) = &self.spec.refresh_token else {
            return;
        };
        state.refresh_token = Some(configured.expose().to_string());
        let Some(store) = &self.store else {
            return;
        };
        match store.credential_record(&self.destination) {
            Ok(Some(bytes)) => match serde_json::from_slice::<StoredCredential>(&bytes) {
                Ok(stored) if stored.configured == self.configured_digest() => {
                    tracing::info!(destination = %self.destination, "using the refresh token the token endpoint rotated to (kept in the store)");
                    state.refresh_token = Some(stored.refresh_token);
                }
                Ok(_) => {
                    tracing::info!(destination = %self.destination, "the config has a new refresh token; the stored rotated one is not used");
                }
                Err(e) => {
                    tracing::warn!(destination = %self.destination, error = %e, "cannot read the stored refresh token; using the configured one");
                }
            },
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(destination = %self.destination, error = %e, "cannot read the stored refresh token; using the configured one");
            }
        }
    }

    /// What no message may show: the client secret and every refresh token we know.
    fn secrets(&self, state: &State) -> Vec<String> {
        let mut out = vec![self.spec.client_secret.expose().to_string()];
        out.extend(state.refresh_token.clone());
        out.extend(
            self.spec
                .refresh_token
                .as_ref()
                .map(|t| t.expose().to_string()),
        );
        out.retain(|s| s.len() >= 4);
        out.sort_by_key(|s| std::cmp::Reverse(s.len()));
        out
    }

    fn form(&self, state: &State) -> String {
        let mut fields: Vec<(&str, &str)> = vec![("grant_type", self.spec.grant())];
        if let Some(refresh) = &state.refresh_token {
            fields.push(("refresh_token", refresh));
        }
        fields.push(("client_id", &self.spec.client_id));
        fields.push(("client_secret", self.spec.client_secret.expose()));
        let scope = self.spec.scopes.join(" ");
        if !scope.is_empty() {
            fields.push(("scope", &scope));
        }
        fields
            .iter()
            .map(|(k, v)| format!("{k}={}", encode_component(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    async fn fetch(&self, state: &mut State) -> Result<Issued, AuthError> {
        self.load_refresh_token(state);
        let secrets = self.secrets(state);
        let response = self
            .client
            .post(self.spec.token_url.clone())
            .timeout(self.timeout)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(self.form(state))
            .send()
            .await
            .map_err(|e| {
                AuthError::Unavailable(format!("token endpoint: {}", describe_error(&e)))
            })?;
        let status = response.status();
        let body = read_body(response).await.unwrap_or_default();
        let answer: Option<TokenAnswer> = serde_json::from_str(&body).ok();
        let answer = match answer {
            Some(answer) if status.is_success() => answer,
            other => return Err(refusal(status, other, &secrets)),
        };
        let Some(access) = answer.access_token.filter(|t| !t.is_empty()) else {
            return Err(AuthError::Unavailable(
                "the token endpoint's answer has no access_token".into(),
            ));
        };
        if let Some(kind) = answer
            .token_type
            .as_deref()
            .filter(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err(AuthError::Unavailable(format!(
                "the token endpoint issued a {kind:?} token; only bearer tokens are supported"
            )));
        }
        if let Some(rotated) = answer.refresh_token.filter(|r| !r.is_empty()) {
            if self.spec.refresh_token.is_some() && state.refresh_token.as_ref() != Some(&rotated) {
                self.keep_rotated(&rotated);
                state.refresh_token = Some(rotated);
            }
        }
        state.generation += 1;
        let lifetime = answer.expires_in.as_ref().and_then(seconds);
        tracing::info!(destination = %self.destination, grant = self.spec.grant(), expires_in_s = lifetime.map_or(0, |d| d.as_secs()), "fetched an OAuth access token");
        Ok(Issued {
            token: Arc::new(SecretString::new(access)),
            generation: state.generation,
            refresh_at: lifetime.map(|l| Instant::now() + l - margin(l)),
        })
    }

    /// Stores the rotated refresh token, synced; a failure is logged (the token is still
    /// used in memory: after a restart the old one would be refused and the destination
    /// held, which the log explains).
    fn keep_rotated(&self, rotated: &str) {
        let Some(store) = &self.store else {
            return;
        };
        let record = StoredCredential {
            configured: self.configured_digest(),
            refresh_token: rotated.to_string(),
        };
        // Serializing two strings cannot fail.
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        match store.save_credential_record(&self.destination, &bytes) {
            Ok(()) => {
                tracing::info!(destination = %self.destination, "the token endpoint rotated the refresh token; the new one is stored")
            }
            Err(e) => {
                tracing::error!(destination = %self.destination, error = %e, "cannot store the rotated refresh token: after a restart the old one will be refused")
            }
        }
    }
}

/// The margin before expiry at which a token is refreshed.
fn margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(MAX_MARGIN)
}

/// `expires_in` as a number or a numeric string (some endpoints quote it).
fn seconds(value: &serde_json::Value) -> Option<Duration> {
    let secs = match value {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }?;
    Some(Duration::from_secs(secs))
}

/// What a failed answer means: the credentials refused, or the endpoint unavailable.
fn refusal(status: http::StatusCode, answer: Option<TokenAnswer>, secrets: &[String]) -> AuthError {
    let answer = answer.unwrap_or(TokenAnswer {
        access_token: None,
        token_type: None,
        expires_in: None,
        refresh_token: None,
        error: None,
        error_description: None,
        status: None,
        message: None,
    });
    let code = answer.error.or(answer.status);
    let description = answer
        .error_description
        .or(answer.message)
        .map(|d| mask(d, secrets));
    match code {
        Some(code) if REFUSED.contains(&code.as_str()) => AuthError::Refused {
            error: code,
            description,
        },
        Some(code) => AuthError::Unavailable(format!(
            "the token endpoint answered HTTP {status} ({code})"
        )),
        None => AuthError::Unavailable(format!("the token endpoint answered HTTP {status}")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_is_a_tenth_of_the_lifetime_at_most_a_minute() {
        assert_eq!(margin(Duration::from_secs(1800)), Duration::from_secs(60));
        assert_eq!(margin(Duration::from_secs(300)), Duration::from_secs(30));
        assert_eq!(
            seconds(&serde_json::json!("3600")),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(seconds(&serde_json::json!(-1)), None);
    }

    #[test]
    fn refused_grants_are_told_from_unavailable_endpoints() {
        let parse = |s: &str| serde_json::from_str::<TokenAnswer>(s).ok();
        let e = refusal(
            http::StatusCode::BAD_REQUEST,
            parse(r#"{"error":"invalid_grant","error_description":"token R1-secret expired"}"#),
            &["R1-secret".to_string()],
        );
        assert!(
            matches!(&e, AuthError::Refused { error, description: Some(d) } if error == "invalid_grant" && d == "token <secret> expired"),
            "{e:?}"
        );
        let hubspot = refusal(
            http::StatusCode::BAD_REQUEST,
            parse(r#"{"status":"BAD_REFRESH_TOKEN","message":"missing or invalid refresh token"}"#),
            &[],
        );
        assert!(matches!(hubspot, AuthError::Refused { .. }), "{hubspot:?}");
        let busy = refusal(http::StatusCode::SERVICE_UNAVAILABLE, None, &[]);
        assert!(matches!(busy, AuthError::Unavailable(_)), "{busy:?}");
        let other = refusal(
            http::StatusCode::BAD_REQUEST,
            parse(r#"{"error":"invalid_scope"}"#),
            &[],
        );
        assert!(matches!(other, AuthError::Unavailable(ref m) if m.contains("invalid_scope")));
    }
}
