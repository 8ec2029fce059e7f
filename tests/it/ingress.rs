//! Ingress answers: every refusal has its status and a JSON reason, and nothing of a
//! refused request is stored or forwarded.

use std::time::Duration;

use crate::common::{fixture, Receiver, TestDaemon, KEY};

fn config(receiver: &Receiver) -> String {
    format!(
        r#"
retry: {{ initial_interval: 10ms, max_interval: 50ms }}
server_max_body_placeholder: ~
destinations:
  crm: {{ url: "{}" }}
routes:
  - name: all-views
    event: view
    to: [crm]
"#,
        receiver.url("/crm")
    )
    .replace("server_max_body_placeholder: ~\n", "")
}

#[tokio::test]
async fn refusals_have_statuses_and_json_reasons_and_deliver_nothing() {
    let receiver = Receiver::start().await;
    let daemon = TestDaemon::start(&config(&receiver)).await;
    let view = fixture("view.json");

    let (status, body) = daemon.post("view", None, view.clone()).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("missing_key")));
    let (status, body) = daemon.post("view", Some("wrong"), view.clone()).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_key")));
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    // A key that is a prefix of the right one is still wrong.
    let (status, _) = daemon.post("view", Some(&KEY[..4]), view.clone()).await;
    assert_eq!(status, 401);

    let (status, body) = daemon.post("view", Some(KEY), "{not json").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_json"))
    );
    let (status, body) = daemon.post("view", Some(KEY), "[1,2]").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("not_an_object"))
    );
    let (status, body) = daemon.post("view", Some(KEY), vec![0xff, 0xfe, b'{']).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_json"))
    );

    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(1024 * 1024 + 10));
    let (status, body) = daemon.post("view", Some(KEY), huge).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("body_too_large"))
    );

    let (status, body) = daemon.post("purchase", Some(KEY), view.clone()).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, body) = daemon.request(reqwest::Method::GET, "/webhooks/view").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let (status, body) = daemon.request(reqwest::Method::GET, "/healthz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));

    // The daemon is idle: no job was created, nothing reached the receiver.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(daemon.running().store().pending_count(), 0);
    assert!(receiver.requests().is_empty(), "{:?}", receiver.requests());

    // And a valid request right after still goes through.
    let (status, body) = daemon.post("view", Some(KEY), view).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("accepted")));
    receiver.wait_for(1, Duration::from_secs(5)).await;
    daemon.stop().await;
}

#[tokio::test]
async fn an_oversize_declared_body_is_refused_before_it_is_sent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let receiver = Receiver::start().await;
    let daemon = TestDaemon::start(&config(&receiver)).await;
    let mut stream = tokio::net::TcpStream::connect(daemon.addr).await.unwrap();
    let head = format!(
        "POST /webhooks/view HTTP/1.1\r\nHost: x\r\nX-KEY: {KEY}\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // Only the head and one byte were sent; the answer comes anyway.
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("answered without the body")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("body_too_large"), "{text}");
    daemon.stop().await;
}
