//! Drop day, the start, through the public API: the sale window on every
//! path, the waiting room's passes and stock-aware admission, the fair
//! draw, pausing, several instances sharing one line, and a line that
//! survives Redis losing it.

use crate::harness::{
    ADMIN_TOKEN, Backend, Buyer, PrivateRedis, Setup, TestApp, http_client, spawn_app, spawn_twin,
};
use app::model::Item;
use futures_util::future::join_all;
use server::config::Config;
use std::time::Duration;

fn now_ms() -> i64 {
    server::db::now_ms()
}

/// Polls the buyer's place until `done` holds (the admitter runs every
/// 100 ms by default).
async fn queue_until(
    buyer: &Buyer,
    item: &Item,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = buyer.queue(item.id).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        if done(&answer.body) {
            return answer.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached: last {}",
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sha256_hex(text: &str) -> String {
    server::waiting_room::sha256_hex(text)
}

#[tokio::test]
async fn the_server_tells_its_clock() {
    let app = spawn_app(Setup::embedded()).await;
    let time: serde_json::Value = http_client()
        .get(format!("{}/api/time", app.base))
        .send()
        .await
        .expect("time")
        .json()
        .await
        .expect("json");
    let server_now = time["now_ms"].as_i64().expect("now_ms");
    assert!((server_now - now_ms()).abs() < 5_000, "{server_now}");
}

async fn a_sale_window_holds(app: &TestApp) {
    let label = format!("{:?}", app.state.db.dialect());
    let item = app
        .create_drop(
            5,
            serde_json::json!({ "sale_starts_at_ms": now_ms() + 1_500 }),
        )
        .await;
    assert_eq!(item.sale_starts_at_ms.map(|s| s > now_ms()), Some(true));
    let buyer = app.buyer().await;
    let early = buyer.order(item.id, 1, "early").await;
    assert_eq!(
        (
            early.status,
            early.code(),
            early.body["retryable"].as_bool()
        ),
        (409, "sale_not_started", Some(true)),
        "{label}: {early:?}"
    );
    let wait: u64 = early
        .retry_after
        .as_deref()
        .and_then(|s| s.parse().ok())
        .expect("Retry-After");
    assert!((1..=2).contains(&wait), "{label}: {wait}");
    let opened = buyer.order_until_definite(item.id, 1, "early").await;
    assert_eq!(
        opened.status, 201,
        "{label}: the button turns live at the start: {opened:?}"
    );

    let over = app
        .create_drop(
            5,
            serde_json::json!({ "sale_starts_at_ms": now_ms() - 10_000, "sale_ends_at_ms": now_ms() - 1 }),
        )
        .await;
    let late = buyer.order(over.id, 1, "late").await;
    assert_eq!(
        (late.status, late.code(), late.body["retryable"].as_bool()),
        (409, "sale_ended", Some(false)),
        "{label}"
    );
    let reopened = app
        .change_terms(&over, serde_json::json!({ "sale_ends_at_ms": null }))
        .await;
    assert_eq!(reopened.status, 200, "{reopened:?}");
    assert!(reopened.body["sale_ends_at_ms"].is_null());
    assert_eq!(
        buyer.order(over.id, 1, "reopened").await.status,
        201,
        "{label}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_window_holds_with_redis_and_postgres() {
    a_sale_window_holds(&spawn_app(Setup::redis(Backend::Postgres)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_window_holds_in_the_embedded_default() {
    a_sale_window_holds(&spawn_app(Setup::embedded()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_window_holds_in_the_database_alone() {
    a_sale_window_holds(&spawn_app(Setup::db_only(Backend::MySql)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waiting_room_lets_buyers_in_as_far_as_the_stock_goes() {
    let app = spawn_app(Setup::redis(Backend::Postgres)).await;
    let item = app
        .create_drop(2, serde_json::json!({ "admission_per_second": 100 }))
        .await;
    assert_eq!(item.admission_per_second, Some(100));
    let buyers = join_all((0..4).map(|_| app.buyer())).await;
    let outsider = app.buyer().await;
    let missing = outsider.queue(item.id).await;
    assert_eq!((missing.status, missing.code()), (404, "not_in_queue"));
    let no_pass = outsider.order(item.id, 1, "no-pass").await;
    assert_eq!(
        (no_pass.status, no_pass.code()),
        (403, "queue_pass_required")
    );

    let mut tickets = Vec::new();
    for buyer in &buyers {
        let joined = buyer.join(item.id).await;
        assert_eq!(joined.status, 200, "{joined:?}");
        let again = buyer.join(item.id).await;
        assert_eq!(
            again.body["ticket"], joined.body["ticket"],
            "joining again keeps the place"
        );
        tickets.push(joined.body["ticket"].clone());
    }
    // Two units: two passes, in line order; the others wait.
    let first = queue_until(&buyers[0], &item, |s| s["state"] == "admitted").await;
    let second = queue_until(&buyers[1], &item, |s| s["state"] == "admitted").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for buyer in &buyers[2..] {
        let waiting = buyer.queue(item.id).await.body;
        assert_eq!(waiting["state"], "waiting", "{waiting}");
        assert!(waiting["pass"].is_null());
        assert!(waiting["position"].as_u64().is_some(), "{waiting}");
    }
    let pass = first["pass"].as_str().expect("a pass");
    assert!(first["pass_expires_at_ms"].as_i64() > Some(now_ms()));
    let stolen = buyers[2].order_with_pass(item.id, 1, "stolen", pass).await;
    assert_eq!((stolen.status, stolen.code()), (403, "queue_pass_invalid"));
    let bought = buyers[0]
        .order_with_pass(item.id, 1, "with-pass", pass)
        .await;
    assert_eq!(bought.status, 201, "{bought:?}");
    let replay = buyers[0]
        .order_with_pass(item.id, 1, "with-pass", pass)
        .await;
    assert_eq!((replay.status, replay.replayed), (201, true));
    assert_eq!(replay.body, bought.body);
    let used = buyers[0]
        .order_with_pass(item.id, 1, "used-again", pass)
        .await;
    assert_eq!(
        used.code(),
        "queue_pass_invalid",
        "a pass is used up by its order"
    );

    let other = second["pass"].as_str().expect("a pass");
    assert_eq!(
        buyers[1]
            .order_with_pass(item.id, 1, "second", other)
            .await
            .status,
        201
    );
    for buyer in &buyers[2..] {
        let told = queue_until(buyer, &item, |s| s["state"] == "sold_out").await;
        assert_eq!(told["state"], "sold_out");
    }
    assert_eq!(app.orders_in_db(&item).await, (2, 2));
}

/// Admitted buyers order in the same moment and all hit the same row:
/// they must not fight each other for it. With one retry only, orders
/// written side by side ran out of retries and answered `stock_conflict`
/// to buyers who held a pass and a unit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admitted_buyers_ordering_at_once_all_get_their_unit() {
    let mut setup = Setup::redis(Backend::Postgres);
    setup.tweak = |c| c.ledger.backoff.max_attempts = 1;
    let app = spawn_app(setup).await;
    let stock = 30;
    let item = app
        .create_drop(stock, serde_json::json!({ "admission_per_second": 10_000 }))
        .await;
    let buyers = join_all((0..stock).map(|_| app.buyer())).await;
    for buyer in &buyers {
        assert_eq!(buyer.join(item.id).await.status, 200);
    }
    let passes = join_all(buyers.iter().map(|buyer| async {
        let admitted = queue_until(buyer, &item, |s| s["state"] == "admitted").await;
        admitted["pass"].as_str().expect("a pass").to_owned()
    }))
    .await;
    let answers = join_all(buyers.iter().zip(&passes).enumerate().map(
        |(n, (buyer, pass))| async move {
            let key = format!("at-once-{n}");
            buyer.order_with_pass(item.id, 1, &key, pass).await
        },
    ))
    .await;
    for answer in &answers {
        assert_eq!(answer.status, 201, "{answer:?}");
    }
    assert_eq!(app.orders_in_db(&item).await, (stock, stock));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fair_start_follows_the_published_rule() {
    let app = spawn_app(Setup::embedded()).await;
    let starts = now_ms() + 2_000;
    let item = app
        .create_drop(
            3,
            serde_json::json!({ "sale_starts_at_ms": starts, "admission_per_second": 1000 }),
        )
        .await;
    let fairness = |app: &TestApp| {
        let url = format!("{}/api/items/{}/fairness", app.base, item.id);
        async move {
            http_client()
                .get(url)
                .send()
                .await
                .expect("fairness")
                .json::<serde_json::Value>()
                .await
                .expect("json")
        }
    };
    let before = fairness(&app).await;
    let commitment = before["commitment"]
        .as_str()
        .expect("commitment")
        .to_owned();
    assert_eq!(commitment.len(), 64);
    assert!(before["seed"].is_null(), "{before}");

    let buyers = join_all((0..6).map(|_| app.buyer())).await;
    let mut tickets = Vec::new();
    for buyer in &buyers {
        let joined = buyer.join(item.id).await.body;
        assert_eq!(joined["state"], "waiting");
        assert!(
            joined["position"].is_null(),
            "no place before the draw: {joined}"
        );
        tickets.push(joined["ticket"].as_str().expect("ticket").to_owned());
    }
    tokio::time::sleep(Duration::from_millis(
        (starts - now_ms()).max(0) as u64 + 200,
    ))
    .await;

    let after = fairness(&app).await;
    let seed = after["seed"].as_str().expect("the seed, after the start");
    assert_eq!(
        sha256_hex(seed),
        commitment,
        "the seed matches its commitment"
    );
    let mut expected = tickets.clone();
    expected.sort_by_key(|t| sha256_hex(&format!("{seed}:{t}")));
    let published: Vec<String> = after["tickets"]
        .as_array()
        .expect("tickets")
        .iter()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    assert_eq!(published, expected, "ordered by sha256(seed:ticket)");

    // Three units: the first three of the draw are let in; the rest wait
    // in the draw's order.
    let by_ticket = |t: &str| &buyers[tickets.iter().position(|x| x == t).expect("ticket")];
    for ticket in &expected[..3] {
        queue_until(by_ticket(ticket), &item, |s| s["state"] == "admitted").await;
    }
    for (n, ticket) in expected[3..].iter().enumerate() {
        let waiting = by_ticket(ticket).queue(item.id).await.body;
        assert_eq!(
            waiting["position"].as_u64(),
            Some(n as u64 + 1),
            "{waiting}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_drop_admits_nobody_and_says_so() {
    let app = spawn_app(Setup::redis(Backend::Postgres)).await;
    let item = app
        .create_drop(
            5,
            serde_json::json!({ "admission_per_second": 100, "paused": true }),
        )
        .await;
    let buyer = app.buyer().await;
    buyer.join(item.id).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let paused = buyer.queue(item.id).await.body;
    assert_eq!(
        (paused["state"].as_str(), paused["paused"].as_bool()),
        (Some("waiting"), Some(true))
    );
    assert_eq!(
        app.change_terms(&item, serde_json::json!({ "paused": false }))
            .await
            .status,
        200
    );
    queue_until(&buyer, &item, |s| s["state"] == "admitted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_one_waiting_room() {
    let app = spawn_app(Setup::redis(Backend::MySql)).await;
    let twin = spawn_twin(&app).await;
    let item = app
        .create_drop(1, serde_json::json!({ "admission_per_second": 100 }))
        .await;
    let buyers = join_all((0..3).map(|_| app.buyer())).await;
    for (n, buyer) in buyers.iter().enumerate() {
        let here = if n % 2 == 0 {
            buyer.clone()
        } else {
            buyer.on(&twin.base)
        };
        assert_eq!(here.join(item.id).await.status, 200);
    }
    let first = queue_until(&buyers[0].on(&twin.base), &item, |s| {
        s["state"] == "admitted"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for buyer in &buyers[1..] {
        assert_eq!(
            buyer.queue(item.id).await.body["state"],
            "waiting",
            "one unit, one pass"
        );
    }
    let pass = first["pass"].as_str().expect("pass");
    assert_eq!(
        buyers[0]
            .on(&twin.base)
            .order_with_pass(item.id, 1, "k", pass)
            .await
            .status,
        201
    );
    for buyer in &buyers[1..] {
        queue_until(buyer, &item, |s| s["state"] == "sold_out").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_line_is_rebuilt_when_redis_loses_it() {
    let redis = PrivateRedis::start().await;
    let mut setup = Setup::redis(Backend::Postgres);
    setup.redis_url = Some(redis.url());
    setup.tweak = |c: &mut Config| c.reservation.admission_interval = Duration::from_millis(50);
    let app = spawn_app(setup).await;
    let item = app
        .create_drop(0, serde_json::json!({ "admission_per_second": 100 }))
        .await;
    let buyers = join_all((0..3).map(|_| app.buyer())).await;
    let mut tickets = Vec::new();
    for buyer in &buyers {
        tickets.push(buyer.join(item.id).await.body["ticket"].clone());
    }
    redis.flushall().await;
    for (buyer, ticket) in buyers.iter().zip(&tickets) {
        let after = buyer.queue(item.id).await;
        assert_eq!(after.status, 200, "{after:?}");
        assert_eq!(
            &after.body["ticket"], ticket,
            "the same ticket, from the database"
        );
    }
    assert_eq!(app.restock(&item, 1).await.status, 200);
    queue_until(&buyers[0], &item, |s| s["state"] == "admitted").await;
}

#[tokio::test]
async fn an_item_without_a_waiting_room_has_no_line() {
    let app = spawn_app(Setup::embedded()).await;
    let item = app.create_item(3, None).await;
    let buyer = app.buyer().await;
    assert_eq!(buyer.join(item.id).await.status, 404);
    assert_eq!(buyer.order(item.id, 1, "plain").await.status, 201);
}

/// The item page as a buyer's browser without JavaScript gets it.
async fn page(app: &TestApp, buyer: &Buyer, item: &Item) -> String {
    let page = buyer
        .client
        .get(format!("{}/items/{}", app.base, item.id))
        .send()
        .await
        .expect("item page");
    assert_eq!(page.status().as_u16(), 200);
    page.text().await.expect("html")
}

/// The value of the first `name="{field}"` input of a page.
fn form_value(html: &str, field: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{field}\""))?;
    let rest = &html[at..];
    let value = rest.find("value=\"")? + "value=\"".len();
    let end = rest[value..].find('"')?;
    Some(rest[value..value + end].to_owned())
}

/// Without JavaScript, a drop's page still works end to end: the plain
/// "join the line" form, a waiting page that refreshes itself, the Buy
/// form carrying the pass once admitted, the receipt, and sold out for
/// whoever still waits. The page explains the fair start and links its
/// record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_page_works_without_javascript() {
    let app = spawn_app(Setup::embedded()).await;
    let item = app
        .create_drop(1, serde_json::json!({ "admission_per_second": 100 }))
        .await;
    let (first, second) = (app.buyer().await, app.buyer().await);

    let fresh = page(&app, &first, &item).await;
    assert!(fresh.contains(&format!("action=\"/items/{}/queue\"", item.id)));
    assert!(fresh.contains(&format!("href=\"/api/items/{}/fairness\"", item.id)));
    assert!(
        !fresh.contains("name=\"queue_pass\""),
        "no pass before joining"
    );
    assert!(
        !fresh.contains("class=\"buy-panel\""),
        "no Buy before the line"
    );

    for buyer in [&first, &second] {
        let joined = buyer
            .client
            .post(format!("{}/items/{}/queue", app.base, item.id))
            .form(&[("join", "1")])
            .send()
            .await
            .expect("join form");
        assert_eq!(joined.status().as_u16(), 200, "redirected to the item");
        assert!(
            joined
                .url()
                .path()
                .ends_with(&format!("/items/{}", item.id))
        );
        let html = joined.text().await.expect("html");
        assert!(html.contains("data-testid=\"line-status\""), "{html}");
    }

    // One unit: the first in line is let in (the admitter runs every
    // 100 ms), and their Buy form carries the pass.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let admitted = loop {
        let html = page(&app, &first, &item).await;
        if html.contains("data-state=\"admitted\"") {
            break html;
        }
        assert!(tokio::time::Instant::now() < deadline, "never admitted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let pass = form_value(&admitted, "queue_pass").expect("the form carries the pass");
    let dashboard = http_client()
        .post(format!("{}/dashboard/login", app.base))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .expect("sign in")
        .text()
        .await
        .expect("html");
    assert!(
        dashboard.contains("data-testid=\"drops-panel\"")
            && dashboard.contains(&format!("data-item-id=\"{}\"", item.id)),
        "the dashboard shows the drop"
    );
    let key = form_value(&admitted, "idempotency_key").expect("a form token");
    let waiting = page(&app, &second, &item).await;
    assert!(waiting.contains("data-state=\"waiting\""), "{waiting}");
    assert!(
        waiting.contains("http-equiv=\"refresh\""),
        "a waiting page refreshes itself without JavaScript"
    );

    let bought = first
        .client
        .post(format!("{}/items/{}/buy", app.base, item.id))
        .form(&[
            ("qty", "1"),
            ("idempotency_key", key.as_str()),
            ("queue_pass", pass.as_str()),
        ])
        .send()
        .await
        .expect("buy form");
    let receipt = bought.text().await.expect("html");
    assert!(receipt.contains("data-testid=\"receipt\""), "{receipt}");
    assert_eq!(app.orders_in_db(&item).await, (1, 1));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let html = page(&app, &second, &item).await;
        if html.contains("data-state=\"sold_out\"") {
            assert!(
                !html.contains("http-equiv=\"refresh\""),
                "nothing left to wait for"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never told sold out"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Before the start the page counts down and its button waits; without
/// JavaScript it says so and refreshes itself at the start.
#[tokio::test]
async fn a_page_before_the_start_counts_down() {
    let app = spawn_app(Setup::embedded()).await;
    let item = app
        .create_drop(
            3,
            serde_json::json!({ "sale_starts_at_ms": now_ms() + 30_000 }),
        )
        .await;
    let buyer = app.buyer().await;
    let html = page(&app, &buyer, &item).await;
    assert!(html.contains("data-testid=\"sale-countdown\""), "{html}");
    assert!(html.contains("Sale opens in 0 min 30 s") || html.contains("Sale opens in 0 min 29 s"));
    assert!(html.contains("aria-disabled=\"true\""), "the button waits");
    let refresh = html
        .split("http-equiv=\"refresh\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|secs| secs.parse::<u32>().ok())
        .expect("a refresh without JavaScript");
    assert!(
        (29..=30).contains(&refresh),
        "refreshes at the start: {refresh}"
    );
}
