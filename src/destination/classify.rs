//! How a destination's responses are to be classified (`retry_on`, `success_on`,
//! `permanent_if_body`, `retry_if_body`), compiled; the decision itself is
//! `deliver/outcome.rs`.

use regex::Regex;

/// Statuses a destination retries: exact codes and whole classes (`"5xx"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StatusSet {
    codes: Vec<u16>,
    classes: Vec<u16>,
}

impl Default for StatusSet {
    /// `[408, 429, "5xx"]`: timeouts, rate limits and server errors.
    fn default() -> Self {
        StatusSet {
            codes: vec![408, 429],
            classes: vec![5],
        }
    }
}

impl StatusSet {
    /// An empty set, to fill with [`StatusSet::add`].
    pub fn empty() -> Self {
        StatusSet {
            codes: Vec::new(),
            classes: Vec::new(),
        }
    }

    /// Adds `429` or `"5xx"` (a number or a string); the error says what is accepted.
    pub fn add(&mut self, item: &str) -> Result<(), String> {
        let item = item.trim();
        let bad = || {
            format!("expected a status code (100-599) or a class such as \"5xx\", found {item:?}")
        };
        if let Some(class) = item.strip_suffix("xx").or_else(|| item.strip_suffix("XX")) {
            match class.parse::<u16>() {
                Ok(c @ 1..=5) => self.classes.push(c),
                _ => return Err(bad()),
            }
        } else {
            match item.parse::<u16>() {
                Ok(code @ 100..=599) => self.codes.push(code),
                _ => return Err(bad()),
            }
        }
        Ok(())
    }

    /// Is `code` in the set?
    pub fn contains(&self, code: u16) -> bool {
        self.codes.contains(&code) || self.classes.contains(&(code / 100))
    }
}

/// How a destination's responses are classified: `retry_on`, `permanent_if_body`,
/// `retry_if_body`.
#[derive(Debug, Clone, Default)]
pub struct Classifier {
    /// Non-2xx statuses that are retried; the others are permanent.
    pub retry_on: StatusSet,
    /// `success_on`: non-2xx statuses that count as delivered (HubSpot's 409 for a
    /// contact that already exists).
    pub success_on: Option<StatusSet>,
    /// A non-2xx response whose body matches is permanent, whatever its status
    /// (Slack's `channel_is_archived`).
    pub permanent_if_body: Option<Regex>,
    /// A non-2xx response whose body matches is retried, whatever its status
    /// (Salesforce's 403 `REQUEST_LIMIT_EXCEEDED`).
    pub retry_if_body: Option<Regex>,
}
