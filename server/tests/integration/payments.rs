//! The payment deadline: the state machine `awaiting_payment → paid |
//! expired → refund_due` on every database, signed webhooks (signature,
//! replays, amounts), payment and expiry racing at the deadline, expired
//! units sold again (limits and the sold-out memo included), replays of the
//! original 201 after Redis lost its data, several instances expiring, and
//! the demo provider's checkout.

use crate::harness::{
    ADMIN_TOKEN, Answer, Backend, Buyer, PrivateRedis, Setup, TestApp, answer, eventually,
    http_client, metric, scrape_metrics, spawn_app, spawn_twin,
};
use futures_util::future::join_all;
use server::config::{Config, PaymentProvider};
use server::payments::signature::WebhookSecret;
use std::time::Duration;

const SECRET: &str = "whsec_integration_0123456789abcdef";

/// Payments with a window long enough to pay at leisure, and a fast reaper.
fn three_second_window(config: &mut Config) {
    config.payments.window = Some(Duration::from_secs(3));
    config.payments.webhook_secret = Some(SECRET.into());
    config.payments.reaper_interval = Duration::from_millis(50);
}

/// The race: a one-second window, a reaper every 20 ms.
fn race_window(config: &mut Config) {
    config.payments.window = Some(Duration::from_secs(1));
    config.payments.webhook_secret = Some(SECRET.into());
    config.payments.reaper_interval = Duration::from_millis(20);
}

/// Redis (or, on SQLite, the in-process store) in front of the database.
fn setup(backend: Backend, tweak: fn(&mut Config)) -> Setup {
    let mut setup = match backend {
        Backend::Sqlite => Setup::embedded(),
        other => Setup::redis(other),
    };
    setup.tweak = tweak;
    setup
}

fn now_ms() -> i64 {
    server::db::now_ms()
}

fn event(event_id: &str, order_id: &str, amount_cents: i64) -> serde_json::Value {
    serde_json::json!({
        "event_id": event_id,
        "type": "payment.succeeded",
        "order_id": order_id,
        "amount_cents": amount_cents,
    })
}

/// Delivers `body` as a provider would, signed with `secret` at `signed_at`
/// (unix seconds); `None` sends no signature at all.
async fn deliver(base: &str, body: &[u8], signature: Option<String>) -> Answer {
    let mut request = http_client()
        .post(format!("{base}/api/payments/webhook"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("Payment-Signature", signature);
    }
    answer(request.send().await.expect("webhook")).await
}

/// A correctly signed `payment.succeeded` for `order_id`.
async fn pay(app: &TestApp, event_id: &str, order_id: &str, amount_cents: i64) -> Answer {
    let body = event(event_id, order_id, amount_cents).to_string();
    let signature = WebhookSecret::new(SECRET).sign(now_ms() / 1000, body.as_bytes());
    deliver(&app.base, body.as_bytes(), Some(signature)).await
}

async fn order_now(buyer: &Buyer, base: &str, order_id: &str) -> Answer {
    answer(
        buyer
            .client
            .get(format!("{base}/api/orders/{order_id}"))
            .send()
            .await
            .expect("order view"),
    )
    .await
}

async fn admin_get(app: &TestApp, path: &str) -> serde_json::Value {
    let response = http_client()
        .get(format!("{}{path}", app.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin call");
    assert_eq!(response.status().as_u16(), 200, "{path}");
    response.json().await.expect("json")
}

async fn stats(app: &TestApp, item: &app::model::Item) -> serde_json::Value {
    admin_get(app, &format!("/api/admin/items/{}/stats", item.id)).await
}

fn order_id(placed: &Answer) -> String {
    placed.body["order_id"]
        .as_str()
        .expect("an order id")
        .to_owned()
}

/// The full life of orders on one database: paid in time, replayed,
/// paid twice, left to expire, sold again, paid late.
async fn the_state_machine(backend: Backend) {
    let app = spawn_app(setup(backend, three_second_window)).await;
    let item = app.create_item(1, None).await;
    let (alice, bob, carol) = (app.buyer().await, app.buyer().await, app.buyer().await);

    // Paid in time.
    let placed = alice.order(item.id, 1, "alice-1").await;
    assert_eq!(placed.status, 201, "{placed:?}");
    assert_eq!(placed.body["status"], "awaiting_payment");
    let created = placed.body["created_at_ms"].as_i64().expect("created");
    assert_eq!(placed.body["pay_by_ms"].as_i64(), Some(created + 3_000));
    let paid_order = order_id(&placed);
    let view = order_now(&alice, &app.base, &paid_order).await;
    assert_eq!(
        (view.status, &view.body["status"]),
        (200, &serde_json::json!("awaiting_payment"))
    );
    let foreign = order_now(&bob, &app.base, &paid_order).await;
    assert_eq!(
        (foreign.status, foreign.code()),
        (404, "not_found"),
        "another buyer's order is not found"
    );
    let paid = pay(&app, "evt-alice", &paid_order, 1999).await;
    assert_eq!(paid.status, 200, "{paid:?}");
    assert_eq!(paid.body["result"], "paid");
    assert_eq!(
        pay(&app, "evt-alice", &paid_order, 1999).await.body,
        paid.body,
        "a repeated event answers the same"
    );
    let view = order_now(&alice, &app.base, &paid_order).await;
    assert_eq!(view.body["status"], "paid");
    assert!(view.body["paid_at_ms"].as_i64().is_some());
    let replay = alice.order(item.id, 1, "alice-1").await;
    assert_eq!(
        (replay.status, &replay.body, replay.replayed),
        (201, &placed.body, true),
        "the key answers the original 201, paid or not"
    );
    let twice = pay(&app, "evt-alice-again", &paid_order, 1999).await;
    assert_eq!(twice.body["result"], "duplicate", "{twice:?}");

    // Left to expire: its unit comes back and sells again.
    app.restock(&item, 1).await;
    let placed = bob.order(item.id, 1, "bob-1").await;
    assert_eq!(placed.status, 201, "{placed:?}");
    let expiring = order_id(&placed);
    assert_eq!(
        carol.order(item.id, 1, "carol-early").await.code(),
        "sold_out"
    );
    let expired = eventually(Duration::from_secs(10), || async {
        order_now(&bob, &app.base, &expiring).await.body["status"] == "expired"
    })
    .await;
    assert!(expired, "unpaid past its deadline, the order expired");
    let s = stats(&app, &item).await;
    assert_eq!(
        (s["stock"].as_i64(), s["units_returned"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        s["units_ordered"].as_i64(),
        Some(1),
        "units_ordered counts orders holding units: with the stock, 1 + restock 1"
    );
    let again = carol.order(item.id, 1, "carol-1").await;
    assert_eq!(again.status, 201, "the returned unit is on sale: {again:?}");

    // Paid after the expiry: a refund, never a unit.
    let late = pay(&app, "evt-bob-late", &expiring, 1999).await;
    assert_eq!(
        (late.status, &late.body["result"]),
        (200, &serde_json::json!("refund_due"))
    );
    assert_eq!(
        order_now(&bob, &app.base, &expiring).await.body["status"],
        "refund_due"
    );
    let replay = bob.order(item.id, 1, "bob-1").await;
    assert_eq!(
        (replay.status, &replay.body),
        (201, &placed.body),
        "an expired order's key still answers its original 201"
    );
    let s = stats(&app, &item).await;
    assert_eq!(
        s["stock"].as_i64(),
        Some(0),
        "the late payment took no unit"
    );
    assert_eq!(s["units_ordered"].as_i64(), Some(2));
    assert_eq!(s["orders_by_status"]["paid"], 1);
    assert_eq!(s["orders_by_status"]["refund_due"], 1);
    assert_eq!(s["orders_by_status"]["awaiting_payment"], 1);
    let refunds = admin_get(&app, "/api/admin/refunds").await;
    let mut owed: Vec<(String, String)> = refunds
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| {
            (
                r["event_id"].as_str().unwrap_or_default().to_owned(),
                r["result"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    owed.sort();
    assert_eq!(
        owed,
        vec![
            ("evt-alice-again".into(), "duplicate".into()),
            ("evt-bob-late".into(), "refund_due".into())
        ]
    );
    let metrics = scrape_metrics(&app.base).await;
    assert_eq!(
        metric(
            &metrics,
            r#"oversell_payment_webhooks_total{result="paid"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"oversell_payment_webhooks_total{result="refund_due"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"oversell_order_transitions_total{to="expired"}"#
        ),
        1.0
    );
    assert_eq!(metric(&metrics, "oversell_units_returned_total"), 1.0);
    assert_eq!(
        metric(&metrics, "oversell_expiry_to_resale_seconds_count"),
        1.0,
        "carol's order bought the returned unit"
    );
    if app.state.reservation.is_some() {
        let settled = eventually(Duration::from_secs(10), || async {
            app.reservation_state(&item).await == (Some(0), 0)
        })
        .await;
        assert!(settled, "{:?}", app.reservation_state(&item).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_paid_expire_sell_again_and_late_payments_are_refunds_on_postgres() {
    the_state_machine(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_paid_expire_sell_again_and_late_payments_are_refunds_on_mariadb() {
    the_state_machine(Backend::MySql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_paid_expire_sell_again_and_late_payments_are_refunds_on_sqlite() {
    the_state_machine(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_need_a_valid_signature_the_right_amount_and_apply_each_event_once() {
    let app = spawn_app(setup(Backend::Postgres, three_second_window)).await;
    let item = app.create_item(5, None).await;
    let buyer = app.buyer().await;
    let placed = buyer.order(item.id, 2, "two").await;
    assert_eq!(placed.status, 201);
    let order = order_id(&placed);
    let body = event("evt-1", &order, 3998).to_string();
    let now = now_ms() / 1000;
    let secret = WebhookSecret::new(SECRET);

    let refused = |a: &Answer| (a.status, a.code().to_owned());
    let bad = ("invalid_signature".to_owned(), 400);
    for (why, signature) in [
        ("no signature", None),
        ("garbage", Some("t=abc,v1=xyz".to_owned())),
        (
            "another secret",
            Some(WebhookSecret::new("whsec_someone_else_entirely").sign(now, body.as_bytes())),
        ),
        (
            "older than 300 s",
            Some(secret.sign(now - 301, body.as_bytes())),
        ),
        (
            "signed for another body",
            Some(secret.sign(now, event("evt-1", &order, 1).to_string().as_bytes())),
        ),
    ] {
        let answer = deliver(&app.base, body.as_bytes(), signature).await;
        assert_eq!(
            refused(&answer),
            (bad.1, bad.0.clone()),
            "{why}: {answer:?}"
        );
        assert_eq!(answer.body["retryable"], false, "{why}");
    }
    let malformed = b"{\"event_id\": 1}";
    let answer = deliver(&app.base, malformed, Some(secret.sign(now, malformed))).await;
    assert_eq!(refused(&answer), (400, "invalid_request".into()));
    let unknown = pay(
        &app,
        "evt-unknown",
        "00000000-0000-7000-8000-000000000000",
        3998,
    )
    .await;
    assert_eq!(refused(&unknown), (404, "not_found".into()));
    let short = pay(&app, "evt-short", &order, 1999).await;
    assert_eq!(refused(&short), (422, "amount_mismatch".into()));
    assert_eq!(
        order_now(&buyer, &app.base, &order).await.body["status"],
        "awaiting_payment",
        "a wrong amount leaves the order as it was"
    );
    let other = serde_json::json!({"event_id": "evt-refund", "type": "charge.refunded", "order_id": order, "amount_cents": 3998}).to_string();
    let ignored = deliver(
        &app.base,
        other.as_bytes(),
        Some(secret.sign(now, other.as_bytes())),
    )
    .await;
    assert_eq!(
        (ignored.status, &ignored.body["result"]),
        (200, &serde_json::json!("ignored"))
    );

    // The same event delivered twenty times at once: one effect, one answer.
    let deliveries = join_all((0..20).map(|_| pay(&app, "evt-1", &order, 3998))).await;
    for delivery in &deliveries {
        assert_eq!(delivery.status, 200, "{delivery:?}");
        assert_eq!(delivery.body, deliveries[0].body);
    }
    assert_eq!(deliveries[0].body["result"], "paid");
    let events: i64 = sqlx::query_scalar(
        &app.state
            .db
            .sql("SELECT COUNT(*) FROM payment_events WHERE order_id = ?"),
    )
    .bind(order.as_str())
    .fetch_one(app.state.db.pool())
    .await
    .expect("count events");
    assert_eq!(events, 1);
    let reused = pay(&app, "evt-1", &order, 1).await;
    assert_eq!(
        refused(&reused),
        (422, "idempotency_key_reused".into()),
        "an event id applied to another payment"
    );
    let metrics = scrape_metrics(&app.base).await;
    assert_eq!(
        metric(
            &metrics,
            r#"oversell_payment_webhooks_total{result="paid"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"oversell_payment_webhooks_total{result="replayed"}"#
        ),
        19.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"oversell_payment_webhooks_total{result="invalid_signature"}"#
        ),
        5.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_window_orders_are_confirmed_and_the_webhook_is_not_found() {
    let app = spawn_app(Setup::embedded()).await;
    let item = app.create_item(1, None).await;
    let buyer = app.buyer().await;
    let placed = buyer.order(item.id, 1, "final").await;
    assert_eq!(placed.body["status"], "confirmed");
    assert!(placed.body.get("pay_by_ms").is_none(), "{placed:?}");
    let view = order_now(&buyer, &app.base, &order_id(&placed)).await;
    assert_eq!(view.body["status"], "confirmed");
    let answer = pay(&app, "evt", &order_id(&placed), 1999).await;
    assert_eq!((answer.status, answer.code()), (404, "not_found"));
    assert_eq!(
        admin_get(&app, "/api/admin/refunds").await,
        serde_json::json!([])
    );
}

/// Rounds of the race per database, and how many run at once.
const RACE_ROUNDS: usize = 200;
const RACE_PARALLEL: usize = 20;
/// Where each round's racers start, relative to the deadline (ms): mostly
/// just before it (a request takes a few milliseconds to reach the
/// database) and at it, and a few clearly before and after.
const RACE_OFFSETS_MS: [i64; 11] = [-400, -100, -60, -40, -25, -15, -5, 0, 10, 25, 400];

/// At the deadline, a payment, an expiry pass and the background reaper
/// race for the same order, `RACE_ROUNDS` times: exactly one of *paid* or
/// *expired* wins each time (a late payment then makes it `refund_due`),
/// the webhook's answer says which, and the stock adds up.
async fn payment_and_expiry_race(backend: Backend) {
    let app = spawn_app(setup(backend, race_window)).await;
    let desk = app.state.payments.clone().expect("payments are on");
    let item = app.create_item(RACE_ROUNDS as i64, None).await;
    let buyers = join_all((0..8).map(|_| app.buyer())).await;
    let mut paid = 0;
    let mut refund_due = 0;
    for batch in 0..RACE_ROUNDS / RACE_PARALLEL {
        let rounds = join_all((0..RACE_PARALLEL).map(|i| {
            let n = batch * RACE_PARALLEL + i;
            let (buyer, desk, app) = (&buyers[n % buyers.len()], desk.clone(), &app);
            async move {
                let placed = buyer.order(item.id, 1, &format!("race-{n}")).await;
                assert_eq!(placed.status, 201, "{placed:?}");
                let order = order_id(&placed);
                let deadline = placed.body["pay_by_ms"].as_i64().expect("a deadline");
                // The point of the test is the instant: wait for it.
                let start_at = deadline + RACE_OFFSETS_MS[n % RACE_OFFSETS_MS.len()];
                let wait = u64::try_from(start_at - now_ms()).unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(wait)).await;
                let event_id = format!("race-evt-{n}");
                let (webhook, expiry) =
                    tokio::join!(pay(app, &event_id, &order, 1999), desk.expire_due());
                expiry.expect("the expiry pass ran");
                assert_eq!(webhook.status, 200, "{webhook:?}");
                let result = webhook.body["result"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let status = order_now(buyer, &app.base, &order).await.body["status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                assert_eq!(result, status, "the webhook's answer is the order's fate");
                result
            }
        }))
        .await;
        for result in rounds {
            match result.as_str() {
                "paid" => paid += 1,
                "refund_due" => refund_due += 1,
                other => panic!("a round ended {other}"),
            }
        }
    }
    eprintln!(
        "payment/expiry race on {backend:?}: {RACE_ROUNDS} rounds: {paid} paid, {refund_due} expired then refund_due, 0 both"
    );
    assert_eq!(paid + refund_due, RACE_ROUNDS);
    assert!(
        paid > 0 && refund_due > 0,
        "both fates happened: {paid} / {refund_due}"
    );
    let s = stats(&app, &item).await;
    assert_eq!(s["orders_by_status"]["paid"].as_i64(), Some(paid as i64));
    assert_eq!(
        s["orders_by_status"]["refund_due"].as_i64(),
        Some(refund_due as i64)
    );
    assert_eq!(s["units_ordered"].as_i64(), Some(paid as i64));
    assert_eq!(s["units_returned"].as_i64(), Some(refund_due as i64));
    assert_eq!(
        s["stock"].as_i64(),
        Some((RACE_ROUNDS - paid) as i64),
        "each expired unit is back once, each paid one is gone"
    );
    let owed = admin_get(&app, "/api/admin/refunds").await;
    assert_eq!(owed.as_array().map(Vec::len), Some(refund_due));
    let stock = s["stock"].as_i64();
    let in_step = eventually(Duration::from_secs(10), || async {
        app.reservation_state(&item).await == (stock, 0)
    })
    .await;
    assert!(
        in_step,
        "counter {:?}, stock {stock:?}",
        app.reservation_state(&item).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payment_and_expiry_at_the_same_instant_settle_each_order_once_on_postgres() {
    payment_and_expiry_race(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payment_and_expiry_at_the_same_instant_settle_each_order_once_on_mariadb() {
    payment_and_expiry_race(Backend::MySql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payment_and_expiry_at_the_same_instant_settle_each_order_once_on_sqlite() {
    payment_and_expiry_race(Backend::Sqlite).await;
}

fn three_seconds_and_a_long_memo(config: &mut Config) {
    three_second_window(config);
    config.reservation.sold_out_memo = Duration::from_secs(60);
}

/// An expired order stops counting toward the per-buyer limit (in Redis and
/// in the database), and the sold-out memo forgets the item at once.
async fn an_expired_order_frees_the_limit_and_the_memo(backend: Backend) {
    let app = spawn_app(setup(backend, three_seconds_and_a_long_memo)).await;
    let item = app.create_item(1, Some(1)).await;
    let (alice, bob) = (app.buyer().await, app.buyer().await);
    let first = alice.order(item.id, 1, "first").await;
    assert_eq!(first.status, 201);
    assert_eq!(bob.order(item.id, 1, "bob-early").await.code(), "sold_out");
    app.restock(&item, 1).await;
    assert_eq!(
        alice.order(item.id, 1, "second").await.code(),
        "limit_exceeded",
        "one per buyer"
    );
    let expired = eventually(Duration::from_secs(10), || async {
        order_now(&alice, &app.base, &order_id(&first)).await.body["status"] == "expired"
    })
    .await;
    assert!(expired);
    // The row changes first; the counter, the limit and the memo follow
    // (the stock path), after which the unit counts as returned.
    let returned = eventually(Duration::from_secs(5), || async {
        metric(
            &scrape_metrics(&app.base).await,
            "oversell_units_returned_total",
        ) == 1.0
    })
    .await;
    assert!(returned, "the unit is back on sale");
    let again = alice.order(item.id, 1, "third").await;
    assert_eq!(
        again.status, 201,
        "the expired order no longer counts: {again:?}"
    );
    let bob_now = bob.order(item.id, 1, "bob-late").await;
    assert_eq!(
        bob_now.status, 201,
        "the memo forgot the sell-out when the unit came back: {bob_now:?}"
    );
    assert_eq!(stats(&app, &item).await["stock"].as_i64(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_order_frees_the_limit_and_the_memo_with_redis_and_mariadb() {
    an_expired_order_frees_the_limit_and_the_memo(Backend::MySql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_order_frees_the_limit_and_the_memo_in_process_on_sqlite() {
    an_expired_order_frees_the_limit_and_the_memo(Backend::Sqlite).await;
}

/// Redis loses every record after an order was paid and another expired:
/// both keys still answer their original 201, rebuilt from the rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_loses_its_data_paid_and_expired_orders_replay_their_original_answer() {
    let redis = PrivateRedis::start().await;
    let mut setup = setup(Backend::Postgres, three_second_window);
    setup.redis_url = Some(redis.url());
    let app = spawn_app(setup).await;
    let item = app.create_item(2, None).await;
    let buyer = app.buyer().await;
    let paid = buyer.order(item.id, 1, "paid").await;
    let unpaid = buyer.order(item.id, 1, "unpaid").await;
    assert_eq!((paid.status, unpaid.status), (201, 201));
    assert_eq!(
        pay(&app, "evt-paid", &order_id(&paid), 1999).await.body["result"],
        "paid"
    );
    let expired = eventually(Duration::from_secs(10), || async {
        order_now(&buyer, &app.base, &order_id(&unpaid)).await.body["status"] == "expired"
    })
    .await;
    assert!(expired);
    redis.flushall().await;
    for (key, original) in [("paid", &paid), ("unpaid", &unpaid)] {
        let replay = buyer.order(item.id, 1, key).await;
        assert_eq!(replay.status, 201, "{key}: {replay:?}");
        assert_eq!(
            &replay.body, &original.body,
            "{key}: the same body, field for field"
        );
        assert!(replay.replayed, "{key}");
    }
}

/// Two instances reap the same database: every unpaid order expires once
/// and every unit comes back once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_expire_each_order_once() {
    let app = spawn_app(setup(Backend::Postgres, three_second_window)).await;
    let twin = spawn_twin(&app).await;
    let item = app.create_item(20, None).await;
    let buyers = join_all((0..20).map(|_| app.buyer())).await;
    let placed = join_all(
        buyers
            .iter()
            .enumerate()
            .map(|(n, b)| async move { b.order(item.id, 1, &format!("twin-{n}")).await }),
    )
    .await;
    assert!(placed.iter().all(|p| p.status == 201));
    let all_back = eventually(Duration::from_secs(15), || async {
        stats(&app, &item).await["units_returned"].as_i64() == Some(20)
    })
    .await;
    assert!(all_back, "{}", stats(&app, &item).await);
    assert_eq!(stats(&app, &item).await["stock"].as_i64(), Some(20));
    // Each instance counts a unit once its stock path ran, just after the
    // row changed.
    let returned = || async {
        metric(
            &scrape_metrics(&app.base).await,
            "oversell_units_returned_total",
        ) + metric(
            &scrape_metrics(&twin.base).await,
            "oversell_units_returned_total",
        )
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            returned().await >= 20.0
        })
        .await,
        "every unit counted"
    );
    assert_eq!(returned().await, 20.0, "each unit returned by one instance");
}

fn demo_provider(config: &mut Config) {
    config.payments.window = Some(Duration::from_secs(60));
    config.payments.provider = PaymentProvider::Demo;
    config.payments.webhook_secret = None;
}

/// The demo provider: its checkout page says it is a demo, its form pays
/// through the same signed webhook (with a secret kept in the database),
/// only the order's buyer can pay it, and the dashboard counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_checkout_pays_through_the_signed_webhook() {
    let app = spawn_app(setup(Backend::Sqlite, demo_provider)).await;
    let item = app.create_item(1, None).await;
    let (buyer, stranger) = (app.buyer().await, app.buyer().await);
    let placed = buyer.order(item.id, 1, "demo").await;
    let order = order_id(&placed);
    let page = buyer
        .client
        .get(format!("{}/pay/{order}", app.base))
        .send()
        .await
        .expect("checkout page");
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.expect("html");
    assert!(html.contains("Demo checkout"), "clearly labelled");
    assert!(
        html.contains(&format!("action=\"/pay/{order}\"")),
        "a plain form"
    );

    let stolen = stranger
        .client
        .post(format!("{}/pay/{order}", app.base))
        .send()
        .await
        .expect("pay");
    assert_eq!(stolen.status().as_u16(), 404, "not the stranger's order");
    let paid = buyer
        .client
        .post(format!("{}/pay/{order}", app.base))
        .send()
        .await
        .expect("pay");
    assert_eq!(paid.status().as_u16(), 200);
    assert!(paid.url().path().ends_with("/orders"), "{}", paid.url());
    let html = paid.text().await.expect("html");
    assert!(
        html.contains("data-status=\"paid\""),
        "my orders shows it paid"
    );
    assert_eq!(
        order_now(&buyer, &app.base, &order).await.body["status"],
        "paid"
    );

    let admin = http_client();
    let signed_in = admin
        .post(format!("{}/dashboard/login", app.base))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .expect("sign in");
    assert_eq!(
        signed_in.status().as_u16(),
        200,
        "redirected to the dashboard"
    );
    let html = signed_in.text().await.expect("html");
    assert!(
        html.contains("data-testid=\"payments-panel\""),
        "the dashboard shows the payment deadline"
    );
    assert!(
        html.contains("data-testid=\"paid-on-time\">1<"),
        "one paid on time"
    );
    assert!(html.contains("data-status=\"paid\""), "orders by status");

    let kept: String = sqlx::query_scalar(
        "SELECT value FROM server_settings WHERE name = 'payment_webhook_secret'",
    )
    .fetch_one(app.state.db.pool())
    .await
    .expect("the generated secret is kept");
    let body = event("evt-outside", &order, 1999).to_string();
    let signature = WebhookSecret::new(&kept).sign(now_ms() / 1000, body.as_bytes());
    let outside = deliver(&app.base, body.as_bytes(), Some(signature)).await;
    assert_eq!(
        outside.body["result"], "duplicate",
        "the kept secret signs webhooks for every instance: {outside:?}"
    );
}

/// A drop with a waiting room and a payment deadline: the unit of an order
/// left unpaid goes back on sale through the counter the waiting room
/// admits against, so the next buyer in line is let in and buys it, and
/// the line hears `sold_out` only once nothing can come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaid_drop_unit_goes_to_the_next_buyer_in_line() {
    let app = spawn_app(setup(Backend::Postgres, three_second_window)).await;
    let item = app
        .create_drop(1, serde_json::json!({ "admission_per_second": 100 }))
        .await;
    let first = app.buyer().await;
    let next = app.buyer().await;
    let last = app.buyer().await;
    for buyer in [&first, &next, &last] {
        assert_eq!(buyer.join(item.id).await.status, 200);
    }

    let pass_of = |status: &serde_json::Value| status["pass"].as_str().map(str::to_owned);

    let mut first_pass = None;
    for _ in 0..200 {
        first_pass = pass_of(&first.queue(item.id).await.body);
        if first_pass.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first_pass = first_pass.expect("the first buyer is admitted");
    let unpaid = first
        .order_with_pass(item.id, 1, "never-pays", &first_pass)
        .await;
    assert_eq!(unpaid.status, 201, "{unpaid:?}");
    assert_eq!(unpaid.body["status"], "awaiting_payment");
    let waiting = next.queue(item.id).await.body;
    assert_eq!(
        waiting["state"], "waiting",
        "the unit is taken but may come back: {waiting}"
    );

    // The deadline passes; the reaper puts the unit back; the next buyer is
    // let in and buys it.
    let mut next_pass = None;
    for _ in 0..200 {
        next_pass = pass_of(&next.queue(item.id).await.body);
        if next_pass.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let next_pass = next_pass.expect("the next buyer is admitted after the expiry");
    let resold = next.order_with_pass(item.id, 1, "pays", &next_pass).await;
    assert_eq!(resold.status, 201, "{resold:?}");
    let expired = order_now(
        &first,
        &app.base,
        unpaid.body["order_id"].as_str().expect("id"),
    )
    .await;
    assert_eq!(expired.body["status"], "expired", "{expired:?}");
}
