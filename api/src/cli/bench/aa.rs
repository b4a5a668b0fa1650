//! `ocart bench aa`: the false-winner rate of continuously monitored A/A tests. Every arm
//! converts at the same rate, so every winner is false; each simulated test is judged by the
//! production conclusion rules (`ocart_domain::stats::conclude::decide`) after every batch of
//! visitors (per arm for the frequentist and Bayesian methods; in all for the bandit, whose
//! visitors the production allocator assigns one by one) until it concludes or reaches the
//! cap. Issue 12's requirement: the rate of tests ending with a winner is at most
//! 1 − significance. Shown per method: the rate with its standard error, and the upper end of
//! its one-sided 99 % Wilson bound. No store, no server.

use clap::Args;
use serde_json::json;

use super::machine;
use ocart_domain::stats::bayes;
use ocart_domain::stats::conclude::{
    planned_per_arm, simulate_aa, AaOutcome, Method, Plan, BANDIT_CAP_FACTOR,
};
use ocart_domain::stats::frequentist::{self, Confidence};

#[derive(Debug, Args)]
pub struct AaArgs {
    /// `frequentist`, `bayesian`, `bandit` or `all`.
    #[arg(long, default_value = "all", value_parser = ["frequentist", "bayesian", "bandit", "all"])]
    pub method: String,
    /// Simulated tests per method.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Arms, the control included (2 to 10).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(2..=10))]
    pub arms: u8,
    /// Visitors between two checks: per arm (frequentist, Bayesian), in all (bandit).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
    /// The seed: the same seed prints the same figures.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Every arm's true conversion rate.
    #[arg(long, default_value_t = 0.05)]
    pub rate: f64,
    /// The tests' significance (1 − α).
    #[arg(long, default_value_t = 0.95)]
    pub significance: f64,
    /// The tests' power target.
    #[arg(long, default_value_t = 0.8)]
    pub power: f64,
    /// The tests' relative minimum detectable effect.
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    pub mde: f64,
    /// A planned baseline rate; by default the control's observed rate plans the size, as a
    /// live test does.
    #[arg(long)]
    pub baseline_rate: Option<f64>,
    /// Stop a test undecided at this many visitors per arm (the bandit: times the arms, in
    /// all); by default 15 × the planned size at the true rate, beyond the bandit's own cap
    /// (10 × the planned size at the control's observed rate); the other methods end at the
    /// planned size.
    #[arg(long)]
    pub max_visitors: Option<u64>,
}

/// The methods `--method` names.
fn methods(name: &str) -> Vec<Method> {
    match Method::parse(name) {
        Some(m) => vec![m],
        None => vec![Method::Frequentist, Method::Bayesian, Method::Bandit],
    }
}

/// The upper end of the one-sided 99 % bound of the false-winner rate (Wilson).
fn upper_99(out: &AaOutcome) -> anyhow::Result<f64> {
    let arm = frequentist::Arm::new(u64::from(out.false_winners), u64::from(out.runs))?;
    let confidence = Confidence::new(0.98)?;
    Ok(frequentist::wilson(arm, confidence).map_or(1.0, |e| e.interval.upper))
}

pub(crate) fn run(args: &AaArgs, json_out: bool) -> anyhow::Result<()> {
    let plan = Plan {
        significance: args.significance,
        power: args.power,
        mde_relative: args.mde,
        baseline_rate: args.baseline_rate,
    };
    let arms = usize::from(args.arms);
    // The planned size at the true rate (what the control's observed rate converges to).
    let at_rate = Plan {
        baseline_rate: Some(args.baseline_rate.unwrap_or(args.rate)),
        ..plan
    };
    let idle = vec![
        bayes::Arm {
            conversions: 0,
            visitors: 0
        };
        arms
    ];
    let planned = planned_per_arm(&at_rate, &idle)?
        .ok_or_else(|| anyhow::anyhow!("no planned size for this rate and effect"))?;
    // The bandit's cap is BANDIT_CAP_FACTOR × n* with n* planned on the control's observed
    // rate, which moves (a starved control's most): simulate half as far again.
    let max = args
        .max_visitors
        .unwrap_or(planned.saturating_mul(BANDIT_CAP_FACTOR * 3 / 2))
        .max(args.batch);
    let bound = 1.0 - args.significance;
    let mut rows = Vec::new();
    for method in methods(&args.method) {
        let out = simulate_aa(
            method, &plan, args.rate, arms, args.batch, max, args.runs, args.seed,
        )?;
        rows.push((method, out, upper_99(&out)?));
    }
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    if json_out {
        let value = json!({
            "bench": "aa",
            "machine": machine(),
            "profile": profile,
            "rate": args.rate,
            "arms": arms,
            "batch": args.batch,
            "significance": args.significance,
            "power": args.power,
            "mde_relative": args.mde,
            "baseline_rate": args.baseline_rate,
            "planned_per_arm": planned,
            "max_visitors_per_arm": max,
            "seed": args.seed,
            "bound": bound,
            "rows": rows.iter().map(|(method, out, upper)| json!({
                "method": method.as_str(),
                "runs": out.runs,
                "false_winners": out.false_winners,
                "no_difference": out.no_difference,
                "undecided": out.undecided,
                "rate": out.rate,
                "se": out.se,
                "upper_99": upper,
                "within_bound": out.rate <= bound,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!(
        "# ocart bench aa — {}; {profile} build; A/A tests, {arms} arms at {}, checked every {} \
         visitors (per arm; in all for the bandit); significance {}, power {}, mde {}, planned \
         size {planned} per arm, cap {max} per arm; seed {}",
        machine(),
        args.rate,
        args.batch,
        args.significance,
        args.power,
        args.mde,
        args.seed
    );
    println!(
        "| method | runs | false winners | no difference | undecided at cap | rate | se | \
         99 % upper | ≤ {bound:.2} |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for (method, out, upper) in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.4} | {:.4} | {:.4} | {} |",
            method.as_str(),
            out.runs,
            out.false_winners,
            out.no_difference,
            out.undecided,
            out.rate,
            out.se,
            upper,
            if out.rate <= bound { "yes" } else { "no" }
        );
    }
    Ok(())
}
