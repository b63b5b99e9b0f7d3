//! The versioned update on SQLite, PostgreSQL and MariaDB: concurrency
//! without overselling, and the unique index that makes a duplicate order
//! impossible.

use crate::harness::{ALL_BACKENDS, Backend, Setup, TestApp, spawn_app};
use app::domain::{BuyerId, IdempotencyKey, Quantity};
use app::model::OrderRequest;
use futures_util::future::join_all;
use server::orders::ledger::versioned::{Backoff, Ledger};
use server::orders::ledger::{LedgerOrder, LedgerRefusal, LedgerWrite, Written};
use server::orders::strategy::Strategy;
use std::time::Duration;

async fn two_hundred_buyers_race_for_fifty_units(backend: Backend) {
    // The versioned update one order at a time (no write coalescing): every
    // sale is one version bump.
    let mut setup = Setup::db_only(backend);
    setup.tweak = |c| c.ledger.batch_max = 1;
    let app = spawn_app(setup).await;
    let item = app.create_item(50, None).await;
    let mut buyers = Vec::new();
    for _ in 0..200 {
        buyers.push(app.buyer().await);
    }
    let answers = join_all(buyers.iter().enumerate().map(|(i, buyer)| {
        let key = format!("race-{i}");
        async move { buyer.order_until_definite(item.id, 1, &key).await }
    }))
    .await;

    let created = answers.iter().filter(|a| a.status == 201).count();
    let sold_out = answers.iter().filter(|a| a.code() == "sold_out").count();
    assert_eq!(created, 50, "{backend:?}: exactly the stock is sold");
    assert_eq!(sold_out, 150, "{backend:?}: everyone else hears sold out");
    let after = app.item(item.id).await;
    assert_eq!(after.stock, 0, "{backend:?}");
    assert_eq!(
        after.version,
        item.version + 50,
        "{backend:?}: one version bump per sale"
    );
    assert_eq!(app.orders_in_db(&item).await, (50, 50), "{backend:?}");
    assert_eq!(app.duplicate_orders().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_orders_sell_exactly_fifty_on_sqlite() {
    two_hundred_buyers_race_for_fifty_units(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_orders_sell_exactly_fifty_on_postgres() {
    two_hundred_buyers_race_for_fifty_units(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_orders_sell_exactly_fifty_on_mariadb() {
    two_hundred_buyers_race_for_fifty_units(Backend::MySql).await;
}

/// Racing the ledger itself (no idempotency record in front): the unique
/// index on (buyer, idempotency_key) lets one insert win.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_buyer_and_key_never_produce_two_orders_even_when_racing() {
    for backend in ALL_BACKENDS {
        let app = spawn_app(Setup::db_only(backend)).await;
        let item = app.create_item(100, None).await;
        let ledger = short_backoff_ledger(&app, 50);
        let buyer = BuyerId::parse("00000000-0000-4000-8000-000000000001").expect("buyer");
        let key = IdempotencyKey::parse("same-intent").expect("key");
        let request = OrderRequest {
            item_id: item.id,
            qty: Quantity::new(2).expect("qty"),
        };
        let order = LedgerOrder {
            buyer,
            key,
            request,
            strategy: Strategy::LedgerOnly,
            pass: None,
            reserved: false,
            commit_by: std::time::Instant::now() + server::records::COMMIT_WITHIN,
        };
        let results = join_all((0..20).map(|_| ledger.write(order.clone()))).await;
        let mut created = Vec::new();
        let mut already = Vec::new();
        for result in results {
            match result.unwrap_or_else(|e| panic!("{backend:?}: {e}")) {
                Written::Created(receipt) => created.push(receipt),
                Written::AlreadyOrdered(receipt) => already.push(receipt),
            }
        }
        assert_eq!(created.len(), 1, "{backend:?}: one insert wins");
        assert_eq!(already.len(), 19, "{backend:?}");
        assert!(
            already.iter().all(|r| r.order_id == created[0].order_id),
            "{backend:?}: all see the winner"
        );
        assert_eq!(app.orders_in_db(&item).await, (1, 2), "{backend:?}");
        assert_eq!(
            app.item(item.id).await.stock,
            98,
            "{backend:?}: stock taken once"
        );
    }
}

/// The same through the API: concurrent requests with one key give one
/// order; every 201 carries that order, the rest are told it is running.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_key_give_one_order_through_the_api() {
    for backend in ALL_BACKENDS {
        let app = spawn_app(Setup::db_only(backend)).await;
        let item = app.create_item(10, None).await;
        let buyer = app.buyer().await;
        let answers = join_all((0..20).map(|_| buyer.order(item.id, 1, "double-tap"))).await;
        let orders: Vec<&str> = answers
            .iter()
            .filter(|a| a.status == 201)
            .map(|a| a.body["order_id"].as_str().unwrap_or_default())
            .collect();
        assert!(!orders.is_empty(), "{backend:?}: one of them ran");
        assert!(
            orders.iter().all(|id| *id == orders[0]),
            "{backend:?}: one order id"
        );
        for a in answers.iter().filter(|a| a.status != 201) {
            assert_eq!(a.status, 409, "{backend:?}: {a:?}");
            assert_eq!(a.code(), "request_in_progress");
            assert_eq!(a.retry_after.as_deref(), Some("1"));
        }
        assert_eq!(app.orders_in_db(&item).await, (1, 1), "{backend:?}");
        let replay = buyer.order(item.id, 1, "double-tap").await;
        assert!(
            replay.replayed && replay.status == 201,
            "{backend:?}: {replay:?}"
        );
        assert_eq!(replay.body["order_id"].as_str(), Some(orders[0]));
    }
}

/// The app's ledger with a short backoff and `max_attempts` tries, for
/// writing to it directly.
fn short_backoff_ledger(app: &TestApp, max_attempts: u32) -> Ledger {
    Ledger::new(
        app.state.db.clone(),
        Backoff {
            max_attempts,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(20),
        },
        app.state.metrics.clone(),
    )
}

fn batched(buyer: &str, key: &str, item: app::domain::ItemId, qty: i64) -> LedgerOrder {
    LedgerOrder {
        buyer: BuyerId::parse(buyer).expect("buyer"),
        key: IdempotencyKey::parse(key).expect("key"),
        request: OrderRequest {
            item_id: item,
            qty: Quantity::new(qty).expect("qty"),
        },
        strategy: Strategy::LedgerOnly,
        pass: None,
        reserved: false,
        commit_by: std::time::Instant::now() + server::records::COMMIT_WITHIN,
    }
}

/// A batch takes stock in arrival order while it lasts; the rest hear sold
/// out with what is left, as they would one by one. A batch holding a key
/// that already has an order falls back to one-by-one writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_admits_in_order_while_stock_lasts_on_every_database() {
    for backend in ALL_BACKENDS {
        let app = spawn_app(Setup::db_only(backend)).await;
        let item = app.create_item(5, None).await;
        let ledger = short_backoff_ledger(&app, 8);
        let a = "00000000-0000-4000-8000-00000000000a";
        let b = "00000000-0000-4000-8000-00000000000b";
        let results = ledger
            .write_batch(&[
                batched(a, "k1", item.id, 2),
                batched(b, "k2", item.id, 2),
                batched(a, "k3", item.id, 2),
                batched(b, "k4", item.id, 1),
            ])
            .await;
        let created: Vec<bool> = results
            .iter()
            .map(|r| matches!(r, Ok(Written::Created(_))))
            .collect();
        assert_eq!(
            created,
            vec![true, true, false, true],
            "{backend:?}: 2 + 2, then 2 does not fit, 1 does"
        );
        assert!(
            matches!(results[2], Err(LedgerRefusal::SoldOut { available: 1 })),
            "{backend:?}: {:?}",
            results[2]
        );
        let after = app.item(item.id).await;
        assert_eq!(after.stock, 0, "{backend:?}");
        assert_eq!(
            after.version,
            item.version + 1,
            "{backend:?}: one versioned update for the batch"
        );
        assert_eq!(app.orders_in_db(&item).await, (3, 5), "{backend:?}");

        let more = app.create_item(10, None).await;
        let first = ledger.write_batch(&[batched(a, "again", more.id, 1)]).await;
        assert!(matches!(first[0], Ok(Written::Created(_))));
        let results = ledger
            .write_batch(&[
                batched(b, "fresh", more.id, 1),
                batched(a, "again", more.id, 1),
            ])
            .await;
        assert!(matches!(results[0], Ok(Written::Created(_))), "{backend:?}");
        assert!(
            matches!(results[1], Ok(Written::AlreadyOrdered(_))),
            "{backend:?}: the duplicate key"
        );
        assert_eq!(app.orders_in_db(&more).await, (2, 2), "{backend:?}");
        assert_eq!(app.duplicate_orders().await, 0);
    }
}

/// Coalesced writes under a burst: 300 concurrent orders of mixed sizes on
/// stock 97 sell exactly 97 units, and every refusal is sold out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coalesced_writes_under_a_burst_sell_exactly_the_stock() {
    for backend in ALL_BACKENDS {
        let mut setup = Setup::db_only(backend);
        setup.tweak = |c| c.ledger.batch_max = 64;
        let app = spawn_app(setup).await;
        let item = app.create_item(97, None).await;
        let buyers = join_all((0..100).map(|_| app.buyer())).await;
        let answers = join_all((0..300).map(|n| {
            let buyer = &buyers[n % 100];
            let key = format!("mix-{n}");
            let qty = 1 + (n % 3) as i64;
            async move { (qty, buyer.order_until_definite(item.id, qty, &key).await) }
        }))
        .await;
        let sold: i64 = answers
            .iter()
            .filter(|(_, a)| a.status == 201)
            .map(|(q, _)| *q)
            .sum();
        assert_eq!(sold, 97, "{backend:?}: every unit, once");
        assert!(
            answers
                .iter()
                .filter(|(_, a)| a.status != 201)
                .all(|(_, a)| a.code() == "sold_out")
        );
        assert_eq!(app.orders_in_db(&item).await.1, 97);
        assert_eq!(app.item(item.id).await.stock, 0);
        assert_eq!(app.duplicate_orders().await, 0);
    }
}

/// An order whose claim's lease runs out before its COMMIT never commits,
/// alone or in a batch (where the others still commit): a replay that takes
/// the claim over, or that Redis's reloaded records prove new, can then
/// never be contradicted by a late commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_order_commits_after_its_claims_lease() {
    for backend in ALL_BACKENDS {
        let app = spawn_app(Setup::db_only(backend)).await;
        let item = app.create_item(5, None).await;
        let ledger = short_backoff_ledger(&app, 8);
        let a = "00000000-0000-4000-8000-00000000000a";
        let b = "00000000-0000-4000-8000-00000000000b";
        let late = |key: &str| LedgerOrder {
            commit_by: std::time::Instant::now(),
            ..batched(a, key, item.id, 1)
        };

        let alone = ledger.write(late("late-alone")).await;
        assert!(
            matches!(alone, Err(LedgerRefusal::LeaseRanOut)),
            "{backend:?}: {alone:?}"
        );
        assert_eq!(app.item(item.id).await.stock, 5, "{backend:?}");

        let results = ledger
            .write_batch(&[
                batched(b, "on-time-1", item.id, 1),
                late("late-in-batch"),
                batched(b, "on-time-2", item.id, 1),
            ])
            .await;
        assert!(matches!(results[0], Ok(Written::Created(_))), "{backend:?}");
        assert!(
            matches!(results[1], Err(LedgerRefusal::LeaseRanOut)),
            "{backend:?}: {:?}",
            results[1]
        );
        assert!(matches!(results[2], Ok(Written::Created(_))), "{backend:?}");
        assert_eq!(app.item(item.id).await.stock, 3, "{backend:?}");
        assert_eq!(app.orders_in_db(&item).await, (2, 2), "{backend:?}");
    }
}
