//! Fresh databases: a uniquely named PostgreSQL database, or a SQLite file in a temporary
//! folder, dropped afterwards.

use std::path::PathBuf;

use ocart_projections::Db;

/// The PostgreSQL server tests create their databases on.
pub fn pg_admin_url() -> String {
    std::env::var("OCART_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    Sqlite,
}

/// A database of one test's own, dropped when this is dropped.
pub struct FreshDb {
    pub url: String,
    pub kind: Kind,
    name: String,
    dir: Option<PathBuf>,
}

impl FreshDb {
    pub async fn new(kind: Kind) -> Self {
        match kind {
            Kind::Postgres => Self::postgres().await,
            Kind::Sqlite => Self::sqlite(),
        }
    }

    /// A new, empty PostgreSQL database. Panics, naming what is missing, if the server is not
    /// reachable: the suite never skips silently.
    pub async fn postgres() -> Self {
        let admin = pg_admin_url();
        let name = format!("ocart_test_{}", uuid::Uuid::new_v4().simple());
        let pool = sqlx::PgPool::connect(&admin).await.unwrap_or_else(|e| {
            panic!("PostgreSQL is not reachable at {admin} ({e}); start it as the README says, or set OCART_TEST_PG_URL")
        });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .expect("create test database");
        pool.close().await;
        let base = admin
            .rsplit_once('/')
            .map(|(b, _)| b.to_owned())
            .unwrap_or(admin.clone());
        Self {
            url: format!("{base}/{name}"),
            kind: Kind::Postgres,
            name,
            dir: None,
        }
    }

    /// A new SQLite file in a temporary folder.
    pub fn sqlite() -> Self {
        let dir =
            std::env::temp_dir().join(format!("ocart-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self {
            url: format!("sqlite://{}", dir.join("ocart.db").display()),
            kind: Kind::Sqlite,
            name: String::new(),
            dir: Some(dir),
        }
    }

    /// The folder of a SQLite database (also a good data dir for the app).
    pub fn dir(&self) -> Option<&PathBuf> {
        self.dir.as_ref()
    }

    /// A migrated pool on this database.
    pub async fn connect(&self) -> Db {
        let db = Db::connect(&self.url, 20)
            .await
            .expect("connect to test database");
        db.migrate().await.expect("migrate test database");
        db
    }
}

impl Drop for FreshDb {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if self.kind == Kind::Postgres {
            let name = self.name.clone();
            let admin = pg_admin_url();
            // Drop in a thread of its own: Drop cannot await, and the test's runtime may be
            // shutting down.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    if let Ok(pool) = sqlx::PgPool::connect(&admin).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&pool)
                                .await;
                        pool.close().await;
                    }
                });
            })
            .join();
        }
    }
}

impl FreshDb {
    /// A handle that owns nothing, left behind when [`crate::TestApp::stop`] hands the
    /// database back.
    pub(crate) fn placeholder() -> Self {
        Self {
            url: String::new(),
            kind: Kind::Sqlite,
            name: String::new(),
            dir: None,
        }
    }
}

impl FreshDb {
    /// Another handle on the same database that does not drop it when dropped.
    pub fn alias(&self) -> FreshDb {
        FreshDb {
            url: self.url.clone(),
            kind: Kind::Sqlite,
            name: String::new(),
            dir: None,
        }
    }
}
