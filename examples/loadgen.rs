//! The benchmark's load generator for what `wrk` cannot do: an open-loop run at a fixed
//! request rate (latency measured from when each request *should* have been sent, so a
//! stalled server cannot hide its stall: no coordinated omission), and a closed-loop run
//! that stops after an exact number of requests (to seed the store with pending jobs).
//!
//! ```text
//! loadgen [--unique PLACEHOLDER] [--nonce TEXT] ADDR PATH KEY BODY_FILE CONNS RATE SECONDS [COUNT]
//! ```
//! `RATE` 0 means as fast as possible (closed loop); `COUNT` 0 or absent means no limit.
//! With `--unique`, every occurrence of `PLACEHOLDER` in the body is replaced, in each
//! request, by a text no other request of this run has (`NONCE-CONNECTION-SEQUENCE`; the
//! nonce defaults to the start time in nanoseconds, so two runs differ too), and the
//! `Content-Length` follows: every request is a new event, not a resend. Put the placeholder
//! inside the payload's `id` string.
//! Prints one JSON line: sent, ok (2xx), errors, accepted and duplicate (2xx answers whose body
//! says `"status":"accepted"` / `"status":"duplicate"`, as hookrouter answers), rate achieved,
//! p50/p90/p99/max in ms. Plain HTTP/1.1 over keep-alive TCP connections on loopback;
//! nothing else.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// What each request carries: a fixed request, or a body with a per-request id spliced in.
enum Template {
    /// The same bytes every time (head and body).
    Fixed(Vec<u8>),
    /// The request head up to `Content-Length: `, then the body split around the placeholder.
    Unique {
        head: String,
        parts: Vec<Vec<u8>>,
        nonce: String,
    },
}

impl Template {
    /// Writes connection `conn`'s `seq`-th request into `out`.
    fn render(&self, conn: u64, seq: u64, out: &mut Vec<u8>) {
        out.clear();
        match self {
            Template::Fixed(bytes) => out.extend_from_slice(bytes),
            Template::Unique { head, parts, nonce } => {
                let id = format!("{nonce}-{conn}-{seq}");
                let length =
                    parts.iter().map(Vec::len).sum::<usize>() + id.len() * (parts.len() - 1);
                out.extend_from_slice(head.as_bytes());
                out.extend_from_slice(format!("{length}\r\n\r\n").as_bytes());
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        out.extend_from_slice(id.as_bytes());
                    }
                    out.extend_from_slice(part);
                }
            }
        }
    }
}

/// Splits `body` at every occurrence of `needle`.
fn split_at_placeholder(body: &[u8], needle: &[u8]) -> Vec<Vec<u8>> {
    let mut parts = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.windows(needle.len()).position(|w| w == needle) {
        parts.push(rest[..i].to_vec());
        rest = &rest[i + needle.len()..];
    }
    parts.push(rest.to_vec());
    parts
}

/// Counters shared by every connection.
#[derive(Default)]
struct Counts {
    issued: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    accepted: AtomicU64,
    duplicate: AtomicU64,
}

/// One run's settings, from the command line.
#[derive(Clone)]
struct Plan {
    addr: SocketAddr,
    template: Arc<Template>,
    conns: u64,
    rate: u64,
    duration: Duration,
    count: u64,
}

/// Reads one response; returns its status and body.
async fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<(u16, Vec<u8>)> {
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
    Ok((status, body))
}

/// True when `haystack` contains `needle`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// One connection's share of the run; returns latencies in microseconds.
async fn connection(plan: Plan, index: u64, counts: Arc<Counts>) -> Vec<u32> {
    let mut latencies = Vec::new();
    let mut request = Vec::new();
    let start = Instant::now();
    let mut stream: Option<BufReader<TcpStream>> = None;
    let mut k = 0u64;
    while start.elapsed() < plan.duration {
        if plan.count > 0 && counts.issued.fetch_add(1, Ordering::Relaxed) >= plan.count {
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
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(conn) = stream.as_mut() else {
            continue;
        };
        plan.template.render(index, k, &mut request);
        let result = async {
            conn.get_mut().write_all(&request).await?;
            read_response(conn).await
        }
        .await;
        match result {
            Ok((status, body)) if (200..300).contains(&status) => {
                counts.ok.fetch_add(1, Ordering::Relaxed);
                if contains(&body, b"\"status\":\"accepted\"") {
                    counts.accepted.fetch_add(1, Ordering::Relaxed);
                } else if contains(&body, b"\"status\":\"duplicate\"") {
                    counts.duplicate.fetch_add(1, Ordering::Relaxed);
                }
                latencies.push(u32::try_from(intended.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            Ok(_) => {
                counts.errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                counts.errors.fetch_add(1, Ordering::Relaxed);
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
        "usage: loadgen [--unique PLACEHOLDER] [--nonce TEXT] ADDR PATH KEY BODY_FILE CONNS RATE SECONDS [COUNT]",
    )
}

fn main() -> std::io::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut placeholder = None;
    let mut nonce = None;
    while args.first().is_some_and(|a| a.starts_with("--")) {
        let flag = args.remove(0);
        if args.is_empty() {
            return Err(usage());
        }
        let value = args.remove(0);
        match flag.as_str() {
            "--unique" if !value.is_empty() => placeholder = Some(value),
            "--nonce" => nonce = Some(value),
            _ => return Err(usage()),
        }
    }
    if args.len() < 7 {
        return Err(usage());
    }
    let addr: SocketAddr = args[0].parse().map_err(|_| usage())?;
    let body = std::fs::read(&args[3])?;
    let number = |i: usize| -> std::io::Result<u64> {
        args.get(i)
            .map_or(Ok(0), |s| s.parse().map_err(|_| usage()))
    };
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nX-KEY: {}\r\nContent-Type: application/json\r\nContent-Length: ",
        args[1], addr, args[2],
    );
    let template = match placeholder {
        None => {
            let mut request = format!("{head}{}\r\n\r\n", body.len()).into_bytes();
            request.extend_from_slice(&body);
            Template::Fixed(request)
        }
        Some(placeholder) => {
            let parts = split_at_placeholder(&body, placeholder.as_bytes());
            if parts.len() < 2 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("--unique {placeholder:?}: the body file does not contain it"),
                ));
            }
            let nonce = nonce.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
                    .to_string()
            });
            Template::Unique { head, parts, nonce }
        }
    };
    let plan = Plan {
        addr,
        template: Arc::new(template),
        conns: number(4)?.max(1),
        rate: number(5)?,
        duration: Duration::from_secs(number(6)?),
        count: number(7)?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let counts = Arc::new(Counts::default());
    let (mut latencies, elapsed) = runtime.block_on(async {
        let started = Instant::now();
        let tasks: Vec<_> = (0..plan.conns)
            .map(|i| tokio::spawn(connection(plan.clone(), i, counts.clone())))
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            if let Ok(mut l) = t.await {
                all.append(&mut l);
            }
        }
        (all, started.elapsed())
    });
    let ok = counts.ok.load(Ordering::Relaxed);
    let errors = counts.errors.load(Ordering::Relaxed);
    let sent = ok + errors;
    let accepted = counts.accepted.load(Ordering::Relaxed);
    let duplicate = counts.duplicate.load(Ordering::Relaxed);
    latencies.sort_unstable();
    println!(
        "{{\"sent\":{sent},\"ok\":{ok},\"errors\":{errors},\"accepted\":{accepted},\"duplicate\":{duplicate},\"seconds\":{:.2},\"rps\":{:.0},\"p50_ms\":{:.2},\"p90_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2}}}",
        elapsed.as_secs_f64(),
        ok as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
    Ok(())
}
