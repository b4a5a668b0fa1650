//! `ocart test list|show|create|update|delete|start|stop|results|sample-size`: A/B tests
//! through the same use cases as `/ocart/v1/tests` (`usecases::abtests`), so `--json` prints
//! what HTTP answers. Writes wait until the read tables hold them; reads make the read tables
//! current first.

use anyhow::Context;
use clap::Subcommand;

use super::{cli_meta, open};
use crate::config::Config;
use crate::core::Core;
use crate::usecases::abtests::{
    self as uc, NewTest, TestPatchBody, TestResults, TestSampleSize, TestView, TestsError,
};

/// The A/B test commands that read or write the store (`calc` needs neither).
#[derive(Debug, Subcommand)]
pub enum AbTestCmd {
    /// Tests, oldest first.
    List {
        /// draft, running, stopped or concluded
        #[arg(long)]
        status: Option<String>,
        /// checkout, bump, upsell, recovery_email or recovery_sms
        #[arg(long)]
        surface: Option<String>,
    },
    /// One test.
    Show { id: String },
    /// Create a test (a draft) from a JSON file shaped as `POST /tests`'s body.
    Create {
        #[arg(long)]
        file: String,
    },
    /// Change a test from a JSON file shaped as `PATCH /tests/{id}`'s body (a started test
    /// takes only a new name).
    Update {
        id: String,
        #[arg(long)]
        file: String,
    },
    /// Delete a test that is not running.
    Delete { id: String },
    /// Start a draft or stopped test.
    Start { id: String },
    /// Stop a running test.
    Stop { id: String },
    /// The test's results now: per variant and against the control, the SRM test, the
    /// conclusion rules' answer.
    Results { id: String },
    /// The visitors per variant the test's plan needs.
    SampleSize { id: String },
}

fn test_error(id: &str, err: TestsError) -> anyhow::Error {
    match err {
        TestsError::Invalid(errors) => anyhow::anyhow!(
            "the test is not valid:\n{}",
            errors
                .iter()
                .map(|e| format!("  {}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        TestsError::NotFound(_) => anyhow::anyhow!("no test {id}"),
        other => anyhow::anyhow!("test {id}: {other}"),
    }
}

fn describe(view: &TestView) -> String {
    let variants = view
        .variants
        .iter()
        .map(|v| format!("{}={}×{}", v.key, v.serves, v.weight))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{}  {}  [{}, {}, {}{}]  {}",
        view.id,
        view.name,
        view.status,
        view.surface,
        view.method,
        view.winner_variant
            .as_deref()
            .map(|w| format!(", winner {w}"))
            .unwrap_or_default(),
        variants
    )
}

fn read_json<T: serde::de::DeserializeOwned>(path: &str) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    crate::json::parse(text.as_bytes()).map_err(|e| match e {
        crate::error::ApiError::Validation(errors) => anyhow::anyhow!(
            "{path}:\n{}",
            errors
                .iter()
                .map(|e| format!("  {}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        other => anyhow::anyhow!("{path}: {other}"),
    })
}

/// `answer` as the HTTP API writes it (pretty-printed) with `--json`, else `human()`.
fn print<T: serde::Serialize>(
    json_out: bool,
    answer: &T,
    human: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    super::print(json_out, &serde_json::to_value(answer)?, human);
    Ok(())
}

/// Makes the read tables current before a read.
async fn current(core: &Core) -> anyhow::Result<()> {
    let (_, head) = core.log.stats().await?;
    core.ensure_projected(head).await
}

/// Shows a written test once the projections hold it.
async fn written(core: &Core, json_out: bool, view: TestView) -> anyhow::Result<()> {
    if let Some(position) = view.position {
        core.ensure_projected(position).await?;
    }
    print(json_out, &view, || describe(&view))
}

/// `x` as a percentage, or `-` for a value that does not exist.
fn percent(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), |v| format!("{:.2}%", v * 100.0))
}

/// The results for a reader: the variants, each against the control, the SRM test, the
/// decision.
fn results_table(r: &TestResults) -> String {
    let mut out = format!(
        "test {} ({}, {}, intervals at {}%)\n\n| variant | visitors | conversions | rate | CI | revenue/visitor | P(best) |\n|---|---:|---:|---:|---|---:|---:|\n",
        r.id,
        r.status,
        r.method,
        r.significance * 100.0
    );
    for (i, v) in r.variants.iter().enumerate() {
        out.push_str(&format!(
            "| {}{} | {} | {} | {} | [{}, {}] | {} | {} |\n",
            v.key,
            if i == 0 { " (control)" } else { "" },
            v.visitors,
            v.conversions,
            percent(v.rate),
            percent(v.ci_low),
            percent(v.ci_high),
            v.revenue_per_visitor
                .map_or_else(|| "-".to_owned(), |x| format!("{x:.1}")),
            percent(Some(v.prob_best)),
        ));
    }
    out.push_str("\n| vs control | lift | lift CI | p-value | P(beats control) |\n|---|---:|---|---:|---:|\n");
    for c in &r.comparisons {
        out.push_str(&format!(
            "| {} | {} | [{}, {}] | {} | {} |\n",
            c.key,
            percent(c.lift),
            percent(c.ci_lift_low),
            percent(c.ci_lift_high),
            c.p_value
                .map_or_else(|| "-".to_owned(), |p| format!("{p:.4}")),
            percent(Some(c.prob_beats_control)),
        ));
    }
    out.push_str(&format!(
        "\nSample ratio mismatch: chi2 = {:.4}, p = {:.4}{}\nDecision: {}{}",
        r.srm.chi2,
        r.srm.p_value,
        if r.srm.alert {
            " (ALERT: the traffic does not follow the weights)"
        } else {
            ""
        },
        r.decision.outcome,
        r.decision
            .winner_variant
            .as_deref()
            .map(|w| format!(" ({w})"))
            .unwrap_or_default()
    ));
    out
}

fn sample_size_text(s: &TestSampleSize) -> String {
    format!(
        "{} visitors per variant, {} in all (baseline {:.4} from the {}, mde {}, power {}, significance {})",
        s.per_variant,
        s.total,
        s.baseline_rate,
        if s.baseline_from == "plan" { "plan" } else { "control's observed rate" },
        s.mde_relative,
        s.power,
        s.significance
    )
}

/// Runs `ocart test …` for the commands on stored tests.
pub async fn run(cmd: AbTestCmd, config: Config, json_out: bool) -> anyhow::Result<()> {
    let core = open(config).await?;
    let meta = cli_meta(&core);
    match cmd {
        AbTestCmd::List { status, surface } => {
            current(&core).await?;
            let tests = uc::list(&core, status.as_deref(), surface.as_deref())
                .await
                .map_err(|e| test_error("list", e))?;
            let answer = serde_json::json!({ "tests": tests });
            super::print(json_out, &answer, || {
                if tests.is_empty() {
                    return "no tests".into();
                }
                tests.iter().map(describe).collect::<Vec<_>>().join("\n")
            });
            Ok(())
        }
        AbTestCmd::Show { id } => {
            current(&core).await?;
            let view = uc::show(&core, &id).await.map_err(|e| test_error(&id, e))?;
            print(json_out, &view, || describe(&view))
        }
        AbTestCmd::Create { file } => {
            let input: NewTest = read_json(&file)?;
            let view = uc::create(&core, input, &meta)
                .await
                .map_err(|e| test_error("(new)", e))?;
            written(&core, json_out, view).await
        }
        AbTestCmd::Update { id, file } => {
            let patch: TestPatchBody = read_json(&file)?;
            let view = uc::update(&core, &id, patch, &meta)
                .await
                .map_err(|e| test_error(&id, e))?;
            written(&core, json_out, view).await
        }
        AbTestCmd::Delete { id } => {
            let position = uc::delete(&core, &id, &meta)
                .await
                .map_err(|e| test_error(&id, e))?;
            if let Some(position) = position {
                core.ensure_projected(position).await?;
            }
            let answer = serde_json::json!({ "deleted": id });
            super::print(json_out, &answer, || format!("test {id} deleted"));
            Ok(())
        }
        AbTestCmd::Start { id } => {
            let view = uc::start(&core, &id, &meta)
                .await
                .map_err(|e| test_error(&id, e))?;
            written(&core, json_out, view).await
        }
        AbTestCmd::Stop { id } => {
            let view = uc::stop(&core, &id, &meta)
                .await
                .map_err(|e| test_error(&id, e))?;
            written(&core, json_out, view).await
        }
        AbTestCmd::Results { id } => {
            current(&core).await?;
            let results = uc::results(&core, &id)
                .await
                .map_err(|e| test_error(&id, e))?;
            print(json_out, &results, || results_table(&results))
        }
        AbTestCmd::SampleSize { id } => {
            current(&core).await?;
            let size = uc::sample_size(&core, &id)
                .await
                .map_err(|e| test_error(&id, e))?;
            print(json_out, &size, || sample_size_text(&size))
        }
    }
}
