//! `routes.yaml`: parsing, `${VAR}` expansion and validation into checked types.
//!
//! Loading goes text -> `serde_yaml::Value` -> expanded `Value` -> per-section raw structs
//! (`raw`) -> a validated [`Config`]. Each section and each route is deserialized on its
//! own, so one run reports every problem in the file, each with its line and column (from
//! [`locate::PositionIndex`]) and the route or destination it belongs to. A config with any
//! problem is refused whole: the daemon never runs half-configured.

mod alerts;
mod auth;
pub mod condition;
#[cfg(test)]
mod condition_tests;
mod deserialize;
mod destination;
mod expand;
mod health;
mod keys_retry;
mod locate;
mod problems;
mod raw;
mod routes;
mod server;
#[cfg(test)]
mod tests;
mod unknown_fields;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_yaml::Value;

pub use alerts::{validate_expect, AlertEvent, AlertSettings, Expectation};
pub use deserialize::{deserialize_at, parse_duration};
pub use expand::{Env, NoEnvironment, ProcessEnv};
pub use locate::Position;
pub use problems::{ConfigError, Ctx, LocatedProblem, Problems};
pub use raw::{OneOrMany, RawRoute};
pub use server::{admin_endpoint, SecretString, ServerSettings, DEFAULT_ADMIN_LISTEN};

use deserialize::duration_or;
use keys_retry::{validate_keys, validate_retry};
use problems::{locate_all, locate_problems};

pub use crate::destination::Destination;
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

    /// `check --no-environment`: validates the config at `path` without reading any
    /// variable or secret file (see [`NoEnvironment`]); what depends on their values is
    /// not checked.
    pub fn load_without_environment(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_yaml(&text, path, &NoEnvironment)
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
        if env.placeholder().is_some() {
            // Values not read cannot be judged.
            problems.drop_about_secrets();
        }
        if problems.is_empty() {
            if let Some(mut config) = config {
                if !warnings.is_empty() {
                    config.warnings = locate_all(text, &file, &root, warnings);
                }
                return Ok(config);
            }
        }
        Err(locate_problems(text, &file, &root, problems))
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
