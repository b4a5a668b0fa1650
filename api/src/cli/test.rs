//! `ocart test …`: A/B tests. For now the calculator, `ocart test calc compare` and
//! `ocart test calc sample-size`: they run here, with no server and no database, and call the
//! same use case as `POST /stats/compare` and `GET /stats/sample-size`, so `--json` prints the
//! HTTP answer's JSON. (The tests' own commands, listing and changing them, will join `calc`
//! here.)

use clap::Subcommand;

use crate::usecases::stats::{
    self as uc, ArmCounts, CompareAnswer, CompareRequest, SampleSizeAnswer, SampleSizeRequest,
    DEFAULT_CONFIDENCE, DEFAULT_POWER, DEFAULT_VARIANTS,
};

#[derive(Debug, Subcommand)]
pub enum TestCmd {
    /// The A/B test calculator on counts you give: compare arms, plan a sample size. Runs
    /// locally (no server, no database); `--json` prints what the HTTP API answers.
    #[command(subcommand)]
    Calc(CalcCmd),
    /// Simulate the bandit allocation (the production code, batched updates) against arms of
    /// known rates: mean pseudo-regret and its standard error. Runs locally.
    Simulate(crate::cli::simulate::SimulateArgs),
    // The tests on the store (list, show, create, update, delete, start, stop, results,
    // sample-size): run by `cli::abtest::run`, which `cli::run` dispatches to.
    #[command(flatten)]
    Manage(crate::cli::abtest::AbTestCmd),
}

#[derive(Debug, Subcommand)]
pub enum CalcCmd {
    /// Compare 2 to 10 arms, the first the control: rates with Wilson intervals, the
    /// difference (Wald) and lift (delta method) with their intervals, the pooled z-test,
    /// P(beats the control), expected losses, P(best), and the sample-ratio-mismatch test.
    #[command(
        after_help = "Example: ocart test calc compare --arm a=120/1000 --arm b=140/1000 --json"
    )]
    Compare {
        /// One arm as KEY=CONVERSIONS/VISITORS (e.g. a=120/1000); repeat it for each arm, the
        /// control first. Keys are 1 to 64 characters and unique.
        #[arg(long = "arm", value_name = "KEY=CONVERSIONS/VISITORS", required = true,
            value_parser = parse_arm)]
        arms: Vec<ArmCounts>,
        /// Confidence level of the intervals, strictly between 0 and 1.
        #[arg(long, allow_negative_numbers = true, default_value_t = DEFAULT_CONFIDENCE)]
        confidence: f64,
        /// The intended traffic split, one weight per arm, comma separated (e.g. 1,1 or
        /// 0.5,0.25,0.25); an equal split by default.
        #[arg(
            long,
            value_delimiter = ',',
            allow_negative_numbers = true,
            value_name = "W,W,…"
        )]
        weights: Option<Vec<f64>>,
    },
    /// Visitors per arm to detect a relative change of a baseline rate (two-sided test,
    /// Fleiss's formula without continuity correction).
    #[command(
        after_help = "Example: ocart test calc sample-size --baseline-rate 0.05 --relative-mde 0.1"
    )]
    SampleSize {
        /// The control's conversion rate, strictly between 0 and 1 (0.05 for 5 %).
        #[arg(long, allow_negative_numbers = true)]
        baseline_rate: f64,
        /// The relative change to detect (0.1 for +10 %, -0.1 for −10 %), not 0.
        #[arg(long, allow_negative_numbers = true)]
        relative_mde: f64,
        /// The probability of detecting it, strictly between 0 and 1.
        #[arg(long, allow_negative_numbers = true, default_value_t = DEFAULT_POWER)]
        power: f64,
        /// The confidence level of the test (1 − α), strictly between 0 and 1.
        #[arg(long, allow_negative_numbers = true, default_value_t = DEFAULT_CONFIDENCE)]
        confidence: f64,
        /// The arms, the control included: 2 to 10.
        #[arg(long, default_value_t = DEFAULT_VARIANTS)]
        variants: u32,
    },
}

/// `KEY=CONVERSIONS/VISITORS` (the key may itself hold `=`: the last one splits); refused
/// with a usage error (exit code 2) that shows the expected shape.
fn parse_arm(raw: &str) -> Result<ArmCounts, String> {
    let shape = || format!("expected KEY=CONVERSIONS/VISITORS such as a=120/1000, got {raw:?}");
    let (key, counts) = raw.rsplit_once('=').ok_or_else(shape)?;
    let (conversions, visitors) = counts.split_once('/').ok_or_else(shape)?;
    let count = |what: &str, text: &str| {
        text.trim().parse::<u64>().map_err(|_| {
            format!(
                "{what} must be a whole number from 0 to {}, got {text:?} (in {raw:?}; expected \
                 KEY=CONVERSIONS/VISITORS such as a=120/1000)",
                u64::MAX
            )
        })
    };
    Ok(ArmCounts {
        key: key.to_owned(),
        conversions: count("conversions", conversions)?,
        visitors: count("visitors", visitors)?,
    })
}

/// Runs `ocart test …`; a refused input is an error naming the field (`arms[1].conversions`
/// is the second `--arm`), exit code 1.
pub fn run(cmd: TestCmd, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        TestCmd::Calc(CalcCmd::Compare {
            arms,
            confidence,
            weights,
        }) => {
            let request = CompareRequest {
                arms,
                confidence: Some(confidence),
                weights,
            };
            let answer = uc::compare(&request)?;
            let human = || compare_table(&answer, confidence);
            print(json_out, &answer, human)?;
        }
        TestCmd::Calc(CalcCmd::SampleSize {
            baseline_rate,
            relative_mde,
            power,
            confidence,
            variants,
        }) => {
            let request = SampleSizeRequest {
                baseline_rate,
                relative_mde,
                power: Some(power),
                confidence: Some(confidence),
                variants: Some(variants),
            };
            let answer = uc::sample_size(&request)?;
            print(json_out, &answer, || sample_size_text(&answer, &request))?;
        }
        TestCmd::Simulate(args) => crate::cli::simulate::run(&args, json_out)?,
        TestCmd::Manage(_) => {
            anyhow::bail!("ocart test: this command needs the store (cli::abtest::run)")
        }
    }
    Ok(())
}

/// `answer` as the HTTP API writes it (its fields in the same order, pretty-printed) with
/// `--json`, else `human()`.
fn print<T: serde::Serialize>(
    json_out: bool,
    answer: &T,
    human: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if json_out {
        println!("{}", serde_json::to_string_pretty(answer)?);
    } else {
        println!("{}", human());
    }
    Ok(())
}

/// `x` as a percentage with `decimals`, or `-` for a value that does not exist.
fn percent(x: Option<f64>, decimals: usize) -> String {
    x.map_or_else(|| "-".to_owned(), |v| format!("{:.decimals$}%", v * 100.0))
}

/// `x` as a signed percentage.
fn signed_percent(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), |v| format!("{:+.2}%", v * 100.0))
}

/// `x` in percentage points, signed.
fn points(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), |v| format!("{:+.3} pp", v * 100.0))
}

/// A level such as 0.95 as `95%` (trailing zeros dropped).
fn level(confidence: f64) -> String {
    let text = format!("{:.6}", confidence * 100.0);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

/// The compare answer for a reader: the arms, each variant against the control, the SRM test.
fn compare_table(answer: &CompareAnswer, confidence: f64) -> String {
    let control = answer.arms.first().map_or("", |a| a.key.as_str());
    let mut out = format!(
        "| arm | conversions | visitors | rate | {} CI | P(best) |\n|---|---:|---:|---:|---|---:|\n",
        level(confidence)
    );
    for (i, arm) in answer.arms.iter().enumerate() {
        out.push_str(&format!(
            "| {}{} | {} | {} | {} | [{}, {}] | {} |\n",
            arm.key,
            if i == 0 { " (control)" } else { "" },
            arm.conversions,
            arm.visitors,
            percent(arm.rate, 3),
            percent(arm.ci_low, 3),
            percent(arm.ci_high, 3),
            percent(Some(arm.prob_best), 2),
        ));
    }
    out.push_str(&format!(
        "\n| vs {control} | diff | diff CI | lift | lift CI | z | p-value | P(beats {control}) | \
         loss choosing it | loss keeping {control} |\n|---|---:|---|---:|---|---:|---:|---:|---:|---:|\n"
    ));
    for c in &answer.comparisons {
        out.push_str(&format!(
            "| {} | {} | [{}, {}] | {} | [{}, {}] | {} | {} | {} | {} | {} |\n",
            c.key,
            points(c.diff),
            points(c.ci_diff_low),
            points(c.ci_diff_high),
            signed_percent(c.lift),
            signed_percent(c.ci_lift_low),
            signed_percent(c.ci_lift_high),
            c.z.map_or_else(|| "-".to_owned(), |z| format!("{z:.4}")),
            c.p_value
                .map_or_else(|| "-".to_owned(), |p| format!("{p:.4}")),
            percent(Some(c.prob_beats_control), 2),
            points(Some(c.expected_loss)),
            points(Some(c.expected_loss_control)),
        ));
    }
    out.push_str(&format!(
        "\nSample ratio mismatch: chi2 = {:.4}, df = {}, p = {:.4}{}",
        answer.srm.chi2,
        answer.srm.df,
        answer.srm.p_value,
        if answer.srm.p_value < 0.001 {
            " (the visitors do not follow the intended split: check the assignment)"
        } else {
            ""
        }
    ));
    out
}

fn sample_size_text(answer: &SampleSizeAnswer, request: &SampleSizeRequest) -> String {
    format!(
        "{} visitors per variant, {} in all ({} variants; baseline {}, relative effect {}, power {}, confidence {})",
        answer.per_variant,
        answer.total,
        request.variants.unwrap_or(DEFAULT_VARIANTS),
        level(request.baseline_rate),
        level(request.relative_mde),
        level(request.power.unwrap_or(DEFAULT_POWER)),
        level(request.confidence.unwrap_or(DEFAULT_CONFIDENCE)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arms_are_read_from_key_conversions_visitors() {
        assert_eq!(
            parse_arm("a=120/1000"),
            Ok(ArmCounts {
                key: "a".into(),
                conversions: 120,
                visitors: 1000
            })
        );
        assert_eq!(parse_arm("x=y=1/2").map(|a| a.key), Ok("x=y".into()));
        for bad in [
            "a",
            "a=1",
            "a=1/",
            "a=-1/2",
            "a=1.5/2",
            "a=1/18446744073709551616",
        ] {
            assert!(parse_arm(bad).is_err(), "{bad}");
        }
    }
}
