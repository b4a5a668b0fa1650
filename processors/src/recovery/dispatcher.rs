//! The recovery dispatcher, a process manager. Each pass looks at the runs due now (and at
//! claims a crashed dispatcher left behind), checks the send guards, claims the step on the
//! run aggregate (an append at the run's next sequence number, so exactly one of several
//! dispatchers wins), sends the message, and records the outcome. A guard that fails ends
//! the run with its reason; nothing is sent on a guess.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use ocart_domain::recovery::{
    Channel, LinkHashes, RecoveryRun, RunCommand, RunError, Step, StopReason,
};
use ocart_domain::settings::SettingsValues;
use ocart_domain::{CartItem, Clock};
use ocart_projections::queries::recovery::{self as q, CartForSend, DueRun, RunRow};
use ocart_projections::{queries, CommandError, CommandMeta, Commands, EventLog, Outcome, Vault};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::channels::{
    EmailBuilder, EmailConfig, EmailTransport, Outbox, OutgoingEmail, OutgoingSms, SendError,
    SmsConfig, SmsTransport, Smtp, TwilioSms,
};
use super::templates::{format_money, MergeContext, MergeItem};

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
            concurrency: 16,
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
    vault: Vault,
    clock: Arc<dyn Clock>,
    config: RecoveryConfig,
    builder: EmailBuilder,
    email: Arc<dyn EmailTransport>,
    sms: Arc<dyn SmsTransport>,
    store: Option<crate::store::WooCommerce>,
}

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
            log,
            vault,
            clock,
            config,
            builder: EmailBuilder::new(email)?,
            email: email_transport,
            sms: sms_transport,
            store: None,
        })
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

    /// The settings in force and the runs due at `now`: what a pass looks at.
    async fn due(&self, now: DateTime<Utc>) -> anyhow::Result<(SettingsValues, Vec<DueRun>)> {
        let (settings, _) = queries::current_settings(self.log.db()).await?;
        let rows = q::due_runs(
            self.log.db(),
            now,
            now - self.stale_after(),
            self.config.batch_size,
        )
        .await?;
        Ok((settings, rows))
    }

    /// What a pass would do now, without doing it.
    pub async fn plan(&self) -> anyhow::Result<Vec<Planned>> {
        let now = self.clock.now();
        let (settings, rows) = self.due(now).await?;
        let mut planned = Vec::with_capacity(rows.len());
        for due in rows {
            let (decision, _) = self.decide(&due, &settings, now).await?;
            planned.push(Planned {
                run_id: due.run.run_id,
                cart_id: due.run.cart_id,
                next_due_at: due.run.next_due_at,
                decision,
            });
        }
        Ok(planned)
    }

    /// The send guards, in order. Answers the decision and the cart (for rendering).
    async fn decide(
        &self,
        due: &DueRun,
        settings: &SettingsValues,
        now: DateTime<Utc>,
    ) -> anyhow::Result<(Decision, Option<CartForSend>)> {
        let db = self.log.db();
        let row = &due.run;
        let stop = |reason| Ok((Decision::Stop { reason }, None));
        // The step due (or, under a stale claim, in flight) is the one after those done.
        let index = row.current_step as usize;
        let Some(step) = due.steps.get(index) else {
            return stop(StopReason::Completed);
        };
        let Some(cart) = q::cart_for_send(db, &row.cart_id).await? else {
            return stop(StopReason::CartNotAbandoned);
        };
        if cart.erased {
            return stop(StopReason::NoConsent);
        }
        match cart.status.as_str() {
            "abandoned" => {}
            // The opener converts the run with the order's revenue; never send meanwhile.
            "converted" => {
                return Ok((
                    Decision::Hold {
                        why: "the cart converted; the run is being credited".into(),
                    },
                    None,
                ))
            }
            _ => return stop(StopReason::CartNotAbandoned),
        }
        if cart.order_id.is_some() {
            return stop(StopReason::OrderPlaced);
        }
        let max_age = chrono::Duration::days(i64::from(settings.recovery.max_age_days));
        if row.abandoned_at < now - max_age {
            return stop(StopReason::TooOld);
        }
        let Some(email_hash) = cart.email_hash.clone() else {
            return stop(StopReason::NoConsent);
        };
        let recipient_hash = match step.channel {
            Channel::Email => Some(email_hash.clone()),
            Channel::Sms => cart.phone_hash.clone(),
        };
        let Some(recipient_hash) = recipient_hash else {
            return stop(StopReason::NoRecipient);
        };
        if q::is_suppressed(db, &email_hash).await?
            || (recipient_hash != email_hash && q::is_suppressed(db, &recipient_hash).await?)
        {
            return stop(StopReason::Suppressed);
        }
        let lookback = chrono::Duration::days(i64::from(settings.recovery.order_lookback_days));
        if q::recipient_bought_since(db, &email_hash, now - lookback).await? {
            return stop(StopReason::OrderPlaced);
        }
        let quiet = chrono::Duration::hours(i64::from(settings.recovery.quiet_period_hours));
        if row.current_step == 0 && row.status == "pending" {
            // Only a run that has not messaged yet yields to another run of the recipient.
            if q::run_holding_recipient(db, &row.run_id, &email_hash, row.abandoned_at, now - quiet)
                .await?
                .is_some()
            {
                return stop(StopReason::QuietPeriod);
            }
        }
        let has_address = match step.channel {
            Channel::Email => cart.email.is_some(),
            Channel::Sms => cart.phone.is_some(),
        };
        if !has_address {
            return stop(StopReason::NoRecipient);
        }
        Ok((
            Decision::Send {
                step: index as u32 + 1,
                channel: step.channel,
            },
            Some(cart),
        ))
    }

    /// One pass over the runs due now.
    pub async fn try_handle_next(&self) -> anyhow::Result<(Outcome, PassReport)> {
        let now = self.clock.now();
        let (settings, rows) = self.due(now).await?;
        let mut report = PassReport::default();
        // Runs are independent (each claim is its own append), so several are handled at
        // once; the guards stay correct because the recipient rule is deterministic.
        let settings = &settings;
        let results: Vec<anyhow::Result<Handled>> = futures::stream::iter(rows)
            .map(|due| async move { self.handle(&due, settings, now).await })
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
        settings: &SettingsValues,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Handled> {
        let row = &due.run;
        let (decision, cart) = self.decide(due, settings, now).await?;
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
                    Ok(_) => Handled::Stopped,
                    Err(CommandError::Rejected(_)) => Handled::Skipped,
                    Err(other) => return Err(other.into()),
                }
            }
            Decision::Send { .. } => {
                let cart = cart.expect("a send decision carries its cart");
                match self.send(row, &cart, settings, now).await? {
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
        let step = start.steps[claim.step as usize - 1].clone();
        let key = claim.message_key.clone();
        let restore = self.vault.link_token("restore", &key);
        let unsubscribe = self.vault.link_token("unsubscribe", &key);
        let hash = |token: &str| Some(hex::encode(Sha256::digest(token.as_bytes())));
        let open = (step.channel == Channel::Email).then(|| self.vault.link_token("open", &key));
        let links = LinkHashes {
            restore: hash(&restore),
            unsubscribe: hash(&unsubscribe),
            open: open.as_deref().and_then(hash),
        };
        let base = self.config.public_url.trim_end_matches('/');
        let pixel = open.map(|t| format!("{base}/o/{t}"));
        let mut context = self.context(
            cart,
            format!("{base}/r/{restore}"),
            format!("{base}/u/{unsubscribe}"),
        );
        let result = match self
            .coupon_for(&row.run_id, claim.step, &step, cart, settings, now)
            .await
        {
            Ok(coupon) => {
                if let Some(c) = &coupon {
                    context.coupon_code = Some(c.code.clone());
                    context.coupon_expiry = Some(super::coupons::expiry_label(c.expires_at));
                }
                self.deliver(&key, &step, cart, &context, pixel.as_deref(), resumed)
                    .await
                    .map(|()| coupon)
            }
            Err(err) => Err(err),
        };
        let record = match result {
            Ok(coupon) => RunCommand::RecordSent {
                message_key: key.clone(),
                links,
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
        self.runs.execute(&row.run_id, record, &meta).await?;
        metrics::counter!("ocart_recovery_messages_total", "outcome" => if failed { "failed" } else { "sent" })
            .increment(1);
        Ok(if failed {
            SendOutcome::Failed
        } else {
            SendOutcome::Sent
        })
    }

    fn context(
        &self,
        cart: &CartForSend,
        restore_url: String,
        unsubscribe_url: String,
    ) -> MergeContext {
        let items: Vec<CartItem> = serde_json::from_value(cart.items.0.clone()).unwrap_or_default();
        MergeContext {
            store_name: self.config.store_name.clone(),
            customer_first_name: cart
                .name
                .as_deref()
                .and_then(|n| n.split_whitespace().next())
                .unwrap_or_default()
                .to_owned(),
            customer_email: cart.email.clone().unwrap_or_default(),
            cart_items: items
                .iter()
                .map(|i| MergeItem {
                    name: i.name.clone(),
                    quantity: i64::from(i.quantity),
                    price: format_money(i.unit_price * i64::from(i.quantity), &cart.currency),
                    image: i.image_url.clone(),
                })
                .collect(),
            cart_total: format_money(cart.total_minor, &cart.currency),
            restore_url,
            unsubscribe_url,
            coupon_code: None,
            coupon_expiry: None,
        }
    }

    /// Renders and hands the message to its channel. A resumed claim whose message the
    /// channel already has is not sent again.
    async fn deliver(
        &self,
        key: &str,
        step: &Step,
        cart: &CartForSend,
        context: &MergeContext,
        pixel: Option<&str>,
        resumed: bool,
    ) -> Result<(), SendError> {
        let parts = super::templates::resolve(self.log.db(), &step.template)
            .await
            .map_err(|e| SendError {
                message: format!("loading template {}: {e}", step.template),
                permanent: false,
            })?;
        let rendered = parts.render(context).map_err(|e| SendError {
            message: format!("template {}: {e}", step.template),
            permanent: true,
        })?;
        match step.channel {
            Channel::Email => {
                if resumed && self.email.was_sent(key).await == Some(true) {
                    return Ok(());
                }
                let mut html = rendered.html;
                if let Some(pixel) = pixel {
                    // The open pixel goes last in the body (where a layout has one).
                    let img = format!(
                        "<img src=\"{pixel}\" width=\"1\" height=\"1\" alt=\"\" style=\"display:block\">"
                    );
                    match html.rfind("</body>") {
                        Some(at) => html.insert_str(at, &img),
                        None => html.push_str(&img),
                    }
                }
                let email = OutgoingEmail {
                    key: key.to_owned(),
                    to: cart.email.clone().unwrap_or_default(),
                    subject: rendered.subject,
                    html,
                    text: rendered.text,
                    unsubscribe_url: context.unsubscribe_url.clone(),
                };
                let message = self.builder.build(&email)?;
                self.email.send(&message, key).await
            }
            Channel::Sms => {
                if resumed && self.sms.was_sent(key).await == Some(true) {
                    return Ok(());
                }
                let sms = OutgoingSms {
                    key: key.to_owned(),
                    to: cart.phone.clone().unwrap_or_default(),
                    body: format!(
                        "{} Reply STOP to opt out: {}",
                        rendered.sms, context.unsubscribe_url
                    ),
                };
                self.sms.send(&sms).await
            }
        }
    }

    /// Runs until `stop` turns true: a pass, then sleep until the next run is due (at most
    /// `poll`, so a manual clock or another process's writes are noticed).
    pub async fn run(self, mut stop: watch::Receiver<bool>, poll: Duration) {
        while !*stop.borrow() {
            let pause = match self.try_handle_next().await {
                Ok((Outcome::Processed(_), _)) => Duration::from_millis(20),
                Ok((Outcome::Idle, _)) => match q::next_due(self.log.db()).await {
                    Ok(Some(at)) => (at - self.clock.now()).to_std().unwrap_or(poll).min(poll),
                    _ => poll,
                },
                Err(err) => {
                    tracing::warn!(error = %err, "recovery dispatch failed; retrying");
                    Duration::from_secs(2)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause.max(Duration::from_millis(10))) => {}
                _ = stop.changed() => {}
            }
        }
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
