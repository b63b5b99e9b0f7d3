//! What the history is judged against, gathered once the run is over:
//!
//! - the database's orders for the run's items, read directly (not through
//!   the servers, and not through the fault run's proxy): the truth;
//! - what `GET /api/orders/by-key/{key}` says for every key of the history,
//!   asked as the key's buyer, spread over the targets.
//!
//! A lookup answering `in_progress` (a claim left by a request that died
//! with its server holds for the claim's lease, 10 s) or not answering is
//! asked again for up to [`SETTLE_WITHIN`]: the rules judge the final
//! state, not the moment the load stopped.

use super::{History, Payload};
use crate::setup::Target;
use anyhow::Context;
use sqlx::{Connection, Row};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// How long a key's lookup may keep answering `in_progress` or nothing.
const SETTLE_WITHIN: Duration = Duration::from_secs(20);
/// Lookups in flight at once.
const LOOKUPS_IN_FLIGHT: usize = 32;

/// One row of `orders`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbOrder {
    pub id: String,
    /// The buyer and key as stored.
    pub buyer: String,
    pub key: String,
    /// The run's (buyer index, key) they name; `None` when no buyer or key
    /// of this run matches.
    pub owner: Option<(u32, uuid::Uuid)>,
    pub payload: Payload,
}

/// What `by-key` said at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Order {
        order_id: String,
    },
    Failed {
        code: String,
    },
    InProgress,
    Unknown,
    /// No answer in the shape of the contract (the text says what came).
    Unreadable(String),
}

impl Lookup {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Order { .. } => "order",
            Self::Failed { .. } => "failed",
            Self::InProgress => "in_progress",
            Self::Unknown => "unknown",
            Self::Unreadable(_) => "unreadable",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Order { order_id } => format!("order {order_id}"),
            Self::Failed { code } => format!("failed {code}"),
            Self::Unreadable(what) => format!("unreadable ({what})"),
            Self::InProgress | Self::Unknown => self.label().to_owned(),
        }
    }

    /// Reads a `by-key` answer.
    fn read(status: u16, body: &[u8]) -> Self {
        let unreadable = || Self::Unreadable(format!("{status} {}", String::from_utf8_lossy(body)));
        if status != 200 {
            return unreadable();
        }
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
            return unreadable();
        };
        match value["state"].as_str() {
            Some("order") => match value["order"]["order_id"].as_str() {
                Some(id) => Self::Order {
                    order_id: id.to_owned(),
                },
                None => unreadable(),
            },
            Some("failed") => match value["error"]["code"].as_str() {
                Some(code) => Self::Failed {
                    code: code.to_owned(),
                },
                None => unreadable(),
            },
            Some("in_progress") => Self::InProgress,
            Some("unknown") => Self::Unknown,
            _ => unreadable(),
        }
    }

    fn settled(&self) -> bool {
        !matches!(self, Self::InProgress | Self::Unreadable(_))
    }
}

/// Everything the rules compare the history with.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    pub orders: Vec<DbOrder>,
    pub by_key: HashMap<(u32, uuid::Uuid), Lookup>,
}

/// Reads the orders of `items` from the database at `url` and asks `by-key`
/// for every key of `history`.
///
/// # Errors
/// The database cannot be read.
pub async fn gather(
    client: &reqwest::Client,
    targets: &[String],
    target: &Target,
    history: &History,
    url: &str,
) -> anyhow::Result<Evidence> {
    let orders = database_orders(url, target).await?;
    let keys: HashSet<(u32, uuid::Uuid)> =
        history.events.iter().map(|e| (e.buyer, e.key)).collect();
    let by_key = lookups(client, targets, target, keys).await;
    Ok(Evidence { orders, by_key })
}

async fn database_orders(url: &str, target: &Target) -> anyhow::Result<Vec<DbOrder>> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url)
        .await
        .context("connecting to the database for the history check")?;
    let mark = if url.starts_with("postgres") {
        "$1"
    } else {
        "?"
    };
    let buyers: HashMap<&str, u32> = target
        .buyers
        .iter()
        .enumerate()
        .map(|(i, b)| (b.id.as_str(), i as u32))
        .collect();
    let mut orders = Vec::new();
    for item in &target.items {
        let rows = sqlx::query(&format!(
            "SELECT id, buyer, idempotency_key, item_id, qty FROM orders WHERE item_id = {mark}"
        ))
        .bind(item.id)
        .fetch_all(&mut conn)
        .await
        .context("reading the orders")?;
        for row in rows {
            let buyer: String = row.try_get("buyer")?;
            let key: String = row.try_get("idempotency_key")?;
            let owner = buyers
                .get(buyer.as_str())
                .copied()
                .zip(uuid::Uuid::parse_str(&key).ok());
            orders.push(DbOrder {
                id: row.try_get("id")?,
                owner,
                buyer,
                key,
                payload: Payload {
                    item: row.try_get("item_id")?,
                    qty: row.try_get("qty")?,
                },
            });
        }
    }
    Ok(orders)
}

/// One key's final `by-key`, asked again while it is not settled.
async fn lookup(client: &reqwest::Client, base: &str, cookie: &str, key: uuid::Uuid) -> Lookup {
    let deadline = Instant::now() + SETTLE_WITHIN;
    loop {
        let answer = match client
            .get(format!("{base}/api/orders/by-key/{key}"))
            .header("Cookie", cookie)
            .send()
            .await
        {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.bytes().await {
                    Ok(body) => Lookup::read(status, &body),
                    Err(e) => Lookup::Unreadable(format!("body: {e}")),
                }
            }
            Err(e) => Lookup::Unreadable(format!("no answer: {e}")),
        };
        if answer.settled() || Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn lookups(
    client: &reqwest::Client,
    targets: &[String],
    target: &Target,
    keys: HashSet<(u32, uuid::Uuid)>,
) -> HashMap<(u32, uuid::Uuid), Lookup> {
    let mut found = HashMap::with_capacity(keys.len());
    let mut pending = tokio::task::JoinSet::new();
    for (n, (buyer, key)) in keys.into_iter().enumerate() {
        if pending.len() >= LOOKUPS_IN_FLIGHT
            && let Some(Ok((k, l))) = pending.join_next().await
        {
            found.insert(k, l);
        }
        let Some(cookie) = target.buyers.get(buyer as usize).map(|b| b.cookie.clone()) else {
            continue;
        };
        let (client, base) = (client.clone(), targets[n % targets.len()].clone());
        pending.spawn(async move {
            let answer = lookup(&client, &base, &cookie, key).await;
            ((buyer, key), answer)
        });
    }
    while let Some(done) = pending.join_next().await {
        if let Ok((k, l)) = done {
            found.insert(k, l);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_key_answers_are_read_by_state() {
        let order = br#"{"state":"order","order":{"order_id":"o-1","qty":1}}"#;
        assert_eq!(
            Lookup::read(200, order),
            Lookup::Order {
                order_id: "o-1".into()
            }
        );
        let failed =
            br#"{"state":"failed","error":{"code":"sold_out","message":"m","retryable":false}}"#;
        assert_eq!(
            Lookup::read(200, failed),
            Lookup::Failed {
                code: "sold_out".into()
            }
        );
        assert_eq!(
            Lookup::read(200, br#"{"state":"unknown"}"#),
            Lookup::Unknown
        );
        assert_eq!(
            Lookup::read(200, br#"{"state":"in_progress"}"#),
            Lookup::InProgress
        );
        assert!(!Lookup::read(200, br#"{"state":"in_progress"}"#).settled());
    }

    #[test]
    fn anything_else_is_unreadable_and_asked_again() {
        for (status, body) in [
            (
                503,
                &br#"{"code":"unavailable","message":"m","retryable":true}"#[..],
            ),
            (200, b"not json"),
            (200, br#"{"state":"order"}"#),
            (200, br#"{"state":"maybe"}"#),
        ] {
            let l = Lookup::read(status, body);
            assert_eq!(l.label(), "unreadable", "{status} {body:?}");
            assert!(!l.settled());
        }
    }
}
