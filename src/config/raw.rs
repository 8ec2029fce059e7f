//! The serde shape of `routes.yaml`, before validation.
//!
//! Every struct denies unknown fields, so a typo (`retires:`) is an error with its line
//! rather than a setting silently ignored. Durations stay strings here; `validate` parses
//! them so that each bad one is reported with its own path.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// `server:`: where to listen and where to keep the store.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub max_body_bytes: Option<u64>,
    pub header_read_timeout: Option<String>,
    pub body_read_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub shutdown_grace: Option<String>,
    pub store_cache_bytes: Option<u64>,
    pub admin_listen: Option<String>,
    pub admin_token: Option<String>,
    pub dedupe_window: Option<String>,
    pub retention: Option<String>,
    pub dead_retention: Option<String>,
    pub max_queue: Option<u64>,
    pub keep_unrouted: Option<bool>,
    pub trusted_proxies: Option<Vec<String>>,
}

/// `retry:` globally or inside a destination; each field overrides the level above.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetry {
    pub initial_interval: Option<String>,
    pub multiplier: Option<f64>,
    pub max_interval: Option<String>,
    pub max_elapsed: Option<String>,
}

/// One entry of `destinations:`. Templates and trees stay YAML here; `destination.rs`
/// compiles them so each problem gets its own path.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDestination {
    pub url: String,
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub format: Option<String>,
    pub template: Option<String>,
    pub blocks: Option<serde_yaml::Value>,
    pub body: Option<serde_yaml::Value>,
    pub timeout: Option<String>,
    pub concurrency: Option<usize>,
    pub rate_limit: Option<String>,
    pub retry: Option<RawRetry>,
    pub retry_on: Option<Vec<StatusItem>>,
    pub success_on: Option<Vec<StatusItem>>,
    pub auth: Option<serde_yaml::Value>,
    pub permanent_if_body: Option<String>,
    pub retry_if_body: Option<String>,
    pub max_age: Option<String>,
    pub sign: Option<RawSign>,
    pub health: Option<RawHealth>,
}

/// `health:` at the top level or inside a destination; each field overrides the level
/// above.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    pub failing_after_failures: Option<u32>,
    pub failing_error_share: Option<f64>,
    pub window: Option<String>,
    pub failing_pace: Option<String>,
    pub hold_after_failures: Option<u32>,
    pub hold_after: Option<String>,
    pub probe_every: Option<String>,
    pub probe_max: Option<String>,
}

/// `alerts:`: where alerts go and which ones.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAlerts {
    pub to: Vec<String>,
    pub on: Option<Vec<String>>,
    pub digest_every: Option<String>,
    pub max_per_hour: Option<u32>,
}

/// `expect:` of a route, or of a kind at the top level: at least this many events per
/// window, or an alert.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExpect {
    pub at_least: Option<u64>,
    pub per: String,
}

/// An entry of `retry_on:`: `429` or `"5xx"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum StatusItem {
    Code(u64),
    Text(String),
}

/// `sign:` of a destination.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSign {
    pub secret: String,
}

/// `event:` is one kind or a list of kinds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// `event: view`.
    One(String),
    /// `event: [view, lead]`.
    Many(Vec<String>),
}

/// One entry of `routes:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// `name:`, unique among the routes.
    pub name: String,
    /// `event:`, the kinds the route takes (all when absent).
    pub event: Option<OneOrMany>,
    /// `match:`, compiled into the route's condition tree by `config/condition.rs`.
    #[serde(rename = "match", default)]
    pub conditions: Option<serde_yaml::Mapping>,
    /// `to:`, the destinations' names.
    pub to: Vec<String>,
    /// `stop:`, no later route is tried after this one matched.
    #[serde(default)]
    pub stop: bool,
    /// `expect:`, the traffic expected on this route.
    pub expect: Option<RawExpect>,
}
