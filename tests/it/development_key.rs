//! The documented development key (`dev-only-insecure-key`), with the real binary: `check`
//! and `serve` warn loudly when a config accepts it, `serve` (and `check`, which validates
//! as `serve` does) refuses it when the webhook listener is not on loopback, and a reload
//! that brings it in is logged the same way.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::common;
use crate::common::{fixture_json, response_json, text, DaemonProcess, TestConfig, KEY};

const DEV_KEY: &str = "dev-only-insecure-key";

fn config(dir: &Path, listen: &str, keys: &str) -> PathBuf {
    TestConfig::new(&dir.join("data"))
        .server(&format!("listen: \"{listen}\""))
        .without("dedupe_window")
        .keys(keys)
        .rest("destinations:\n  crm: { url: \"http://127.0.0.1:9/crm\" }\nroutes:\n  - { name: leads, event: lead, to: [crm] }\n")
        .write_in(dir)
}

fn hookrouter(args: &[&str], env: &[(&str, &str)]) -> Output {
    common::hookrouter(args)
        .env_remove(&["MINDSTAMP_WEBHOOK_KEY"])
        .envs(env)
        .output()
}

#[test]
fn check_warns_about_the_development_key_on_loopback_and_names_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(
        dir.path(),
        "127.0.0.1:8080",
        &format!("[{KEY:?}, {DEV_KEY:?}]"),
    );
    let out = hookrouter(&["check", "--config", path.to_str().unwrap()], &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("keys: 2 accepted X-KEY value(s)"),
        "{stdout}"
    );
    // keys is on line 6; the development key is its second entry.
    let warning = stderr
        .lines()
        .find(|l| l.contains("WARNING"))
        .unwrap_or_else(|| panic!("no warning:\n{stderr}"));
    assert!(
        warning.contains(&format!("{}:6:", path.display()))
            && warning.contains(": keys.1: WARNING"),
        "{warning}"
    );
    assert!(
        warning.contains("\"dev-only-insecure-key\" is the documented development key"),
        "{warning}"
    );
    assert!(warning.contains("configure a key"), "{warning}");
    // The summary on standard output stays clean for scripts.
    assert!(!stdout.contains("WARNING"), "{stdout}");

    // Without the development key: no warning.
    let path = config(dir.path(), "127.0.0.1:8080", &format!("[{KEY:?}]"));
    let out = hookrouter(&["check", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        !text(&out.stderr).contains("WARNING"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_repository_example_warns_until_its_variable_is_set() {
    // The example falls back to the development key when MINDSTAMP_WEBHOOK_KEY is unset.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("routes.yaml");
    let example = example.to_str().unwrap();
    let out = hookrouter(&["check", "--config", example], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("keys.0: WARNING"),
        "{}",
        text(&out.stderr)
    );

    let out = hookrouter(
        &["check", "--config", example],
        &[("MINDSTAMP_WEBHOOK_KEY", "a-real-key")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("WARNING"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_and_serve_refuse_the_development_key_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    for listen in ["0.0.0.0:8080", "[::]:8080", "192.0.2.1:8080"] {
        let path = config(dir.path(), listen, &format!("[{DEV_KEY:?}]"));
        let out = hookrouter(&["check", "--config", path.to_str().unwrap()], &[]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{listen}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "{}:6:8: keys.0: \"dev-only-insecure-key\" is the documented development key",
                path.display()
            )),
            "{listen}: {stderr}"
        );
        assert!(
            stderr.contains(&format!(
                "server.listen ({}) is not a loopback address",
                listen
            )),
            "{listen}: {stderr}"
        );
        assert!(stderr.contains("configure a key"), "{listen}: {stderr}");
    }

    // serve: 192.0.2.1 (TEST-NET-1) is on no interface here, so were the refusal missing,
    // serve would fail to bind (exit 1) rather than listen anywhere but loopback.
    let path = config(
        dir.path(),
        "192.0.2.1:8080",
        &format!("[{KEY:?}, {DEV_KEY:?}]"),
    );
    let out = hookrouter(&["serve", "--config", path.to_str().unwrap()], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("keys.1: \"dev-only-insecure-key\" is the documented development key"),
        "{stderr}"
    );
    assert!(stderr.contains("not starting"), "{stderr}");
    assert!(
        !dir.path().join("data").exists(),
        "serve opened the store before refusing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_warns_at_start_and_on_reload_but_takes_the_key_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "127.0.0.1:0", &format!("[{DEV_KEY:?}]"));
    let mut daemon = DaemonProcess::spawn(&path);
    // spawn returns as soon as the ready line is in the log: the warning is among what the
    // daemon logged by the time it said it was ready, the first thing an operator reads.
    let log = daemon.log();
    let warning = log
        .lines()
        .find(|l| l.contains("WARN"))
        .unwrap_or_else(|| panic!("no warning at start:\n{log}"));
    assert!(
        warning.contains(
            "keys.0: WARNING: \"dev-only-insecure-key\" is the documented development key"
        ),
        "{warning}"
    );
    // On loopback it is accepted: trying hookrouter out with the README's curl works.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = client
        .post(format!("http://{}/webhooks/lead", daemon.addr))
        .header("X-KEY", DEV_KEY)
        .body(fixture_json("lead.json").to_string())
        .send()
        .await
        .unwrap();
    let (status, body) = response_json(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "accepted", "{body}");

    // A reload to a real key logs no new warning; one back to the development key does.
    let admin = daemon.admin_addr.expect("admin address in the ready line");
    let reload = |client: reqwest::Client| async move {
        let resp = client
            .post(format!("http://{admin}/reload"))
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        response_json(resp).await
    };
    config(dir.path(), "127.0.0.1:0", &format!("[{KEY:?}]"));
    let (status, body) = reload(client.clone()).await;
    assert_eq!(status, 200, "{body}");
    let warnings = |log: &str| log.matches("is the documented development key").count();
    assert_eq!(warnings(&daemon.log()), 1, "{}", daemon.log());
    config(
        dir.path(),
        "127.0.0.1:0",
        &format!("[{KEY:?}, {DEV_KEY:?}]"),
    );
    let (status, body) = reload(client.clone()).await;
    assert_eq!(status, 200, "{body}");
    common::eventually(Duration::from_secs(5), "the reload's warning", || {
        warnings(&daemon.log()) == 2
    })
    .await;
    assert!(daemon.log().contains("keys.1: WARNING"), "{}", daemon.log());

    // A reload that would take the development key off loopback is refused as a whole.
    config(dir.path(), "0.0.0.0:0", &format!("[{DEV_KEY:?}]"));
    let (status, body) = reload(client).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not a loopback address"),
        "{body}"
    );
    assert!(daemon.terminate().success());
}
