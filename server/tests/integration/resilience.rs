//! Whatever fails, never oversold, never charged twice: Redis down (the
//! breaker sends orders to the database), a Redis call that times out (503,
//! hold given back), the database down (503, holds given back, nothing
//! written).

use crate::harness::{Backend, PrivateRedis, Setup, TestApp, eventually, http_client, spawn_app};
use futures_util::future::join_all;
use server::config::Config;
use std::time::Duration;

async fn readiness(app: &TestApp) -> (u16, serde_json::Value) {
    let response = http_client()
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .expect("readyz");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_the_breaker_opens_and_orders_still_sell_exactly_the_stock() {
    let redis = PrivateRedis::start().await;
    let mut setup = Setup::redis(Backend::Postgres);
    setup.redis_url = Some(redis.url());
    setup.tweak = |c: &mut Config| {
        c.breaker.failure_threshold = 2;
        c.breaker.cooldown = Duration::from_millis(300);
        c.redis.timeout = Duration::from_millis(200);
    };
    let app = spawn_app(setup).await;
    let item = app.create_item(10, None).await;
    let first = app.buyer().await;
    assert_eq!(first.order(item.id, 1, "before").await.status, 201);

    let port = redis.kill();
    let buyers = join_all((0..14).map(|_| app.buyer())).await;
    let answers = join_all(buyers.iter().enumerate().map(|(n, b)| {
        let key = format!("down-{n}");
        async move { b.order_until_definite(item.id, 1, &key).await }
    }))
    .await;
    let created = answers.iter().filter(|a| a.status == 201).count();
    assert_eq!(created, 9, "the rest of the stock sold without Redis");
    assert!(
        answers
            .iter()
            .filter(|a| a.status != 201)
            .all(|a| a.code() == "sold_out")
    );
    assert_eq!(app.orders_in_db(&item).await, (10, 10));
    let (status, ready) = readiness(&app).await;
    assert_eq!(
        status, 200,
        "the database answers, so the shop is ready: {ready}"
    );
    assert_eq!(ready["checks"]["reservation"]["ok"], false);
    assert_ne!(ready["checks"]["redis_breaker"], "closed", "{ready}");
    let text = crate::harness::metrics_text(&app.base).await;
    assert!(
        !text.contains("oversell_redis_breaker_state 0\n"),
        "the gauge left closed"
    );

    // Redis comes back empty: the breaker closes on a probe and the counter
    // is reloaded from the database.
    let _redis = PrivateRedis::start_on(port).await;
    app.restock(&item, 5).await;
    let late = app.buyer().await;
    let closed = eventually(Duration::from_secs(10), || async {
        let (_, ready) = readiness(&app).await;
        let key = format!("after-{}", uuid::Uuid::new_v4());
        let _ = late.order_until_definite(item.id, 1, &key).await;
        ready["checks"]["redis_breaker"] == "closed"
    })
    .await;
    assert!(closed, "the breaker closed once Redis answered");
    let sold = app.orders_in_db(&item).await.1;
    let stock = app.item(item.id).await.stock;
    assert_eq!(sold + stock, 15, "ordered + left = initial + restock");
    let (counter, holds) = app.reservation_state(&item).await;
    assert_eq!(
        (counter, holds),
        (Some(stock), 0),
        "the counter agrees with the database again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_call_that_times_out_answers_503_and_gives_the_hold_back() {
    let redis = PrivateRedis::start().await;
    let mut setup = Setup::redis(Backend::Postgres);
    setup.redis_url = Some(redis.url());
    setup.tweak = |c: &mut Config| {
        c.redis.timeout = Duration::from_millis(150);
        c.breaker.failure_threshold = 100;
    };
    let app = spawn_app(setup).await;
    let item = app.create_item(5, None).await;
    let buyer = app.buyer().await;
    assert_eq!(buyer.order(item.id, 1, "warm").await.status, 201);

    let mut admin = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let sleep = tokio::spawn(async move {
        let _: Result<(), _> = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg("0.6")
            .query_async(&mut admin)
            .await;
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let slow = buyer.order(item.id, 1, "slow").await;
    assert_eq!((slow.status, slow.code()), (503, "unavailable"), "{slow:?}");
    assert_eq!(slow.body["retryable"], true);
    assert_eq!(slow.retry_after.as_deref(), Some("1"));
    let _ = sleep.await;

    let returned = eventually(Duration::from_secs(10), || async {
        app.reservation_state(&item).await == (Some(4), 0)
    })
    .await;
    assert!(
        returned,
        "the hold went back: {:?}",
        app.reservation_state(&item).await
    );
    assert_eq!(
        app.orders_in_db(&item).await,
        (1, 1),
        "nothing ordered by the slow call"
    );
    let retried = buyer.order_until_definite(item.id, 1, "slow").await;
    assert_eq!(
        retried.status, 201,
        "the same key succeeds once Redis answers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_down_orders_answer_503_give_holds_back_and_write_nothing() {
    let app = spawn_app(Setup::redis(Backend::Postgres)).await;
    let item = app.create_item(5, None).await;
    let buyer = app.buyer().await;
    assert_eq!(buyer.order(item.id, 1, "up").await.status, 201);

    let outage = app.db.go_down().await;

    let down = buyer.order(item.id, 1, "down").await;
    assert_eq!((down.status, down.code()), (503, "unavailable"), "{down:?}");
    assert_eq!(down.retry_after.as_deref(), Some("1"));
    assert_eq!(
        app.reservation_state(&item).await,
        (Some(4), 0),
        "the hold went back"
    );
    let (status, ready) = readiness(&app).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["code"], "unavailable");
    assert_eq!(ready["checks"]["database"]["ok"], false);

    outage.end().await;
    assert_eq!(
        app.orders_in_db(&item).await,
        (1, 1),
        "nothing half-written"
    );
    assert_eq!(app.item(item.id).await.stock, 4);
    let again = buyer.order_until_definite(item.id, 1, "down").await;
    assert_eq!(
        again.status, 201,
        "the same key orders once the database is back"
    );
    assert_eq!(app.orders_in_db(&item).await, (2, 2));
}

/// Drift injected into Redis is found and repaired by reconciliation while
/// a burst runs, and reported as metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconciliation_repairs_drift_while_orders_flow() {
    let app = spawn_app(Setup::redis(Backend::Postgres)).await;
    let item = app.create_item(120, None).await;
    let redis = app.redis.as_ref().expect("redis");
    let mut conn = redis.connection().await;
    let stock_key = format!("{}inv:{{{}}}:stock", redis.prefix, item.id);
    let _: i64 = redis::cmd("INCRBY")
        .arg(&stock_key)
        .arg(7)
        .query_async(&mut conn)
        .await
        .expect("drift");

    let store = app.state.reservation.clone().expect("store");
    let buyers = join_all((0..60).map(|_| app.buyer())).await;
    let burst = join_all(buyers.iter().enumerate().map(|(n, b)| {
        let key = format!("flow-{n}");
        async move { b.order_until_definite(item.id, 1, &key).await }
    }));
    let passes = async {
        let mut repaired = 0;
        for _ in 0..20 {
            let report = server::reservation::reconcile::reconcile_all(
                store.as_ref(),
                &app.state.db,
                &app.state.metrics,
            )
            .await
            .expect("pass");
            repaired += report.units_repaired;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        repaired
    };
    let (answers, _) = tokio::join!(burst, passes);
    assert!(answers.iter().all(|a| a.status == 201));
    let settled = eventually(Duration::from_secs(10), || async {
        server::reservation::reconcile::reconcile_all(
            store.as_ref(),
            &app.state.db,
            &app.state.metrics,
        )
        .await
        .is_ok_and(|r| r.in_step == 1)
    })
    .await;
    assert!(settled, "reconciliation ends in step");
    let stock = app.item(item.id).await.stock;
    assert_eq!(app.orders_in_db(&item).await.1 + stock, 120);
    assert_eq!(
        app.reservation_state(&item).await,
        (Some(stock), 0),
        "counter = database stock"
    );
    let metrics = crate::harness::scrape_metrics(&app.base).await;
    let units = crate::harness::metric(&metrics, "oversell_reconcile_drift_units_total");
    assert!(units >= 7.0, "the drift was reported: {units}");
}

/// `server reconcile` does one pass from the command line and prints JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconcile_command_repairs_and_reports() {
    // The server's own reconciler runs once at start and then not again
    // during the test, so only the command can repair the drift.
    let app = spawn_app(Setup {
        tweak: |c| c.reservation.reconcile_interval = Duration::from_secs(86_400),
        ..Setup::redis(Backend::Postgres)
    })
    .await;
    let item = app.create_item(9, None).await;
    let started_pass_done = eventually(Duration::from_secs(10), || async {
        let metrics = crate::harness::scrape_metrics(&app.base).await;
        crate::harness::metric(&metrics, "oversell_reconcile_passes_total") >= 1.0
    })
    .await;
    assert!(
        started_pass_done,
        "the server's first reconciliation pass ran"
    );
    let redis = app.redis.as_ref().expect("redis");
    let mut conn = redis.connection().await;
    let stock_key = format!("{}inv:{{{}}}:stock", redis.prefix, item.id);
    let _: () = redis::cmd("SET")
        .arg(&stock_key)
        .arg(4)
        .query_async(&mut conn)
        .await
        .expect("drift");

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_server"))
        .arg("reconcile")
        .env("DATABASE_URL", &app.db.url)
        .env("REDIS_URL", &redis.url)
        .env("REDIS_KEY_PREFIX", &redis.prefix)
        .env("RUST_LOG", "error")
        .output()
        .expect("run server reconcile");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    assert_eq!(report["repaired"], 1, "{report}");
    assert_eq!(report["units_repaired"], 5, "{report}");
    assert_eq!(app.reservation_state(&item).await, (Some(9), 0));
}
