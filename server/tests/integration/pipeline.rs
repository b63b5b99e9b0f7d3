//! The whole pipeline with Redis in front of PostgreSQL and MariaDB: bursts,
//! replay storms, a FLUSHALL mid-burst, restocks during a burst, per-buyer
//! limits, idempotency semantics and the reaper.

use crate::harness::{Answer, Backend, Buyer, PrivateRedis, Setup, TestApp, eventually, spawn_app};
use app::model::Item;
use futures_util::future::join_all;
use server::config::Config;
use server::reservation::{Hold, HoldDeadline, HoldToken};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

async fn buyers(app: &TestApp, n: usize) -> Vec<Buyer> {
    join_all((0..n).map(|_| app.buyer())).await
}

/// Every 201 names an order that exists in the database, once.
async fn every_created_order_is_in_the_database(app: &TestApp, answers: &[Answer]) {
    let ids: Vec<String> = answers
        .iter()
        .filter(|a| a.status == 201)
        .filter_map(|a| a.body["order_id"].as_str().map(str::to_owned))
        .collect();
    let distinct: HashSet<&String> = ids.iter().collect();
    for id in distinct {
        let sql = app.state.db.sql("SELECT COUNT(*) FROM orders WHERE id = ?");
        let n: i64 = sqlx::query_scalar(&sql)
            .bind(id.as_str())
            .fetch_one(app.state.db.pool())
            .await
            .expect("count order");
        assert_eq!(n, 1, "order {id} answered 201 but has {n} rows");
    }
}

async fn burst_of_2000_orders_from_500_buyers_on_stock_100(backend: Backend) {
    let app = spawn_app(Setup::redis(backend)).await;
    let item = app.create_item(100, None).await;
    let buyers = buyers(&app, 500).await;
    let answers = join_all((0..2000).map(|n| {
        let buyer = &buyers[n % 500];
        let key = format!("burst-{n}");
        async move { buyer.order_until_definite(item.id, 1, &key).await }
    }))
    .await;

    let created = answers.iter().filter(|a| a.status == 201).count();
    let sold_out = answers.iter().filter(|a| a.code() == "sold_out").count();
    assert_eq!((created, sold_out), (100, 1900), "{backend:?}");
    assert_eq!(app.orders_in_db(&item).await, (100, 100), "{backend:?}");
    assert_eq!(
        app.item(item.id).await.stock,
        0,
        "{backend:?}: database stock"
    );
    // A confirm that timed out under this load is retried in the background.
    let settled = eventually(Duration::from_secs(30), || async {
        app.reservation_state(&item).await == (Some(0), 0)
    })
    .await;
    assert!(
        settled,
        "{backend:?}: counter 0, no hold left: {:?}",
        app.reservation_state(&item).await
    );
    assert_eq!(app.duplicate_orders().await, 0);
    every_created_order_is_in_the_database(&app, &answers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_orders_sell_exactly_one_hundred_with_redis_and_postgres() {
    burst_of_2000_orders_from_500_buyers_on_stock_100(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_orders_sell_exactly_one_hundred_with_redis_and_mariadb() {
    burst_of_2000_orders_from_500_buyers_on_stock_100(Backend::MySql).await;
}

async fn replay_storm(backend: Backend) {
    let app = spawn_app(Setup::redis(backend)).await;
    let item = app.create_item(1000, None).await;
    let buyers = buyers(&app, 100).await;
    let firsts = join_all(buyers.iter().enumerate().map(|(n, b)| {
        let key = format!("storm-{n}");
        async move { b.order_until_definite(item.id, 1, &key).await }
    }))
    .await;
    assert!(
        firsts.iter().all(|a| a.status == 201),
        "every first attempt succeeds"
    );

    // 20 concurrent replays per key; every fifth one changes the payload.
    let storm = join_all(buyers.iter().enumerate().flat_map(|(n, b)| {
        (0..20).map(move |r| {
            let key = format!("storm-{n}");
            let qty = if r % 5 == 0 { 2 } else { 1 };
            // A 503 under this load is retryable; a client retries it with
            // the same key, which must still replay.
            async move { (n, qty, b.order_until_definite(item.id, qty, &key).await) }
        })
    }))
    .await;

    for (n, qty, answer) in &storm {
        if *qty == 1 {
            assert_eq!(answer.status, 201, "{backend:?}: replay of key {n}");
            assert!(answer.replayed, "{backend:?}: marked as a replay");
            assert_eq!(
                answer.body, firsts[*n].body,
                "{backend:?}: the stored body, byte for byte"
            );
        } else {
            assert_eq!(
                (answer.status, answer.code()),
                (422, "idempotency_key_reused"),
                "{backend:?}"
            );
        }
    }
    assert_eq!(
        app.orders_in_db(&item).await,
        (100, 100),
        "{backend:?}: exactly 100 orders"
    );
    assert_eq!(app.duplicate_orders().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_storm_gives_one_order_per_key_on_postgres() {
    replay_storm(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_storm_gives_one_order_per_key_on_mariadb() {
    replay_storm(Backend::MySql).await;
}

/// FLUSHALL (a private Redis) in the middle of 1000 concurrent orders: the
/// counters are reloaded from the database, which never lets a unit go twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flushall_in_the_middle_of_a_burst_oversells_nothing() {
    let redis = PrivateRedis::start().await;
    let mut setup = Setup::redis(Backend::Postgres);
    setup.redis_url = Some(redis.url());
    let app = spawn_app(setup).await;
    let initial = 300;
    let item = app.create_item(initial, None).await;
    let buyers = buyers(&app, 250).await;

    let burst = join_all((0..1000).map(|n| {
        let buyer = &buyers[n % 250];
        let key = format!("flush-{n}");
        async move { buyer.order_until_definite(item.id, 1, &key).await }
    }));
    let flush = async {
        // Flush once a good part of the stock has sold.
        eventually(Duration::from_secs(30), || async {
            app.orders_in_db(&item).await.0 >= 100
        })
        .await;
        redis.flushall().await;
    };
    let (answers, ()) = tokio::join!(burst, flush);

    let created = answers.iter().filter(|a| a.status == 201).count() as i64;
    let (orders, units) = app.orders_in_db(&item).await;
    let stock = app.item(item.id).await.stock;
    assert_eq!(
        units + stock,
        initial,
        "ordered + left = initial: nothing oversold"
    );
    assert!(stock >= 0);
    assert_eq!(
        orders, created,
        "every 201 is an order and every order was answered 201"
    );
    assert_eq!(app.duplicate_orders().await, 0, "no duplicate");
    every_created_order_is_in_the_database(&app, &answers).await;
    assert!(
        answers
            .iter()
            .all(|a| a.status == 201 || a.code() == "sold_out"),
        "only definite answers: {:?}",
        answers
            .iter()
            .find(|a| a.status != 201 && a.code() != "sold_out")
    );
}

/// Restocks while a burst runs: ordered + stock = initial + deltas, and the
/// counter ends equal to the database stock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restocking_during_a_burst_keeps_redis_and_the_database_in_step() {
    let app = spawn_app(Setup::redis(Backend::Postgres)).await;
    let initial = 50;
    let item = app.create_item(initial, None).await;
    let buyers = buyers(&app, 200).await;
    let burst = join_all((0..600).map(|n| {
        let buyer = &buyers[n % 200];
        let key = format!("restock-{n}");
        async move { buyer.order_until_definite(item.id, 1, &key).await }
    }));
    let deltas = [20, 15, -3, 30];
    let restocks = async {
        let mut applied = 0;
        for delta in deltas {
            tokio::time::sleep(Duration::from_millis(15)).await;
            let answer = app.restock(&item, delta).await;
            if answer.status == 200 {
                applied += delta;
            } else {
                assert_eq!(
                    answer.code(),
                    "invalid_request",
                    "only a removal may be refused: {answer:?}"
                );
            }
        }
        applied
    };
    let (answers, applied) = tokio::join!(burst, restocks);

    let created = answers.iter().filter(|a| a.status == 201).count() as i64;
    let (orders, units) = app.orders_in_db(&item).await;
    let stock = app.item(item.id).await.stock;
    assert_eq!(
        units + stock,
        initial + applied,
        "ordered + stock = initial + deltas"
    );
    assert_eq!(orders, created);
    let (counter, holds) = app.reservation_state(&item).await;
    assert_eq!(holds, 0);
    assert_eq!(
        counter,
        Some(stock),
        "the counter equals the database stock"
    );
}

/// `max_per_buyer` is enforced by the reservation and again by the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_per_buyer_limit_holds_under_concurrency_with_and_without_redis() {
    for setup in [
        Setup::redis(Backend::Postgres),
        Setup::db_only(Backend::MySql),
        Setup::embedded(),
    ] {
        let app = spawn_app(setup.clone()).await;
        let item = app.create_item(100, Some(2)).await;
        let greedy = app.buyer().await;
        let answers = join_all((0..10).map(|n| {
            let key = format!("greedy-{n}");
            let greedy = &greedy;
            async move { greedy.order_until_definite(item.id, 1, &key).await }
        }))
        .await;
        let created = answers.iter().filter(|a| a.status == 201).count();
        assert_eq!(created, 2, "{:?}/{:?}", setup.backend, setup.strategy);
        assert!(
            answers
                .iter()
                .filter(|a| a.status != 201)
                .all(|a| a.status == 409 && a.code() == "limit_exceeded")
        );
        assert_eq!(app.orders_in_db(&item).await, (2, 2));
        let other = app.buyer().await;
        assert_eq!(
            other.order(item.id, 2, "other").await.status,
            201,
            "others keep their allowance"
        );
        let over = other.order(item.id, 3, "over").await;
        assert_eq!(over.code(), "limit_exceeded");
    }
}

/// The database enforces the limit on its own when Redis forgot the buyer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_enforces_the_limit_even_after_redis_forgot() {
    let redis = PrivateRedis::start().await;
    let mut setup = Setup::redis(Backend::Postgres);
    setup.redis_url = Some(redis.url());
    let app = spawn_app(setup).await;
    let item = app.create_item(10, Some(1)).await;
    let buyer = app.buyer().await;
    assert_eq!(buyer.order(item.id, 1, "first").await.status, 201);
    redis.flushall().await;
    // For one lease after the buyer's records are loaded again, an attempt
    // from before the loss could still order: until then the refusal is
    // "try again", never final.
    let settling = buyer.order(item.id, 1, "second").await;
    assert_eq!(
        (
            settling.status,
            settling.code(),
            &settling.body["retryable"]
        ),
        (503, "unavailable", &serde_json::json!(true)),
        "{settling:?}"
    );
    let second = buyer.order_until_definite(item.id, 1, "second").await;
    assert_eq!((second.status, second.code()), (409, "limit_exceeded"));
    assert_eq!(app.orders_in_db(&item).await, (1, 1));
    let (counter, holds) = app.reservation_state(&item).await;
    assert_eq!(
        (counter, holds),
        (Some(9), 0),
        "the refused hold was given back"
    );
}

/// Replays, mismatches, missing keys and lookups by key, with the records in
/// Redis (strategy A) and in the database (strategy B).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_follows_the_contract_with_either_record_store() {
    for setup in [
        Setup::redis(Backend::Postgres),
        Setup::db_only(Backend::Postgres),
        Setup::embedded(),
    ] {
        let app = spawn_app(setup.clone()).await;
        let label = format!("{:?}/{:?}", setup.backend, setup.strategy);
        let item = app.create_item(1, None).await;
        let buyer = app.buyer().await;
        let other = app.buyer().await;

        assert_eq!(
            buyer.outcome("k-1").await.body["state"],
            "unknown",
            "{label}"
        );
        let first = buyer.order(item.id, 1, "k-1").await;
        assert_eq!(first.status, 201, "{label}");
        assert!(!first.replayed);
        let again = buyer.order(item.id, 1, "k-1").await;
        assert_eq!((again.status, again.replayed), (201, true), "{label}");
        assert_eq!(again.body, first.body, "{label}");
        let changed = buyer.order(item.id, 2, "k-1").await;
        assert_eq!(
            (changed.status, changed.code()),
            (422, "idempotency_key_reused"),
            "{label}"
        );

        let outcome = buyer.outcome("k-1").await;
        assert_eq!(outcome.body["state"], "order", "{label}");
        assert_eq!(outcome.body["order"], first.body, "{label}");
        assert_eq!(
            other.outcome("k-1").await.body["state"],
            "unknown",
            "{label}: keys are per buyer"
        );

        // The same key from another buyer is another intent.
        let sold_out = other.order(item.id, 1, "k-1").await;
        assert_eq!(
            (sold_out.status, sold_out.code()),
            (409, "sold_out"),
            "{label}"
        );
        let replayed_refusal = other.order(item.id, 1, "k-1").await;
        assert_eq!(
            (replayed_refusal.status, replayed_refusal.replayed),
            (409, true),
            "{label}"
        );
        let failed = other.outcome("k-1").await;
        assert_eq!(failed.body["state"], "failed", "{label}");
        assert_eq!(failed.body["error"]["code"], "sold_out", "{label}");

        let missing = crate::harness::answer(
            buyer
                .client
                .post(format!("{}/api/orders", app.base))
                .json(&serde_json::json!({"item_id": item.id, "qty": 1}))
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_eq!(
            (missing.status, missing.code()),
            (400, "invalid_request"),
            "{label}"
        );
        assert_eq!(app.orders_in_db(&item).await, (1, 1), "{label}");
    }
}

/// Once an item sells out, the instance refuses it from its sold-out memo in
/// the idempotency claim, without asking the store, under the same contract:
/// the refusal is recorded for replays, a key with a history is answered
/// from it, and a restock through this instance offers the units at once.
/// With the memo off, every refusal asks the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_sell_out_is_refused_in_the_claim_under_the_same_contract() {
    use crate::harness::{metric, scrape_metrics};
    let count = |metrics: &HashMap<String, f64>, result: &str| {
        metric(
            metrics,
            &format!(
                "oversell_reservation_outcomes_total{{result=\"{result}\",strategy=\"redis+db\"}}"
            ),
        )
    };
    for (mut setup, memo) in [
        (Setup::redis(Backend::Postgres), Duration::from_secs(60)),
        (Setup::embedded(), Duration::from_secs(60)),
        (Setup::redis(Backend::Postgres), Duration::ZERO),
    ] {
        setup.tweak = if memo.is_zero() {
            |c: &mut Config| c.reservation.sold_out_memo = Duration::ZERO
        } else {
            |c: &mut Config| c.reservation.sold_out_memo = Duration::from_secs(60)
        };
        let label = format!("{:?}, memo {memo:?}", setup.backend);
        let app = spawn_app(setup).await;
        let item = app.create_item(1, None).await;
        let buyer = app.buyer().await;
        let first = buyer.order(item.id, 1, "memo-first").await;
        assert_eq!(first.status, 201, "{label}");

        let refused = buyer.order(item.id, 1, "memo-late").await;
        assert_eq!(
            (refused.status, refused.code(), refused.replayed),
            (409, "sold_out", false),
            "{label}"
        );
        let again = buyer.order(item.id, 1, "memo-late").await;
        assert_eq!((again.status, again.replayed), (409, true), "{label}");
        assert_eq!(again.body, refused.body, "{label}");
        let changed = buyer.order(item.id, 2, "memo-late").await;
        assert_eq!(changed.code(), "idempotency_key_reused", "{label}");
        let replayed_order = buyer.order(item.id, 1, "memo-first").await;
        assert_eq!(
            (replayed_order.status, replayed_order.replayed),
            (201, true),
            "{label}: an earlier order is replayed, not refused"
        );
        let outcome = buyer.outcome("memo-late").await;
        assert_eq!(outcome.body["error"]["code"], "sold_out", "{label}");

        // The first sell-out is the store's: it has no unit and no hold left.
        let metrics = scrape_metrics(&app.base).await;
        let (store, memo_refusals) = (
            count(&metrics, "sold_out"),
            count(&metrics, "sold_out_memo"),
        );
        assert_eq!((store, memo_refusals), (1.0, 0.0), "{label}");

        // A crowd of new keys (answered in batches on a single Redis) mixed
        // with keys that have a history.
        let crowd = join_all((0..40).map(|n| {
            let buyer = &buyer;
            async move {
                match n % 10 {
                    0 => ("late", buyer.order(item.id, 1, "memo-late").await),
                    5 => ("first", buyer.order(item.id, 1, "memo-first").await),
                    _ => (
                        "new",
                        buyer.order(item.id, 1, &format!("memo-crowd-{n}")).await,
                    ),
                }
            }
        }))
        .await;
        for (kind, answer) in &crowd {
            let expected = match *kind {
                "late" => (409, true),
                "first" => (201, true),
                _ => (409, false),
            };
            assert_eq!(
                (answer.status, answer.replayed),
                expected,
                "{label}: {kind} {answer:?}"
            );
        }
        let crowd_outcome = buyer.outcome("memo-crowd-1").await;
        assert_eq!(crowd_outcome.body["error"]["code"], "sold_out", "{label}");
        let metrics = scrape_metrics(&app.base).await;
        let (store, memo_refusals) = (
            count(&metrics, "sold_out"),
            count(&metrics, "sold_out_memo"),
        );
        if memo.is_zero() {
            assert_eq!(
                (store, memo_refusals),
                (33.0, 0.0),
                "{label}: the store says it every time"
            );
        } else {
            assert_eq!(
                (store, memo_refusals),
                (1.0, 32.0),
                "{label}: the memo answers the new keys"
            );
        }

        assert_eq!(app.restock(&item, 1).await.status, 200, "{label}");
        let after_restock = buyer.order(item.id, 1, "memo-restocked").await;
        assert_eq!(after_restock.status, 201, "{label}: {after_restock:?}");
        assert_eq!(app.orders_in_db(&item).await, (2, 2), "{label}");
    }
}

/// Records expire after IDEMPOTENCY_TTL_SECS: Redis keeps them with that TTL.
#[tokio::test]
async fn redis_idempotency_records_carry_the_configured_ttl() {
    let mut setup = Setup::redis(Backend::Postgres);
    setup.tweak = |c: &mut Config| c.orders.idempotency_ttl = Duration::from_secs(3_600);
    let app = spawn_app(setup).await;
    let item = app.create_item(5, None).await;
    let buyer = app.buyer().await;
    assert_eq!(buyer.order(item.id, 1, "ttl").await.status, 201);
    let redis = app.redis.as_ref().expect("redis");
    let mut conn = redis.connection().await;
    // The record's own key: the shared Redis may hold millions of others,
    // so nothing here walks the keyspace.
    let key = format!("{}idem:{{{}}}:ttl", redis.prefix, buyer.id);
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("pttl");
    assert!((3_500_000..=3_600_000).contains(&ttl_ms), "ttl {ttl_ms} ms");
}

/// A hold whose order never finished is given back by the reaper task, on
/// every instance's schedule, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_task_gives_back_abandoned_holds() {
    for mut setup in [Setup::redis(Backend::Postgres), Setup::embedded()] {
        setup.tweak = |c: &mut Config| c.reservation.reaper_interval = Duration::from_millis(20);
        let app = spawn_app(setup).await;
        let item = app.create_item(5, None).await;
        let store = app.state.reservation.clone().expect("store");
        let buyer =
            app::domain::BuyerId::parse("00000000-0000-4000-8000-00000000abcd").expect("buyer");
        let key = app::domain::IdempotencyKey::parse("abandoned").expect("key");
        let hold = Hold {
            token: HoldToken::new(&buyer, &key),
            buyer,
            qty: app::domain::Quantity::new(2).expect("qty"),
            deadline: HoldDeadline::at_ms(server::db::now_ms() + 50),
            pass: None,
        };
        store.reserve(item.id, &hold).await.expect("reserve");
        assert_eq!(app.reservation_state(&item).await, (Some(3), 1));
        let given_back = eventually(Duration::from_secs(10), || async {
            app.reservation_state(&item).await == (Some(5), 0)
        })
        .await;
        assert!(
            given_back,
            "the reaper returned the hold: {:?}",
            app.reservation_state(&item).await
        );
    }
}

/// Two server instances share one Redis and one database: a burst split
/// across both sells exactly the stock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_sharing_redis_and_postgres_sell_exactly_the_stock() {
    let first = spawn_app(Setup::redis(Backend::Postgres)).await;
    let item = first.create_item(60, None).await;
    let (db_url, redis) = (
        first.db.url.clone(),
        first
            .redis
            .as_ref()
            .map(|r| (r.url.clone(), r.prefix.clone()))
            .expect("redis"),
    );
    let second = crate::harness::spawn_instance(&first, &db_url, &redis.0, &redis.1).await;
    let buyers: Vec<Buyer> =
        join_all([&first.base, &second.base].map(|base| crate::harness::buyer_on(base))).await;
    let answers = join_all((0..400).map(|n| {
        let buyer = &buyers[n % 2];
        let key = format!("twin-{n}");
        async move { buyer.order_until_definite(item.id, 1, &key).await }
    }))
    .await;
    let by_status: HashMap<u16, usize> = answers.iter().fold(HashMap::new(), |mut m, a| {
        *m.entry(a.status).or_default() += 1;
        m
    });
    assert_eq!(by_status.get(&201), Some(&60), "{by_status:?}");
    assert_eq!(first.orders_in_db(&item).await, (60, 60));
    assert_eq!(first.reservation_state(&item).await, (Some(0), 0));
}

/// The embedded default (in-process store + SQLite) keeps every invariant too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_embedded_default_sells_exactly_the_stock() {
    let app = spawn_app(Setup::embedded()).await;
    let item: Item = app.create_item(40, None).await;
    let buyers = buyers(&app, 100).await;
    let answers = join_all((0..300).map(|n| {
        let buyer = &buyers[n % 100];
        let key = format!("embedded-{n}");
        async move { buyer.order_until_definite(item.id, 1, &key).await }
    }))
    .await;
    assert_eq!(answers.iter().filter(|a| a.status == 201).count(), 40);
    assert_eq!(app.orders_in_db(&item).await, (40, 40));
    assert_eq!(app.reservation_state(&item).await, (Some(0), 0));
}

/// On a real Redis Cluster, two instances share it and PostgreSQL: 2000
/// orders from 500 buyers on stock 100 sell exactly 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_a_redis_cluster_sell_exactly_the_stock() {
    let cluster = crate::harness::RedisCluster::start().await;
    let mut setup = Setup::redis(Backend::Postgres);
    setup.redis = false;
    setup.cluster_nodes = Some(cluster.nodes());
    let app = spawn_app(setup).await;
    assert_eq!(
        app.state.reservation.as_ref().map(|s| s.kind()),
        Some("redis-cluster")
    );
    let twin = crate::harness::spawn_twin(&app).await;
    let item = app.create_item(100, None).await;
    let buyers: Vec<Buyer> = join_all((0..500).map(|n| {
        let base = if n % 2 == 0 {
            app.base.clone()
        } else {
            twin.base.clone()
        };
        async move { crate::harness::buyer_on(&base).await }
    }))
    .await;
    let answers = join_all((0..2000).map(|n| {
        let buyer = &buyers[n % 500];
        let key = format!("cluster-{n}");
        async move { buyer.order_until_definite(item.id, 1, &key).await }
    }))
    .await;
    assert_eq!(answers.iter().filter(|a| a.status == 201).count(), 100);
    assert_eq!(app.orders_in_db(&item).await, (100, 100));
    assert_eq!(app.duplicate_orders().await, 0);
    let settled = eventually(Duration::from_secs(30), || async {
        app.reservation_state(&item).await == (Some(0), 0)
    })
    .await;
    assert!(
        settled,
        "counter 0, no hold: {:?}",
        app.reservation_state(&item).await
    );
}
