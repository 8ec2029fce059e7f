//! A headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`),
//! for the status page's browser test. `chromedriver` runs on an ephemeral loopback port
//! and starts Chromium with a throw-away profile; both are stopped by their pids, the
//! browser's whole process tree included, even when the test fails half-way.
//!
//! Without the two programs the test is skipped with a message, except under `CI=true`,
//! where a missing browser is a failure (`.ci/run` installs them).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};

/// How long a wait for something on the page lasts.
pub(crate) const WAIT: Duration = Duration::from_secs(15);

/// A running chromedriver with one browser session.
pub(crate) struct Browser {
    pub(crate) client: Client,
    driver: Child,
    profile: tempfile::TempDir,
}

fn program(var: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    path.is_file().then_some(path)
}

/// Every descendant of `pid`, from `/proc`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                children.entry(ppid).or_default().push(child);
            }
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for c in children.get(&p).into_iter().flatten() {
            out.push(*c);
            todo.push(*c);
        }
    }
    out
}

fn kill(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-KILL")
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Browser {
    /// Starts chromedriver and a headless Chromium, or says why not: `None` (with a message)
    /// when they are not installed, a panic when they are missing under `CI=true`.
    pub(crate) async fn start() -> Option<Browser> {
        let chromium = program("CHROMIUM", "/usr/bin/chromium");
        let driver = program("CHROMEDRIVER", "/usr/bin/chromedriver");
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            let message = "Chromium or chromedriver is not installed (apt-get install chromium chromium-driver; or set CHROMIUM and CHROMEDRIVER)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true and {message}");
            }
            eprintln!("skipping the browser test: {message}");
            return None;
        };
        let profile = tempfile::tempdir().expect("profile dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = profile.path().join("chromedriver.log");
        let mut child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", driver.display()));
        let url = format!("http://127.0.0.1:{port}");
        if let Err(e) = wait_ready(&url).await {
            kill(&[child.id()]);
            let _ = child.wait();
            panic!("chromedriver did not start: {e}");
        }
        let client = match connect(&url, &chromium, profile.path()).await {
            Ok(c) => c,
            Err(e) => {
                kill(&descendants(child.id()));
                kill(&[child.id()]);
                let _ = child.wait();
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("no browser session: {e}\nchromedriver log:\n{log}");
            }
        };
        Some(Browser {
            client,
            driver: child,
            profile,
        })
    }

    /// Ends the session (Chromium quits), then stops chromedriver.
    pub(crate) async fn close(self) {
        let _ = self.client.clone().close().await;
        // Drop stops whatever is left by pid.
    }

    /// Waits until `css` matches an element and returns it.
    pub(crate) async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css:?} within {WAIT:?}: {e}"))
    }

    /// Whether `css` matches an element now.
    pub(crate) async fn exists(&self, css: &str) -> bool {
        self.client.find(Locator::Css(css)).await.is_ok()
    }

    /// Waits until the text of `css` satisfies `check`; returns it.
    pub(crate) async fn text_until(
        &self,
        css: &str,
        what: &str,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + WAIT;
        let mut last = String::new();
        loop {
            if let Ok(e) = self.client.find(Locator::Css(css)).await {
                if let Ok(t) = e.text().await {
                    if check(&t) {
                        return t;
                    }
                    last = t;
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} in {css:?}; last text {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks `css` once it is there.
    pub(crate) async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css:?}: {e}"));
    }

    /// Saves a PNG of the window to `dir/name` when `dir` is given (for the README).
    pub(crate) async fn screenshot(&self, dir: Option<&Path>, name: &str) {
        let Some(dir) = dir else { return };
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::create_dir_all(dir).expect("screenshot dir");
        std::fs::write(dir.join(name), png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium and its helpers first (they would be orphaned without chromedriver).
        let pid = self.driver.id();
        kill(&descendants(pid));
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = &self.profile;
    }
}

async fn wait_ready(url: &str) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http.get(format!("{url}/status")).send().await {
            if let Ok(v) = r.json::<serde_json::Value>().await {
                if v["value"]["ready"] == true {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{url}/status not ready within 20 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn connect(url: &str, chromium: &Path, profile: &Path) -> Result<Client, String> {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": [
                "--headless=new",
                // Tests often run as root in containers, where the sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--force-color-profile=srgb",
                "--window-size=1400,900",
                format!("--user-data-dir={}", profile.join("chromium").display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(url)
        .await
        .map_err(|e| e.to_string())
}
