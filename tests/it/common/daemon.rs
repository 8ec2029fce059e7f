//! The daemon in-process: `hookrouter::start` on ephemeral ports with a store in a temp
//! directory, its config written by [`TestConfig`], and requests to its two listeners.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::config::TestConfig;

/// The daemon, in-process, on an ephemeral port with a temp store.
pub(crate) struct TestDaemon {
    pub(crate) addr: SocketAddr,
    dir: Option<tempfile::TempDir>,
    pub(crate) config_path: PathBuf,
    running: Option<hookrouter::Running>,
    client: reqwest::Client,
    /// Extra `server:` lines (indented two spaces) kept across `rewrite_config`.
    server_extra: String,
}

impl TestDaemon {
    /// Starts with `rest` (keys, retry, destinations, routes) after a generated `server:`
    /// block. `rest` may use `{KEY}`-free YAML; the key list defaults to [`KEY`] when absent.
    pub(crate) async fn start(rest: &str) -> TestDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, rest).await
    }

    /// Like [`TestDaemon::start`] with an existing directory (the store in `dir/data`
    /// survives between daemons, as across a restart).
    pub(crate) async fn start_in(dir: tempfile::TempDir, rest: &str) -> TestDaemon {
        Self::start_with_server(dir, "", rest).await
    }

    /// Like [`TestDaemon::start_in`] with extra `server:` settings, each line indented two
    /// spaces (`"  max_queue: 3\n"`).
    pub(crate) async fn start_with_server(
        dir: tempfile::TempDir,
        server_extra: &str,
        rest: &str,
    ) -> TestDaemon {
        let config_path = dir.path().join("routes.yaml");
        Self::config(dir.path(), server_extra, rest).write(&config_path);
        let config = hookrouter::config::Config::load(&config_path)
            .unwrap_or_else(|e| panic!("test config is invalid:\n{e}"));
        let running = hookrouter::start(config).await.expect("daemon starts");
        TestDaemon {
            addr: running.addr,
            dir: Some(dir),
            config_path,
            running: Some(running),
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client"),
            server_extra: server_extra.to_string(),
        }
    }

    /// The admin API's base URL.
    pub(crate) fn admin_url(&self) -> String {
        format!("http://{}", self.running().admin_addr)
    }

    /// A request to the admin API: status and JSON body.
    pub(crate) async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> (u16, serde_json::Value) {
        let changes = !matches!(method, reqwest::Method::GET | reqwest::Method::HEAD);
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.admin_url()));
        if changes {
            // As the CLI does: the API refuses a state change without it.
            req = req.header("content-type", "application/json");
        }
        let resp = req.send().await.expect("request reaches the admin API");
        response_json(resp).await
    }

    /// The running daemon (store, reload).
    pub(crate) fn running(&self) -> &hookrouter::Running {
        self.running.as_ref().expect("running")
    }

    /// The directory holding the config file and the store (`data/`).
    pub(crate) fn dir(&self) -> &Path {
        self.dir.as_ref().expect("dir").path()
    }

    /// Rewrites the config file (same server block) for a reload.
    pub(crate) fn rewrite_config(&self, rest: &str) {
        Self::config(self.dir(), &self.server_extra, rest).write(&self.config_path);
    }

    /// The config of a daemon in `dir`: the store in `dir/data`, `server_extra` lines added
    /// to (or replacing) the test defaults, then `rest`.
    fn config(dir: &Path, server_extra: &str, rest: &str) -> TestConfig {
        TestConfig::new(&dir.join("data"))
            .server_lines(server_extra)
            .rest(rest)
    }

    /// POSTs `body` to `/webhooks/{kind}` with `key` (None: no X-KEY header).
    pub(crate) async fn post(
        &self,
        kind: &str,
        key: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .client
            .post(format!("http://{}/webhooks/{kind}", self.addr))
            .header("content-type", "application/json")
            .body(body);
        if let Some(k) = key {
            req = req.header("X-KEY", k);
        }
        let resp = req.send().await.expect("request reaches the daemon");
        response_json(resp).await
    }

    /// A raw request with any method and path.
    pub(crate) async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> (u16, serde_json::Value) {
        let resp = self
            .client
            .request(method, format!("http://{}{path}", self.addr))
            .send()
            .await
            .expect("request reaches the daemon");
        response_json(resp).await
    }

    /// Stops the daemon gracefully and returns its directory (to restart on the same store).
    pub(crate) async fn stop(mut self) -> tempfile::TempDir {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("clean stop");
        }
        self.dir.take().expect("dir")
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.shutdown_token().cancel();
        }
    }
}

/// Status and JSON body of a response (the body must be JSON).
pub(crate) async fn response_json(resp: reqwest::Response) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("response body");
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("response is not JSON ({e}): {text:?}"));
    (status, json)
}
