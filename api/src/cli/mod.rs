//! The `ocart` command line: server, migrations, tokens, carts, replay, events, audit,
//! settings, the A/B test calculator and benchmarks. Human output by default, `--json` for
//! scripts; errors go to stderr with a non-zero exit code.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use ocart_domain::cart::{CartCommand, CartError};
use ocart_domain::token::{Capability, TokenCommand};
use ocart_domain::SystemClock;
use ocart_projections::queries::{self, CartFilter};
use ocart_projections::{Checkpoint, CommandError, CommandMeta};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::config::Config;
use crate::core::{Core, PROCESSORS_LEASE};
use crate::Application;

#[derive(Debug, Parser)]
#[command(
    name = "ocart",
    version,
    about = "OCart: cart capture, recovery, funnels and A/B tests beside your store."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Folder holding ocart.db and local outboxes.
    #[arg(long, env = "OCART_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// postgres://… switches to PostgreSQL; default sqlite in the data dir.
    #[arg(long, env = "OCART_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// NATS server for the event stream; unset means no relay.
    #[arg(long, env = "OCART_NATS_URL", global = true)]
    pub nats_url: Option<String>,
    /// TOML configuration file.
    #[arg(long, env = "OCART_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API and the background processors.
    Serve {
        #[arg(long, env = "OCART_BIND")]
        bind: Option<std::net::SocketAddr>,
    },
    /// Apply pending database migrations.
    Migrate,
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Carts.
    #[command(subcommand)]
    Cart(CartCmd),
    /// Rebuild projections from the log.
    Replay {
        #[arg(long, conflicts_with = "all")]
        projection: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// The event log.
    #[command(subcommand)]
    Events(EventsCmd),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Settings.
    #[command(subcommand)]
    Settings(SettingsCmd),
    /// Abandoned-cart recovery: sequences, runs, dispatch, the outbox.
    #[command(subcommand)]
    Recovery(crate::cli::recovery::RecoveryCmd),
    /// Funnels: list, show, create, update, activate, archive.
    #[command(subcommand)]
    Funnel(crate::cli::funnel::FunnelCmd),
    /// Built-in funnel templates: list them, install one as a funnel.
    #[command(subcommand)]
    Template(crate::cli::funnel::TemplateCmd),
    /// Export offers, funnels and recovery sequences as one JSON document.
    Export {
        /// Write the document to FILE (default: stdout).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Import a document written by `ocart export`: creates what is missing, updates what
    /// differs; checked whole first, nothing written if any item is wrong.
    Import {
        /// The document (`-` for stdin).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Report what would change without writing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Benchmarks (figures for BENCHMARKS.md).
    #[command(subcommand)]
    Bench(crate::cli::bench::BenchCmd),
    /// Email: the DKIM record to publish.
    #[command(subcommand)]
    Email(crate::cli::email::EmailCmd),
    /// Payment gateways for upsell charges: their status; rotate webhook secrets and keys.
    #[command(subcommand)]
    Gateway(crate::cli::gateway::GatewayCmd),
    /// A/B tests: list, show, create, update, delete, start, stop, results, sample-size; and
    /// the calculator (`ocart test calc compare`, `ocart test calc sample-size`), run locally
    /// on the counts given.
    #[command(subcommand)]
    Test(crate::cli::test::TestCmd),
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a token; its secret is shown once.
    Create {
        #[arg(long)]
        name: String,
        /// Capabilities, comma separated (e.g. ocart_manage,ocart_view_reports).
        #[arg(long = "cap", value_delimiter = ',', required = true)]
        caps: Vec<String>,
    },
    List,
    Revoke {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum CartCmd {
    List {
        #[arg(long)]
        status: Option<String>,
        /// RFC 3339 time or an age such as 24h.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    Show {
        id: String,
    },
    MarkConverted {
        id: String,
        #[arg(long)]
        order_id: Option<String>,
        /// Revenue in minor units.
        #[arg(long)]
        revenue: Option<i64>,
    },
    MarkAbandoned {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCmd {
    /// Follow the log, printing each event as a JSON line.
    Tail {
        /// Start from the beginning instead of the end.
        #[arg(long)]
        from_start: bool,
    },
    /// Print every event as a JSON line, then exit.
    Export {
        /// Only events after this global position.
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Check every event's hash chain; exit 1 if any event was altered or removed.
    Verify,
}

#[derive(Debug, Subcommand)]
pub enum SettingsCmd {
    /// Show all settings, or one `group.key`.
    Get { key: Option<String> },
    /// Set `group.key` to a value (JSON, or a bare string).
    Set { key: String, value: String },
}

pub mod abtest;
pub mod bench;
pub mod email;
pub mod export;
pub mod funnel;
pub mod gateway;
pub mod recovery;
mod simulate;
pub mod test;

impl Global {
    /// Defaults → file → flags/environment.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(url) = &self.database_url {
            config.database_url = Some(url.clone());
        }
        if let Some(url) = &self.nats_url {
            config.nats_url = Some(url.clone()).filter(|u| !u.trim().is_empty());
        }
        if config.secret.is_none() {
            if let Ok(secret) = std::env::var("OCART_SECRET") {
                config.secret = Some(crate::config::Secret::from(secret));
            }
        }
        Ok(config)
    }
}

fn cli_meta(core: &Core) -> CommandMeta {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let request_id = Uuid::now_v7().to_string();
    CommandMeta {
        actor: format!("cli:{user}"),
        correlation_id: request_id.clone(),
        request_id,
        causation_id: None,
        ip: None,
        at: ocart_domain::Clock::now(&*core.clock),
    }
}

pub(crate) fn print(json_out: bool, value: &Value, human: impl FnOnce() -> String) {
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        println!("{}", human());
    }
}

async fn open(config: Config) -> anyhow::Result<Arc<Core>> {
    let mut config = config;
    config.processors.enabled = false;
    Core::open(config, Arc::new(SystemClock)).await
}

/// Runs one command line; the returned error is printed by `main` with exit code 1.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let json_out = cli.global.json;
    let mut config = cli.global.config()?;
    match cli.command {
        Command::Serve { bind } => {
            if let Some(bind) = bind {
                config.bind = bind;
            }
            let url = ocart_projections::redact(&config.effective_database_url());
            let nats = config.nats_url.as_deref().map(ocart_projections::redact);
            let app = Application::build(config, Arc::new(SystemClock)).await?;
            if let Some(token) = &app.admin_token {
                eprintln!("\nFirst start: an admin token was created. It is shown only this once; keep it:\n\n    {token}\n");
            }
            eprintln!(
                "OCart is listening on http://127.0.0.1:{port}/ocart/v1/ping (store: {url}; NATS: {nats}). API: http://127.0.0.1:{port}/ocart/v1/openapi",
                port = app.port(),
                nats = nats.as_deref().unwrap_or("off")
            );
            app.run_until_stopped(shutdown_signal()).await
        }
        Command::Migrate => {
            let core = open(config).await?;
            core.seed_default_sequence(&cli_meta(&core)).await?;
            print(
                json_out,
                &json!({"migrated": true, "backend": core.db.backend().as_str()}),
                || format!("migrations applied ({})", core.db.backend().as_str()),
            );
            Ok(())
        }
        Command::Token(cmd) => token(cmd, config, json_out).await,
        Command::Cart(cmd) => cart(cmd, config, json_out).await,
        Command::Replay { projection, all } => replay(config, projection, all, json_out).await,
        Command::Events(cmd) => events(cmd, config).await,
        Command::Audit(AuditCmd::Verify) => {
            let core = open(config).await?;
            let report = ocart_projections::verify_chain(&core.db).await?;
            print(json_out, &serde_json::to_value(&report)?, || {
                let mut out = format!(
                    "checked {} events in {} aggregates: ",
                    report.events, report.aggregates
                );
                if report.broken.is_empty() {
                    out.push_str("the hash chain is intact");
                } else {
                    out.push_str(&format!("{} events do not verify", report.broken.len()));
                    for b in &report.broken {
                        out.push_str(&format!(
                            "\n  {}/{} #{} (event {}, position {}): {}",
                            b.aggregate_type,
                            b.aggregate_id,
                            b.sequence,
                            b.event_id,
                            b.global_position,
                            b.reason
                        ));
                    }
                }
                out
            });
            if report.broken.is_empty() {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        Command::Settings(cmd) => settings(cmd, config, json_out).await,
        Command::Recovery(cmd) => recovery::run(cmd, config, json_out).await,
        Command::Funnel(cmd) => funnel::run(cmd, config, json_out).await,
        Command::Template(cmd) => funnel::template(cmd, config, json_out).await,
        Command::Export { out } => export::export(config, out, json_out).await,
        Command::Import { file, dry_run } => export::import(config, file, dry_run, json_out).await,
        // The statistics bench prints JSON with the global `--json`.
        Command::Bench(bench::BenchCmd::Stats(args)) => bench::stats::run(&args, json_out),
        Command::Bench(bench::BenchCmd::Aa(args)) => bench::aa::run(&args, json_out),
        Command::Bench(cmd) => bench::run(cmd, config).await,
        Command::Email(cmd) => email::run(cmd, &config, json_out),
        Command::Gateway(cmd) => gateway::run(cmd, &config, json_out).await,
        Command::Test(test::TestCmd::Manage(cmd)) => abtest::run(cmd, config, json_out).await,
        Command::Test(cmd) => test::run(cmd, json_out),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    eprintln!("shutting down: finishing in-flight requests and checkpointing processors");
}

async fn token(cmd: TokenCmd, config: Config, json_out: bool) -> anyhow::Result<()> {
    let core = open(config).await?;
    match cmd {
        TokenCmd::Create { name, caps } => {
            let mut parsed = Vec::new();
            for cap in &caps {
                parsed.push(Capability::parse(cap).with_context(|| {
                    format!(
                        "{cap:?} is not a capability; choose from {}",
                        Capability::ALL
                            .iter()
                            .map(|c| c.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?);
            }
            let meta = cli_meta(&core);
            let created = core.create_token(&name, parsed, &meta).await?;
            core.ensure_projected(created.position).await?;
            print(
                json_out,
                &json!({"token_id": created.token_id, "token": created.secret, "name": name}),
                || {
                    format!(
                        "token {} created. Its secret is shown only now:\n{}",
                        created.token_id, created.secret
                    )
                },
            );
        }
        TokenCmd::List => {
            let rows = queries::list_tokens(&core.db).await?;
            let value = serde_json::to_value(&rows)?;
            print(json_out, &value, || {
                rows.iter()
                    .map(|r| {
                        format!(
                            "{}  {:<24} {}{}",
                            r.token_id,
                            r.name,
                            r.capabilities
                                .0
                                .iter()
                                .map(|c| c.as_str())
                                .collect::<Vec<_>>()
                                .join(","),
                            if r.revoked_at.is_some() {
                                "  (revoked)"
                            } else {
                                ""
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        TokenCmd::Revoke { id } => {
            let meta = cli_meta(&core);
            let outcome = core
                .tokens
                .execute(&id, TokenCommand::Revoke { at: meta.at }, &meta)
                .await
                .map_err(|e| match e {
                    CommandError::Rejected(err) => anyhow::anyhow!("cannot revoke {id}: {err}"),
                    other => other.into(),
                })?;
            if let Some(position) = outcome.last_position() {
                core.ensure_projected(position).await?;
            }
            print(json_out, &json!({"token_id": id, "revoked": true}), || {
                format!("token {id} revoked")
            });
        }
    }
    Ok(())
}

async fn cart(cmd: CartCmd, config: Config, json_out: bool) -> anyhow::Result<()> {
    let core = open(config).await?;
    match cmd {
        CartCmd::List {
            status,
            since,
            limit,
        } => {
            let since = match since {
                Some(raw) => Some(
                    crate::params::parse_since(&raw, chrono::Utc::now()).with_context(|| {
                        format!("--since {raw:?}: use an RFC 3339 time or an age such as 24h")
                    })?,
                ),
                None => None,
            };
            if let Some(s) = &status {
                if !["active", "abandoned", "converted", "expired"].contains(&s.as_str()) {
                    bail!("--status must be active, abandoned, converted or expired");
                }
            }
            let rows = queries::list_carts(
                &core.db,
                &CartFilter {
                    status,
                    since,
                    after: None,
                    limit: limit.clamp(1, 10_000),
                },
            )
            .await?;
            print(json_out, &serde_json::to_value(&rows)?, || {
                if rows.is_empty() {
                    return "no carts".into();
                }
                rows.iter()
                    .map(|c| {
                        format!(
                            "{}  {:<10} {:>10} {}  {}  {}",
                            c.cart_id,
                            c.status,
                            c.total_minor,
                            c.currency,
                            c.email
                                .as_deref()
                                .unwrap_or(if c.erased { "(erased)" } else { "-" }),
                            c.last_activity_at.to_rfc3339()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        CartCmd::Show { id } => {
            let row = queries::get_cart(&core.db, &id)
                .await?
                .with_context(|| format!("no cart {id}"))?;
            let value = serde_json::to_value(&row)?;
            print(json_out, &value, || {
                serde_json::to_string_pretty(&value).unwrap_or_default()
            });
        }
        CartCmd::MarkConverted {
            id,
            order_id,
            revenue,
        } => {
            let meta = cli_meta(&core);
            let input = crate::usecases::convert::ConvertCart {
                cart_id: id.clone(),
                order_id,
                revenue,
            };
            let converted = crate::usecases::convert::convert(&core, input, &meta)
                .await
                .map_err(|e| match e {
                    crate::usecases::convert::ConvertError::CartNotFound(_) => {
                        anyhow::anyhow!("no cart {id}")
                    }
                    crate::usecases::convert::ConvertError::Invalid(errors) => anyhow::anyhow!(
                        "{}",
                        errors
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                    crate::usecases::convert::ConvertError::Closed(why) => {
                        anyhow::anyhow!("cart {id}: {why}")
                    }
                    other => other.into(),
                })?;
            if let Some(position) = converted.position {
                core.ensure_projected(position).await?;
            }
            let status = converted.status.as_str();
            print(json_out, &json!({"cart_id": id, "status": status}), || {
                format!("cart {id} is now {status}")
            });
        }
        CartCmd::MarkAbandoned { id } => {
            let settings = core.settings().await?;
            let meta = cli_meta(&core);
            let command = CartCommand::MarkAbandoned {
                at: meta.at,
                threshold_min: settings.recovery.abandoned_threshold_min,
                forced: true,
            };
            cart_command(&core, &id, command, &meta, json_out).await?;
        }
    }
    Ok(())
}

async fn cart_command(
    core: &Core,
    id: &str,
    command: CartCommand,
    meta: &CommandMeta,
    json_out: bool,
) -> anyhow::Result<()> {
    let outcome = core
        .carts
        .execute(id, command, meta)
        .await
        .map_err(|e| match e {
            CommandError::Rejected(CartError::NotFound) => anyhow::anyhow!("no cart {id}"),
            CommandError::Rejected(err) => anyhow::anyhow!("cart {id}: {err}"),
            other => other.into(),
        })?;
    if let Some(position) = outcome.last_position() {
        core.ensure_projected(position).await?;
    }
    let status = outcome.aggregate.status().as_str();
    print(json_out, &json!({"cart_id": id, "status": status}), || {
        format!("cart {id} is now {status}")
    });
    Ok(())
}

async fn replay(
    config: Config,
    projection: Option<String>,
    all: bool,
    json_out: bool,
) -> anyhow::Result<()> {
    let core = open(config).await?;
    let runners = core.runners().await?;
    let names: Vec<&str> = runners.iter().map(|r| r.name()).collect();
    let selected: Vec<_> = match (&projection, all) {
        (Some(name), _) => {
            let found: Vec<_> = runners.iter().filter(|r| r.name() == name).collect();
            if found.is_empty() {
                bail!("no projection {name:?}; choose from {}", names.join(", "));
            }
            found
        }
        (None, true) => runners.iter().collect(),
        (None, false) => bail!(
            "say which: --projection NAME ({}) or --all",
            names.join(", ")
        ),
    };
    let holder = format!("replay:{}", Uuid::now_v7());
    let lease = ocart_processors::try_acquire(&core.db, PROCESSORS_LEASE, &holder)
        .await?
        .context("a running `ocart serve` holds the processors lease; stop it before replaying")?;
    let (total, _) = core.log.stats().await?;
    let mut results = Vec::new();
    for runner in selected {
        let bar = if json_out {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::new(total as u64)
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:>12} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(runner.name());
        let started = std::time::Instant::now();
        let applied = runner.rebuild(|n| bar.set_position(n)).await?;
        bar.finish();
        let secs = started.elapsed().as_secs_f64();
        results.push(json!({"projection": runner.name(), "events": applied, "seconds": secs, "events_per_sec": applied as f64 / secs.max(1e-9)}));
    }
    lease.release().await;
    print(json_out, &Value::Array(results.clone()), || {
        results
            .iter()
            .map(|r| {
                format!(
                    "{}: rebuilt from {} events in {:.2} s",
                    r["projection"].as_str().unwrap_or(""),
                    r["events"],
                    r["seconds"].as_f64().unwrap_or(0.0)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

async fn events(cmd: EventsCmd, config: Config) -> anyhow::Result<()> {
    let core = open(config).await?;
    match cmd {
        EventsCmd::Export { after } => {
            let mut at = match after {
                0 => Checkpoint::default(),
                position => ocart_projections::checkpoint_of(&core.db, position)
                    .await?
                    .with_context(|| format!("no event at position {position}"))?,
            };
            loop {
                let events = core.log.read_after(at, 1000).await?;
                let Some(last) = events.last() else { break };
                at = last.checkpoint();
                for e in &events {
                    println!("{}", ocart_processors::envelope(e));
                }
            }
        }
        EventsCmd::Tail { from_start } => {
            let mut at = Checkpoint::default();
            if !from_start {
                // Skip to the end.
                loop {
                    let events = core.log.read_after(at, 5000).await?;
                    let Some(last) = events.last() else { break };
                    at = last.checkpoint();
                }
            }
            let mut wake = core.log.watch();
            loop {
                let events = core.log.read_after(at, 1000).await?;
                match events.last() {
                    Some(last) => {
                        at = last.checkpoint();
                        for e in &events {
                            println!("{}", ocart_processors::envelope(e));
                        }
                    }
                    None => {
                        core.log
                            .wait_for_new(&mut wake, Duration::from_millis(500))
                            .await
                    }
                }
            }
        }
    }
    Ok(())
}

async fn settings(cmd: SettingsCmd, config: Config, json_out: bool) -> anyhow::Result<()> {
    let core = open(config).await?;
    match cmd {
        SettingsCmd::Get { key } => {
            let (values, _) = queries::current_settings(&core.db).await?;
            let doc = serde_json::to_value(&values)?;
            let value = match &key {
                Some(key) => {
                    let (group, name) = key
                        .split_once('.')
                        .with_context(|| format!("{key:?}: name a setting as group.key"))?;
                    doc.get(group)
                        .and_then(|g| g.get(name))
                        .cloned()
                        .with_context(|| format!("no setting {key}"))?
                }
                None => doc,
            };
            print(json_out, &value, || match &value {
                Value::Object(_) => serde_json::to_string_pretty(&value).unwrap_or_default(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        }
        SettingsCmd::Set { key, value } => {
            let (group, name) = key
                .split_once('.')
                .with_context(|| format!("{key:?}: name a setting as group.key"))?;
            let parsed: Value =
                serde_json::from_str(&value).unwrap_or(Value::String(value.clone()));
            let patch = json!({ group: { name: parsed } });
            let meta = cli_meta(&core);
            let outcome = core
                .update_settings(patch, &meta)
                .await
                .map_err(|e| match e {
                    CommandError::Rejected(err) => anyhow::anyhow!("{err}"),
                    other => other.into(),
                })?;
            if let Some(position) = outcome.last_position() {
                core.ensure_projected(position).await?;
            }
            print(
                json_out,
                &json!({"key": key, "value": parsed, "changed": outcome.last_position().is_some()}),
                || {
                    if outcome.last_position().is_some() {
                        format!("{key} = {parsed}")
                    } else {
                        format!("{key} was already {parsed}")
                    }
                },
            );
        }
    }
    Ok(())
}
