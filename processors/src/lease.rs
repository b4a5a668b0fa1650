//! Processor leases (ADR 0005): only the holder runs the projectors, the relay and the sweeper.
//!
//! - PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`) on a dedicated
//!   connection taken out of the pool. The lock lives exactly as long as that session; a
//!   keep-alive query every [`Lease::RENEW_EVERY`] notices a dead session and marks the lease
//!   lost.
//! - SQLite: a row in `leases (name, holder, expires_at)`, `expires_at` in Unix milliseconds,
//!   taken when absent, expired or already ours, renewed every [`Lease::RENEW_EVERY`] for
//!   [`Lease::TTL`]. The lease counts as lost when a renewal finds another holder (or no row),
//!   or when renewals keep failing until `expires_at` passes.
//!
//! Each [`LeaseGuard`] owns one background task holding the connection (PostgreSQL) or doing
//! the renewals (SQLite). [`LeaseGuard::release`] frees the lease and waits for it; dropping the
//! guard frees it in the background (best effort: if the runtime is gone, PostgreSQL still
//! frees the lock when the socket closes, and a SQLite row expires after [`Lease::TTL`]).

use std::time::Duration;

use ocart_projections::Db;
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection, SqlitePool};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Lease parameters and the acquire functions (also available as the free functions
/// [`try_acquire`] and [`wait_acquire`]).
pub struct Lease;

impl Lease {
    /// How long a SQLite lease row stays valid without renewal.
    pub const TTL: Duration = Duration::from_secs(15);
    /// How often a holder renews (SQLite) or checks its session (PostgreSQL).
    pub const RENEW_EVERY: Duration = Duration::from_secs(5);

    /// The PostgreSQL advisory-lock key of lease `name`: the first 8 bytes (big endian) of
    /// `sha256("ocart:lease:" + name)`. Stable across processes and versions.
    pub fn key(name: &str) -> i64 {
        let digest = Sha256::digest(format!("ocart:lease:{name}").as_bytes());
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(bytes)
    }

    /// See [`try_acquire`].
    pub async fn try_acquire(
        db: &Db,
        name: &str,
        holder: &str,
    ) -> anyhow::Result<Option<LeaseGuard>> {
        try_acquire(db, name, holder).await
    }

    /// See [`wait_acquire`].
    pub async fn wait_acquire(
        db: &Db,
        name: &str,
        holder: &str,
        stop: watch::Receiver<bool>,
        retry: Duration,
    ) -> Option<LeaseGuard> {
        wait_acquire(db, name, holder, stop, retry).await
    }
}

/// A held lease. Dropping it frees the lease (in the background); [`LeaseGuard::release`] frees
/// it and waits until that is done.
pub struct LeaseGuard {
    name: String,
    holder: String,
    held: watch::Receiver<bool>,
    /// Dropping (or sending on) this tells the task to free the lease and end.
    release: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseGuard")
            .field("name", &self.name)
            .field("holder", &self.holder)
            .field("held", &self.is_held())
            .finish()
    }
}

impl LeaseGuard {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Whether the lease is still ours, as far as the last check knows (PostgreSQL: the lock
    /// session answered its last keep-alive; SQLite: the last renewal found our row, or
    /// `expires_at` has not passed yet).
    pub fn is_held(&self) -> bool {
        *self.held.borrow()
    }

    /// A receiver that turns `false` once the lease is lost.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.held.clone()
    }

    /// Resolves once the lease is lost (not when it is released).
    pub async fn lost(&self) {
        let mut held = self.held.clone();
        // An error means the task ended, which also means the lease is no longer held.
        let _ = held.wait_for(|held| !*held).await;
    }

    /// Frees the lease (PostgreSQL: `pg_advisory_unlock` and close the session; SQLite: delete
    /// our row) and waits until that is done.
    pub async fn release(mut self) {
        if let Some(tx) = self.release.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        // Dropping the sender wakes the task, which frees the lease and ends; the task is not
        // aborted so that it can finish doing so.
        self.release.take();
        self.task.take();
    }
}

/// Tries once to take lease `name` for `holder`. `Ok(None)` if someone else holds it.
///
/// On PostgreSQL the lock belongs to a session, so a second `try_acquire` in the same process
/// fails even with the same `holder`; on SQLite a holder may take its own (still valid) lease
/// again, which refreshes it.
pub async fn try_acquire(db: &Db, name: &str, holder: &str) -> anyhow::Result<Option<LeaseGuard>> {
    let (held_tx, held) = watch::channel(true);
    let (release_tx, release_rx) = oneshot::channel();
    let task = match db {
        Db::Pg(pool) => {
            let mut conn = pool.acquire().await?.detach();
            let key = Lease::key(name);
            let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
                .bind(key)
                .fetch_one(&mut conn)
                .await?;
            if !got {
                let _ = conn.close().await;
                return Ok(None);
            }
            tokio::spawn(hold_pg(conn, key, name.to_owned(), held_tx, release_rx))
        }
        Db::Lite(pool) => {
            let expires_at = lite_take(pool, name, holder).await?;
            let Some(expires_at) = expires_at else {
                return Ok(None);
            };
            tokio::spawn(hold_lite(
                pool.clone(),
                name.to_owned(),
                holder.to_owned(),
                expires_at,
                held_tx,
                release_rx,
            ))
        }
    };
    tracing::info!(lease = name, holder, "lease acquired");
    Ok(Some(LeaseGuard {
        name: name.to_owned(),
        holder: holder.to_owned(),
        held,
        release: Some(release_tx),
        task: Some(task),
    }))
}

/// Tries to take lease `name` every `retry` until it succeeds (`Some`) or `stop` turns true
/// (`None`). Errors (database unavailable) are logged and retried.
pub async fn wait_acquire(
    db: &Db,
    name: &str,
    holder: &str,
    mut stop: watch::Receiver<bool>,
    retry: Duration,
) -> Option<LeaseGuard> {
    let mut stop_open = true;
    loop {
        if *stop.borrow() {
            return None;
        }
        match try_acquire(db, name, holder).await {
            Ok(Some(guard)) => return Some(guard),
            Ok(None) => tracing::debug!(lease = name, holder, "lease held elsewhere; waiting"),
            Err(err) => {
                tracing::warn!(lease = name, holder, error = %err, "cannot take the lease; retrying")
            }
        }
        if stop_open {
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                changed = stop.changed() => {
                    // The sender is gone: nobody can ask us to stop any more; keep retrying.
                    if changed.is_err() {
                        stop_open = false;
                    }
                }
            }
        } else {
            tokio::time::sleep(retry).await;
        }
    }
}

/// Holds the PostgreSQL session: a keep-alive query every `RENEW_EVERY`, unlock on release.
async fn hold_pg(
    mut conn: PgConnection,
    key: i64,
    name: String,
    held: watch::Sender<bool>,
    mut release: oneshot::Receiver<()>,
) {
    let mut tick = tokio::time::interval(Lease::RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            // A send or a dropped guard: either way, free the lock.
            _ = &mut release => break,
            _ = tick.tick() => {
                if let Err(err) = sqlx::query("SELECT 1").execute(&mut conn).await {
                    tracing::warn!(lease = %name, error = %err, "the lease's PostgreSQL session failed; lease lost");
                    held.send_replace(false);
                    return;
                }
            }
        }
    }
    held.send_replace(false);
    if let Err(err) = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(key)
        .execute(&mut conn)
        .await
    {
        tracing::debug!(lease = %name, error = %err, "unlock failed; closing the session frees the lock anyway");
    }
    let _ = conn.close().await;
    tracing::info!(lease = %name, "lease released");
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn ttl_ms() -> i64 {
    Lease::TTL.as_millis() as i64
}

/// Takes the SQLite lease row if it is absent, expired or ours; returns its new expiry.
async fn lite_take(
    pool: &SqlitePool,
    name: &str,
    holder: &str,
) -> Result<Option<i64>, sqlx::Error> {
    let now = now_ms();
    let expires_at = now + ttl_ms();
    sqlx::query(
        "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
         WHERE leases.expires_at < ?4 OR leases.holder = excluded.holder",
    )
    .bind(name)
    .bind(holder)
    .bind(expires_at)
    .bind(now)
    .execute(pool)
    .await?;
    let row: Option<(String, i64)> =
        sqlx::query_as("SELECT holder, expires_at FROM leases WHERE name = ?1")
            .bind(name)
            .fetch_optional(pool)
            .await?;
    Ok(match row {
        Some((owner, expires_at)) if owner == holder => Some(expires_at),
        _ => None,
    })
}

/// Renews the SQLite lease row every `RENEW_EVERY`; deletes it on release.
async fn hold_lite(
    pool: SqlitePool,
    name: String,
    holder: String,
    mut expires_at: i64,
    held: watch::Sender<bool>,
    mut release: oneshot::Receiver<()>,
) {
    let mut tick = tokio::time::interval(Lease::RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = &mut release => break,
            _ = tick.tick() => {
                let next = now_ms() + ttl_ms();
                let renewed = sqlx::query("UPDATE leases SET expires_at = ?1 WHERE name = ?2 AND holder = ?3")
                    .bind(next)
                    .bind(&name)
                    .bind(&holder)
                    .execute(&pool)
                    .await;
                match renewed {
                    Ok(done) if done.rows_affected() == 1 => expires_at = next,
                    Ok(_) => {
                        tracing::warn!(lease = %name, holder = %holder, "the lease was taken over; lease lost");
                        held.send_replace(false);
                        return;
                    }
                    Err(err) if now_ms() >= expires_at => {
                        tracing::warn!(lease = %name, holder = %holder, error = %err, "could not renew the lease before it expired; lease lost");
                        held.send_replace(false);
                        return;
                    }
                    Err(err) => tracing::warn!(lease = %name, holder = %holder, error = %err, "lease renewal failed; retrying"),
                }
            }
        }
    }
    held.send_replace(false);
    let deleted = sqlx::query("DELETE FROM leases WHERE name = ?1 AND holder = ?2")
        .bind(&name)
        .bind(&holder)
        .execute(&pool)
        .await;
    match deleted {
        Ok(_) => tracing::info!(lease = %name, holder = %holder, "lease released"),
        Err(err) => {
            tracing::warn!(lease = %name, holder = %holder, error = %err, "could not delete the lease row; it expires on its own")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_keys_are_stable() {
        assert_eq!(Lease::key("processors"), Lease::key("processors"));
        assert_ne!(Lease::key("processors"), Lease::key("other"));
    }
}
