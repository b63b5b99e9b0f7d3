//! Micro-benchmarks of the two layers an order crosses, kept out of the test
//! suite: `cargo bench -p server --bench layers`.
//!
//! - `reserve` round trip (the Lua script by EVALSHA) against the local Redis,
//!   and the same call on the in-process store;
//! - `ledger` write (versioned UPDATE + order INSERT in one transaction) on
//!   the local PostgreSQL and MariaDB and on a SQLite file, and on SQLite
//!   with `synchronous = FULL` (what the server uses) against `NORMAL`.
//!
//! - the cost of metrics on the order path: the metric calls one order makes,
//!   and the whole sold-out fast path (Redis idempotency claim + reserve)
//!   through the pipeline, each with the recorder and with no-op handles;
//!   and that path once the sold-out memo answers (one round trip).
//!
//! Each prints mean, p50, p99 and max from an HDR histogram. Set
//! `BENCH_ITERATIONS` (default 5000) to change the sample size.

use app::domain::{BuyerId, IdempotencyKey, ItemId, Quantity};
use app::model::OrderRequest;
use hdrhistogram::Histogram;
use server::config::RedisTarget;
use server::db::{Database, items};
use server::metrics::Metrics;
use server::orders::ledger::versioned::{Backoff, Ledger};
use server::orders::ledger::{LedgerOrder, LedgerWrite};
use server::redis_conn::RedisConn;
use server::reservation::memory::InProcessStore;
use server::reservation::redis::RedisStore;
use server::reservation::{CounterSeed, Hold, HoldDeadline, HoldToken, ReservationStore};
use sqlx::{Connection, Executor};
use std::time::{Duration, Instant};

/// The ledger's retry policy in every bench: quick, since nothing contends.
fn bench_backoff() -> Backoff {
    Backoff {
        max_attempts: 8,
        base: Duration::from_millis(1),
        cap: Duration::from_millis(20),
    }
}

fn iterations() -> u64 {
    std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000)
}

fn report(name: &str, histogram: &Histogram<u64>) {
    let us = |v: u64| v as f64 / 1_000.0;
    println!(
        "{name:<34} n={:<6} mean={:>8.1} µs  p50={:>8.1} µs  p99={:>8.1} µs  max={:>9.1} µs",
        histogram.len(),
        histogram.mean() / 1_000.0,
        us(histogram.value_at_quantile(0.50)),
        us(histogram.value_at_quantile(0.99)),
        us(histogram.max()),
    );
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

fn buyer(n: u64) -> BuyerId {
    BuyerId::parse(&format!("00000000-0000-4000-8000-{n:012}")).expect("buyer")
}

async fn bench_reserve(name: &str, store: &dyn ReservationStore) {
    let item = ItemId::new(1).expect("item");
    let n = iterations();
    store
        .load(
            item,
            CounterSeed {
                stock: i64::try_from(n).unwrap_or(i64::MAX),
                version: 0,
                max_per_buyer: None,
                terms: Default::default(),
            },
            &[],
        )
        .await
        .expect("load");
    let mut reserve = histogram();
    let mut confirm = histogram();
    for i in 0..n {
        let buyer = buyer(i);
        let key = IdempotencyKey::parse(&format!("bench-{i}")).expect("key");
        let hold = Hold {
            token: HoldToken::new(&buyer, &key),
            buyer,
            qty: Quantity::ONE,
            deadline: HoldDeadline::at_ms(server::db::now_ms() + 30_000),
            pass: None,
        };
        let started = Instant::now();
        store.reserve(item, &hold).await.expect("reserve");
        reserve
            .record(started.elapsed().as_nanos() as u64)
            .expect("record");
        let started = Instant::now();
        store.confirm(item, &hold.token).await.expect("confirm");
        confirm
            .record(started.elapsed().as_nanos() as u64)
            .expect("record");
    }
    report(&format!("{name} reserve"), &reserve);
    report(&format!("{name} confirm"), &confirm);
}

async fn bench_ledger(name: &str, url: &str) {
    let db = Database::connect(url, 4).await.expect("connect");
    bench_ledger_on(name, db).await;
}

/// SQLite syncs every commit (`synchronous = FULL`) so an order answered
/// 201 survives a power cut; this measures what that costs against
/// `NORMAL`, on one connection each (SQLite has one writer anyway).
async fn bench_sqlite_sync_cost(dir: &std::path::Path) {
    for (mode, file) in [("FULL", "full"), ("NORMAL", "normal")] {
        let url = format!("sqlite://{}/sync-{file}.sqlite3", dir.display());
        let db = Database::connect(&url, 1).await.expect("connect");
        sqlx::query(&format!("PRAGMA synchronous = {mode}"))
            .execute(db.pool())
            .await
            .expect("pragma");
        bench_ledger_on(&format!("sqlite synchronous={mode}"), db).await;
    }
}

async fn bench_ledger_on(name: &str, db: Database) {
    let n = iterations().min(2_000);
    let item = items::create(
        &db,
        &items::NewItem {
            title: "bench".into(),
            condition: "used".into(),
            seller: "bench".into(),
            price_cents: 100,
            stock: i64::try_from(n).unwrap_or(i64::MAX),
            max_per_buyer: None,
            terms: Default::default(),
        },
    )
    .await
    .expect("item");
    let ledger = Ledger::new(
        db.clone(),
        bench_backoff(),
        std::sync::Arc::new(Metrics::disabled()),
    );
    let mut writes = histogram();
    for i in 0..n {
        let order = LedgerOrder {
            buyer: buyer(i),
            key: IdempotencyKey::parse(&format!("ledger-{i}")).expect("key"),
            request: OrderRequest {
                item_id: item.id,
                qty: Quantity::ONE,
            },
            strategy: server::orders::strategy::Strategy::LedgerOnly,
            pass: None,
            reserved: false,
            commit_by: std::time::Instant::now() + server::records::COMMIT_WITHIN,
        };
        let started = Instant::now();
        ledger.write(order).await.expect("write");
        writes
            .record(started.elapsed().as_nanos() as u64)
            .expect("record");
    }
    report(&format!("{name} ledger write"), &writes);
    db.close().await;
}

/// The metric calls one order makes on its way through the pipeline.
fn record_one_order(metrics: &Metrics) {
    use server::metrics as m;
    let s = "redis+db";
    metrics
        .counter(m::IDEMPOTENCY, &[("result", "new"), ("strategy", s)])
        .increment(1);
    for stage in ["idempotency", "reserve", "ledger", "settle", "answer"] {
        metrics
            .histogram(m::STAGE_SECONDS, &[("stage", stage), ("strategy", s)])
            .record(0.0004);
    }
    metrics
        .counter(m::RESERVATIONS, &[("result", "ok"), ("strategy", s)])
        .increment(1);
    metrics
        .counter(m::DB_UPDATE_ATTEMPTS, &[("result", "ok"), ("strategy", s)])
        .increment(1);
    metrics
        .counter(m::CONFIRMS, &[("result", "hold_ended")])
        .increment(1);
    metrics
        .counter(m::ORDERS, &[("outcome", "created"), ("strategy", s)])
        .increment(1);
    metrics
        .histogram(m::ORDER_SECONDS, &[("strategy", s)])
        .record(0.002);
}

fn bench_metric_calls() {
    let n = iterations() * 20;
    for (name, metrics) in [
        ("recorder", Metrics::new().expect("metrics")),
        ("no-op", Metrics::disabled()),
    ] {
        let started = Instant::now();
        for _ in 0..n {
            record_one_order(&metrics);
        }
        let per_order = started.elapsed().as_nanos() as f64 / n as f64;
        println!(
            "{:<34} {per_order:>8.0} ns per order ({n} orders)",
            format!("metrics calls, {name}")
        );
    }
}

/// The sold-out fast path through the whole pipeline, wired as the server
/// wires it: metrics on and off, and with the sold-out memo (the first
/// order asks Redis, the rest do not). Buyers are welcomed first, as
/// `POST /api/session` does, so their claims are proven without the
/// database.
async fn bench_sold_out_path(conn: RedisConn, prefix: &str, db_url: &str) {
    use server::orders::Attempt;
    use server::orders::strategy::Strategy;
    use std::sync::Arc;
    let db = Database::connect(db_url, 2).await.expect("connect");
    let item = items::create(
        &db,
        &items::NewItem {
            title: "sold out".into(),
            condition: "used".into(),
            seller: "bench".into(),
            price_cents: 100,
            stock: 0,
            max_per_buyer: None,
            terms: Default::default(),
        },
    )
    .await
    .expect("item");
    for (name, metrics, memo) in [
        (
            "metrics on",
            Metrics::new().expect("metrics"),
            Duration::ZERO,
        ),
        ("metrics off", Metrics::disabled(), Duration::ZERO),
        (
            "memo, metrics on",
            Metrics::new().expect("metrics"),
            Duration::from_secs(60),
        ),
    ] {
        let namespace = name.replace([' ', ','], "-");
        let mut config = server::config::Config::embedded();
        config.redis.key_prefix = format!("{prefix}{namespace}:");
        config.reservation.sold_out_memo = memo;
        config.http.order_rate_per_second = 1_000_000;
        config.http.order_rate_burst = 1_000_000;
        let wired = server::startup::wire_pipeline(
            &config,
            &db,
            Some(&conn),
            &Arc::new(metrics),
            &Arc::new(server::hot_items::HotItems::new()),
        )
        .await
        .expect("wire the pipeline");
        let redis_records = wired.records.redis.clone().expect("redis records");
        let buyers: Vec<BuyerId> = (0..iterations()).map(buyer).collect();
        for buyer in &buyers {
            redis_records.mark_new_buyer(buyer).await.expect("welcome");
        }
        let mut latency = histogram();
        for (i, buyer) in buyers.into_iter().enumerate() {
            let attempt = Attempt {
                buyer,
                key: IdempotencyKey::parse(&format!("sold-out-{i}")).expect("key"),
                request: OrderRequest {
                    item_id: item.id,
                    qty: Quantity::ONE,
                },
                strategy: Strategy::ReserveFirst,
                pass: None,
            };
            let started = Instant::now();
            let placement = wired.pipeline.place(attempt).await;
            latency
                .record(started.elapsed().as_nanos() as u64)
                .expect("record");
            assert!(placement.result.is_err(), "sold out");
        }
        report(&format!("sold-out order, {name}"), &latency);
    }
    db.close().await;
}

/// Creates a throwaway database on a shared server and returns its URL.
async fn scratch_database(admin_url: &str, name: &str) -> Option<String> {
    let mut conn = sqlx::AnyConnection::connect(admin_url).await.ok()?;
    conn.execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
        .await
        .ok()?;
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .ok()?;
    let base = admin_url.rsplit_once('/').map(|(b, _)| b)?;
    Some(format!("{base}/{name}"))
}

async fn drop_database(admin_url: &str, name: &str) {
    if let Ok(mut conn) = sqlx::AnyConnection::connect(admin_url).await {
        let _ = conn
            .execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
            .await;
    }
}

#[tokio::main]
async fn main() {
    sqlx::any::install_default_drivers();
    let redis_url =
        std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("bench{}:", std::process::id());
    bench_metric_calls();
    let dir = tempfile::tempdir().expect("temp dir");
    match RedisConn::connect(
        &RedisTarget::Single(redis_url.clone()),
        Duration::from_millis(500),
    )
    .await
    {
        Ok(Some(conn)) => {
            let store = RedisStore::new(conn.clone(), prefix.clone());
            bench_reserve("redis", &store).await;
            let fast_path_db = format!("sqlite://{}/fast-path.sqlite3", dir.path().display());
            bench_sold_out_path(conn.clone(), &prefix, &fast_path_db).await;
            let mut raw = conn;
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query_async(&mut raw)
                .await
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<i64, _> = redis::cmd("DEL").arg(keys).query_async(&mut raw).await;
            }
        }
        _ => println!("redis: not reachable at {redis_url}, skipped"),
    }
    bench_reserve("in-process", &InProcessStore::new()).await;

    bench_ledger(
        "sqlite",
        &format!("sqlite://{}/bench.sqlite3", dir.path().display()),
    )
    .await;
    bench_sqlite_sync_cost(dir.path()).await;
    let name = format!("og_bench_{}", std::process::id());
    for (label, admin) in [
        (
            "postgres",
            std::env::var("TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
        ),
        (
            "mariadb",
            std::env::var("TEST_MYSQL_URL")
                .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into()),
        ),
    ] {
        match scratch_database(&admin, &name).await {
            Some(url) => {
                bench_ledger(label, &url).await;
                drop_database(&admin, &name).await;
            }
            None => println!("{label}: not reachable, skipped"),
        }
    }
}
