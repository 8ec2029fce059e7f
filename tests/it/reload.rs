//! Live reload: the rule set is swapped atomically, an invalid file is refused and the old
//! rules stay, pending retries follow a destination's new definition, a removed
//! destination's jobs are dead-lettered, and keys rotate without a restart.

use std::sync::Arc;
use std::time::Duration;

use crate::common;
use crate::common::{
    eventually, fixture, fixture_json, DaemonProcess, DownPort, Receiver, TestDaemon, KEY,
};

const WAIT: Duration = Duration::from_secs(10);

fn rules(first: &Receiver, second: &Receiver, send_to: &str, keys: &str) -> String {
    format!(
        r#"
keys: {keys}
retry: {{ initial_interval: 20ms, max_interval: 100ms, max_elapsed: 1h }}
destinations:
  first: {{ url: "{}" }}
  second: {{ url: "{}" }}
routes:
  - name: to-{send_to}
    to: [{send_to}]
"#,
        first.url("/first"),
        second.url("/second")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_steady_traffic_loses_no_request_and_applies_per_request() {
    let (first, second) = (Receiver::start().await, Receiver::start().await);
    let daemon =
        Arc::new(TestDaemon::start(&rules(&first, &second, "first", &format!("[{KEY}]"))).await);
    let mut senders = Vec::new();
    for t in 0..4 {
        let daemon = daemon.clone();
        senders.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for i in 0..60 {
                let mut lead = fixture_json("lead.json");
                lead["id"] = serde_json::json!(format!("{t}-{i}"));
                let (status, body) = daemon.post("lead", Some(KEY), lead.to_string()).await;
                answers.push((status, body, format!("{t}-{i}")));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            answers
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    daemon.rewrite_config(&rules(&first, &second, "second", &format!("[{KEY}]")));
    let summary = daemon.running().reload().expect("valid reload");
    assert_eq!(summary.routes.added, ["to-second"]);
    assert_eq!(summary.routes.removed, ["to-first"]);

    let mut expect_first = Vec::new();
    let mut expect_second = Vec::new();
    for s in senders {
        for (status, body, id) in s.await.unwrap() {
            assert_eq!(status, 200, "{body}");
            match body["routes"][0].as_str() {
                Some("to-first") => expect_first.push(id),
                Some("to-second") => expect_second.push(id),
                other => panic!("unexpected routes {other:?}"),
            }
        }
    }
    assert!(
        !expect_first.is_empty() && !expect_second.is_empty(),
        "the reload landed mid-traffic"
    );
    let ids = |r: &Receiver| {
        let mut v: Vec<String> = r
            .requests()
            .iter()
            .map(|r| {
                serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        v.sort();
        v
    };
    first.wait_for(expect_first.len(), WAIT).await;
    second.wait_for(expect_second.len(), WAIT).await;
    expect_first.sort();
    expect_second.sort();
    assert_eq!(
        ids(&first),
        expect_first,
        "each request is delivered under the rules it was accepted with"
    );
    assert_eq!(ids(&second), expect_second);
}

#[tokio::test]
async fn an_invalid_reload_is_refused_with_its_line_and_the_old_rules_stay() {
    let (first, second) = (Receiver::start().await, Receiver::start().await);
    let daemon = TestDaemon::start(&rules(&first, &second, "first", &format!("[{KEY}]"))).await;
    daemon.rewrite_config(&rules(&first, &second, "third", &format!("[{KEY}]")));
    let err = daemon
        .running()
        .reload()
        .expect_err("unknown destination refused")
        .to_string();
    assert!(
        err.contains("routes.yaml:15:10: route \"to-third\": to.0: unknown destination \"third\""),
        "{err}"
    );
    let (status, body) = daemon.post("lead", Some(KEY), fixture("lead.json")).await;
    assert_eq!(
        (status, body["routes"][0].as_str()),
        (200, Some("to-first"))
    );
    first.wait_for(1, WAIT).await;
    daemon.stop().await;
}

#[tokio::test]
async fn pending_retries_go_to_the_fixed_url_and_removed_destinations_dead_letter() {
    let good = Receiver::start().await;
    let down = DownPort::reserve();
    let config = |first_url: &str, with_second: bool| {
        let second = if with_second {
            format!("  second: {{ url: \"http://{down}/second\" }}\n")
        } else {
            String::new()
        };
        let route2 = if with_second {
            "  - { name: also, to: [second] }\n"
        } else {
            ""
        };
        format!(
            "retry: {{ initial_interval: 30ms, max_interval: 100ms, max_elapsed: 1h }}\ndestinations:\n  first: {{ url: \"{first_url}\" }}\n{second}routes:\n  - {{ name: main, to: [first] }}\n{route2}"
        )
    };
    let daemon = TestDaemon::start(&config(&format!("http://{down}/wrong"), true)).await;
    for _ in 0..3 {
        assert_eq!(
            daemon.post("lead", Some(KEY), fixture("lead.json")).await.0,
            200
        );
    }
    let store = daemon.running().store().clone();
    // Both destinations are failing: six jobs pending, retrying.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(store.pending_count(), 6);

    daemon.rewrite_config(&config(&good.url("/fixed"), false));
    let summary = daemon.running().reload().expect("valid reload");
    assert_eq!(summary.destinations.removed, ["second"]);
    assert_eq!(summary.destinations.changed, ["first"]);

    let got = good.wait_for(3, WAIT).await;
    assert!(got.iter().all(|r| r.path == "/fixed"));
    eventually(
        WAIT,
        "the removed destination's jobs to be dead-lettered",
        || store.dead_count() == 3,
    )
    .await;
    for letter in store.dead_letters().unwrap() {
        assert_eq!(letter.job.destination, "second");
        assert_eq!(
            letter.reason,
            "destination \"second\" was removed from the config"
        );
    }
    eventually(WAIT, "the queue to drain", || store.pending_count() == 0).await;
    daemon.stop().await;
}

#[tokio::test]
async fn keys_rotate_on_reload() {
    let (first, second) = (Receiver::start().await, Receiver::start().await);
    let daemon = TestDaemon::start(&rules(&first, &second, "first", "[old-key]")).await;
    assert_eq!(
        daemon
            .post("lead", Some("old-key"), fixture("lead.json"))
            .await
            .0,
        200
    );
    assert_eq!(
        daemon
            .post("lead", Some("new-key"), fixture("lead.json"))
            .await
            .0,
        401
    );
    daemon.rewrite_config(&rules(&first, &second, "first", "[new-key, newer-key]"));
    daemon.running().reload().expect("valid reload");
    assert_eq!(
        daemon
            .post("lead", Some("old-key"), fixture("lead.json"))
            .await
            .0,
        401
    );
    assert_eq!(
        daemon
            .post("lead", Some("new-key"), fixture("lead.json"))
            .await
            .0,
        200
    );
    assert_eq!(
        daemon
            .post("lead", Some("newer-key"), fixture("lead.json"))
            .await
            .0,
        200
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_real_binary_and_a_bad_file_keeps_it_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (Receiver::start().await, Receiver::start().await);
    let path = dir.path().join("routes.yaml");
    let server = common::server_block(&dir.path().join("data"));
    std::fs::write(
        &path,
        format!(
            "{server}{}",
            rules(&first, &second, "first", &format!("[{KEY}]"))
        ),
    )
    .unwrap();
    let daemon = DaemonProcess::spawn(&path);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let post = || {
        client
            .post(format!("http://{}/webhooks/lead", daemon.addr))
            .header("X-KEY", KEY)
            .body(fixture("lead.json"))
            .send()
    };
    let hup = || {
        std::process::Command::new("kill")
            .arg("-HUP")
            .arg(daemon.pid().to_string())
            .status()
            .unwrap();
    };

    std::fs::write(
        &path,
        format!(
            "{server}{}",
            rules(&first, &second, "second", &format!("[{KEY}]"))
        ),
    )
    .unwrap();
    hup();
    eventually(WAIT, "the reload to be logged", || {
        daemon.log().contains("config reloaded")
    })
    .await;
    assert!(
        daemon.log().contains("routes_added=[\"to-second\"]"),
        "{}",
        daemon.log()
    );
    assert_eq!(post().await.unwrap().status(), 200);
    second.wait_for(1, WAIT).await;

    std::fs::write(&path, "keys: [\n").unwrap();
    hup();
    eventually(WAIT, "the refusal to be logged", || {
        daemon.log().contains("config reload refused")
    })
    .await;
    let resp = post().await.unwrap();
    assert_eq!(resp.status(), 200, "still serving with the previous rules");
    second.wait_for(2, WAIT).await;
    assert!(first.requests().is_empty());
}
