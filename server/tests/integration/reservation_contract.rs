//! The reservation contract, run against every store: the in-process store
//! and the Redis scripts (on the shared Redis, under a unique key prefix).
//! Time is passed in explicitly (deadlines and `reap(now)`), so expiry is
//! tested without sleeping.

use crate::harness::TestRedis;
use app::domain::{BuyerId, IdempotencyKey, ItemId, Quantity};
use futures_util::future::join_all;
use server::metrics::Metrics;
use server::reservation::memory::InProcessStore;
use server::reservation::queue::{
    AdmissionRate, Admitted, Joined, PassState, QueuePass, QueueRead, QueueTicket, QueueView,
    SaleTerms,
};
use server::reservation::redis::RedisStore;
use server::reservation::{
    Confirmed, CounterSeed, Hold, HoldDeadline, HoldToken, Reconciled, ReservationStore, Reserved,
    reaper,
};
use std::time::{Duration, Instant};

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
        pass: None,
    }
}

fn seed(stock: i64) -> CounterSeed {
    CounterSeed {
        stock,
        version: 1,
        max_per_buyer: None,
        terms: Default::default(),
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

/// A counter set from the database (loaded again, or repaired) already
/// counts every order committed before the read: a hold the reaper gave
/// back, whose order committed before that read, must not take its unit
/// again on a late confirm. Taking it would leave the counter one unit
/// below the database's stock, showing a sell-out the database does not
/// have. (A confirm whose order committed after the read leaves the counter
/// one unit high instead: the database refuses the extra order, and
/// reconciliation repairs it.) On main before this case, both confirms
/// took the unit again.
async fn a_counter_set_from_the_database_forgets_reaped_holds(store: &dyn ReservationStore) {
    store.load(item(30), seed(5), &[]).await.expect("load");
    let late = hold(1, "late", 1);
    store.reserve(item(30), &late).await.expect("reserve");
    store.reap(item(30), NOW + TTL).await.expect("reap");
    // Its order commits (the database's stock is now 4); the counter is
    // loaded again from the database.
    store.forget_counter(item(30)).await.expect("forget");
    store
        .load(item(30), seed(4), &[])
        .await
        .expect("load again");
    assert_eq!(
        store.confirm(item(30), &late.token).await.ok(),
        Some(Confirmed::NoHold)
    );
    assert_eq!(
        store.counter(item(30)).await.ok(),
        Some(Some(4)),
        "the database's stock, not one below"
    );

    let at = |stock: i64, version: i64| CounterSeed {
        stock,
        version,
        ..seed(stock)
    };
    store.load(item(31), at(5, 1), &[]).await.expect("load");
    let late = hold(2, "late", 1);
    store.reserve(item(31), &late).await.expect("reserve");
    store.reap(item(31), NOW + TTL).await.expect("reap");
    // Its order commits; reconciliation sets the counter to the stock.
    assert_eq!(
        store.reconcile(item(31), at(4, 2)).await.ok(),
        Some(Reconciled::Repaired { drift: 1 })
    );
    assert_eq!(
        store.confirm(item(31), &late.token).await.ok(),
        Some(Confirmed::NoHold)
    );
    assert_eq!(store.counter(item(31)).await.ok(), Some(Some(4)));
}

async fn the_per_buyer_limit_counts_holds_and_confirmed_units(store: &dyn ReservationStore) {
    let limited = CounterSeed {
        terms: Default::default(),
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
                terms: Default::default(),
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
        terms: Default::default(),
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

// The waiting room and the sale window: real time (the store's clock).

fn drop_terms(per_second: u32, pass_ttl_secs: u32) -> SaleTerms {
    SaleTerms {
        waiting_room: Some(AdmissionRate {
            per_second,
            pass_ttl_secs,
        }),
        ..SaleTerms::default()
    }
}

fn drop_seed(stock: i64, terms: SaleTerms) -> CounterSeed {
    CounterSeed {
        stock,
        version: 1,
        max_per_buyer: None,
        terms,
    }
}

fn live_hold(buyer_n: u32, key: &str, pass: Option<&QueuePass>) -> Hold {
    Hold {
        deadline: HoldDeadline::at_ms(server::db::now_ms() + 60_000),
        pass: pass.cloned(),
        ..hold(buyer_n, key, 1)
    }
}

/// A line of `n` buyers (1..=n, in that order) on a loaded item, and a
/// first admission round, which starts the rate's clock (its bucket starts
/// empty).
async fn line_up(store: &dyn ReservationStore, id: ItemId, n: u32) {
    store.load_line(id, &[]).await.expect("load the line");
    for b in 1..=n {
        let joined = store
            .join(id, &buyer(b), &QueueTicket::new(), f64::from(b))
            .await
            .expect("join");
        assert!(matches!(joined, Joined::In { new: true, .. }), "{joined:?}");
    }
    admit(store, id).await;
}

async fn view(store: &dyn ReservationStore, id: ItemId, b: u32) -> QueueView {
    match store.queue_view(id, &buyer(b)).await.expect("view") {
        QueueRead::Joined(view) => view,
        other => panic!("buyer {b} is not in the line: {other:?}"),
    }
}

fn pass_of(view: &QueueView) -> QueuePass {
    view.pass.as_ref().expect("a pass").pass.clone()
}

async fn admit(store: &dyn ReservationStore, id: ItemId) -> u64 {
    let candidates: Vec<QueuePass> = (0..64).map(|_| QueuePass::new()).collect();
    match store.admit(id, &candidates).await.expect("admit") {
        Admitted::Done { admitted, .. } => admitted,
        other => panic!("admission did not run: {other:?}"),
    }
}

async fn a_sale_window_is_kept_by_the_stores_clock(store: &dyn ReservationStore) {
    let now = server::db::now_ms();
    let starts_later = SaleTerms {
        starts_at_ms: Some(now + 60_000),
        ..SaleTerms::default()
    };
    store
        .load(item(20), drop_seed(5, starts_later), &[])
        .await
        .expect("load");
    match store.reserve(item(20), &live_hold(1, "early", None)).await {
        Ok(Reserved::NotStarted { starts_in_ms }) => {
            assert!((50_000..=60_000).contains(&starts_in_ms), "{starts_in_ms}")
        }
        other => panic!("{other:?}"),
    }
    let ended = SaleTerms {
        ends_at_ms: Some(now - 1),
        ..SaleTerms::default()
    };
    assert_eq!(store.set_terms(item(20), &ended, 2).await.ok(), Some(true));
    assert_eq!(
        store.set_terms(item(20), &starts_later, 1).await.ok(),
        Some(false),
        "older terms never replace newer ones"
    );
    assert_eq!(
        store
            .reserve(item(20), &live_hold(1, "late", None))
            .await
            .ok(),
        Some(Reserved::Ended)
    );
    store
        .set_terms(item(20), &SaleTerms::default(), 3)
        .await
        .expect("open the sale");
    assert!(matches!(
        store.reserve(item(20), &live_hold(1, "open", None)).await,
        Ok(Reserved::Held { .. })
    ));
}

async fn passes_admit_within_the_stock_and_their_rules(store: &dyn ReservationStore) {
    let id = item(21);
    assert_eq!(
        store
            .join(id, &buyer(1), &QueueTicket::new(), 1.0)
            .await
            .ok(),
        Some(Joined::LineNotLoaded),
        "a line that was never built is built from the database first"
    );
    store
        .load(id, drop_seed(2, drop_terms(1_000, 120)), &[])
        .await
        .expect("load");
    line_up(store, id, 5).await;
    let first_ticket = view(store, id, 1).await.ticket;
    let again = store
        .join(id, &buyer(1), &QueueTicket::new(), 99.0)
        .await
        .expect("join again");
    assert_eq!(
        again,
        Joined::In {
            ticket: first_ticket,
            new: false
        },
        "joining again keeps the place"
    );
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(admit(store, id).await, 2, "two units: two passes");
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(
        admit(store, id).await,
        0,
        "never more open passes than units"
    );
    let (one, two, three) = (
        view(store, id, 1).await,
        view(store, id, 2).await,
        view(store, id, 3).await,
    );
    assert_eq!(one.pass.as_ref().map(|p| p.state), Some(PassState::Open));
    assert!(two.pass.is_some());
    assert_eq!(
        (three.rank, three.pass.is_none()),
        (Some(0), true),
        "next in line"
    );
    let (pass_one, pass_two) = (pass_of(&one), pass_of(&two));

    assert_eq!(
        store.reserve(id, &live_hold(1, "no-pass", None)).await.ok(),
        Some(Reserved::PassRequired)
    );
    assert_eq!(
        store
            .reserve(id, &live_hold(1, "theirs", Some(&pass_two)))
            .await
            .ok(),
        Some(Reserved::PassInvalid),
        "another buyer's pass"
    );
    let order = live_hold(1, "mine", Some(&pass_one));
    assert!(matches!(
        store.reserve(id, &order).await,
        Ok(Reserved::Held { .. })
    ));
    assert_eq!(
        store.reserve(id, &order).await.ok(),
        Some(Reserved::AlreadyHeld),
        "a retry of the same intent with the same pass"
    );
    assert_eq!(
        store
            .reserve(id, &live_hold(1, "again", Some(&pass_one)))
            .await
            .ok(),
        Some(Reserved::PassInvalid),
        "a pass in use by another intent"
    );
    store.confirm(id, &order.token).await.expect("confirm");
    assert_eq!(
        view(store, id, 1).await.pass.map(|p| p.state),
        Some(PassState::Used)
    );
    assert_eq!(
        store
            .reserve(id, &live_hold(1, "reuse", Some(&pass_one)))
            .await
            .ok(),
        Some(Reserved::PassInvalid),
        "a used pass"
    );

    let theirs = live_hold(2, "theirs", Some(&pass_two));
    assert!(matches!(
        store.reserve(id, &theirs).await,
        Ok(Reserved::Held { .. })
    ));
    assert_eq!(store.release(id, &theirs.token).await.ok(), Some(true));
    assert_eq!(
        view(store, id, 2).await.pass.map(|p| p.state),
        Some(PassState::Open),
        "a released hold opens its pass again"
    );
    assert_eq!(
        admit(store, id).await,
        0,
        "the open pass still covers the last unit"
    );
    let stats = store.queue_stats(id).await.expect("stats");
    assert_eq!(
        (stats.waiting, stats.open_passes, stats.passes_used),
        (3, 1, 1)
    );
}

async fn selling_out_reaches_every_waiting_buyer_at_once(store: &dyn ReservationStore) {
    let id = item(22);
    store
        .load(id, drop_seed(1, drop_terms(1_000, 120)), &[])
        .await
        .expect("load");
    line_up(store, id, 3).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(admit(store, id).await, 1);
    assert!(!view(store, id, 3).await.sold_out, "a hold may still come");
    let pass = pass_of(&view(store, id, 1).await);
    let order = live_hold(1, "last", Some(&pass));
    assert!(matches!(
        store.reserve(id, &order).await,
        Ok(Reserved::Held { .. })
    ));
    assert!(
        !view(store, id, 2).await.sold_out,
        "a live hold may give its unit back"
    );
    store.confirm(id, &order.token).await.expect("confirm");
    for b in [2, 3] {
        let waiting = view(store, id, b).await;
        assert!(waiting.sold_out, "buyer {b}: {waiting:?}");
    }
}

async fn a_paused_waiting_room_admits_nobody(store: &dyn ReservationStore) {
    let id = item(23);
    let paused = SaleTerms {
        paused: true,
        ..drop_terms(1_000, 120)
    };
    store
        .load(id, drop_seed(5, paused), &[])
        .await
        .expect("load");
    line_up(store, id, 3).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(admit(store, id).await, 0);
    assert!(view(store, id, 1).await.paused);
    store
        .set_terms(id, &drop_terms(1_000, 120), 2)
        .await
        .expect("resume");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(admit(store, id).await > 0, "resumed");
}

async fn admission_keeps_to_its_rate(store: &dyn ReservationStore) {
    let id = item(24);
    store
        .load(id, drop_seed(1_000, drop_terms(40, 120)), &[])
        .await
        .expect("load");
    line_up(store, id, 200).await;
    let started = Instant::now();
    let mut admitted = 0;
    while started.elapsed() < Duration::from_millis(1_000) {
        admitted += admit(store, id).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let allowed = 40.0 * started.elapsed().as_secs_f64() + 2.0;
    assert!(
        (admitted as f64) <= allowed,
        "{admitted} admitted in {:?}, at most {allowed}",
        started.elapsed()
    );
    assert!(admitted >= 20, "{admitted}: the rate is used, too");
}

async fn an_expired_pass_sends_its_buyer_to_the_back(store: &dyn ReservationStore) {
    let id = item(25);
    store
        .load(id, drop_seed(1, drop_terms(1_000, 1)), &[])
        .await
        .expect("load");
    line_up(store, id, 2).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(admit(store, id).await, 1);
    assert!(view(store, id, 1).await.pass.is_some());
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(admit(store, id).await, 1, "its unit goes to the next buyer");
    let (one, two) = (view(store, id, 1).await, view(store, id, 2).await);
    assert_eq!(
        (one.rank, one.pass.is_none()),
        (Some(0), true),
        "back in line"
    );
    assert!(two.pass.is_some());
    let stats = store.queue_stats(id).await.expect("stats");
    assert_eq!(stats.passes_expired, 1);
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
            a_counter_set_from_the_database_forgets_reaped_holds,
            the_per_buyer_limit_counts_holds_and_confirmed_units,
            loading_sets_only_an_absent_counter_minus_surviving_holds,
            a_load_ends_holds_whose_orders_committed,
            a_restock_applies_once_to_counters_loaded_before_it,
            returned_units_follow_the_database_once_and_free_the_buyer,
            the_reaper_worklist_holds_exactly_the_items_with_holds,
            two_reapers_at_once_give_each_hold_back_once,
            concurrent_reserves_never_take_more_than_the_counter,
            reconcile_repairs_only_quiet_counters,
            a_sale_window_is_kept_by_the_stores_clock,
            passes_admit_within_the_stock_and_their_rules,
            selling_out_reaches_every_waiting_buyer_at_once,
            a_paused_waiting_room_admits_nobody,
            admission_keeps_to_its_rate,
            an_expired_pass_sends_its_buyer_to_the_back,
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
        terms: Default::default(),
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
