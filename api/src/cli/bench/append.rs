//! `ocart bench append`: events/s appended by concurrent writers, and pgbench's raw ceiling.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ocart_domain::metadata::{chain_hash, GENESIS_HASH};
use ocart_projections::{Db, EventLog, NewEvent};
use serde_json::json;
use uuid::Uuid;

use super::{machine, BenchArgs, BenchStore};

pub(super) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    println!(
        "# ocart bench append — {}; {} s per figure",
        machine(),
        args.seconds
    );
    let ceiling = pgbench_ceiling(&args.pg_url, args.seconds).await;
    match &ceiling {
        Ok(tps) => {
            println!("pgbench ceiling: one-row INSERT transactions, 16 clients: {tps:.0} rows/s")
        }
        Err(err) => println!("pgbench ceiling: not measured ({err:#})"),
    }
    println!("| backend | writers | events/command | events/s | commands/s | vs pgbench |");
    println!("|---|---|---|---|---|---|");
    for backend in &args.backends {
        for writers in [1usize, 16, 64] {
            for per in [1usize, 5] {
                let store = BenchStore::new(backend, &args.pg_url).await?;
                let db = Db::connect(&store.url, 16).await?;
                db.migrate().await?;
                let log = EventLog::open(db.clone()).await?;
                let events =
                    run_appends(&log, writers, per, Duration::from_secs(args.seconds)).await?;
                let rate = events as f64 / args.seconds as f64;
                let ratio = ceiling
                    .as_ref()
                    .map(|c| format!("{:.2}×", rate / c))
                    .unwrap_or_else(|_| "—".into());
                println!(
                    "| {backend} | {writers} | {per} | {rate:.0} | {:.0} | {ratio} |",
                    rate / per as f64
                );
                db.close().await;
                store.remove().await;
            }
        }
    }
    Ok(())
}

fn probe(aggregate: &str, sequence: i64) -> NewEvent {
    let payload =
        json!({"n": sequence, "items": [{"product_id": 42, "quantity": 1, "unit_price": 1250}]});
    NewEvent {
        event_id: Uuid::now_v7(),
        aggregate_type: "bench".into(),
        aggregate_id: aggregate.into(),
        sequence,
        event_type: "bench/appended".into(),
        event_version: "1".into(),
        metadata: json!({"actor": "bench", "hash": chain_hash(GENESIS_HASH, "bench/appended", &payload)}),
        payload,
    }
}

async fn run_appends(
    log: &EventLog,
    writers: usize,
    per: usize,
    span: Duration,
) -> anyhow::Result<u64> {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (log, stop, count) = (log.clone(), stop.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let aggregate = format!("writer-{w}-{}", Uuid::new_v4().simple());
            let mut sequence = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<NewEvent> = (0..per)
                    .map(|i| probe(&aggregate, sequence + 1 + i as i64))
                    .collect();
                log.append(batch).await?;
                sequence += per as i64;
                count.fetch_add(per as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(span).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    Ok(count.load(Ordering::Relaxed))
}

/// pgbench, 16 clients, one INSERT per transaction into a table shaped like `events`.
async fn pgbench_ceiling(pg_url: &str, seconds: u64) -> anyhow::Result<f64> {
    let store = BenchStore::new("postgres", pg_url).await?;
    let pool = sqlx::PgPool::connect(&store.url).await?;
    sqlx::query(
        "CREATE TABLE events_shape (aggregate_type text NOT NULL, aggregate_id text NOT NULL, sequence bigint NOT NULL, \
         event_type text NOT NULL, event_version text NOT NULL, payload jsonb NOT NULL, metadata jsonb NOT NULL, \
         event_id uuid NOT NULL UNIQUE, recorded_at timestamptz NOT NULL DEFAULT now(), \
         global_position bigint GENERATED ALWAYS AS IDENTITY UNIQUE, transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(), \
         PRIMARY KEY (aggregate_type, aggregate_id, sequence))",
    )
    .execute(&pool)
    .await?;
    pool.close().await;
    let script =
        std::env::temp_dir().join(format!("ocart-pgbench-{}.sql", Uuid::new_v4().simple()));
    std::fs::write(
        &script,
        "INSERT INTO events_shape (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, event_id) \
         VALUES ('bench', gen_random_uuid()::text, 1, 'bench/appended', '1', \
         '{\"n\": 1, \"items\": [{\"product_id\": 42, \"quantity\": 1, \"unit_price\": 1250}]}', '{\"actor\": \"bench\"}', gen_random_uuid());\n",
    )?;
    let out = tokio::process::Command::new("pgbench")
        .args([
            "-n",
            "-c",
            "16",
            "-j",
            "2",
            "-T",
            &seconds.to_string(),
            "-f",
        ])
        .arg(&script)
        .arg(&store.url)
        .output()
        .await
        .context("running pgbench (install postgresql-client)")?;
    let _ = std::fs::remove_file(&script);
    store.remove().await;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| {
            l.trim_start_matches("tps = ")
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
        })
        .with_context(|| format!("pgbench printed no tps: {text}"))
}
