//! `ocart recovery …`: sequences, runs, a dispatch pass (or its dry run), and the outbox.

use anyhow::{bail, Context};
use clap::Subcommand;
use ocart_domain::recovery::{SequenceCommand, SequenceError, Step, TriggerType};
use ocart_processors::recovery::channels::Outbox;
use ocart_processors::recovery::{outbox_dir, Decision, PassReport, RecoveryOpener};
use ocart_projections::queries::recovery::{self as q, RunFilter};
use ocart_projections::{CommandError, Outcome};
use serde_json::{json, Value};
use uuid::Uuid;

use super::{cli_meta, open, print};
use crate::config::Config;
use crate::core::{Core, PROCESSORS_LEASE};
use crate::usecases::suppress::{lift, suppress, Recipient, Suppress, SuppressError};

#[derive(Debug, Subcommand)]
pub enum RecoveryCmd {
    /// Recovery sequences.
    #[command(subcommand)]
    Sequence(SequenceCmd),
    /// Recovery runs, newest first.
    Runs {
        /// pending, running, converted or stopped
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        cart: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Send what is due now; with --dry-run, list what would be sent and why each other due
    /// run is held back or stopped.
    Dispatch {
        #[arg(long)]
        dry_run: bool,
    },
    /// The messages in the local outbox (the embedded email and SMS channel).
    Outbox,
    /// The suppression list: recipients never messaged.
    #[command(subcommand)]
    Suppression(SuppressionCmd),
}

#[derive(Debug, Subcommand)]
pub enum SuppressionCmd {
    List {
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Suppress an email address or E.164 phone number and stop its open runs.
    Add {
        recipient: String,
        /// manual, bounce, complaint, unsubscribe or winback_failed
        #[arg(long, default_value = "manual")]
        reason: String,
    },
    /// Allow a recipient (email, phone, or the hash the list shows) again.
    Remove { recipient: String },
}

#[derive(Debug, Subcommand)]
pub enum SequenceCmd {
    List {
        /// Include archived sequences.
        #[arg(long)]
        all: bool,
    },
    Show {
        id: String,
    },
    Create {
        #[arg(long)]
        name: String,
        /// cart_abandoned, checkout_abandoned or browse_abandoned
        #[arg(long, default_value = "cart_abandoned")]
        trigger: String,
        /// The steps as JSON: `[{"channel":"email","delay_min":60,"template":"recovery_email_1"}]`
        /// (or `@file.json`).
        #[arg(long)]
        steps: String,
        /// Create it switched off.
        #[arg(long)]
        inactive: bool,
    },
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        trigger: Option<String>,
        #[arg(long)]
        steps: Option<String>,
        #[arg(long)]
        active: Option<bool>,
    },
    /// Archive a sequence: it opens no more runs.
    Archive {
        id: String,
    },
}

fn parse_trigger(raw: &str) -> anyhow::Result<TriggerType> {
    serde_json::from_value(json!(raw)).map_err(|_| {
        anyhow::anyhow!(
            "--trigger {raw:?}: use cart_abandoned, checkout_abandoned or browse_abandoned"
        )
    })
}

fn parse_steps(raw: &str) -> anyhow::Result<Vec<Step>> {
    let text = match raw.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
        None => raw.to_owned(),
    };
    serde_json::from_str(&text).context(
        "--steps must be a JSON list of {\"channel\": \"email\"|\"sms\", \"delay_min\": N, \"template\": NAME, \"coupon\": bool}",
    )
}

fn sequence_error(id: &str, e: CommandError<SequenceError>) -> anyhow::Error {
    match e {
        CommandError::Rejected(SequenceError::Invalid(errors)) => anyhow::anyhow!(
            "the sequence is not valid:\n{}",
            errors
                .iter()
                .map(|e| format!("  {}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        CommandError::Rejected(SequenceError::NotFound) => anyhow::anyhow!("no sequence {id}"),
        CommandError::Rejected(other) => anyhow::anyhow!("sequence {id}: {other}"),
        other => other.into(),
    }
}

fn describe_sequence(value: &Value) -> String {
    let steps = value["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|s| {
                    format!(
                        "{} +{}m {}{}",
                        s["channel"].as_str().unwrap_or_default(),
                        s["delay_min"],
                        s["template"].as_str().unwrap_or_default(),
                        if s["coupon"] == true { " (coupon)" } else { "" }
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    format!(
        "{}  {}  [{}{}]  {}",
        value["sequence_id"].as_str().unwrap_or_default(),
        value["name"].as_str().unwrap_or_default(),
        value["trigger_type"].as_str().unwrap_or_default(),
        if value["archived"] == true {
            ", archived"
        } else if value["active"] == false {
            ", inactive"
        } else {
            ""
        },
        steps
    )
}

/// Makes the read tables current before a read.
async fn current(core: &Core) -> anyhow::Result<()> {
    let (_, head) = core.log.stats().await?;
    core.ensure_projected(head).await
}

pub async fn run(cmd: RecoveryCmd, config: Config, json_out: bool) -> anyhow::Result<()> {
    let core = open(config).await?;
    match cmd {
        RecoveryCmd::Sequence(cmd) => sequence(&core, cmd, json_out).await,
        RecoveryCmd::Runs {
            status,
            cart,
            limit,
        } => {
            if let Some(s) = &status {
                if !["pending", "running", "converted", "stopped"].contains(&s.as_str()) {
                    bail!("--status must be pending, running, converted or stopped");
                }
            }
            current(&core).await?;
            let rows = q::list_runs(
                &core.db,
                &RunFilter {
                    status,
                    cart_id: cart,
                    sequence_id: None,
                    after: None,
                    limit: limit.clamp(1, 10_000),
                },
            )
            .await?;
            let value = serde_json::to_value(&rows)?;
            print(json_out, &value, || {
                if rows.is_empty() {
                    return "no recovery runs".into();
                }
                rows.iter()
                    .map(|r| {
                        format!(
                            "{}  cart {}  {}{}  step {}/{}  next {}  recovered {}",
                            r.run_id,
                            r.cart_id,
                            r.status,
                            r.stop_reason
                                .as_deref()
                                .map(|s| format!(" ({s})"))
                                .unwrap_or_default(),
                            r.current_step,
                            r.total_steps,
                            r.next_due_at
                                .map(|d| d.to_rfc3339())
                                .unwrap_or_else(|| "-".into()),
                            r.revenue_recovered
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(())
        }
        RecoveryCmd::Dispatch { dry_run } => dispatch(&core, dry_run, json_out).await,
        RecoveryCmd::Suppression(cmd) => suppression(&core, cmd, json_out).await,
        RecoveryCmd::Outbox => {
            let outbox = Outbox::new(outbox_dir(&core.config.recovery, &core.config.data_dir));
            let entries = outbox
                .list()
                .with_context(|| format!("reading the outbox {}", outbox.dir().display()))?;
            let value = serde_json::to_value(&entries)?;
            print(json_out, &value, || {
                if entries.is_empty() {
                    return format!("the outbox {} is empty", outbox.dir().display());
                }
                entries
                    .iter()
                    .map(|e| {
                        format!(
                            "{:5}  {}  to {}  {}",
                            e.channel,
                            e.key,
                            e.to,
                            e.subject.as_deref().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(())
        }
    }
}

async fn sequence(core: &Core, cmd: SequenceCmd, json_out: bool) -> anyhow::Result<()> {
    let (id, command) = match cmd {
        SequenceCmd::List { all } => {
            current(core).await?;
            let rows = q::list_sequences(&core.db, all).await?;
            let value = serde_json::to_value(&rows)?;
            print(json_out, &value, || {
                value
                    .as_array()
                    .map(|rows| {
                        rows.iter()
                            .map(describe_sequence)
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "no sequences".into())
            });
            return Ok(());
        }
        SequenceCmd::Show { id } => {
            current(core).await?;
            let row = q::get_sequence(&core.db, &id)
                .await?
                .with_context(|| format!("no sequence {id}"))?;
            let value = serde_json::to_value(&row)?;
            print(json_out, &value, || {
                serde_json::to_string_pretty(&value).unwrap_or_default()
            });
            return Ok(());
        }
        SequenceCmd::Create {
            name,
            trigger,
            steps,
            inactive,
        } => (
            Uuid::now_v7().to_string(),
            SequenceCommand::Create {
                name,
                trigger: parse_trigger(&trigger)?,
                steps: parse_steps(&steps)?,
                active: !inactive,
                at: chrono::Utc::now(),
            },
        ),
        SequenceCmd::Update {
            id,
            name,
            trigger,
            steps,
            active,
        } => (
            id,
            SequenceCommand::Update {
                name,
                trigger: trigger.as_deref().map(parse_trigger).transpose()?,
                steps: steps.as_deref().map(parse_steps).transpose()?,
                active,
                at: chrono::Utc::now(),
            },
        ),
        SequenceCmd::Archive { id } => (
            id,
            SequenceCommand::Archive {
                at: chrono::Utc::now(),
            },
        ),
    };
    let meta = cli_meta(core);
    let outcome = core
        .sequences
        .execute(&id, command, &meta)
        .await
        .map_err(|e| sequence_error(&id, e))?;
    if let Some(position) = outcome.last_position() {
        core.ensure_projected(position).await?;
    }
    let row = q::get_sequence(&core.db, &id)
        .await?
        .with_context(|| format!("no sequence {id}"))?;
    let value = serde_json::to_value(&row)?;
    print(json_out, &value, || describe_sequence(&value));
    Ok(())
}

async fn dispatch(core: &Core, dry_run: bool, json_out: bool) -> anyhow::Result<()> {
    // When no server holds the processors lease, this command does the server's part: brings
    // the projections up to date and opens runs for abandonments not yet handled.
    let holder = format!("cli:{}", Uuid::now_v7());
    let lease = ocart_processors::try_acquire(&core.db, PROCESSORS_LEASE, &holder).await?;
    let result = dispatch_with(core, dry_run, json_out, lease.is_some()).await;
    if let Some(lease) = lease {
        lease.release().await;
    }
    result
}

async fn project(core: &Core) -> anyhow::Result<()> {
    for runner in core.runners().await? {
        runner.catch_up().await?;
    }
    Ok(())
}

async fn dispatch_with(
    core: &Core,
    dry_run: bool,
    json_out: bool,
    holds_lease: bool,
) -> anyhow::Result<()> {
    if holds_lease {
        project(core).await?;
        if !dry_run {
            RecoveryOpener::new(core.log.clone(), core.clock.clone(), core.projector_names())
                .catch_up()
                .await?;
            project(core).await?;
        }
    }
    let dispatcher = core.dispatcher()?;
    if dry_run {
        let planned = dispatcher.plan().await?;
        let value = serde_json::to_value(&planned)?;
        print(json_out, &value, || {
            if planned.is_empty() {
                return "nothing is due".into();
            }
            planned
                .iter()
                .map(|p| {
                    let what = match &p.decision {
                        Decision::Send { step, channel } => {
                            format!("would send step {step} ({})", channel.as_str())
                        }
                        Decision::Stop { reason } => format!("would stop: {}", reason.as_str()),
                        Decision::Hold { why } => format!("held back: {why}"),
                    };
                    format!("{}  cart {}  {what}", p.run_id, p.cart_id)
                })
                .collect::<Vec<_>>()
                .join("\n")
        });
        return Ok(());
    }
    // Claims are atomic, so these passes are safe even beside a running server.
    let mut report = PassReport::default();
    loop {
        let (outcome, pass) = dispatcher.try_handle_next().await?;
        // Held runs are still held at the end: report the last pass's count, not a sum.
        report += PassReport { held: 0, ..pass };
        report.held = pass.held;
        if outcome == Outcome::Idle {
            break;
        }
        if holds_lease {
            project(core).await?;
        } else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    print(json_out, &serde_json::to_value(report)?, || {
        format!(
            "sent {}, failed {}, stopped {}, held back {}, taken by another dispatcher {}",
            report.sent, report.failed, report.stopped, report.held, report.skipped
        )
    });
    Ok(())
}

/// A recipient given as an email, an E.164 phone, or a hash as the suppression list shows it.
fn recipient_of(raw: &str) -> Recipient {
    let trimmed = raw.trim();
    if trimmed.len() == 64 && trimmed.chars().all(|c| c.is_ascii_hexdigit()) {
        Recipient::hash(trimmed)
    } else {
        Recipient::address(raw)
    }
}

/// A suppression failure as the CLI says it.
fn suppress_failure(raw: &str, err: SuppressError) -> anyhow::Error {
    match err {
        SuppressError::Invalid(errors) if raw.trim().starts_with('+') => anyhow::anyhow!(
            "{}",
            errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        SuppressError::Invalid(_) => {
            anyhow::anyhow!("{raw:?} is not an email address, an E.164 phone number or a hash")
        }
        SuppressError::NotSuppressed => anyhow::anyhow!("{raw} is not suppressed"),
        other => other.into(),
    }
}

async fn suppression(core: &Core, cmd: SuppressionCmd, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        SuppressionCmd::List { limit } => {
            current(core).await?;
            let rows = q::list_suppression(&core.db, limit.clamp(1, 100_000)).await?;
            let value = serde_json::to_value(&rows)?;
            print(json_out, &value, || {
                if rows.is_empty() {
                    return "the suppression list is empty".into();
                }
                rows.iter()
                    .map(|r| {
                        format!(
                            "{}  {}  {}  {}",
                            r.recipient_hash,
                            r.reason,
                            r.channel.as_deref().unwrap_or("all"),
                            r.created_at.to_rfc3339()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        SuppressionCmd::Add { recipient, reason } => {
            let reason: ocart_domain::recovery::SuppressionReason =
                serde_json::from_value(json!(reason)).map_err(|_| {
                    anyhow::anyhow!(
                        "--reason {reason:?}: use manual, bounce, complaint, unsubscribe or winback_failed"
                    )
                })?;
            let meta = cli_meta(core);
            let input = Suppress {
                recipient: recipient_of(&recipient),
                reason,
                channel: None,
                source: Some("cli".into()),
            };
            let done = suppress(core, input, &meta)
                .await
                .map_err(|e| suppress_failure(&recipient, e))?;
            if let Some(position) = done.position {
                core.ensure_projected(position).await?;
            }
            let hash = done.recipient_hash;
            print(
                json_out,
                &json!({"recipient_hash": hash, "suppressed": true}),
                || format!("suppressed {hash} ({})", reason.as_str()),
            );
        }
        SuppressionCmd::Remove { recipient } => {
            let meta = cli_meta(core);
            let done = lift(core, recipient_of(&recipient), &meta)
                .await
                .map_err(|e| suppress_failure(&recipient, e))?;
            if let Some(position) = done.position {
                core.ensure_projected(position).await?;
            }
            let hash = done.recipient_hash;
            print(
                json_out,
                &json!({"recipient_hash": hash, "suppressed": false}),
                || format!("{hash} may be messaged again"),
            );
        }
    }
    Ok(())
}
