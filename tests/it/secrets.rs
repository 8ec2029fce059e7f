//! Secrets never leak (issue 18): no value from `${VAR}` or `{ file: }` in a config error,
//! a log line, a reload answer or `route --render` (userinfo included); our credentials
//! echoed by a receiver are masked in the dead letter's snippet; the store is owner-only.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::common;
use crate::common::{
    eventually, fixture, server_block, DaemonProcess, Receiver, Reply, TestDaemon, KEY,
};
use reqwest::Method;

const SECRETS: [(&str, &str); 5] = [
    ("HR_SEC_KEY", "KEYSECRET-5f1c9a"),
    ("HR_SEC_SIGN", "whsec_c2VjcmV0LXNpZ25pbmcta2V5LTEyMzQ1Ng=="),
    ("HR_SEC_TIMEOUT", "TIMEOUTSECRET-77"),
    ("HR_SEC_PASSWORD", "PASSWORDSECRET-99"),
    ("HR_SEC_LISTEN", "LISTENSECRET-31"),
];
const FILE_SECRET: &str = "FILESECRET-4242";

fn assert_no_secret(what: &str, s: &str) {
    for (_, secret) in SECRETS {
        assert!(!s.contains(secret), "{what}: {secret} leaked in\n{s}");
    }
    assert!(
        !s.contains(FILE_SECRET),
        "{what}: the file's secret leaked in\n{s}"
    );
}

fn hookrouter(args: &[&str], stdin: &[u8]) -> Output {
    common::hookrouter(args)
        .envs(&SECRETS)
        .stdin(stdin)
        .output()
}

/// Every expanded value in a place of the wrong type or shape.
fn bad_values(file: &Path) -> String {
    format!(
        r#"
keys: "${{HR_SEC_KEY}}"
destinations:
  crm:
    url: http://127.0.0.1:1/crm
    sign: "${{HR_SEC_SIGN}}"
  crm2:
    url: http://127.0.0.1:1/crm2
    timeout: "${{HR_SEC_TIMEOUT}}"
  crm3:
    url: http://127.0.0.1:1/crm3
    concurrency: {{ file: {:?} }}
routes:
  - {{ name: all, to: [crm, crm2, crm3] }}
"#,
        file.display().to_string()
    )
}

#[test]
fn type_errors_on_expanded_values_name_the_field_and_variable_not_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("concurrency");
    std::fs::write(&secret_file, FILE_SECRET).unwrap();
    let config = dir.path().join("routes.yaml");
    let text = format!(
        "server:\n  listen: \"${{HR_SEC_LISTEN}}\"\n{}",
        bad_values(&secret_file)
    );
    std::fs::write(&config, text).unwrap();
    let out = hookrouter(&["check", "--config", config.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_no_secret("check", &stderr);
    for expected in [
        "keys: the value from ${HR_SEC_KEY} does not fit here, expected a sequence",
        "destination \"crm\": sign: the value from ${HR_SEC_SIGN} does not fit here",
        "destination \"crm3\": concurrency: the value from the file ",
        "destination \"crm2\": timeout: expected a duration such as 50ms, 1s, 10m or 24h, found \"<value of ${HR_SEC_TIMEOUT}>\"",
        "server.listen: expected an address such as 127.0.0.1:8080, found \"<value of ${HR_SEC_LISTEN}>\"",
    ] {
        assert!(stderr.contains(expected), "{expected:?} missing in\n{stderr}");
    }
}

#[tokio::test]
async fn a_refused_reload_answers_and_logs_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("routes.yaml");
    let good = format!(
        "{}keys: [\"${{HR_SEC_KEY}}\"]\ndestinations:\n  crm: {{ url: http://127.0.0.1:1/crm }}\nroutes:\n  - {{ name: all, to: [crm] }}\n",
        server_block(&dir.path().join("data"))
    );
    std::fs::write(&config, &good).unwrap();
    let spawned = config.clone();
    let daemon =
        tokio::task::spawn_blocking(move || DaemonProcess::spawn_with(&spawned, &[], &SECRETS))
            .await
            .unwrap();
    let secret_file = dir.path().join("concurrency");
    std::fs::write(&secret_file, FILE_SECRET).unwrap();
    std::fs::write(
        &config,
        format!(
            "{}{}",
            server_block(&dir.path().join("data")),
            bad_values(&secret_file)
        ),
    )
    .unwrap();
    let admin = daemon.admin_addr.expect("admin address logged");
    let answer = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("http://{admin}/reload"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 422);
    let body = answer.text().await.unwrap();
    assert!(body.contains("${HR_SEC_KEY}"), "{body}");
    assert_no_secret("the reload answer", &body);
    // The same problems in the log, through SIGHUP.
    let hup = Command::new("kill")
        .args(["-HUP", &daemon.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    eventually(Duration::from_secs(5), "the refused reload logged", || {
        daemon.log().contains("HR_SEC_SIGN")
    })
    .await;
    assert_no_secret("the log", &daemon.log());
}

#[test]
fn render_hides_the_userinfo_of_a_url() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("routes.yaml");
    std::fs::write(
        &config,
        r#"
keys: [k]
destinations:
  from-env: { url: "https://bot:${HR_SEC_PASSWORD}@crm.example.com/hooks" }
  literal: { url: "https://bot:literal-pass@crm.example.com/hooks" }
routes:
  - { name: all, to: [from-env, literal] }
"#,
    )
    .unwrap();
    let out = hookrouter(
        &[
            "route",
            "--config",
            config.to_str().unwrap(),
            "--event",
            "lead",
            "--render",
        ],
        &fixture("lead.json"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_secret("--render", &stdout);
    assert!(
        !stdout.contains("literal-pass") && !stdout.contains("bot:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("POST https://<secret>@crm.example.com/"),
        "{stdout}"
    );
}

#[tokio::test]
async fn an_echoed_token_is_masked_in_the_dead_letter() {
    let echo = Receiver::start().await;
    // A receiver that echoes the request in its error page.
    echo.set_default(Reply::status(400).body(
        "bad request; you sent Authorization: Bearer tok-echoed-0123456789 and X-Api-Key: apikey-9876",
    ));
    let daemon = TestDaemon::start(&format!(
        r#"
destinations:
  crm:
    url: "{}"
    headers: {{ Authorization: "Bearer tok-echoed-0123456789", X-Api-Key: apikey-9876 }}
routes:
  - {{ name: all, to: [crm] }}
"#,
        echo.url("/crm")
    ))
    .await;
    let (status, _) = daemon.post("lead", Some(KEY), fixture("lead.json")).await;
    assert_eq!(status, 200);
    let mut list = serde_json::Value::Null;
    for _ in 0..200 {
        let (_, l) = daemon.admin(Method::GET, "/dead").await;
        if l["total"] == 1 {
            list = l;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let snippet = list["dead"][0]["response_snippet"]
        .as_str()
        .unwrap_or_else(|| panic!("no dead letter with a snippet: {list}"));
    assert_eq!(
        snippet,
        "bad request; you sent Authorization: <secret> and X-Api-Key: <secret>"
    );
    daemon.stop().await;
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every directory under `dir` (and `dir`) and every file, with its mode.
fn modes(dir: &Path, out: &mut Vec<(String, u32)>) {
    out.push((dir.display().to_string(), mode(dir)));
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            modes(&path, out);
        } else {
            out.push((path.display().to_string(), mode(&path)));
        }
    }
}

#[tokio::test]
async fn the_store_is_owner_only() {
    let crm = Receiver::start().await;
    crm.set_default(Reply::status(200));
    let dir = tempfile::tempdir().unwrap();
    // A data directory that exists already, open to all, as `mkdir` left it.
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::set_permissions(
        dir.path().join("data"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let daemon = TestDaemon::start_in(
        dir,
        &format!(
            "destinations:\n  crm: {{ url: \"{}\" }}\nroutes:\n  - {{ name: all, to: [crm] }}\n",
            crm.url("/crm")
        ),
    )
    .await;
    for _ in 0..3 {
        let (status, _) = daemon.post("lead", Some(KEY), fixture("lead.json")).await;
        assert_eq!(status, 200);
    }
    crm.wait_for(3, Duration::from_secs(10)).await;
    let dir = daemon.stop().await;
    let mut found = Vec::new();
    modes(&dir.path().join("data"), &mut found);
    assert!(found.iter().any(|(p, _)| p.ends_with(".seg")), "{found:?}");
    assert!(found.iter().any(|(p, _)| p.ends_with("/db")), "{found:?}");
    for (path, m) in &found {
        let want = if Path::new(path).is_dir() {
            0o700
        } else {
            0o600
        };
        assert_eq!(*m, want, "{path} is {m:o}; all: {found:?}");
    }
}
