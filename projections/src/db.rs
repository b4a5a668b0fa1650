//! The two backends behind one handle. Read tables use SQL both PostgreSQL and SQLite accept;
//! queries are written with `$N` placeholders and rewritten to SQLite's `?N` at run time.

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};

/// Which database holds the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
        }
    }
}

/// A connection pool on either backend.
#[derive(Debug, Clone)]
pub enum Db {
    Pg(PgPool),
    Lite(SqlitePool),
}

/// A transaction on either backend.
pub enum Tx {
    Pg(Transaction<'static, Postgres>),
    Lite(Transaction<'static, Sqlite>),
}

impl Tx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Pg(tx) => tx.commit().await,
            Self::Lite(tx) => tx.commit().await,
        }
    }
}

/// `$1` → `?`, so one SQL text serves both backends. When the placeholders run `$1, $2, …`
/// in order, each once (the usual case), they become anonymous `?`: SQLite resolves a numbered
/// parameter's name by a linear scan, so binding numbered parameters costs the square of their
/// count (a profile showed `sqlite3_bind_parameter_name` at 12 % of CPU on multi-row statements),
/// while anonymous ones bind by index. Otherwise they become `?N`.
pub fn lite_sql(sql: &str) -> Cow<'_, str> {
    if !sql.contains('$') {
        return Cow::Borrowed(sql);
    }
    let bytes = sql.as_bytes();
    let mut in_order = true;
    let mut expected = 1u64;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
            let start = i + 1;
            let mut end = start;
            while end < bytes.len() && bytes[end].is_ascii_digit() {
                end += 1;
            }
            if sql[start..end].parse::<u64>().ok() != Some(expected) {
                in_order = false;
                break;
            }
            expected += 1;
            i = end;
        } else {
            i += 1;
        }
    }
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
            if in_order {
                while chars.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                }
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// How often the SQLite write-ahead log is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// How long a SQLite connection waits for a lock before answering busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The write-ahead log's bound, in pages (64 MiB at SQLite's default 4 KiB page). Past it,
/// the checkpointer waits for readers so the log can start over.
const WAL_PAGES_LIMIT: i64 = 16_384;

/// How long a bounding checkpoint waits for readers (and holds writers back) per attempt.
const WAL_RESET_WAIT: Duration = Duration::from_millis(250);

/// Copies the SQLite write-ahead log into the database file from a task of its own, every
/// [`CHECKPOINT_EVERY`], without blocking readers or the writer (`PASSIVE`). SQLite's default
/// is to checkpoint inside the commit that crosses 1,000 WAL pages: that commit then pays for
/// copying and syncing everything before it, and a page written by many commits is copied
/// many times (measured: half the time of a carts rebuild went there).
///
/// A passive checkpoint never waits, so under reads that overlap without pause (the
/// projections, the sweeper and the opener during a burst) the log never gets a moment to
/// start over and grows without bound: a 1,000,000-cart sweep grew it to 60 GB and filled the
/// disk. So once it holds more than [`WAL_PAGES_LIMIT`] pages, the task asks for a
/// `TRUNCATE` checkpoint, which waits (at most [`WAL_RESET_WAIT`] per try) until every reader
/// reads the newest snapshot, then empties the file. The task ends when the pool closes; the
/// last connection to close checkpoints whatever is left.
fn checkpoint_in_background(pool: SqlitePool) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if pool.is_closed() {
                break;
            }
            if let Err(err) = checkpoint_once(&pool).await {
                if pool.is_closed() {
                    break;
                }
                tracing::debug!(error = %err, "WAL checkpoint failed; retrying later");
            }
        }
    });
}

/// One passive checkpoint, then a bounding one if the log is past its limit.
async fn checkpoint_once(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    let (_, pages, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(pool)
        .await?;
    if pages <= WAL_PAGES_LIMIT {
        return Ok(());
    }
    let mut conn = pool.acquire().await?;
    sqlx::query(&format!(
        "PRAGMA busy_timeout = {}",
        WAL_RESET_WAIT.as_millis()
    ))
    .execute(&mut *conn)
    .await?;
    let reset: Result<(i64, i64, i64), sqlx::Error> =
        sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut *conn)
            .await;
    sqlx::query(&format!(
        "PRAGMA busy_timeout = {}",
        BUSY_TIMEOUT.as_millis()
    ))
    .execute(&mut *conn)
    .await?;
    match reset? {
        (0, _, _) => tracing::debug!(pages, "WAL past its bound: emptied"),
        _ => tracing::debug!(pages, "WAL past its bound: readers busy, trying again"),
    }
    Ok(())
}

/// Runs one statement with the same binds on whichever backend `$db` (`&Db`) is.
#[macro_export]
macro_rules! exec_db {
    ($db:expr, $sql:expr $(, $arg:expr)* $(,)?) => {
        match $db {
            $crate::Db::Pg(p) => sqlx::query($sql)$(.bind($arg))*.execute(p).await.map(|r| r.rows_affected()),
            $crate::Db::Lite(p) => sqlx::query(&$crate::lite_sql($sql))$(.bind($arg))*.execute(p).await.map(|r| r.rows_affected()),
        }
    };
}

/// A multi-row insert's statement: `prefix`, then `rows` groups of `columns` numbered
/// placeholders (`($1, $2), ($3, $4)`), then `suffix`. Bind the rows with [`exec_rows_tx!`].
pub fn values_sql(prefix: &str, rows: usize, columns: usize, suffix: &str) -> String {
    let mut sql = String::with_capacity(prefix.len() + suffix.len() + rows * columns * 6);
    sql.push_str(prefix);
    for row in 0..rows {
        sql.push_str(if row == 0 { " (" } else { ", (" });
        for column in 1..=columns {
            if column > 1 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(row * columns + column).to_string());
        }
        sql.push(')');
    }
    sql.push(' ');
    sql.push_str(suffix);
    sql
}

/// Row writes of one projector batch, kept in the order their events came for each row and
/// run together when the batch ends: layer `n` holds the `n`-th write of every row the batch
/// touches, so within a layer every write is to a different row and the layer's writes of one
/// shape go in one multi-row statement ([`values_sql`]), and layers run in order. A row's writes
/// keep their order (each guarded by its `last_position` as a single statement would be); rows
/// never depended on each other's. A write whose outcome the projector must see (rows affected)
/// does not go here: [`Self::take`] first, then it runs alone.
pub struct Layered<W> {
    layers: Vec<Vec<W>>,
    depth: std::collections::HashMap<String, usize>,
}

impl<W> Default for Layered<W> {
    fn default() -> Self {
        Self {
            layers: Vec::new(),
            depth: std::collections::HashMap::new(),
        }
    }
}

impl<W> Layered<W> {
    /// Adds the next write of row `key`.
    pub fn push(&mut self, key: &str, write: W) {
        let depth = match self.depth.get_mut(key) {
            Some(depth) => depth,
            None => self.depth.entry(key.to_owned()).or_insert(0),
        };
        if *depth == self.layers.len() {
            self.layers.push(Vec::new());
        }
        self.layers[*depth].push(write);
        *depth += 1;
    }

    /// The layers pushed so far, in order, leaving this empty.
    pub fn take(&mut self) -> Vec<Vec<W>> {
        self.depth.clear();
        std::mem::take(&mut self.layers)
    }
}

/// Runs a multi-row statement ([`values_sql`]) inside a transaction, binding each of `$rows`
/// with `$bind` (an expression of the query `$q` and the row `$r` that answers the query).
#[macro_export]
macro_rules! exec_rows_tx {
    ($tx:expr, $sql:expr, $rows:expr, |$q:ident, $r:ident| $bind:expr) => {
        match $tx {
            $crate::Tx::Pg(t) => {
                let mut $q = sqlx::query($sql);
                for $r in $rows {
                    $q = $bind;
                }
                $q.execute(&mut **t).await.map(|r| r.rows_affected())
            }
            $crate::Tx::Lite(t) => {
                let lite = $crate::lite_sql($sql);
                let mut $q = sqlx::query(&lite);
                for $r in $rows {
                    $q = $bind;
                }
                $q.execute(&mut **t).await.map(|r| r.rows_affected())
            }
        }
    };
}

/// Rows per multi-row statement ([`exec_values_tx!`]): with at most 19 parameters a row, far
/// below both backends' parameter limits.
pub const ROWS_PER_STATEMENT: usize = 500;

/// Writes `$rows` (a slice) inside a transaction in multi-row statements of at most
/// [`ROWS_PER_STATEMENT`] rows: `$prefix`, then `$columns` placeholders a row ([`values_sql`]),
/// then `$suffix`, each row bound by `$bind` as in [`exec_rows_tx!`].
#[macro_export]
macro_rules! exec_values_tx {
    ($tx:expr, $prefix:expr, $columns:expr, $suffix:expr, $rows:expr, |$q:ident, $r:ident| $bind:expr) => {{
        let mut written: Result<(), sqlx::Error> = Ok(());
        for chunk in $rows.chunks($crate::db::ROWS_PER_STATEMENT) {
            let sql = $crate::db::values_sql($prefix, chunk.len(), $columns, $suffix);
            if let Err(e) = $crate::exec_rows_tx!($tx, &sql, chunk, |$q, $r| $bind) {
                written = Err(e);
                break;
            }
        }
        written
    }};
}

/// Runs one statement inside a transaction (`$tx`: `&mut Tx`).
#[macro_export]
macro_rules! exec_tx {
    ($tx:expr, $sql:expr $(, $arg:expr)* $(,)?) => {
        match $tx {
            $crate::Tx::Pg(t) => sqlx::query($sql)$(.bind($arg))*.execute(&mut **t).await.map(|r| r.rows_affected()),
            $crate::Tx::Lite(t) => sqlx::query(&$crate::lite_sql($sql))$(.bind($arg))*.execute(&mut **t).await.map(|r| r.rows_affected()),
        }
    };
}

/// Fetches rows as `$ty` (a `sqlx::FromRow`) from `$db` (`&Db`).
#[macro_export]
macro_rules! fetch_all_db {
    ($db:expr, $ty:ty, $sql:expr $(, $arg:expr)* $(,)?) => {
        match $db {
            $crate::Db::Pg(p) => sqlx::query_as::<_, $ty>($sql)$(.bind($arg))*.fetch_all(p).await,
            $crate::Db::Lite(p) => sqlx::query_as::<_, $ty>(&$crate::lite_sql($sql))$(.bind($arg))*.fetch_all(p).await,
        }
    };
}

/// Fetches at most one row as `$ty` from `$db` (`&Db`).
#[macro_export]
macro_rules! fetch_optional_db {
    ($db:expr, $ty:ty, $sql:expr $(, $arg:expr)* $(,)?) => {
        match $db {
            $crate::Db::Pg(p) => sqlx::query_as::<_, $ty>($sql)$(.bind($arg))*.fetch_optional(p).await,
            $crate::Db::Lite(p) => sqlx::query_as::<_, $ty>(&$crate::lite_sql($sql))$(.bind($arg))*.fetch_optional(p).await,
        }
    };
}

/// Fetches at most one row as `$ty` inside a transaction (`$tx`: `&mut Tx`).
#[macro_export]
macro_rules! fetch_optional_tx {
    ($tx:expr, $ty:ty, $sql:expr $(, $arg:expr)* $(,)?) => {
        match $tx {
            $crate::Tx::Pg(t) => sqlx::query_as::<_, $ty>($sql)$(.bind($arg))*.fetch_optional(&mut **t).await,
            $crate::Tx::Lite(t) => sqlx::query_as::<_, $ty>(&$crate::lite_sql($sql))$(.bind($arg))*.fetch_optional(&mut **t).await,
        }
    };
}

/// Where the log lives: a `postgres://` URL, a `sqlite://` URL, or (none) `ocart.db` in the
/// data directory.
pub fn database_url(explicit: Option<&str>, data_dir: &Path) -> String {
    match explicit {
        Some(url) if !url.trim().is_empty() => url.trim().to_owned(),
        _ => format!("sqlite://{}", data_dir.join("ocart.db").display()),
    }
}

impl Db {
    /// Opens a pool. SQLite files are created if missing and run in WAL mode.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Db> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url).context("parsing the PostgreSQL URL")?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .with_context(|| format!("connecting to PostgreSQL at {}", redact(url)))?;
            Ok(Db::Pg(pool))
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .context("parsing the SQLite URL")?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(BUSY_TIMEOUT)
                .foreign_keys(true)
                // When the log does start over, its file shrinks back to the bound.
                .pragma("journal_size_limit", (WAL_PAGES_LIMIT * 4096).to_string())
                .pragma("cache_size", "-32000")
                // Reads map the file instead of copying every page through read(2).
                .pragma("mmap_size", "1073741824")
                .pragma("temp_store", "memory")
                // sqlx's SQLite worker thread hands rows over a bounded channel; at the default
                // (50) a large read ping-pongs between the threads every few rows, and the
                // context switches cost more than the rows (measured in a replay profile).
                .row_buffer_size(4096)
                // Commits never checkpoint; `checkpoint_in_background` does (see there).
                .pragma("wal_autocheckpoint", "0");
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections.max(2))
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .with_context(|| format!("opening the SQLite database {url}"))?;
            checkpoint_in_background(pool.clone());
            Ok(Db::Lite(pool))
        } else {
            anyhow::bail!(
                "unsupported database URL {:?}: use postgres://… or sqlite://…",
                redact(url)
            )
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Pg(_) => Backend::Postgres,
            Db::Lite(_) => Backend::Sqlite,
        }
    }

    /// Applies every pending migration of this backend.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self {
            Db::Pg(pool) => ocart_schemas::POSTGRES
                .run(pool)
                .await
                .context("migrating PostgreSQL")?,
            Db::Lite(pool) => ocart_schemas::SQLITE
                .run(pool)
                .await
                .context("migrating SQLite")?,
        }
        Ok(())
    }

    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Db::Pg(pool) => Tx::Pg(pool.begin().await?),
            Db::Lite(pool) => Tx::Lite(pool.begin().await?),
        })
    }

    pub async fn close(&self) {
        match self {
            Db::Pg(pool) => pool.close().await,
            Db::Lite(pool) => pool.close().await,
        }
    }
}

/// A URL with its password replaced, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                // `nats://TOKEN@host`: a lone user part is NATS's token authentication.
                None if url[..scheme].starts_with("nats") || url[..scheme].starts_with("tls") => {
                    format!("{}***{}", &url[..scheme + 3], &url[at..])
                }
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten_for_sqlite() {
        assert_eq!(
            lite_sql("SELECT $1, $12 WHERE a = '$'"),
            "SELECT ?1, ?12 WHERE a = '$'"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    }
}

#[cfg(test)]
mod values_sql_tests {
    use super::{values_sql, Layered};

    #[test]
    fn layers_keep_each_rows_order_and_hold_a_row_once() {
        let mut rows = Layered::default();
        for (key, write) in [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("a", 5), ("b", 6)] {
            rows.push(key, write);
        }
        assert_eq!(rows.take(), vec![vec![1, 2, 4], vec![3, 6], vec![5]]);
        assert!(rows.take().is_empty());
        rows.push("a", 7);
        assert_eq!(rows.take(), vec![vec![7]], "taking starts every row over");
    }

    #[test]
    fn numbers_every_placeholder_once_in_row_order() {
        assert_eq!(
            values_sql(
                "INSERT INTO t (a, b) VALUES",
                2,
                2,
                "ON CONFLICT DO NOTHING"
            ),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) ON CONFLICT DO NOTHING"
        );
        assert_eq!(values_sql("V", 1, 1, ""), "V ($1) ");
    }
}
