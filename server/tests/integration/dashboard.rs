//! The admin dashboard: a sign-in form without a session, the charts with
//! one; the token is checked and the session is a signed cookie.

use crate::harness::{ADMIN_TOKEN, Setup, spawn_app};
use std::time::Duration;

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

#[tokio::test]
async fn the_dashboard_needs_an_admin_session() {
    let app = spawn_app(Setup::embedded()).await;
    let client = no_redirects();
    let page = client
        .get(format!("{}/dashboard", app.base))
        .send()
        .await
        .expect("get");
    assert_eq!(page.status().as_u16(), 401);
    let html = page.text().await.expect("html");
    assert!(
        html.contains("action=\"/dashboard/login\""),
        "a sign-in form"
    );
    assert!(!html.contains("dashboard-live"));

    let wrong = client
        .post(format!("{}/dashboard/login", app.base))
        .form(&[("token", "not-the-token")])
        .send()
        .await
        .expect("login");
    assert_eq!(wrong.status().as_u16(), 303);
    assert_eq!(
        wrong
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok()),
        Some("/dashboard?error=1")
    );
    assert!(wrong.headers().get("set-cookie").is_none());

    let right = client
        .post(format!("{}/dashboard/login", app.base))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .expect("login");
    assert_eq!(right.status().as_u16(), 303);
    let cookie = right
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        cookie.starts_with("admin=")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );

    let item = app.create_item(3, None).await;
    let buyer = app.buyer().await;
    assert_eq!(buyer.order(item.id, 1, "dash").await.status, 201);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let page = client
        .get(format!("{}/dashboard", app.base))
        .send()
        .await
        .expect("get");
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.expect("html");
    assert!(html.contains("dashboard-live"), "the charts");
    assert!(html.contains("<polyline"), "SVG lines");
    assert!(
        html.contains("data-testid=\"orders-created\">1<"),
        "one order counted"
    );
    assert!(html.contains("Test camera"), "the hot item by title");

    let forged = reqwest::Client::new()
        .get(format!("{}/dashboard", app.base))
        .header("cookie", "admin=1")
        .send()
        .await
        .expect("get");
    assert_eq!(
        forged.status().as_u16(),
        401,
        "an unsigned cookie is no session"
    );
}
