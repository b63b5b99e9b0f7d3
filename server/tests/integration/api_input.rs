//! Bad input gets a clear 4xx with a machine-readable code, never a 500.

use crate::harness::{ADMIN_TOKEN, Setup, answer, http_client, spawn_app};
use serde_json::json;

#[tokio::test]
async fn bad_order_input_is_refused_with_its_code() {
    let app = spawn_app(Setup::embedded()).await;
    let item = app.create_item(5, None).await;
    let buyer = app.buyer().await;
    let url = format!("{}/api/orders", app.base);

    let cases: Vec<(&str, serde_json::Value, u16, &str)> = vec![
        (
            "qty zero",
            json!({"item_id": item.id, "qty": 0}),
            400,
            "invalid_request",
        ),
        (
            "qty negative",
            json!({"item_id": item.id, "qty": -2}),
            400,
            "invalid_request",
        ),
        (
            "qty above the maximum",
            json!({"item_id": item.id, "qty": 11}),
            400,
            "invalid_request",
        ),
        (
            "qty huge",
            json!({"item_id": item.id, "qty": 1e30}),
            400,
            "invalid_request",
        ),
        (
            "qty not a number",
            json!({"item_id": item.id, "qty": "two"}),
            400,
            "invalid_request",
        ),
        (
            "qty fractional",
            json!({"item_id": item.id, "qty": 1.5}),
            400,
            "invalid_request",
        ),
        ("item id missing", json!({"qty": 1}), 400, "invalid_request"),
        (
            "item id negative",
            json!({"item_id": -1, "qty": 1}),
            400,
            "invalid_request",
        ),
        (
            "unknown field",
            json!({"item_id": item.id, "qty": 1, "price_cents": 0}),
            400,
            "invalid_request",
        ),
        (
            "unknown item",
            json!({"item_id": 999_999, "qty": 1}),
            404,
            "unknown_item",
        ),
    ];
    for (i, (case, body, status, code)) in cases.into_iter().enumerate() {
        let a = answer(
            buyer
                .client
                .post(&url)
                .header("Idempotency-Key", format!("case-{i}"))
                .json(&body)
                .send()
                .await
                .expect("request"),
        )
        .await;
        assert_eq!((a.status, a.code()), (status, code), "{case}: {a:?}");
        assert_eq!(a.body["retryable"], json!(false), "{case}");
        assert!(
            a.body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{case}"
        );
    }

    let raw = |body: &'static str, content_type: &'static str, key: Option<&'static str>| {
        let mut request = buyer
            .client
            .post(&url)
            .header("content-type", content_type)
            .body(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request
    };
    let malformed = answer(
        raw("{\"item_id\": 1,", "application/json", Some("m-1"))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(
        (malformed.status, malformed.code()),
        (400, "invalid_request"),
        "malformed JSON"
    );
    let not_json = answer(
        raw("item_id=1", "text/plain", Some("m-2"))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(
        (not_json.status, not_json.code()),
        (400, "invalid_request"),
        "wrong content type"
    );
    let body = r#"{"item_id": 1, "qty": 1}"#;
    let missing_key = answer(
        raw(body, "application/json", None)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(
        (missing_key.status, missing_key.code()),
        (400, "invalid_request"),
        "missing key"
    );
    for bad_key in ["has space", "", "ключ", &"k".repeat(256)] {
        let a = answer(
            buyer
                .client
                .post(&url)
                .header("content-type", "application/json")
                .header("Idempotency-Key", bad_key.as_bytes())
                .body(body)
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_eq!(
            (a.status, a.code()),
            (400, "invalid_request"),
            "key {bad_key:?}"
        );
    }

    let huge = format!(
        r#"{{"item_id": 1, "qty": 1, "pad": "{}"}}"#,
        "x".repeat(64 * 1024)
    );
    let too_large = answer(
        buyer
            .client
            .post(&url)
            .header("content-type", "application/json")
            .header("Idempotency-Key", "big")
            .body(huge)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(
        (too_large.status, too_large.code()),
        (413, "payload_too_large")
    );

    let anonymous = answer(
        http_client()
            .post(&url)
            .header("Idempotency-Key", "anon")
            .json(&json!({"item_id": item.id, "qty": 1}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(
        (anonymous.status, anonymous.code()),
        (401, "unauthorized"),
        "no buyer cookie"
    );

    assert_eq!(
        app.orders_in_db(&item).await,
        (0, 0),
        "no bad request ordered anything"
    );
}

#[tokio::test]
async fn a_tampered_buyer_cookie_reads_as_no_buyer() {
    let app = spawn_app(Setup::embedded()).await;
    let item = app.create_item(5, None).await;
    let forged = answer(
        reqwest::Client::new()
            .post(format!("{}/api/orders", app.base))
            .header("cookie", "buyer=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%3D00000000-0000-4000-8000-000000000001")
            .header("Idempotency-Key", "forged")
            .json(&json!({"item_id": item.id, "qty": 1}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!((forged.status, forged.code()), (401, "unauthorized"));
}

#[tokio::test]
async fn item_routes_refuse_bad_ids_and_unknown_routes_answer_json() {
    let app = spawn_app(Setup::embedded()).await;
    let client = http_client();
    for (path, status, code) in [
        ("/api/items/abc", 400, "invalid_request"),
        ("/api/items/0", 400, "invalid_request"),
        ("/api/items/424242", 404, "unknown_item"),
        ("/api/nothing-here", 404, "not_found"),
    ] {
        let a = answer(
            client
                .get(format!("{}{path}", app.base))
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_eq!((a.status, a.code()), (status, code), "{path}");
    }
    let a = answer(
        client
            .delete(format!("{}/api/items", app.base))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!((a.status, a.code()), (405, "method_not_allowed"));
}

#[tokio::test]
async fn admin_calls_need_the_bearer_token_and_valid_bodies() {
    let app = spawn_app(Setup::embedded()).await;
    let url = format!("{}/api/admin/items", app.base);
    let body = json!({"title": "Bike", "price_cents": 100, "stock": 1});
    let client = http_client();
    let none = answer(client.post(&url).json(&body).send().await.expect("send")).await;
    assert_eq!((none.status, none.code()), (401, "unauthorized"));
    let wrong = answer(
        client
            .post(&url)
            .bearer_auth("wrong-token")
            .json(&body)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!((wrong.status, wrong.code()), (401, "unauthorized"));
    for bad in [
        json!({"title": "", "price_cents": 100, "stock": 1}),
        json!({"title": "Bike", "price_cents": -1, "stock": 1}),
        json!({"title": "Bike", "price_cents": 100, "stock": -1}),
        json!({"title": "Bike", "price_cents": 100, "stock": 1, "max_per_buyer": 0}),
    ] {
        let a = answer(
            client
                .post(&url)
                .bearer_auth(ADMIN_TOKEN)
                .json(&bad)
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_eq!((a.status, a.code()), (400, "invalid_request"), "{bad}");
    }
    let created = answer(
        client
            .post(&url)
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(created.status, 201);
    assert!(
        created.body["id"].as_i64().is_some_and(|id| id > 0),
        "ids are integers"
    );
    for key in ["title", "price_cents", "stock", "version", "max_per_buyer"] {
        assert!(created.body.get(key).is_some(), "item has {key}");
    }
}

#[tokio::test]
async fn sessions_are_signed_http_only_lax_cookies() {
    let app = spawn_app(Setup::embedded()).await;
    let client = http_client();
    let response = client
        .post(format!("{}/api/session", app.base))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status().as_u16(), 201);
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(cookie.starts_with("buyer="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"),
        "{cookie}"
    );
    let again = client
        .post(format!("{}/api/session", app.base))
        .send()
        .await
        .expect("send");
    assert_eq!(again.status().as_u16(), 200, "an existing session is kept");
}
