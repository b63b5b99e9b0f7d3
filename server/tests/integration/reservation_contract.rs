//! The reservation contract, run against every store: the in-process store
//! and the Redis scripts (on the shared Redis, under a unique key prefix).
//! Time is passed in explicitly (deadlines and `reap(now)`), so expiry is
//! tested without sleeping.

use crate::harness::TestRedis;
use app::domain::{BuyerId, IdempotencyKey, ItemId, Quantity};
use futures_util::future::join_all;
use server::metrics::Metrics;
use server::reservation::memory::InProcessStore;
use server::reservation::redis::RedisStore;
use server::reservation::{
    Confirmed, CounterSeed, Hold, HoldDeadline, HoldToken, Reconciled, ReservationStore, Reserved,
    reaper,
};

const NOW: i64 = 1_700_000_000_000;
const TTL: i64 = 30_000;

fn item(id: i64) -> ItemId {
    ItemId::new(id).expect("item id")
}

fn buyer(n: u32) -> BuyerId {
    BuyerId::parse(&format!("00000000-0000-4000-8000-{n:012}")).expect("buyer id")
}

fn hold(buyer_n: u32, key: &str, qty: i64) -> Hold {
    let buyer = buyer(buyer_n);
    let key = IdempotencyKey::parse(key).expect("key");
    Hold {
        token: HoldToken::new(&buyer, &key),
        buyer,
        qty: Quantity::new(qty).expect("qty"),
        deadline: HoldDeadline::at_ms(NOW + TTL),
    }
}

fn seed(stock: i64) -> CounterSeed {
    CounterSeed {
        stock,
        version: 1,
        max_per_buyer: None,
    }
}

async fn a_missing_counter_is_reported_never_guessed(store: &dyn ReservationStore) {
    let h = hold(1, "k", 1);
    assert_eq!(
        store.reserve(item(1), &h).await.ok(),
        Some(Reserved::NotLoaded),
        "not zero, not plenty"
    );
    assert_eq!(store.counter(item(1)).await.ok(), Some(None));
    assert_eq!(
        store.live_holds(item(1)).await.ok(),
        Some(0),
        "nothing was held"
    );
    store.load(item(1), seed(0), &[]).await.expect("load");
    assert_eq!(
        store.reserve(item(1), &h).await.ok(),
        Some(Reserved::SoldOut {
            available: 0,
            holds: 0
        }),
        "a loaded zero is sold out"
    );
}

async fn reserve_takes_units_and_confirm_keeps_them_taken(store: &dyn ReservationStore) {
    store.load(item(2), seed(5), &[]).await.expect("load");
    let h = hold(1, "k", 2);
    assert_eq!(
        store.reserve(item(2), &h).await.ok(),
        Some(Reserved::Held { remaining: 3 })
    );
    assert_eq!(store.live_holds(item(2)).await.ok(), Some(1));
    assert_eq!(
        store.confirm(item(2), &h.token).await.ok(),
        Some(Confirmed::HoldEnded)
    );
    assert_eq!(
        store.counter(item(2)).await.ok(),
        Some(Some(3)),
        "confirmed units stay taken"
    );
    assert_eq!(store.live_holds(item(2)).await.ok(), Some(0));
    assert_eq!(
        store
            .reap(item(2), NOW + TTL * 10)
            .await
            .map(|r| r.given_back)
            .ok(),
        Some(0)
    );
    assert_eq!(
        store.counter(item(2)).await.ok(),
        Some(Some(3)),
        "a confirmed hold is never reaped"
    );
}

async fn asking_for_more_than_is_left_is_sold_out(store: &dyn ReservationStore) {
    store.load(item(3), seed(2), &[]).await.expect("load");
    assert_eq!(
        store.reserve(item(3), &hold(1, "a", 3)).await.ok(),
        Some(Reserved::SoldOut {
            available: 2,
            holds: 0
        })
    );
    assert_eq!(
        store.reserve(item(3), &hold(1, "b", 2)).await.ok(),
        Some(Reserved::Held { remaining: 0 })
    );
    assert_eq!(
        store.reserve(item(3), &hold(2, "c", 1)).await.ok(),
        Some(Reserved::SoldOut {
            available: 0,
            holds: 1
        }),
        "sold out, with a hold that may still give units back"
    );
    assert_eq!(store.counter(item(3)).await.ok(), Some(Some(0)));
}

async fn a_retry_with_the_same_token_takes_nothing_more(store: &dyn ReservationStore) {
    store.load(item(4), seed(5), &[]).await.expect("load");
    let h = hold(1, "same", 2);
    assert_eq!(
        store.reserve(item(4), &h).await.ok(),
        Some(Reserved::Held { remaining: 3 })
    );
    assert_eq!(
        store.reserve(item(4), &h).await.ok(),
        Some(Reserved::AlreadyHeld)
    );
    assert_eq!(store.counter(item(4)).await.ok(), Some(Some(3)));
    assert_eq!(store.live_holds(item(4)).await.ok(), Some(1));
}

async fn release_gives_back_once_however_often_it_is_called(store: &dyn ReservationStore) {
    store.load(item(5), seed(3), &[]).await.expect("load");
    let h = hold(1, "k", 2);
    store.reserve(item(5), &h).await.expect("reserve");
    assert_eq!(store.release(item(5), &h.token).await.ok(), Some(true));
    for _ in 0..3 {
        assert_eq!(store.release(item(5), &h.token).await.ok(), Some(false));
    }
    assert_eq!(
        store.counter(item(5)).await.ok(),
        Some(Some(3)),
        "no phantom stock"
    );
    let never_held = hold(2, "other", 1);
    assert_eq!(
        store.release(item(5), &never_held.token).await.ok(),
        Some(false)
    );
    assert_eq!(store.counter(item(5)).await.ok(), Some(Some(3)));
}

async fn an_expired_hold_is_given_back_exactly_once(store: &dyn ReservationStore) {
    store.load(item(6), seed(4), &[]).await.expect("load");
    let h = hold(1, "k", 3);
    store.reserve(item(6), &h).await.expect("reserve");
    assert_eq!(
        store
            .reap(item(6), NOW + TTL - 1)
            .await
            .map(|r| r.given_back)
            .ok(),
        Some(0),
        "not yet"
    );
    assert_eq!(store.counter(item(6)).await.ok(), Some(Some(1)));
    let reaped = store.reap(item(6), NOW + TTL).await.expect("reap");
    assert_eq!(
        (reaped.given_back, reaped.holds_left),
        (1, 0),
        "due at its deadline"
    );
    assert_eq!(
        store
            .reap(item(6), NOW + TTL * 2)
            .await
            .map(|r| r.given_back)
            .ok(),
        Some(0)
    );
    assert_eq!(
        store.release(item(6), &h.token).await.ok(),
        Some(false),
        "nothing left to release"
    );
    assert_eq!(
        store.counter(item(6)).await.ok(),
        Some(Some(4)),
        "given back exactly once"
    );
}

async fn confirming_after_the_hold_was_reaped_leaves_no_phantom_stock(
    store: &dyn ReservationStore,
) {
    store.load(item(7), seed(1), &[]).await.expect("load");
    let late = hold(1, "late", 1);
    store.reserve(item(7), &late).await.expect("reserve");
    store.reap(item(7), NOW + TTL).await.expect("reap");
    assert_eq!(
        store.counter(item(7)).await.ok(),
        Some(Some(1)),
        "the reaper gave it back"
    );
    // The order committed anyway: confirming takes the unit again.
    assert_eq!(
        store.confirm(item(7), &late.token).await.ok(),
        Some(Confirmed::TakenAfterReap)
    );
    assert_eq!(
        store.counter(item(7)).await.ok(),
        Some(Some(0)),
        "no phantom unit"
    );
    assert_eq!(
        store.confirm(item(7), &late.token).await.ok(),
        Some(Confirmed::NoHold),
        "only once"
    );
    assert_eq!(store.release(item(7), &late.token).await.ok(), Some(false));
    assert_eq!(store.counter(item(7)).await.ok(), Some(Some(0)), "no drift");

    // A reaped hold whose order failed: release forgets it, so a stray
    // confirm afterwards cannot take the unit a second time.
    store.load(item(8), seed(1), &[]).await.expect("load");
    let failed = hold(2, "failed", 1);
    store.reserve(item(8), &failed).await.expect("reserve");
    store.reap(item(8), NOW + TTL).await.expect("reap");
    assert_eq!(
        store.release(item(8), &failed.token).await.ok(),
        Some(false)
    );
    assert_eq!(
        store.confirm(item(8), &failed.token).await.ok(),
        Some(Confirmed::NoHold)
    );
    assert_eq!(store.counter(item(8)).await.ok(), Some(Some(1)));
}

async fn the_per_buyer_limit_counts_holds_and_confirmed_units(store: &dyn ReservationStore) {
    let limited = CounterSeed {
        stock: 10,
        version: 1,
        max_per_buyer: Some(2),
    };
    store.load(item(9), limited, &[]).await.expect("load");
    let first = hold(1, "first", 2);
    assert!(matches!(
        store.reserve(item(9), &first).await,
        Ok(Reserved::Held { .. })
    ));
    assert_eq!(
        store.reserve(item(9), &hold(1, "second", 1)).await.ok(),
        Some(Reserved::LimitExceeded { already: 2 })
    );
    store.confirm(item(9), &first.token).await.expect("confirm");
    assert_eq!(
        store.reserve(item(9), &hold(1, "third", 1)).await.ok(),
        Some(Reserved::LimitExceeded { already: 2 }),
        "confirmed units still count"
    );
    assert!(
        matches!(
            store.reserve(item(9), &hold(2, "other", 2)).await,
            Ok(Reserved::Held { .. })
        ),
        "another buyer has their own allowance"
    );
    let released = hold(3, "released", 2);
    store.reserve(item(9), &released).await.expect("reserve");
    store
        .release(item(9), &released.token)
        .await
        .expect("release");
    assert!(
        matches!(
            store.reserve(item(9), &hold(3, "again", 2)).await,
            Ok(Reserved::Held { .. })
        ),
        "a released hold frees the allowance"
    );
}

async fn loading_sets_only_an_absent_counter_minus_surviving_holds(store: &dyn ReservationStore) {
    assert_eq!(store.load(item(10), seed(5), &[]).await.ok(), Some(5));
    assert_eq!(
        store.load(item(10), seed(9), &[]).await.ok(),
        Some(5),
        "a present counter is kept"
    );
    store
        .reserve(item(10), &hold(1, "k", 2))
        .await
        .expect("reserve");
    store.forget_counter(item(10)).await.expect("forget");
    assert_eq!(
        store.reserve(item(10), &hold(2, "j", 1)).await.ok(),
        Some(Reserved::NotLoaded)
    );
    assert_eq!(
        store.load(item(10), seed(5), &[]).await.ok(),
        Some(3),
        "the surviving hold's units are not in the database's count yet"
    );
}

async fn a_load_ends_holds_whose_orders_committed(store: &dyn ReservationStore) {
    store.load(item(17), seed(5), &[]).await.expect("load");
    let committed = hold(1, "committed", 2);
    let pending = hold(2, "pending", 1);
    store.reserve(item(17), &committed).await.expect("reserve");
    store.reserve(item(17), &pending).await.expect("reserve");
    let mut tokens = store.hold_tokens(item(17)).await.expect("tokens");
    tokens.sort();
    let mut expected = vec![committed.token.clone(), pending.token.clone()];
    expected.sort();
    assert_eq!(tokens, expected, "the live holds' tokens");
    // The first hold's order committed (the database says 3 left), its
    // confirm was lost, and so was the counter.
    store.forget_counter(item(17)).await.expect("forget");
    assert_eq!(
        store
            .load(item(17), seed(3), std::slice::from_ref(&committed.token))
            .await
            .ok(),
        Some(2),
        "3 in the database minus the pending hold; the committed one is not taken twice"
    );
    assert_eq!(store.live_holds(item(17)).await.ok(), Some(1), "it ended");
}

async fn a_restock_applies_once_to_counters_loaded_before_it(store: &dyn ReservationStore) {
    assert_eq!(
        store.restock(item(11), 5, 2).await.ok(),
        Some(false),
        "nothing loaded: the next load reads it"
    );
    store
        .load(
            item(11),
            CounterSeed {
                stock: 1,
                version: 3,
                max_per_buyer: None,
            },
            &[],
        )
        .await
        .expect("load");
    assert_eq!(
        store.restock(item(11), 5, 3).await.ok(),
        Some(false),
        "loaded at or after it"
    );
    assert_eq!(store.restock(item(11), 5, 4).await.ok(), Some(true));
    assert_eq!(store.restock(item(11), -2, 5).await.ok(), Some(true));
    assert_eq!(store.counter(item(11)).await.ok(), Some(Some(4)));
}

async fn returned_units_follow_the_database_once_and_free_the_buyer(store: &dyn ReservationStore) {
    let limited = |stock: i64, version: i64| CounterSeed {
        stock,
        version,
        max_per_buyer: Some(1),
    };
    store
        .load(item(18), limited(1, 3), &[])
        .await
        .expect("load");
    let bought = hold(1, "bought", 1);
    assert_eq!(
        store.reserve(item(18), &bought).await.ok(),
        Some(Reserved::Held { remaining: 0 })
    );
    store
        .confirm(item(18), &bought.token)
        .await
        .expect("confirm");
    // The order expired: the database put its unit back at version 4.
    assert_eq!(
        store.return_units(item(18), 1, 4, &buyer(1)).await.ok(),
        Some(true)
    );
    assert_eq!(store.counter(item(18)).await.ok(), Some(Some(1)));
    assert_eq!(
        store.reserve(item(18), &hold(1, "after", 1)).await.ok(),
        Some(Reserved::Held { remaining: 0 }),
        "the buyer's expired unit no longer counts toward the limit"
    );

    // A counter loaded after the return already has the unit.
    store
        .load(item(19), limited(1, 5), &[])
        .await
        .expect("load");
    assert_eq!(
        store.return_units(item(19), 1, 5, &buyer(2)).await.ok(),
        Some(false)
    );
    assert_eq!(store.counter(item(19)).await.ok(), Some(Some(1)));
    assert_eq!(
        store.return_units(item(20), 2, 1, &buyer(1)).await.ok(),
        Some(false),
        "no counter: the next load reads the database"
    );
}

async fn the_reaper_worklist_holds_exactly_the_items_with_holds(store: &dyn ReservationStore) {
    store.load(item(12), seed(5), &[]).await.expect("load");
    store.load(item(13), seed(5), &[]).await.expect("load");
    let a = hold(1, "a", 1);
    let b = hold(1, "b", 1);
    store.reserve(item(12), &a).await.expect("reserve");
    store.reserve(item(13), &b).await.expect("reserve");
    let listed = store.items_with_holds().await.expect("list");
    assert!(
        listed.contains(&item(12)) && listed.contains(&item(13)),
        "{listed:?}"
    );
    store.confirm(item(12), &a.token).await.expect("confirm");
    assert_eq!(
        reaper::reap_all(store, &Metrics::disabled(), NOW + TTL)
            .await
            .ok(),
        Some(1),
        "b expired"
    );
    assert!(
        store.items_with_holds().await.expect("list").is_empty(),
        "no hold, no work"
    );
    assert_eq!(store.counter(item(13)).await.ok(), Some(Some(5)));
}

async fn two_reapers_at_once_give_each_hold_back_once(store: &dyn ReservationStore) {
    store.load(item(14), seed(300), &[]).await.expect("load");
    let holds: Vec<Hold> = (0..250).map(|n| hold(n, &format!("h{n}"), 1)).collect();
    for h in &holds {
        store.reserve(item(14), h).await.expect("reserve");
    }
    assert_eq!(store.counter(item(14)).await.ok(), Some(Some(50)));
    let metrics = Metrics::disabled();
    let (a, b) = tokio::join!(
        reaper::reap_all(store, &metrics, NOW + TTL),
        reaper::reap_all(store, &metrics, NOW + TTL)
    );
    assert_eq!(
        a.expect("reaper a") + b.expect("reaper b"),
        250,
        "each hold given back once"
    );
    assert_eq!(store.counter(item(14)).await.ok(), Some(Some(300)));
    assert_eq!(store.live_holds(item(14)).await.ok(), Some(0));
}

async fn concurrent_reserves_never_take_more_than_the_counter(store: &dyn ReservationStore) {
    store.load(item(15), seed(50), &[]).await.expect("load");
    let holds: Vec<Hold> = (0..200).map(|n| hold(n, "race", 1)).collect();
    let answers = join_all(holds.iter().map(|h| store.reserve(item(15), h))).await;
    let held = answers
        .iter()
        .filter(|a| matches!(a, Ok(Reserved::Held { .. })))
        .count();
    let sold_out = answers
        .iter()
        .filter(|a| matches!(a, Ok(Reserved::SoldOut { .. })))
        .count();
    assert_eq!((held, sold_out), (50, 150));
    assert_eq!(store.counter(item(15)).await.ok(), Some(Some(0)));
    assert_eq!(store.live_holds(item(15)).await.ok(), Some(50));
}

/// Runs every contract case against one store kind, one test per case.
macro_rules! contract {
    ($store:ident, $make:expr, [$($case:ident),* $(,)?]) => {
        mod $store {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (store, _guard) = $make.await;
                    super::$case(store.as_ref()).await;
                }
            )*
        }
    };
}

async fn in_process() -> (Box<dyn ReservationStore>, ()) {
    (Box::new(InProcessStore::new()), ())
}

async fn redis_store() -> (Box<dyn ReservationStore>, TestRedis) {
    let redis = TestRedis::new();
    let target = server::config::RedisTarget::Single(redis.url.clone());
    let conn =
        server::redis_conn::RedisConn::connect(&target, std::time::Duration::from_millis(500))
            .await
            .expect("connect")
            .expect("a redis target");
    (Box::new(RedisStore::new(conn, redis.prefix.clone())), redis)
}

/// Every contract case, named once: `every_case!(m!(args))` expands to
/// `m!(args [case, ...])`.
macro_rules! every_case {
    ($callback:ident ! ( $($args:tt)* )) => {
        $callback! { $($args)* [
            a_missing_counter_is_reported_never_guessed,
            reserve_takes_units_and_confirm_keeps_them_taken,
            asking_for_more_than_is_left_is_sold_out,
            a_retry_with_the_same_token_takes_nothing_more,
            release_gives_back_once_however_often_it_is_called,
            an_expired_hold_is_given_back_exactly_once,
            confirming_after_the_hold_was_reaped_leaves_no_phantom_stock,
            the_per_buyer_limit_counts_holds_and_confirmed_units,
            loading_sets_only_an_absent_counter_minus_surviving_holds,
            a_load_ends_holds_whose_orders_committed,
            a_restock_applies_once_to_counters_loaded_before_it,
            returned_units_follow_the_database_once_and_free_the_buyer,
            the_reaper_worklist_holds_exactly_the_items_with_holds,
            two_reapers_at_once_give_each_hold_back_once,
            concurrent_reserves_never_take_more_than_the_counter,
            reconcile_repairs_only_quiet_counters,
        ] }
    };
}

every_case!(contract!(in_process_store, in_process(),));
every_case!(contract!(redis_scripts, redis_store(),));

/// After a Redis restart the scripts are gone (NOSCRIPT): every call loads
/// its script again and goes on. SCRIPT FLUSH on a private server stands in
/// for the restart.
#[tokio::test]
async fn the_redis_store_reloads_its_scripts_after_they_are_flushed() {
    let redis = crate::harness::PrivateRedis::start().await;
    let target = server::config::RedisTarget::Single(redis.url());
    let conn =
        server::redis_conn::RedisConn::connect(&target, std::time::Duration::from_millis(500))
            .await
            .expect("connect")
            .expect("a redis target");
    let store = RedisStore::new(conn, "");
    let mut admin = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("admin connection");
    for round in 0..3 {
        redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async::<()>(&mut admin)
            .await
            .expect("script flush");
        let h = hold(1, &format!("after-flush-{round}"), 1);
        if round == 0 {
            assert_eq!(
                store.reserve(item(1), &h).await.ok(),
                Some(Reserved::NotLoaded)
            );
            store.load(item(1), seed(5), &[]).await.expect("load");
            redis::cmd("SCRIPT")
                .arg("FLUSH")
                .query_async::<()>(&mut admin)
                .await
                .expect("script flush");
        }
        assert!(
            matches!(store.reserve(item(1), &h).await, Ok(Reserved::Held { .. })),
            "round {round}"
        );
        redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async::<()>(&mut admin)
            .await
            .expect("script flush");
        assert_eq!(
            store.confirm(item(1), &h.token).await.ok(),
            Some(Confirmed::HoldEnded)
        );
    }
}

async fn reconcile_repairs_only_quiet_counters(store: &dyn ReservationStore) {
    let at = |stock: i64, version: i64| CounterSeed {
        stock,
        version,
        max_per_buyer: None,
    };
    assert_eq!(
        store.reconcile(item(16), at(5, 1)).await.ok(),
        Some(Reconciled::NotLoaded)
    );
    store.load(item(16), at(5, 1), &[]).await.expect("load");
    assert_eq!(
        store.reconcile(item(16), at(5, 1)).await.ok(),
        Some(Reconciled::InStep)
    );
    // A counter left 2 units too high (say, confirms lost in an outage).
    store.restock(item(16), 2, 2).await.expect("drift");
    let h = hold(1, "busy", 1);
    store.reserve(item(16), &h).await.expect("reserve");
    assert_eq!(
        store.reconcile(item(16), at(5, 2)).await.ok(),
        Some(Reconciled::Busy { holds: 1 }),
        "not compared while a hold is live"
    );
    store.release(item(16), &h.token).await.expect("release");
    assert_eq!(
        store.reconcile(item(16), at(5, 2)).await.ok(),
        Some(Reconciled::Repaired { drift: 2 })
    );
    assert_eq!(store.counter(item(16)).await.ok(), Some(Some(5)));
    assert_eq!(
        store.reconcile(item(16), at(5, 2)).await.ok(),
        Some(Reconciled::InStep)
    );
}

/// Every contract case, one after the other, on one store kind.
macro_rules! run_contract {
    ($make:expr, [$($case:ident),* $(,)?]) => {
        $(
            let store = $make(stringify!($case));
            $case(store.as_ref()).await;
        )*
    };
}

/// The Redis scripts on a real three-master Redis Cluster: every script
/// touches one slot (the item's hash tag), so they run unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_holds_on_a_redis_cluster() {
    let cluster = crate::harness::RedisCluster::start().await;
    let target = server::config::RedisTarget::Cluster(cluster.nodes());
    let conn =
        server::redis_conn::RedisConn::connect(&target, std::time::Duration::from_millis(500))
            .await
            .expect("connect")
            .expect("a cluster target");
    let make = |case: &str| -> Box<dyn ReservationStore> {
        Box::new(RedisStore::new(conn.clone(), format!("{case}:")))
    };
    assert_eq!(make("kind").kind(), "redis-cluster");
    every_case!(run_contract!(make,));
}
