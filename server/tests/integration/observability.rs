//! Metrics count exactly what happened; the strategy override is off unless
//! configured.

use crate::harness::{Backend, Setup, answer, http_client, metric, scrape_metrics, spawn_app};
use futures_util::future::join_all;
use server::config::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_exactly_what_a_scripted_session_did() {
    let mut setup = Setup::redis(Backend::Postgres);
    setup.tweak = |c: &mut Config| {
        c.orders.allow_strategy_override = true;
        // One attempt only: every version conflict becomes a stock_conflict.
        c.ledger.backoff.max_attempts = 1;
        // Long enough that every sold-out attempt below meets the memo.
        c.reservation.sold_out_memo = std::time::Duration::from_secs(60);
    };
    let app = spawn_app(setup).await;
    let item = app.create_item(2, None).await;
    let (first, second, late) = (app.buyer().await, app.buyer().await, app.buyer().await);

    assert_eq!(first.order(item.id, 1, "one").await.status, 201);
    assert!(first.order(item.id, 1, "one").await.replayed);
    assert!(first.order(item.id, 1, "one").await.replayed);
    assert_eq!(
        first.order(item.id, 2, "one").await.code(),
        "idempotency_key_reused"
    );
    assert_eq!(second.order(item.id, 1, "two").await.status, 201);
    assert_eq!(late.order(item.id, 1, "three").await.code(), "sold_out");
    assert_eq!(late.order(item.id, 1, "four").await.code(), "sold_out");
    let beacon = http_client()
        .post(format!("{}/api/guard-events", app.base))
        .body(r#"{"swallowed_taps": 7, "restore_lookups": 2, "hidden_blocks": 1}"#)
        .send()
        .await
        .expect("beacon");
    assert_eq!(beacon.status().as_u16(), 204);

    let m = scrape_metrics(&app.base).await;
    let a =
        |name: &str, labels: &str| metric(&m, &format!("{name}{{{labels},strategy=\"redis+db\"}}"));
    assert_eq!(a("oversell_orders_total", "outcome=\"created\""), 2.0);
    assert_eq!(a("oversell_orders_total", "outcome=\"replayed\""), 2.0);
    assert_eq!(
        a(
            "oversell_orders_total",
            "outcome=\"idempotency_key_reused\""
        ),
        1.0
    );
    assert_eq!(a("oversell_orders_total", "outcome=\"sold_out\""), 2.0);
    assert_eq!(a("oversell_idempotency_total", "result=\"new\""), 4.0);
    assert_eq!(a("oversell_idempotency_total", "result=\"replay\""), 2.0);
    assert_eq!(a("oversell_idempotency_total", "result=\"mismatch\""), 1.0);
    assert_eq!(
        a("oversell_reservation_outcomes_total", "result=\"ok\""),
        2.0
    );
    assert_eq!(
        a("oversell_reservation_outcomes_total", "result=\"sold_out\""),
        1.0,
        "the first sold-out attempt asks the store, which has no unit and no hold left"
    );
    assert_eq!(
        a(
            "oversell_reservation_outcomes_total",
            "result=\"sold_out_memo\""
        ),
        1.0,
        "from then on the memo answers"
    );
    assert_eq!(a("oversell_db_update_attempts_total", "result=\"ok\""), 2.0);
    assert_eq!(
        a("oversell_db_update_attempts_total", "result=\"conflict\""),
        0.0,
        "sold-out requests never reached the database"
    );
    assert_eq!(
        metric(&m, "oversell_confirms_total{result=\"hold_ended\"}"),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "oversell_browser_intercepts_total{reason=\"swallowed_tap\"}"
        ),
        7.0
    );
    assert_eq!(
        metric(
            &m,
            "oversell_browser_intercepts_total{reason=\"restore_lookup\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "oversell_browser_intercepts_total{reason=\"hidden_block\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "oversell_order_duration_seconds_count{strategy=\"redis+db\"}"
        ),
        7.0,
        "every attempt timed end to end"
    );

    // Strategy B on a fresh item: concurrent buyers collide on the version.
    let contested = app.create_item(30, None).await;
    let buyers = join_all((0..30).map(|_| app.buyer())).await;
    let answers = join_all(buyers.iter().enumerate().map(|(n, buyer)| {
        let key = format!("b-{n}");
        let client = buyer.client.clone();
        let base = app.base.clone();
        async move {
            answer(
                client
                    .post(format!("{base}/api/orders"))
                    .header("Idempotency-Key", key)
                    .header("X-Order-Strategy", "db")
                    .json(&serde_json::json!({"item_id": contested.id, "qty": 1}))
                    .send()
                    .await
                    .expect("send"),
            )
            .await
        }
    }))
    .await;
    let created = answers.iter().filter(|a| a.status == 201).count() as f64;
    let conflicts = answers
        .iter()
        .filter(|a| a.code() == "stock_conflict")
        .count() as f64;
    assert_eq!(
        created + conflicts,
        30.0,
        "only these two outcomes: {answers:?}"
    );

    let m = scrape_metrics(&app.base).await;
    let b = |name: &str, labels: &str| metric(&m, &format!("{name}{{{labels},strategy=\"db\"}}"));
    assert_eq!(b("oversell_orders_total", "outcome=\"created\""), created);
    assert_eq!(
        b("oversell_orders_total", "outcome=\"stock_conflict\""),
        conflicts
    );
    assert_eq!(
        b("oversell_db_update_attempts_total", "result=\"ok\""),
        created
    );
    assert_eq!(
        b("oversell_db_update_attempts_total", "result=\"conflict\""),
        conflicts,
        "one attempt each: every conflict was a refusal"
    );
    assert_eq!(
        b("oversell_reservation_outcomes_total", "result=\"skipped\""),
        30.0
    );
    assert_eq!(b("oversell_idempotency_total", "result=\"new\""), 30.0);
    assert_eq!(app.orders_in_db(&contested).await.0 as f64, created);
}

#[tokio::test]
async fn every_metric_the_server_documents_is_exported_with_help() {
    let app = spawn_app(Setup::embedded()).await;
    let item = app.create_item(1, None).await;
    let buyer = app.buyer().await;
    assert_eq!(buyer.order(item.id, 1, "k").await.status, 201);
    // A drop with a waiting room and one admission round: its metrics too.
    let drop = app
        .create_drop(1, serde_json::json!({ "admission_per_second": 10 }))
        .await;
    assert_eq!(buyer.join(drop.id).await.status, 200);
    let admitted = crate::harness::eventually(std::time::Duration::from_secs(5), || async {
        buyer.queue(drop.id).await.body["state"] == "admitted"
    })
    .await;
    assert!(admitted);
    let text = crate::harness::metrics_text(&app.base).await;
    for name in server::metrics::ALL {
        assert!(
            text.contains(&format!("# HELP {name}")),
            "{name} has no HELP line"
        );
    }
}

#[tokio::test]
async fn the_strategy_override_is_refused_unless_configured() {
    let app = spawn_app(Setup::embedded()).await;
    let item = app.create_item(5, None).await;
    let buyer = app.buyer().await;
    let refused = answer(
        buyer
            .client
            .post(format!("{}/api/orders", app.base))
            .header("Idempotency-Key", "override")
            .header("X-Order-Strategy", "db")
            .json(&serde_json::json!({"item_id": item.id, "qty": 1}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!((refused.status, refused.code()), (400, "invalid_request"));
    assert_eq!(app.orders_in_db(&item).await, (0, 0));
}
