//! `ocart bench dispatch`: the recovery dispatcher sending due first steps over SMTP.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::seed::fill_log;
use super::{machine, recovery_core, BenchStore, DispatchArgs};

/// A minimal SMTP server that accepts and counts messages (the far side of the dispatch bench).
async fn smtp_sink() -> anyhow::Result<(u16, Arc<AtomicU64>)> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let count = Arc::new(AtomicU64::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read);
                let _ = write.write_all(b"220 sink ESMTP\r\n").await;
                let mut line = String::new();
                let mut in_data = false;
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let reply: &[u8] = if in_data {
                        if line != ".\r\n" {
                            continue;
                        }
                        in_data = false;
                        counter.fetch_add(1, Ordering::Relaxed);
                        b"250 queued\r\n"
                    } else {
                        let upper = line.to_ascii_uppercase();
                        if upper.starts_with("EHLO") {
                            b"250-sink\r\n250 8BITMIME\r\n"
                        } else if upper.starts_with("DATA") {
                            in_data = true;
                            b"354 go ahead\r\n"
                        } else if upper.starts_with("QUIT") {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        } else {
                            b"250 ok\r\n"
                        }
                    };
                    if write.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok((port, count))
}

pub(super) async fn run(args: DispatchArgs) -> anyhow::Result<()> {
    println!(
        "# ocart bench dispatch — {}; {} due first steps, {} at once, SMTP to an in-process sink, projections running",
        machine(),
        args.runs,
        args.concurrency
    );
    println!("| backend | messages | seconds | messages/s |");
    println!("|---|---|---|---|");
    for backend in &args.common.backends {
        let store = BenchStore::new(backend, &args.common.pg_url).await?;
        let (port, received) = smtp_sink().await?;
        let (core, clock, data_dir) = recovery_core(&store, |config| {
            config.recovery.concurrency = args.concurrency;
            config.email.transport = "smtp".into();
            config.email.smtp.host = "127.0.0.1".into();
            config.email.smtp.port = port;
            config.email.smtp.tls = "none".into();
        })
        .await?;
        // Each cart: created, three updates, abandoned (distinct shoppers up to 10,000).
        fill_log(&core.log, &core.vault, args.runs * 5).await?;
        let project = || async {
            for runner in core.runners().await? {
                runner.catch_up().await?;
            }
            anyhow::Ok(())
        };
        project().await?;
        ocart_processors::recovery::RecoveryOpener::new(
            core.log.clone(),
            core.clock.clone(),
            core.projector_names(),
        )
        .catch_up()
        .await?;
        project().await?;
        clock.advance(chrono::Duration::minutes(46));
        // The projections run beside the dispatcher, as in a server.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let group = ocart_projections::ProjectionGroup::new(
            core.log.clone(),
            core.runners().await?,
            core.config.processors.batch_size,
        );
        let projections = tokio::spawn(ocart_processors::supervisor::run(
            ocart_processors::Projections::new(group, Duration::from_millis(20)),
            stop_rx,
        ));
        let dispatcher = core.dispatcher()?;
        let started = Instant::now();
        // Every run ends its first step sent, or stopped by a guard (with more runs than
        // distinct shoppers, the quiet period stops a shopper's later runs).
        let mut totals = ocart_processors::recovery::PassReport::default();
        let mut passes = 0u64;
        while ((totals.sent + totals.stopped + totals.failed) as u64) < args.runs
            && started.elapsed() < Duration::from_secs(600)
        {
            let (_, report) = dispatcher.try_handle_next().await?;
            passes += 1;
            totals += report;
            if report.sent == 0 && report.stopped == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let sent = totals.sent as u64;
        eprintln!(
            "{backend}: {passes} passes; {} sent, {} stopped by a guard, {} failed",
            totals.sent, totals.stopped, totals.failed
        );
        let _ = stop_tx.send(true);
        let _ = projections.await;
        let at_sink = received.load(Ordering::Relaxed);
        anyhow::ensure!(
            at_sink == sent,
            "the sink received {at_sink} messages for {sent} recorded sends"
        );
        println!(
            "| {backend} | {sent} | {secs:.2} | {:.0} |",
            sent as f64 / secs
        );
        core.db.close().await;
        store.remove().await;
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    Ok(())
}
