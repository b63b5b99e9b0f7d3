//! What a run needs on the server, created through the API: buyer sessions
//! (one signed cookie each) and items.

use crate::cli::{Endpoint, RunArgs};
use anyhow::Context;

pub struct Buyer {
    /// The buyer's id, as the database stores it in `orders.buyer`.
    pub id: String,
    /// The `Cookie` header value: `buyer=<signed id>`.
    pub cookie: String,
}

#[derive(Debug, Clone)]
pub struct Item {
    pub id: i64,
    pub initial_stock: i64,
}

pub struct Target {
    pub buyers: Vec<Buyer>,
    pub items: Vec<Item>,
}

/// A buyer session on `base`.
///
/// # Errors
/// The server refused or set no cookie.
pub async fn new_buyer(client: &reqwest::Client, base: &str) -> anyhow::Result<Buyer> {
    let response = client
        .post(format!("{base}/api/session"))
        .send()
        .await
        .context("POST /api/session")?;
    let cookie = response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("buyer="))
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| anyhow::anyhow!("POST /api/session set no buyer cookie"))?
        .to_owned();
    let body: serde_json::Value = response.json().await.context("POST /api/session body")?;
    let id = body["buyer_id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("POST /api/session answered no buyer_id"))?
        .to_owned();
    Ok(Buyer { id, cookie })
}

/// Opens `count` buyer sessions, 64 at a time.
///
/// # Errors
/// The server refused or did not answer.
pub async fn buyers(
    client: &reqwest::Client,
    base: &str,
    count: u32,
) -> anyhow::Result<Vec<Buyer>> {
    let mut buyers = Vec::with_capacity(count as usize);
    let mut pending = tokio::task::JoinSet::new();
    for _ in 0..count {
        if pending.len() >= 64
            && let Some(done) = pending.join_next().await
        {
            buyers.push(done??);
        }
        let (client, base) = (client.clone(), base.to_owned());
        pending.spawn(async move { new_buyer(&client, &base).await });
    }
    while let Some(done) = pending.join_next().await {
        buyers.push(done??);
    }
    Ok(buyers)
}

/// Creates an item through the admin API (`fields`: title, price, stock and
/// any terms of a drop) and returns its id.
///
/// # Errors
/// The server refused (anything but 201) or did not answer.
pub async fn create_item(
    client: &reqwest::Client,
    base: &str,
    admin_token: &str,
    fields: &serde_json::Value,
) -> anyhow::Result<i64> {
    let response = client
        .post(format!("{base}/api/admin/items"))
        .bearer_auth(admin_token)
        .json(fields)
        .send()
        .await
        .context("POST /api/admin/items")?;
    anyhow::ensure!(
        response.status().as_u16() == 201,
        "creating an item answered {}",
        response.status()
    );
    let item: serde_json::Value = response.json().await?;
    item["id"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("an item without an id"))
}

/// Creates the buyers and the items.
///
/// # Errors
/// The server refused or did not answer.
pub async fn prepare(client: &reqwest::Client, args: &RunArgs) -> anyhow::Result<Target> {
    let base = &args.targets[0];
    if args.endpoint == Endpoint::Healthz {
        return Ok(Target {
            buyers: Vec::new(),
            items: Vec::new(),
        });
    }
    let buyers = buyers(client, base, args.buyers).await?;
    let token = args.admin_token.as_deref().unwrap_or_default();
    let mut items = Vec::new();
    for n in 0..args.items {
        let fields = serde_json::json!({
            "title": format!("Load item {n} ({})", args.label),
            "price_cents": 100,
            "stock": args.stock,
        });
        items.push(Item {
            id: create_item(client, base, token, &fields).await?,
            initial_stock: args.stock,
        });
    }
    Ok(Target { buyers, items })
}
