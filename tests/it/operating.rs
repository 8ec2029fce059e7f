//! What an operator sees when something is wrong (issue 16): start-up errors once, in plain
//! words, with the setting and a hint; journald priorities; every refusal logged with its
//! peer; metrics whose series exist before the first event; `hookrouter send`.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common;
use crate::common::{text, DaemonProcess, Receiver, Reply, TestConfig, TestDaemon, KEY};

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    common::hookrouter(args)
        .env_remove(&["JOURNAL_STREAM"])
        .envs(&[("RUST_LOG", "info")])
        .envs(env)
        .output()
}

/// A config with the webhook listener on `listen`, the store in `data_dir` and the extra
/// `server:` lines `server`; the daemon's own de-duplication and shutdown grace.
fn config(dir: &Path, listen: &str, data_dir: &str, server: &str) -> String {
    TestConfig::new(Path::new(data_dir))
        .server(&format!("listen: {listen}"))
        .without("dedupe_window")
        .without("shutdown_grace")
        .server_lines(server)
        .rest("destinations:\n  crm: { url: \"http://127.0.0.1:9/crm\" }\nroutes:\n  - { name: leads, event: lead, to: [crm] }\n")
        .write_in(dir)
        .display()
        .to_string()
}

/// The lines of `log` that contain `what`.
fn lines_with<'a>(log: &'a str, what: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(what)).collect()
}

/// Asserts that the daemon's only error is `expected`, said once, with no Rust debug text.
fn assert_once(out: &Output, expected: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(lines_with(&stderr, expected).len(), 1, "{stderr}");
    assert_eq!(lines_with(&stderr, "ERROR").len(), 1, "{stderr}");
    for debug in ["Os {", "kind:", "Error {"] {
        assert!(!stderr.contains(debug), "{debug:?} in {stderr}");
    }
}

#[test]
fn a_port_in_use_is_said_once_with_the_setting_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let data = dir.path().join("data").display().to_string();
    let path = config(dir.path(), &addr.to_string(), &data, "");
    let out = run(&["serve", "--config", &path], &[]);
    assert_once(
        &out,
        &format!(
            "server.listen {addr} is in use: another hookrouter, or another program, listens there"
        ),
    );
    assert!(text(&out.stderr).contains("stop it, or change server.listen"));
}

#[test]
fn a_second_instance_on_the_same_data_dir_names_the_first_ones_pid() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let path = config(dir.path(), "127.0.0.1:0", &data, "");
    let first = DaemonProcess::spawn(Path::new(&path));
    let out = run(&["serve", "--config", &path], &[]);
    assert_once(
        &out,
        &format!(
            "another hookrouter holds data_dir {data} (pid {}): stop it first, or give this one its own server.data_dir",
            first.pid()
        ),
    );
    drop(first);
}

#[test]
fn a_data_dir_that_cannot_be_written_names_the_uid() {
    // /sys is not writable, not even by root.
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "127.0.0.1:0", "/sys", "");
    let out = run(&["serve", "--config", &path], &[]);
    assert_once(&out, "data_dir /sys is not writable by uid ");
    assert!(
        text(&out.stderr).contains("or set server.data_dir to a directory uid "),
        "{}",
        text(&out.stderr)
    );
}

/// `serve` with standard error in a file that `JOURNAL_STREAM` names, as systemd does with
/// the journal's stream.
struct UnderJournald {
    child: std::process::Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl UnderJournald {
    fn spawn(args: &[&str]) -> UnderJournald {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stderr");
        let file = std::fs::File::create(&log).unwrap();
        let meta = file.metadata().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hookrouter"))
            .args(args)
            .env_remove("HOOKROUTER_CONFIG")
            .env("RUST_LOG", "info")
            .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        UnderJournald {
            child,
            log,
            _dir: dir,
        }
    }

    /// The log once it contains `what` (or after 20 s).
    fn wait_for(&self, what: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.contains(what) || std::time::Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to end (after SIGTERM when `stop`) and returns its log.
    fn finish(mut self, stop: bool) -> String {
        if stop {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
        }
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log).unwrap()
    }
}

/// Sends `request` (which should say `connection: close`) and returns the whole answer.
fn raw(addr: impl std::net::ToSocketAddrs, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn post(path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[test]
fn under_journald_every_line_carries_its_priority() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let path = config(dir.path(), "127.0.0.1:0", &data, "");
    let daemon = UnderJournald::spawn(&["serve", "--config", &path]);
    let ready = daemon.wait_for("hookrouter is ready");
    let addr = ready
        .split("addr=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {ready}"))
        .to_string();
    let answer = raw(&addr, &post("/webhooks/lead", "x-key: wrong\r\n", b"{}"));
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    daemon.wait_for("webhook rejected");
    let log = daemon.finish(true);
    for line in log.lines() {
        assert!(
            ["<3>", "<4>", "<6>"].iter().any(|p| line.starts_with(p)),
            "no priority: {line:?} in\n{log}"
        );
    }
    assert!(
        lines_with(&log, "hookrouter is ready")[0].starts_with("<6>"),
        "{log}"
    );
    let rejected = lines_with(&log, "webhook rejected");
    assert_eq!(rejected.len(), 1, "{log}");
    assert!(rejected[0].starts_with("<4>"), "{log}");
    // journald stamps lines itself: no time of ours.
    assert!(!log.contains("Z  INFO"), "{log}");

    // A start-up error is priority 3, in JSON too.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let path = config(dir.path(), &listen, &data, "");
    let log =
        UnderJournald::spawn(&["--log-format", "json", "serve", "--config", &path]).finish(false);
    let error = lines_with(&log, "is in use");
    assert_eq!(error.len(), 1, "{log}");
    let json = error[0].strip_prefix("<3>").expect("priority 3");
    let line: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(line["level"], "ERROR");
}

#[test]
fn a_variable_inherited_from_elsewhere_adds_no_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "127.0.0.1:0", "/sys", "");
    let out = run(&["serve", "--config", &path], &[("JOURNAL_STREAM", "1:2")]);
    assert!(text(&out.stderr).contains("ERROR"), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).starts_with('<'), "{}", text(&out.stderr));
}

#[test]
fn every_refusal_is_logged_once_with_its_code_and_peer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let path = config(
        dir.path(),
        "127.0.0.1:0",
        &data,
        "  trusted_proxies: [127.0.0.1]\n  max_body_bytes: 4096\n",
    );
    let mut daemon = DaemonProcess::spawn_with(Path::new(&path), &["--log-format", "json"], &[]);
    let addr = daemon.addr;
    let status = |request: Vec<u8>| raw(addr, &request)[9..12].to_string();
    let key = format!("x-key: {KEY}\r\n");
    assert_eq!(status(post("/webhooks/lead", &key, b"{not json")), "400");
    assert_eq!(
        status(b"GET /webhooks/lead HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec()),
        "405"
    );
    assert_eq!(
        status(post(
            "/webhooks/lead",
            "x-key: wrong\r\nx-forwarded-for: 198.51.100.7, 203.0.113.9\r\n",
            b"{}"
        )),
        "401"
    );
    assert_eq!(status(post("/webhooks/lead", &key, &[b' '; 8192])), "413");
    assert_eq!(status(post("/webhooks/lead", &key, b"[1]")), "400");
    // hyper's own refusal of a malformed head is logged too.
    let answer = raw(
        addr,
        b"POST /webhooks/lead HTTP/1.1\r\nbad header line\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let expected = [
        ("invalid_json", 400),
        ("method_not_allowed", 405),
        ("invalid_key", 401),
        ("body_too_large", 413),
        ("not_an_object", 400),
        ("bad_request", 400),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline
        && lines_with(&daemon.log(), "\"rejected\"").len() < expected.len()
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon.terminate();
    let log = daemon.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let refused: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["outcome"] == "rejected")
        .collect();
    assert_eq!(refused.len(), expected.len(), "{log}");
    for (line, (code, status)) in refused.iter().zip(expected) {
        assert_eq!(line["code"], code, "{line}");
        assert_eq!(line["status"], status, "{line}");
        assert_eq!(line["level"], "WARN", "{line}");
        assert!(
            line["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{line}"
        );
        assert!(
            line["message"].as_str().unwrap().contains("rejected")
                || line["message"].as_str().unwrap().contains("refused"),
            "{line}"
        );
    }
    // The proxy is trusted, so the client it saw is named; nobody else's header is.
    assert_eq!(refused[2]["client"], "203.0.113.9", "{}", refused[2]);
    assert!(refused[0].get("client").is_none(), "{}", refused[0]);
    assert!(
        !log.contains("wrong\""),
        "the presented key is never logged: {log}"
    );
}

fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    assert!(text.ends_with("# EOF\n"), "{text}");
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        out.insert(series.to_string(), value);
    }
    out
}

#[tokio::test]
async fn every_series_is_there_at_zero_before_the_first_event() {
    let config = "destinations:\n  crm: { url: \"http://127.0.0.1:9/crm\" }\n  slack: { url: \"http://127.0.0.1:9/slack\" }\nroutes:\n  - { name: leads, event: lead, to: [crm, slack] }\n";
    let daemon = TestDaemon::start(config).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let scrape = || async {
        let resp = client
            .get(format!("{}/metrics", daemon.admin_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        parse_metrics(&resp.text().await.unwrap())
    };
    let m = scrape().await;
    for destination in ["crm", "slack"] {
        for outcome in ["delivered", "retried", "dead"] {
            for name in [
                "hookrouter_delivery_attempts_total",
                "hookrouter_deliveries_total",
            ] {
                let series =
                    format!("{name}{{destination=\"{destination}\",outcome=\"{outcome}\"}}");
                assert_eq!(m.get(&series), Some(&0.0), "{series} in {m:#?}");
            }
        }
        let series =
            format!("hookrouter_delivery_latency_seconds_count{{destination=\"{destination}\"}}");
        assert_eq!(m.get(&series), Some(&0.0), "{series}");
    }
    for kind in ["view", "interaction", "lead"] {
        for reason in [
            "invalid_key",
            "missing_key",
            "invalid_json",
            "queue_full",
            "body_too_large",
        ] {
            let series = format!(
                "hookrouter_webhooks_rejected_total{{kind=\"{kind}\",reason=\"{reason}\"}}"
            );
            assert_eq!(m.get(&series), Some(&0.0), "{series}");
        }
        let series =
            format!("hookrouter_webhooks_received_total{{kind=\"{kind}\",outcome=\"accepted\"}}");
        assert_eq!(m.get(&series), Some(&0.0), "{series}");
    }
    let version = format!(
        "hookrouter_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(m.get(&version), Some(&1.0), "{m:#?}");
    assert!(m["hookrouter_store_size_bytes"] > 0.0, "{m:#?}");
    assert_eq!(
        m.get("hookrouter_config_last_reload_successful"),
        Some(&1.0)
    );

    // A refused reload shows; a destination added by a reload has its zeros at once.
    std::fs::write(&daemon.config_path, "keys: [").unwrap();
    assert!(daemon.running().reload().is_err());
    assert_eq!(
        scrape()
            .await
            .get("hookrouter_config_last_reload_successful"),
        Some(&0.0)
    );
    daemon.rewrite_config(&config.replace(
        "routes:",
        "  gone: { url: \"http://127.0.0.1:9/gone\" }\nroutes:",
    ));
    daemon.running().reload().unwrap();
    let m = scrape().await;
    assert_eq!(
        m.get("hookrouter_config_last_reload_successful"),
        Some(&1.0)
    );
    assert_eq!(
        m.get("hookrouter_delivery_attempts_total{destination=\"gone\",outcome=\"dead\"}"),
        Some(&0.0)
    );
    daemon.stop().await;
}

#[tokio::test]
async fn send_delivers_one_real_request_and_queues_nothing() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.yaml");
    let data = dir.path().join("data");
    std::fs::write(
        &path,
        format!(
            r#"server: {{ data_dir: {:?} }}
keys: [{KEY:?}]
destinations:
  crm:
    url: "{}"
    format: json
    body: {{ email: "{{{{ email }}}}", kind: "{{{{ event }}}}" }}
    headers: {{ Authorization: "Bearer ${{HR_SEND_TOKEN}}" }}
    sign: {{ secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }}
routes:
  - {{ name: leads, event: lead, to: [crm] }}
"#,
            data.display().to_string(),
            receiver.url("/crm")
        ),
    )
    .unwrap();
    let path = path.display().to_string();
    let env = [("HR_SEND_TOKEN", "send-token-1234")];
    let cli = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&args, &env)
        })
    };
    receiver.script([Reply::status(201)
        .header("x-request-id", "r-1")
        .body("{\"ok\":true,\"echo\":\"Bearer send-token-1234\"}")]);
    let out = cli(vec![
        "send".into(),
        "--config".into(),
        path.clone(),
        "--destination".into(),
        "crm".into(),
    ])
    .await
    .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    // The request as the destination's settings make it: the lead sample (its route's
    // kind), the JSON body, the token and the signature.
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"email": "john.doe@example.com", "kind": "lead"})
    );
    assert_eq!(got[0].header("authorization"), "Bearer send-token-1234");
    assert!(got[0].header("webhook-signature").starts_with("v1,"));
    assert_eq!(got[0].header("x-hookrouter-event"), "lead");
    // What came back, with our secret masked in it.
    assert!(stdout.contains("HTTP 201 Created"), "{stdout}");
    assert!(stdout.contains("x-request-id: r-1"), "{stdout}");
    assert!(stdout.contains("\"echo\":\"<secret>\""), "{stdout}");
    assert!(stdout.contains("authorization: <secret>"), "{stdout}");
    assert!(
        stdout.contains("a delivery would count this as delivered"),
        "{stdout}"
    );
    assert!(!stdout.contains("send-token-1234"), "{stdout}");
    assert!(!data.exists(), "send opened the store");

    // A payload file and a failing answer: exit 1, with what delivery would do.
    receiver.script([Reply::status(503).body("busy")]);
    let mut lead = common::fixture_json("lead.json");
    lead["email"] = "jane@example.com".into();
    let payload = dir.path().join("lead.json");
    std::fs::write(&payload, lead.to_string()).unwrap();
    let out = cli(vec![
        "send".into(),
        "--config".into(),
        path.clone(),
        "--destination".into(),
        "crm".into(),
        "--event".into(),
        "lead".into(),
        payload.display().to_string(),
    ])
    .await
    .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("HTTP 503"), "{stdout}");
    assert!(stdout.contains("would count this as retried"), "{stdout}");
    let got = receiver.wait_for(2, Duration::from_secs(10)).await;
    let body: serde_json::Value = serde_json::from_slice(&got[1].body).unwrap();
    assert_eq!(body["email"], "jane@example.com");

    // `email` is not in a view: the render fails, nothing is sent, exit 65.
    let out = cli(vec![
        "send".into(),
        "--config".into(),
        path.clone(),
        "--destination".into(),
        "crm".into(),
        "--event".into(),
        "view".into(),
    ])
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(65), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("template error in body.email"),
        "{}",
        text(&out.stderr)
    );

    let out = cli(vec![
        "send".into(),
        "--config".into(),
        path,
        "--destination".into(),
        "nope".into(),
    ])
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no destination \"nope\"")
            && text(&out.stderr).contains("(defined: crm)"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(receiver.requests().len(), 2);
}

#[test]
fn every_command_has_examples_in_its_help() {
    for command in [
        &["serve"][..],
        &["check"],
        &["init"],
        &["route"],
        &["send"],
        &["status"],
        &["dead"],
        &["dead", "list"],
        &["dead", "show"],
        &["dead", "retry"],
        &["dead", "drop"],
        &["event"],
        &["event", "show"],
        &["echo"],
    ] {
        let mut args = command.to_vec();
        args.push("--help");
        let out = run(&args, &[]);
        let help = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{command:?}: {}",
            text(&out.stderr)
        );
        assert!(
            help.contains("Example"),
            "no examples in {command:?} --help:\n{help}"
        );
        assert!(
            help.contains("Global options:") || help.contains("--log-format"),
            "{command:?}: {help}"
        );
    }
    let help = text(&run(&["status", "--help"], &[]).stdout);
    assert!(help.contains("Admin API options:"), "{help}");
}
