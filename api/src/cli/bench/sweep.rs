//! `ocart bench sweep`: the abandonment sweep over N carts gone quiet at once.

use std::time::{Duration, Instant};

use ocart_projections::Db;

use super::seed::fill_carts;
use super::{machine, recovery_core, BenchStore, SweepArgs};

async fn count_where(db: &Db, sql: &str) -> anyhow::Result<i64> {
    let row: Option<(i64,)> = ocart_projections::fetch_optional_db!(db, (i64,), sql)?;
    Ok(row.map(|(n,)| n).unwrap_or(0))
}

pub(super) async fn run(args: SweepArgs) -> anyhow::Result<()> {
    println!(
        "# ocart bench sweep — {}; {} captured carts gone quiet, sweeper + opener + projections",
        machine(),
        args.carts
    );
    println!("| backend | carts | seed s | all abandoned s | all runs open s | carts/s |");
    println!("|---|---|---|---|---|---|");
    for backend in &args.common.backends {
        let store = BenchStore::new(backend, &args.common.pg_url).await?;
        let (core, clock, data_dir) = recovery_core(&store, |_| {}).await?;
        let seeding = Instant::now();
        fill_carts(&core.log, &core.vault, args.carts, 1).await?;
        for runner in core.runners().await? {
            runner.catch_up().await?;
        }
        let seed_secs = seeding.elapsed().as_secs_f64();
        eprintln!(
            "{backend}: {} carts captured and projected in {seed_secs:.1} s",
            args.carts
        );
        clock.advance(chrono::Duration::minutes(31));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let poll = Duration::from_millis(20);
        let mut tasks = tokio::task::JoinSet::new();
        let group = ocart_projections::ProjectionGroup::new(
            core.log.clone(),
            core.runners().await?,
            core.config.processors.batch_size,
        );
        let started = Instant::now();
        use ocart_processors::supervisor::run;
        tasks.spawn(run(
            ocart_processors::Projections::new(group, poll),
            stop_rx.clone(),
        ));
        tasks.spawn(run(
            ocart_processors::Sweeper::new(core.log.clone(), core.clock.clone()).with_poll(poll),
            stop_rx.clone(),
        ));
        tasks.spawn(run(
            ocart_processors::recovery::RecoveryOpener::new(
                core.log.clone(),
                core.clock.clone(),
                core.projector_names(),
            )
            .with_poll(poll),
            stop_rx.clone(),
        ));
        let total = args.carts as i64;
        let mut abandoned_at = None;
        // On SQLite, the largest the write-ahead log grows to during the sweep.
        let wal = store
            .url
            .strip_prefix("sqlite://")
            .map(|path| std::path::PathBuf::from(format!("{path}-wal")));
        let mut wal_max = 0u64;
        let runs_at = loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Some(wal) = &wal {
                wal_max = wal_max.max(std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0));
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(3600),
                "the sweep did not finish within an hour"
            );
            // The checks are cheap (counting 1,000,000 rows every half second took 40 % of a
            // core on PostgreSQL): first whether any cart is still active, then the runs.
            if abandoned_at.is_none() {
                if count_where(
                    &core.db,
                    "SELECT count(*) FROM (SELECT 1 FROM carts WHERE status = 'active' LIMIT 1) AS one",
                )
                .await?
                    > 0
                {
                    continue;
                }
                abandoned_at = Some(started.elapsed().as_secs_f64());
            }
            let runs = count_where(&core.db, "SELECT count(*) FROM recovery_runs").await?;
            if runs >= total && abandoned_at.is_some() {
                break started.elapsed().as_secs_f64();
            }
        };
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
        let abandoned_secs = abandoned_at.unwrap_or(runs_at);
        if wal.is_some() {
            eprintln!(
                "{backend}: the write-ahead log grew to {:.1} MiB at most (sampled every 0.5 s)",
                wal_max as f64 / (1024.0 * 1024.0)
            );
        }
        println!(
            "| {backend} | {} | {seed_secs:.1} | {abandoned_secs:.1} | {runs_at:.1} | {:.0} |",
            args.carts,
            args.carts as f64 / runs_at
        );
        core.db.close().await;
        store.remove().await;
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    Ok(())
}
