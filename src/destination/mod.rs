//! The compiled destination: what `config/` builds from a `destinations:` entry and
//! `deliver/` sends to. A leaf of the crate: it names neither the config (which compiles
//! YAML into these types) nor delivery (which uses them), so both depend on it and not on
//! each other.

pub mod auth;
pub mod classify;
pub mod format;
pub mod rate_limit;
pub mod redact;
pub mod secret;
pub mod sign;
pub mod template;
pub mod url_template;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use auth::{AuthSpec, OAuth2Spec};
pub use classify::{Classifier, StatusSet};
pub use format::{builtin_slack_name, Format, HeaderSpec, BUILTIN_SLACK};
pub use rate_limit::RateLimit;
pub use redact::{show_url, UrlView};
pub use secret::SecretString;
pub use sign::SigningKey;
pub use template::{Leaf, Node, Templates};
pub use url_template::UrlTemplate;

use crate::health::HealthPolicy;
use crate::retry::RetryPolicy;

/// A downstream endpoint, validated, with its templates compiled.
pub struct Destination {
    /// The name routes use in `to:`.
    pub name: String,
    /// Where jobs are sent (for a templated URL: its fixed part, scheme to first template).
    pub url: reqwest::Url,
    /// `url:` with `{{ field }}`: rendered per event, each value percent-encoded.
    pub url_template: Option<UrlTemplate>,
    /// `auth:`: bearer, basic or OAuth2 credentials (never shown).
    pub auth: Option<Arc<AuthSpec>>,
    /// The URL came from `${VAR}` or a file (a Slack webhook URL is a secret): never shown.
    pub url_is_secret: bool,
    /// `method:` (default POST).
    pub method: http::Method,
    /// Extra request headers, fixed or templated (may hold secrets: never logged).
    pub headers: Vec<HeaderSpec>,
    /// `format:` raw, slack or json, with its compiled templates' names.
    pub format: Format,
    /// Every compiled template of this destination (body, Slack text and blocks, headers).
    pub templates: Templates,
    /// Per-attempt timeout, connect to last body byte.
    pub timeout: Duration,
    /// Deliveries in flight at once (1 gives in-order, one-at-a-time delivery).
    pub concurrency: usize,
    /// `rate_limit:`: sends are spaced evenly so the receiver's limit is never hit.
    pub rate_limit: Option<RateLimit>,
    /// Backoff and give-up policy for this destination.
    pub retry: RetryPolicy,
    /// `retry_on`, `permanent_if_body`, `retry_if_body`: how responses are classified.
    pub classify: Classifier,
    /// `max_age:`: a job older than this (since the event arrived) is dead-lettered as stale.
    pub max_age: Option<Duration>,
    /// `sign:`: the Standard Webhooks key, when receivers verify what we send.
    pub sign: Option<SigningKey>,
    /// `health:`: when the destination counts as failing or is held, and its probes.
    pub health: HealthPolicy,
    /// Digest of the destination's definition as written (after `${VAR}` expansion).
    pub source_digest: u64,
}

impl Destination {
    /// A digest of everything that defines the destination, to tell whether a reload
    /// changed it without keeping or printing its secrets.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.url.as_str().hash(&mut h);
        self.source_digest.hash(&mut h);
        self.timeout.hash(&mut h);
        self.concurrency.hash(&mut h);
        format!("{:?}", self.retry).hash(&mut h);
        h.finish()
    }

    /// Does rendering need the parsed payload (a non-raw format or a templated header)?
    pub fn uses_templates(&self) -> bool {
        !matches!(self.format, Format::Raw)
            || self.url_template.is_some()
            || self
                .headers
                .iter()
                .any(|h| !matches!(h.value, Leaf::Literal(_)))
    }
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a token (Slack webhook URLs do) and headers carry secrets.
        f.debug_struct("Destination")
            .field("name", &self.name)
            .field("url_host", &show_url(&self.url, UrlView::Host))
            .field("method", &self.method)
            .field("format", &self.format.to_string())
            .field("headers", &self.headers.len())
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .field("rate_limit", &self.rate_limit)
            .field("retry", &self.retry)
            .field("max_age", &self.max_age)
            .field("signed", &self.sign.is_some())
            .field("auth", &self.auth)
            .finish()
    }
}
