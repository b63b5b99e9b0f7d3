//! Talking to a test server the way a client does: buyers with their own
//! cookie jar, answers as a client sees them, admin calls, and scraping
//! `/metrics`.

use super::{ADMIN_TOKEN, TestApp};
use app::model::Item;
use reqwest::cookie::Jar;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A buyer: an HTTP client with its own cookie jar and session.
#[derive(Clone)]
pub struct Buyer {
    pub client: reqwest::Client,
    /// The id `POST /api/session` answered.
    pub id: String,
    base: String,
    jar: Arc<Jar>,
}

/// One answer, as a client sees it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
    pub replayed: bool,
    pub retry_after: Option<String>,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }
}

pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    Answer {
        status,
        body,
        replayed,
        retry_after,
    }
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

fn client_with(jar: &Arc<Jar>, timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .timeout(timeout)
        .build()
        .expect("client")
}

/// A buyer with a session on the server at `base` (any instance).
pub async fn buyer_on(base: &str) -> Buyer {
    let jar = Arc::new(Jar::default());
    let client = client_with(&jar, Duration::from_secs(60));
    let response = client
        .post(format!("{base}/api/session"))
        .send()
        .await
        .expect("session");
    assert_eq!(response.status().as_u16(), 201);
    let session: serde_json::Value = response.json().await.expect("session json");
    Buyer {
        client,
        id: session["buyer_id"].as_str().expect("a buyer id").to_owned(),
        base: base.to_owned(),
        jar,
    }
}

/// The server's `/metrics` text.
pub async fn metrics_text(base: &str) -> String {
    http_client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text")
}

/// The `name{labels} value` lines of the server's `/metrics`, keyed by
/// `name{labels}`.
pub async fn scrape_metrics(base: &str) -> HashMap<String, f64> {
    metrics_text(base)
        .await
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(series, value)| value.parse().ok().map(|v| (series.to_owned(), v)))
        .collect()
}

/// One series of a scrape; a series never recorded reads 0.
pub fn metric(metrics: &HashMap<String, f64>, series: &str) -> f64 {
    metrics.get(series).copied().unwrap_or(0.0)
}

impl TestApp {
    pub async fn buyer(&self) -> Buyer {
        buyer_on(&self.base).await
    }

    pub async fn create_item(&self, stock: i64, max_per_buyer: Option<i64>) -> Item {
        let response = http_client()
            .post(format!("{}/api/admin/items", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({
                "title": "Test camera",
                "price_cents": 1999,
                "stock": stock,
                "max_per_buyer": max_per_buyer,
            }))
            .send()
            .await
            .expect("create item");
        assert_eq!(response.status().as_u16(), 201, "create item");
        response.json().await.expect("item json")
    }

    /// Creates an item with any extra fields (a drop's terms).
    pub async fn create_drop(&self, stock: i64, terms: serde_json::Value) -> Item {
        let mut body = serde_json::json!({
            "title": "Test drop",
            "price_cents": 1999,
            "stock": stock,
        });
        if let (Some(body), Some(terms)) = (body.as_object_mut(), terms.as_object()) {
            body.extend(terms.clone());
        }
        let response = http_client()
            .post(format!("{}/api/admin/items", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("create drop");
        assert_eq!(response.status().as_u16(), 201, "create drop");
        response.json().await.expect("item json")
    }

    /// `PATCH /api/admin/items/{id}`.
    pub async fn change_terms(&self, item: &Item, change: serde_json::Value) -> Answer {
        answer(
            http_client()
                .patch(format!("{}/api/admin/items/{}", self.base, item.id))
                .bearer_auth(ADMIN_TOKEN)
                .json(&change)
                .send()
                .await
                .expect("patch"),
        )
        .await
    }

    pub async fn restock(&self, item: &Item, delta: i64) -> Answer {
        answer(
            http_client()
                .post(format!("{}/api/admin/items/{}/restock", self.base, item.id))
                .bearer_auth(ADMIN_TOKEN)
                .json(&serde_json::json!({ "delta": delta }))
                .send()
                .await
                .expect("restock"),
        )
        .await
    }

    pub async fn item(&self, id: app::domain::ItemId) -> Item {
        http_client()
            .get(format!("{}/api/items/{id}", self.base))
            .send()
            .await
            .expect("get item")
            .json()
            .await
            .expect("item json")
    }
}

impl Buyer {
    /// The same buyer (the same cookies) talking to another instance.
    pub fn on(&self, base: &str) -> Buyer {
        Buyer {
            base: base.to_owned(),
            ..self.clone()
        }
    }

    /// A client with this buyer's cookies that gives up after `timeout`.
    pub fn impatient(&self, timeout: Duration) -> reqwest::Client {
        client_with(&self.jar, timeout)
    }

    pub async fn order(&self, item: app::domain::ItemId, qty: i64, key: &str) -> Answer {
        answer(
            self.client
                .post(format!("{}/api/orders", self.base))
                .header("Idempotency-Key", key)
                .json(&serde_json::json!({ "item_id": item, "qty": qty }))
                .send()
                .await
                .expect("order request"),
        )
        .await
    }

    /// Orders, retrying with the same key while the answer is retryable, as
    /// a well-behaved client does: after `Retry-After` when the server names
    /// one, else after a short pause; gives up after a minute.
    pub async fn order_until_definite(
        &self,
        item: app::domain::ItemId,
        qty: i64,
        key: &str,
    ) -> Answer {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let answer = self.order(item, qty, key).await;
            if answer.body["retryable"] != serde_json::json!(true) {
                return answer;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no definite answer within a minute; the last: {answer:?}"
            );
            let pause = answer
                .retry_after
                .as_deref()
                .and_then(|s| s.parse::<u64>().ok())
                .map_or(Duration::from_millis(20), Duration::from_secs);
            tokio::time::sleep(pause).await;
        }
    }

    /// Orders with a waiting-room pass (`Queue-Pass`).
    pub async fn order_with_pass(
        &self,
        item: app::domain::ItemId,
        qty: i64,
        key: &str,
        pass: &str,
    ) -> Answer {
        answer(
            self.client
                .post(format!("{}/api/orders", self.base))
                .header("Idempotency-Key", key)
                .header("Queue-Pass", pass)
                .json(&serde_json::json!({ "item_id": item, "qty": qty }))
                .send()
                .await
                .expect("order request"),
        )
        .await
    }

    /// `POST /api/items/{id}/queue`.
    pub async fn join(&self, item: app::domain::ItemId) -> Answer {
        answer(
            self.client
                .post(format!("{}/api/items/{item}/queue", self.base))
                .send()
                .await
                .expect("join"),
        )
        .await
    }

    /// `GET /api/items/{id}/queue`.
    pub async fn queue(&self, item: app::domain::ItemId) -> Answer {
        answer(
            self.client
                .get(format!("{}/api/items/{item}/queue", self.base))
                .send()
                .await
                .expect("queue"),
        )
        .await
    }

    pub async fn outcome(&self, key: &str) -> Answer {
        answer(
            self.client
                .get(format!("{}/api/orders/by-key/{key}", self.base))
                .send()
                .await
                .expect("outcome request"),
        )
        .await
    }
}
