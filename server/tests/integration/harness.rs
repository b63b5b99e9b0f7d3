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
use std::collections::HashMap;
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
    /// A Redis of the test's own (a `PrivateRedis`) instead of the shared one.
    pub redis_url: Option<String>,
    /// A Redis Cluster's seed nodes (a `RedisCluster`) instead of one Redis.
    pub cluster_nodes: Option<Vec<String>>,
    pub strategy: Strategy,
    pub tweak: fn(&mut Config),
}

impl Setup {
    pub fn db_only(backend: Backend) -> Self {
        Self {
            backend,
            redis: false,
            redis_url: None,
            cluster_nodes: None,
            strategy: Strategy::DbOnly,
            tweak: |_| {},
        }
    }

    pub fn embedded() -> Self {
        Self {
            backend: Backend::Sqlite,
            redis: false,
            redis_url: None,
            cluster_nodes: None,
            strategy: Strategy::RedisThenDb,
            tweak: |_| {},
        }
    }

    pub fn redis(backend: Backend) -> Self {
        Self {
            backend,
            redis: true,
            redis_url: None,
            cluster_nodes: None,
            strategy: Strategy::RedisThenDb,
            tweak: |_| {},
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub state: AppState,
    // Fields drop in order: the server stops before its Redis keys and
    // database go.
    _instance: Option<Instance>,
    pub redis: Option<TestRedis>,
    pub db: TestDb,
}

fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _logs = server::telemetry::init(server::config::LogFormat::Text);
        }
    });
}

fn test_config(database_url: &str, redis: Option<(&str, &str)>, strategy: Strategy) -> Config {
    let mut config = Config::embedded();
    config.site_addr = "127.0.0.1:0".parse().expect("addr");
    config.database_url = database_url.to_owned();
    config.database_max_connections = 16;
    config.redis = redis.map_or(RedisTarget::None, |(url, _)| {
        RedisTarget::Single(url.to_owned())
    });
    config.redis_key_prefix = redis
        .map(|(_, prefix)| prefix.to_owned())
        .unwrap_or_default();
    config.admin_token = Some(ADMIN_TOKEN.to_owned());
    config.cookie_secret = Some(COOKIE_SECRET.to_owned());
    config.strategy = strategy;
    config.seed_demo_items = false;
    // Load tests send many attempts per buyer; the limit has its own test.
    config.order_rate_per_second = 1_000_000;
    config.order_rate_burst = 1_000_000;
    config
}

/// A running server: stops when dropped.
pub struct Instance {
    pub base: String,
    pub state: AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

async fn start(config: Config) -> Instance {
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
    Instance {
        base,
        state,
        shutdown: Some(tx),
        server: Some(server),
    }
}

pub async fn spawn_app(setup: Setup) -> TestApp {
    init_logs();
    let db = TestDb::create(setup.backend).await;
    let redis = setup.redis.then(|| {
        let mut redis = TestRedis::new();
        if let Some(url) = &setup.redis_url {
            redis.url = url.clone();
        }
        redis
    });
    let mut config = test_config(
        &db.url,
        redis.as_ref().map(|r| (r.url.as_str(), r.prefix.as_str())),
        setup.strategy,
    );
    if let Some(nodes) = &setup.cluster_nodes {
        config.redis = RedisTarget::Cluster(nodes.clone());
        config.redis_key_prefix = unique("c");
    }
    (setup.tweak)(&mut config);
    let instance = start(config).await;
    TestApp {
        base: instance.base.clone(),
        state: instance.state.clone(),
        _instance: Some(instance),
        redis,
        db,
    }
}

/// Another server instance beside `app`, sharing its database and Redis.
pub async fn spawn_instance(
    app: &TestApp,
    database_url: &str,
    redis_url: &str,
    prefix: &str,
) -> Instance {
    start(test_config(
        database_url,
        Some((redis_url, prefix)),
        app.state.pipeline.strategy(),
    ))
    .await
}

/// Another server instance beside `app`, sharing its database and the same
/// configuration (Redis, cluster, prefix) with its own port.
pub async fn spawn_twin(app: &TestApp) -> Instance {
    let mut config = app.state.config.clone();
    config.site_addr = "127.0.0.1:0".parse().expect("addr");
    start(config).await
}

/// A buyer: an HTTP client with its own cookie jar and session.
#[derive(Clone)]
pub struct Buyer {
    pub client: reqwest::Client,
    /// The id `POST /api/session` answered.
    pub id: String,
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

/// A buyer with a session on the server at `base` (any instance).
pub async fn buyer_on(base: &str) -> Buyer {
    let client = http_client();
    let response = client
        .post(format!("{base}/api/session"))
        .send()
        .await
        .expect("session");
    assert_eq!(response.status().as_u16(), 201);
    let session: serde_json::Value = response.json().await.expect("session json");
    Buyer {
        client,
        id: session["buyer_id"].as_str().expect("a buyer id").to_owned(),
        base: base.to_owned(),
    }
}

/// The server's `/metrics` text.
pub async fn metrics_text(base: &str) -> String {
    http_client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text")
}

/// The `name{labels} value` lines of the server's `/metrics`, keyed by
/// `name{labels}`.
pub async fn scrape_metrics(base: &str) -> HashMap<String, f64> {
    metrics_text(base)
        .await
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(series, value)| value.parse().ok().map(|v| (series.to_owned(), v)))
        .collect()
}

/// One series of a scrape; a series never recorded reads 0.
pub fn metric(metrics: &HashMap<String, f64>, series: &str) -> f64 {
    metrics.get(series).copied().unwrap_or(0.0)
}

impl TestApp {
    pub async fn buyer(&self) -> Buyer {
        buyer_on(&self.base).await
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

    /// The reservation counter and live holds of an item, as the store has them.
    pub async fn reservation_state(&self, item: &Item) -> (Option<i64>, u64) {
        let store = self
            .state
            .reservation
            .as_ref()
            .expect("a reservation store");
        (
            store.counter(item.id).await.expect("counter"),
            store.live_holds(item.id).await.expect("holds"),
        )
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

    /// Orders, retrying with the same key while the answer is retryable, as
    /// a well-behaved client does: after `Retry-After` when the server names
    /// one, else after a short pause; gives up after a minute.
    pub async fn order_until_definite(
        &self,
        item: app::domain::ItemId,
        qty: i64,
        key: &str,
    ) -> Answer {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let answer = self.order(item, qty, key).await;
            if answer.body["retryable"] != serde_json::json!(true) {
                return answer;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no definite answer within a minute; the last: {answer:?}"
            );
            let pause = answer
                .retry_after
                .as_deref()
                .and_then(|s| s.parse::<u64>().ok())
                .map_or(Duration::from_millis(20), Duration::from_secs);
            tokio::time::sleep(pause).await;
        }
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

/// A redis-server of this test's own, on a free port, for tests that flush
/// or kill it (never done to the shared one). Killed when dropped.
pub struct PrivateRedis {
    pub port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        Self::start_on(port).await
    }

    /// Starts (or restarts, after a kill) a private Redis on `port`, empty.
    pub async fn start_on(port: u16) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                // DEBUG SLEEP stands in for a stalled Redis.
                "--enable-debug-command",
                "yes",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let redis = Self {
            port,
            child,
            _dir: dir,
        };
        for _ in 0..100 {
            if let Ok(mut conn) = redis.client().get_multiplexed_async_connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
                {
                    return redis;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("private redis-server did not start on port {port}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("redis url")
    }

    /// Kills the server, as a crash would: nothing is kept.
    pub fn kill(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }

    pub async fn flushall(&self) {
        let mut conn = self
            .client()
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        redis::cmd("FLUSHALL")
            .query_async::<()>(&mut conn)
            .await
            .expect("flushall");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it holds or `within` passes: for effects of background
/// tasks (the reaper), without guessing a fixed sleep.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A three-master Redis Cluster of this test's own: `redis-server
/// --cluster-enabled yes` on free ports, joined by `redis-cli --cluster
/// create`, killed when dropped.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<std::process::Child>,
    _dir: tempfile::TempDir,
}

fn free_cluster_port() -> u16 {
    // A cluster node also listens on its port + 10000 (the cluster bus).
    loop {
        let Ok(listener) = std::net::TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = listener.local_addr().map(|a| a.port()) else {
            continue;
        };
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl RedisCluster {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut ports = Vec::new();
        while ports.len() < 3 {
            let port = free_cluster_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let children = ports
            .iter()
            .map(|port| {
                let node_dir = dir.path().join(port.to_string());
                std::fs::create_dir_all(&node_dir).expect("node dir");
                std::process::Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args([
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                    ])
                    .args(["--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(&node_dir)
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .expect("redis-server is installed")
            })
            .collect();
        let cluster = Self {
            ports,
            children,
            _dir: dir,
        };
        for port in &cluster.ports {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url");
            let up = eventually(Duration::from_secs(10), || {
                let client = client.clone();
                async move {
                    match client.get_multiplexed_async_connection().await {
                        Ok(mut conn) => redis::cmd("PING")
                            .query_async::<String>(&mut conn)
                            .await
                            .is_ok(),
                        Err(_) => false,
                    }
                }
            })
            .await;
            assert!(up, "cluster node {port} did not start");
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed");
        assert!(
            created.status.success(),
            "{}",
            String::from_utf8_lossy(&created.stdout)
        );
        for port in &cluster.ports {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url");
            let ok = eventually(Duration::from_secs(20), || {
                let client = client.clone();
                async move {
                    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                        return false;
                    };
                    redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async::<String>(&mut conn)
                        .await
                        .is_ok_and(|info| info.contains("cluster_state:ok"))
                }
            })
            .await;
            assert!(ok, "the cluster did not settle");
        }
        cluster
    }

    pub fn nodes(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
