//! `routes.yaml`: parsing, `${VAR}` expansion and validation into checked types.
//!
//! Loading goes text -> `serde_yaml::Value` -> expanded `Value` -> per-section raw structs
//! (`raw`) -> a validated [`Config`]. Each section and each route is deserialized on its
//! own, so one run reports every problem in the file, each with its line and column (from
//! [`locate::PositionIndex`]) and the route or destination it belongs to. A config with any
//! problem is refused whole: the daemon never runs half-configured.

mod alerts;
pub mod condition;
#[cfg(test)]
mod condition_tests;
mod destination;
mod expand;
mod health;
mod locate;
mod raw;
mod routes;
mod server;
mod unknown_fields;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_yaml::Value;

pub use alerts::{validate_expect, AlertEvent, AlertSettings, Expectation};
pub use expand::{Env, ProcessEnv};
pub use locate::Position;
pub use raw::{OneOrMany, RawRoute};
pub use server::{admin_endpoint, SecretString, ServerSettings, DEFAULT_ADMIN_LISTEN};

use crate::deliver::attempt::Classifier;
use crate::deliver::format::{Format, HeaderSpec};
use crate::deliver::pace::RateLimit;
use crate::deliver::sign::SigningKey;
use crate::deliver::template::Templates;
use crate::event::EventKind;
use crate::health::HealthPolicy;
use crate::retry::RetryPolicy;
use crate::route::RuleSet;
use crate::verify::KeySet;

/// The key the repository's example `routes.yaml` falls back to, documented in the README
/// so a first webhook can be sent by hand. Anyone can read it, so a config that accepts it
/// is warned about loudly, and refused when the webhook listener is not on loopback.
pub const DEVELOPMENT_KEY: &str = "dev-only-insecure-key";

/// What to do about a missing key, appended to every problem with `keys:`, so the operator
/// of a fresh install (whose config asks for `${MINDSTAMP_WEBHOOK_KEY}`) reads where it goes.
pub const CONFIGURE_A_KEY: &str = "configure a key: the X-KEY value Mindstamp sends, in the variable this entry names (for the service: a MINDSTAMP_WEBHOOK_KEY=... line in /etc/hookrouter/env, then `systemctl restart hookrouter`)";

/// A validated configuration: everything `serve` needs, nothing left to check.
#[derive(Debug)]
pub struct Config {
    /// The file this was read from, for messages and reloads.
    pub source: PathBuf,
    /// Listener and store settings.
    pub server: ServerSettings,
    /// Accepted `X-KEY` values (as digests only).
    pub keys: KeySet,
    /// Destinations by name; jobs refer to them by name so a reload can change them.
    pub destinations: BTreeMap<String, Arc<Destination>>,
    /// Compiled routes, in file order.
    pub rules: RuleSet,
    /// `health:`: the thresholds every destination has unless it sets its own.
    pub health: HealthPolicy,
    /// `alerts:`: where alerts go, if anywhere.
    pub alerts: Option<AlertSettings>,
    /// `expect:` at the top level: traffic expected per kind.
    pub expect: BTreeMap<EventKind, Expectation>,
    /// Things that are allowed but dangerous (the development key on loopback), located
    /// like problems; `check` prints them and `serve` logs them at start and on reload.
    pub warnings: Vec<LocatedProblem>,
}

/// A downstream endpoint, validated, with its templates compiled.
pub struct Destination {
    /// The name routes use in `to:`.
    pub name: String,
    /// Where jobs are sent.
    pub url: reqwest::Url,
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
            || self
                .headers
                .iter()
                .any(|h| !matches!(h.value, crate::deliver::template::Leaf::Literal(_)))
    }
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a token (Slack webhook URLs do) and headers carry secrets.
        f.debug_struct("Destination")
            .field("name", &self.name)
            .field("url_host", &self.url.host_str())
            .field("method", &self.method)
            .field("format", &self.format.to_string())
            .field("headers", &self.headers.len())
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .field("rate_limit", &self.rate_limit)
            .field("retry", &self.retry)
            .field("max_age", &self.max_age)
            .field("signed", &self.sign.is_some())
            .finish()
    }
}

/// Why a config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The config path as given.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid YAML, or not a mapping at the top.
    #[error("{file}:{line}:{col}: {message}")]
    Syntax {
        /// The config path as given.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// What the parser said.
        message: String,
    },
    /// The file parsed but has one or more problems.
    #[error("{}", render_problems(problems))]
    Invalid {
        /// Every problem found, in file order.
        problems: Vec<LocatedProblem>,
    },
}

fn render_problems(problems: &[LocatedProblem]) -> String {
    problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// One problem with its place: `routes.yaml:12:5: route "x": match.percentage: message`.
#[derive(Debug, Clone)]
pub struct LocatedProblem {
    /// The config path as given.
    pub file: String,
    /// Line and column, when the node could be found.
    pub position: Option<Position>,
    /// `route "name": field` or `server.listen`.
    pub label: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LocatedProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(p) => write!(f, "{}:{}:{}: ", self.file, p.line, p.col)?,
            None => write!(f, "{}: ", self.file)?,
        }
        write!(f, "{}: {}", self.label, self.message)
    }
}

/// Problems collected during validation, each at a dotted path into the file, and what
/// must never appear in them: every value that came from `${VAR}` or `{ file: }`.
#[derive(Default)]
pub struct Problems {
    items: Vec<(String, String)>,
    /// Paths whose values were expanded, with where the value came from (`${K}`).
    secret_paths: HashMap<String, String>,
    /// Text put in by expansion (a variable's value, a file's contents) and its origin.
    secret_values: Vec<(String, String)>,
}

impl fmt::Debug for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Problems")
            .field("items", &self.items)
            .field("secret_paths", &self.secret_paths)
            .field("secret_values", &self.secret_values.len())
            .finish()
    }
}

/// Expanded text shorter than this is not scrubbed from messages word by word (it would
/// garble them; such a value is no secret); the field it fills is still never shown.
const MIN_SCRUBBED_LEN: usize = 4;

impl Problems {
    /// Remembers that the value at `path` came from `origin` (`${K}`, `the file /x`).
    pub fn secret_path(&mut self, path: &str, origin: String) {
        self.secret_paths.insert(path.to_string(), origin);
    }

    /// Remembers text that expansion put into the config, so no message shows it.
    pub fn secret_value(&mut self, value: String, origin: String) {
        if !value.is_empty() {
            self.secret_values.push((value, origin));
        }
    }

    /// Where the value at `path` (or the expanded value `path` is inside) came from, if it
    /// was expanded. Messages about a mapping around one (`missing field`) quote no value;
    /// [`Problems::scrub`] still guards them.
    fn secret_origin(&self, path: &str) -> Option<&str> {
        self.secret_paths
            .iter()
            .find(|(p, _)| p.as_str() == path || path.starts_with(&format!("{p}.")))
            .map(|(_, origin)| origin.as_str())
    }

    /// `message` with every expanded value in it (as is, or escaped as `{:?}` prints it)
    /// replaced by the name of where it came from: the last guard, for messages that quote
    /// what they found.
    fn scrub(&self, message: String) -> String {
        let mut message = message;
        let mut values: Vec<&(String, String)> = self
            .secret_values
            .iter()
            .filter(|(v, _)| v.len() >= MIN_SCRUBBED_LEN)
            .collect();
        // Longest first, so a value containing another is replaced whole.
        values.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
        for (value, origin) in values {
            let shown = format!("<value of {origin}>");
            let escaped = format!("{value:?}");
            let escaped = &escaped[1..escaped.len() - 1];
            if escaped != value.as_str() {
                message = message.replace(escaped, &shown);
            }
            message = message.replace(value.as_str(), &shown);
        }
        message
    }

    /// Records `message` about the node at `path` (`routes.0.match.percentage`).
    pub fn push(&mut self, path: &str, message: impl Into<String>) {
        self.items.push((path.to_string(), message.into()));
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// True when something was recorded at exactly `path` (a value whose `${VAR}` could not
    /// be expanded need not also be reported as malformed).
    pub fn has(&self, path: &str) -> bool {
        self.items.iter().any(|(p, _)| p == path)
    }

    /// Rewrites every message recorded at exactly `path`; true if there was one.
    fn amend(&mut self, path: &str, rewrite: impl Fn(&str) -> String) -> bool {
        let mut found = false;
        for (p, message) in &mut self.items {
            if p == path {
                *message = rewrite(message);
                found = true;
            }
        }
        found
    }
}

/// What validation of a single value needs to know: where it is and whether it is secret.
pub struct Ctx<'a> {
    /// Collects problems.
    pub problems: &'a mut Problems,
    /// Paths whose values came from `${VAR}` or a file.
    pub secrets: &'a HashSet<String>,
}

impl Ctx<'_> {
    /// Shows `value` in an error message unless it is a secret.
    pub fn show(&self, path: &str, value: &Value) -> String {
        if self.secrets.contains(path) {
            return "<secret>".to_string();
        }
        match value {
            Value::String(s) => format!("{s:?}"),
            other => serde_yaml::to_string(other)
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "?".to_string()),
        }
    }
}

impl Config {
    /// Does any route or kind have an `expect:`? Ingress notes route matches only then.
    pub fn watches_traffic(&self) -> bool {
        !self.expect.is_empty() || self.rules.routes().iter().any(|r| r.expect.is_some())
    }

    /// Reads and validates the config at `path`, expanding variables from the process
    /// environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_yaml(&text, path, &ProcessEnv)
    }

    /// Validates config `text` as if read from `path`, expanding variables from `env`.
    pub fn from_yaml(text: &str, path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let mut root = parse_yaml(text, &file)?;
        if !root.is_mapping() {
            return Err(ConfigError::Syntax {
                file,
                line: 1,
                col: 1,
                message:
                    "the config must be a mapping with server, keys, retry, destinations and routes"
                        .into(),
            });
        }
        let mut problems = Problems::default();
        let mut warnings = Problems::default();
        let secrets = expand::expand_tree(&mut root, env, &mut problems);
        let mut ctx = Ctx {
            problems: &mut problems,
            secrets: &secrets,
        };
        let config = validate(&root, path, &mut ctx, &mut warnings);
        if let Some(config) = &config {
            crate::lint::check(&root, config, &mut problems, &mut warnings);
        }
        if problems.is_empty() {
            if let Some(mut config) = config {
                if !warnings.is_empty() {
                    config.warnings = locate(text, &file, &root, warnings);
                }
                return Ok(config);
            }
        }
        Err(locate_problems(text, &file, &root, problems))
    }
}

fn locate_problems(text: &str, file: &str, root: &Value, problems: Problems) -> ConfigError {
    ConfigError::Invalid {
        problems: locate(text, file, root, problems),
    }
}

/// Gives every recorded item its line, column and label, in file order.
fn locate(text: &str, file: &str, root: &Value, problems: Problems) -> Vec<LocatedProblem> {
    let index = locate::PositionIndex::build(text);
    let mut located: Vec<LocatedProblem> = problems
        .items
        .iter()
        .map(|(path, message)| LocatedProblem {
            file: file.to_string(),
            position: index.find(path),
            label: label_for(path, root),
            message: problems.scrub(message.clone()),
        })
        .collect();
    located.sort_by_key(|p| p.position.map_or((usize::MAX, 0), |p| (p.line, p.col)));
    located
}

/// `routes.0.match.x` -> `route "name": match.x`; `destinations.crm.url` ->
/// `destination "crm": url`; anything else stays a dotted path.
fn label_for(path: &str, root: &Value) -> String {
    let mut parts = path.splitn(3, '.');
    let (section, item, rest) = (parts.next(), parts.next(), parts.next());
    match (section, item) {
        (Some("routes"), Some(idx)) => {
            let name = idx
                .parse::<usize>()
                .ok()
                .and_then(|i| root.get("routes")?.get(i)?.get("name")?.as_str());
            let who = match name {
                Some(n) => format!("route {n:?}"),
                None => format!("routes[{idx}]"),
            };
            match rest {
                Some(r) => format!("{who}: {r}"),
                None => who,
            }
        }
        (Some("destinations"), Some(name)) => match rest {
            Some(r) => format!("destination {name:?}: {r}"),
            None => format!("destination {name:?}"),
        },
        _ => path.to_string(),
    }
}

/// Deserializes `value` into `T`, reporting a failure at the exact sub-path serde reached.
///
/// serde stops at the first unknown field of a mapping; every unknown field of that
/// mapping is reported (each with a "did you mean" when one is close), then they are left
/// out and deserialization goes on, so the other problems are found in the same run.
pub fn deserialize_at<T: DeserializeOwned>(
    value: &Value,
    path: &str,
    problems: &mut Problems,
) -> Option<T> {
    let mut value = value.clone();
    // Where unknown fields were removed (the path serde reported, the field last).
    let mut cleaned: Vec<Vec<String>> = Vec::new();
    // Each round removes at least one unknown field; the bound is a guard only.
    for _ in 0..256 {
        let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(v) => return Some(v),
            Err(err) => err,
        };
        let mut full = path.to_string();
        let mut segments = Vec::new();
        for seg in err.path().iter() {
            let s = match seg {
                serde_path_to_error::Segment::Seq { index } => index.to_string(),
                serde_path_to_error::Segment::Map { key } => key.clone(),
                serde_path_to_error::Segment::Enum { variant } => variant.clone(),
                serde_path_to_error::Segment::Unknown => continue,
            };
            if !full.is_empty() {
                full.push('.');
            }
            full.push_str(&s);
            segments.push(s);
        }
        let message = err.into_inner().to_string();
        if unknown_fields::report(&mut value, &segments, path, &message, problems) {
            cleaned.push(segments);
            continue;
        }
        // `sign: { secert: x }`: "missing field `secret`" would only repeat the "did you
        // mean" already given for the misspelt field.
        if !(message.starts_with("missing field")
            && cleaned
                .iter()
                .any(|c| c.len() == segments.len() + 1 && c.starts_with(&segments)))
        {
            report_at(&full, message, problems);
        }
        return None;
    }
    None
}

/// Records serde's `message` about the node at `full`.
fn report_at(full: &str, message: String, problems: &mut Problems) {
    // serde quotes the value it could not take (`invalid type: string "..."`): for an
    // expanded value, say where it came from and what was expected instead.
    let message = match problems.secret_origin(full) {
        Some(origin) => {
            let expected = message
                .rsplit_once(", expected ")
                .map(|(_, e)| format!(", expected {e}"))
                .unwrap_or_default();
            format!(
                "the value from {origin} does not fit here{expected} (the value is not \
                 shown: values from the environment and files are secret)"
            )
        }
        None => message,
    };
    problems.push(full, message);
}

/// Parses `50ms`, `1s`, `10m`, `24h` (and combinations such as `1h 30m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("expected a duration such as 50ms, 1s, 10m or 24h, found {s:?} ({e})"))
}

fn duration_or(
    value: Option<&String>,
    default: Duration,
    path: &str,
    problems: &mut Problems,
) -> Duration {
    match value.map(|s| parse_duration(s)) {
        None => default,
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            problems.push(path, e);
            default
        }
    }
}

const TOP_LEVEL_KEYS: [&str; 8] = [
    "server",
    "keys",
    "retry",
    "health",
    "destinations",
    "routes",
    "alerts",
    "expect",
];

fn validate(
    root: &Value,
    source: &Path,
    ctx: &mut Ctx<'_>,
    warnings: &mut Problems,
) -> Option<Config> {
    if let Some(map) = root.as_mapping() {
        for key in map.keys() {
            let name = key.as_str().unwrap_or("?");
            if !TOP_LEVEL_KEYS.contains(&name) {
                let hint = crate::lint::did_you_mean(name, TOP_LEVEL_KEYS)
                    .map(|s| format!(" (did you mean {s:?}?)"))
                    .unwrap_or_default();
                ctx.problems.push(
                    name,
                    format!(
                        "unknown key {name:?}{hint}; expected one of {}",
                        TOP_LEVEL_KEYS.join(", ")
                    ),
                );
            }
        }
    }
    let server = server::validate_server(root.get("server"), ctx.problems);
    let keys = validate_keys(root.get("keys"), server.listen, ctx.problems, warnings);
    let raw_retry: raw::RawRetry = match root.get("retry") {
        Some(v) if !v.is_null() => deserialize_at(v, "retry", ctx.problems).unwrap_or_default(),
        _ => raw::RawRetry::default(),
    };
    let retry = validate_retry(&RetryPolicy::default(), &raw_retry, "retry", ctx.problems);
    let raw_health: raw::RawHealth = match root.get("health") {
        Some(v) if !v.is_null() => deserialize_at(v, "health", ctx.problems).unwrap_or_default(),
        _ => raw::RawHealth::default(),
    };
    let health = health::validate_health(
        &HealthPolicy::default(),
        &raw_health,
        "health",
        ctx.problems,
    );
    let destinations = destination::validate_all(root.get("destinations"), &retry, &health, ctx);
    // Routes may name every destination written in the file, valid or not, so one bad
    // destination is reported once rather than again at every route that uses it.
    let names: std::collections::BTreeSet<String> = root
        .get("destinations")
        .and_then(Value::as_mapping)
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let rules = routes::compile_rules(root.get("routes"), &names, ctx);
    let alerts = alerts::validate_alerts(root.get("alerts"), &names, ctx.problems);
    let expect = alerts::validate_kind_expectations(root.get("expect"), ctx.problems);
    Some(Config {
        source: source.to_path_buf(),
        server,
        keys: keys?,
        health,
        destinations,
        rules,
        alerts,
        expect,
        warnings: Vec::new(),
    })
}

/// Parses `text` as YAML; a syntax error carries the parser's line and column.
fn parse_yaml(text: &str, file: &str) -> Result<Value, ConfigError> {
    serde_yaml::from_str(text).map_err(|e| {
        let (line, col) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        ConfigError::Syntax {
            file: file.to_string(),
            line,
            col,
            message: e.to_string(),
        }
    })
}

/// `keys:`: at least one, none empty. A key that could not be expanded (its variable is
/// unset, its file unreadable) or is empty is reported with [`CONFIGURE_A_KEY`]. The
/// development key is a warning on a loopback listener and a problem on any other.
fn validate_keys(
    value: Option<&Value>,
    listen: std::net::SocketAddr,
    problems: &mut Problems,
    warnings: &mut Problems,
) -> Option<KeySet> {
    let Some(value) = value else {
        problems.push(
            "keys",
            format!("at least one key is required; {CONFIGURE_A_KEY}"),
        );
        return None;
    };
    // Expansion has already said what is wrong with such a key; add what to do.
    let count = value.as_sequence().map_or(0, Vec::len);
    let mut unexpanded = false;
    for i in 0..count {
        unexpanded |= problems.amend(&format!("keys.{i}"), |m| format!("{m}; {CONFIGURE_A_KEY}"));
    }
    if unexpanded {
        return None;
    }
    let keys: Vec<String> = deserialize_at(value, "keys", problems)?;
    if keys.is_empty() {
        problems.push(
            "keys",
            format!("at least one key is required; {CONFIGURE_A_KEY}"),
        );
        return None;
    }
    for (i, k) in keys.iter().enumerate() {
        let path = format!("keys.{i}");
        if k.is_empty() {
            problems.push(&path, format!("a key must not be empty; {CONFIGURE_A_KEY}"));
        } else if k == DEVELOPMENT_KEY && !listen.ip().is_loopback() {
            problems.push(
                &path,
                format!(
                    "{DEVELOPMENT_KEY:?} is the documented development key, which anyone can read, and server.listen ({listen}) is not a loopback address; refusing to accept webhooks with it; {CONFIGURE_A_KEY}"
                ),
            );
        } else if k == DEVELOPMENT_KEY {
            warnings.push(
                &path,
                format!(
                    "WARNING: {DEVELOPMENT_KEY:?} is the documented development key: anyone who has read the README can send webhooks with it. Fine on loopback for trying hookrouter out; before server.listen leaves loopback (where serve refuses this key), {CONFIGURE_A_KEY}"
                ),
            );
        }
    }
    Some(KeySet::new(&keys))
}

fn validate_retry(
    base: &RetryPolicy,
    raw: &raw::RawRetry,
    path: &str,
    problems: &mut Problems,
) -> RetryPolicy {
    let policy = RetryPolicy {
        initial_interval: duration_or(
            raw.initial_interval.as_ref(),
            base.initial_interval,
            &format!("{path}.initial_interval"),
            problems,
        ),
        multiplier: raw.multiplier.unwrap_or(base.multiplier),
        max_interval: duration_or(
            raw.max_interval.as_ref(),
            base.max_interval,
            &format!("{path}.max_interval"),
            problems,
        ),
        max_elapsed: duration_or(
            raw.max_elapsed.as_ref(),
            base.max_elapsed,
            &format!("{path}.max_elapsed"),
            problems,
        ),
        randomization_factor: base.randomization_factor,
    };
    if let Err(e) = policy.check() {
        problems.push(path, e);
    }
    policy
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let env = HashMap::from([("KEY".to_string(), "k1".to_string())]);
        Config::from_yaml(text, Path::new("routes.yaml"), &env)
    }

    const GOOD: &str = r#"
keys: ["${KEY}"]
retry: { initial_interval: 50ms }
destinations:
  crm:
    url: http://127.0.0.1:1/hook
    headers: { Authorization: "Bearer x" }
routes:
  - name: leads
    event: lead
    to: [crm]
"#;

    #[test]
    fn a_good_config_gets_defaults() {
        let c = load(GOOD).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.server.max_body_bytes, 1024 * 1024);
        assert_eq!(c.destinations["crm"].timeout, Duration::from_secs(10));
        assert_eq!(
            c.destinations["crm"].retry.initial_interval,
            Duration::from_millis(50)
        );
        assert_eq!(c.destinations["crm"].retry.multiplier, 2.0);
    }

    #[test]
    fn every_problem_is_reported_with_line_and_route() {
        let text = r#"keys: [k]
server:
  listen: nowhere
destinations:
  crm:
    url: ftp://x
routes:
  - name: a
    to: [nope]
  - name: a
    to: [crm]
    match:
      percentage: { gte: high }
"#;
        let err = load(text).unwrap_err().to_string();
        assert!(
            err.contains("routes.yaml:3:3: server.listen: expected an address"),
            "{err}"
        );
        assert!(
            err.contains("routes.yaml:6:5: destination \"crm\": url: expected an http"),
            "{err}"
        );
        assert!(
            err.contains(
                "routes.yaml:9:10: route \"a\": to.0: unknown destination \"nope\" (defined: crm)"
            ),
            "{err}"
        );
        assert!(
            err.contains("routes.yaml:10:5: route \"a\": name: duplicate route name"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 5, "{err}");
        assert!(
            err.contains("routes.yaml:13:21: route \"a\": match.percentage.gte: expected a number, found \"high\""),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_field_is_reported_where_it_is() {
        let err = load("keys: [k]\nserver:\n  colour: blue\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("routes.yaml:3:3: server.colour: unknown field `colour`"),
            "{err}"
        );
        let err = load("keys: [k]\nroutes:\n  - name: r\n    to: []\n    retries: 3\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("routes.yaml:5:5: route \"r\": retries: unknown field"),
            "{err}"
        );
        // The rest of the route is still checked.
        assert!(
            err.contains(
                "routes.yaml:4:5: route \"r\": to: a route needs at least one destination"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_value_can_come_from_a_credential_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("slack_url");
        std::fs::write(&file, "https://hooks.slack.com/services/T/B/X\n").unwrap();
        let text = format!(
            "keys: [k]\ndestinations:\n  s:\n    url: {{ file: {:?} }}\n",
            file.display().to_string()
        );
        let c = load(&text).unwrap();
        // The trailing newline is trimmed.
        assert_eq!(
            c.destinations["s"].url.as_str(),
            "https://hooks.slack.com/services/T/B/X"
        );
        let huge = dir.path().join("huge");
        std::fs::write(&huge, vec![b'x'; 70 * 1024]).unwrap();
        let err = load(&text.replace("slack_url", "huge"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is larger than 65536 bytes"), "{err}");
        let missing = text.replace("slack_url", "nope");
        let err = load(&missing).unwrap_err().to_string();
        assert!(
            err.contains("destination \"s\": url: cannot read secret file"),
            "{err}"
        );
    }

    #[test]
    fn an_unset_variable_is_an_error_and_no_secret_is_printed() {
        let text = "keys: [\"${NOT_SET}\"]\ndestinations:\n  d:\n    url: \"${KEY}\"\n";
        let err = load(text).unwrap_err().to_string();
        assert!(
            err.contains("keys.0: environment variable NOT_SET is not set"),
            "{err}"
        );
        assert!(!err.contains("k1"), "{err}");
    }

    #[test]
    fn a_syntax_error_has_a_position() {
        let err = load("keys: [a\nroutes: {").unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
        assert!(err.to_string().starts_with("routes.yaml:"), "{err}");
    }
}
