//! `loadgen payments`: a drop day with a payment deadline. Buyers order at
//! a constant rate (open model) while the item sells out; each order is
//! paid through the signed webhook in time (`--pay-fraction`), paid after
//! its deadline (`--late-fraction` of the rest), or never. Units of unpaid
//! orders come back when their deadline passes, and the buyers still
//! ordering buy them again.
//!
//! With `--retries`, orders and webhooks are sent again while their answer
//! is retryable (no answer, a 5xx, `"retryable": true`), orders with the
//! same `Idempotency-Key` and webhooks with the same `event_id`, as a
//! careful client and a real payment provider do; each attempt goes to the
//! next `--target`. That is how `scripts/fault-run` drives it through its
//! faults: a payment sent in time can then land after its deadline, and is
//! rightly answered `refund_due`.
//!
//! Afterwards it checks, through the admin API and (with `--database-url`)
//! the database:
//!
//! - no oversell: units held by orders + stock = initial stock, stock >= 0;
//! - every expired unit is back in stock or sold again (the same sum, with
//!   expired orders holding nothing);
//! - every payment got a final answer, and the clock allows it: `paid`
//!   only for a payment first sent before its deadline, `refund_due` only
//!   for one answered after it (a payment sent in time but carried past
//!   its deadline by retries or a stall is counted: its expiry won);
//! - no unit both paid for and resold: each payment's answer is its
//!   order's final status in the database (an order never paid is
//!   `expired`), a paid order never has an expiry time and a `refund_due`
//!   one always has;
//! - a repeated webhook delivery answers the same body, and so does every
//!   event delivered once more after the run (after every fault);
//! - every 201 is one order; the Redis counter equals the stock, no hold
//!   is left, no order awaits payment once the last deadline passed.
//!
//! It reports the units returned by expiry, the units sold again (from the
//! database: orders that bought a returned unit after the fresh stock ran
//! out, matched to expiries oldest first) and the time from an expiry to
//! that resale.

use crate::answer::Answer;
use crate::check::Check;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sqlx::{Connection, Row};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct PaymentsArgs {
    /// Server base URL(s); orders and webhooks are spread over them.
    /// Loopback only.
    #[arg(long = "target", default_value = "http://127.0.0.1:3000")]
    pub targets: Vec<String>,
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
    /// Send an order or a webhook again this many times while its answer
    /// is retryable (same key, same event), each time to the next target.
    #[arg(long, default_value_t = 0)]
    pub retries: u32,
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
        crate::cli::loopback_only(&self.targets)?;
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
    amount_cents: i64,
    pay_by_ms: i64,
    event_id: String,
    /// The payment's deliveries; `None` when no payment was sent.
    payment: Option<Payment>,
    /// Whether a second delivery of the same event answered the same body.
    replay_matched: Option<bool>,
}

/// One payment's deliveries, up to its final answer.
#[derive(Debug, Clone)]
struct Payment {
    /// The final 200's body; `None` when every attempt failed or the
    /// webhook was refused.
    answer: Option<serde_json::Value>,
    attempts: u32,
    first_sent_ms: i64,
    answered_at_ms: i64,
}

impl Payment {
    /// The answer's `result`: `paid`, `refund_due`, `duplicate`.
    fn result(&self) -> Option<&str> {
        self.answer.as_ref().and_then(|a| a["result"].as_str())
    }
}

#[derive(Debug, Default)]
struct Tally {
    placed: Vec<Placed>,
    codes: BTreeMap<String, u64>,
    /// Orders and webhooks sent again after a retryable answer.
    retries: u64,
}

/// The run's figures, printed and written as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentsSummary {
    pub label: String,
    pub sent: u64,
    pub created: u64,
    pub paid_on_time: u64,
    pub paid_late: u64,
    pub never_paid: u64,
    /// Payments sent in time that retries or a stall carried past the
    /// deadline (answered `refund_due`).
    pub delayed_past_deadline: u64,
    /// Orders and webhooks sent again after a retryable answer.
    pub retries: u64,
    /// Events delivered once more after the run, all to answer as before.
    pub redelivered: u64,
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

/// The target of attempt `attempt` of request `n`: retries move on to the
/// next instance, as behind a load balancer.
fn target_of(args: &PaymentsArgs, n: u64, attempt: u32) -> &str {
    let at = (n as usize).wrapping_add(attempt as usize) % args.targets.len();
    &args.targets[at]
}

/// What one delivery of a webhook got back.
enum Delivery {
    /// A 200 and its body.
    Answered(serde_json::Value),
    /// A refusal that says not to send it again.
    Refused,
    /// No answer, a 5xx or a retryable refusal: the event may be sent again.
    Retry,
}

/// Delivers one signed event body once.
async fn deliver(client: &reqwest::Client, target: &str, secret: &str, body: &str) -> Delivery {
    let request = client
        .post(format!("{target}/api/payments/webhook"))
        .header("content-type", "application/json")
        .header(
            "Payment-Signature",
            signature(secret, now_ms() / 1000, body.as_bytes()),
        )
        .body(body.to_owned());
    match crate::answer::send(request).await {
        (answer, Some(bytes)) if answer.status == Some(200) => {
            serde_json::from_slice(&bytes).map_or(Delivery::Retry, Delivery::Answered)
        }
        (answer, _) if answer.retryable => Delivery::Retry,
        _ => Delivery::Refused,
    }
}

/// Delivers `placed`'s `payment.succeeded` until it is answered, refused
/// or out of retries (the provider's retries), starting at target `n`.
async fn pay(client: &reqwest::Client, args: &PaymentsArgs, n: u64, placed: &Placed) -> Payment {
    let body = serde_json::json!({
        "event_id": placed.event_id,
        "type": "payment.succeeded",
        "order_id": placed.order_id,
        "amount_cents": placed.amount_cents,
    })
    .to_string();
    let first_sent_ms = now_ms();
    let mut attempts = 0;
    loop {
        let target = target_of(args, n, attempts);
        attempts += 1;
        let answer = match deliver(client, target, &args.webhook_secret, &body).await {
            Delivery::Answered(body) => Some(body),
            Delivery::Retry if attempts <= args.retries => {
                tokio::time::sleep(crate::answer::retry_pause(attempts)).await;
                continue;
            }
            Delivery::Refused | Delivery::Retry => None,
        };
        return Payment {
            answer,
            attempts,
            first_sent_ms,
            answered_at_ms: now_ms(),
        };
    }
}

/// Pays (or not) one created order as its fate says.
async fn settle(
    client: reqwest::Client,
    args: Arc<PaymentsArgs>,
    n: u64,
    fate: Fate,
    body: serde_json::Value,
) -> Option<Placed> {
    let mut placed = Placed {
        order_id: body["order_id"].as_str()?.to_owned(),
        fate,
        amount_cents: body["total_cents"].as_i64()?,
        pay_by_ms: body["pay_by_ms"].as_i64()?,
        event_id: format!("lg-{}-{n}", args.label),
        payment: None,
        replay_matched: None,
    };
    let pay_by = placed.pay_by_ms;
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
    let payment = pay(&client, &args, n, &placed).await;
    if fate == Fate::OnTime && share(11, n) < args.replay_fraction {
        let again = pay(&client, &args, n + 1, &placed).await;
        placed.replay_matched = Some(again.answer.is_some() && again.answer == payment.answer);
    }
    placed.payment = Some(payment);
    Some(placed)
}

/// Places order `n` for `cookie`, sending it again with the same
/// `Idempotency-Key` while the answer is retryable; the final answer, its
/// body and the number of retries.
async fn place(
    client: &reqwest::Client,
    args: &PaymentsArgs,
    n: u64,
    cookie: &str,
    item: i64,
) -> (Answer, serde_json::Value, u32) {
    let key = uuid::Uuid::new_v4().to_string();
    let mut retries = 0;
    loop {
        let request = client
            .post(format!("{}/api/orders", target_of(args, n, retries)))
            .header("Idempotency-Key", &key)
            .header("Cookie", cookie)
            .json(&serde_json::json!({ "item_id": item, "qty": 1 }));
        let (answer, body) = crate::answer::send(request).await;
        let body = body
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if answer.retryable && retries < args.retries {
            retries += 1;
            tokio::time::sleep(crate::answer::retry_pause(retries)).await;
            continue;
        }
        return (answer, body, retries);
    }
}

async fn stats(
    client: &reqwest::Client,
    args: &PaymentsArgs,
    item: i64,
) -> anyhow::Result<serde_json::Value> {
    Ok(client
        .get(format!("{}/api/admin/items/{item}/stats", args.targets[0]))
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
            let (answer, body, retries) = place(&client, &args, n, &cookie, item).await;
            let code = match (answer.status, answer.code) {
                (Some(201), _) => "created".to_owned(),
                (None, _) => "no_answer".to_owned(),
                (Some(_), code) => code.unwrap_or_else(|| "unreadable".to_owned()),
            };
            let created = answer.status == Some(201);
            tally
                .lock()
                .map(|mut t| {
                    *t.codes.entry(code).or_default() += 1;
                    t.retries += u64::from(retries);
                })
                .ok();
            if created && let Some(placed) = settle(client, args, n, fate, body).await {
                tally
                    .lock()
                    .map(|mut t| {
                        t.retries += placed
                            .payment
                            .as_ref()
                            .map_or(0, |p| u64::from(p.attempts.saturating_sub(1)));
                        t.placed.push(placed);
                    })
                    .ok();
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

/// How the payments' answers sit with their deadlines.
#[derive(Debug, Default, PartialEq, Eq)]
struct Timing {
    /// Payments sent without a final answer (out of retries, or refused).
    unanswered: u64,
    /// Answers the clock rules out: `paid` for a payment first sent after
    /// its deadline, `refund_due` for one answered before it.
    impossible: u64,
    /// Any other answer than `paid` or `refund_due` (`duplicate`: no other
    /// event paid these orders).
    wrong: u64,
    /// Payments sent in time but answered `refund_due` after the deadline,
    /// when retries or a stall (a fault) carried them past it: the expiry
    /// won, rightly. None in a run without faults on a healthy server.
    delayed_past_deadline: u64,
}

fn judge_timing(placed: &[Placed]) -> Timing {
    let mut timing = Timing::default();
    for p in placed {
        let Some(payment) = &p.payment else { continue };
        let Some(result) = payment.result() else {
            timing.unanswered += 1;
            continue;
        };
        let against_clock = match result {
            "paid" => payment.first_sent_ms > p.pay_by_ms,
            "refund_due" => payment.answered_at_ms < p.pay_by_ms,
            _ => false,
        };
        if against_clock {
            timing.impossible += 1;
            continue;
        }
        match (p.fate, result) {
            (Fate::OnTime, "paid") | (Fate::Late, "refund_due") => {}
            (Fate::OnTime, "refund_due") => timing.delayed_past_deadline += 1,
            _ => timing.wrong += 1,
        }
    }
    timing
}

/// Events delivered once more after the run, and how many answered
/// differently from their first final answer.
#[derive(Debug, Default)]
struct Redelivered {
    sent: u64,
    differed: u64,
}

/// Delivers every answered payment's event again, as a provider that
/// retries long after does; each must answer exactly as it did.
async fn redeliver(
    client: &reqwest::Client,
    args: &PaymentsArgs,
    placed: &[Placed],
) -> Redelivered {
    let mut out = Redelivered::default();
    for (n, p) in placed.iter().enumerate() {
        let Some(first) = p.payment.as_ref().and_then(|pay| pay.answer.as_ref()) else {
            continue;
        };
        let again = pay(client, args, n as u64, p).await;
        out.sent += 1;
        if again.answer.as_ref() != Some(first) {
            out.differed += 1;
        }
    }
    out
}

impl PaymentsSummary {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }
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
        buyers.push(crate::setup::new_buyer(&client, &args.targets[0]).await?);
    }
    let item = crate::setup::create_item(
        &client,
        &args.targets[0],
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
    let timing = judge_timing(&tally.placed);
    checks.push(check(
        "every payment answered, as its timing allows",
        timing.unanswered == 0 && timing.impossible == 0 && timing.wrong == 0,
        format!(
            "{} of {} payments without a final answer; {} answered against the clock (paid though first sent after the deadline, or refund_due though answered before it); {} answered neither paid nor refund_due; {} sent in time, carried past the deadline by retries or a stall and rightly refund_due",
            timing.unanswered,
            tally.placed.iter().filter(|p| p.payment.is_some()).count(),
            timing.impossible,
            timing.wrong,
            timing.delayed_past_deadline
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
    let redelivered = redeliver(&client, &args, &tally.placed).await;
    checks.push(check(
        "every event delivered again after the run (after every fault) answers as before",
        redelivered.differed == 0,
        format!(
            "{} of {} answered differently",
            redelivered.differed, redelivered.sent
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
                match &p.payment {
                    Some(payment) => payment.result().is_some_and(|r| status != Some(r)),
                    None => !matches!(status, Some("expired")),
                }
            })
            .count();
        checks.push(check(
            "no order both paid and expired: every unit paid for is held, never resold",
            both == 0 && disagree == 0,
            format!(
                "{both} rows paid with an expiry or refunded without one; {disagree} orders whose database status differs from what their payment answered (or, never paid, are not expired)"
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
        delayed_past_deadline: timing.delayed_past_deadline,
        retries: tally.retries,
        redelivered: redelivered.sent,
        answers: tally.codes.clone(),
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
    Ok(summary.passed())
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
            targets: vec!["http://127.0.0.1:1".into()],
            rate: 1,
            duration: 1.0,
            buyers: 1,
            stock: 1,
            pay_fraction: pay,
            late_fraction: late,
            replay_fraction: 0.0,
            late_by_ms: 0,
            retries: 0,
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
    fn payment_answers_are_judged_against_their_deadline() {
        let placed = |fate: Fate, result: &str, attempts: u32, sent: i64, answered: i64| Placed {
            order_id: "o".into(),
            fate,
            amount_cents: 1,
            pay_by_ms: 1_000,
            event_id: "e".into(),
            payment: Some(Payment {
                answer: (!result.is_empty()).then(|| serde_json::json!({ "result": result })),
                attempts,
                first_sent_ms: sent,
                answered_at_ms: answered,
            }),
            replay_matched: None,
        };
        let judged = |p: Placed| judge_timing(&[p]);
        assert_eq!(
            judged(placed(Fate::OnTime, "paid", 1, 400, 410)),
            Timing::default()
        );
        assert_eq!(
            judged(placed(Fate::Late, "refund_due", 1, 1_500, 1_510)),
            Timing::default()
        );
        assert_eq!(
            judged(placed(Fate::OnTime, "refund_due", 4, 400, 1_200)).delayed_past_deadline,
            1,
            "retried through a fault past the deadline: the expiry won"
        );
        assert_eq!(
            judged(placed(Fate::OnTime, "refund_due", 1, 400, 410)).impossible,
            1,
            "refunded although answered before the deadline"
        );
        assert_eq!(
            judged(placed(Fate::OnTime, "paid", 3, 1_100, 1_200)).impossible,
            1,
            "paid although first sent after the deadline"
        );
        assert_eq!(
            judged(placed(Fate::OnTime, "refund_due", 1, 900, 1_100)).delayed_past_deadline,
            1,
            "sent once in time, stalled past the deadline"
        );
        assert_eq!(
            judged(placed(Fate::OnTime, "duplicate", 1, 400, 410)).wrong,
            1
        );
        assert_eq!(
            judged(placed(Fate::Late, "", 21, 1_500, 9_000)).unanswered,
            1
        );
        let mut never = placed(Fate::Never, "", 0, 0, 0);
        never.payment = None;
        assert_eq!(judged(never), Timing::default());
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
