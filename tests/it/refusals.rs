//! Smaller hardening items of issue 18, against the real server: two `X-KEY` headers are a
//! 400 with a JSON reason (never "the first wins"); hyper's own parse-error answers (400,
//! 431) carry a JSON reason on both listeners; the built-in Slack message escapes payload
//! text, and custom templates can with `slack_escape`.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::{fixture_json, Receiver, Reply, TestDaemon, KEY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `request` as is and reads the answer until the server closes or 5 s pass.
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The server may answer (and close) before it has read everything.
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Status, lowercased head and the body of an answer.
fn split(answer: &str) -> (u16, String, serde_json::Value) {
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete answer: {answer:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let json =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {answer:?}"));
    (status, head.to_ascii_lowercase(), json)
}

#[tokio::test]
async fn two_x_key_headers_are_refused_with_a_reason() {
    let crm = Receiver::start().await;
    crm.set_default(Reply::status(200));
    let daemon = TestDaemon::start(&format!(
        "destinations:\n  crm: {{ url: \"{}\" }}\nroutes:\n  - {{ name: all, to: [crm] }}\n",
        crm.url("/crm")
    ))
    .await;
    let body = serde_json::to_string(&fixture_json("lead.json")).unwrap();
    let request = |keys: &[&str]| {
        let mut r = format!(
            "POST /webhooks/lead HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
            body.len()
        );
        for k in keys {
            r.push_str(&format!("X-KEY: {k}\r\n"));
        }
        r.push_str("\r\n");
        r.push_str(&body);
        r.into_bytes()
    };
    // The right key first or second, or twice: all refused.
    for keys in [[KEY, "wrong"], ["wrong", KEY], [KEY, KEY]] {
        let (status, _, json) = split(&raw(daemon.addr, &request(&keys)).await);
        assert_eq!(status, 400, "{keys:?}: {json}");
        assert_eq!(json["error"], "duplicate_key", "{json}");
        assert!(json["message"].as_str().unwrap().contains("X-KEY"));
    }
    let (status, _, json) = split(&raw(daemon.addr, &request(&[KEY])).await);
    assert_eq!(
        (status, &json["status"]),
        (200, &"accepted".into()),
        "{json}"
    );
    crm.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        crm.requests().len(),
        1,
        "only the one-key request is forwarded"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn hypers_own_refusals_carry_a_json_reason_on_both_listeners() {
    let daemon = TestDaemon::start("destinations: {}\nroutes: []\n").await;
    let admin = daemon.running().admin_addr;
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-pad: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    for addr in [daemon.addr, admin] {
        let (status, head, json) = split(&raw(addr, huge.as_bytes()).await);
        assert_eq!(status, 431, "{json}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert_eq!(json["error"], "headers_too_large", "{json}");
        for garbage in [
            &b"NOT HTTP AT ALL\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nbad header line\r\n\r\n",
            b"POST /webhooks/view HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
        ] {
            let (status, _, json) = split(&raw(addr, garbage).await);
            assert_eq!(status, 400, "{:?}: {json}", String::from_utf8_lossy(garbage));
            assert_eq!(json["error"], "bad_request", "{json}");
        }
        // Our own answers are untouched.
        let (status, _, json) = split(
            &raw(
                addr,
                b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            )
            .await,
        );
        assert_eq!((status, &json["status"]), (200, &"ok".into()), "{json}");
    }
    daemon.stop().await;
}

#[tokio::test]
async fn slack_messages_escape_payload_text() {
    let slack = Receiver::start().await;
    slack.set_default(Reply::status(200));
    let daemon = TestDaemon::start(&format!(
        r#"
destinations:
  builtin: {{ url: "{url}", format: slack }}
  custom:
    url: "{url}"
    format: slack
    template: "{{{{ viewer_name | slack_escape }}}} / {{{{ video_title | slack_escape }}}}"
routes:
  - {{ name: all, to: [builtin, custom] }}
"#,
        url = slack.url("/slack")
    ))
    .await;
    let mut view = fixture_json("view.json");
    view["viewer_name"] = "<!here>".into();
    view["flag"] = "<!channel>".into();
    view["video_title"] = "Q&A <https://evil.example|invoice>".into();
    let (status, _) = daemon
        .post("view", Some(KEY), serde_json::to_vec(&view).unwrap())
        .await;
    assert_eq!(status, 200);
    let got = slack.wait_for(2, Duration::from_secs(10)).await;
    let mut texts: Vec<String> = got
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            v["text"].as_str().unwrap().to_string()
        })
        .collect();
    texts.sort();
    for t in &texts {
        assert!(
            !t.contains('<') && !t.contains('>'),
            "unescaped markup: {t}"
        );
    }
    assert_eq!(
        texts,
        [
            "&lt;!channel&gt; *&lt;!here&gt;* watched *Q&amp;A &lt;https://evil.example|invoice&gt;* (95%)",
            "&lt;!here&gt; / Q&amp;A &lt;https://evil.example|invoice&gt;",
        ]
    );
    daemon.stop().await;
}
