//! The data directory on a tiny file system that fills up. Ingress must answer 503 once it
//! cannot persist, never 200 for something not on disk; once space returns it accepts again,
//! and nothing acknowledged before, during or after is lost (proved by `kill -9` and a
//! restart that delivers every acknowledged webhook from disk).
//!
//! Needs root to mount a tmpfs; where mounting is not possible, the test says so and skips.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{fixture_json, DaemonProcess, DownPort, Receiver, TestConfig, KEY};

/// A tmpfs mounted on a temp directory; unmounted on drop, whatever happened.
struct TinyFs {
    dir: tempfile::TempDir,
}

impl TinyFs {
    fn mount(size: &str) -> Result<TinyFs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(TinyFs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        // Lazy unmount: succeeds even if a killed daemon's file is still being released.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn write_config(dir: &Path, data: &Path, url: &str) -> PathBuf {
    TestConfig::new(data)
        .server("shutdown_grace: 1s")
        .server("store_cache_bytes: 1048576")
        .rest(&format!(
            r#"retry: {{ initial_interval: 200ms, multiplier: 2.0, max_interval: 1s, max_elapsed: 1h }}
destinations:
  crm: {{ url: "{url}" }}
routes:
  - name: leads
    event: lead
    to: [crm]
"#
        ))
        .write_in(dir)
}

/// Fills the file system holding `path` with a filler file until the disk says no.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0xa5u8; 16 * 1024];
    let mut written = 0u64;
    // Bounded: the tmpfs is a few MiB.
    for _ in 0..100_000 {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    let _ = f.sync_all();
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gets_503_never_a_false_200_and_nothing_acknowledged_is_lost() {
    let fs = match TinyFs::mount("8m") {
        Ok(fs) => fs,
        Err(e) => {
            println!("SKIPPED storage_full: cannot mount a tmpfs here ({e}); run as root to test a full disk");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    // The destination is down throughout, so every acknowledged job stays in the store.
    let down = DownPort::reserve();
    let config = write_config(
        dir.path(),
        &fs.path().join("data"),
        &format!("http://{down}/crm"),
    );
    let mut daemon = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || DaemonProcess::spawn(&config))
            .await
            .unwrap()
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut answers: BTreeMap<usize, Option<u16>> = BTreeMap::new();
    let mut n = 0usize;
    let mut send = |addr: std::net::SocketAddr| {
        n += 1;
        let id = n;
        let client = client.clone();
        async move {
            let mut lead = fixture_json("lead.json");
            lead["id"] = serde_json::json!(format!("full-{id}"));
            let resp = client
                .post(format!("http://{addr}/webhooks/lead"))
                .header("X-KEY", KEY)
                .body(lead.to_string())
                .send()
                .await;
            let status = match resp {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body: serde_json::Value = r.json().await.expect("a JSON answer");
                    if status != 200 {
                        assert_eq!(status, 503, "{body}");
                        assert_eq!(body["error"], "store_unavailable", "{body}");
                    }
                    Some(status)
                }
                Err(_) => None,
            };
            (id, status)
        }
    };

    // Room to spare: accepted.
    for _ in 0..20 {
        let (id, status) = send(daemon.addr).await;
        assert_eq!(status, Some(200), "webhook {id} with free space");
        answers.insert(id, status);
    }

    // Fill the disk, then keep sending until the store cannot persist.
    let filler = fs.path().join("filler");
    let filled = fill(&filler);
    println!("filler took {} KiB", filled / 1024);
    let started = Instant::now();
    let mut refused = 0;
    while started.elapsed() < Duration::from_secs(30) {
        let (id, status) = send(daemon.addr).await;
        answers.insert(id, status);
        match status {
            Some(503) => refused += 1,
            Some(_) => {}
            // It stopped answering: it is exiting, as it should once sled cannot write.
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let accepted_while_full = answers.values().filter(|s| **s == Some(200)).count() - 20;
    println!(
        "disk full: {refused} answered 503, {accepted_while_full} still accepted (space sled had already reserved) in {:?}",
        started.elapsed()
    );
    assert!(
        refused >= 1,
        "a full disk never produced a 503:\n{}",
        daemon.log()
    );
    // sled 0.34 cannot write again after an I/O error until it is reopened: the daemon
    // exits non-zero so that its supervisor restarts it (systemd Restart=on-failure).
    let exit = tokio::task::block_in_place(|| daemon.wait_exit(Duration::from_secs(15)));
    assert!(
        exit.is_some_and(|s| !s.success()),
        "the daemon did not exit with a failure after its store failed ({exit:?}); log:\n{}",
        daemon.log()
    );
    assert!(
        daemon.log().contains("the store failed"),
        "{}",
        daemon.log()
    );

    // Space returns; the supervisor's restart accepts again.
    std::fs::remove_file(&filler).unwrap();
    let mut daemon = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || DaemonProcess::spawn(&config))
            .await
            .unwrap()
    };
    for _ in 0..10 {
        let (id, status) = send(daemon.addr).await;
        assert_eq!(status, Some(200), "webhook {id} after space returned");
        answers.insert(id, status);
    }

    // Crash, bring the destination up, restart: every 200 is delivered from disk, and no 503.
    daemon.kill9();
    let receiver = Receiver::start_on(down.release()).await;
    let daemon = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || DaemonProcess::spawn(&config))
            .await
            .unwrap()
    };
    let acked: Vec<usize> = answers
        .iter()
        .filter(|(_, s)| **s == Some(200))
        .map(|(id, _)| *id)
        .collect();
    receiver
        .wait_for(acked.len(), Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut delivered: Vec<usize> = receiver
        .requests()
        .iter()
        .map(|r| {
            let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            json["id"].as_str().unwrap()["full-".len()..]
                .parse()
                .unwrap()
        })
        .collect();
    delivered.sort();
    delivered.dedup();
    for id in &delivered {
        assert_eq!(
            answers.get(id),
            Some(&Some(200)),
            "full-{id} was delivered but answered {:?}",
            answers.get(id)
        );
    }
    assert_eq!(delivered, acked, "every acknowledged webhook is delivered");
    drop(daemon);
}
