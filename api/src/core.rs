//! What the HTTP API and the CLI share: the store, the vault, the command executors, the
//! projectors, and cached settings.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ocart_domain::cart::Cart;
use ocart_domain::settings::{
    Settings, SettingsCommand, SettingsError, SettingsValues, SETTINGS_ID,
};
use ocart_domain::subject::Subject;
use ocart_domain::token::{ApiToken, Capability, TokenCommand};
use ocart_domain::Clock;
use ocart_projections::{
    AuditProjector, CartsProjector, CommandError, CommandMeta, CommandOutcome, Commands, Db,
    EventLog, ProjectionRunner, Projector, SettingsProjector, TokensProjector, Vault,
};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::Config;

/// The lease that decides which instance runs projectors, the relay and the sweeper.
pub const PROCESSORS_LEASE: &str = "processors";

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
    settings_cache: RwLock<Option<(Instant, SettingsValues)>>,
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
            config.secret.as_ref().map(|s| s.expose().as_bytes()),
        )
        .await?;
        Ok(Arc::new(Core {
            carts: Commands::new(log.clone(), ()).with_cache(100_000),
            settings: Commands::new(log.clone(), ()),
            tokens: Commands::new(log.clone(), ()),
            subjects: Commands::new(log.clone(), ()),
            config,
            db,
            log,
            vault,
            clock,
            settings_cache: RwLock::new(None),
        }))
    }

    /// Every projector, in the order they are run.
    pub fn projectors(&self) -> Vec<Arc<dyn Projector>> {
        vec![
            Arc::new(TokensProjector),
            Arc::new(SettingsProjector),
            Arc::new(CartsProjector::new(self.vault.clone())),
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

    /// Makes sure the projections include `position`: runs them here if no other process
    /// holds the processors lease, otherwise waits for the holder (bounded).
    pub async fn ensure_projected(&self, position: i64) -> anyhow::Result<()> {
        let holder = format!("cli:{}", Uuid::now_v7());
        if let Some(lease) =
            ocart_processors::try_acquire(&self.db, PROCESSORS_LEASE, &holder).await?
        {
            for runner in self.runners().await? {
                runner.catch_up().await?;
            }
            lease.release().await;
            return Ok(());
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
