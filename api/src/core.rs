//! What the HTTP API and the CLI share: the store, the vault, the command executors, the
//! projectors, and cached settings.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ocart_domain::cart::Cart;
use ocart_domain::recovery::{
    default_steps, RecoveryRun, RecoverySequence, SequenceCommand, SequenceError, Suppression,
    TriggerType,
};
use ocart_domain::settings::{
    Settings, SettingsCommand, SettingsError, SettingsValues, SETTINGS_ID, SETTINGS_TYPE,
};
use ocart_domain::subject::Subject;
use ocart_domain::token::{ApiToken, Capability, TokenCommand};
use ocart_domain::Clock;
use ocart_projections::{
    AuditProjector, CartsProjector, CommandError, CommandMeta, CommandOutcome, Commands, Db,
    EventLog, OrdersProjector, ProjectionRunner, Projector, RecoveryRunsProjector,
    RecoverySequencesProjector, SettingsProjector, SuppressionProjector, TokensProjector, Vault,
};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::Config;

/// The lease that decides which instance runs projectors, the relay and the sweeper.
pub const PROCESSORS_LEASE: &str = "processors";

/// The id of the sequence a fresh install starts with.
pub const DEFAULT_SEQUENCE_ID: &str = "default";

pub struct Core {
    pub config: Config,
    pub db: Db,
    pub log: EventLog,
    pub vault: Vault,
    pub clock: Arc<dyn Clock>,
    pub carts: Commands<Cart>,
    pub settings: Commands<Settings>,
    pub tokens: Commands<ApiToken>,
    pub subjects: Commands<Subject>,
    pub sequences: Commands<RecoverySequence>,
    pub runs: Commands<RecoveryRun>,
    pub suppressions: Commands<Suppression>,
    pub orders: Commands<ocart_domain::order::Order>,
    pub templates: Commands<ocart_domain::recovery::RecoveryTemplate>,
    /// Offers: bumps, upsells, downsells.
    pub offers: Commands<ocart_domain::offer::Offer>,
    /// Bump decisions: one offer shown to one cart, accepted, declined.
    pub bumps: Commands<ocart_domain::offer::BumpDecision>,
    /// The active bumps, read from the `offers` table at most every 250 ms.
    pub bump_cache: crate::usecases::bumps::BumpCache,
    /// One-click upsell and downsell decisions, charges, store orders and refunds.
    pub acceptances: Commands<ocart_domain::upsell::UpsellAcceptance>,
    /// A/B tests (issue 12).
    pub tests: Commands<ocart_domain::abtest::AbTest>,
    /// One unit's variant in one test: assigned once, converted once, pruned.
    pub assignments: Arc<Commands<ocart_domain::abtest::Assignment>>,
    /// The running tests, the bandits' allocators and the assignments known, in memory.
    pub assigner: crate::usecases::assign::Assigner,
    /// Funnels (id = slug).
    pub funnels: Commands<ocart_domain::funnel::Funnel>,
    /// The active funnels, read from the `funnels` tables at most every 250 ms.
    pub funnel_cache: crate::usecases::funnels::FunnelCache,
    /// The WooCommerce connector, when `[woocommerce] url` is set.
    pub woo: Option<ocart_processors::store::WooCommerce>,
    /// The payment gateways configured for upsell charges (the sandbox by default).
    pub gateways: ocart_processors::gateways::Gateways,
    /// The states of this instance's background processors (empty unless it holds the lease).
    pub processors: Arc<ocart_processors::supervisor::Registry>,
    /// Rotations of webhook secrets and the upsell token key (ADR 0016).
    pub gateway_secrets: Commands<ocart_domain::gateway_secret::GatewaySecrets>,
    /// The rotated secrets the verifiers accept, read again every second (ADR 0016).
    pub secret_ring: crate::secret_ring::SecretRing,
    settings_cache: RwLock<Option<(Instant, SettingsValues)>>,
    /// The highest `token` event position the `api_tokens` table is known to hold (auth's
    /// read-your-writes, [`Core::read_own_writes`]; it only grows).
    pub(crate) tokens_applied: std::sync::atomic::AtomicI64,
    /// Live tokens looked up in the last second (auth).
    pub(crate) token_cache: crate::auth::TokenCache,
    /// The same for `settings` events and the `settings_current` table.
    settings_applied: std::sync::atomic::AtomicI64,
}

/// A freshly minted API token: the secret is shown once and never stored.
pub struct NewToken {
    pub token_id: String,
    pub secret: String,
    pub position: i64,
}

/// sha256 hex of a bearer token: all that is stored.
pub fn token_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A random, URL-safe secret with a recognisable prefix.
pub fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

impl Core {
    /// Connects, migrates and opens the log and the vault.
    pub async fn open(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<Core>> {
        let url = config.effective_database_url();
        if url.starts_with("sqlite:") {
            std::fs::create_dir_all(&config.data_dir).ok();
        }
        let db = Db::connect(&url, 16).await?;
        db.migrate().await?;
        let log = EventLog::open(db.clone()).await?;
        let vault = Vault::open(
            db.clone(),
            config
                .secret
                .as_ref()
                .map(|s| secrecy::ExposeSecret::expose_secret(s).as_bytes()),
        )
        .await?;
        let woo = ocart_processors::store::WooCommerce::from_config(&config.woocommerce)?;
        let gateways = ocart_processors::gateways::Gateways::from_config(&config.gateways)?;
        let secret_ring = crate::secret_ring::SecretRing::open(db.clone(), vault.clone()).await?;
        Ok(Arc::new(Core {
            gateway_secrets: Commands::new(log.clone(), ()),
            secret_ring,
            orders: Commands::new(log.clone(), ()),
            templates: Commands::new(log.clone(), ()),
            offers: Commands::new(log.clone(), ()),
            bumps: Commands::new(log.clone(), ()),
            bump_cache: Default::default(),
            acceptances: Commands::new(log.clone(), ()).with_cache(100_000),
            tests: Commands::new(log.clone(), ()),
            assignments: Arc::new(Commands::new(log.clone(), ()).with_cache(100_000)),
            assigner: Default::default(),
            // Cached: the issue-token call learns from the last state seen which offer to load
            // with the funnel (`usecases::upsells::issue_token`).
            funnels: Commands::new(log.clone(), ()).with_cache(10_000),
            funnel_cache: Default::default(),
            woo,
            gateways,
            carts: Commands::new(log.clone(), ()).with_cache(100_000),
            settings: Commands::new(log.clone(), ()),
            tokens: Commands::new(log.clone(), ()),
            subjects: Commands::new(log.clone(), ()),
            sequences: Commands::new(log.clone(), ()),
            runs: Commands::new(log.clone(), ()),
            suppressions: Commands::new(log.clone(), ()),
            config,
            db,
            log,
            vault,
            clock,
            processors: ocart_processors::supervisor::Registry::new(),
            settings_cache: RwLock::new(None),
            tokens_applied: std::sync::atomic::AtomicI64::new(0),
            token_cache: crate::auth::TokenCache::default(),
            settings_applied: std::sync::atomic::AtomicI64::new(0),
        }))
    }

    /// Every projector, in the order they are run.
    /// The checkpoint names of [`Self::projectors`]: how far the log followers that read the
    /// projections' tables may read.
    pub fn projector_names(&self) -> Arc<[&'static str]> {
        self.projectors().iter().map(|p| p.name()).collect()
    }

    pub fn projectors(&self) -> Vec<Arc<dyn Projector>> {
        vec![
            Arc::new(TokensProjector),
            Arc::new(SettingsProjector),
            Arc::new(CartsProjector::new(self.vault.clone())),
            Arc::new(RecoverySequencesProjector),
            Arc::new(RecoveryRunsProjector),
            Arc::new(SuppressionProjector),
            Arc::new(OrdersProjector),
            Arc::new(ocart_projections::FunnelsProjector),
            Arc::new(ocart_projections::OffersProjector),
            Arc::new(ocart_projections::UpsellsProjector),
            Arc::new(ocart_projections::FunnelReportsProjector::default()),
            Arc::new(ocart_projections::AbTestsProjector),
            Arc::new(AuditProjector),
        ]
    }

    pub async fn runners(&self) -> anyhow::Result<Vec<ProjectionRunner>> {
        let mut runners = Vec::new();
        for projector in self.projectors() {
            runners.push(
                ProjectionRunner::new(
                    self.log.clone(),
                    projector,
                    self.config.processors.batch_size,
                )
                .await?,
            );
        }
        Ok(runners)
    }

    /// The settings in force (from the settings projection, cached for 250 ms).
    pub async fn settings(&self) -> Result<SettingsValues, sqlx::Error> {
        // An update this process made a moment ago is in the answer.
        self.read_own_writes("settings", SETTINGS_TYPE, &self.settings_applied)
            .await;
        if let Some((at, values)) = &*self.settings_cache.read().expect("settings cache") {
            if at.elapsed() < Duration::from_millis(250) {
                return Ok(values.clone());
            }
        }
        let (values, _) = ocart_projections::queries::current_settings(&self.db).await?;
        *self.settings_cache.write().expect("settings cache") =
            Some((Instant::now(), values.clone()));
        Ok(values)
    }

    /// Waits, at most `http.read_your_writes_timeout_ms`, until projection `projection` has
    /// applied every `aggregate_type` event this process has written (not the whole log: an
    /// unrelated write must not hold the reader up; another process's writes are read as the
    /// projection has them). `applied` remembers how far the
    /// projection is known to be, so a caught-up reader asks the database nothing.
    pub async fn read_own_writes(
        &self,
        projection: &str,
        aggregate_type: &str,
        applied: &std::sync::atomic::AtomicI64,
    ) {
        use std::sync::atomic::Ordering;
        let head = self.log.head_of(aggregate_type);
        if head <= applied.load(Ordering::Acquire) {
            return;
        }
        let reached = ocart_projections::wait_for_position(
            &self.db,
            projection,
            head,
            Duration::from_millis(self.config.http.read_your_writes_timeout_ms),
        )
        .await;
        if matches!(reached, Ok(true)) {
            applied.fetch_max(head, Ordering::AcqRel);
        }
    }

    /// Applies a partial settings document (validated by the aggregate) and drops the cache.
    pub async fn update_settings(
        &self,
        patch: serde_json::Value,
        meta: &CommandMeta,
    ) -> Result<CommandOutcome<Settings>, CommandError<SettingsError>> {
        let outcome = self
            .settings
            .execute(
                SETTINGS_ID,
                SettingsCommand::Update { patch, at: meta.at },
                meta,
            )
            .await?;
        *self.settings_cache.write().expect("settings cache") = None;
        Ok(outcome)
    }

    /// Mints a token with `capabilities` and records it in the log.
    pub async fn create_token(
        &self,
        name: &str,
        capabilities: Vec<Capability>,
        meta: &CommandMeta,
    ) -> anyhow::Result<NewToken> {
        let secret = random_secret("ocart_");
        let token_id = Uuid::now_v7().to_string();
        let outcome = self
            .tokens
            .execute(
                &token_id,
                TokenCommand::Create {
                    name: name.to_owned(),
                    capabilities,
                    token_hash: token_hash(&secret),
                    at: meta.at,
                },
                meta,
            )
            .await?;
        Ok(NewToken {
            token_id,
            secret,
            position: outcome.last_position().unwrap_or(0),
        })
    }

    /// Runs every projection here until each has applied `position` (bounded by 30 s), for
    /// the holder of the processors lease. One pass is not always enough: on PostgreSQL the
    /// global reader stops short of transactions still open anywhere on the server.
    pub(crate) async fn project_to(&self, position: i64) -> anyhow::Result<()> {
        let runners = self.runners().await?;
        let target = ocart_projections::checkpoint_of(&self.db, position).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            for runner in &runners {
                runner.catch_up().await?;
            }
            let Some(behind) = runners
                .iter()
                .find(|r| target.is_some_and(|t| r.checkpoint() < t))
            else {
                return Ok(());
            };
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "the projection {} did not reach position {position} in 30 s",
                    behind.name()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Makes sure the projections include `position`: runs them here if no other process
    /// holds the processors lease, otherwise waits for the holder (bounded).
    pub async fn ensure_projected(&self, position: i64) -> anyhow::Result<()> {
        let holder = format!("cli:{}", Uuid::now_v7());
        if let Some(lease) =
            ocart_processors::try_acquire(&self.db, PROCESSORS_LEASE, &holder).await?
        {
            let projected = self.project_to(position).await;
            lease.release().await;
            return projected;
        }
        for projector in self.projectors() {
            let done = ocart_projections::wait_for_position(
                &self.db,
                projector.name(),
                position,
                Duration::from_secs(15),
            )
            .await?;
            if !done {
                anyhow::bail!(
                    "the running server has not applied the change yet (projection {} is behind)",
                    projector.name()
                );
            }
        }
        Ok(())
    }

    /// Creates the default recovery sequence (45 minutes, 24 hours, 72 hours; a coupon on the
    /// third) unless the log has ever had a sequence: a store owner who archived it does not
    /// get it back.
    pub async fn seed_default_sequence(&self, meta: &CommandMeta) -> anyhow::Result<()> {
        let (count,): (i64,) = ocart_projections::fetch_optional_db!(
            &self.db,
            (i64,),
            "SELECT count(*) FROM events WHERE aggregate_type = 'recovery_sequence'"
        )?
        .unwrap_or((0,));
        if count > 0 {
            return Ok(());
        }
        let command = SequenceCommand::Create {
            name: "Abandoned cart recovery".into(),
            trigger: TriggerType::CartAbandoned,
            steps: default_steps(),
            active: true,
            at: meta.at,
        };
        match self
            .sequences
            .execute(DEFAULT_SEQUENCE_ID, command, meta)
            .await
        {
            Ok(_) | Err(CommandError::Rejected(SequenceError::AlreadyExists)) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }

    /// The subject hash of a recipient given as an email address or an E.164 phone number
    /// (how suppressions are keyed); `field` names the input in the error.
    pub fn recipient_hash(
        &self,
        field: &str,
        raw: &str,
    ) -> Result<String, ocart_domain::FieldError> {
        let raw = raw.trim();
        let subject = if raw.starts_with('+') {
            self.vault
                .subject_for_phone(&ocart_domain::Phone::parse(field, raw)?)
        } else {
            let email = ocart_domain::Email::parse(field, raw).map_err(|_| {
                ocart_domain::FieldError::new(
                    field,
                    "must be an email address or an E.164 phone number",
                )
            })?;
            self.vault.subject_for_email(&email)
        };
        Ok(subject.as_str().to_owned())
    }

    /// A dispatcher with the configured channels.
    pub fn dispatcher(&self) -> anyhow::Result<ocart_processors::recovery::Dispatcher> {
        ocart_processors::recovery::Dispatcher::from_config(
            self.log.clone(),
            self.vault.clone(),
            self.clock.clone(),
            self.config.recovery.clone(),
            &self.config.email,
            &self.config.sms,
            &self.config.data_dir,
        )
        .map(|d| d.with_store(self.woo.clone()))
    }

    /// Whether any token was ever created (first start creates an admin token).
    pub async fn has_tokens(&self) -> anyhow::Result<bool> {
        let (count,): (i64,) = match &self.db {
            Db::Pg(p) => {
                sqlx::query_as("SELECT count(*) FROM events WHERE aggregate_type = 'token'")
                    .fetch_one(p)
                    .await?
            }
            Db::Lite(p) => {
                sqlx::query_as("SELECT count(*) FROM events WHERE aggregate_type = 'token'")
                    .fetch_one(p)
                    .await?
            }
        };
        Ok(count > 0)
    }
}
