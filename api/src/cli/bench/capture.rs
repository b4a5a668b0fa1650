//! `ocart bench capture`: the capture endpoint over HTTP: requests/s, p50 and p99.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ocart_domain::SystemClock;

use super::{machine, BenchStore, CaptureArgs};
use crate::config::Config;
use crate::Application;

/// A capture body, formatted rather than serialised so the load generator stays cheap: a new
/// checkout session per request, 5,000 distinct shoppers, two items.
pub(super) fn capture_payload(i: u64) -> String {
    format!(
        r#"{{"session_token":"bench-session-{i:012}-{}","email":"shopper{}@example.com","consent":true,"source":"block","stage":"{}","currency":"EUR","items":[{{"product_id":42,"name":"Mug","quantity":{},"unit_price":1250,"categories":["kitchen"]}},{{"product_id":7,"name":"Tea","quantity":2,"unit_price":450}}]}}"#,
        i % 7,
        i % 5000,
        if i.is_multiple_of(2) {
            "checkout"
        } else {
            "cart"
        },
        1 + i % 3
    )
}

/// The load generator's side of one keep-alive HTTP/1.1 connection: it writes a request and
/// reads the response's head and `Content-Length` body, like wrk, so that the client costs
/// little of the two cores it shares with the server (reqwest took about a third of them).
pub(super) struct LoadConnection {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
    request: Vec<u8>,
    line: String,
}

impl LoadConnection {
    pub(super) async fn open(port: u16) -> std::io::Result<Self> {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: tokio::io::BufReader::new(stream),
            request: Vec::with_capacity(1024),
            line: String::with_capacity(128),
        })
    }

    /// Sends one request (`headers`: extra header lines, each ending in `\r\n`) and returns
    /// the response status; the body goes to `out` when `keep` (else it is read and dropped).
    pub(super) async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &str,
        body: &str,
        out: &mut Vec<u8>,
        keep: bool,
    ) -> std::io::Result<u16> {
        use std::io::Write as _;
        use std::io::{Error, ErrorKind};
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

        self.request.clear();
        write!(
            self.request,
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{headers}\r\n{body}",
            body.len()
        )?;
        self.stream.get_mut().write_all(&self.request).await?;
        let mut status = 0u16;
        let mut length = 0usize;
        let mut first = true;
        loop {
            self.line.clear();
            if self.stream.read_line(&mut self.line).await? == 0 {
                return Err(Error::new(
                    ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
            let line = self.line.trim_end();
            if first {
                status = line
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| Error::new(ErrorKind::InvalidData, "no status line"))?;
                first = false;
            } else if line.is_empty() {
                break;
            } else if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        out.clear();
        let mut remaining = length;
        let mut sink = [0u8; 1024];
        while remaining > 0 {
            let n = self.stream.read(&mut sink[..remaining.min(1024)]).await?;
            if n == 0 {
                return Err(Error::new(
                    ErrorKind::UnexpectedEof,
                    "the body was cut short",
                ));
            }
            if keep {
                out.extend_from_slice(&sink[..n]);
            }
            remaining -= n;
        }
        Ok(status)
    }
}

/// What [`load`] measured: each request's latency in µs (sorted), the failures, the time.
pub(super) struct Load {
    latencies: Vec<u64>,
    pub(super) errors: u64,
    elapsed: f64,
}

impl Load {
    pub(super) fn requests(&self) -> usize {
        self.latencies.len()
    }

    pub(super) fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed
    }

    /// The `q` quantile of the latencies, in milliseconds.
    pub(super) fn ms(&self, q: f64) -> f64 {
        percentile(&self.latencies, q)
    }
}

/// The `q` quantile of `sorted` (µs), in milliseconds (0 when empty).
pub(super) fn percentile(sorted: &[u64], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0) as f64
        / 1000.0
}

/// `connections` keep-alive connections sending `request(i)` (method, path, body; `i` counts
/// the requests of all of them) as fast as answers come, for `duration`. A status outside `ok`
/// or a broken connection (opened again) counts as an error.
pub(super) async fn load(
    port: u16,
    connections: usize,
    duration: Duration,
    ok: std::ops::Range<u16>,
    request: impl Fn(u64) -> (&'static str, String, String) + Send + Sync + 'static,
) -> anyhow::Result<Load> {
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let request = Arc::new(request);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (stop, next, errors, request, ok) = (
            stop.clone(),
            next.clone(),
            errors.clone(),
            request.clone(),
            ok.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            let mut sink = Vec::new();
            let Ok(mut conn) = LoadConnection::open(port).await else {
                errors.fetch_add(1, Ordering::Relaxed);
                return latencies;
            };
            while !stop.load(Ordering::Relaxed) {
                let (method, path, body) = request(next.fetch_add(1, Ordering::Relaxed));
                let started = Instant::now();
                match conn.send(method, &path, "", &body, &mut sink, false).await {
                    Ok(status) if ok.contains(&status) => {}
                    Ok(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        match LoadConnection::open(port).await {
                            Ok(fresh) => conn = fresh,
                            Err(_) => break,
                        }
                    }
                }
                latencies.push(started.elapsed().as_micros() as u64);
            }
            latencies
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Ok(Load {
        latencies,
        errors: errors.load(Ordering::Relaxed),
        elapsed,
    })
}

pub(super) async fn run(args: CaptureArgs) -> anyhow::Result<()> {
    println!(
        "# ocart bench capture — {}; {} connections, {} s",
        machine(),
        args.connections,
        args.common.seconds
    );
    println!("| backend | requests | requests/s | p50 ms | p99 ms | non-2xx | relay lag → 0 after the end |");
    println!("|---|---|---|---|---|---|---|");
    for backend in &args.common.backends {
        let store = BenchStore::new(backend, &args.common.pg_url).await?;
        let mut config = Config {
            database_url: Some(store.url.clone()),
            data_dir: store.dir.clone().unwrap_or_else(std::env::temp_dir),
            bind: "127.0.0.1:0".parse()?,
            ..Config::default()
        };
        config.rate_limit.capture_requests = 0;
        config.nats_url = args.nats.clone();
        config.processors.enabled = !args.without_processors;
        let app = Application::build(config, Arc::new(SystemClock)).await?;
        let port = app.port();
        let core = app.core();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async move {
            let _ = stop_rx.await;
        }));
        let load = load(
            port,
            args.connections,
            Duration::from_secs(args.common.seconds),
            200..300,
            |i| {
                (
                    "POST",
                    "/ocart/v1/checkout/capture".to_owned(),
                    capture_payload(i),
                )
            },
        )
        .await?;
        let relay = if args.nats.is_some() {
            let end = Instant::now();
            let mut caught_up = None;
            while end.elapsed() < Duration::from_secs(60) {
                let at = ocart_projections::load_checkpoint(&core.db, "nats_relay").await?;
                if ocart_projections::queries::lag_after(&core.db, at).await? == 0 {
                    caught_up = Some(end.elapsed().as_secs_f64());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            caught_up
                .map(|s| format!("{s:.2} s"))
                .unwrap_or_else(|| "> 60 s".into())
        } else {
            "relay off".into()
        };
        println!(
            "| {backend} | {} | {:.0} | {:.1} | {:.1} | {} | {relay} |",
            load.requests(),
            load.per_second(),
            load.ms(0.50),
            load.ms(0.99),
            load.errors
        );
        let _ = stop_tx.send(());
        let _ = server.await;
        core.db.close().await;
        store.remove().await;
    }
    Ok(())
}
