//! `rate_limit:` of a destination: how many sends per period, spaced evenly by the worker's
//! pacer (`deliver/pace.rs`).

use std::time::Duration;

/// `rate_limit: N/period`, e.g. `1/s`, `50/10s`, `600/m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// Requests allowed per period.
    pub count: u32,
    /// The period.
    pub per: Duration,
}

impl RateLimit {
    /// Parses `N/period`, where the period is `s`, `m`, `h` or a duration such as `10s`.
    pub fn parse(s: &str) -> Result<RateLimit, String> {
        let bad = || format!("expected a rate such as 1/s, 50/10s or 600/m, found {s:?}");
        let (count, per) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let per = match per.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => humantime::parse_duration(other).map_err(|_| bad())?,
        };
        if count == 0 || per.is_zero() {
            return Err(format!("{} (count and period must be above zero)", bad()));
        }
        Ok(RateLimit { count, per })
    }

    /// The spacing between two sends.
    pub fn interval(&self) -> Duration {
        self.per / self.count
    }
}
