//! `spawn_app`: a real server on port 0 with a fresh database, and the
//! helpers tests use to talk to it like a client would.
//!
//! - [`databases`]: a fresh database per test and database-side checks;
//! - [`redis`]: a key prefix on the shared Redis, private Redis servers and
//!   a private Redis Cluster;
//! - [`client`]: buyers, answers, admin calls and metric scrapes.
//!
//! Every test database is dropped and every Redis prefix deleted when the
//! test's app is dropped.

mod client;
mod commit_cutter;
mod databases;
mod redis;

pub use client::{
    Answer, Buyer, answer, buyer_on, http_client, metric, metrics_text, scrape_metrics,
};
pub use commit_cutter::CommitCutter;
pub use databases::{ALL_BACKENDS, Backend, TestDb};
pub use redis::{PrivateRedis, RedisCluster, TestRedis};

use leptos::config::LeptosOptions;
use server::config::{Config, RedisTarget};
use server::orders::strategy::Strategy;
use server::startup::Application;
use server::state::AppState;
use std::sync::Once;
use std::time::Duration;

pub const ADMIN_TOKEN: &str = "integration-admin-token";
const COOKIE_SECRET: &str = "integration-cookie-secret-of-at-least-32-bytes";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
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
    /// Put a [`CommitCutter`] between the server and its database
    /// (PostgreSQL or MariaDB).
    pub cut_commits: bool,
}

impl Setup {
    pub fn db_only(backend: Backend) -> Self {
        Self {
            backend,
            redis: false,
            redis_url: None,
            cluster_nodes: None,
            strategy: Strategy::LedgerOnly,
            tweak: |_| {},
            cut_commits: false,
        }
    }

    pub fn embedded() -> Self {
        Self {
            backend: Backend::Sqlite,
            redis: false,
            redis_url: None,
            cluster_nodes: None,
            strategy: Strategy::ReserveFirst,
            tweak: |_| {},
            cut_commits: false,
        }
    }

    pub fn redis(backend: Backend) -> Self {
        Self {
            backend,
            redis: true,
            redis_url: None,
            cluster_nodes: None,
            strategy: Strategy::ReserveFirst,
            tweak: |_| {},
            cut_commits: false,
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub state: AppState,
    // Fields drop in order: the server stops before its Redis keys and
    // database go.
    _instance: Option<Instance>,
    /// Between the server and its database, when the setup asked for it.
    pub commit_cutter: Option<CommitCutter>,
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
    config.http.site_addr = "127.0.0.1:0".parse().expect("addr");
    config.database.url = database_url.to_owned();
    // Several test servers share the local PostgreSQL and MariaDB.
    config.database.max_connections = 8;
    config.redis.target = redis.map_or(RedisTarget::None, |(url, _)| {
        RedisTarget::Single(url.to_owned())
    });
    config.redis.key_prefix = redis
        .map(|(_, prefix)| prefix.to_owned())
        .unwrap_or_default();
    config.sessions.admin_token = Some(ADMIN_TOKEN.to_owned());
    config.sessions.cookie_secret = Some(COOKIE_SECRET.to_owned());
    config.orders.strategy = strategy;
    config.database.seed_demo_items = false;
    // Load tests send many attempts per buyer; the limit has its own test.
    config.http.order_rate_per_second = 1_000_000;
    config.http.order_rate_burst = 1_000_000;
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

/// Where test servers look for the site's files, unless a test gives its own
/// ([`spawn_app_serving`]).
const SITE_ROOT: &str = "target/site";

async fn start(config: Config) -> Instance {
    start_serving(config, SITE_ROOT).await
}

async fn start_serving(config: Config, site_root: &str) -> Instance {
    let leptos = LeptosOptions::builder()
        .output_name("oversell-guard")
        .site_root(site_root)
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
    spawn_app_serving(setup, SITE_ROOT).await
}

/// [`spawn_app`] with the site's files (`pkg/` and the rest) taken from
/// `site_root`.
pub async fn spawn_app_serving(setup: Setup, site_root: &str) -> TestApp {
    init_logs();
    let db = TestDb::create(setup.backend).await;
    let redis = setup.redis.then(|| {
        let mut redis = TestRedis::new();
        if let Some(url) = &setup.redis_url {
            redis.url = url.clone();
        }
        redis
    });
    let commit_cutter = match setup.cut_commits {
        true => Some(CommitCutter::start(host_and_port(&db.url)).await),
        false => None,
    };
    let database_url = match &commit_cutter {
        Some(cutter) => db.url.replacen(
            &host_and_port(&db.url),
            &format!("127.0.0.1:{}", cutter.port),
            1,
        ),
        None => db.url.clone(),
    };
    let mut config = test_config(
        &database_url,
        redis.as_ref().map(|r| (r.url.as_str(), r.prefix.as_str())),
        setup.strategy,
    );
    if let Some(nodes) = &setup.cluster_nodes {
        config.redis.target = RedisTarget::Cluster(nodes.clone());
        config.redis.key_prefix = unique("c");
    }
    (setup.tweak)(&mut config);
    let instance = start_serving(config, site_root).await;
    TestApp {
        base: instance.base.clone(),
        state: instance.state.clone(),
        _instance: Some(instance),
        commit_cutter,
        redis,
        db,
    }
}

/// The `host:port` of a `scheme://user@host:port/name` URL.
fn host_and_port(url: &str) -> String {
    let after_at = url.rsplit_once('@').map_or(url, |(_, rest)| rest);
    after_at.split('/').next().unwrap_or_default().to_owned()
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
    config.http.site_addr = "127.0.0.1:0".parse().expect("addr");
    start(config).await
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
