//! Running under systemd, without systemd: the real binary talks to a `NOTIFY_SOCKET` this
//! test owns (READY only once it can take requests, RELOADING/READY around SIGHUP, WATCHDOG
//! keep-alives, STOPPING on SIGTERM), logs one JSON line per event and delivery outcome
//! without any secret, and the shipped unit file passes `systemd-analyze`.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{fixture, DaemonProcess, Receiver, KEY};

const WAIT: Duration = Duration::from_secs(10);
const ADMIN_TOKEN: &str = "admin-token-never-logged";
const CRM_TOKEN: &str = "crm-token-never-logged";

/// Reads datagrams until one contains `want`; returns every message read, in order.
fn read_until(sock: &UnixDatagram, want: &str) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            Instant::now() < deadline,
            "no {want:?} within {WAIT:?}; got {seen:?}"
        );
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = msg.lines().any(|l| l == want);
                seen.push(msg);
                if done {
                    return seen;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("notify socket: {e}"),
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_reload_watchdog_and_stop_are_announced_and_logs_hold_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let crm = Receiver::start().await;
    let socket_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&socket_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let config = dir.path().join("routes.yaml");
    let mut text = common::server_block(&dir.path().join("data"));
    text.push_str(&format!(
        "  admin_token: {ADMIN_TOKEN}\nkeys: [{KEY}]\ndestinations:\n  crm:\n    url: \"{}\"\n    headers: {{ Authorization: \"Bearer {CRM_TOKEN}\" }}\nroutes:\n  - {{ name: every-lead, event: lead, to: [crm] }}\n",
        crm.url("/crm")
    ));
    std::fs::write(&config, &text).unwrap();

    let mut daemon = DaemonProcess::spawn_with(
        &config,
        &["--log-format", "json"],
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            // A short watchdog so keep-alives come every 100 ms.
            ("WATCHDOG_USEC", "300000"),
        ],
    );
    let first = read_until(&sock, "READY=1");
    assert!(!first.iter().any(|m| m.contains("STOPPING")), "{first:?}");
    // READY means both listeners take connections now.
    std::net::TcpStream::connect(daemon.addr).expect("webhook listener is bound");
    let admin = daemon.admin_addr.expect("admin address logged");
    std::net::TcpStream::connect(admin).expect("admin listener is bound");

    // Keep-alives flow while the delivery loop makes progress.
    read_until(&sock, "WATCHDOG=1");
    read_until(&sock, "WATCHDOG=1");

    // SIGHUP: RELOADING=1 with a monotonic timestamp, then READY=1 again.
    signal(daemon.pid(), "HUP");
    let reload = read_until(&sock, "READY=1");
    let reloading = reload
        .iter()
        .find(|m| m.lines().any(|l| l == "RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1 before READY=1: {reload:?}"));
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {reloading:?}"));
    assert!(usec > 0);

    // Traffic: one accepted and delivered, one with a wrong key.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let post = |key: &'static str| {
        client
            .post(format!("http://{}/webhooks/lead", daemon.addr))
            .header("X-KEY", key)
            .body(fixture("lead.json"))
            .send()
    };
    assert_eq!(post(KEY).await.unwrap().status(), 200);
    assert_eq!(post("wrong-key-never-logged").await.unwrap().status(), 401);
    let got = crm.wait_for(1, WAIT).await;
    assert_eq!(
        got[0].header("authorization"),
        format!("Bearer {CRM_TOKEN}")
    );

    signal(daemon.pid(), "TERM");
    read_until(&sock, "STOPPING=1");
    let status = daemon.terminate();
    assert!(status.success(), "{status:?}");

    // Logs: JSON lines; one per accepted event and per delivery outcome; no secret.
    let log = daemon.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let accepted: Vec<_> = lines
        .iter()
        .filter(|l| l["outcome"] == "accepted")
        .collect();
    assert_eq!(accepted.len(), 1, "{log}");
    assert_eq!(accepted[0]["kind"], "lead");
    assert!(accepted[0]["event_id"].is_string());
    let delivered: Vec<_> = lines
        .iter()
        .filter(|l| l["outcome"] == "delivered")
        .collect();
    assert_eq!(delivered.len(), 1, "{log}");
    // The delivery span's fields are the line's own, each once (no `span`/`spans` copies).
    for field in [
        "event_id",
        "destination",
        "attempt",
        "status",
        "latency_ms",
        "route",
    ] {
        assert!(
            !delivered[0][field].is_null(),
            "{field} missing from {}",
            delivered[0]
        );
    }
    assert!(delivered[0].get("span").is_none() && delivered[0].get("spans").is_none());
    assert_eq!(delivered[0]["status"], 200, "{}", delivered[0]);
    assert!(lines.iter().any(|l| l["outcome"] == "rejected"), "{log}");
    for secret in [KEY, "wrong-key-never-logged", CRM_TOKEN, ADMIN_TOKEN] {
        assert!(
            !log.contains(secret),
            "{secret:?} appears in the log:\n{log}"
        );
    }
}

/// `systemd-analyze`, or `None` (with a note) where it is not installed.
fn systemd_analyze() -> Option<&'static str> {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIPPED: systemd-analyze is not installed (Debian: apt-get install systemd)");
    }
    found.then_some("systemd-analyze")
}

#[test]
fn the_unit_file_verifies_cleanly_and_rates_ok_or_better() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/hookrouter.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for needle in [
        "Type=notify",
        "WatchdogSec=",
        "ExecStartPre=/usr/bin/hookrouter check",
        "ExecReload=/usr/bin/hookrouter check",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=hookrouter",
        "EnvironmentFile=-/etc/hookrouter/env",
        "/etc/hookrouter/routes.yaml",
        "RestartPreventExitStatus=64 65 74",
        "DynamicUser=yes",
        "Documentation=man:hookrouter(1)",
        "#LoadCredential=",
    ] {
        assert!(text.contains(needle), "the unit lacks {needle}");
    }

    // `verify` checks that the commands exist: point them at the binary under test. The
    // man page is not installed here (.ci/package verifies the installed unit with it).
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("hookrouter.service");
    std::fs::write(
        &copy,
        text.replace("/usr/bin/hookrouter", env!("CARGO_BIN_EXE_hookrouter")),
    )
    .unwrap();
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // `verify` exits 0 even on unknown keys; anything on stderr is a finding.
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );

    let out = Command::new(analyze)
        .args(["security", "--offline=true"])
        .arg(&unit)
        .output()
        .unwrap();
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let level: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for hookrouter.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    assert!(level <= 2.0, "exposure {level} > 2.0:\n{report}");
}
