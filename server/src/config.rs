//! Configuration from the environment (and an optional `.env`), validated
//! once at start: a bad value stops the server with a message naming the
//! variable, never a panic later on a request path.
//!
//! One group per concern ([`HttpConfig`], [`DatabaseConfig`],
//! [`RedisConfig`], [`BreakerConfig`], [`ReservationConfig`],
//! [`LedgerConfig`], [`OrdersConfig`], [`PaymentsConfig`],
//! [`SessionConfig`], [`TelemetryConfig`]), each read by its own `read`, in which every
//! variable is named once, with its default and its range. The embedded
//! default is what an empty environment reads as.
//!
//! The variables are documented in the README; they are a contract with
//! outside clients and stay stable.

use crate::orders::ledger::versioned::Backoff;
use crate::orders::strategy::Strategy;
use anyhow::Context;
use std::fmt::Display;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub breaker: BreakerConfig,
    pub reservation: ReservationConfig,
    pub ledger: LedgerConfig,
    pub orders: OrdersConfig,
    pub payments: PaymentsConfig,
    pub sessions: SessionConfig,
    pub telemetry: TelemetryConfig,
}

/// The HTTP listener and what it lets in.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// `LEPTOS_SITE_ADDR`: where the server listens.
    pub site_addr: SocketAddr,
    /// `MAX_CONNECTIONS`: HTTP connections served at once; more wait in the
    /// kernel's backlog, which keeps memory bounded under a flood.
    pub max_connections: usize,
    /// `ORDER_RATE_PER_SECOND` and `ORDER_RATE_BURST`: order attempts one
    /// buyer may make (a token bucket per buyer, per instance).
    pub order_rate_per_second: u32,
    pub order_rate_burst: u32,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `DATABASE_URL`: `sqlite:`, `postgres://` or `mysql://`.
    pub url: String,
    /// `DATABASE_MAX_CONNECTIONS`: the pool size.
    pub max_connections: u32,
    /// `SEED_DEMO_ITEMS`: seed a few items into an empty database.
    pub seed_demo_items: bool,
}

/// Where reservations live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// The in-process store: the embedded default.
    None,
    Single(String),
    Cluster(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `REDIS_URL` or `REDIS_CLUSTER_NODES`; neither means in-process.
    pub target: RedisTarget,
    /// `REDIS_TIMEOUT_MS`: how long one Redis call may take before it
    /// counts as failed (the order then answers 503 and its hold is released).
    pub timeout: Duration,
    /// `REDIS_KEY_PREFIX`: put before every key, so several deployments (or
    /// tests) can share one Redis. Braces are refused: they would move keys
    /// out of their item's hash slot.
    pub key_prefix: String,
}

/// The circuit breaker around Redis.
#[derive(Debug, Clone)]
pub struct BreakerConfig {
    /// `BREAKER_FAILURE_THRESHOLD`: Redis failures in a row that open it.
    pub failure_threshold: u32,
    /// `BREAKER_COOLDOWN_MS`: how long it stays open before a probe.
    pub cooldown: Duration,
}

#[derive(Debug, Clone)]
pub struct ReservationConfig {
    /// `HOLD_TTL_MS`: how long a reservation holds stock before the reaper
    /// gives it back.
    pub hold_ttl: Duration,
    /// `SOLD_OUT_MEMO_MS`: how long this instance remembers that an item
    /// has no unit left and refuses orders for it without asking the
    /// reservation store (0: always ask). Units given back by another
    /// instance or the reaper are offered again after at most this long.
    pub sold_out_memo: Duration,
    /// `REAPER_INTERVAL_MS`.
    pub reaper_interval: Duration,
    /// `RECONCILE_INTERVAL_MS`: how often counters are compared with the
    /// database and repaired.
    pub reconcile_interval: Duration,
    /// `ADMISSION_INTERVAL_MS`: how often waiting rooms let buyers in.
    pub admission_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// `LEDGER_MAX_ATTEMPTS`, `LEDGER_BACKOFF_BASE_MS`, `LEDGER_BACKOFF_CAP_MS`:
    /// versioned-update retries before `stock_conflict`.
    pub backoff: Backoff,
    /// `LEDGER_BATCH_MAX`: most orders of one item written in one
    /// transaction (write coalescing); 1 writes every order on its own.
    pub batch_max: usize,
}

#[derive(Debug, Clone)]
pub struct OrdersConfig {
    /// `ORDER_STRATEGY`: `redis+db` (default) or `db`.
    pub strategy: Strategy,
    /// `ALLOW_STRATEGY_OVERRIDE`: let `POST /api/orders` pick the strategy
    /// per request with `X-Order-Strategy` (for A/B benchmarks). Off by default.
    pub allow_strategy_override: bool,
    /// `IDEMPOTENCY_TTL_SECS`: how long an outcome is kept for replays.
    pub idempotency_ttl: Duration,
}

/// Who takes the buyers' money.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentProvider {
    /// A real provider (unnamed: it only has to send signed webhooks).
    External,
    /// `demo`: this server's own checkout page, which sends the webhook a
    /// real provider would (for the embedded default and demos).
    Demo,
}

/// The payment deadline. Off (`window: None`) unless `PAYMENT_WINDOW_SECS`
/// is set: orders are then final at once, status `confirmed`.
#[derive(Debug, Clone)]
pub struct PaymentsConfig {
    /// `PAYMENT_WINDOW_SECS`: how long a buyer has to pay a new order.
    pub window: Option<Duration>,
    /// `PAYMENT_PROVIDER`: `demo`, or unset for a real provider.
    pub provider: PaymentProvider,
    /// `PAYMENT_WEBHOOK_SECRET`, at least 16 bytes: signs webhooks. Required
    /// with a window and a real provider; with the demo provider, unset
    /// means a secret generated once and kept in the database.
    pub webhook_secret: Option<String>,
    /// `PAYMENT_REAPER_INTERVAL_MS`: how often unpaid orders past their
    /// deadline are expired.
    pub reaper_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// `ADMIN_TOKEN`; `None` when unset (then a random one is generated and
    /// logged once at start).
    pub admin_token: Option<String>,
    /// `COOKIE_SECRET`, at least 32 bytes; `None` means the secret kept in
    /// the database (generated on first start), which every instance that
    /// shares the database reads.
    pub cookie_secret: Option<String>,
    /// `COOKIE_SECURE`: mark the buyer cookie `Secure` (behind HTTPS).
    pub cookie_secure: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `LOG_FORMAT`: `text` or `json`.
    pub log_format: LogFormat,
}

impl Config {
    /// The embedded default: SQLite file, in-process reservations.
    pub fn embedded() -> Self {
        Self::from_lookup(|_| None)
            .unwrap_or_else(|e| unreachable!("the defaults are valid values: {e:#}"))
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

    /// Builds a config from any variable source (the environment, or a map
    /// in tests); unset variables take their defaults.
    ///
    /// # Errors
    /// The first invalid variable, named, with what was wrong.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let vars = Vars { lookup: &lookup };
        Ok(Self {
            http: HttpConfig::read(&vars)?,
            database: DatabaseConfig::read(&vars)?,
            redis: RedisConfig::read(&vars)?,
            breaker: BreakerConfig::read(&vars)?,
            reservation: ReservationConfig::read(&vars)?,
            ledger: LedgerConfig::read(&vars)?,
            orders: OrdersConfig::read(&vars)?,
            payments: PaymentsConfig::read(&vars)?,
            sessions: SessionConfig::read(&vars)?,
            telemetry: TelemetryConfig::read(&vars)?,
        })
    }
}

impl HttpConfig {
    fn read(vars: &Vars<'_>) -> anyhow::Result<Self> {
        Ok(Self {
            site_addr: vars.parsed(
                "LEPTOS_SITE_ADDR",
                SocketAddr::from(([127, 0, 0, 1], 3000)),
                "an address such as 127.0.0.1:3000",
                |v| v.parse().ok(),
            )?,
            max_connections: vars.integer("MAX_CONNECTIONS", 10_000, 1..=1_000_000)?,
            order_rate_per_second: vars.integer("ORDER_RATE_PER_SECOND", 10, 1..=1_000_000)?,
            order_rate_burst: vars.integer("ORDER_RATE_BURST", 20, 1..=1_000_000)?,
        })
    }
}

impl DatabaseConfig {
    fn read(vars: &Vars<'_>) -> anyhow::Result<Self> {
        let url = match vars.raw("DATABASE_URL") {
            None => "sqlite://oversell-guard.sqlite3".to_owned(),
            Some(raw) => {
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
                raw.replacen("mariadb://", "mysql://", 1)
            }
        };
        Ok(Self {
            url,
            max_connections: vars.integer("DATABASE_MAX_CONNECTIONS", 16, 1..=1000)?,
            seed_demo_items: vars.flag("SEED_DEMO_ITEMS", true)?,
        })
    }

    /// The database URL with any password replaced, for logs.
    pub fn url_redacted(&self) -> String {
        redact_url(&self.url)
    }
}

impl RedisConfig {
    fn read(vars: &Vars<'_>) -> anyhow::Result<Self> {
        let target = match (vars.raw("REDIS_URL"), vars.raw("REDIS_CLUSTER_NODES")) {
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
        let key_prefix = vars.raw("REDIS_KEY_PREFIX").unwrap_or_default();
        if key_prefix.contains(['{', '}']) || key_prefix.chars().any(char::is_whitespace) {
            anyhow::bail!(
                "invalid REDIS_KEY_PREFIX: braces and spaces are not allowed (braces would break hash tags)"
            );
        }
        Ok(Self {
            target,
            timeout: vars.millis("REDIS_TIMEOUT_MS", 500, 10..=60_000)?,
            key_prefix,
        })
    }
}

impl BreakerConfig {
    fn read(vars: &Vars<'_>) -> anyhow::Result<Self> {
        Ok(Self {
            failure_threshold: vars.integer("BREAKER_FAILURE_THRESHOLD", 5, 1..=1000)?,
            cooldown: vars.millis("BREAKER_COOLDOWN_MS", 5_000, 10..=600_000)?,
        })
    }
}

impl ReservationConfig {
    fn read(vars: &Vars<'_>) -> anyhow::Result<Self> {
        Ok(Self {
            hold_ttl: vars.millis("HOLD_TTL_MS", 30_000, 100..=3_600_000)?,
            sold_out_memo: vars.millis("SOLD_OUT_MEMO_MS", 100, 0..=10_000)?,
            reaper_interval: vars.millis("REAPER_INTERVAL_MS", 1_000, 10..=3_600_000)?,
            reconcile_interval: vars.millis("RECONCILE_INTERVAL_MS", 30_000, 100..=86_400_000)?,
            admission_interval: vars.millis("ADMISSION_INTERVAL_MS", 100, 10..=10_000)?,
        })
    }
}

impl LedgerConfig {
    fn read(vars: &Vars<'_>) -> anyhow::Result<Self> {
        let backoff = Backoff {
            max_attempts: vars.integer("LEDGER_MAX_ATTEMPTS", 8, 1..=100)?,
            base: vars.millis("LEDGER_BACKOFF_BASE_MS", 2, 0..=10_000)?,
            cap: vars.millis("LEDGER_BACKOFF_CAP_MS", 100, 0..=60_000)?,
        };
        if backoff.cap < backoff.base {
            anyhow::bail!(
                "invalid LEDGER_BACKOFF_CAP_MS: must not be below LEDGER_BACKOFF_BASE_MS"
            );
        }
        Ok(Self {
            backoff,
            batch_max: vars.integer("LEDGER_BATCH_MAX", 128, 1..=1000)?,
        })
    }
}

impl OrdersConfig {
    fn read(vars: &Vars<'_>) -> anyhow::Result<Self> {
        Ok(Self {
            strategy: vars.parsed(
                "ORDER_STRATEGY",
                Strategy::ReserveFirst,
                "redis+db or db",
                Strategy::from_label,
            )?,
            allow_strategy_override: vars.flag("ALLOW_STRATEGY_OVERRIDE", false)?,
            idempotency_ttl: Duration::from_secs(vars.integer(
                "IDEMPOTENCY_TTL_SECS",
                86_400,
                60..=30 * 86_400,
            )?),
        })
    }
}

impl PaymentsConfig {
    fn read(vars: &Vars<'_>) -> anyhow::Result<Self> {
        let window = vars
            .optional_integer("PAYMENT_WINDOW_SECS", 1..=7 * 86_400)?
            .map(Duration::from_secs);
        let provider = vars.parsed(
            "PAYMENT_PROVIDER",
            PaymentProvider::External,
            "demo, or unset for a real provider",
            |v| (v.eq_ignore_ascii_case("demo")).then_some(PaymentProvider::Demo),
        )?;
        let webhook_secret = vars.secret("PAYMENT_WEBHOOK_SECRET", 16, "bytes")?;
        match (window, provider, &webhook_secret) {
            (None, PaymentProvider::Demo, _) => anyhow::bail!(
                "invalid PAYMENT_PROVIDER: demo needs PAYMENT_WINDOW_SECS (without a window orders are final and nothing is paid)"
            ),
            (Some(_), PaymentProvider::External, None) => anyhow::bail!(
                "PAYMENT_WEBHOOK_SECRET is required with PAYMENT_WINDOW_SECS (or set PAYMENT_PROVIDER=demo)"
            ),
            _ => {}
        }
        Ok(Self {
            window,
            provider,
            webhook_secret,
            reaper_interval: vars.millis("PAYMENT_REAPER_INTERVAL_MS", 1_000, 10..=3_600_000)?,
        })
    }
}

impl SessionConfig {
    fn read(vars: &Vars<'_>) -> anyhow::Result<Self> {
        Ok(Self {
            admin_token: vars.secret("ADMIN_TOKEN", 8, "characters")?,
            cookie_secret: vars.secret("COOKIE_SECRET", 32, "bytes")?,
            cookie_secure: vars.flag("COOKIE_SECURE", false)?,
        })
    }
}

impl TelemetryConfig {
    fn read(vars: &Vars<'_>) -> anyhow::Result<Self> {
        Ok(Self {
            log_format: vars.parsed("LOG_FORMAT", LogFormat::Text, "text or json", |v| match v
                .to_ascii_lowercase()
                .as_str()
            {
                "text" => Some(LogFormat::Text),
                "json" => Some(LogFormat::Json),
                _ => None,
            })?,
        })
    }
}

/// The variable source, read one named variable at a time; a blank value
/// counts as unset.
struct Vars<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Vars<'_> {
    fn raw(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
    }

    /// The variable read by `parse`, or `default` when unset.
    fn parsed<T>(
        &self,
        name: &str,
        default: T,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> anyhow::Result<T> {
        match self.raw(name) {
            None => Ok(default),
            Some(raw) => parse(raw.trim())
                .ok_or_else(|| anyhow::anyhow!("invalid {name}: expected {expected}, got {raw:?}")),
        }
    }

    fn integer<T>(&self, name: &str, default: T, range: RangeInclusive<T>) -> anyhow::Result<T>
    where
        T: FromStr + PartialOrd + Display,
    {
        let expected = format!("an integer from {} to {}", range.start(), range.end());
        self.parsed(name, default, &expected, |v| {
            v.parse().ok().filter(|n| range.contains(n))
        })
    }

    /// An integer that may be unset (`None`), in `range` when set.
    fn optional_integer<T>(&self, name: &str, range: RangeInclusive<T>) -> anyhow::Result<Option<T>>
    where
        T: FromStr + PartialOrd + Display,
    {
        let expected = format!("an integer from {} to {}", range.start(), range.end());
        self.parsed(name, None, &expected, |v| {
            v.parse().ok().filter(|n| range.contains(n)).map(Some)
        })
    }

    fn millis(
        &self,
        name: &str,
        default_ms: u64,
        range: RangeInclusive<u64>,
    ) -> anyhow::Result<Duration> {
        let expected = format!("milliseconds from {} to {}", range.start(), range.end());
        self.parsed(name, default_ms, &expected, |v| {
            v.parse().ok().filter(|n| range.contains(n))
        })
        .map(Duration::from_millis)
    }

    fn flag(&self, name: &str, default: bool) -> anyhow::Result<bool> {
        self.parsed(name, default, "true or false", |v| {
            match v.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Some(true),
                "0" | "false" | "no" | "off" => Some(false),
                _ => None,
            }
        })
    }

    /// A secret of at least `min_len` bytes; its value never appears in an
    /// error.
    fn secret(&self, name: &str, min_len: usize, unit: &str) -> anyhow::Result<Option<String>> {
        match self.raw(name) {
            Some(secret) if secret.len() < min_len => {
                anyhow::bail!("invalid {name}: use at least {min_len} {unit}")
            }
            other => Ok(other),
        }
    }
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
        assert!(config.database.url.starts_with("sqlite:"));
        assert_eq!(config.redis.target, RedisTarget::None);
        assert_eq!(config.orders.strategy, Strategy::ReserveFirst);
        assert_eq!(config.http.site_addr.port(), 3000);
        assert_eq!(config.reservation.sold_out_memo, Duration::from_millis(100));
        assert_eq!(config.ledger.backoff.max_attempts, 8);
        assert_eq!(config.orders.idempotency_ttl, Duration::from_secs(86_400));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("LEPTOS_SITE_ADDR", "nowhere"),
            ("MAX_CONNECTIONS", "0"),
            ("DATABASE_URL", "oracle://x"),
            ("DATABASE_MAX_CONNECTIONS", "1001"),
            ("REDIS_URL", "http://localhost"),
            ("REDIS_TIMEOUT_MS", "5"),
            ("BREAKER_FAILURE_THRESHOLD", "many"),
            ("ORDER_STRATEGY", "fastest"),
            ("HOLD_TTL_MS", "-5"),
            ("SOLD_OUT_MEMO_MS", "60000"),
            ("IDEMPOTENCY_TTL_SECS", "59"),
            ("LEDGER_BATCH_MAX", "0"),
            ("COOKIE_SECRET", "short"),
            ("ADMIN_TOKEN", "short"),
            ("REDIS_KEY_PREFIX", "a{b}"),
            ("SEED_DEMO_ITEMS", "maybe"),
            ("LOG_FORMAT", "xml"),
            ("PAYMENT_WINDOW_SECS", "0"),
            ("PAYMENT_PROVIDER", "stripe"),
            ("PAYMENT_REAPER_INTERVAL_MS", "5"),
        ] {
            let err = from(&[(name, value)]).expect_err(name).to_string();
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn payments_are_off_unless_a_window_is_set() {
        let config = from(&[]).expect("valid");
        assert_eq!(config.payments.window, None);
        assert_eq!(config.payments.reaper_interval, Duration::from_secs(1));
        let demo = from(&[("PAYMENT_WINDOW_SECS", "300"), ("PAYMENT_PROVIDER", "demo")])
            .expect("the demo provider keeps its secret in the database");
        assert_eq!(demo.payments.window, Some(Duration::from_secs(300)));
        assert_eq!(demo.payments.provider, PaymentProvider::Demo);
        assert_eq!(demo.payments.webhook_secret, None);
    }

    #[test]
    fn a_real_provider_needs_a_webhook_secret_and_demo_needs_a_window() {
        let err = from(&[("PAYMENT_WINDOW_SECS", "300")])
            .expect_err("no secret")
            .to_string();
        assert!(err.contains("PAYMENT_WEBHOOK_SECRET"), "{err}");
        let err = from(&[
            ("PAYMENT_WINDOW_SECS", "300"),
            ("PAYMENT_WEBHOOK_SECRET", "whsec_short"),
        ])
        .expect_err("too short")
        .to_string();
        assert!(!err.contains("whsec_short"), "{err}");
        assert!(
            from(&[
                ("PAYMENT_WINDOW_SECS", "300"),
                ("PAYMENT_WEBHOOK_SECRET", "whsec_0123456789abcdef"),
            ])
            .is_ok()
        );
        let err = from(&[("PAYMENT_PROVIDER", "demo")])
            .expect_err("no window")
            .to_string();
        assert!(err.contains("PAYMENT_WINDOW_SECS"), "{err}");
    }

    #[test]
    fn the_backoff_cap_may_not_be_below_its_base() {
        let err = from(&[
            ("LEDGER_BACKOFF_BASE_MS", "50"),
            ("LEDGER_BACKOFF_CAP_MS", "10"),
        ])
        .expect_err("cap below base")
        .to_string();
        assert!(err.contains("LEDGER_BACKOFF_CAP_MS"), "{err}");
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
            config.redis.target,
            RedisTarget::Cluster(vec!["redis://a:1".into(), "redis://b:2".into()])
        );
    }

    #[test]
    fn passwords_and_secrets_never_reach_the_logs() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db/shop"),
            "postgres://app:***@db/shop"
        );
        let err = from(&[("DATABASE_URL", "oracle://app:s3cret@db")])
            .expect_err("bad")
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
        let err = from(&[("COOKIE_SECRET", "hunter2")])
            .expect_err("short")
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn blank_values_count_as_unset() {
        let config = from(&[("HOLD_TTL_MS", "  "), ("REDIS_URL", "")]).expect("valid");
        assert_eq!(config.reservation.hold_ttl, Duration::from_secs(30));
        assert_eq!(config.redis.target, RedisTarget::None);
    }
}
