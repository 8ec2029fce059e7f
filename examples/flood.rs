//! The flood benchmark's client: real webhooks at a fixed rate while slowloris and idle
//! connections try to crowd them out (issue 18).
//!
//! ```text
//! flood ADDR KEY BODY_FILE SLOWLORIS IDLE SECONDS RATE [SOURCES]
//! ```
//! First SECONDS of real webhooks with no attack (the reference, in the same run), then the
//! attack: SLOWLORIS connections that each send a request line and one more header line
//! every second, never finishing the head, and IDLE connections that send nothing; every
//! attacking connection that the server closes is opened again at once. Attackers connect
//! from SOURCES loopback addresses (127.0.0.2, 127.0.0.3, ...; default 1), the real webhooks
//! from 127.0.0.1. Once the attackers are connected, SECONDS more of real webhooks.
//!
//! Real webhooks go out open-loop at RATE per second, each on a new connection (as a
//! sender that does not keep connections alive), with a distinct `id`, and latency runs
//! from when a request should have been sent to its whole answer (so a stall cannot hide).
//! Prints one JSON line per phase: sent, ok (200 accepted), failed, p50/p99/max in ms, and
//! for the attack the attacking connections open and how often they were reopened.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

struct Args {
    addr: SocketAddr,
    key: String,
    body: serde_json::Value,
    slowloris: usize,
    idle: usize,
    seconds: u64,
    rate: u64,
    sources: u8,
}

fn args() -> Result<Args, String> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 7 {
        return Err("usage: flood ADDR KEY BODY_FILE SLOWLORIS IDLE SECONDS RATE [SOURCES]".into());
    }
    let num = |i: usize| a[i].parse::<u64>().map_err(|e| format!("{}: {e}", a[i]));
    let body = std::fs::read(&a[2]).map_err(|e| format!("{}: {e}", a[2]))?;
    Ok(Args {
        addr: a[0].parse().map_err(|e| format!("{}: {e}", a[0]))?,
        key: a[1].clone(),
        body: serde_json::from_slice(&body).map_err(|e| format!("{}: {e}", a[2]))?,
        slowloris: num(3)? as usize,
        idle: num(4)? as usize,
        seconds: num(5)?,
        rate: num(6)?.max(1),
        sources: a
            .get(7)
            .map_or(Ok(1), |s| s.parse().map_err(|e| format!("{s}: {e}")))?,
    })
}

/// Attack counters.
#[derive(Default)]
struct Attack {
    open: AtomicU64,
    reopened: AtomicU64,
}

async fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(addr).await
}

/// One slowloris (`slow`) or idle connection, opened again whenever the server closes it.
async fn attacker(addr: SocketAddr, source: Ipv4Addr, slow: bool, stats: Arc<Attack>) {
    let mut first = true;
    loop {
        let Ok(mut s) = connect_from(source, addr).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if !first {
            stats.reopened.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        stats.open.fetch_add(1, Ordering::Relaxed);
        let (mut rd, mut wr) = s.split();
        let mut buf = [0u8; 512];
        let talk = async {
            if !slow {
                return std::future::pending::<()>().await;
            }
            if wr
                .write_all(b"POST /webhooks/view HTTP/1.1\r\nHost: flood\r\n")
                .await
                .is_err()
            {
                return;
            }
            for i in 0u64.. {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let line = format!("X-Slow-{i}: a\r\n");
                if wr.write_all(line.as_bytes()).await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            _ = rd.read(&mut buf) => {}
            () = talk => {}
        }
        stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sends one webhook on a new connection; Ok(latency) for a 200, else why not.
async fn webhook(addr: SocketAddr, request: Vec<u8>) -> Result<(), String> {
    let mut s = connect_from(Ipv4Addr::LOCALHOST, addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(&request)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!("closed after {:?}", String::from_utf8_lossy(&buf)));
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let head = &text[..end];
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let body = &text[end + 4..];
                return if head.starts_with("HTTP/1.1 200") && body.contains("\"accepted\"") {
                    Ok(())
                } else {
                    Err(format!("{head:?} {body:?}"))
                };
            }
        }
    }
}

/// `seconds` of webhooks at `rate` per second; prints and returns the JSON summary.
async fn phase(
    args: &Args,
    name: &str,
    nonce: &str,
    extra: serde_json::Value,
) -> serde_json::Value {
    let interval = Duration::from_nanos(1_000_000_000 / args.rate);
    let total = args.rate * args.seconds;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..total {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let mut body = args.body.clone();
        body["id"] = serde_json::json!(format!("{nonce}-{name}-{i}"));
        let body = body.to_string();
        let mut request = format!(
            "POST /webhooks/view HTTP/1.1\r\nHost: flood\r\nX-KEY: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            args.key,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body.as_bytes());
        let addr = args.addr;
        tasks.push(tokio::spawn(async move {
            let result = tokio::time::timeout(Duration::from_secs(60), webhook(addr, request))
                .await
                .unwrap_or_else(|_| Err("no answer within 60 s".into()));
            (due.elapsed(), result)
        }));
    }
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    for t in tasks {
        match t.await {
            Ok((latency, Ok(()))) => latencies.push(latency),
            Ok((_, Err(e))) => failures.push(e),
            Err(e) => failures.push(e.to_string()),
        }
    }
    latencies.sort();
    let ms = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let mut out = serde_json::json!({
        "phase": name,
        "sent": total,
        "ok": latencies.len(),
        "failed": failures.len(),
        "p50_ms": ms(0.50),
        "p99_ms": ms(0.99),
        "max_ms": latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        "first_failures": failures.iter().take(3).collect::<Vec<_>>(),
    });
    if let (Some(o), Some(e)) = (out.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    println!("{out}");
    out
}

#[tokio::main]
async fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("flood: {e}");
            std::process::exit(2);
        }
    };
    let nonce = format!(
        "flood{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    phase(&args, "quiet", &nonce, serde_json::json!({})).await;

    let stats = Arc::new(Attack::default());
    let want = (args.slowloris + args.idle) as u64;
    let sources = args.sources.max(1);
    for i in 0..args.slowloris + args.idle {
        let source = Ipv4Addr::new(127, 0, 0, 2 + (i % sources as usize) as u8);
        tokio::spawn(attacker(
            args.addr,
            source,
            i < args.slowloris,
            stats.clone(),
        ));
    }
    let opening = Instant::now();
    while stats.open.load(Ordering::Relaxed) < want && opening.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let opened_s = opening.elapsed().as_secs_f64();
    let reopened_before = stats.reopened.load(Ordering::Relaxed);
    let attack_start = Instant::now();
    let result = phase(&args, "flood", &nonce, serde_json::json!({})).await;
    let reopened = stats.reopened.load(Ordering::Relaxed) - reopened_before;
    println!(
        "{}",
        serde_json::json!({
            "phase": "attack",
            "slowloris": args.slowloris,
            "idle": args.idle,
            "sources": sources,
            "opened_in_s": opened_s,
            "open_at_end": stats.open.load(Ordering::Relaxed),
            "reopened_per_s": reopened as f64 / attack_start.elapsed().as_secs_f64(),
        })
    );
    if result["failed"].as_u64() != Some(0) {
        std::process::exit(1);
    }
}
