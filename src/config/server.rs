//! `server:`: listeners, store, housekeeping and admin settings, validated with their
//! defaults; and the CLI's narrow read of just the admin endpoint.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml::Value;

use super::{
    deserialize_at, duration_or, expand, locate_problems, parse_yaml, raw, ConfigError, Problems,
    ProcessEnv,
};

/// `server:` after validation, with defaults filled in.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Address of the webhook listener.
    pub listen: SocketAddr,
    /// Directory of the sled store.
    pub data_dir: PathBuf,
    /// Largest body accepted; bigger ones get 413 without being read whole.
    pub max_body_bytes: usize,
    /// A client must send its whole header block within this time (slow-loris guard).
    pub header_read_timeout: Duration,
    /// A client must send its whole body within this time (trickling bodies are cut off).
    pub body_read_timeout: Duration,
    /// Connections beyond this wait in the kernel's accept queue.
    pub max_connections: usize,
    /// How long shutdown waits for requests and deliveries in flight.
    pub shutdown_grace: Duration,
    /// sled's page cache size; the default 1 GiB would dominate RSS.
    pub store_cache_bytes: u64,
    /// Address of the admin API; loopback by default because it can drop and replay
    /// deliveries.
    pub admin_listen: SocketAddr,
    /// Bearer token the admin API demands when set (never logged).
    pub admin_token: Option<SecretString>,
    /// An event with the same kind, `id` and `updated_at` as one accepted within this
    /// window is answered `duplicate` and not forwarded again; zero disables the check.
    pub dedupe_window: Duration,
    /// How long delivered jobs and their events stay readable (`event show`) before they
    /// are purged; zero purges at delivery.
    pub retention: Duration,
    /// How long a dead letter waits for an operator before it is purged.
    pub dead_retention: Duration,
    /// Pending jobs beyond which ingress answers 503 instead of accepting more.
    pub max_queue: u64,
    /// Whether an event that matches no route is kept in the journal (for `retention`,
    /// listable and replayable) rather than only answered `unrouted`: a rule typo must not
    /// lose traffic for good.
    pub keep_unrouted: bool,
    /// Proxies whose `X-Forwarded-For` names the client in refusal log lines.
    pub trusted_proxies: crate::http_server::peer::TrustedProxies,
}

pub(super) fn validate_server(value: Option<&Value>, problems: &mut Problems) -> ServerSettings {
    let raw: raw::RawServer = match value {
        Some(v) if !v.is_null() => deserialize_at(v, "server", problems).unwrap_or_default(),
        _ => raw::RawServer::default(),
    };
    let listen = match raw.listen.as_deref().unwrap_or("127.0.0.1:8080").parse() {
        Ok(addr) => addr,
        Err(_) => {
            problems.push(
                "server.listen",
                format!(
                    "expected an address such as 127.0.0.1:8080, found {:?}",
                    raw.listen.as_deref().unwrap_or_default()
                ),
            );
            SocketAddr::from(([127, 0, 0, 1], 8080))
        }
    };
    let max_body_bytes = raw.max_body_bytes.unwrap_or(1024 * 1024);
    if max_body_bytes == 0 || max_body_bytes > 64 * 1024 * 1024 {
        problems.push(
            "server.max_body_bytes",
            "must be between 1 and 67108864 (64 MiB)",
        );
    }
    let max_connections = raw.max_connections.unwrap_or(1024);
    if max_connections == 0 {
        problems.push("server.max_connections", "must be at least 1");
    }
    let (admin_listen, admin_token, max_queue) = validate_admin(&raw, problems);
    require_token_off_loopback(admin_listen, admin_token.as_ref(), problems);
    ServerSettings {
        listen,
        data_dir: raw.data_dir.unwrap_or_else(|| PathBuf::from("./data")),
        max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(usize::MAX),
        header_read_timeout: duration_or(
            raw.header_read_timeout.as_ref(),
            Duration::from_secs(10),
            "server.header_read_timeout",
            problems,
        ),
        body_read_timeout: duration_or(
            raw.body_read_timeout.as_ref(),
            Duration::from_secs(30),
            "server.body_read_timeout",
            problems,
        ),
        max_connections,
        shutdown_grace: duration_or(
            raw.shutdown_grace.as_ref(),
            Duration::from_secs(10),
            "server.shutdown_grace",
            problems,
        ),
        store_cache_bytes: raw.store_cache_bytes.unwrap_or(32 * 1024 * 1024),
        admin_listen,
        admin_token,
        dedupe_window: duration_or(
            raw.dedupe_window.as_ref(),
            Duration::from_secs(24 * 3600),
            "server.dedupe_window",
            problems,
        ),
        retention: duration_or(
            raw.retention.as_ref(),
            Duration::from_secs(7 * 24 * 3600),
            "server.retention",
            problems,
        ),
        dead_retention: duration_or(
            raw.dead_retention.as_ref(),
            Duration::from_secs(30 * 24 * 3600),
            "server.dead_retention",
            problems,
        ),
        max_queue,
        keep_unrouted: raw.keep_unrouted.unwrap_or(true),
        trusted_proxies: trusted_proxies(raw.trusted_proxies.as_deref(), problems),
    }
}

fn trusted_proxies(
    raw: Option<&[String]>,
    problems: &mut Problems,
) -> crate::http_server::peer::TrustedProxies {
    let entries = raw.unwrap_or_default().iter().map(String::as_str);
    crate::http_server::peer::TrustedProxies::parse(entries).unwrap_or_else(|(i, message)| {
        problems.push(&format!("server.trusted_proxies.{i}"), message);
        Default::default()
    })
}

/// The default admin address: loopback only, never exposed unless the operator says so.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);

pub use crate::destination::SecretString;

/// Reads only `server.admin_listen` and `server.admin_token` from the config at `path`,
/// expanding `${VAR}` in those two values alone.
///
/// The CLI needs just the admin address and token; a full [`Config::load`] would demand
/// every destination secret, which the operator's shell usually does not have. With
/// `with_token` false the token is not read (nor its variable required): the operator gave
/// one on the command line.
pub fn admin_endpoint(
    path: &Path,
    with_token: bool,
) -> Result<(SocketAddr, Option<SecretString>), ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: file.clone(),
        source,
    })?;
    let root = parse_yaml(&text, &file)?;
    let pick = |key: &str| root.get("server").and_then(|s| s.get(key)).cloned();
    let mut server = serde_yaml::Mapping::new();
    let keys: &[&str] = if with_token {
        &["admin_listen", "admin_token"]
    } else {
        &["admin_listen"]
    };
    for key in keys {
        if let Some(v) = pick(key) {
            server.insert(Value::String((*key).into()), v);
        }
    }
    let mut subset = Value::Mapping(serde_yaml::Mapping::from_iter([(
        Value::String("server".into()),
        Value::Mapping(server),
    )]));
    let mut problems = Problems::default();
    expand::expand_tree(&mut subset, &ProcessEnv, &mut problems);
    let raw: raw::RawServer = subset
        .get("server")
        .and_then(|v| deserialize_at(v, "server", &mut problems))
        .unwrap_or_default();
    let (addr, token, _) = validate_admin(&raw, &mut problems);
    if problems.is_empty() {
        Ok((addr, token))
    } else {
        Err(locate_problems(&text, &file, &root, problems))
    }
}

/// An admin listener reachable from other hosts must demand a token: without one, anyone
/// who can reach the port can drop, replay and reload. Loopback stays open by default (only
/// local users reach it, and the cross-site check guards against browsers). Only the daemon's
/// full config enforces this, not the CLI's narrow read of the admin endpoint.
fn require_token_off_loopback(
    admin_listen: SocketAddr,
    admin_token: Option<&SecretString>,
    problems: &mut Problems,
) {
    if admin_token.is_none() && !admin_listen.ip().is_loopback() {
        problems.push(
            "server.admin_listen",
            "is not a loopback address, so other hosts can reach the admin API: set \
             server.admin_token (e.g. \"${HOOKROUTER_ADMIN_TOKEN}\"), or listen on 127.0.0.1",
        );
    }
}

fn validate_admin(
    raw: &raw::RawServer,
    problems: &mut Problems,
) -> (SocketAddr, Option<SecretString>, u64) {
    let admin_listen = match raw.admin_listen.as_deref().map(str::parse::<SocketAddr>) {
        None => DEFAULT_ADMIN_LISTEN,
        Some(Ok(addr)) => addr,
        Some(Err(_)) => {
            problems.push(
                "server.admin_listen",
                format!(
                    "expected an address such as 127.0.0.1:9090, found {:?}",
                    raw.admin_listen.as_deref().unwrap_or_default()
                ),
            );
            DEFAULT_ADMIN_LISTEN
        }
    };
    let admin_token = raw
        .admin_token
        .clone()
        .filter(|t| !t.is_empty())
        .map(SecretString::new);
    if raw.admin_token.as_deref() == Some("") {
        problems.push(
            "server.admin_token",
            "must not be empty (leave it out to disable)",
        );
    }
    let max_queue = raw.max_queue.unwrap_or(1_000_000);
    if max_queue == 0 {
        problems.push("server.max_queue", "must be at least 1");
    }
    (admin_listen, admin_token, max_queue)
}
