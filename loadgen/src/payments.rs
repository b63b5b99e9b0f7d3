//! `loadgen payments`: a drop day with a payment deadline. Buyers order at
//! a constant rate (open model) while the item sells out; each order is
//! paid through the signed webhook in time (`--pay-fraction`), paid after
//! its deadline (`--late-fraction` of the rest), or never. Units of unpaid
//! orders come back when their deadline passes, and the buyers still
//! ordering buy them again. Afterwards it checks, through the admin API and
//! (with `--database-url`) the database:
//!
//! - no oversell: units held by orders + stock = initial stock, stock >= 0;
//! - every expired unit is back in stock or sold again (the same sum, with
//!   expired orders holding nothing);
//! - no order both paid and expired: every on-time payment answered `paid`
//!   and its order is `paid` (never expired); every late payment answered
//!   `refund_due` and its order is `refund_due`; a paid order never has an
//!   expiry time and a `refund_due` one always has;
//! - a repeated webhook delivery answers the same body;
//! - every 201 is one order; the Redis counter equals the stock, no hold
//!   is left, no order awaits payment once the last deadline passed.
//!
//! It reports the units returned by expiry, the units sold again (from the
//! database: orders that bought a returned unit after the fresh stock ran
//! out, matched to expiries oldest first) and the time from an expiry to
//! that resale.

use crate::check::Check;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use sqlx::{Connection, Row};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct PaymentsArgs {
    /// Server base URL. Loopback only.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub target: String,
    /// Order attempts per second, leaving on schedule.
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Distinct buyers.
    #[arg(long, default_value_t = 500)]
    pub buyers: u32,
    /// Stock of the item created for the run.
    #[arg(long, default_value_t = 100)]
    pub stock: i64,
    /// Share of created orders paid before their deadline.
    #[arg(long, default_value_t = 0.8)]
    pub pay_fraction: f64,
    /// Share of the other orders paid after their deadline (refunds due).
    #[arg(long, default_value_t = 0.0)]
    pub late_fraction: f64,
    /// Share of on-time payments whose webhook is delivered twice.
    #[arg(long, default_value_t = 0.1)]
    pub replay_fraction: f64,
    /// A late payment arrives this long after the deadline (give the
    /// server's expiry reaper an interval or two).
    #[arg(long, default_value_t = 3_000)]
    pub late_by_ms: u64,
    /// Admin token, for creating the item and reading its stats.
    #[arg(long, env = "ADMIN_TOKEN")]
    pub admin_token: String,
    /// The server's PAYMENT_WEBHOOK_SECRET.
    #[arg(long, env = "PAYMENT_WEBHOOK_SECRET")]
    pub webhook_secret: String,
    /// The server's database: orders are checked and resales measured there.
    #[arg(long, env = "LOADGEN_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Longest wait, after the last order was sent, for every deadline to
    /// pass and every unit to come back.
    #[arg(long, default_value_t = 120.0)]
    pub drain_seconds: f64,
    /// Directory for the run's summary (`payments-<label>.json`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value = "run")]
    pub label: String,
}

impl PaymentsArgs {
    /// # Errors
    /// A non-loopback target or a number out of range.
    pub fn validate(&self) -> anyhow::Result<()> {
        crate::cli::loopback_only(std::slice::from_ref(&self.target))?;
        for (name, share) in [
            ("--pay-fraction", self.pay_fraction),
            ("--late-fraction", self.late_fraction),
            ("--replay-fraction", self.replay_fraction),
        ] {
            anyhow::ensure!(
                (0.0..=1.0).contains(&share),
                "{name} must be between 0 and 1"
            );
        }
        anyhow::ensure!(
            (0.1..=3_600.0).contains(&self.duration),
            "--duration must be between 0.1 and 3600 seconds"
        );
        anyhow::ensure!(
            self.rate > 0 && self.buyers > 0 && self.stock > 0,
            "--rate, --buyers and --stock must be at least 1"
        );
        Ok(())
    }
}

/// What the generator decided for one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Fate {
    OnTime,
    Late,
    Never,
}

/// One order the server created, and what its payment got back.
#[derive(Debug, Clone)]
struct Placed {
    order_id: String,
    fate: Fate,
    /// The webhook's `result`, when a payment was sent.
    answered: Option<String>,
    /// Whether a second delivery of the same event answered the same body.
    replay_matched: Option<bool>,
}

#[derive(Debug, Default)]
struct Tally {
    placed: Vec<Placed>,
    codes: BTreeMap<String, u64>,
    failed: u64,
}

/// The run's figures, printed and written as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct PaymentsSummary {
    pub label: String,
    pub sent: u64,
    pub created: u64,
    pub paid_on_time: u64,
    pub paid_late: u64,
    pub never_paid: u64,
    pub answers: BTreeMap<String, u64>,
    pub units_returned: i64,
    /// Units bought again after an expiry returned them (needs the database).
    pub units_resold: Option<i64>,
    /// Seconds from an expiry to the resale of its unit (needs the database).
    pub resale_p50_s: Option<f64>,
    pub resale_p99_s: Option<f64>,
    pub final_stock: i64,
    pub oversold_units: i64,
    pub checks: Vec<Check>,
}

/// Deterministic shares: the fate of order `n` (splitmix64 of its number).
fn share(seed: u64, n: u64) -> f64 {
    let mut z = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % 1_000_000) as f64 / 1_000_000.0
}

fn fate_of(args: &PaymentsArgs, seed: u64, n: u64) -> Fate {
    let roll = share(seed, n);
    if roll < args.pay_fraction {
        Fate::OnTime
    } else if share(seed ^ 0x5EED, n) < args.late_fraction {
        Fate::Late
    } else {
        Fate::Never
    }
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
fn signature(secret: &str, unix_secs: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(unix_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let mut header = format!("t={unix_secs},v1=");
    for byte in mac.finalize().into_bytes() {
        let _ = write!(header, "{byte:02x}");
    }
    header
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Delivers one signed `payment.succeeded`; the answer's body.
async fn deliver(
    client: &reqwest::Client,
    args: &PaymentsArgs,
    event_id: &str,
    order_id: &str,
    amount_cents: i64,
) -> Option<serde_json::Value> {
    let body = serde_json::json!({
        "event_id": event_id,
        "type": "payment.succeeded",
        "order_id": order_id,
        "amount_cents": amount_cents,
    })
    .to_string();
    let response = client
        .post(format!("{}/api/payments/webhook", args.target))
        .header("content-type", "application/json")
        .header(
            "Payment-Signature",
            signature(&args.webhook_secret, now_ms() / 1000, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .ok()?;
    if response.status().as_u16() != 200 {
        return None;
    }
    response.json().await.ok()
}

/// Pays (or not) one created order as its fate says.
async fn settle(
    client: reqwest::Client,
    args: Arc<PaymentsArgs>,
    n: u64,
    fate: Fate,
    body: serde_json::Value,
) -> Option<Placed> {
    let order_id = body["order_id"].as_str()?.to_owned();
    let pay_by = body["pay_by_ms"].as_i64()?;
    let amount = body["total_cents"].as_i64()?;
    let event_id = format!("lg-{}-{n}", args.label);
    let mut placed = Placed {
        order_id,
        fate,
        answered: None,
        replay_matched: None,
    };
    let wait_until = match fate {
        Fate::Never => return Some(placed),
        // Somewhere in the first half of the window.
        Fate::OnTime => now_ms() + ((pay_by - now_ms()).max(0) as f64 * 0.5 * share(7, n)) as i64,
        Fate::Late => pay_by + args.late_by_ms as i64,
    };
    tokio::time::sleep(Duration::from_millis(
        u64::try_from(wait_until - now_ms()).unwrap_or(0),
    ))
    .await;
    let first = deliver(&client, &args, &event_id, &placed.order_id, amount).await;
    placed.answered = first
        .as_ref()
        .and_then(|a| a["result"].as_str())
        .map(str::to_owned);
    if fate == Fate::OnTime && share(11, n) < args.replay_fraction {
        let again = deliver(&client, &args, &event_id, &placed.order_id, amount).await;
        placed.replay_matched = Some(again.is_some() && again == first);
    }
    Some(placed)
}

async fn stats(
    client: &reqwest::Client,
    args: &PaymentsArgs,
    item: i64,
) -> anyhow::Result<serde_json::Value> {
    Ok(client
        .get(format!("{}/api/admin/items/{item}/stats", args.target))
        .bearer_auth(&args.admin_token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Sends the orders at `--rate` for `--duration`, paying as each order's
/// fate says; returns once every payment was sent.
async fn drive(
    client: &reqwest::Client,
    args: &Arc<PaymentsArgs>,
    buyers: &[crate::setup::Buyer],
    item: i64,
) -> (u64, Tally) {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let seed = now_ms() as u64;
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let mut tasks = tokio::task::JoinSet::new();
    let mut sent = 0u64;
    while Instant::now() < deadline {
        ticker.tick().await;
        let n = sent;
        sent += 1;
        let cookie = buyers[(n % buyers.len() as u64) as usize].cookie.clone();
        let (client, args, tally) = (client.clone(), args.clone(), tally.clone());
        let fate = fate_of(&args, seed, n);
        tasks.spawn(async move {
            let answer = client
                .post(format!("{}/api/orders", args.target))
                .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
                .header("Cookie", cookie)
                .json(&serde_json::json!({ "item_id": item, "qty": 1 }))
                .send()
                .await;
            let Ok(response) = answer else {
                tally.lock().map(|mut t| t.failed += 1).ok();
                return;
            };
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            let code = match status {
                201 => "created".to_owned(),
                _ => body["code"].as_str().unwrap_or("unreadable").to_owned(),
            };
            tally
                .lock()
                .map(|mut t| *t.codes.entry(code).or_default() += 1)
                .ok();
            if status == 201
                && let Some(placed) = settle(client, args, n, fate, body).await
            {
                tally.lock().map(|mut t| t.placed.push(placed)).ok();
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let tally = std::mem::take(
        &mut *tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    (sent, tally)
}

fn check(name: &str, passed: bool, detail: String) -> Check {
    Check {
        name: name.to_owned(),
        passed,
        detail,
    }
}

/// The database's view of the item's orders: id → (status, qty, created,
/// expired).
type OrderRows = Vec<(String, String, i64, i64, Option<i64>, Option<i64>)>;

async fn order_rows(url: &str, item: i64) -> anyhow::Result<OrderRows> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await?;
    let mark = if url.starts_with("postgres") {
        "$1"
    } else {
        "?"
    };
    let rows = sqlx::query(&format!(
        "SELECT id, status, qty, created_at, expired_at_ms, paid_at_ms FROM orders WHERE item_id = {mark}"
    ))
    .bind(item)
    .fetch_all(&mut conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("id")?,
                row.try_get("status")?,
                row.try_get("qty")?,
                row.try_get("created_at")?,
                row.try_get("expired_at_ms")?,
                row.try_get("paid_at_ms")?,
            ))
        })
        .collect()
}

/// Units bought again after an expiry, and the seconds each waited: the
/// initial stock sells first; after it ran out, each order takes returned
/// units oldest first.
fn resales(rows: &OrderRows, initial_stock: i64) -> (i64, Vec<f64>) {
    enum Event {
        Returned(i64),
        Ordered(i64),
    }
    let mut timeline: Vec<(i64, u8, Event)> = Vec::new();
    for (_, _, qty, created, expired, _) in rows {
        timeline.push((*created, 1, Event::Ordered(*qty)));
        if let Some(expired) = expired {
            timeline.push((*expired, 0, Event::Returned(*qty)));
        }
    }
    timeline.sort_by_key(|(at, order, _)| (*at, *order));
    let mut fresh = initial_stock;
    let mut returned: VecDeque<(i64, i64)> = VecDeque::new();
    let mut waited = Vec::new();
    for (at, _, event) in timeline {
        match event {
            Event::Returned(qty) => returned.push_back((at, qty)),
            Event::Ordered(mut qty) => {
                let from_fresh = qty.min(fresh.max(0));
                fresh -= from_fresh;
                qty -= from_fresh;
                while qty > 0 {
                    let Some(front) = returned.front_mut() else {
                        break;
                    };
                    let taken = front.1.min(qty);
                    for _ in 0..taken {
                        waited.push((at - front.0) as f64 / 1000.0);
                    }
                    front.1 -= taken;
                    qty -= taken;
                    if front.1 == 0 {
                        returned.pop_front();
                    }
                }
            }
        }
    }
    (waited.len() as i64, waited)
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(rank).copied()
}

/// Runs the drop day and checks it.
///
/// # Errors
/// The server refused to set the run up, or could not be read afterwards.
pub async fn run(args: PaymentsArgs) -> anyhow::Result<bool> {
    args.validate()?;
    let args = Arc::new(args);
    let client = crate::drive::client()?;
    let mut buyers = Vec::with_capacity(args.buyers as usize);
    for _ in 0..args.buyers {
        buyers.push(crate::setup::new_buyer(&client, &args.target).await?);
    }
    let item = crate::setup::create_item(
        &client,
        &args.target,
        &args.admin_token,
        &serde_json::json!({
            "title": format!("Drop day ({})", args.label),
            "price_cents": 1999,
            "stock": args.stock,
        }),
    )
    .await?;
    println!(
        "loadgen payments: {} buyers, stock {}, {} orders/s for {} s; {:.0}% pay in time, {:.0}% of the rest pay late",
        buyers.len(),
        args.stock,
        args.rate,
        args.duration,
        args.pay_fraction * 100.0,
        args.late_fraction * 100.0
    );
    let (sent, tally) = drive(&client, &args, &buyers, item).await;

    // Every deadline passes, every unit comes back.
    let drain_until = Instant::now() + Duration::from_secs_f64(args.drain_seconds);
    let mut s = stats(&client, &args, item).await?;
    while (s["orders_by_status"]["awaiting_payment"]
        .as_i64()
        .unwrap_or(0)
        > 0
        || s["live_holds"].as_u64().unwrap_or(0) > 0
        || (s["counter"].is_i64() && s["counter"] != s["stock"]))
        && Instant::now() < drain_until
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
        s = stats(&client, &args, item).await?;
    }

    let count = |fate: Fate| tally.placed.iter().filter(|p| p.fate == fate).count() as u64;
    let stock = s["stock"].as_i64().unwrap_or(-1);
    let units = s["units_ordered"].as_i64().unwrap_or(-1);
    let returned = s["units_returned"].as_i64().unwrap_or(-1);
    let by_status = |status: &str| s["orders_by_status"][status].as_i64().unwrap_or(0);
    let created = tally.codes.get("created").copied().unwrap_or(0);
    let mut checks = vec![
        check(
            "no oversell: units held by orders + stock = initial stock",
            stock >= 0 && units + stock == args.stock,
            format!(
                "held {units} + stock {stock} = {} (initial {})",
                units + stock,
                args.stock
            ),
        ),
        check(
            "every expired unit is back in stock or sold again",
            by_status("paid") + by_status("awaiting_payment") + by_status("confirmed") + stock
                == args.stock
                && returned == by_status("expired") + by_status("refund_due"),
            format!(
                "paid {} + awaiting {} + stock {stock} = initial {}; {returned} units returned by {} expired and {} refund_due orders",
                by_status("paid"),
                by_status("awaiting_payment"),
                args.stock,
                by_status("expired"),
                by_status("refund_due")
            ),
        ),
        check(
            "every 201 is one order",
            s["orders"].as_i64() == Some(created as i64),
            format!(
                "{} orders in the database, {created} answered 201",
                s["orders"]
            ),
        ),
        check(
            "no order awaits payment after the last deadline",
            by_status("awaiting_payment") == 0,
            format!("{} awaiting", by_status("awaiting_payment")),
        ),
    ];
    let on_time_wrong: Vec<&Placed> = tally
        .placed
        .iter()
        .filter(|p| p.fate == Fate::OnTime && p.answered.as_deref() != Some("paid"))
        .collect();
    let late_wrong: Vec<&Placed> = tally
        .placed
        .iter()
        .filter(|p| p.fate == Fate::Late && p.answered.as_deref() != Some("refund_due"))
        .collect();
    checks.push(check(
        "payments in time answered paid, late ones refund_due",
        on_time_wrong.is_empty() && late_wrong.is_empty(),
        format!(
            "{} of {} in time not paid, {} of {} late not refund_due",
            on_time_wrong.len(),
            count(Fate::OnTime),
            late_wrong.len(),
            count(Fate::Late)
        ),
    ));
    let replays: Vec<bool> = tally
        .placed
        .iter()
        .filter_map(|p| p.replay_matched)
        .collect();
    checks.push(check(
        "a repeated webhook answers the same",
        replays.iter().all(|same| *same),
        format!(
            "{} of {} repeated deliveries answered differently",
            replays.iter().filter(|same| !**same).count(),
            replays.len()
        ),
    ));
    if s["counter"].is_i64() {
        checks.push(check(
            "Redis counter = database stock, no live hold",
            s["counter"].as_i64() == Some(stock) && s["live_holds"].as_u64() == Some(0),
            format!(
                "counter {}, stock {stock}, holds {}",
                s["counter"], s["live_holds"]
            ),
        ));
    }
    let mut resold = None;
    let mut waited = Vec::new();
    if let Some(url) = &args.database_url {
        let rows = order_rows(url, item).await?;
        let status_of: std::collections::HashMap<&str, (&str, Option<i64>)> = rows
            .iter()
            .map(|(id, status, _, _, expired, _)| (id.as_str(), (status.as_str(), *expired)))
            .collect();
        let both = rows
            .iter()
            .filter(|(_, status, _, _, expired, _)| {
                (status == "paid" && expired.is_some())
                    || (status == "refund_due" && expired.is_none())
            })
            .count();
        let disagree = tally
            .placed
            .iter()
            .filter(|p| {
                let status = status_of.get(p.order_id.as_str()).map(|(s, _)| *s);
                match p.answered.as_deref() {
                    Some(answer) => status != Some(answer),
                    None => !matches!(status, Some("expired")),
                }
            })
            .count();
        checks.push(check(
            "no order both paid and expired: every unit paid for is held, never resold",
            both == 0 && disagree == 0,
            format!(
                "{both} rows paid with an expiry or refunded without one; {disagree} orders whose database status differs from what their payment (or its absence) answered"
            ),
        ));
        let (n, times) = resales(&rows, args.stock);
        resold = Some(n);
        waited = times;
        waited.sort_by(f64::total_cmp);
    }
    let summary = PaymentsSummary {
        label: args.label.clone(),
        sent,
        created,
        paid_on_time: count(Fate::OnTime),
        paid_late: count(Fate::Late),
        never_paid: count(Fate::Never),
        answers: tally
            .codes
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .chain((tally.failed > 0).then(|| ("no_answer".to_owned(), tally.failed)))
            .collect(),
        units_returned: returned,
        units_resold: resold,
        resale_p50_s: quantile(&waited, 0.5),
        resale_p99_s: quantile(&waited, 0.99),
        final_stock: stock,
        oversold_units: (units + stock - args.stock).max(0),
        checks,
    };
    println!("{}", serde_json::to_string_pretty(&summary)?);
    for c in &summary.checks {
        println!(
            "{} {}: {}",
            if c.passed { "ok  " } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join(format!("payments-{}.json", args.label)),
            serde_json::to_string_pretty(&summary)?,
        )?;
    }
    Ok(summary.checks.iter().all(|c| c.passed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_an_independent_hmac() {
        // printf '1.x' | openssl dgst -sha256 -hmac key
        assert_eq!(
            signature("key", 1, b"x"),
            "t=1,v1=fc4913c41a7bf793267e2a384f3261c9436ec2cd097bd745e7b0d99113f510ec"
        );
    }

    #[test]
    fn fates_follow_the_fractions() {
        let args = |pay: f64, late: f64| PaymentsArgs {
            target: "http://127.0.0.1:1".into(),
            rate: 1,
            duration: 1.0,
            buyers: 1,
            stock: 1,
            pay_fraction: pay,
            late_fraction: late,
            replay_fraction: 0.0,
            late_by_ms: 0,
            admin_token: String::new(),
            webhook_secret: String::new(),
            database_url: None,
            drain_seconds: 1.0,
            out: None,
            label: "t".into(),
        };
        let a = args(0.8, 0.5);
        let fates: Vec<Fate> = (0..10_000).map(|n| fate_of(&a, 42, n)).collect();
        let on_time = fates.iter().filter(|f| **f == Fate::OnTime).count();
        let late = fates.iter().filter(|f| **f == Fate::Late).count();
        assert!((7_700..=8_300).contains(&on_time), "{on_time}");
        assert!((800..=1_200).contains(&late), "{late}");
        assert!((0..100).all(|n| fate_of(&args(0.0, 0.0), 1, n) == Fate::Never));
        assert!(args(1.5, 0.0).validate().is_err());
    }

    #[test]
    fn resales_count_returned_units_bought_after_the_fresh_stock_ran_out() {
        let row = |id: &str, status: &str, created: i64, expired: Option<i64>| {
            (id.to_owned(), status.to_owned(), 1, created, expired, None)
        };
        let rows = vec![
            row("a", "paid", 0, None),
            row("b", "expired", 1, Some(100)),
            row("c", "paid", 150, None),
            row("d", "paid", 2_100, None),
        ];
        // Stock 2: a and b take the fresh units; b's comes back at 100 and
        // is bought by c at 150; d finds nothing returned left.
        let (resold, waited) = resales(&rows, 2);
        assert_eq!(resold, 1);
        assert_eq!(waited, vec![0.05]);
    }
}
