//! The recovery dispatcher, a process manager. Each pass looks at the runs due now (and at
//! claims a crashed dispatcher left behind), checks the send guards, claims the step on the
//! run aggregate (an append at the run's next sequence number, so exactly one of several
//! dispatchers wins), sends the message (rendered by `render`, which does no IO), and records
//! the outcome. A guard that fails ends the run with its reason; nothing is sent on a guess.
//!
//! A step whose `ab_test` names a running recovery test on its channel's surface
//! (`abtest::recovery_test`) sends the template of the run's variant: the run (the unit) is
//! assigned once, by the `Assignment` aggregate, with the variant the domain chooses
//! (`abtest::choose_variant`; a bandit's allocator is given the test's totals each pass).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use ocart_domain::abtest::{self, Assignment, AssignmentCommand, RunningTest, TestDefinition};
use ocart_domain::recovery::{
    send_verdict, CartFacts, CartState, Channel, GuardSettings, IssuedCoupon, OtherRun,
    RecoveryRun, RunCommand, RunError, RunState, SendFacts, SendVerdict, StopReason,
};
use ocart_domain::settings::SettingsValues;
use ocart_domain::Clock;
use ocart_projections::queries::recovery::{self as q, CartForSend, DueRun, RecipientRun, RunRow};
use ocart_projections::{queries, CommandError, CommandMeta, Commands, EventLog, Outcome, Vault};
use serde::{Deserialize, Serialize};

use super::channels::{
    EmailBuilder, EmailConfig, EmailTransport, Outbox, SendError, SmsConfig, SmsTransport, Smtp,
    TwilioSms,
};
use super::render::{self, Draft, LinkTokens, Message, RenderError};
use super::templates::TemplateParts;
use crate::keyset::KeysetWalk;
use crate::supervisor::{Next, Processor, DEFAULT_POLL};

/// The actor of the dispatcher's commands (`system:dispatcher`).
pub const DISPATCHER: &str = "dispatcher";

/// Recovery settings of the process (`[recovery]` in the config file); the store owner's
/// settings (`recovery.*` in the settings API) live in the log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    /// The store's name, for merge tags.
    pub store_name: String,
    /// The public base URL of this OCart (restore and unsubscribe links point here).
    pub public_url: String,
    /// A claim older than this is taken to be a crashed dispatcher's, and taken over.
    pub claim_timeout_secs: u64,
    /// Runs looked at per pass.
    pub batch_size: i64,
    /// Runs handled at once within a pass.
    pub concurrency: usize,
    /// Where the outbox lives (default `<data_dir>/outbox`).
    pub outbox_dir: Option<std::path::PathBuf>,
    /// The store's checkout page, where restore links send the shopper (default: the
    /// WooCommerce store's `/checkout/`, else `<public_url>/checkout/`).
    pub checkout_url: Option<String>,
    /// The DNS resolver `POST /recovery/dns-check` asks (`ip:port`; default: the first
    /// `nameserver` of `/etc/resolv.conf`).
    pub dns_resolver: Option<String>,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            store_name: "Our store".into(),
            public_url: "http://127.0.0.1:8080".into(),
            claim_timeout_secs: 600,
            batch_size: 200,
            // As many as the SMTP client's connections.
            concurrency: 32,
            outbox_dir: None,
            checkout_url: None,
            dns_resolver: None,
        }
    }
}

/// What the dispatcher will do with a due run, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Decision {
    /// Send step `step` (1-based).
    Send { step: u32, channel: Channel },
    /// End the run: a guard failed for good.
    Stop { reason: StopReason },
    /// Leave it for now (`why` says what it waits for).
    Hold { why: String },
}

/// One line of `ocart recovery dispatch --dry-run`.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub run_id: String,
    pub cart_id: String,
    pub next_due_at: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub decision: Decision,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PassReport {
    pub sent: usize,
    pub failed: usize,
    pub stopped: usize,
    pub held: usize,
    /// Lost a race for the claim to another dispatcher.
    pub skipped: usize,
    /// Unused coupons past their expiry, removed.
    pub coupons_expired: usize,
}

impl std::ops::AddAssign for PassReport {
    /// Totals over passes (`held` counts a run again each pass it is held).
    fn add_assign(&mut self, pass: Self) {
        self.sent += pass.sent;
        self.failed += pass.failed;
        self.stopped += pass.stopped;
        self.held += pass.held;
        self.skipped += pass.skipped;
        self.coupons_expired += pass.coupons_expired;
    }
}

pub struct Dispatcher {
    log: EventLog,
    runs: Commands<RecoveryRun>,
    /// Recovery runs' variants in A/B tests.
    assignments: Commands<Assignment>,
    vault: Vault,
    clock: Arc<dyn Clock>,
    config: RecoveryConfig,
    builder: EmailBuilder,
    email: Arc<dyn EmailTransport>,
    sms: Arc<dyn SmsTransport>,
    store: Option<crate::store::WooCommerce>,
    /// By `(next_due_at, run_id)`, remembering the last event appended to each run, so a
    /// pass does not meet again the runs the previous one handled while the read table has
    /// not caught up with them.
    walk: KeysetWalk,
    poll: Duration,
}

/// What the send guards read, for a whole pass at once (a few queries, not a few per run).
#[derive(Default)]
struct Facts {
    carts: HashMap<String, CartForSend>,
    suppressed: HashSet<String>,
    buyers: HashSet<String>,
    /// The runs of each recipient that can hold them (open, or sent within the quiet period).
    holders: HashMap<String, Vec<RecipientRun>>,
    /// The templates of the steps due (and of their tests' variants), saved or built in.
    templates: HashMap<String, TemplateParts>,
    /// The running tests the steps due name in `ab_test`.
    tests: Vec<RunningTest>,
    /// The bandits among them, given their totals for this pass.
    bandits: Mutex<HashMap<String, ocart_domain::stats::bandit::Allocator>>,
}

/// Runs whose last append the dispatcher remembers at most.
const ACTED_MAX: usize = 100_000;

/// The outbox folder for a data dir and config.
pub fn outbox_dir(config: &RecoveryConfig, data_dir: &std::path::Path) -> std::path::PathBuf {
    config
        .outbox_dir
        .clone()
        .unwrap_or_else(|| data_dir.join("outbox"))
}

impl Dispatcher {
    /// A dispatcher with the transports the configuration names.
    pub fn from_config(
        log: EventLog,
        vault: Vault,
        clock: Arc<dyn Clock>,
        config: RecoveryConfig,
        email: &EmailConfig,
        sms: &SmsConfig,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let outbox = Arc::new(Outbox::new(outbox_dir(&config, data_dir)));
        let email_transport: Arc<dyn EmailTransport> = match email.transport.as_str() {
            "outbox" => outbox.clone(),
            "smtp" => Arc::new(Smtp::new(&email.smtp)?),
            other => anyhow::bail!("email.transport {other:?}: use outbox or smtp"),
        };
        let sms_transport: Arc<dyn SmsTransport> = match sms.transport.as_str() {
            "outbox" => outbox,
            "twilio" => Arc::new(TwilioSms::new(sms)?),
            other => anyhow::bail!("sms.transport {other:?}: use outbox or twilio"),
        };
        Ok(Self {
            // Claim and record follow each other on the same run: the cached state after the
            // claim saves a load (the append still validates it, ADR 0006).
            runs: Commands::new(log.clone(), ()).with_cache(10_000),
            assignments: Commands::new(log.clone(), ()).with_cache(10_000),
            log,
            vault,
            clock,
            config,
            builder: EmailBuilder::new(email)?,
            email: email_transport,
            sms: sms_transport,
            store: None,
            walk: KeysetWalk::new(ACTED_MAX),
            poll: DEFAULT_POLL,
        })
    }

    /// The longest sleep between passes (default half a second).
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Creates recovery coupons in this store too (the WooCommerce connector).
    pub fn with_store(mut self, store: Option<crate::store::WooCommerce>) -> Self {
        self.store = store;
        self
    }

    pub(crate) fn log(&self) -> &EventLog {
        &self.log
    }
    pub(crate) fn vault(&self) -> &Vault {
        &self.vault
    }
    pub(crate) fn runs(&self) -> &Commands<RecoveryRun> {
        &self.runs
    }
    pub(crate) fn store(&self) -> Option<&crate::store::WooCommerce> {
        self.store.as_ref()
    }

    fn stale_after(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.config.claim_timeout_secs as i64)
    }

    /// The settings in force and the runs due at `now`: what a pass looks at. A real pass
    /// (`advance`) goes on from the previous one's cursor and skips the rows it knows are stale.
    async fn due(
        &self,
        now: DateTime<Utc>,
        advance: bool,
    ) -> anyhow::Result<(SettingsValues, Vec<DueRun>)> {
        let (settings, _) = queries::current_settings(self.log.db()).await?;
        let after = if advance { self.walk.after() } else { None };
        let limit = self.config.batch_size.max(1);
        let mut rows =
            q::due_runs(self.log.db(), now, now - self.stale_after(), after, limit).await?;
        if advance {
            self.walk.scanned(
                rows.len() as i64 >= limit,
                rows.last().and_then(|last| {
                    let at = last.run.next_due_at?;
                    Some((at, last.run.run_id.clone()))
                }),
            );
            self.walk.keep_fresh(&mut rows, |due| {
                (due.run.run_id.as_str(), due.run.last_position)
            });
        }
        Ok((settings, rows))
    }

    /// Reads what the guards of these runs need, in one query per kind of fact.
    async fn facts(
        &self,
        rows: &[DueRun],
        settings: &SettingsValues,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Facts> {
        let db = self.log.db();
        let mut facts = Facts::default();
        if rows.is_empty() {
            return Ok(facts);
        }
        let cart_ids: Vec<&str> = rows.iter().map(|r| r.run.cart_id.as_str()).collect();
        facts.carts = q::carts_for_send(db, &cart_ids)
            .await?
            .into_iter()
            .map(|c| (c.cart_id.clone(), c))
            .collect();
        let emails: HashSet<&str> = facts
            .carts
            .values()
            .filter_map(|c| c.email_hash.as_deref())
            .collect();
        let emails: Vec<&str> = emails.into_iter().collect();
        let recipients: Vec<&str> = facts
            .carts
            .values()
            .flat_map(|c| [c.email_hash.as_deref(), c.phone_hash.as_deref()])
            .flatten()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        facts.suppressed = q::suppressed_among(db, &recipients)
            .await?
            .into_iter()
            .collect();
        let lookback = chrono::Duration::days(i64::from(settings.recovery.order_lookback_days));
        facts.buyers = q::buyers_among(db, &emails, now - lookback)
            .await?
            .into_iter()
            .collect();
        let quiet = chrono::Duration::hours(i64::from(settings.recovery.quiet_period_hours));
        for run in q::runs_of_recipients(db, &emails, now - quiet).await? {
            facts
                .holders
                .entry(run.email_hash.clone())
                .or_default()
                .push(run);
        }
        let due_steps = || {
            rows.iter()
                .filter_map(|r| r.steps.get(r.run.current_step as usize))
        };
        let tested: HashSet<&str> = due_steps()
            .filter_map(|step| step.ab_test.as_deref())
            .collect();
        for id in tested {
            let Some(row) = queries::abtests::get_test(db, id).await? else {
                continue;
            };
            if row.status != "running" {
                continue;
            }
            let definition: TestDefinition = match serde_json::from_str(&row.definition) {
                Ok(definition) => definition,
                Err(e) => {
                    tracing::warn!(test = %row.id, error = %e, "a running test's stored definition does not read");
                    continue;
                }
            };
            if definition.method == ocart_domain::stats::conclude::Method::Bandit {
                let totals = queries::abtests::variant_totals(db, &row.id).await?;
                let arms = definition
                    .variants
                    .iter()
                    .map(|v| {
                        let t = totals.iter().find(|t| t.variant == v.key);
                        ocart_domain::stats::bayes::Arm {
                            conversions: t.map_or(0, |t| u64::try_from(t.conversions).unwrap_or(0)),
                            visitors: t.map_or(0, |t| u64::try_from(t.visitors).unwrap_or(0)),
                        }
                    })
                    .collect();
                if let Ok(mut allocator) =
                    ocart_domain::stats::bandit::Allocator::new(definition.variants.len())
                {
                    if allocator.refresh(arms).is_ok() {
                        facts
                            .bandits
                            .get_mut()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(row.id.clone(), allocator);
                    }
                }
            }
            facts.tests.push(RunningTest {
                id: row.id,
                definition,
            });
        }
        let mut names: HashSet<&str> = due_steps().map(|step| step.template.as_str()).collect();
        let variant_templates: Vec<String> = facts
            .tests
            .iter()
            .flat_map(|t| t.definition.variants.iter().map(|v| v.serves.clone()))
            .collect();
        names.extend(variant_templates.iter().map(String::as_str));
        for name in names {
            let parts = super::templates::resolve(db, name).await?;
            facts.templates.insert(name.to_owned(), parts);
        }
        Ok(facts)
    }

    /// What a pass would do now, without doing it.
    pub async fn plan(&self) -> anyhow::Result<Vec<Planned>> {
        let now = self.clock.now();
        let (settings, rows) = self.due(now, false).await?;
        let facts = self.facts(&rows, &settings, now).await?;
        let mut planned = Vec::with_capacity(rows.len());
        for due in rows {
            let (decision, _) = decide(&due, &facts, &settings, now);
            planned.push(Planned {
                run_id: due.run.run_id,
                cart_id: due.run.cart_id,
                next_due_at: due.run.next_due_at,
                decision,
            });
        }
        Ok(planned)
    }

    /// One pass over the runs due now.
    pub async fn try_handle_next(&self) -> anyhow::Result<(Outcome, PassReport)> {
        let now = self.clock.now();
        let (settings, rows) = self.due(now, true).await?;
        let facts = self.facts(&rows, &settings, now).await?;
        let mut report = PassReport::default();
        // Runs are independent (each claim is its own append, and the appends of runs
        // handled at once share a commit), so several are handled at once; the guards stay
        // correct because the recipient rule is deterministic.
        let (settings, facts) = (&settings, &facts);
        let results: Vec<anyhow::Result<Handled>> = futures::stream::iter(rows)
            .map(|due| async move { self.handle(&due, facts, settings, now).await })
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        for result in results {
            match result? {
                Handled::Held => report.held += 1,
                Handled::Stopped => report.stopped += 1,
                Handled::Sent => report.sent += 1,
                Handled::Failed => report.failed += 1,
                Handled::Skipped => report.skipped += 1,
            }
        }
        report.coupons_expired = self.expire_coupons(now).await? as usize;
        let acted = report.sent + report.failed + report.stopped + report.coupons_expired;
        Ok((
            if acted > 0 {
                Outcome::Processed(acted)
            } else {
                Outcome::Idle
            },
            report,
        ))
    }

    /// Guards, then stops, holds or sends one due run.
    async fn handle(
        &self,
        due: &DueRun,
        facts: &Facts,
        settings: &SettingsValues,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Handled> {
        let row = &due.run;
        let (decision, cart) = decide(due, facts, settings, now);
        Ok(match decision {
            Decision::Hold { .. } => Handled::Held,
            Decision::Stop { reason } => {
                let meta = CommandMeta::system(DISPATCHER, None, now);
                match self
                    .runs
                    .execute(&row.run_id, RunCommand::Stop { reason, at: now }, &meta)
                    .await
                {
                    // Already ended (the read table had not caught up): nothing done.
                    Ok(outcome) if outcome.events.is_empty() => Handled::Skipped,
                    Ok(outcome) => {
                        self.walk.wrote(&row.run_id, outcome.last_position());
                        Handled::Stopped
                    }
                    Err(CommandError::Rejected(_)) => Handled::Skipped,
                    Err(other) => return Err(other.into()),
                }
            }
            Decision::Send { .. } => {
                let cart = cart.expect("a send decision carries its cart");
                match self.send(row, &cart, facts, settings, now).await? {
                    SendOutcome::Sent => Handled::Sent,
                    SendOutcome::Failed => Handled::Failed,
                    SendOutcome::Lost => Handled::Skipped,
                }
            }
        })
    }

    /// Claims, sends and records one step.
    async fn send(
        &self,
        row: &RunRow,
        cart: &CartForSend,
        facts: &Facts,
        settings: &SettingsValues,
        now: DateTime<Utc>,
    ) -> anyhow::Result<SendOutcome> {
        let meta = CommandMeta::system(DISPATCHER, None, now);
        let claim = RunCommand::Claim {
            at: now,
            stale_after: self.stale_after(),
        };
        let outcome = match self.runs.execute(&row.run_id, claim, &meta).await {
            Ok(outcome) => outcome,
            Err(CommandError::Rejected(
                RunError::Claimed { .. } | RunError::NotDue(_) | RunError::Ended(_),
            )) => return Ok(SendOutcome::Lost),
            Err(other) => return Err(other.into()),
        };
        self.walk.wrote(&row.run_id, outcome.last_position());
        let Some(claim) = outcome.aggregate.claim().cloned() else {
            return Ok(SendOutcome::Lost);
        };
        let resumed = outcome.events.iter().any(|e| {
            matches!(
                e.event,
                ocart_domain::recovery::RunEvent::Claimed { resumed: true, .. }
            )
        });
        let start = outcome
            .aggregate
            .start()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("a claimed run has no start"))?;
        let step = render::claimed_step(&start.steps, claim.step)
            .map_err(|e| anyhow::anyhow!("run {} {e}", row.run_id))?;
        let tested;
        let step = match self.variant_template(row, step, facts, now).await? {
            Some(template) => {
                tested = ocart_domain::recovery::Step {
                    template,
                    ..step.clone()
                };
                &tested
            }
            None => step,
        };
        let key = claim.message_key.clone();
        let tokens = LinkTokens::of_message(&self.vault, &key, step.channel);
        let links = tokens.links(&self.config.public_url);
        let result: Result<Option<IssuedCoupon>, SendError> = async {
            // The cart is drafted (or refused) before a coupon is issued for it.
            let mut draft = Draft::new(&key, step, cart, &self.config.store_name, &links)
                .map_err(unrenderable)?;
            let coupon = self
                .coupon_for(&row.run_id, claim.step, step, cart, settings, now)
                .await?;
            if let Some(coupon) = &coupon {
                draft.offer(coupon);
            }
            self.deliver(&draft, facts.templates.get(&step.template), resumed)
                .await?;
            Ok(coupon)
        }
        .await;
        let record = match result {
            Ok(coupon) => RunCommand::RecordSent {
                message_key: key.clone(),
                links: tokens.hashes(),
                coupon,
                at: self.clock.now(),
            },
            Err(err) => {
                tracing::warn!(run = %row.run_id, step = claim.step, attempt = claim.attempt, error = %err, "recovery send failed");
                RunCommand::RecordFailed {
                    message_key: key.clone(),
                    error: err.message.clone(),
                    at: self.clock.now(),
                }
            }
        };
        let failed = matches!(record, RunCommand::RecordFailed { .. });
        let recorded = self.runs.execute(&row.run_id, record, &meta).await?;
        self.walk.wrote(&row.run_id, recorded.last_position());
        metrics::counter!("ocart_recovery_messages_total", "outcome" => if failed { "failed" } else { "sent" })
            .increment(1);
        Ok(if failed {
            SendOutcome::Failed
        } else {
            SendOutcome::Sent
        })
    }

    /// The template of the run's variant when the step's `ab_test` names a running test on
    /// the step's channel and the run's sequence (`abtest::recovery_test`): the run is assigned
    /// (once; a run assigned before keeps its variant) and its variant's template answered.
    /// `None`: the step's own template.
    async fn variant_template(
        &self,
        row: &RunRow,
        step: &ocart_domain::recovery::Step,
        facts: &Facts,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<String>> {
        let Some(ab_test) = step.ab_test.as_deref() else {
            return Ok(None);
        };
        let Some(test) =
            abtest::recovery_test(&facts.tests, ab_test, step.channel, &row.sequence_id)
        else {
            return Ok(None);
        };
        let chosen = {
            let mut bandits = facts.bandits.lock().unwrap_or_else(|e| e.into_inner());
            abtest::choose_variant(test, &row.run_id, bandits.get_mut(&test.id))
        };
        let Some(variant) = test.variant(chosen) else {
            return Ok(None);
        };
        let meta = CommandMeta::system(DISPATCHER, None, now);
        let command = AssignmentCommand::Assign {
            test_id: test.id.clone(),
            unit: row.run_id.clone(),
            surface: test.surface(),
            variant: variant.key.clone(),
            at: now,
        };
        let outcome = match self
            .assignments
            .execute(
                &abtest::assignment_id(&test.id, &row.run_id),
                command,
                &meta,
            )
            .await
        {
            Ok(outcome) => outcome,
            // A run id too long to be a unit: the step's own template, unassigned.
            Err(CommandError::Rejected(_)) => return Ok(None),
            Err(other) => return Err(other.into()),
        };
        let assigned = outcome
            .aggregate
            .variant()
            .and_then(|key| test.definition.variant_index(key))
            .and_then(|i| test.variant(i))
            .unwrap_or(variant);
        Ok(Some(assigned.serves.clone()))
    }

    /// Renders (with the pass's copy of the step's template) and hands the message to its
    /// channel. A resumed claim whose message the channel already has is not sent again.
    async fn deliver(
        &self,
        draft: &Draft<'_>,
        template: Option<&TemplateParts>,
        resumed: bool,
    ) -> Result<(), SendError> {
        let step = draft.step();
        let parts = match template {
            Some(parts) => parts.clone(),
            None => super::templates::resolve(self.log.db(), &step.template)
                .await
                .map_err(|e| SendError {
                    message: format!("loading template {}: {e}", step.template),
                    permanent: false,
                })?,
        };
        match draft.render(&parts).map_err(unrenderable)? {
            Message::Email(email) => {
                if resumed && self.email.was_sent(&email.key).await == Some(true) {
                    return Ok(());
                }
                let message = self.builder.build(&email)?;
                self.email.send(&message, &email.key).await
            }
            Message::Sms(sms) => {
                if resumed && self.sms.was_sent(&sms.key).await == Some(true) {
                    return Ok(());
                }
                self.sms.send(&sms).await
            }
        }
    }
}

/// A message that cannot be rendered fails for good (its attempts still count).
fn unrenderable(err: RenderError) -> SendError {
    SendError {
        message: err.to_string(),
        permanent: true,
    }
}

#[async_trait::async_trait]
impl Processor for Dispatcher {
    fn name(&self) -> &'static str {
        DISPATCHER
    }

    /// A pass, then sleep until the next run is due (at most `poll`, so a manual clock or
    /// another process's writes are noticed).
    async fn step(&self) -> anyhow::Result<Next> {
        let pause = match self.try_handle_next().await? {
            (Outcome::Processed(_), _) => Duration::from_millis(20),
            (Outcome::Idle, _) => match q::next_due(self.log.db()).await? {
                Some(at) => (at - self.clock.now())
                    .to_std()
                    .unwrap_or(self.poll)
                    .min(self.poll),
                None => self.poll,
            },
        };
        Ok(Next::After(pause.max(Duration::from_millis(10))))
    }
}

/// The send guards (`ocart_domain::recovery::send_verdict`) on the facts of the pass: this
/// only gathers the run's facts and turns the verdict into a decision. Answers the decision
/// and the cart (for rendering).
fn decide(
    due: &DueRun,
    facts: &Facts,
    settings: &SettingsValues,
    now: DateTime<Utc>,
) -> (Decision, Option<CartForSend>) {
    let row = &due.run;
    let cart = facts.carts.get(&row.cart_id);
    let others: Vec<OtherRun<'_>> = cart
        .and_then(|c| c.email_hash.as_deref())
        .and_then(|email| facts.holders.get(email))
        .map(|runs| {
            runs.iter()
                .map(|r| OtherRun {
                    run_id: &r.run_id,
                    state: RunState::from_status(&r.status),
                    abandoned_at: r.abandoned_at,
                    last_sent_at: r.last_sent_at,
                })
                .collect()
        })
        .unwrap_or_default();
    let send = SendFacts {
        run_id: &row.run_id,
        run_state: RunState::from_status(&row.status),
        steps_done: u32::try_from(row.current_step).unwrap_or(0),
        // The step due (or, under a stale claim, in flight) is the one after those done.
        next_channel: usize::try_from(row.current_step)
            .ok()
            .and_then(|i| due.steps.get(i))
            .map(|step| step.channel),
        abandoned_at: row.abandoned_at,
        cart: cart.map(|c| CartFacts {
            state: CartState::from_status(&c.status),
            erased: c.erased,
            has_order: c.order_id.is_some(),
            email_hash: c.email_hash.as_deref(),
            phone_hash: c.phone_hash.as_deref(),
            has_email: c.email.is_some(),
            has_phone: c.phone.is_some(),
        }),
        suppressed: &facts.suppressed,
        buyers: &facts.buyers,
        others: &others,
    };
    let guards = GuardSettings {
        max_age_days: settings.recovery.max_age_days,
        quiet_period_hours: settings.recovery.quiet_period_hours,
    };
    match send_verdict(&send, guards, now) {
        SendVerdict::Send { step, channel } => (Decision::Send { step, channel }, cart.cloned()),
        SendVerdict::Stop(reason) => (Decision::Stop { reason }, None),
        SendVerdict::Hold(why) => (
            Decision::Hold {
                why: why.as_str().into(),
            },
            None,
        ),
    }
}

enum Handled {
    Held,
    Stopped,
    Sent,
    Failed,
    Skipped,
}

enum SendOutcome {
    Sent,
    Failed,
    /// Another dispatcher holds the step, or it is no longer due.
    Lost,
}
