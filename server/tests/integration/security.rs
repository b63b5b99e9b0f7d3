//! Security: a per-buyer rate limit on order attempts, the buyer cookie's
//! Secure flag, and buyers kept apart.

use crate::harness::{Setup, http_client, spawn_app};
use server::config::Config;

#[tokio::test]
async fn a_buyer_over_the_rate_limit_gets_429_with_retry_after() {
    let mut setup = Setup::embedded();
    setup.tweak = |c: &mut Config| {
        c.http.order_rate_per_second = 1;
        c.http.order_rate_burst = 3;
    };
    let app = spawn_app(setup).await;
    let item = app.create_item(100, None).await;
    let eager = app.buyer().await;
    for n in 0..3 {
        assert_eq!(eager.order(item.id, 1, &format!("r{n}")).await.status, 201);
    }
    let limited = eager.order(item.id, 1, "r3").await;
    assert_eq!(
        (limited.status, limited.code()),
        (429, "rate_limited"),
        "{limited:?}"
    );
    assert_eq!(limited.body["retryable"], true);
    assert_eq!(limited.retry_after.as_deref(), Some("1"));
    let replay = eager.order(item.id, 1, "r0").await;
    assert_eq!(replay.status, 429, "replays are attempts too");
    let calm = app.buyer().await;
    assert_eq!(
        calm.order(item.id, 1, "c0").await.status,
        201,
        "another buyer has their own bucket"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(
        eager.order(item.id, 1, "r3").await.status,
        201,
        "the bucket refills"
    );
    assert_eq!(app.orders_in_db(&item).await, (5, 5));
}

/// The `Set-Cookie` header a new session gets.
async fn new_session_cookie(base: &str) -> String {
    let response = http_client()
        .post(format!("{base}/api/session"))
        .send()
        .await
        .expect("session");
    response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn the_buyer_cookie_is_secure_when_configured() {
    let mut setup = Setup::embedded();
    setup.tweak = |c: &mut Config| c.sessions.cookie_secure = true;
    let app = spawn_app(setup).await;
    let cookie = new_session_cookie(&app.base).await;
    assert!(
        cookie.contains("Secure") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );

    let plain = spawn_app(Setup::embedded()).await;
    let cookie = new_session_cookie(&plain.base).await;
    assert!(
        !cookie.contains("Secure"),
        "not over plain HTTP by default: {cookie}"
    );
}

#[tokio::test]
async fn no_buyer_reads_another_buyers_order() {
    let app = spawn_app(Setup::embedded()).await;
    let item = app.create_item(5, None).await;
    let alice = app.buyer().await;
    let mallory = app.buyer().await;
    let order = alice.order(item.id, 1, "alice-secret-key").await;
    assert_eq!(order.status, 201);
    let peek = mallory.outcome("alice-secret-key").await;
    assert_eq!(peek.status, 200);
    assert_eq!(
        peek.body,
        serde_json::json!({"state": "unknown"}),
        "nothing leaks"
    );
    let replay = mallory.order(item.id, 1, "alice-secret-key").await;
    assert_eq!(replay.status, 201);
    assert!(
        !replay.replayed,
        "the same key is another intent for another buyer"
    );
    assert_ne!(replay.body["order_id"], order.body["order_id"]);
    let anonymous = http_client()
        .get(format!("{}/api/orders/by-key/alice-secret-key", app.base))
        .send()
        .await
        .expect("send");
    assert_eq!(anonymous.status().as_u16(), 401);
}
