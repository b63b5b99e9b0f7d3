//! The database is the truth for every answer: a key that has an order
//! always answers that order (201, the same body, replayed), and the same
//! key with another payload is 422, whatever Redis forgot, whatever the
//! breaker did, whichever instance answers, whatever the network or the
//! client did. One test per door a wrong answer used to get out through.

use crate::harness::{
    Answer, Backend, Buyer, PrivateRedis, Setup, TestApp, eventually, spawn_app, spawn_twin,
};
use futures_util::future::join_all;
use server::config::Config;
use std::time::Duration;

/// The same answer, as a replay: status, body and the replay header.
fn assert_replays(first: &Answer, replay: &Answer) {
    assert_eq!(replay.status, first.status, "{replay:?}");
    assert_eq!(replay.body, first.body, "the replay carries the same body");
    assert!(replay.replayed, "a replay says so: {replay:?}");
}

async fn lookup_says_order(buyer: &Buyer, key: &str, order_id: &serde_json::Value) {
    let outcome = buyer.outcome(key).await;
    assert_eq!(outcome.status, 200, "{outcome:?}");
    assert_eq!(outcome.body["state"], "order", "{outcome:?}");
    assert_eq!(&outcome.body["order"]["order_id"], order_id);
}

async fn app_with_private_redis(
    backend: Backend,
    redis: &PrivateRedis,
    tweak: fn(&mut Config),
) -> TestApp {
    let mut setup = Setup::redis(backend);
    setup.redis_url = Some(redis.url());
    setup.tweak = tweak;
    spawn_app(setup).await
}

/// A PostgreSQL app on a private Redis whose breaker opens on one slow
/// Redis call (150 ms) and probes again after 300 ms, with the sold-out
/// memo kept hot (60 s).
async fn app_with_a_quick_breaker(redis: &PrivateRedis) -> TestApp {
    app_with_private_redis(Backend::Postgres, redis, |c| {
        c.breaker.failure_threshold = 1;
        c.breaker.cooldown = Duration::from_millis(300);
        c.redis.timeout = Duration::from_millis(150);
        c.reservation.sold_out_memo = Duration::from_secs(60);
    })
    .await
}

/// Stalls Redis for two seconds (DEBUG SLEEP) and trips the breaker with
/// one order of `buyer`; returns the stall, to await once done around it.
async fn stall_redis_and_trip_the_breaker(
    redis: &PrivateRedis,
    buyer: &Buyer,
    item: &app::model::Item,
) -> tokio::task::JoinHandle<()> {
    let mut admin = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let stall = tokio::spawn(async move {
        let _: Result<(), _> = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg("2")
            .query_async(&mut admin)
            .await;
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let tripped = buyer.order(item.id, 1, "trip").await;
    assert_eq!(tripped.code(), "unavailable", "{tripped:?}");
    stall
}

/// Whether the probe closed the breaker within ten seconds.
async fn breaker_closes(app: &TestApp) -> bool {
    eventually(Duration::from_secs(10), || async {
        app.state
            .pipeline
            .guard()
            .is_some_and(|g| g.state().label() == "closed")
    })
    .await
}

/// Locks the item's row in a transaction: its orders stall in the ledger
/// until the transaction ends.
async fn lock_item_row(
    app: &TestApp,
    item: &app::model::Item,
) -> sqlx::Transaction<'static, sqlx::Any> {
    let mut lock = app.state.db.pool().begin().await.expect("begin");
    on_item_row(
        app,
        &mut lock,
        "SELECT id FROM inventory WHERE id = ? FOR UPDATE",
        item,
    )
    .await
    .expect("lock the item's row");
    lock
}

/// Runs `statement` (one `?`: the item's id, in this database's dialect)
/// inside `tx`.
async fn on_item_row(
    app: &TestApp,
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    statement: &str,
    item: &app::model::Item,
) -> Result<sqlx::any::AnyQueryResult, sqlx::Error> {
    let statement = app.state.db.sql(statement).into_owned();
    sqlx::query(&statement)
        .bind(item.id.get())
        .execute(&mut **tx)
        .await
}

/// Loads the item's counter from the database, then moves it `units` away
/// from the stock, as a fault can leave it (the database is not touched).
async fn drift_counter(app: &TestApp, item: &app::model::Item, units: i64) {
    let store = app.state.reservation.clone().expect("a store");
    let row = server::db::items::get(&app.state.db, item.id)
        .await
        .expect("read the item")
        .expect("the item");
    store
        .load(item.id, server::reservation::CounterSeed::of(&row), &[])
        .await
        .expect("load");
    store
        .restock(item.id, units, row.version + 1)
        .await
        .expect("the counter drifts");
}

/// Redis loses its data after an order: the replay of that key, the lookup
/// and a reuse with another payload still answer from the database, also
/// while the sold-out memo is hot.
async fn redis_loses_its_data_after_an_order(backend: Backend) {
    let redis = PrivateRedis::start().await;
    let app = app_with_private_redis(backend, &redis, |c| {
        c.reservation.sold_out_memo = Duration::from_secs(60);
    })
    .await;
    let item = app.create_item(1, None).await;
    let buyer = app.buyer().await;
    let first = buyer.order(item.id, 1, "bought").await;
    assert_eq!(first.status, 201, "{first:?}");
    let late = app.buyer().await;
    assert_eq!(late.order(item.id, 1, "late").await.code(), "sold_out");

    redis.flushall().await;
    assert_replays(&first, &buyer.order(item.id, 1, "bought").await);
    lookup_says_order(&buyer, "bought", &first.body["order_id"]).await;
    let reused = buyer.order(item.id, 2, "bought").await;
    assert_eq!(
        (reused.status, reused.code()),
        (422, "idempotency_key_reused")
    );

    // A key never used is refused as before, and its refusal replays.
    let refused = late.order(item.id, 1, "late-2").await;
    assert_eq!(refused.code(), "sold_out");
    assert_replays(&refused, &late.order(item.id, 1, "late-2").await);
    assert_eq!(app.orders_in_db(&item).await, (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_loses_its_data_a_replay_answers_the_order_on_postgres() {
    redis_loses_its_data_after_an_order(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_loses_its_data_a_replay_answers_the_order_on_mariadb() {
    redis_loses_its_data_after_an_order(Backend::MySql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_loses_its_data_a_replay_answers_the_order_on_sqlite() {
    redis_loses_its_data_after_an_order(Backend::Sqlite).await;
}

/// The COMMIT reaches the database, its acknowledgement does not: the
/// buyer hears of the order (or "try again", never a refusal), the replay
/// answers it, and the counter matches the database.
async fn a_commit_acknowledgement_is_lost(backend: Backend, batch_max: usize) {
    let mut setup = Setup::redis(backend);
    setup.cut_commits = true;
    setup.tweak = if batch_max == 1 {
        |c: &mut Config| c.ledger.batch_max = 1
    } else {
        |c: &mut Config| c.ledger.batch_max = 64
    };
    let app = spawn_app(setup).await;
    let stock = 12;
    let item = app.create_item(stock, None).await;
    let cutter = app.commit_cutter.as_ref().expect("the proxy runs");
    let buyers = join_all((0..stock).map(|_| app.buyer())).await;
    cutter.arm(3);
    let firsts = join_all(
        buyers
            .iter()
            .enumerate()
            .map(|(n, b)| async move { b.order(item.id, 1, &format!("cut-{n}")).await }),
    )
    .await;
    assert!(cutter.cut() > 0, "a COMMIT was cut");
    for (n, first) in firsts.iter().enumerate() {
        assert!(
            first.status == 201 || first.body["retryable"] == true,
            "order {n}: a lost acknowledgement is never a definite refusal: {first:?}"
        );
    }
    let finals = join_all(buyers.iter().enumerate().map(|(n, b)| async move {
        b.order_until_definite(item.id, 1, &format!("cut-{n}"))
            .await
    }))
    .await;
    for (n, (first, last)) in firsts.iter().zip(&finals).enumerate() {
        assert_eq!(
            last.status, 201,
            "order {n}: every unit was bought: {last:?}"
        );
        if first.status == 201 {
            assert_eq!(first.body, last.body, "order {n}: one order per key");
        }
    }
    assert_eq!(app.orders_in_db(&item).await, (stock, stock));
    assert_eq!(app.duplicate_orders().await, 0);
    let settled = eventually(Duration::from_secs(10), || async {
        app.reservation_state(&item).await == (Some(0), 0)
    })
    .await;
    assert!(
        settled,
        "the counter matches the database: {:?}",
        app.reservation_state(&item).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_acknowledgement_is_resolved_by_the_orders_table_on_postgres() {
    a_commit_acknowledgement_is_lost(Backend::Postgres, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_acknowledgement_is_resolved_by_the_orders_table_on_mariadb() {
    a_commit_acknowledgement_is_lost(Backend::MySql, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_whose_commit_acknowledgement_is_lost_answers_its_orders_on_postgres() {
    a_commit_acknowledgement_is_lost(Backend::Postgres, 64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_whose_commit_acknowledgement_is_lost_answers_its_orders_on_mariadb() {
    a_commit_acknowledgement_is_lost(Backend::MySql, 64).await;
}

/// An order placed while the breaker kept a stalled (not emptied) Redis
/// out is answered by its replays after the breaker closed, even with the
/// item sold out and the memo hot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_placed_around_redis_answers_its_replays_after_the_breaker_closes() {
    let redis = PrivateRedis::start().await;
    let app = app_with_a_quick_breaker(&redis).await;
    let item = app.create_item(1, None).await;
    let buyer = app.buyer().await;

    let stall = stall_redis_and_trip_the_breaker(&redis, &buyer, &item).await;
    let around = buyer.order_until_definite(item.id, 1, "around").await;
    assert_eq!(around.status, 201, "sold around Redis: {around:?}");
    let _ = stall.await;

    assert!(breaker_closes(&app).await, "the probe closed the breaker");
    let late = app.buyer().await;
    assert_eq!(late.order(item.id, 1, "late").await.code(), "sold_out");
    let replay = buyer.order_until_definite(item.id, 1, "around").await;
    assert_eq!(replay.status, 201, "{replay:?}");
    assert_eq!(replay.body, around.body);
    lookup_says_order(&buyer, "around", &around.body["order_id"]).await;
    assert_eq!(app.orders_in_db(&item).await, (1, 1));
}

/// A refusal answered while the breaker kept Redis out is kept in the
/// database's records: after the breaker closes, the same key with another
/// payload is 422 (not decided anew as sold out) and the same payload
/// replays the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_kept_around_redis_holds_its_key_after_the_breaker_closes() {
    let redis = PrivateRedis::start().await;
    let app = app_with_a_quick_breaker(&redis).await;
    let item = app.create_item(0, None).await;
    let buyer = app.buyer().await;

    let stall = stall_redis_and_trip_the_breaker(&redis, &buyer, &item).await;
    let around = buyer.order_until_definite(item.id, 1, "around").await;
    assert_eq!(
        around.code(),
        "sold_out",
        "refused around Redis: {around:?}"
    );
    let _ = stall.await;

    assert!(breaker_closes(&app).await, "the probe closed the breaker");
    let changed = buyer.order_until_definite(item.id, 2, "around").await;
    assert_eq!(
        (changed.status, changed.code()),
        (422, "idempotency_key_reused"),
        "{changed:?}"
    );
    let replay = buyer.order_until_definite(item.id, 1, "around").await;
    assert_eq!(replay.code(), "sold_out", "{replay:?}");
    assert_eq!(app.orders_in_db(&item).await, (0, 0));
}

/// A claim left running (its finish never happened) with an order in the
/// database: the lookup says order, a replay after the lease answers it.
async fn an_abandoned_claim_with_an_order(app: &TestApp, abandon: impl AsyncFnOnce(&str, &str)) {
    let item = app.create_item(1, None).await;
    let buyer = app.buyer().await;
    let first = buyer.order(item.id, 1, "orphan").await;
    assert_eq!(first.status, 201);
    abandon(&buyer.id, "orphan").await;
    lookup_says_order(&buyer, "orphan", &first.body["order_id"]).await;
    let replay = buyer.order(item.id, 1, "orphan").await;
    assert_eq!(replay.status, 201, "{replay:?}");
    assert_eq!(replay.body, first.body);
    assert_eq!(app.orders_in_db(&item).await, (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_redis_claim_falls_through_to_the_orders_table() {
    let app = spawn_app(Setup::redis(Backend::Postgres)).await;
    let redis = app.redis.as_ref().expect("redis");
    let mut conn = redis.connection().await;
    an_abandoned_claim_with_an_order(&app, async |buyer: &str, key: &str| {
        let record = format!("{}idem:{{{buyer}}}:{key}", redis.prefix);
        let _: () = redis::cmd("HSET")
            .arg(&record)
            .arg("state")
            .arg("running")
            .arg("lease_until")
            .arg(0)
            .query_async(&mut conn)
            .await
            .expect("abandon the record");
        let _: () = redis::cmd("HDEL")
            .arg(&record)
            .arg("status")
            .arg("body")
            .query_async(&mut conn)
            .await
            .expect("abandon the record");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_database_claim_falls_through_to_the_orders_table() {
    let app = spawn_app(Setup::embedded()).await;
    an_abandoned_claim_with_an_order(&app, async |buyer: &str, key: &str| {
        let sql = app.state.db.sql(
            "UPDATE idempotency_records SET state = 'running', lease_until = 0, \
             response_status = NULL, response_body = NULL WHERE buyer = ? AND idempotency_key = ?",
        );
        sqlx::query(&sql)
            .bind(buyer)
            .bind(key)
            .execute(app.state.db.pool())
            .await
            .expect("abandon the record");
    })
    .await;
}

/// With the database down, a key reused with another payload cannot be
/// checked against the orders table: 503, never a guess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reuse_that_cannot_be_checked_answers_503() {
    let app = spawn_app(Setup::redis(Backend::Postgres)).await;
    let item = app.create_item(0, None).await;
    let buyer = app.buyer().await;
    assert_eq!(buyer.order(item.id, 1, "k").await.code(), "sold_out");

    let outage = app.db.go_down().await;
    // Past the age at which this instance stops vouching for Redis records.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let reused = buyer.order(item.id, 2, "k").await;
    outage.end().await;
    assert_eq!(
        (reused.status, reused.code()),
        (503, "unavailable"),
        "{reused:?}"
    );
}

/// The client hangs up while its order waits for the database: the order
/// still completes, its hold is confirmed, its claim finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_does_not_stop_its_order() {
    let app = spawn_app(Setup::redis(Backend::Postgres)).await;
    let item = app.create_item(1, None).await;
    let buyer = app.buyer().await;

    let lock = lock_item_row(&app, &item).await;
    let hung_up = buyer
        .impatient(Duration::from_millis(500))
        .post(format!("{}/api/orders", app.base))
        .header("Idempotency-Key", "patience")
        .json(&serde_json::json!({ "item_id": item.id, "qty": 1 }))
        .send()
        .await;
    assert!(hung_up.is_err(), "the client gave up: {hung_up:?}");
    lock.rollback().await.expect("release the row");

    let ordered = eventually(Duration::from_secs(5), || async {
        buyer.outcome("patience").await.body["state"] == "order"
    })
    .await;
    assert!(ordered, "the order completed after the client left");
    let confirmed = eventually(Duration::from_secs(5), || async {
        app.reservation_state(&item).await == (Some(0), 0)
    })
    .await;
    assert!(confirmed, "its hold was confirmed, not left to the reaper");
    let replay = buyer.order(item.id, 1, "patience").await;
    assert_eq!((replay.status, replay.replayed), (201, true), "{replay:?}");
}

/// Without COOKIE_SECRET, instances that share a database share the secret
/// the database keeps: a buyer stays the same buyer on the other instance
/// and after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cookie_secret_buyers_survive_restarts_and_span_instances() {
    let mut setup = Setup::db_only(Backend::Postgres);
    setup.tweak = |c| c.sessions.cookie_secret = None;
    let app = spawn_app(setup).await;
    let buyer = app.buyer().await;
    let twin = spawn_twin(&app).await;
    let on_twin = buyer
        .client
        .post(format!("{}/api/session", twin.base))
        .send()
        .await
        .expect("session");
    assert_eq!(on_twin.status().as_u16(), 200, "the twin knows the cookie");
    let body: serde_json::Value = on_twin.json().await.expect("json");
    assert_eq!(body["buyer_id"], buyer.id.as_str());
    drop(twin);
    let restarted = spawn_twin(&app).await;
    let again = buyer
        .client
        .post(format!("{}/api/session", restarted.base))
        .send()
        .await
        .expect("session");
    assert_eq!(again.status().as_u16(), 200, "a restart keeps the buyer");
}

#[tokio::test]
async fn sqlite_syncs_every_commit() {
    let app = spawn_app(Setup::embedded()).await;
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(app.state.db.pool())
        .await
        .expect("pragma");
    assert_eq!(synchronous, 2, "FULL");
}

/// Several instances, two record stores, the same key from every side:
/// one order, and every answer for the key is that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_answers_its_order_from_every_instance() {
    let app = spawn_app(Setup::redis(Backend::MySql)).await;
    let twin = spawn_twin(&app).await;
    let item = app.create_item(1, None).await;
    let buyer = app.buyer().await;
    let on_twin = buyer.on(&twin.base);
    let answers = join_all((0..8).map(|n| {
        let (buyer, on_twin) = (buyer.clone(), on_twin.clone());
        async move {
            if n % 2 == 0 {
                buyer.order_until_definite(item.id, 1, "everywhere").await
            } else {
                on_twin.order_until_definite(item.id, 1, "everywhere").await
            }
        }
    }))
    .await;
    let order = &answers[0].body["order_id"];
    assert!(order.is_string(), "{:?}", answers[0]);
    for answer in &answers {
        assert_eq!(answer.status, 201, "{answer:?}");
        assert_eq!(&answer.body["order_id"], order);
    }
    assert_eq!(app.orders_in_db(&item).await, (1, 1));
}

/// A hold whose order committed while its confirm was lost (a Redis
/// outage): loading the counter again does not take its units twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_load_does_not_count_a_hold_whose_order_committed() {
    use server::reservation::{Hold, HoldDeadline, HoldToken};
    let app = spawn_app(Setup::redis(Backend::Postgres)).await;
    let item = app.create_item(5, None).await;
    let store = app.state.reservation.clone().expect("a store");
    let buyer = app.buyer().await;
    let buyer_id = app::domain::BuyerId::parse(&buyer.id).expect("buyer id");
    let key = app::domain::IdempotencyKey::parse("lost-confirm").expect("key");
    let hold = Hold {
        token: HoldToken::new(&buyer_id, &key),
        buyer: buyer_id.clone(),
        qty: app::domain::Quantity::ONE,
        deadline: HoldDeadline::at_ms(server::db::now_ms() + 60_000),
        pass: None,
    };
    store.reserve(item.id, &hold).await.expect("reserve");
    let db = &app.state.db;
    sqlx::query(&db.sql(
        "INSERT INTO orders (id, buyer, idempotency_key, item_id, qty, unit_price_cents, status, created_at) \
         VALUES (?, ?, ?, ?, 1, 1999, 'confirmed', 1)",
    ))
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(buyer_id.as_str())
    .bind(key.as_str())
    .bind(item.id.get())
    .execute(db.pool())
    .await
    .expect("the order commits");
    sqlx::query(
        &db.sql("UPDATE inventory SET stock = stock - 1, version = version + 1 WHERE id = ?"),
    )
    .bind(item.id.get())
    .execute(db.pool())
    .await
    .expect("its unit leaves the stock");
    store
        .forget_counter(item.id)
        .await
        .expect("the counter is lost");

    let other = app.buyer().await;
    assert_eq!(other.order(item.id, 1, "next").await.status, 201);
    assert_eq!(
        app.reservation_state(&item).await,
        (Some(3), 0),
        "5 - the committed order - the next one; the committed hold ended"
    );
    assert_eq!(app.item(item.id).await.stock, 3);
}

/// Redis loses its data while an order stalls in the ledger (its item's row
/// stock row is locked), another buyer takes the unit the reloaded counter shows, and
/// the stalled order's duplicate arrives. Its buyer's records are reloaded
/// without the running claim, and the orders table has no order yet: the
/// duplicate must not be refused for good (the stalled order then commits),
/// so it hears "try again", and every later replay answers the order. On
/// main before this test, the duplicate was answered 409 sold_out,
/// definite and kept, while its key's order committed a moment later.
async fn a_duplicate_of_an_order_whose_claim_redis_lost(backend: Backend) {
    let redis = PrivateRedis::start().await;
    let app = app_with_private_redis(backend, &redis, |_| {}).await;
    let item = app.create_item(1, None).await;
    let (buyer, rival) = (app.buyer().await, app.buyer().await);
    let lock = lock_item_row(&app, &item).await;

    let stalled = buyer.order(item.id, 1, "stalled");
    let meanwhile = async {
        let running = eventually(Duration::from_secs(5), || async {
            buyer.outcome("stalled").await.body["state"] == "in_progress"
        })
        .await;
        assert!(running, "{backend:?}: the order runs");
        tokio::time::sleep(Duration::from_millis(300)).await;
        redis.flushall().await;
        let rival_order = rival.order(item.id, 1, "rival");
        let duplicate = async {
            let held = eventually(Duration::from_secs(5), || async {
                app.reservation_state(&item).await == (Some(0), 1)
            })
            .await;
            // Bounded, so a failure cannot hang behind the locked row.
            let duplicate =
                tokio::time::timeout(Duration::from_secs(5), buyer.order(item.id, 1, "stalled"))
                    .await;
            lock.rollback().await.expect("release the row");
            assert!(held, "{backend:?}: the rival holds the reloaded unit");
            duplicate.expect("the duplicate is answered while the row is locked")
        };
        tokio::join!(rival_order, duplicate)
    };
    let (first, (_, duplicate)) = tokio::join!(stalled, meanwhile);
    assert_eq!(first.status, 201, "{backend:?}: {first:?}");
    assert!(
        duplicate.status == 201 || duplicate.body["retryable"] == true,
        "{backend:?}: a key whose order was still committing is never refused for good: {duplicate:?}"
    );
    let replay = buyer.order_until_definite(item.id, 1, "stalled").await;
    assert_replays(&first, &replay);
    lookup_says_order(&buyer, "stalled", &first.body["order_id"]).await;
    assert_eq!(app.orders_in_db(&item).await, (1, 1), "{backend:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_of_an_order_whose_claim_redis_lost_is_not_refused_on_postgres() {
    a_duplicate_of_an_order_whose_claim_redis_lost(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_of_an_order_whose_claim_redis_lost_is_not_refused_on_mariadb() {
    a_duplicate_of_an_order_whose_claim_redis_lost(Backend::MySql).await;
}

/// Redis's counter below the database's stock (drift a fault left behind)
/// shows a sell-out the database does not have. A refusal on Redis's word
/// alone is not settled: it is kept in the database, so after Redis loses
/// its data the replay hears the same refusal, not a new decision that
/// buys the unit; and the sold-out memo does not learn it, so a new key
/// buys the unit once the counter is reloaded. On main before this test,
/// the refusal lived in Redis only: with the memo off, the replay after the
/// FLUSHALL ordered the unit (409 sold_out, then 201 under the same key, as
/// the fault run's MariaDB history saw); with the memo hot, the new key was
/// refused too.
async fn a_sell_out_that_only_redis_shows(backend: Backend, memo: fn(&mut Config)) {
    let redis = PrivateRedis::start().await;
    let app = app_with_private_redis(backend, &redis, memo).await;
    let item = app.create_item(1, None).await;
    drift_counter(&app, &item, -1).await;
    assert_eq!(app.reservation_state(&item).await, (Some(0), 0));

    let buyer = app.buyer().await;
    let first = buyer.order(item.id, 1, "drifted").await;
    assert_eq!(first.code(), "sold_out", "{backend:?}: {first:?}");
    redis.flushall().await;
    let replay = buyer.order_until_definite(item.id, 1, "drifted").await;
    assert_eq!(
        (replay.status, &replay.body),
        (first.status, &first.body),
        "{backend:?}: the replay repeats the refusal"
    );
    assert_eq!(app.orders_in_db(&item).await, (0, 0), "{backend:?}");

    // The unit was real: a new key buys it from the reloaded counter.
    let next = buyer.order(item.id, 1, "next").await;
    assert_eq!(next.status, 201, "{backend:?}: {next:?}");
}

fn memo_off(config: &mut Config) {
    config.reservation.sold_out_memo = Duration::ZERO;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sell_out_that_only_redis_shows_is_kept_in_the_database_on_postgres() {
    a_sell_out_that_only_redis_shows(Backend::Postgres, memo_off).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sell_out_that_only_redis_shows_is_kept_in_the_database_on_mariadb() {
    a_sell_out_that_only_redis_shows(Backend::MySql, memo_off).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sell_out_that_only_redis_shows_is_kept_in_the_database_on_sqlite() {
    a_sell_out_that_only_redis_shows(Backend::Sqlite, memo_off).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sell_out_that_only_redis_shows_is_not_remembered_by_the_memo() {
    a_sell_out_that_only_redis_shows(Backend::Postgres, |c| {
        c.reservation.sold_out_memo = Duration::from_secs(60);
    })
    .await;
}

/// An attempt whose claim Redis lost while it waited for the item's row
/// ends in a refusal the database keeps ("only 1 left": the writer that
/// held the row left one unit). Meanwhile the buyer's records were loaded again from the
/// database, before that refusal was kept there, so Redis never hears of
/// it. Answering it would be a definite answer that nothing stands behind:
/// once the reloaded records settle, another payload under the key is
/// decided anew and can even order. So it is not answered (the buyer hears
/// "try again"). On main before this test, it was answered 409 sold_out,
/// and the key's later request with qty 1 was answered 201.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_whose_claim_redis_lost_is_not_answered() {
    let redis = PrivateRedis::start().await;
    let app = app_with_private_redis(Backend::Postgres, &redis, memo_off).await;
    let item = app.create_item(2, None).await;
    let empty = app.create_item(0, None).await;
    let buyer = app.buyer().await;
    let mut lock = lock_item_row(&app, &item).await;

    let stalled = buyer.order(item.id, 2, "stalled");
    let meanwhile = async {
        let running = eventually(Duration::from_secs(5), || async {
            buyer.outcome("stalled").await.body["state"] == "in_progress"
        })
        .await;
        redis.flushall().await;
        // Another order of the buyer loads their records again, without
        // the stalled attempt's refusal (not kept yet).
        let reloaded = std::time::Instant::now();
        let probe = buyer.order(empty.id, 1, "probe").await;
        on_item_row(
            &app,
            &mut lock,
            "UPDATE inventory SET stock = 1, version = version + 1 WHERE id = ?",
            &item,
        )
        .await
        .expect("leave one unit");
        lock.commit().await.expect("release the row");
        assert!(running, "the order runs");
        assert_eq!(probe.code(), "sold_out", "{probe:?}");
        reloaded
    };
    let (stalled, reloaded) = tokio::join!(stalled, meanwhile);

    // Past the reloaded records' settling lease.
    let settled = reloaded + server::records::CLAIM_LEASE + Duration::from_secs(1);
    tokio::time::sleep_until(settled.into()).await;
    let changed = buyer.order_until_definite(item.id, 1, "stalled").await;
    if stalled.body["retryable"] == false {
        assert_eq!(
            changed.status, 422,
            "a definite refusal ({stalled:?}) stands: another payload is a reused key, not {changed:?}"
        );
    }
    assert_eq!(
        stalled.body["retryable"], true,
        "a refusal whose claim was lost is not answered for good: {stalled:?}"
    );
}

/// A refusal kept in the database ("only 2 left", which a unit coming back
/// would change), then Redis loses its data while no instance can vouch for
/// a generation of Redis records (here a bypass lease runs, as when an
/// instance orders around Redis; a database too slow to read the
/// generation row does the same). The same key with another payload must
/// still hear 422, and the same payload the refusal, never a new decision.
/// On main before this test, the claim ran unproven, found nothing in
/// Redis, and ordered the other payload (201), the key's first answer
/// having been a definite refusal: what the PostgreSQL fault run's history
/// checker flagged as r1 and r3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_refusal_holds_its_key_while_no_generation_is_vouched_for() {
    let redis = PrivateRedis::start().await;
    let app = app_with_private_redis(Backend::Postgres, &redis, |_| {}).await;
    let item = app.create_item(2, None).await;
    let buyer = app.buyer().await;
    let first = buyer.order(item.id, 3, "too-many").await;
    assert_eq!((first.status, first.code()), (409, "sold_out"), "{first:?}");

    redis.flushall().await;
    let db = &app.state.db;
    let lease = format!(
        "UPDATE record_generation SET bypass_until_ms = {} + 60000 WHERE id = 1",
        db.dialect().now_ms_sql()
    );
    sqlx::query(&lease)
        .execute(db.pool())
        .await
        .expect("start a bypass lease");
    // The instance reads the row every 200 ms.
    tokio::time::sleep(Duration::from_millis(600)).await;

    let changed = buyer.order_until_definite(item.id, 1, "too-many").await;
    assert_eq!(
        (changed.status, changed.code()),
        (422, "idempotency_key_reused"),
        "{changed:?}"
    );
    let replay = buyer.order_until_definite(item.id, 3, "too-many").await;
    assert_eq!((replay.status, &replay.body), (first.status, &first.body));
    assert_eq!(app.orders_in_db(&item).await, (0, 0));
}
