//! `ocart test simulate`: the bandit allocation against Bernoulli arms of known rates. It runs
//! the production code (`ocart_domain::stats::bandit::Allocator`, the same draws and the same
//! batched posterior refreshes that serve live traffic) and prints the mean pseudo-regret
//! over the runs with its standard error; `--ideal` updates the posteriors after every
//! visitor instead, the reference the batched allocation is measured against. Local: no
//! server, no database. Every refused input is a usage error (exit code 2).

use clap::Args;
use ocart_domain::stats::bandit::{self, BanditError, Regret, MAX_HORIZON, MAX_RUNS};

#[derive(Debug, Args)]
#[command(
    after_help = "Example: ocart test simulate --rates 0.05,0.06 --horizon 10000 --runs 200 --seed 1 --json"
)]
pub struct SimulateArgs {
    /// The arms' true conversion rates, comma separated: 2 to 10 numbers from 0 to 1.
    #[arg(long, value_name = "RATE,RATE,…", value_parser = parse_rates)]
    rates: Rates,
    /// Visitors per run, 1 to 10,000,000.
    #[arg(long, default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..=MAX_HORIZON))]
    horizon: u64,
    /// Independent runs, 1 to 100,000.
    #[arg(long, default_value_t = 100,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_RUNS)))]
    runs: u32,
    /// The seed: the same seed prints the same figures.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// An ideal Thompson sampler (posteriors updated after every visitor) instead of the
    /// production allocation's batched updates.
    #[arg(long)]
    ideal: bool,
}

/// The rates of `--rates`, checked as the simulator checks them.
#[derive(Debug, Clone)]
struct Rates(Vec<f64>);

/// `0.05,0.06[,…]`; refused (exit code 2) unless 2 to 10 numbers from 0 to 1.
fn parse_rates(raw: &str) -> Result<Rates, String> {
    let rates = raw
        .split(',')
        .map(|part| {
            part.trim()
                .parse::<f64>()
                .map_err(|_| format!("{part:?} is not a number (expected rates such as 0.05,0.06)"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // The simulator's own checks, on the smallest run, so the messages are the same.
    match bandit::simulate(&rates, 1, 1, 0, true) {
        Ok(_) => Ok(Rates(rates)),
        Err(e @ (BanditError::TooFewArms(_) | BanditError::TooManyArms(_))) => {
            Err(format!("{e} (one rate per arm)"))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Runs the simulation and prints `{"mean_cumulative_regret", "se_cumulative_regret"}` with
/// `--json`, else one line for a reader.
pub fn run(args: &SimulateArgs, json_out: bool) -> anyhow::Result<()> {
    let regret: Regret = bandit::simulate(
        &args.rates.0,
        args.horizon,
        args.runs,
        args.seed,
        args.ideal,
    )?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&regret)?);
    } else {
        let rates: Vec<String> = args.rates.0.iter().map(|r| r.to_string()).collect();
        println!(
            "mean cumulative regret {:.4} ± {:.4} (standard error) over {} runs of {} visitors, \
             rates {}, {} allocation, seed {}",
            regret.mean_cumulative_regret,
            regret.se_cumulative_regret,
            args.runs,
            args.horizon,
            rates.join(","),
            if args.ideal {
                "ideal (updated after every visitor)"
            } else {
                "production (batched updates)"
            },
            args.seed
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_two_to_ten_numbers_from_0_to_1() {
        assert_eq!(parse_rates("0.05, 0.06").map(|r| r.0), Ok(vec![0.05, 0.06]));
        assert_eq!(parse_rates("0,1,0.5").map(|r| r.0), Ok(vec![0.0, 1.0, 0.5]));
        for bad in [
            "",
            "0.05",
            "0.05,x",
            "0.05,1.5",
            "0.05,-0.1",
            "0.05,NaN",
            "0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1",
        ] {
            assert!(parse_rates(bad).is_err(), "{bad}");
        }
    }
}
