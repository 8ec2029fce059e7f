//! `keys:` (with the development key's rule) and `retry:`, the two sections every
//! destination leans on.

use serde_yaml::Value;

use super::{deserialize_at, duration_or, raw, Problems, CONFIGURE_A_KEY, DEVELOPMENT_KEY};
use crate::retry::RetryPolicy;
use crate::verify::KeySet;

/// `keys:`: at least one, none empty. A key that could not be expanded (its variable is
/// unset, its file unreadable) or is empty is reported with [`CONFIGURE_A_KEY`]. The
/// development key is a warning on a loopback listener and a problem on any other.
pub(super) fn validate_keys(
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

pub(super) fn validate_retry(
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
