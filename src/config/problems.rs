//! What a refused config says: every problem recorded at its dotted path while validating
//! ([`Problems`], scrubbed of every expanded secret), then given its line, column and the
//! route or destination it belongs to ([`LocatedProblem`]) for the one [`ConfigError`].

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde_yaml::Value;

use super::locate::{self, Position};

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

    /// Forgets the problems about values that came from a variable or a file
    /// (`check --no-environment`: values not read cannot be judged).
    pub(super) fn drop_about_secrets(&mut self) {
        let items = std::mem::take(&mut self.items);
        self.items = items
            .into_iter()
            .filter(|(p, _)| self.secret_origin(p).is_none())
            .collect();
    }

    /// Where the value at `path` (or the expanded value `path` is inside) came from, if it
    /// was expanded. Messages about a mapping around one (`missing field`) quote no value;
    /// [`Problems::scrub`] still guards them.
    pub(super) fn secret_origin(&self, path: &str) -> Option<&str> {
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
    pub(super) fn amend(&mut self, path: &str, rewrite: impl Fn(&str) -> String) -> bool {
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

pub(super) fn locate_problems(
    text: &str,
    file: &str,
    root: &Value,
    problems: Problems,
) -> ConfigError {
    ConfigError::Invalid {
        problems: locate_all(text, file, root, problems),
    }
}

/// Gives every recorded item its line, column and label, in file order.
pub(super) fn locate_all(
    text: &str,
    file: &str,
    root: &Value,
    problems: Problems,
) -> Vec<LocatedProblem> {
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
