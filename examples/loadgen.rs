//! The benchmark's load generator for what `wrk` cannot do: an open-loop run at a fixed
//! request rate (latency measured from when each request *should* have been sent, so a
//! stalled server cannot hide its stall: no coordinated omission), and a closed-loop run
//! that stops after an exact number of requests (to seed the store with pending jobs).
//!
//! ```text
//! loadgen ADDR PATH KEY BODY_FILE CONNS RATE SECONDS [COUNT]
//! ```
//! `RATE` 0 means as fast as possible (closed loop); `COUNT` 0 or absent means no limit.
//! Prints one JSON line: sent, ok (2xx), errors, rate achieved, p50/p90/p99/max in ms.
//! Plain HTTP/1.1 over keep-alive TCP connections on loopback; nothing else.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One run's settings, from the command line.
#[derive(Clone)]
struct Plan {
    addr: SocketAddr,
    request: Arc<Vec<u8>>,
    conns: u64,
    rate: u64,
    duration: Duration,
    count: u64,
}

/// Reads one response; returns its status.
async fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<u16> {
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut length = 0usize;
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await?;
    Ok(status)
}

/// One connection's share of the run; returns latencies in microseconds.
async fn connection(
    plan: Plan,
    index: u64,
    issued: Arc<AtomicU64>,
    ok: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
) -> Vec<u32> {
    let mut latencies = Vec::new();
    let start = Instant::now();
    let mut stream: Option<BufReader<TcpStream>> = None;
    let mut k = 0u64;
    while start.elapsed() < plan.duration {
        if plan.count > 0 && issued.fetch_add(1, Ordering::Relaxed) >= plan.count {
            break;
        }
        // Open loop: this connection's k-th request is due at (k * conns + index) / rate.
        let intended = if plan.rate > 0 {
            let at =
                start + Duration::from_secs_f64((k * plan.conns + index) as f64 / plan.rate as f64);
            tokio::time::sleep_until(at.into()).await;
            at
        } else {
            Instant::now()
        };
        k += 1;
        if stream.is_none() {
            match TcpStream::connect(plan.addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    stream = Some(BufReader::new(s));
                }
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(conn) = stream.as_mut() else {
            continue;
        };
        let result = async {
            conn.get_mut().write_all(&plan.request).await?;
            read_response(conn).await
        }
        .await;
        match result {
            Ok(status) if (200..300).contains(&status) => {
                ok.fetch_add(1, Ordering::Relaxed);
                latencies.push(u32::try_from(intended.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            Ok(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
                stream = None;
            }
        }
    }
    latencies
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)]) / 1000.0
}

fn usage() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        "usage: loadgen ADDR PATH KEY BODY_FILE CONNS RATE SECONDS [COUNT]",
    )
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 7 {
        return Err(usage());
    }
    let addr: SocketAddr = args[0].parse().map_err(|_| usage())?;
    let body = std::fs::read(&args[3])?;
    let number = |i: usize| -> std::io::Result<u64> {
        args.get(i)
            .map_or(Ok(0), |s| s.parse().map_err(|_| usage()))
    };
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nX-KEY: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        args[1],
        addr,
        args[2],
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let plan = Plan {
        addr,
        request: Arc::new(request),
        conns: number(4)?.max(1),
        rate: number(5)?,
        duration: Duration::from_secs(number(6)?),
        count: number(7)?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (sent, ok, errors, mut latencies, elapsed) = runtime.block_on(async {
        let issued = Arc::new(AtomicU64::new(0));
        let ok = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = (0..plan.conns)
            .map(|i| {
                tokio::spawn(connection(
                    plan.clone(),
                    i,
                    issued.clone(),
                    ok.clone(),
                    errors.clone(),
                ))
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            if let Ok(mut l) = t.await {
                all.append(&mut l);
            }
        }
        let ok = ok.load(Ordering::Relaxed);
        let errors = errors.load(Ordering::Relaxed);
        (ok + errors, ok, errors, all, started.elapsed())
    });
    latencies.sort_unstable();
    println!(
        "{{\"sent\":{sent},\"ok\":{ok},\"errors\":{errors},\"seconds\":{:.2},\"rps\":{:.0},\"p50_ms\":{:.2},\"p90_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2}}}",
        elapsed.as_secs_f64(),
        ok as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
    Ok(())
}
