//! The real binary on a journal a crash or the disk has damaged: a torn tail, a flipped byte
//! mid-segment, a kill between the journal append and the checkpoint, and the states a crash
//! during segment deletion can leave. Each time the daemon starts, says what it found, and
//! delivers every acknowledged webhook it still can, byte for byte.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common;
use crate::common::{
    eventually, fixture_json, response_json, DaemonProcess, DownPort, Receiver, Recorded,
    TestConfig, KEY,
};

/// How long a test waits for deliveries: generous, since a passing run needs a second or two
/// and a loaded 2-core CI machine once took longer than 20 s.
const WAIT: Duration = Duration::from_secs(60);

/// A config routing leads to `crm` (and `audit` when given), with quick retries.
fn write_config(dir: &Path, crm: SocketAddr, audit: Option<SocketAddr>, extra: &str) -> PathBuf {
    let (audit_dest, to) = match audit {
        Some(a) => (
            format!("  audit: {{ url: \"http://{a}/audit\" }}\n"),
            "[crm, audit]",
        ),
        None => (String::new(), "[crm]"),
    };
    TestConfig::new(&dir.join("data"))
        .server_lines(extra)
        .rest(&format!(
            r#"retry: {{ initial_interval: 50ms, multiplier: 2.0, max_interval: 200ms, max_elapsed: 1h }}
destinations:
  crm: {{ url: "http://{crm}/crm" }}
{audit_dest}routes:
  - {{ name: leads, event: lead, to: {to} }}
"#
        ))
        .write_in(dir)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Posts `n` leads with distinct ids; returns (id, body) of each, all answered 200.
async fn post_leads(addr: SocketAddr, prefix: &str, n: usize) -> Vec<(String, Vec<u8>)> {
    let client = client();
    let mut sent = Vec::new();
    for i in 0..n {
        let mut lead = fixture_json("lead.json");
        let id = format!("{prefix}-{i}");
        lead["id"] = serde_json::json!(id);
        let body = lead.to_string().into_bytes();
        let resp = client
            .post(format!("http://{addr}/webhooks/lead"))
            .header("X-KEY", KEY)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let (status, answer) = response_json(resp).await;
        assert_eq!(status, 200, "{answer}");
        sent.push((id, body));
    }
    sent
}

fn journal_dir(dir: &Path) -> PathBuf {
    dir.join("data").join("journal")
}

/// Every file of the journal directory with the given extension, by name.
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(journal_dir(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    out.sort();
    out
}

/// The frames of a segment: (offset, total length, payload).
fn frames(bytes: &[u8]) -> Vec<(usize, usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 16;
    while at + 12 <= bytes.len() {
        assert_eq!(&bytes[at..at + 4], b"HRRF", "a frame at {at}");
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        out.push((at, 12 + len, bytes[at + 12..at + 12 + len].to_vec()));
        at += 12 + len;
    }
    assert_eq!(at, bytes.len(), "the segment ends with a whole frame");
    out
}

/// The requests of one receiver by the `id` in their body.
fn by_id(requests: &[Recorded]) -> BTreeMap<String, Vec<Recorded>> {
    let mut out: BTreeMap<String, Vec<Recorded>> = BTreeMap::new();
    for r in requests {
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let id = body["id"].as_str().unwrap().to_string();
        out.entry(id).or_default().push(r.clone());
    }
    out
}

/// Every webhook of `sent` (but those in `except`) reaches `path`, byte for byte, and
/// every copy of one webhook carries the same delivery id; nothing else arrives there.
async fn assert_delivered(
    receiver: &Receiver,
    path: &str,
    sent: &[(String, Vec<u8>)],
    except: &HashSet<String>,
) {
    let want: HashSet<&String> = sent
        .iter()
        .map(|(id, _)| id)
        .filter(|id| !except.contains(*id))
        .collect();
    eventually(WAIT, &format!("{} webhooks at {path}", want.len()), || {
        let got = by_id(
            &receiver
                .requests()
                .into_iter()
                .filter(|r| r.path == path)
                .collect::<Vec<_>>(),
        );
        want.iter().all(|id| got.contains_key(*id))
    })
    .await;
    let got = by_id(
        &receiver
            .requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect::<Vec<_>>(),
    );
    for (id, body) in sent {
        let Some(copies) = got.get(id) else {
            assert!(except.contains(id), "{id} never reached {path}");
            continue;
        };
        assert!(
            !except.contains(id),
            "{id} reached {path} though its record was damaged"
        );
        let delivery = copies[0].header("x-hookrouter-delivery");
        assert!(!delivery.is_empty());
        for c in copies {
            assert_eq!(
                &c.body[..],
                &body[..],
                "{id} at {path} is sent byte for byte"
            );
            assert_eq!(
                c.header("x-hookrouter-delivery"),
                delivery,
                "a resend of {id} to {path} has the same delivery id"
            );
        }
    }
    assert!(
        got.keys().all(|id| sent.iter().any(|(s, _)| s == id)),
        "only webhooks that were sent arrive: {:?}",
        got.keys()
    );
}

/// The log line that contains `needle`.
fn log_line(daemon: &DaemonProcess, needle: &str) -> String {
    daemon
        .log()
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no log line with {needle:?}; log:\n{}", daemon.log()))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_truncated_and_logged_and_every_acknowledged_webhook_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let port = DownPort::reserve();
    let config = write_config(dir.path(), port.addr, None, "");
    let mut daemon = DaemonProcess::spawn(&config);
    let sent = post_leads(daemon.addr, "torn", 12).await;
    daemon.kill9();

    // A crash in the middle of the next batch's write: most of a copy of the last frame.
    let segment = files(dir.path(), ".seg").pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let (at, len, _) = frames(&bytes).pop().expect("a record");
    let whole = bytes.len();
    let partial = bytes[at..at + len - 7].to_vec();
    bytes.extend_from_slice(&partial);
    std::fs::write(&segment, &bytes).unwrap();

    let receiver = Receiver::start_on(port.release()).await;
    let daemon = DaemonProcess::spawn(&config);
    let line = log_line(&daemon, "torn tail");
    assert!(line.contains(&format!("offset={whole}")), "{line}");
    assert!(line.contains(&format!("bytes={}", partial.len())), "{line}");
    assert_delivered(&receiver, "/crm", &sent, &HashSet::new()).await;
    drop(daemon);
}

/// Whether a journal record's payload holds `body`: as its last bytes, or as the zstd frame
/// at its end (the journal stores a body compressed where that is smaller).
fn holds(payload: &[u8], body: &[u8]) -> bool {
    const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
    payload.ends_with(body)
        || payload
            .windows(4)
            .position(|w| w == ZSTD_MAGIC)
            .and_then(|at| zstd::decode_all(&payload[at..]).ok())
            .is_some_and(|b| b == body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_mid_segment_is_logged_and_every_other_webhook_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let port = DownPort::reserve();
    let config = write_config(dir.path(), port.addr, None, "");
    let mut daemon = DaemonProcess::spawn(&config);
    let sent = post_leads(daemon.addr, "flip", 12).await;
    // Let the first attempts fail, so the jobs are in sled pointing at their records too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    daemon.kill9();

    // Flip one byte in the middle of the body of the fourth webhook's record.
    let segment = files(dir.path(), ".seg").pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let (victim, (at, len)) = frames(&bytes)
        .iter()
        .find_map(|(at, len, payload)| {
            sent.iter()
                .find(|(id, body)| id == "flip-3" && holds(payload, body))
                .map(|(id, _)| (id.clone(), (*at, *len)))
        })
        .expect("the record of flip-3");
    let flip = at + len - 20;
    bytes[flip] ^= 0x20;
    std::fs::write(&segment, &bytes).unwrap();
    let seq: u64 = segment
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();

    let receiver = Receiver::start_on(port.release()).await;
    let daemon = DaemonProcess::spawn(&config);
    let line = log_line(&daemon, "damaged bytes");
    assert!(line.contains(&format!("segment={seq}")), "{line}");
    assert!(line.contains(&format!("offset={at}")), "{line}");
    // It serves: a new webhook is accepted and delivered too.
    let more = post_leads(daemon.addr, "after", 2).await;
    let all: Vec<(String, Vec<u8>)> = sent.into_iter().chain(more).collect();
    assert_delivered(&receiver, "/crm", &all, &HashSet::from([victim])).await;
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_the_journal_append_and_the_checkpoint_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let crm = Receiver::start().await;
    let audit_port = DownPort::reserve();
    let config = write_config(dir.path(), crm.addr, Some(audit_port.addr), "");
    let mut daemon = DaemonProcess::spawn(&config);
    let sent = post_leads(daemon.addr, "cp", 20).await;
    // Right after the last 200: well inside the checkpoint's one-second interval.
    daemon.kill9();
    let journal = journal_dir(dir.path());
    let end = files(dir.path(), ".seg")
        .iter()
        .map(|s| {
            let seq: u64 = s.file_stem().unwrap().to_str().unwrap().parse().unwrap();
            (seq, std::fs::metadata(s).unwrap().len())
        })
        .max()
        .unwrap();
    match std::fs::read(journal.join("checkpoint")) {
        Ok(cp) => {
            let at = (
                u64::from_le_bytes(cp[..8].try_into().unwrap()),
                u64::from_le_bytes(cp[8..16].try_into().unwrap()),
            );
            assert!(
                at < end,
                "the checkpoint {at:?} was not advanced to the end {end:?}"
            );
        }
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
    }

    let audit = Receiver::start_on(audit_port.release()).await;
    let daemon = DaemonProcess::spawn(&config);
    assert_delivered(&crm, "/crm", &sent, &HashSet::new()).await;
    assert_delivered(&audit, "/audit", &sent, &HashSet::new()).await;
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_a_crash_during_segment_deletion_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    let port = DownPort::reserve();
    // Retention 4 s: the active segment is sealed after 2 s.
    let config = write_config(dir.path(), port.addr, None, "  retention: 4s\n");
    let mut daemon = DaemonProcess::spawn(&config);
    let mut sent = post_leads(daemon.addr, "del-a", 5).await;
    eventually(WAIT, "the first segment to be sealed", || {
        files(dir.path(), ".idx").len() == 1
    })
    .await;
    sent.extend(post_leads(daemon.addr, "del-b", 5).await);
    daemon.kill9();
    let journal = journal_dir(dir.path());
    let segs = files(dir.path(), ".seg");
    assert_eq!(segs.len(), 2, "{segs:?}");
    let first_idx = files(dir.path(), ".idx").pop().unwrap();

    // What a crash can leave: segment 0 deleted with its index left behind; the index of a
    // segment deleted while the segment stays; a checkpoint naming the deleted segment; the
    // temporary files of a checkpoint and an index being written.
    let orphan_idx = journal.join(format!("{:020}.idx", 0));
    std::fs::copy(&first_idx, &orphan_idx).unwrap();
    std::fs::remove_file(&first_idx).unwrap();
    let mut cp = Vec::new();
    cp.extend_from_slice(&0u64.to_le_bytes());
    cp.extend_from_slice(&16u64.to_le_bytes());
    let crc = crc32c::crc32c(&cp);
    cp.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(journal.join("checkpoint"), &cp).unwrap();
    std::fs::write(journal.join("checkpoint.tmp"), b"half a check").unwrap();
    let idx_tmp = journal.join(format!("{:020}.idx.tmp", 2));
    std::fs::write(&idx_tmp, b"HRJI half an index").unwrap();

    let receiver = Receiver::start_on(port.release()).await;
    let daemon = DaemonProcess::spawn(&config);
    assert!(first_idx.exists(), "the missing index is rebuilt at start");
    assert_delivered(&receiver, "/crm", &sent, &HashSet::new()).await;
    // Once retention has passed for it, the first segment goes, with its index.
    eventually(WAIT, "the first segment to be deleted", || {
        !segs[0].exists() && !first_idx.exists()
    })
    .await;
    eventually(WAIT, "the leftover checkpoint.tmp to go", || {
        !journal.join("checkpoint.tmp").exists()
    })
    .await;
    for leftover in [&idx_tmp, &orphan_idx] {
        eventually(
            WAIT,
            &format!("the leftover {} to go", leftover.display()),
            || !leftover.exists(),
        )
        .await;
    }
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_deleted_while_running_gets_503_never_200_and_exit_74() {
    let dir = tempfile::tempdir().unwrap();
    let down = DownPort::reserve();
    let config = write_config(dir.path(), down.addr, None, "");
    let mut daemon = DaemonProcess::spawn(&config);
    post_leads(daemon.addr, "before", 3).await;
    std::fs::remove_dir_all(dir.path().join("data")).unwrap();

    // The open files still take writes, which a restart would not find: refused.
    let mut lead = fixture_json("lead.json");
    lead["id"] = serde_json::json!("after-the-deletion");
    let resp = client()
        .post(format!("http://{}/webhooks/lead", daemon.addr))
        .header("X-KEY", KEY)
        .header("content-type", "application/json")
        .body(lead.to_string())
        .send()
        .await;
    if let Ok(resp) = resp {
        let (status, answer) = response_json(resp).await;
        assert_eq!(
            status, 503,
            "never 200 for an event written nowhere: {answer}"
        );
        assert_eq!(answer["error"], "store_unavailable", "{answer}");
    } // (or the daemon was already gone: no answer, no 200 either)
    let status = daemon
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("still running; log:\n{}", daemon.log()));
    assert_eq!(status.code(), Some(74), "log:\n{}", daemon.log());
    let log = daemon.log();
    assert!(
        log.contains("was deleted while hookrouter was running") && log.contains("backup"),
        "the log says what happened and what to do:\n{log}"
    );
}

/// Runs `hookrouter serve` on `config`, which must exit by itself within 30 s; returns the
/// exit code and standard error.
fn serve_until_exit(config: &Path) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hookrouter"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "hookrouter started on a damaged store:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_at_start_is_an_error_naming_the_file_and_exit_65() {
    let dir = tempfile::tempdir().unwrap();
    let down = DownPort::reserve();
    let config = write_config(dir.path(), down.addr, None, "");
    let data = dir.path().join("data");
    let retrying = |daemon: &DaemonProcess, n: u64| {
        let admin = daemon.admin_addr.expect("admin address");
        eventually(WAIT, "jobs retrying", move || {
            let answer = std::process::Command::new("curl")
                .args(["-sf", &format!("http://{admin}/queue")])
                .output()
                .ok()
                .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok());
            answer.is_some_and(|q| q["total"]["retrying"] == n)
        })
    };
    // The destination is down: every job fails an attempt and waits in sled for a retry.
    // Three first, then a stop, sled's files copied aside, and two more.
    let mut daemon = DaemonProcess::spawn(&config);
    post_leads(daemon.addr, "pending", 3).await;
    retrying(&daemon, 3).await;
    assert!(daemon.terminate().success());
    let early_sled = dir.path().join("early-sled");
    std::fs::create_dir(&early_sled).unwrap();
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name() != Some(std::ffi::OsStr::new("journal")) {
            assert!(std::process::Command::new("cp")
                .args(["-a"])
                .arg(&path)
                .arg(&early_sled)
                .status()
                .unwrap()
                .success());
        }
    }
    let mut daemon = DaemonProcess::spawn(&config);
    post_leads(daemon.addr, "later", 2).await;
    retrying(&daemon, 5).await;
    assert!(daemon.terminate().success());
    let good = dir.path().join("good");
    assert!(std::process::Command::new("cp")
        .args(["-a"])
        .arg(&data)
        .arg(&good)
        .status()
        .unwrap()
        .success());

    let db = data.join("db");
    let db_len = std::fs::metadata(&db).unwrap().len() as usize;
    let segment = files(dir.path(), ".seg").pop().unwrap();
    let seg_len = std::fs::metadata(&segment).unwrap().len() as usize;
    let noise = |n: usize| -> Vec<u8> {
        let (mut rng, _) = common::Rng::from_env("DAMAGE_SEED");
        rng.bytes(n)
    };
    type Damage<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Damage, PathBuf)> = vec![
        (
            "sled's file emptied",
            Box::new(|| std::fs::write(&db, b"").unwrap()),
            db.clone(),
        ),
        (
            "sled's file random",
            Box::new(|| std::fs::write(&db, noise(db_len)).unwrap()),
            db.clone(),
        ),
        (
            // sled opens it as it was: the checkpoint it was last synced with is behind the
            // journal's, and the two jobs that went to sled since are not in it.
            "sled's files from an earlier stop put back",
            Box::new(|| {
                for entry in std::fs::read_dir(&data).unwrap() {
                    let path = entry.unwrap().path();
                    if path.file_name() != Some(std::ffi::OsStr::new("journal")) {
                        let _ = std::fs::remove_file(&path);
                        let _ = std::fs::remove_dir_all(&path);
                    }
                }
                for entry in std::fs::read_dir(&early_sled).unwrap() {
                    let path = entry.unwrap().path();
                    assert!(std::process::Command::new("cp")
                        .args(["-a"])
                        .arg(&path)
                        .arg(&data)
                        .status()
                        .unwrap()
                        .success());
                }
            }),
            db.clone(),
        ),
        (
            "sled's file deleted",
            Box::new(|| std::fs::remove_file(&db).unwrap()),
            db.clone(),
        ),
        (
            "a journal segment random",
            Box::new(|| std::fs::write(&segment, noise(seg_len)).unwrap()),
            segment.clone(),
        ),
    ];
    for (what, damage, named) in cases {
        std::fs::remove_dir_all(&data).unwrap();
        assert!(std::process::Command::new("cp")
            .args(["-a"])
            .arg(&good)
            .arg(&data)
            .status()
            .unwrap()
            .success());
        damage();
        let (code, stderr) = serve_until_exit(&config);
        assert_eq!(code, Some(65), "{what}: {stderr}");
        assert!(
            stderr.contains(&format!("{} is damaged", named.display())),
            "{what}: the error names {}: {stderr}",
            named.display()
        );
        assert!(
            stderr.contains("Restore data_dir from a backup"),
            "{what}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    }

    // Undamaged, it starts with every job.
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::rename(&good, &data).unwrap();
    let daemon = DaemonProcess::spawn(&config);
    assert!(
        log_line(&daemon, "hookrouter is ready").contains("pending=5"),
        "{}",
        daemon.log()
    );
}
