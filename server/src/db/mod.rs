//! The database: the source of truth for stock and orders.
//!
//! One [`Database`] wraps an `sqlx::AnyPool` for SQLite, PostgreSQL or
//! MySQL/MariaDB, picked by the URL: [`items`] reads and writes the
//! inventory, [`orders`] reads orders, [`settings`] keeps what every
//! instance sharing the database agrees on. Statements are written once with `?`
//! placeholders; [`Database::sql`] rewrites them to `$1, $2, ...` for
//! PostgreSQL. Where the dialects really differ (inserting with a generated
//! id, casting a sum), the [`Dialect`] says so. Migrations are compiled in,
//! one folder per dialect, and run at start.

pub mod items;
pub mod orders;
pub mod queue;
pub mod settings;

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};
use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

impl Dialect {
    pub fn of_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else if url.starts_with("mysql://") {
            Ok(Self::MySql)
        } else {
            anyhow::bail!("unsupported database URL scheme")
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::MySql => "mysql",
        }
    }

    /// The database's own clock as milliseconds since the Unix epoch, for
    /// decisions no server's clock may make.
    pub fn now_ms_sql(self) -> &'static str {
        match self {
            Self::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
            Self::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            Self::MySql => "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)",
        }
    }

    /// The integer type a `CAST` names (MySQL spells BIGINT `SIGNED`).
    pub fn bigint(self) -> &'static str {
        match self {
            Self::MySql => "SIGNED",
            Self::Sqlite | Self::Postgres => "BIGINT",
        }
    }
}

/// The pool and what it needs to speak the right dialect.
#[derive(Clone, Debug)]
pub struct Database {
    pool: AnyPool,
    dialect: Dialect,
}

impl Database {
    /// Connects, tunes SQLite for concurrent writers, and runs the migrations.
    ///
    /// # Errors
    /// The database cannot be reached or a migration fails.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::of_url(url)?;
        let url = match dialect {
            Dialect::Sqlite if !url.contains("mode=") => {
                let separator = if url.contains('?') { '&' } else { '?' };
                format!("{url}{separator}mode=rwc")
            }
            _ => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)
            .context("parsing DATABASE_URL")?
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        // WAL lets readers run beside the single writer;
                        // busy_timeout makes writers queue instead of failing;
                        // FULL syncs every commit, so an order answered 201
                        // survives a power cut (NORMAL may lose the last ones).
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .with_context(|| format!("connecting to the {} database", dialect.name()))?;
        let db = Self { pool, dialect };
        db.migrate().await?;
        Ok(db)
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.dialect {
            Dialect::Sqlite => sqlx::migrate!("../migrations/sqlite"),
            Dialect::Postgres => sqlx::migrate!("../migrations/postgres"),
            Dialect::MySql => sqlx::migrate!("../migrations/mysql"),
        };
        migrator
            .run(&self.pool)
            .await
            .with_context(|| format!("running the {} migrations", self.dialect.name()))
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The statement in this database's placeholder syntax.
    pub fn sql<'a>(&self, statement: &'a str) -> Cow<'a, str> {
        match self.dialect {
            Dialect::Postgres => Cow::Owned(numbered_placeholders(statement)),
            Dialect::Sqlite | Dialect::MySql => Cow::Borrowed(statement),
        }
    }

    /// A cheap round trip, for readiness.
    ///
    /// # Errors
    /// The database does not answer.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `?` → `$1, $2, ...` (our statements never put `?` inside a literal).
fn numbered_placeholders(statement: &str) -> String {
    let mut out = String::with_capacity(statement.len() + 8);
    let mut n = 0;
    for c in statement.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// 32 random bytes as lowercase hex: a secret (a cookie key, a fair-start
/// seed).
pub fn random_hex_secret() -> String {
    use rand::Rng;
    use std::fmt::Write as _;
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    let mut hex = String::with_capacity(64);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// Milliseconds since the Unix epoch: every timestamp column uses them.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// True when the error is a unique-index violation (a duplicate key).
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

/// True when the database gave up the transaction to break a lock cycle
/// (`40001` on MySQL/MariaDB, which rolls the whole transaction back;
/// `40P01` or `40001` on PostgreSQL) or, on SQLite, could not take the
/// write lock: running the whole transaction again is the cure.
pub fn is_deadlock(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Database(e) if matches!(e.code().as_deref(), Some("40001" | "40P01" | "5" | "517"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(
            numbered_placeholders("UPDATE t SET a = ? WHERE id = ? AND v = ?"),
            "UPDATE t SET a = $1 WHERE id = $2 AND v = $3"
        );
    }

    #[test]
    fn dialects_follow_the_url_scheme() {
        assert_eq!(Dialect::of_url("sqlite://x.db").ok(), Some(Dialect::Sqlite));
        assert_eq!(
            Dialect::of_url("postgres://h/db").ok(),
            Some(Dialect::Postgres)
        );
        assert_eq!(Dialect::of_url("mysql://h/db").ok(), Some(Dialect::MySql));
        assert!(Dialect::of_url("redis://h").is_err());
    }
}
