//! The one config builder every test writes its `routes.yaml` with: a `server:` block for
//! tests (ephemeral ports for webhooks and admin, the store in a temp directory, no
//! de-duplication, a short shutdown grace), the key list, and the rest of the file as the
//! test gives it.
//!
//! ```ignore
//! let path = TestConfig::new(&dir.path().join("data"))
//!     .server("max_queue: 3")            // adds a setting, or replaces a default one
//!     .without("dedupe_window")          // the daemon's default instead of the test's `0s`
//!     .rest(&routes)                     // destinations, routes, retry, ...
//!     .write_in(dir.path());             // dir/routes.yaml
//! ```

use std::path::{Path, PathBuf};

use super::fixtures::KEY;
use super::receiver::Receiver;

/// The defaults of a test's `server:` block, in the order they are written. `data_dir` is
/// the builder's own.
const DEFAULTS: [(&str, &str); 4] = [
    ("listen", "127.0.0.1:0"),
    ("admin_listen", "127.0.0.1:0"),
    // Most tests post the same fixture several times and expect each copy delivered.
    ("dedupe_window", "0s"),
    ("shutdown_grace", "2s"),
];

/// A test config file under construction (see the module doc).
#[derive(Debug, Clone)]
pub(crate) struct TestConfig {
    data_dir: PathBuf,
    /// `server:` settings as (name, value), defaults first, then the test's own.
    server: Vec<(String, String)>,
    /// The key list line; `keys: ["test-key"]` unless `rest` has its own or `keys` set it.
    keys: Option<String>,
    rest: String,
}

impl TestConfig {
    /// The defaults with the store in `data_dir`.
    pub(crate) fn new(data_dir: &Path) -> TestConfig {
        TestConfig {
            data_dir: data_dir.to_path_buf(),
            server: DEFAULTS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            keys: None,
            rest: String::new(),
        }
    }

    /// One `server:` setting, as `"name: value"`: replaces a default of the same name (kept
    /// in its place), else is added after the defaults.
    pub(crate) fn server(mut self, setting: &str) -> TestConfig {
        let (name, value) = setting
            .split_once(':')
            .unwrap_or_else(|| panic!("a server setting is `name: value`: {setting:?}"));
        let (name, value) = (name.trim().to_string(), value.trim().to_string());
        match self.server.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.server.push((name, value)),
        }
        self
    }

    /// Several `server:` settings, one per line (indentation ignored, blank lines skipped):
    /// the form `TestDaemon::start_with_server` takes (`"  max_queue: 3\n"`).
    pub(crate) fn server_lines(self, lines: &str) -> TestConfig {
        lines
            .lines()
            .filter(|l| !l.trim().is_empty())
            .fold(self, |config, line| config.server(line))
    }

    /// Leaves a default `server:` setting out, so the daemon's own default applies.
    pub(crate) fn without(mut self, name: &str) -> TestConfig {
        self.server.retain(|(k, _)| k != name);
        self
    }

    /// The `keys:` value (a YAML flow list such as `["a", "b"]`), instead of [`KEY`].
    pub(crate) fn keys(mut self, list: &str) -> TestConfig {
        self.keys = Some(list.to_string());
        self
    }

    /// Everything after `server:` and `keys:` (retry, destinations, routes, alerts, ...).
    /// When it holds its own `keys:`, no key list is written.
    pub(crate) fn rest(mut self, yaml: &str) -> TestConfig {
        self.rest = yaml.to_string();
        self
    }

    /// The `server:` block alone. `data_dir` comes right before the first setting that is
    /// not an address or `dedupe_window`, where the tests always wrote it.
    pub(crate) fn server_text(&self) -> String {
        let mut text = String::from("server:\n");
        let data_dir = format!("  data_dir: {:?}\n", self.data_dir.display().to_string());
        let mut data_dir = Some(data_dir);
        for (name, value) in &self.server {
            if !["listen", "admin_listen", "dedupe_window"].contains(&name.as_str()) {
                text.extend(data_dir.take());
            }
            text.push_str(&format!("  {name}: {value}\n"));
        }
        text.extend(data_dir);
        text
    }

    /// The whole file.
    pub(crate) fn text(&self) -> String {
        let mut text = self.server_text();
        match &self.keys {
            Some(list) => text.push_str(&format!("keys: {list}\n")),
            None if !self.rest.contains("keys:") => text.push_str(&format!("keys: [{KEY:?}]\n")),
            None => {}
        }
        text.push_str(&self.rest);
        text
    }

    /// Writes the file at `path`.
    pub(crate) fn write(&self, path: &Path) {
        std::fs::write(path, self.text())
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// Writes `dir/routes.yaml` and returns its path.
    pub(crate) fn write_in(&self, dir: &Path) -> PathBuf {
        let path = dir.join("routes.yaml");
        self.write(&path);
        path
    }
}

/// The `server:` block of a test config with the defaults (see [`TestConfig`]).
pub(crate) fn server_block(data_dir: &Path) -> String {
    TestConfig::new(data_dir).server_text()
}

/// Writes `contents` as `dir/name` (a config given whole, a payload) and returns its path
/// as text, for a command line.
pub(crate) fn write_file(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path.display().to_string()
}

/// Destinations and routes for the retention tests: leads go to `crm`, which takes them;
/// views go to `gone`, which the test makes answer 410, so each view becomes a dead letter.
pub(crate) fn leads_delivered_views_dead(crm: &Receiver, gone: &Receiver) -> String {
    format!(
        r#"
destinations:
  crm: {{ url: "{}" }}
  gone: {{ url: "{}" }}
routes:
  - {{ name: leads, event: lead, to: [crm] }}
  - {{ name: views, event: view, to: [gone] }}
"#,
        crm.url("/crm"),
        gone.url("/gone")
    )
}
