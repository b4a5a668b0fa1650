//! `ocart bench stats`: the A/B test calculator's cost. One call is exactly what
//! `POST /stats/compare` computes for two arms, without HTTP: the use case
//! `usecases::stats::compare` (input checks, Wilson intervals, z-test, difference and lift
//! intervals, P(best), P(B > A), P(A > B), both expected losses, SRM). It is timed at 10³, 10⁶
//! and 10⁸ visitors per arm (rates 5 % and 5.5 %), one call at a time on one thread: the mean
//! and the 99th percentile per call. The floor of issue 12 is under 1 ms per call at 10⁸.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use super::machine;
use crate::usecases::stats::{compare, ArmCounts, CompareRequest};

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Timed calls per size (after 20 untimed ones).
    #[arg(long, default_value_t = 2_000)]
    pub calls: u32,
}

/// The visitors per arm measured.
const SIZES: [u64; 3] = [1_000, 1_000_000, 100_000_000];
/// The floor: a call at 10⁸ visitors per arm under this.
const FLOOR: Duration = Duration::from_millis(1);

/// One size's figures.
struct Row {
    visitors: u64,
    calls: usize,
    mean: Duration,
    p99: Duration,
}

/// Two arms of `visitors` each converting at 5 % and 5.5 %.
fn request(visitors: u64) -> CompareRequest {
    let arm = |key: &str, per_mille: u64| ArmCounts {
        key: key.to_owned(),
        conversions: visitors / 1_000 * per_mille,
        visitors,
    };
    CompareRequest {
        arms: vec![arm("a", 50), arm("b", 55)],
        confidence: None,
        weights: None,
    }
}

fn measure(visitors: u64, calls: u32) -> anyhow::Result<Row> {
    let request = request(visitors);
    for _ in 0..20 {
        std::hint::black_box(compare(std::hint::black_box(&request))?);
    }
    let mut times = Vec::with_capacity(calls as usize);
    for _ in 0..calls.max(1) {
        let start = Instant::now();
        let answer = compare(std::hint::black_box(&request))?;
        times.push(start.elapsed());
        std::hint::black_box(answer);
    }
    times.sort_unstable();
    let total: Duration = times.iter().sum();
    let count = times.len();
    // The 99th percentile: the smallest time at least 99 % of the calls did not exceed.
    let rank = (count * 99).div_ceil(100).clamp(1, count);
    let p99 = times.get(rank - 1).copied().unwrap_or_default();
    Ok(Row {
        visitors,
        calls: count,
        mean: total / u32::try_from(count).unwrap_or(u32::MAX),
        p99,
    })
}

/// `d` in µs, to the nanosecond.
fn micros(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1e3
}

pub(crate) fn run(args: &StatsArgs, json_out: bool) -> anyhow::Result<()> {
    let sanity = compare(&request(1_000_000))?;
    anyhow::ensure!(
        sanity
            .comparisons
            .first()
            .is_some_and(|c| c.prob_beats_control > 0.99),
        "5.5 % against 5 % at 10^6 visitors per arm should be a clear win"
    );
    let rows = SIZES
        .iter()
        .map(|&visitors| measure(visitors, args.calls))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let at_floor = rows.last().map(|r| r.mean);
    let met = at_floor.is_some_and(|mean| mean < FLOOR);
    if json_out {
        let value = json!({
            "bench": "stats",
            "machine": machine(),
            "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
            "rows": rows.iter().map(|r| json!({
                "visitors_per_arm": r.visitors,
                "calls": r.calls,
                "mean_us": micros(r.mean),
                "p99_us": micros(r.p99),
            })).collect::<Vec<_>>(),
            "floor_us": micros(FLOOR),
            "floor_met": met,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!(
        "# ocart bench stats — {}; {} build; two arms at 5 % and 5.5 %, one compare call at a time",
        machine(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!("| visitors per arm | calls | µs per call (mean) | p99 µs |");
    println!("|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.1} | {:.1} |",
            r.visitors,
            r.calls,
            micros(r.mean),
            micros(r.p99)
        );
    }
    println!(
        "\nFloor (issue 12): under {:.0} µs per call at 10^8 visitors per arm: {}",
        micros(FLOOR),
        if met { "met" } else { "missed" }
    );
    Ok(())
}
