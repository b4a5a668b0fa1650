//! `ocart bench replay`: the carts projection rebuilt from a log of N events.

use std::sync::Arc;
use std::time::Instant;

use ocart_projections::{Db, EventLog, Vault};

use super::seed::fill_log;
use super::{machine, BenchStore, ReplayArgs};

pub(super) async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    println!(
        "# ocart bench replay — {}; carts projection rebuilt from {} events",
        machine(),
        args.events
    );
    println!("| backend | events | seconds | events/s |");
    println!("|---|---|---|---|");
    for backend in &args.common.backends {
        let store = BenchStore::new(backend, &args.common.pg_url).await?;
        let db = Db::connect(&store.url, 16).await?;
        db.migrate().await?;
        let log = EventLog::open(db.clone()).await?;
        let vault = Vault::open(db.clone(), None).await?;
        fill_log(&log, &vault, args.events).await?;
        let runner = ocart_projections::ProjectionRunner::new(
            log.clone(),
            Arc::new(ocart_projections::CartsProjector::new(vault.clone())),
            2000,
        )
        .await?;
        let read_started = Instant::now();
        let mut at = ocart_projections::Checkpoint::default();
        let mut read = 0u64;
        loop {
            let events = log.read_after(at, 2000).await?;
            let Some(last) = events.last() else { break };
            at = last.checkpoint();
            read += events.len() as u64;
        }
        let read_secs = read_started.elapsed().as_secs_f64();
        eprintln!("{backend}: reading the {read} events alone took {read_secs:.2} s");
        let started = Instant::now();
        let applied = runner.rebuild(|_| {}).await?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "| {backend} | {applied} | {secs:.2} | {:.0} |",
            applied as f64 / secs
        );
        db.close().await;
        store.remove().await;
    }
    Ok(())
}
