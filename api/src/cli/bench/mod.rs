//! `ocart bench …`: the figures in BENCHMARKS.md. Each bench makes its own stores (a SQLite file
//! in a temporary folder; a throw-away PostgreSQL database on the server named by `--pg-url`)
//! and removes them afterwards.

pub(crate) mod aa;
mod append;
mod assign;
mod capture;
mod dispatch;
mod replay;
mod resolve;
mod seed;
pub(crate) mod stats;
mod sweep;
mod upsell;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use uuid::Uuid;

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Events/s appended with 1, 16 and 64 concurrent writers, 1 and 5 events per command,
    /// on each backend, and pgbench's raw ceiling for comparison.
    Append(BenchArgs),
    /// The capture endpoint over HTTP at 64 connections: requests/s, p50 and p99.
    Capture(CaptureArgs),
    /// Rebuild of the carts projection from a log of N events: events/s.
    Replay(ReplayArgs),
    /// The recovery dispatcher sending N due first steps over SMTP to an in-process SMTP
    /// sink, with the projections running: messages/s.
    Dispatch(DispatchArgs),
    /// The abandonment sweep over N captured carts gone quiet at once, with the recovery
    /// opener and the projections running: seconds until every cart is marked abandoned, and
    /// until every run is open.
    Sweep(SweepArgs),
    /// `GET /funnels/resolve` (the checkout page's read) for a store with 1,000 bumps and 100
    /// funnels at 64 connections: lookups/s, p50 and p99.
    Resolve(ResolveArgs),
    /// `GET /funnels/resolve` on the store of `bench resolve`, without and then with a running
    /// checkout test (two layouts) at 64 connections: requests/s, p50, p99 and the ratio.
    Assign(AssignArgs),
    /// One-click upsells end to end (issue-token → accept → Stripe charge → WooCommerce child
    /// order, both stand-ins in process) with 64 concurrent shoppers: accepts/s, p50, p99.
    Upsell(UpsellArgs),
    /// The A/B test calculator: one two-arm `compare` (frequentist, Bayesian and SRM, as
    /// `POST /stats/compare` computes it, without HTTP) at 10^3, 10^6 and 10^8 visitors per
    /// arm: µs per call, mean and p99 (`--json` for JSON). No store.
    Stats(stats::StatsArgs),
    /// Continuously monitored A/A tests under each conclusion method (the production rules,
    /// checked after every batch): how many end with a false winner, against the bound
    /// 1 − significance (`--json` for JSON). No store.
    Aa(aa::AaArgs),
}

#[derive(Debug, Args)]
pub struct UpsellArgs {
    #[command(flatten)]
    pub common: BenchArgs,
    /// Concurrent shoppers.
    #[arg(long, default_value_t = 64)]
    pub shoppers: usize,
    /// Paid parent orders seeded (each shopper takes the next; the run ends early when they
    /// are used up).
    #[arg(long, default_value_t = 6_000)]
    pub orders: u64,
}

#[derive(Debug, Args)]
pub struct ResolveArgs {
    #[command(flatten)]
    pub common: BenchArgs,
    /// Concurrent HTTP connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Bumps in the store.
    #[arg(long, default_value_t = 1_000)]
    pub offers: usize,
    /// Funnels in the store.
    #[arg(long, default_value_t = 100)]
    pub funnels: usize,
    /// Captured carts the shoppers resolve by.
    #[arg(long, default_value_t = 1_000)]
    pub carts: u64,
}

#[derive(Debug, Args)]
pub struct AssignArgs {
    #[command(flatten)]
    pub common: BenchArgs,
    /// Concurrent HTTP connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Bumps in the store.
    #[arg(long, default_value_t = 1_000)]
    pub offers: usize,
    /// Funnels in the store.
    #[arg(long, default_value_t = 100)]
    pub funnels: usize,
    /// Captured carts the shoppers resolve by, again and again.
    #[arg(long, default_value_t = 1_000)]
    pub carts: u64,
    /// One request in this many is a new cart's first resolve (one assignment under a test).
    #[arg(long, default_value_t = 10)]
    pub fresh_every: u64,
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    #[command(flatten)]
    pub common: BenchArgs,
    /// Captured carts, all inactive past the threshold when the sweep starts.
    #[arg(long, default_value_t = 1_000_000)]
    pub carts: u64,
}

#[derive(Debug, Args)]
pub struct DispatchArgs {
    #[command(flatten)]
    pub common: BenchArgs,
    /// Abandoned carts, each with a run whose first step is due.
    #[arg(long, default_value_t = 5_000)]
    pub runs: u64,
    /// Runs handled at once within a dispatcher pass.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Backends to measure.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    pub backends: Vec<String>,
    /// A PostgreSQL server (any database) on which a throw-away database is created.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pub pg_url: String,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
}

#[derive(Debug, Args)]
pub struct CaptureArgs {
    #[command(flatten)]
    pub common: BenchArgs,
    /// Concurrent HTTP connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Also run the NATS relay against this server and time how long its lag takes to reach 0.
    #[arg(long)]
    pub nats: Option<String>,
    /// Run without the background processors (projections, sweeper, relay), to see the
    /// command path alone.
    #[arg(long)]
    pub without_processors: bool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub common: BenchArgs,
    /// Events in the log to rebuild from.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
}

/// A throw-away store.
struct BenchStore {
    url: String,
    dir: Option<PathBuf>,
    pg: Option<(String, String)>,
}

impl BenchStore {
    async fn new(backend: &str, pg_url: &str) -> anyhow::Result<Self> {
        match backend {
            "sqlite" => {
                let dir =
                    std::env::temp_dir().join(format!("ocart-bench-{}", Uuid::new_v4().simple()));
                std::fs::create_dir_all(&dir)?;
                Ok(Self {
                    url: format!("sqlite://{}", dir.join("ocart.db").display()),
                    dir: Some(dir),
                    pg: None,
                })
            }
            "postgres" => {
                let name = format!("ocart_bench_{}", Uuid::new_v4().simple());
                let pool = sqlx::PgPool::connect(pg_url).await.with_context(|| {
                    format!("connecting to {}", ocart_projections::redact(pg_url))
                })?;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&pool)
                    .await?;
                pool.close().await;
                let base = pg_url
                    .rsplit_once('/')
                    .map(|(b, _)| b.to_owned())
                    .unwrap_or_else(|| pg_url.to_owned());
                Ok(Self {
                    url: format!("{base}/{name}"),
                    dir: None,
                    pg: Some((pg_url.to_owned(), name)),
                })
            }
            other => anyhow::bail!("unknown backend {other:?}: use sqlite or postgres"),
        }
    }

    async fn remove(self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some((admin, name)) = &self.pg {
            if let Ok(pool) = sqlx::PgPool::connect(admin).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&pool)
                    .await;
                pool.close().await;
            }
        }
    }
}

pub async fn run(cmd: BenchCmd, _config: Config) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Append(args) => append::run(args).await,
        BenchCmd::Capture(args) => capture::run(args).await,
        BenchCmd::Replay(args) => replay::run(args).await,
        BenchCmd::Dispatch(args) => dispatch::run(args).await,
        BenchCmd::Sweep(args) => sweep::run(args).await,
        BenchCmd::Resolve(args) => resolve::run(args).await,
        BenchCmd::Assign(args) => assign::run(args).await,
        BenchCmd::Upsell(args) => upsell::run(args).await,
        // `ocart bench stats` comes through `cli::run`, which passes `--json`; this is the
        // markdown table.
        BenchCmd::Stats(args) => stats::run(&args, false),
        BenchCmd::Aa(args) => aa::run(&args, false),
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    format!("{cores} cores, {model}")
}

/// A core for the recovery benches: on `store`, with a throw-away data folder, a manual
/// clock, the processors off (the bench runs what it measures) and the default sequence;
/// `adjust` tunes the configuration first.
async fn recovery_core(
    store: &BenchStore,
    adjust: impl FnOnce(&mut Config),
) -> anyhow::Result<(
    Arc<crate::core::Core>,
    Arc<ocart_domain::ManualClock>,
    std::path::PathBuf,
)> {
    let data_dir = std::env::temp_dir().join(format!("ocart-bench-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&data_dir)?;
    let mut config = Config {
        database_url: Some(store.url.clone()),
        data_dir: data_dir.clone(),
        ..Config::default()
    };
    config.processors.enabled = false;
    adjust(&mut config);
    let clock = Arc::new(ocart_domain::ManualClock::new(chrono::Utc::now()));
    let core = crate::core::Core::open(config, clock.clone()).await?;
    let meta = ocart_projections::CommandMeta::system("bench", None, chrono::Utc::now());
    core.seed_default_sequence(&meta).await?;
    Ok((core, clock, data_dir))
}

/// CPU time spent so far, in clock ticks (1/100 s on Linux): this process's, and every
/// PostgreSQL process's on the machine (the benches' server shares it). Linux only; zero
/// elsewhere. The difference over a run, per operation, does not depend on what else the
/// machine was doing as much as a rate does.
fn cpu_ticks() -> (u64, u64) {
    fn ticks(stat: &str) -> Option<(String, u64)> {
        // `pid (comm) state …`: comm may hold spaces; the fields after it are fixed.
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let comm = stat.get(open + 1..close)?.to_owned();
        let rest: Vec<&str> = stat.get(close + 2..)?.split(' ').collect();
        let utime: u64 = rest.get(11)?.parse().ok()?;
        let stime: u64 = rest.get(12)?.parse().ok()?;
        Some((comm, utime + stime))
    }
    let own = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| ticks(&s))
        .map_or(0, |(_, t)| t);
    let mut postgres = 0;
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let path = entry.path().join("stat");
            if let Some((comm, t)) = std::fs::read_to_string(path).ok().and_then(|s| ticks(&s)) {
                if comm == "postgres" {
                    postgres += t;
                }
            }
        }
    }
    (own, postgres)
}
