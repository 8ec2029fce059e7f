//! `health:` validated into a [`HealthPolicy`], at the top level (the default of every
//! destination) and inside a destination (overriding it field by field).

use super::raw::RawHealth;
use super::{duration_or, Problems};
use crate::health::HealthPolicy;

/// `raw` over `base`; each bad value is reported at its own path under `path`.
pub(super) fn validate_health(
    base: &HealthPolicy,
    raw: &RawHealth,
    path: &str,
    problems: &mut Problems,
) -> HealthPolicy {
    let duration = |value: &Option<String>, default, key: &str, problems: &mut Problems| {
        duration_or(value.as_ref(), default, &format!("{path}.{key}"), problems)
    };
    let policy = HealthPolicy {
        failing_after_failures: raw
            .failing_after_failures
            .unwrap_or(base.failing_after_failures),
        failing_error_share: raw.failing_error_share.unwrap_or(base.failing_error_share),
        window: duration(&raw.window, base.window, "window", problems),
        failing_pace: duration(
            &raw.failing_pace,
            base.failing_pace,
            "failing_pace",
            problems,
        ),
        hold_after_failures: raw.hold_after_failures.unwrap_or(base.hold_after_failures),
        hold_after: duration(&raw.hold_after, base.hold_after, "hold_after", problems),
        probe_every: duration(&raw.probe_every, base.probe_every, "probe_every", problems),
        probe_max: duration(&raw.probe_max, base.probe_max, "probe_max", problems),
    };
    if let Err((key, message)) = policy.check() {
        problems.push(&format!("{path}.{key}"), message);
    }
    policy
}
