//! A data directory of the first store format (everything in sled, JSON records) is migrated
//! on the first start: pending jobs are delivered with their delivery ids and bodies, the
//! dead letter is kept with its attempts and body, and a second start does not migrate
//! again. A store of an unknown format is refused, naming the format.
//!
//! The old store is written here with sled and serde_json directly, exactly as the first
//! format's code wrote it (`git show 3e11ed7:src/queue/mod.rs`, `keys.rs`, `record.rs`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common;
use crate::common::{eventually, fixture_json, DaemonProcess, Receiver, KEY};
use serde_json::{json, Value};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);
const BODY_CHUNK: usize = 64 * 1024;

fn write_config(dir: &Path, receiver: &Receiver) -> PathBuf {
    let path = dir.join("routes.yaml");
    let text = format!(
        r#"{server}keys: ["{KEY}"]
retry: {{ initial_interval: 50ms, multiplier: 2.0, max_interval: 200ms, max_elapsed: 1h }}
destinations:
  crm: {{ url: "{crm}" }}
  audit: {{ url: "{audit}" }}
routes:
  - {{ name: leads, event: lead, to: [crm, audit] }}
"#,
        server = common::server_block(&dir.join("data")),
        crm = receiver.url("/crm"),
        audit = receiver.url("/audit"),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `due` key: destination, NUL, due ms (u64 BE), job id.
fn due_key(destination: &str, due_ms: u64, job: &Uuid) -> Vec<u8> {
    let mut k = destination.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&due_ms.to_be_bytes());
    k.extend_from_slice(job.as_bytes());
    k
}

/// `bodies` and `attempts` key: id, then a number (u32 BE).
fn numbered_key(id: &Uuid, n: u32) -> Vec<u8> {
    let mut k = id.as_bytes().to_vec();
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// `expiry` key: time (u64 BE), tag, record key.
fn expiry_key(at_ms: u64, tag: u8, id: &[u8]) -> Vec<u8> {
    let mut k = at_ms.to_be_bytes().to_vec();
    k.push(tag);
    k.extend_from_slice(id);
    k
}

/// A job record of the first format (no journal position).
fn job(id: Uuid, event: Uuid, destination: &str, attempts: u32, due_ms: u64, now: u64) -> Value {
    json!({
        "id": id,
        "event_id": event,
        "kind": "lead",
        "destination": destination,
        "routes": ["leads"],
        "created_at_ms": now - 60_000,
        "attempts": attempts,
        "first_attempt_at_ms": (attempts > 0).then_some(now - 50_000),
        "last_attempt_at_ms": (attempts > 0).then_some(now - 10_000),
        "next_attempt_at_ms": due_ms,
        "last_status": (attempts > 0).then_some(503),
        "last_error": (attempts > 0).then_some("HTTP 503"),
        "attempt_base": 0,
    })
}

fn attempt(n: u32, status: u16, outcome: &str, at_ms: u64) -> Value {
    json!({
        "attempt": n,
        "at_ms": at_ms,
        "latency_ms": 12,
        "status": status,
        "outcome": outcome,
        "error": format!("HTTP {status}"),
    })
}

struct OldStore {
    /// (job id, destination, body) of each pending job.
    pending: Vec<(Uuid, &'static str, Vec<u8>)>,
    dead_job: Uuid,
    dead_body: Vec<u8>,
}

/// Writes a store of the first format into `data`.
fn write_old_store(data: &Path) -> OldStore {
    let db = sled::Config::new().path(data).open().unwrap();
    let tree = |name: &str| db.open_tree(name).unwrap();
    let (events, bodies, jobs, due, attempts, dead, done, expiry, seen) = (
        tree("events"),
        tree("bodies"),
        tree("jobs"),
        tree("due"),
        tree("attempts"),
        tree("dead"),
        tree("done"),
        tree("expiry"),
        tree("seen"),
    );
    let now = hookrouter::queue::now_ms();
    let to_vec = |v: &Value| serde_json::to_vec(v).unwrap();
    let add_event = |job_ids: &[Uuid], body: &[u8]| -> Uuid {
        let id = Uuid::now_v7();
        let record = json!({
            "id": id,
            "kind": "lead",
            "received_at_ms": now - 60_000,
            "routes": ["leads"],
            "jobs": job_ids,
            "body_len": body.len(),
        });
        events.insert(id.as_bytes(), to_vec(&record)).unwrap();
        for (n, chunk) in body.chunks(BODY_CHUNK).enumerate() {
            bodies.insert(numbered_key(&id, n as u32), chunk).unwrap();
        }
        id
    };
    let lead = |id: &str, extra: Option<String>| {
        let mut v = fixture_json("lead.json");
        v["id"] = json!(id);
        if let Some(e) = extra {
            v["notes"] = json!(e);
        }
        // As Mindstamp sent it: not re-serialized by hookrouter.
        format!("{}\n", serde_json::to_string_pretty(&v).unwrap()).into_bytes()
    };

    // One event, two pending jobs (crm, audit); its body spans two 64 KiB chunks.
    let big = lead("old-pending", Some("é".repeat(40_000)));
    let (p1, p2) = (Uuid::now_v7(), Uuid::now_v7());
    let e1 = add_event(&[p1, p2], &big);
    for (j, dest) in [(p1, "crm"), (p2, "audit")] {
        let due_ms = now - 30_000;
        jobs.insert(j.as_bytes(), to_vec(&job(j, e1, dest, 0, due_ms, now)))
            .unwrap();
        due.insert(due_key(dest, due_ms, &j), &[0u8][..]).unwrap();
    }
    // One event whose crm job is retrying after two failed attempts.
    let retry_body = lead("old-retrying", None);
    let r = Uuid::now_v7();
    let e2 = add_event(&[r], &retry_body);
    let due_ms = now - 1000;
    jobs.insert(r.as_bytes(), to_vec(&job(r, e2, "crm", 2, due_ms, now)))
        .unwrap();
    due.insert(due_key("crm", due_ms, &r), &[1u8][..]).unwrap();
    for n in 1..=2 {
        attempts
            .insert(
                numbered_key(&r, n),
                to_vec(&attempt(n, 503, "retry", now - 50_000)),
            )
            .unwrap();
    }
    // A dead letter with its attempt.
    let dead_body = lead("old-dead", None);
    let d = Uuid::now_v7();
    let e3 = add_event(&[d], &dead_body);
    let mut dead_job = job(d, e3, "crm", 1, now - 40_000, now);
    dead_job["last_status"] = json!(410);
    dead_job["last_error"] = json!("HTTP 410");
    let letter = json!({
        "job": dead_job,
        "reason": "permanent failure: HTTP 410",
        "response_snippet": "gone",
        "dead_at_ms": now - 40_000,
    });
    dead.insert(d.as_bytes(), to_vec(&letter)).unwrap();
    attempts
        .insert(
            numbered_key(&d, 1),
            to_vec(&attempt(1, 410, "permanent", now - 40_000)),
        )
        .unwrap();
    expiry
        .insert(expiry_key(now + 86_400_000, b'd', d.as_bytes()), &[][..])
        .unwrap();
    // A settled event: delivered, kept for retention.
    let s = Uuid::now_v7();
    let e4 = add_event(&[s], &lead("old-settled", None));
    let settled = json!({
        "job": job(s, e4, "crm", 1, now - 50_000, now),
        "outcome": "delivered",
        "settled_at_ms": now - 45_000,
    });
    done.insert(s.as_bytes(), to_vec(&settled)).unwrap();
    attempts
        .insert(
            numbered_key(&s, 1),
            to_vec(&attempt(1, 200, "delivered", now - 50_000)),
        )
        .unwrap();
    expiry
        .insert(expiry_key(now + 3_600_000, b'e', e4.as_bytes()), &[][..])
        .unwrap();
    // Its de-duplication record.
    let digest = [7u8; 32];
    let seen_record = json!({
        "event_id": e4,
        "at_ms": now - 60_000,
        "expires_at_ms": now + 3_600_000,
    });
    seen.insert(digest, to_vec(&seen_record)).unwrap();
    expiry
        .insert(expiry_key(now + 3_600_000, b's', &digest), &[][..])
        .unwrap();
    db.flush().unwrap();
    drop(db);
    OldStore {
        pending: vec![
            (p1, "/crm", big.clone()),
            (p2, "/audit", big),
            (r, "/crm", retry_body),
        ],
        dead_job: d,
        dead_body,
    }
}

async fn admin_get(daemon: &DaemonProcess, path: &str) -> (u16, Value) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = client
        .get(format!("http://{}{path}", daemon.admin_addr.unwrap()))
        .send()
        .await
        .unwrap();
    common::response_json(resp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_format_store_is_migrated_once_and_nothing_queued_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let config = write_config(dir.path(), &receiver);
    let old = write_old_store(&dir.path().join("data"));

    let mut daemon = DaemonProcess::spawn(&config);
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("migrated the store"))
        .unwrap_or_else(|| panic!("no migration logged:\n{log}"));
    for count in [
        "jobs=3",
        "dead_letters=1",
        "events=3",
        "attempts=3",
        "settled_history_not_carried=1",
        "dedupe_identities_not_carried=1",
    ] {
        assert!(line.contains(count), "{count} in {line}");
    }

    // The pending jobs go out with their delivery ids and bodies, byte for byte.
    let got = receiver.wait_for(3, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.requests().len(),
        3,
        "the settled event and the dead letter are not sent"
    );
    for (id, path, body) in &old.pending {
        let copy = got
            .iter()
            .find(|r| r.header("x-hookrouter-delivery") == id.to_string())
            .unwrap_or_else(|| panic!("delivery {id} never arrived"));
        assert_eq!(&copy.path, path);
        assert_eq!(&copy.body[..], &body[..], "the body of {id}");
    }

    // The dead letter is listed with its attempts and shown with its body.
    let (status, list) = admin_get(&daemon, "/dead").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["dead"][0]["id"], old.dead_job.to_string());
    assert_eq!(list["dead"][0]["attempts"], 1);
    assert_eq!(list["dead"][0]["error"], "permanent failure: HTTP 410");
    let (status, shown) = admin_get(&daemon, &format!("/dead/{}", old.dead_job)).await;
    assert_eq!(status, 200, "{shown}");
    let body: Value = serde_json::from_slice(&old.dead_body).unwrap();
    assert_eq!(shown["body"], body);
    let (status, event) = admin_get(
        &daemon,
        &format!("/events/{}", shown["event_id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(status, 200, "{event}");
    let attempts = &event["jobs"][0]["attempts"];
    assert_eq!(attempts.as_array().map(Vec::len), Some(1), "{event}");
    assert_eq!(attempts[0]["status"], 410, "{event}");
    assert_eq!(daemon.terminate().code(), Some(0), "{}", daemon.log());

    // A second start: no migration, the dead letter still there, nothing sent again.
    let before = receiver.requests().len();
    let daemon = DaemonProcess::spawn(&config);
    assert!(
        !daemon.log().to_lowercase().contains("migrat"),
        "{}",
        daemon.log()
    );
    let (_, list) = admin_get(&daemon, "/dead").await;
    assert_eq!(list["total"], 1, "{list}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    eventually(Duration::from_secs(1), "nothing more", || {
        receiver.requests().len() == before
    })
    .await;
    drop(daemon);
}

#[test]
fn a_store_of_an_unknown_format_is_refused_naming_the_format() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let db = sled::Config::new().path(&data).open().unwrap();
        db.open_tree("v2.meta")
            .unwrap()
            .insert("format", &[9u8][..])
            .unwrap();
        db.flush().unwrap();
    }
    let config = dir.path().join("routes.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  listen: 127.0.0.1:0\n  admin_listen: 127.0.0.1:0\n  data_dir: {:?}\nkeys: [\"{KEY}\"]\ndestinations:\n  crm: {{ url: \"http://127.0.0.1:9/\" }}\nroutes:\n  - {{ name: all, to: [crm] }}\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookrouter"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("HOOKROUTER_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("store format [9]"), "{stderr}");
    assert!(stderr.contains("reads format 2"), "{stderr}");
}
