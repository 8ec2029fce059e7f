//! Shared test harness: a recording HTTP receiver with scripted replies, the daemon started
//! in-process on an ephemeral port with a temp sled store, and the real binary spawned as a
//! child process for crash tests. Everything listens on 127.0.0.1 only and is stopped on drop.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The X-KEY every test config accepts.
pub const KEY: &str = "test-key";

/// A sample payload from `tests/fixtures/` (copied from Mindstamp's documentation).
pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A sample payload as JSON, for tests that change a field.
pub fn fixture_json(name: &str) -> serde_json::Value {
    serde_json::from_slice(&fixture(name)).expect("fixture is JSON")
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Recorded {
    /// A header's value as text ("" when absent).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    /// A bare status with body "ok".
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: "ok".into(),
            delay: Duration::ZERO,
        }
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the response body.
    pub fn body(mut self, body: &str) -> Reply {
        self.body = body.into();
        self
    }

    /// Waits this long before answering.
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

struct ReceiverState {
    requests: Vec<Recorded>,
    script: VecDeque<Reply>,
    default: Reply,
}

/// An HTTP receiver on 127.0.0.1 that records every request and answers from a script
/// (then with the default reply).
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
    stop: CancellationToken,
}

impl Receiver {
    /// Starts a receiver on an ephemeral port that answers 200.
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        Receiver::serve(listener)
    }

    /// Starts a receiver on a given port (to bring a "down" destination back up).
    pub async fn start_on(addr: SocketAddr) -> Receiver {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match TcpListener::bind(addr).await {
                Ok(l) => return Receiver::serve(l),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("bind {addr}: {e}"),
            }
        }
    }

    fn serve(listener: TcpListener) -> Receiver {
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(ReceiverState {
            requests: Vec::new(),
            script: VecDeque::new(),
            default: Reply::status(200),
        }));
        let stop = CancellationToken::new();
        let (st, token) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = token.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((s, _)) => s,
                        Err(_) => continue,
                    },
                };
                let st = st.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(st.clone(), req));
                    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = token.cancelled() => {}
                    }
                });
            }
        });
        Receiver { addr, state, stop }
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Queues replies for the next requests.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().script.extend(replies);
    }

    /// Sets the reply used once the script is exhausted.
    pub fn set_default(&self, reply: Reply) {
        self.state.lock().unwrap().default = reply;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Waits until at least `n` requests arrived; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "receiver {} got {} requests, expected {n} within {timeout:?}",
                self.addr,
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops listening (the port becomes free; connections are dropped).
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn answer(
    state: Arc<Mutex<ReceiverState>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let reply = {
        let mut s = state.lock().unwrap();
        s.requests.push(Recorded {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            headers: parts.headers.clone(),
            body,
            at: Instant::now(),
        });
        let next = s.script.pop_front();
        next.unwrap_or_else(|| s.default.clone())
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() = StatusCode::from_u16(reply.status).expect("valid status");
    for (k, v) in reply.headers {
        response.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            http::HeaderValue::from_str(&v).expect("header value"),
        );
    }
    Ok(response)
}

/// The `server:` block of a test config: ephemeral ports (webhooks and admin), store in
/// `data_dir`. De-duplication (on by default) is off: most tests post the same fixture
/// several times and expect each copy to be delivered.
pub fn server_block(data_dir: &Path) -> String {
    format!(
        "server:\n  listen: 127.0.0.1:0\n  admin_listen: 127.0.0.1:0\n  dedupe_window: 0s\n  data_dir: {:?}\n  shutdown_grace: 2s\n",
        data_dir.display().to_string()
    )
}

/// Destinations and routes for the retention tests: leads go to `crm`, which takes them;
/// views go to `gone`, which the test makes answer 410, so each view becomes a dead letter.
pub fn leads_delivered_views_dead(crm: &Receiver, gone: &Receiver) -> String {
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

/// The daemon, in-process, on an ephemeral port with a temp store.
pub struct TestDaemon {
    pub addr: SocketAddr,
    dir: Option<tempfile::TempDir>,
    pub config_path: PathBuf,
    running: Option<hookrouter::Running>,
    client: reqwest::Client,
    /// Extra `server:` lines (indented two spaces) kept across `rewrite_config`.
    server_extra: String,
}

impl TestDaemon {
    /// Starts with `rest` (keys, retry, destinations, routes) after a generated `server:`
    /// block. `rest` may use `{KEY}`-free YAML; the key list defaults to [`KEY`] when absent.
    pub async fn start(rest: &str) -> TestDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, rest).await
    }

    /// Like [`TestDaemon::start`] with an existing directory (the store in `dir/data`
    /// survives between daemons, as across a restart).
    pub async fn start_in(dir: tempfile::TempDir, rest: &str) -> TestDaemon {
        Self::start_with_server(dir, "", rest).await
    }

    /// Like [`TestDaemon::start_in`] with extra `server:` settings, each line indented two
    /// spaces (`"  max_queue: 3\n"`).
    pub async fn start_with_server(
        dir: tempfile::TempDir,
        server_extra: &str,
        rest: &str,
    ) -> TestDaemon {
        let config_path = dir.path().join("routes.yaml");
        write_config(&config_path, &dir.path().join("data"), server_extra, rest);
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
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.running().admin_addr)
    }

    /// A request to the admin API: status and JSON body.
    pub async fn admin(&self, method: reqwest::Method, path: &str) -> (u16, serde_json::Value) {
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
    pub fn running(&self) -> &hookrouter::Running {
        self.running.as_ref().expect("running")
    }

    /// The directory holding the config file and the store (`data/`).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("dir").path()
    }

    /// Rewrites the config file (same server block) for a reload.
    pub fn rewrite_config(&self, rest: &str) {
        write_config(
            &self.config_path,
            &self.dir().join("data"),
            &self.server_extra,
            rest,
        );
    }

    /// POSTs `body` to `/webhooks/{kind}` with `key` (None: no X-KEY header).
    pub async fn post(
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
    pub async fn request(&self, method: reqwest::Method, path: &str) -> (u16, serde_json::Value) {
        let resp = self
            .client
            .request(method, format!("http://{}{path}", self.addr))
            .send()
            .await
            .expect("request reaches the daemon");
        response_json(resp).await
    }

    /// Stops the daemon gracefully and returns its directory (to restart on the same store).
    pub async fn stop(mut self) -> tempfile::TempDir {
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
pub async fn response_json(resp: reqwest::Response) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("response body");
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("response is not JSON ({e}): {text:?}"));
    (status, json)
}

fn write_config(path: &Path, data_dir: &Path, server_extra: &str, rest: &str) {
    let mut text = server_block(data_dir);
    if server_extra.contains("dedupe_window:") {
        text = text.replace("  dedupe_window: 0s\n", "");
    }
    text.push_str(server_extra);
    if !rest.contains("keys:") {
        text.push_str(&format!("keys: [{KEY:?}]\n"));
    }
    text.push_str(rest);
    std::fs::write(path, text).expect("write config");
}

/// Polls `check` every 10 ms until it returns true; panics with `what` after `timeout`.
pub async fn eventually(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The real `hookrouter` binary running as a child process.
pub struct DaemonProcess {
    pub addr: SocketAddr,
    /// The admin API's address, from the same log line.
    pub admin_addr: Option<SocketAddr>,
    child: Child,
    log: Arc<Mutex<String>>,
}

impl DaemonProcess {
    /// Spawns `hookrouter serve --config CONFIG` and waits until it logs that it is ready.
    pub fn spawn(config: &Path) -> DaemonProcess {
        Self::spawn_with(config, &[], &[])
    }

    /// Like [`DaemonProcess::spawn`] with extra arguments before `serve` (such as
    /// `--log-format json`) and extra environment variables (such as `NOTIFY_SOCKET`).
    pub fn spawn_with(config: &Path, args: &[&str], env: &[(&str, &str)]) -> DaemonProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hookrouter"));
        command.args(args);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env_remove("HOOKROUTER_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hookrouter");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("hookrouter is ready") {
                    if let Some(tx) = tx.take() {
                        // Text (`addr=...`) or JSON (`"addr":"..."`) logs.
                        let find = |name: &str| {
                            line.split(|c: char| c.is_whitespace() || c == ',')
                                .find_map(|w| {
                                    w.strip_prefix(&format!("{name}="))
                                        .or_else(|| w.strip_prefix(&format!("\"{name}\":")))
                                })
                                .map(|a| a.trim_matches(|c| c == '"' || c == '}'))
                                .and_then(|a| a.parse::<SocketAddr>().ok())
                        };
                        let _ = tx.send(find("addr").map(|a| (a, find("admin_addr"))));
                    }
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let (addr, admin_addr) = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(addrs)) => addrs,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "hookrouter did not become ready ({other:?}); log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        DaemonProcess {
            addr,
            admin_addr,
            child,
            log,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// `kill -9`: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for the process to exit by itself; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits (up to 20 s) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                self.kill9();
                panic!(
                    "hookrouter did not exit within 20 s of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny xorshift generator for tests that need reproducible random numbers.
pub struct Rng(pub u64);

impl Rng {
    /// Seeded from the environment variable `var` when set, else from the clock; the seed
    /// is printed, so a failing run can be replayed with `var=<seed>`.
    pub fn from_env(var: &str) -> (Rng, u64) {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        println!("{var}={seed}");
        (Rng(seed), seed)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.below(256) as u8).collect()
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}
