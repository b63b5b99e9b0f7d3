//! `spawn_app`: a real server on port 0 with a fresh database, and the
//! helpers tests use to talk to it like a client would.
//!
//! Servers come from the environment, defaulting to the local ones:
//! `TEST_POSTGRES_URL` (`postgres://postgres@127.0.0.1:5432/test`),
//! `TEST_MYSQL_URL` (`mysql://root@127.0.0.1:3306/test`), `TEST_REDIS_URL`
//! (`redis://127.0.0.1:6379`). Every test database is created here and
//! dropped when the test's app is dropped; Redis keys live under a unique
//! prefix and are deleted the same way.

use app::model::Item;
use leptos::config::LeptosOptions;
use server::config::{Config, RedisTarget, Strategy};
use server::startup::Application;
use server::state::AppState;
use sqlx::{Connection, Executor};
use std::sync::Once;
use std::time::Duration;

pub const ADMIN_TOKEN: &str = "integration-admin-token";
const COOKIE_SECRET: &str = "integration-cookie-secret-of-at-least-32-bytes";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

pub const ALL_BACKENDS: [Backend; 3] = [Backend::Sqlite, Backend::Postgres, Backend::MySql];

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

pub fn redis_url() -> String {
    env_or("TEST_REDIS_URL", "redis://127.0.0.1:6379")
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

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

/// A Redis key prefix that exists for one test.
pub struct TestRedis {
    pub url: String,
    pub prefix: String,
}

impl TestRedis {
    pub fn new() -> Self {
        Self {
            url: redis_url(),
            prefix: unique("t"),
        }
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis reachable")
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let (url, pattern) = (self.url.clone(), format!("{}*", self.prefix));
        let _ = std::thread::spawn(move || -> Option<()> {
            let client = redis::Client::open(url).ok()?;
            let mut conn = client.get_connection().ok()?;
            let keys: Vec<String> = redis::Commands::scan_match(&mut conn, &pattern)
                .ok()?
                .filter_map(Result::ok)
                .collect();
            if !keys.is_empty() {
                redis::cmd("DEL").arg(keys).query::<i64>(&mut conn).ok()?;
            }
            Some(())
        })
        .join();
    }
}

/// How a test app is set up.
#[derive(Clone)]
pub struct Setup {
    pub backend: Backend,
    pub redis: bool,
    pub strategy: Strategy,
    pub tweak: fn(&mut Config),
}

impl Setup {
    pub fn db_only(backend: Backend) -> Self {
        Self {
            backend,
            redis: false,
            strategy: Strategy::DbOnly,
            tweak: |_| {},
        }
    }

    pub fn embedded() -> Self {
        Self {
            backend: Backend::Sqlite,
            redis: false,
            strategy: Strategy::RedisThenDb,
            tweak: |_| {},
        }
    }

    pub fn redis(backend: Backend) -> Self {
        Self {
            backend,
            redis: true,
            strategy: Strategy::RedisThenDb,
            tweak: |_| {},
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub state: AppState,
    pub redis: Option<TestRedis>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    // Dropped last: the server must stop before its database goes.
    pub db: TestDb,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            server::telemetry::init(server::config::LogFormat::Text);
        }
    });
}

pub async fn spawn_app(setup: Setup) -> TestApp {
    init_logs();
    let db = TestDb::create(setup.backend).await;
    let redis = setup.redis.then(TestRedis::new);
    let mut config = Config::embedded();
    config.site_addr = "127.0.0.1:0".parse().expect("addr");
    config.database_url = db.url.clone();
    config.database_max_connections = 16;
    config.redis = redis
        .as_ref()
        .map_or(RedisTarget::None, |r| RedisTarget::Single(r.url.clone()));
    config.redis_key_prefix = redis.as_ref().map(|r| r.prefix.clone()).unwrap_or_default();
    config.admin_token = Some(ADMIN_TOKEN.to_owned());
    config.cookie_secret = Some(COOKIE_SECRET.to_owned());
    config.strategy = setup.strategy;
    config.seed_demo_items = false;
    (setup.tweak)(&mut config);
    let leptos = LeptosOptions::builder()
        .output_name("oversell-guard")
        .site_root("target/site")
        .build();
    let app = Application::build(config, leptos)
        .await
        .expect("application builds");
    let base = format!("http://{}", app.local_addr());
    let state = app.state().clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(async move {
        let _ = app
            .run_until_stopped(async {
                let _ = rx.await;
            })
            .await;
    });
    TestApp {
        base,
        state,
        redis,
        shutdown: Some(tx),
        server: Some(server),
        db,
    }
}

/// A buyer: an HTTP client with its own cookie jar and session.
#[derive(Clone)]
pub struct Buyer {
    pub client: reqwest::Client,
    base: String,
}

/// One answer, as a client sees it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
    pub replayed: bool,
    pub retry_after: Option<String>,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }
}

pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    Answer {
        status,
        body,
        replayed,
        retry_after,
    }
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

impl TestApp {
    pub async fn buyer(&self) -> Buyer {
        let client = http_client();
        let response = client
            .post(format!("{}/api/session", self.base))
            .send()
            .await
            .expect("session");
        assert_eq!(response.status().as_u16(), 201);
        Buyer {
            client,
            base: self.base.clone(),
        }
    }

    pub async fn create_item(&self, stock: i64, max_per_buyer: Option<i64>) -> Item {
        let response = http_client()
            .post(format!("{}/api/admin/items", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({
                "title": "Test camera",
                "price_cents": 1999,
                "stock": stock,
                "max_per_buyer": max_per_buyer,
            }))
            .send()
            .await
            .expect("create item");
        assert_eq!(response.status().as_u16(), 201, "create item");
        response.json().await.expect("item json")
    }

    pub async fn restock(&self, item: &Item, delta: i64) -> Answer {
        answer(
            http_client()
                .post(format!("{}/api/admin/items/{}/restock", self.base, item.id))
                .bearer_auth(ADMIN_TOKEN)
                .json(&serde_json::json!({ "delta": delta }))
                .send()
                .await
                .expect("restock"),
        )
        .await
    }

    pub async fn item(&self, id: app::domain::ItemId) -> Item {
        http_client()
            .get(format!("{}/api/items/{id}", self.base))
            .send()
            .await
            .expect("get item")
            .json()
            .await
            .expect("item json")
    }

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

impl Buyer {
    pub async fn order(&self, item: app::domain::ItemId, qty: i64, key: &str) -> Answer {
        answer(
            self.client
                .post(format!("{}/api/orders", self.base))
                .header("Idempotency-Key", key)
                .json(&serde_json::json!({ "item_id": item, "qty": qty }))
                .send()
                .await
                .expect("order request"),
        )
        .await
    }

    /// Orders, retrying with the same key while the answer is retryable (as
    /// a well-behaved client does), until a definite answer.
    pub async fn order_until_definite(
        &self,
        item: app::domain::ItemId,
        qty: i64,
        key: &str,
    ) -> Answer {
        for _ in 0..50 {
            let answer = self.order(item, qty, key).await;
            if answer.body["retryable"] != serde_json::json!(true) {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no definite answer after 50 attempts");
    }

    pub async fn outcome(&self, key: &str) -> Answer {
        answer(
            self.client
                .get(format!("{}/api/orders/by-key/{key}", self.base))
                .send()
                .await
                .expect("outcome request"),
        )
        .await
    }
}
