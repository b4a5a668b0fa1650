//! The schema of both backends, owned by one migration history each. Migrations are never
//! edited once applied (see `migrations/README.md`).
#![forbid(unsafe_code)]

use sqlx::migrate::Migrator;

/// PostgreSQL migrations (`migrations/postgres`).
pub static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");

/// SQLite migrations (`migrations/sqlite`), the embedded default.
pub static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
