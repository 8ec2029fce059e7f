//! The real binary, killed: every acknowledged job survives `kill -9` and is delivered after
//! a restart. Also: SIGTERM exits 0, and a bad config exits 64 without starting.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use crate::common::{
    fixture_json, response_json, DaemonProcess, DownPort, Receiver, TestConfig, KEY,
};

/// Leads to `crm` and `audit` with quick retries; de-duplication on, as in production.
fn write_config(dir: &Path, crm_url: &str) -> std::path::PathBuf {
    TestConfig::new(&dir.join("data"))
        .without("dedupe_window")
        .rest(&format!(
            r#"retry: {{ initial_interval: 50ms, multiplier: 2.0, max_interval: 200ms, max_elapsed: 1h }}
destinations:
  crm: {{ url: "{crm_url}" }}
  audit: {{ url: "{crm_url}/audit" }}
routes:
  - name: leads
    event: lead
    to: [crm, audit]
"#
        ))
        .write_in(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_jobs_survive_kill_9_and_are_delivered_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on yet: the destination is down.
    let down = DownPort::reserve();
    let config = write_config(dir.path(), &format!("http://{down}"));
    let mut daemon = DaemonProcess::spawn(&config);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    let mut ids = HashSet::new();
    for i in 0..50 {
        let mut lead = fixture_json("lead.json");
        let id = format!("lead-{i}");
        lead["id"] = serde_json::json!(id);
        let resp = client
            .post(format!("http://{}/webhooks/lead", daemon.addr))
            .header("X-KEY", KEY)
            .body(lead.to_string())
            .send()
            .await
            .unwrap();
        let (status, body) = response_json(resp).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["deliveries"], 2);
        ids.insert(id);
    }
    // Let a few retries fail against the closed port, then kill without warning.
    tokio::time::sleep(Duration::from_millis(300)).await;
    daemon.kill9();

    // Bring the destination up on the port the jobs point at, then restart on the same store.
    let receiver = Receiver::start_on(down.release()).await;
    let daemon = DaemonProcess::spawn(&config);
    let got = receiver.wait_for(100, Duration::from_secs(30)).await;
    let mut crm = HashSet::new();
    let mut audit = HashSet::new();
    for r in &got {
        let id = serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        match r.path.as_str() {
            "/audit" => audit.insert(id),
            _ => crm.insert(id),
        };
    }
    assert_eq!(crm, ids, "every acknowledged lead reaches crm");
    assert_eq!(audit, ids, "every acknowledged lead reaches audit");
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero_and_a_bad_config_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let config = write_config(dir.path(), &receiver.url(""));
    let mut daemon = DaemonProcess::spawn(&config);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = client
        .post(format!("http://{}/webhooks/lead", daemon.addr))
        .header("X-KEY", KEY)
        .body(fixture_json("lead.json").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    receiver.wait_for(2, Duration::from_secs(10)).await;
    let status = daemon.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
    assert!(
        daemon.log().contains("hookrouter stopped"),
        "{}",
        daemon.log()
    );

    std::fs::write(
        &config,
        "keys: []\nroutes:\n  - name: x\n    to: [nowhere]\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookrouter"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("routes.yaml:1:1: keys: at least one key is required"),
        "{stderr}"
    );
    assert!(
        stderr.contains("routes.yaml:4:10: route \"x\": to.0: unknown destination \"nowhere\""),
        "{stderr}"
    );
}
