//! Configuration from the environment (and an optional `.env`), validated
//! once at start: a bad value stops the server with a message naming the
//! variable, never a panic later on a request path.
//!
//! The public variables are documented in the README; they are a contract
//! with outside clients and must stay stable.

use anyhow::Context;
use std::net::SocketAddr;
use std::time::Duration;

/// Which layers an order crosses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// A: the reservation store filters, the versioned update confirms.
    RedisThenDb,
    /// B: the versioned update alone.
    DbOnly,
}

impl Strategy {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "redis+db" | "a" => Some(Self::RedisThenDb),
            "db" | "b" => Some(Self::DbOnly),
            _ => None,
        }
    }

    /// The label metrics and reports use.
    pub fn label(self) -> &'static str {
        match self {
            Self::RedisThenDb => "redis+db",
            Self::DbOnly => "db",
        }
    }
}

/// Where reservations live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// The in-process store: the embedded default.
    None,
    Single(String),
    Cluster(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `LEPTOS_SITE_ADDR`: where the server listens.
    pub site_addr: SocketAddr,
    /// `MAX_CONNECTIONS`: HTTP connections served at once; more wait in the
    /// kernel's backlog, which keeps memory bounded under a flood.
    pub max_connections: usize,
    /// `DATABASE_URL`: `sqlite:`, `postgres://` or `mysql://`.
    pub database_url: String,
    /// `DATABASE_MAX_CONNECTIONS`.
    pub database_max_connections: u32,
    /// `REDIS_URL` or `REDIS_CLUSTER_NODES`; neither means in-process.
    pub redis: RedisTarget,
    /// `REDIS_TIMEOUT_MS`: how long one Redis call may take before it
    /// counts as failed (the order then answers 503 and its hold is released).
    pub redis_timeout: Duration,
    /// `BREAKER_FAILURE_THRESHOLD`: Redis failures in a row that open the
    /// circuit breaker.
    pub breaker_failure_threshold: u32,
    /// `BREAKER_COOLDOWN_MS`: how long the breaker stays open before a probe.
    pub breaker_cooldown: Duration,
    /// `REDIS_KEY_PREFIX`: put before every key, so several deployments (or
    /// tests) can share one Redis. Braces are refused: they would move keys
    /// out of their item's hash slot.
    pub redis_key_prefix: String,
    /// `ADMIN_TOKEN`; `None` when unset (then a random one is generated and
    /// logged once at start).
    pub admin_token: Option<String>,
    /// `COOKIE_SECRET`, at least 32 bytes; `None` means a random key per
    /// process (sessions then do not survive a restart or span instances).
    pub cookie_secret: Option<String>,
    /// `COOKIE_SECURE`: mark the buyer cookie `Secure` (behind HTTPS).
    pub cookie_secure: bool,
    /// `ORDER_STRATEGY`: `redis+db` (default) or `db`.
    pub strategy: Strategy,
    /// `ALLOW_STRATEGY_OVERRIDE`: let `POST /api/orders` pick the strategy
    /// per request with `X-Order-Strategy` (for A/B benchmarks). Off by default.
    pub allow_strategy_override: bool,
    /// `ORDER_RATE_PER_SECOND` and `ORDER_RATE_BURST`: order attempts one
    /// buyer may make (a token bucket per buyer, per instance).
    pub order_rate_per_second: u32,
    pub order_rate_burst: u32,
    /// `HOLD_TTL_MS`: how long a reservation holds stock before the reaper
    /// gives it back.
    pub hold_ttl: Duration,
    /// `SOLD_OUT_MEMO_MS`: how long this instance remembers that an item's
    /// counter reached zero and refuses orders for it without asking the
    /// reservation store (0: always ask). Units given back by another
    /// instance or the reaper are offered again after at most this long.
    pub sold_out_memo: Duration,
    /// `REAPER_INTERVAL_MS`.
    pub reaper_interval: Duration,
    /// `RECONCILE_INTERVAL_MS`: how often counters are compared with the
    /// database and repaired.
    pub reconcile_interval: Duration,
    /// `IDEMPOTENCY_TTL_SECS`: how long an outcome is kept for replays.
    pub idempotency_ttl: Duration,
    /// `LEDGER_MAX_ATTEMPTS`: versioned-update attempts before `stock_conflict`.
    pub ledger_max_attempts: u32,
    /// `LEDGER_BACKOFF_BASE_MS` and `LEDGER_BACKOFF_CAP_MS`.
    pub ledger_backoff_base: Duration,
    pub ledger_backoff_cap: Duration,
    /// `LEDGER_BATCH_MAX`: most orders of one item written in one
    /// transaction (write coalescing); 1 writes every order on its own.
    pub ledger_batch_max: usize,
    /// `SEED_DEMO_ITEMS`: seed a few items into an empty database.
    pub seed_demo_items: bool,
    /// `LOG_FORMAT`: `text` or `json`.
    pub log_format: LogFormat,
}

impl Config {
    /// The embedded default: SQLite file, in-process reservations.
    pub fn embedded() -> Self {
        Self {
            site_addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
            max_connections: 10_000,
            database_url: "sqlite://oversell-guard.sqlite3".into(),
            database_max_connections: 16,
            redis: RedisTarget::None,
            redis_timeout: Duration::from_millis(500),
            breaker_failure_threshold: 5,
            breaker_cooldown: Duration::from_secs(5),
            redis_key_prefix: String::new(),
            admin_token: None,
            cookie_secret: None,
            cookie_secure: false,
            strategy: Strategy::RedisThenDb,
            allow_strategy_override: false,
            order_rate_per_second: 10,
            order_rate_burst: 20,
            hold_ttl: Duration::from_secs(30),
            sold_out_memo: Duration::from_millis(100),
            reaper_interval: Duration::from_secs(1),
            reconcile_interval: Duration::from_secs(30),
            idempotency_ttl: Duration::from_secs(24 * 60 * 60),
            ledger_max_attempts: 8,
            ledger_backoff_base: Duration::from_millis(2),
            ledger_backoff_cap: Duration::from_millis(100),
            ledger_batch_max: 128,
            seed_demo_items: true,
            log_format: LogFormat::Text,
        }
    }

    /// Reads `.env` (if present) and the environment.
    ///
    /// # Errors
    /// The first invalid variable, named, with what was wrong.
    pub fn from_env() -> anyhow::Result<Self> {
        // A missing .env is normal; a malformed one is reported.
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => return Err(e).context("reading .env"),
        }
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds a config from any variable source (the environment, or a map in
    /// tests), starting from [`Config::embedded`].
    ///
    /// # Errors
    /// The first invalid variable, named, with what was wrong.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut config = Self::embedded();

        if let Some(raw) = var("LEPTOS_SITE_ADDR") {
            config.site_addr = parse_var(
                "LEPTOS_SITE_ADDR",
                &raw,
                |v| v.parse().ok(),
                "an address such as 127.0.0.1:3000",
            )?;
        }
        if let Some(raw) = var("MAX_CONNECTIONS") {
            config.max_connections = parse_var(
                "MAX_CONNECTIONS",
                &raw,
                |v| v.parse().ok().filter(|n| (1..=1_000_000).contains(n)),
                "an integer from 1 to 1000000",
            )?;
        }
        if let Some(raw) = var("DATABASE_URL") {
            let known = [
                "sqlite:",
                "postgres://",
                "postgresql://",
                "mysql://",
                "mariadb://",
            ];
            if !known.iter().any(|p| raw.starts_with(p)) {
                anyhow::bail!(
                    "invalid DATABASE_URL: expected a sqlite:, postgres:// or mysql:// URL, got {:?}",
                    redact_url(&raw)
                );
            }
            config.database_url = raw.replacen("mariadb://", "mysql://", 1);
        }
        if let Some(raw) = var("DATABASE_MAX_CONNECTIONS") {
            config.database_max_connections = parse_var(
                "DATABASE_MAX_CONNECTIONS",
                &raw,
                |v| v.parse().ok().filter(|n| (1..=1000).contains(n)),
                "an integer from 1 to 1000",
            )?;
        }
        config.redis = match (var("REDIS_URL"), var("REDIS_CLUSTER_NODES")) {
            (Some(_), Some(_)) => anyhow::bail!("set REDIS_URL or REDIS_CLUSTER_NODES, not both"),
            (Some(url), None) => {
                check_redis_url("REDIS_URL", &url)?;
                RedisTarget::Single(url)
            }
            (None, Some(nodes)) => {
                let nodes: Vec<String> = nodes
                    .split(',')
                    .map(|n| n.trim().to_owned())
                    .filter(|n| !n.is_empty())
                    .collect();
                if nodes.is_empty() {
                    anyhow::bail!("invalid REDIS_CLUSTER_NODES: no node given");
                }
                for node in &nodes {
                    check_redis_url("REDIS_CLUSTER_NODES", node)?;
                }
                RedisTarget::Cluster(nodes)
            }
            (None, None) => RedisTarget::None,
        };
        if let Some(raw) = var("REDIS_TIMEOUT_MS") {
            config.redis_timeout = parse_millis("REDIS_TIMEOUT_MS", &raw, 10, 60_000)?;
        }
        if let Some(raw) = var("BREAKER_FAILURE_THRESHOLD") {
            config.breaker_failure_threshold = parse_var(
                "BREAKER_FAILURE_THRESHOLD",
                &raw,
                |v| v.parse().ok().filter(|n| (1..=1000).contains(n)),
                "an integer from 1 to 1000",
            )?;
        }
        if let Some(raw) = var("BREAKER_COOLDOWN_MS") {
            config.breaker_cooldown = parse_millis("BREAKER_COOLDOWN_MS", &raw, 10, 600_000)?;
        }
        if let Some(prefix) = var("REDIS_KEY_PREFIX") {
            if prefix.contains(['{', '}']) || prefix.chars().any(char::is_whitespace) {
                anyhow::bail!(
                    "invalid REDIS_KEY_PREFIX: braces and spaces are not allowed (braces would break hash tags)"
                );
            }
            config.redis_key_prefix = prefix;
        }
        if let Some(token) = var("ADMIN_TOKEN") {
            if token.len() < 8 {
                anyhow::bail!("invalid ADMIN_TOKEN: use at least 8 characters");
            }
            config.admin_token = Some(token);
        }
        if let Some(secret) = var("COOKIE_SECRET") {
            if secret.len() < 32 {
                anyhow::bail!("invalid COOKIE_SECRET: use at least 32 bytes");
            }
            config.cookie_secret = Some(secret);
        }
        if let Some(raw) = var("COOKIE_SECURE") {
            config.cookie_secure = parse_bool("COOKIE_SECURE", &raw)?;
        }
        if let Some(raw) = var("ORDER_STRATEGY") {
            config.strategy = parse_var("ORDER_STRATEGY", &raw, Strategy::parse, "redis+db or db")?;
        }
        if let Some(raw) = var("ALLOW_STRATEGY_OVERRIDE") {
            config.allow_strategy_override = parse_bool("ALLOW_STRATEGY_OVERRIDE", &raw)?;
        }
        if let Some(raw) = var("ORDER_RATE_PER_SECOND") {
            config.order_rate_per_second = parse_var(
                "ORDER_RATE_PER_SECOND",
                &raw,
                |v| v.parse().ok().filter(|n| (1..=1_000_000).contains(n)),
                "an integer from 1 to 1000000",
            )?;
        }
        if let Some(raw) = var("ORDER_RATE_BURST") {
            config.order_rate_burst = parse_var(
                "ORDER_RATE_BURST",
                &raw,
                |v| v.parse().ok().filter(|n| (1..=1_000_000).contains(n)),
                "an integer from 1 to 1000000",
            )?;
        }
        if let Some(raw) = var("HOLD_TTL_MS") {
            config.hold_ttl = parse_millis("HOLD_TTL_MS", &raw, 100, 3_600_000)?;
        }
        if let Some(raw) = var("SOLD_OUT_MEMO_MS") {
            config.sold_out_memo = parse_millis("SOLD_OUT_MEMO_MS", &raw, 0, 10_000)?;
        }
        if let Some(raw) = var("REAPER_INTERVAL_MS") {
            config.reaper_interval = parse_millis("REAPER_INTERVAL_MS", &raw, 10, 3_600_000)?;
        }
        if let Some(raw) = var("RECONCILE_INTERVAL_MS") {
            config.reconcile_interval =
                parse_millis("RECONCILE_INTERVAL_MS", &raw, 100, 86_400_000)?;
        }
        if let Some(raw) = var("IDEMPOTENCY_TTL_SECS") {
            let secs: u64 = parse_var(
                "IDEMPOTENCY_TTL_SECS",
                &raw,
                |v| v.parse().ok().filter(|n| (60..=30 * 86_400).contains(n)),
                "seconds from 60 to 2592000",
            )?;
            config.idempotency_ttl = Duration::from_secs(secs);
        }
        if let Some(raw) = var("LEDGER_MAX_ATTEMPTS") {
            config.ledger_max_attempts = parse_var(
                "LEDGER_MAX_ATTEMPTS",
                &raw,
                |v| v.parse().ok().filter(|n| (1..=100).contains(n)),
                "an integer from 1 to 100",
            )?;
        }
        if let Some(raw) = var("LEDGER_BACKOFF_BASE_MS") {
            config.ledger_backoff_base = parse_millis("LEDGER_BACKOFF_BASE_MS", &raw, 0, 10_000)?;
        }
        if let Some(raw) = var("LEDGER_BACKOFF_CAP_MS") {
            config.ledger_backoff_cap = parse_millis("LEDGER_BACKOFF_CAP_MS", &raw, 0, 60_000)?;
        }
        if config.ledger_backoff_cap < config.ledger_backoff_base {
            anyhow::bail!(
                "invalid LEDGER_BACKOFF_CAP_MS: must not be below LEDGER_BACKOFF_BASE_MS"
            );
        }
        if let Some(raw) = var("LEDGER_BATCH_MAX") {
            config.ledger_batch_max = parse_var(
                "LEDGER_BATCH_MAX",
                &raw,
                |v| v.parse().ok().filter(|n| (1..=1000).contains(n)),
                "an integer from 1 to 1000",
            )?;
        }
        if let Some(raw) = var("SEED_DEMO_ITEMS") {
            config.seed_demo_items = parse_bool("SEED_DEMO_ITEMS", &raw)?;
        }
        if let Some(raw) = var("LOG_FORMAT") {
            config.log_format = parse_var(
                "LOG_FORMAT",
                &raw,
                |v| match v.to_ascii_lowercase().as_str() {
                    "text" => Some(LogFormat::Text),
                    "json" => Some(LogFormat::Json),
                    _ => None,
                },
                "text or json",
            )?;
        }
        Ok(config)
    }

    /// The database URL with any password replaced, for logs.
    pub fn database_url_redacted(&self) -> String {
        redact_url(&self.database_url)
    }
}

fn parse_var<T>(
    name: &str,
    raw: &str,
    parse: impl Fn(&str) -> Option<T>,
    expected: &str,
) -> anyhow::Result<T> {
    parse(raw.trim())
        .ok_or_else(|| anyhow::anyhow!("invalid {name}: expected {expected}, got {raw:?}"))
}

fn parse_bool(name: &str, raw: &str) -> anyhow::Result<bool> {
    parse_var(
        name,
        raw,
        |v| match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Some(true),
            "0" | "false" | "no" | "off" => Some(false),
            _ => None,
        },
        "true or false",
    )
}

fn parse_millis(name: &str, raw: &str, min: u64, max: u64) -> anyhow::Result<Duration> {
    let expected = format!("milliseconds from {min} to {max}");
    parse_var(
        name,
        raw,
        |v| v.parse().ok().filter(|n| (min..=max).contains(n)),
        &expected,
    )
    .map(Duration::from_millis)
}

fn check_redis_url(name: &str, url: &str) -> anyhow::Result<()> {
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        Ok(())
    } else {
        anyhow::bail!(
            "invalid {name}: expected redis:// URLs, got {:?}",
            redact_url(url)
        )
    }
}

/// Hides the password of `scheme://user:password@host/...`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> anyhow::Result<Config> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn no_variables_mean_the_embedded_default() {
        let config = from(&[]).expect("valid");
        assert!(config.database_url.starts_with("sqlite:"));
        assert_eq!(config.redis, RedisTarget::None);
        assert_eq!(config.strategy, Strategy::RedisThenDb);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("LEPTOS_SITE_ADDR", "nowhere"),
            ("DATABASE_URL", "oracle://x"),
            ("REDIS_URL", "http://localhost"),
            ("ORDER_STRATEGY", "fastest"),
            ("HOLD_TTL_MS", "-5"),
            ("SOLD_OUT_MEMO_MS", "60000"),
            ("COOKIE_SECRET", "short"),
            ("REDIS_KEY_PREFIX", "a{b}"),
            ("SEED_DEMO_ITEMS", "maybe"),
        ] {
            let err = from(&[(name, value)]).expect_err(name).to_string();
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn redis_single_and_cluster_are_exclusive() {
        assert!(
            from(&[
                ("REDIS_URL", "redis://a"),
                ("REDIS_CLUSTER_NODES", "redis://b")
            ])
            .is_err()
        );
        let config = from(&[("REDIS_CLUSTER_NODES", "redis://a:1, redis://b:2")]).expect("valid");
        assert_eq!(
            config.redis,
            RedisTarget::Cluster(vec!["redis://a:1".into(), "redis://b:2".into()])
        );
    }

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db/shop"),
            "postgres://app:***@db/shop"
        );
        let err = from(&[("DATABASE_URL", "oracle://app:s3cret@db")])
            .expect_err("bad")
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn strategies_parse_both_spellings() {
        assert_eq!(Strategy::parse("redis+db"), Some(Strategy::RedisThenDb));
        assert_eq!(Strategy::parse("DB"), Some(Strategy::DbOnly));
        assert_eq!(Strategy::parse("redis"), None);
    }
}
