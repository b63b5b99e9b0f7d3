//! Test databases: a fresh PostgreSQL or MariaDB database per test
//! (`CREATE DATABASE`, dropped when the test ends) or a SQLite file in a
//! temporary directory, and the database-side checks tests make.
//!
//! Servers come from the environment, defaulting to the local ones:
//! `TEST_POSTGRES_URL` (`postgres://postgres@127.0.0.1:5432/test`) and
//! `TEST_MYSQL_URL` (`mysql://root@127.0.0.1:3306/test`).

use super::{TestApp, env_or, unique};
use app::model::Item;
use sqlx::{Connection, Executor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

pub const ALL_BACKENDS: [Backend; 3] = [Backend::Sqlite, Backend::Postgres, Backend::MySql];

/// A database that exists for one test.
pub struct TestDb {
    pub url: String,
    backend: Backend,
    admin_url: String,
    name: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn create(backend: Backend) -> Self {
        sqlx::any::install_default_drivers();
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}/shop.sqlite3", dir.path().display());
                Self {
                    url,
                    backend,
                    admin_url: String::new(),
                    name: String::new(),
                    _dir: Some(dir),
                }
            }
            Backend::Postgres | Backend::MySql => {
                let admin_url = match backend {
                    Backend::Postgres => env_or(
                        "TEST_POSTGRES_URL",
                        "postgres://postgres@127.0.0.1:5432/test",
                    ),
                    _ => env_or("TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
                };
                let name = unique("og_");
                let mut conn = sqlx::AnyConnection::connect(&admin_url)
                    .await
                    .unwrap_or_else(|e| panic!("cannot reach {admin_url}: {e}"));
                conn.execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .expect("create test database");
                let base = admin_url
                    .rsplit_once('/')
                    .map(|(base, _)| base)
                    .unwrap_or(&admin_url);
                Self {
                    url: format!("{base}/{name}"),
                    backend,
                    admin_url,
                    name,
                    _dir: None,
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.backend == Backend::Sqlite {
            return;
        }
        let (admin_url, name, backend) = (self.admin_url.clone(), self.name.clone(), self.backend);
        // Drop runs inside the test's runtime: use a thread with its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut conn = sqlx::AnyConnection::connect(&admin_url).await.ok()?;
                let sql = match backend {
                    Backend::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    _ => format!("DROP DATABASE IF EXISTS {name}"),
                };
                conn.execute(sql.as_str()).await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// A PostgreSQL test database that refuses every connection until
/// [`PostgresOutage::end`]: the database going down under a running server.
pub struct PostgresOutage {
    admin: sqlx::AnyConnection,
    name: String,
}

impl PostgresOutage {
    pub async fn end(mut self) {
        self.admin
            .execute(format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", self.name).as_str())
            .await
            .expect("unlock the database");
    }
}

impl TestDb {
    /// Locks the (PostgreSQL) database and terminates its connections.
    pub async fn go_down(&self) -> PostgresOutage {
        assert_eq!(self.backend, Backend::Postgres, "outages are PostgreSQL's");
        let mut admin = sqlx::AnyConnection::connect(&self.admin_url)
            .await
            .expect("admin");
        admin
            .execute(format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", self.name).as_str())
            .await
            .expect("lock the database");
        admin
            .execute(
                format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
                    self.name
                )
                .as_str(),
            )
            .await
            .expect("cut connections");
        PostgresOutage {
            admin,
            name: self.name.clone(),
        }
    }
}

impl TestApp {
    /// Number of order rows and their total quantity for an item, read from
    /// the database itself.
    pub async fn orders_in_db(&self, item: &Item) -> (i64, i64) {
        let bigint = self.state.db.dialect().bigint();
        let sql = format!(
            "SELECT CAST(COUNT(*) AS {bigint}) AS n, CAST(COALESCE(SUM(qty), 0) AS {bigint}) AS units \
             FROM orders WHERE item_id = ?"
        );
        let row = sqlx::query(&self.state.db.sql(&sql))
            .bind(item.id.get())
            .fetch_one(self.state.db.pool())
            .await
            .expect("count orders");
        use sqlx::Row;
        (row.get("n"), row.get("units"))
    }

    /// (buyer, key) pairs that have more than one order: must always be 0.
    pub async fn duplicate_orders(&self) -> i64 {
        let sql = "SELECT COUNT(*) AS n FROM (SELECT buyer, idempotency_key FROM orders \
                   GROUP BY buyer, idempotency_key HAVING COUNT(*) > 1) dups";
        sqlx::query_scalar(sql)
            .fetch_one(self.state.db.pool())
            .await
            .expect("count duplicates")
    }
}
