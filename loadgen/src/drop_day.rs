//! `loadgen drop`: a drop, end to end, as its buyers live it.
//!
//! Thousands of buyers join an item's waiting room before the sale starts,
//! poll their place as the item page does (less often the further back they
//! stand), order with their pass once admitted, and stop at `sold_out`.
//! Afterwards it reports what a drop's operator wants to know and checks
//! what a buyer could check:
//!
//! - joins: throughput and latency (HDR, µs);
//! - admission: when each pass opened (its expiry minus its lifetime, by
//!   the server's clock), admitted per second over the admission window and
//!   in the busiest second, against the setting;
//! - the draw: the published seed matches the commitment read before the
//!   start, every ticket is in the published order, that order is the
//!   SHA-256 one, and nobody was let in before a buyer ahead of them;
//! - sold out: from the last unit sold (the last order's `created_at_ms`)
//!   to each waiting buyer's first `sold_out` answer;
//! - orders: created, refusals by code, and the database's view (orders,
//!   units, duplicate keys) against the stock.

use crate::cli::DropArgs;
use anyhow::Context;
use hdrhistogram::Histogram;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How often a waiting buyer asks where they stand: every second near the
/// front, up to every 15 s far back, so a long line does not poll in a
/// storm.
pub fn poll_interval(position: Option<u64>, per_second: u32) -> Duration {
    let ahead_secs = position.unwrap_or(0) as f64 / f64::from(per_second.max(1));
    Duration::from_secs_f64((ahead_secs / 4.0).clamp(1.0, 15.0))
}

/// What the buyers saw, gathered while they wait and order.
#[derive(Debug, Default)]
struct Observed {
    /// Ticket and the server's admission time (ms) of every pass used.
    admitted: Vec<(String, i64)>,
    created: u64,
    refusals: BTreeMap<String, u64>,
    last_created_at_ms: i64,
    /// When each buyer who never got a pass first read `sold_out` (ms, the
    /// generator's wall clock).
    told_sold_out_at_ms: Vec<i64>,
    polls: u64,
    /// Buyers still waiting at the deadline.
    gave_up: u64,
}

/// The fair draw as a buyer can check it.
#[derive(Debug, Default, serde::Serialize)]
pub struct DrawCheck {
    /// SHA-256 of the published seed equals the commitment read before the start.
    pub seed_matches_commitment: bool,
    /// Tickets joined before the start that the published order lacks.
    pub tickets_missing: u64,
    /// The published order is ascending SHA-256 of `seed:ticket`.
    pub order_is_the_hash_order: bool,
    /// Admitted buyers let in at an earlier moment than someone ahead of
    /// them in the draw.
    pub admitted_out_of_turn: u64,
}

impl DrawCheck {
    pub fn holds(&self) -> bool {
        self.seed_matches_commitment
            && self.tickets_missing == 0
            && self.order_is_the_hash_order
            && self.admitted_out_of_turn == 0
    }
}

#[derive(Debug, serde::Serialize)]
pub struct DropSummary {
    pub label: String,
    pub buyers: u32,
    pub stock: i64,
    pub admission_per_second: u32,
    pub joins_per_second: f64,
    pub join_p50_ms: f64,
    pub join_p99_ms: f64,
    pub join_max_ms: f64,
    pub admitted: u64,
    pub admission_window_ms: i64,
    pub admitted_per_second_in_window: f64,
    pub busiest_second_admissions: u64,
    pub created: u64,
    pub refusals: BTreeMap<String, u64>,
    pub polls: u64,
    pub gave_up: u64,
    pub buyers_told_sold_out: u64,
    pub sold_out_seen_p50_ms: f64,
    pub sold_out_seen_p99_ms: f64,
    pub sold_out_seen_max_ms: f64,
    pub draw: DrawCheck,
    pub db_orders: Option<i64>,
    pub db_units: Option<i64>,
    pub db_duplicate_keys: Option<i64>,
    pub oversold: bool,
    pub passed: bool,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn histogram(max: u64) -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, max, 3).context("histogram bounds")
}

/// The most admissions within any one second of the server's clock.
fn busiest_second(sorted_ms: &[i64]) -> u64 {
    let mut start = 0;
    let mut busiest = 0;
    for (end, at) in sorted_ms.iter().enumerate() {
        while sorted_ms[start] <= at - 1_000 {
            start += 1;
        }
        busiest = busiest.max(end + 1 - start);
    }
    busiest as u64
}

/// Checks the published draw against what the buyers hold and saw.
fn check_draw(
    commitment: &str,
    fairness: &serde_json::Value,
    our_tickets: &[String],
    admitted: &[(String, i64)],
) -> DrawCheck {
    let seed = fairness["seed"].as_str().unwrap_or_default();
    let published: Vec<&str> = fairness["tickets"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t.as_str()).collect())
        .unwrap_or_default();
    let rank: HashMap<&str, usize> = published.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let keys: Vec<String> = published
        .iter()
        .map(|t| sha256_hex(&format!("{seed}:{t}")))
        .collect();
    let mut in_turn: Vec<(usize, i64)> = admitted
        .iter()
        .filter_map(|(ticket, at)| rank.get(ticket.as_str()).map(|r| (*r, *at)))
        .collect();
    in_turn.sort_unstable();
    let mut latest_ahead = i64::MIN;
    let mut out_of_turn = 0;
    for (_, at) in in_turn {
        if at < latest_ahead {
            out_of_turn += 1;
        }
        latest_ahead = latest_ahead.max(at);
    }
    DrawCheck {
        seed_matches_commitment: !seed.is_empty() && sha256_hex(seed) == commitment,
        tickets_missing: our_tickets
            .iter()
            .filter(|t| !rank.contains_key(t.as_str()))
            .count() as u64,
        order_is_the_hash_order: keys.windows(2).all(|w| w[0] < w[1]),
        admitted_out_of_turn: out_of_turn,
    }
}

async fn get_json(
    client: &reqwest::Client,
    url: String,
    cookie: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let mut request = client.get(&url);
    if let Some(cookie) = cookie {
        request = request.header(reqwest::header::COOKIE, cookie);
    }
    let response = request.send().await.with_context(|| format!("GET {url}"))?;
    anyhow::ensure!(
        response.status().is_success(),
        "GET {url} answered {}",
        response.status()
    );
    Ok(response.json().await?)
}

/// Polls in flight at once, across every buyer. A phone has its own
/// socket; this generator is one process with a limit on open files
/// (20,000 here), so 20,000 buyers polling at the same moment would run it
/// out of sockets and count its own failures as buyers left waiting. A
/// buyer waits for a slot instead, and the wait counts in the time until
/// they read `sold_out`.
const POLLS_IN_FLIGHT: usize = 1_000;

/// What every waiting buyer shares from the start on.
struct Line {
    client: reqwest::Client,
    base: String,
    args: Arc<DropArgs>,
    item_id: i64,
    deadline: Instant,
    observed: Mutex<Observed>,
    poll_slots: tokio::sync::Semaphore,
}

/// A careful buyer's order: sent again with the same key and pass while
/// the answer says it may be (`retryable`), or no answer came, up to five
/// times. Returns the last status and body, or `None` when nothing answered.
async fn order_with_pass(
    client: &reqwest::Client,
    base: &str,
    item_id: i64,
    n: usize,
    cookie: &str,
    pass: &str,
) -> Option<(u16, serde_json::Value)> {
    let mut last: Option<(u16, serde_json::Value)> = None;
    for attempt in 1..=5u64 {
        let answer = client
            .post(format!("{base}/api/orders"))
            .header(reqwest::header::COOKIE, cookie)
            .header("Idempotency-Key", format!("drop-{n}"))
            .header("Queue-Pass", pass)
            .json(&serde_json::json!({ "item_id": item_id, "qty": 1 }))
            .send()
            .await;
        last = match answer {
            Ok(response) => {
                let status = response.status().as_u16();
                Some((status, response.json().await.unwrap_or_default()))
            }
            Err(_) => None,
        };
        let retryable = last
            .as_ref()
            .is_none_or(|(_, body)| body["retryable"].as_bool() == Some(true));
        if !retryable {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250 * attempt)).await;
    }
    last
}

/// One buyer from the start on: polls the line, orders once admitted.
async fn wait_and_order(line: Arc<Line>, n: usize, cookie: String) {
    let Line {
        client,
        base,
        args,
        item_id,
        deadline,
        observed,
        poll_slots,
    } = &*line;
    let (item_id, deadline) = (*item_id, *deadline);
    // Spread the first polls over a second, as pages opened at once do.
    tokio::time::sleep(Duration::from_millis((n % 1_000) as u64)).await;
    let pass_ttl_ms = i64::from(args.pass_ttl) * 1_000;
    while Instant::now() < deadline {
        let status = {
            let _slot = poll_slots.acquire().await.ok();
            get_json(
                client,
                format!("{base}/api/items/{item_id}/queue"),
                Some(&cookie),
            )
            .await
            .unwrap_or_default()
        };
        observed.lock().await.polls += 1;
        match status["state"].as_str() {
            Some("admitted") => {
                let (Some(pass), Some(expires), Some(ticket)) = (
                    status["pass"].as_str(),
                    status["pass_expires_at_ms"].as_i64(),
                    status["ticket"].as_str(),
                ) else {
                    return;
                };
                let body = order_with_pass(client, base, item_id, n, &cookie, pass).await;
                let mut seen = observed.lock().await;
                seen.admitted
                    .push((ticket.to_owned(), expires - pass_ttl_ms));
                match body {
                    Some((201, body)) => {
                        seen.created += 1;
                        let at = body["created_at_ms"].as_i64().unwrap_or_default();
                        seen.last_created_at_ms = seen.last_created_at_ms.max(at);
                    }
                    Some((_, body)) => {
                        let code = body["code"].as_str().unwrap_or("unreadable").to_owned();
                        *seen.refusals.entry(code).or_default() += 1;
                    }
                    None => *seen.refusals.entry("no_answer".into()).or_default() += 1,
                }
                return;
            }
            Some("sold_out" | "closed") => {
                observed.lock().await.told_sold_out_at_ms.push(now_ms());
                return;
            }
            _ => {
                let position = status["position"].as_u64();
                tokio::time::sleep(poll_interval(position, args.admission)).await;
            }
        }
    }
    observed.lock().await.gave_up += 1;
}

/// Runs the drop and returns its summary.
///
/// # Errors
/// The server refused to set the drop up, or did not answer.
pub async fn run(args: DropArgs) -> anyhow::Result<DropSummary> {
    let args = Arc::new(args);
    let base = args.target.clone();
    // Idle connections count against the server's MAX_CONNECTIONS: a pool
    // that kept every connection of the join phase held the server's slots
    // while polls waited for one (and timed out as buyers "left waiting").
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(POLLS_IN_FLIGHT)
        .timeout(Duration::from_secs(60))
        .build()?;

    println!("drop: opening {} sessions", args.buyers);
    let cookies: Vec<String> = crate::setup::buyers(&client, &base, args.buyers)
        .await?
        .into_iter()
        .map(|b| b.cookie)
        .collect();

    let starts_at_ms = now_ms() + (args.start_in * 1_000.0) as i64;
    let item_id = crate::setup::create_item(
        &client,
        &base,
        args.admin_token.as_deref().unwrap_or_default(),
        &serde_json::json!({
            "title": format!("Drop ({})", args.label),
            "price_cents": 100,
            "stock": args.stock,
            "admission_per_second": args.admission,
            "pass_ttl_seconds": args.pass_ttl,
            "sale_starts_at_ms": starts_at_ms,
        }),
    )
    .await?;
    let commitment = get_json(
        &client,
        format!("{base}/api/items/{item_id}/fairness"),
        None,
    )
    .await?["commitment"]
        .as_str()
        .context("a commitment before the start")?
        .to_owned();

    println!("drop: {} buyers join item {item_id}", cookies.len());
    let joins = Arc::new(Mutex::new(histogram(600_000_000)?));
    let join_started = Instant::now();
    let mut tickets = Vec::with_capacity(cookies.len());
    let mut pending = tokio::task::JoinSet::new();
    for cookie in &cookies {
        if pending.len() >= 256
            && let Some(done) = pending.join_next().await
        {
            tickets.push(done??);
        }
        let (client, base, cookie, joins) =
            (client.clone(), base.clone(), cookie.clone(), joins.clone());
        pending.spawn(async move {
            let sent = Instant::now();
            let joined: serde_json::Value = client
                .post(format!("{base}/api/items/{item_id}/queue"))
                .header(reqwest::header::COOKIE, cookie)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let _ = joins.lock().await.record(sent.elapsed().as_micros() as u64);
            joined["ticket"]
                .as_str()
                .map(str::to_owned)
                .context("a join answered no ticket")
        });
    }
    while let Some(done) = pending.join_next().await {
        tickets.push(done??);
    }
    let join_secs = join_started.elapsed().as_secs_f64();
    let joins = joins.lock().await.clone();
    let wait_ms = starts_at_ms - now_ms();
    anyhow::ensure!(
        wait_ms > 0,
        "joining took {join_secs:.1} s, past the start: give a larger --start-in"
    );
    println!(
        "drop: {} joins in {join_secs:.1} s; the sale starts in {wait_ms} ms",
        joins.len()
    );
    tokio::time::sleep(Duration::from_millis(wait_ms as u64)).await;

    let line = Arc::new(Line {
        client: client.clone(),
        base: base.clone(),
        args: args.clone(),
        item_id,
        deadline: Instant::now() + Duration::from_secs_f64(args.max_seconds),
        observed: Mutex::new(Observed::default()),
        poll_slots: tokio::sync::Semaphore::new(POLLS_IN_FLIGHT),
    });
    let mut buyers = tokio::task::JoinSet::new();
    for (n, cookie) in cookies.into_iter().enumerate() {
        buyers.spawn(wait_and_order(line.clone(), n, cookie));
    }
    while buyers.join_next().await.is_some() {}

    let fairness = get_json(
        &client,
        format!("{base}/api/items/{item_id}/fairness"),
        None,
    )
    .await?;
    let seen = line.observed.lock().await;
    let draw = check_draw(&commitment, &fairness, &tickets, &seen.admitted);
    let mut admitted_at: Vec<i64> = seen.admitted.iter().map(|(_, at)| *at).collect();
    admitted_at.sort_unstable();
    let window_ms = match (admitted_at.first(), admitted_at.last()) {
        (Some(first), Some(last)) => last - first,
        _ => 0,
    };
    let mut sold_out = histogram(3_600_000)?;
    for at in &seen.told_sold_out_at_ms {
        let _ = sold_out.record((at - seen.last_created_at_ms).max(1) as u64);
    }
    let (db_orders, db_units, db_duplicate_keys) = match &args.database_url {
        Some(url) => {
            let (orders, units, duplicates) = crate::check::drop_view(url, item_id).await?;
            (Some(orders), Some(units), Some(duplicates))
        }
        None => (None, None, None),
    };
    let oversold = db_units.is_some_and(|u| u > args.stock)
        || seen.created as i64 > args.stock
        || db_duplicate_keys.is_some_and(|d| d > 0);
    let sold_everything = db_units.is_none_or(|u| u == args.stock);
    let passed = !oversold && sold_everything && draw.holds() && seen.gave_up == 0;
    Ok(DropSummary {
        label: args.label.clone(),
        buyers: args.buyers,
        stock: args.stock,
        admission_per_second: args.admission,
        joins_per_second: joins.len() as f64 / join_secs.max(1e-9),
        join_p50_ms: joins.value_at_quantile(0.5) as f64 / 1_000.0,
        join_p99_ms: joins.value_at_quantile(0.99) as f64 / 1_000.0,
        join_max_ms: joins.max() as f64 / 1_000.0,
        admitted: admitted_at.len() as u64,
        admission_window_ms: window_ms,
        admitted_per_second_in_window: if window_ms > 0 {
            (admitted_at.len() as f64 - 1.0) * 1_000.0 / window_ms as f64
        } else {
            admitted_at.len() as f64
        },
        busiest_second_admissions: busiest_second(&admitted_at),
        created: seen.created,
        refusals: seen.refusals.clone(),
        polls: seen.polls,
        gave_up: seen.gave_up,
        buyers_told_sold_out: sold_out.len(),
        sold_out_seen_p50_ms: sold_out.value_at_quantile(0.5) as f64,
        sold_out_seen_p99_ms: sold_out.value_at_quantile(0.99) as f64,
        sold_out_seen_max_ms: sold_out.max() as f64,
        draw,
        db_orders,
        db_units,
        db_duplicate_keys,
        oversold,
        passed,
    })
}

impl DropSummary {
    pub fn print(&self) {
        println!(
            "drop {}: {} buyers, stock {}, {} admitted/s set",
            self.label, self.buyers, self.stock, self.admission_per_second
        );
        println!(
            "  joins: {:.0}/s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.joins_per_second, self.join_p50_ms, self.join_p99_ms, self.join_max_ms
        );
        println!(
            "  admitted {} over {} ms ({:.0}/s), busiest second {}",
            self.admitted,
            self.admission_window_ms,
            self.admitted_per_second_in_window,
            self.busiest_second_admissions
        );
        println!(
            "  orders {} created, refusals {:?}; {} buyers told sold out, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms after the last sale; {} gave up; {} polls",
            self.created,
            self.refusals,
            self.buyers_told_sold_out,
            self.sold_out_seen_p50_ms,
            self.sold_out_seen_p99_ms,
            self.sold_out_seen_max_ms,
            self.gave_up,
            self.polls
        );
        println!(
            "  draw: seed matches commitment {}, tickets missing {}, hash order {}, admitted out of turn {}",
            self.draw.seed_matches_commitment,
            self.draw.tickets_missing,
            self.draw.order_is_the_hash_order,
            self.draw.admitted_out_of_turn
        );
        println!(
            "  database: orders {:?}, units {:?}, duplicate keys {:?}; oversold {}; {}",
            self.db_orders,
            self.db_units,
            self.db_duplicate_keys,
            self.oversold,
            if self.passed { "PASS" } else { "FAIL" }
        );
    }

    /// Writes `<dir>/<label>.json`.
    ///
    /// # Errors
    /// The directory cannot be written.
    pub fn write(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}.json", self.label));
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_front_polls_every_second_and_the_back_every_fifteen() {
        assert_eq!(poll_interval(Some(1), 100), Duration::from_secs(1));
        assert_eq!(poll_interval(None, 100), Duration::from_secs(1));
        assert_eq!(poll_interval(Some(100_000), 100), Duration::from_secs(15));
        assert_eq!(poll_interval(Some(2_000), 100), Duration::from_secs(5));
    }

    #[test]
    fn the_busiest_second_is_a_sliding_window() {
        assert_eq!(busiest_second(&[]), 0);
        assert_eq!(busiest_second(&[0, 500, 999, 1_000, 1_999]), 3);
        assert_eq!(busiest_second(&[0, 2_000, 4_000]), 1);
    }

    fn published(seed: &str, tickets: &[&str]) -> serde_json::Value {
        let mut drawn: Vec<(String, &str)> = tickets
            .iter()
            .map(|t| (sha256_hex(&format!("{seed}:{t}")), *t))
            .collect();
        drawn.sort();
        let order: Vec<&str> = drawn.into_iter().map(|(_, t)| t).collect();
        serde_json::json!({ "seed": seed, "tickets": order })
    }

    #[test]
    fn a_draw_kept_in_turn_holds() {
        let fairness = published("s", &["a", "b", "c"]);
        let order: Vec<String> = fairness["tickets"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let admitted: Vec<(String, i64)> = order
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), 1_000 + i as i64 / 2 * 100))
            .collect();
        let check = check_draw(&sha256_hex("s"), &fairness, &order, &admitted);
        assert!(check.holds(), "{check:?}");

        let mut swapped = admitted.clone();
        swapped[0].1 = 5_000;
        let check = check_draw(&sha256_hex("s"), &fairness, &order, &swapped);
        assert_eq!(check.admitted_out_of_turn, 2, "both behind it came earlier");
    }

    #[test]
    fn a_seed_or_order_changed_after_the_commitment_fails() {
        let fairness = published("s", &["a", "b", "c"]);
        let ours = vec![
            "a".to_owned(),
            "b".to_owned(),
            "c".to_owned(),
            "d".to_owned(),
        ];
        let check = check_draw(&sha256_hex("other"), &fairness, &ours, &[]);
        assert!(!check.seed_matches_commitment);
        assert_eq!(check.tickets_missing, 1);

        let mut reordered = fairness.clone();
        if let Some(t) = reordered["tickets"].as_array_mut() {
            t.reverse();
        }
        assert!(!check_draw(&sha256_hex("s"), &reordered, &ours[..3], &[]).order_is_the_hash_order);
    }
}
