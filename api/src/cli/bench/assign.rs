//! `ocart bench assign`: the cost of an A/B test on the checkout's hot read. The store of
//! `ocart bench resolve` (1,000 bumps, 100 funnels, 1,000 captured carts), measured twice on
//! each backend at 64 connections: without a test, then with a running checkout test on every
//! cart (two variants, each serving a layout: `two_step` and `one_step`, weights 1:1). Prints
//! requests/s, p50 and p99 of both and the ratio tested/untested (the floor: 80 %).
//!
//! The traffic mix, the same in both runs: one request in `--fresh-every` (default 10) is the
//! first resolve of a cart never seen (a session before its first capture: the default funnel,
//! no bumps; in the tested run, one assignment written), the others cycle over the captured
//! carts (each resolving many times: in the tested run, one assignment each on its first
//! resolve, then none). So the tested run writes (captured carts) + (requests / fresh-every)
//! assignments; the table gives the count.

use std::time::Duration;

use serde_json::{json, Value};

use super::capture::{load, Load, LoadConnection};
use super::resolve::{captured, Seeded};
use super::{machine, AssignArgs};

/// The `test/assigned` events in the log.
async fn assignments(core: &crate::core::Core) -> anyhow::Result<i64> {
    core.assigner.recorded().await;
    let (count,): (i64,) = ocart_projections::fetch_optional_db!(
        &core.db,
        (i64,),
        "SELECT count(*) FROM events WHERE event_type = 'test/assigned'"
    )?
    .unwrap_or((0,));
    Ok(count)
}

/// Runs `load` and answers it with the CPU it took per request, in µs (this process and the
/// machine's PostgreSQL processes; robust to other work on the machine where a rate is not).
async fn measured(
    load: impl std::future::Future<Output = anyhow::Result<Load>>,
) -> anyhow::Result<(Load, f64)> {
    let (own, pg) = super::cpu_ticks();
    let load = load.await?;
    let (own_after, pg_after) = super::cpu_ticks();
    let ticks = (own_after - own) + (pg_after - pg);
    // A tick is 1/100 s.
    let per_request = ticks as f64 * 10_000.0 / load.requests().max(1) as f64;
    Ok((load, per_request))
}

fn row(backend: &str, run: &str, (load, cpu): &(Load, f64), written: i64) {
    println!(
        "| {backend} | {run} | {} | {:.0} | {:.2} | {:.2} | {cpu:.0} | {} | {written} |",
        load.requests(),
        load.per_second(),
        load.ms(0.50),
        load.ms(0.99),
        load.errors
    );
}

pub(super) async fn run(args: AssignArgs) -> anyhow::Result<()> {
    let fresh_every = args.fresh_every.max(1);
    println!(
        "# ocart bench assign — {}; {} bumps, {} funnels, {} captured carts, 1 request in {} \
         a new cart; {} connections, {} s per run",
        machine(),
        args.offers,
        args.funnels,
        args.carts,
        fresh_every,
        args.connections,
        args.common.seconds
    );
    println!(
        "| backend | run | requests | requests/s | p50 ms | p99 ms | CPU µs/request | non-2xx | \
         assignments written |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for backend in &args.common.backends {
        // The store of `ocart bench resolve`.
        let mut seeded = Seeded::open(
            backend,
            &args.common.pg_url,
            args.offers,
            args.funnels,
            args.carts,
        )
        .await?;
        let (port, core, admin) = (seeded.port, seeded.core.clone(), seeded.admin.clone());
        let conn = &mut seeded.conn;
        let client = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}/ocart/v1");
        // Wait until `check` holds for a captured cart's answer.
        async fn answer_until(
            conn: &mut LoadConnection,
            path: &str,
            check: impl Fn(&Value) -> bool,
        ) -> anyhow::Result<()> {
            for _ in 0..600 {
                let mut body = Vec::new();
                let status = conn.send("GET", path, "", "", &mut body, true).await?;
                let answer: Value = serde_json::from_slice(&body).unwrap_or_default();
                if status == 200 && check(&answer) {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::bail!("{path} never answered as expected")
        }
        answer_until(conn, &captured(args.carts - 1), |a| {
            a["funnel"].is_object() && a["bumps"].as_array().is_some_and(|b| !b.is_empty())
        })
        .await?;

        let carts = args.carts;
        let traffic = move |run: &'static str| {
            move |i: u64| {
                let path = if i.is_multiple_of(fresh_every) {
                    format!("/ocart/v1/funnels/resolve?session_token=bench-new-{run}-{i:012}")
                } else {
                    captured(i % carts)
                };
                ("GET", path, String::new())
            }
        };
        let seconds = Duration::from_secs(args.common.seconds);
        let untested = measured(load(
            port,
            args.connections,
            seconds,
            200..201,
            traffic("a"),
        ))
        .await?;
        row(backend, "no test", &untested, assignments(&core).await?);

        // A running checkout test on every cart: two layouts.
        let response = client
            .post(format!("{base}/tests"))
            .bearer_auth(&admin)
            .json(&json!({
                "name": "Layouts", "surface": "checkout", "method": "frequentist",
                "baseline_rate": 0.05, "mde_relative": 0.02,
                "variants": [{"key": "two", "weight": 1, "serves": "two_step"},
                             {"key": "one", "weight": 1, "serves": "one_step"}]
            }))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "POST /tests: {}",
            response.text().await.unwrap_or_default()
        );
        let test: Value = response.json().await?;
        let id = test["id"].as_str().unwrap_or_default().to_owned();
        let response = client
            .post(format!("{base}/tests/{id}/start"))
            .bearer_auth(&admin)
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "POST /tests/{id}/start: {}",
            response.text().await.unwrap_or_default()
        );
        answer_until(conn, &captured(0), |a| a["tests"].is_array()).await?;
        let tested = measured(load(
            port,
            args.connections,
            seconds,
            200..201,
            traffic("b"),
        ))
        .await?;
        row(backend, "checkout test", &tested, assignments(&core).await?);
        let ratio = tested.0.per_second() / untested.0.per_second().max(f64::MIN_POSITIVE);
        let cpu_ratio = untested.1 / tested.1.max(f64::MIN_POSITIVE);
        ratios.push((backend.clone(), ratio, cpu_ratio));

        drop(core);
        seeded.close().await;
    }
    for (backend, ratio, cpu_ratio) in ratios {
        println!(
            "\n{backend}: tested / untested requests/s = {:.1} % (floor 80 %); untested / tested \
             CPU per request = {:.1} %",
            ratio * 100.0,
            cpu_ratio * 100.0
        );
    }
    Ok(())
}
