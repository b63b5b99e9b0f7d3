//! The history checker's rules, as pure functions of a history and the
//! evidence gathered after the run (the module docs of [`super`] state
//! them). [`judge`] returns a [`Verdict`]: what the history holds, counted,
//! and every violation by kind, with a few examples each and the fault
//! each one followed.

use super::evidence::{DbOrder, Evidence, Lookup};
use super::{Event, History, Payload, Purpose};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Examples kept per kind of violation.
const EXAMPLES: usize = 5;
/// The time of a violation that belongs to no moment of the run (an
/// incomplete history, an order nobody asked for): counted, but in no
/// fault's window.
const UNTIMED: u64 = u64::MAX;

/// A promise of the contract, as broken by one key or one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Violation {
    /// The history hit its limit: it cannot be judged whole.
    HistoryIncomplete,
    /// An error body that is not `{"code", "message", "retryable"}`.
    AnswerOutOfShape,
    /// Rule 1: a 201 without an order id.
    CreatedWithoutOrderId,
    /// Rule 1: the 201s of one key name more than one order.
    TwoOrderIds,
    /// Rule 1: a 201 names an order the database does not have.
    CreatedOrderMissing,
    /// Rule 1: a 201 names an order the database holds more than once.
    CreatedOrderDuplicated,
    /// Rule 1: a 201 names an order of another buyer, key or payload.
    CreatedOrderMismatch,
    /// Rule 2: one key answered both 201 and a definite refusal.
    CreatedAndRefused,
    /// Rule 3: an order exists although the key's latest definite answer
    /// was a refusal.
    OrderAfterRefusal,
    /// Rule 3: `by-key` disagrees with the database at the end.
    ByKeyDisagrees,
    /// Rule 3: an order for a key nobody sent.
    OrderWithoutRequest,
    /// Rule 4: a replay answered definitely, but not as the first time:
    /// another status, another error code, or another 201 body.
    ReplayDiffers,
    /// Rule 4: a replay refused with the first status and code, but another
    /// body (the refusal was decided again, not replayed).
    ReplayReworded,
    /// Rule 4: a replayed 201 without `Idempotent-Replayed: true`.
    ReplayUnmarked,
    /// Rule 5: another payload under a settled key was answered 201.
    ChangedPayloadCreated,
    /// Rule 5: another payload under a settled key was refused, but not as
    /// a reused key.
    ChangedPayloadNot422,
}

impl Violation {
    pub fn label(self) -> &'static str {
        match self {
            Self::HistoryIncomplete => "history_incomplete",
            Self::AnswerOutOfShape => "answer_out_of_shape",
            Self::CreatedWithoutOrderId => "r1_created_without_order_id",
            Self::TwoOrderIds => "r1_two_order_ids",
            Self::CreatedOrderMissing => "r1_created_order_missing",
            Self::CreatedOrderDuplicated => "r1_created_order_duplicated",
            Self::CreatedOrderMismatch => "r1_created_order_mismatch",
            Self::CreatedAndRefused => "r2_created_and_refused",
            Self::OrderAfterRefusal => "r3_order_after_refusal",
            Self::ByKeyDisagrees => "r3_by_key_disagrees",
            Self::OrderWithoutRequest => "r3_order_without_request",
            Self::ReplayDiffers => "r4_replay_differs",
            Self::ReplayReworded => "r4_replay_reworded",
            Self::ReplayUnmarked => "r4_replay_unmarked",
            Self::ChangedPayloadCreated => "r5_changed_payload_created",
            Self::ChangedPayloadNot422 => "r5_changed_payload_not_422",
        }
    }
}

/// How often one kind of violation happened, with a few examples.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub count: u64,
    pub examples: Vec<String>,
}

/// What the history holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub requests: u64,
    pub first_attempts: u64,
    pub retries: u64,
    pub replays_same_payload: u64,
    pub replays_changed_payload: u64,
    /// Replays of a post-fault burst (included in the two above).
    pub replays_after_faults: u64,
    /// Replays of keys whose first definite answer was a 201 / a refusal.
    pub replays_of_created_keys: u64,
    pub replays_of_refused_keys: u64,
    /// Answers by status and code, e.g. `201`, `201 replayed`,
    /// `409 sold_out`, `no answer`.
    pub answers: BTreeMap<String, u64>,
    pub keys: u64,
    /// Keys by their first definite answer, or none.
    pub keys_created: u64,
    pub keys_refused: u64,
    pub keys_unsettled: u64,
    pub database_orders: u64,
    /// The final `by-key` states.
    pub by_key: BTreeMap<String, u64>,
    /// Times a key refused `sold_out` was decided anew after Redis lost
    /// its data (rules 4 and 5 judge each decision on its own).
    #[serde(default)]
    pub keys_decided_again: u64,
}

/// One announced fault, and what followed it until the next.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultWindow {
    pub name: String,
    /// µs from the start of the run.
    pub at_us: u64,
    /// Replays of its burst.
    pub burst_replays: u64,
    /// Violations whose offending answer came in this window.
    pub violations: BTreeMap<String, u64>,
}

/// The checker's verdict on one history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub counts: Counts,
    /// By [`Violation::label`].
    pub violations: BTreeMap<String, Tally>,
    /// Violations before the first fault.
    pub before_faults: BTreeMap<String, u64>,
    pub faults: Vec<FaultWindow>,
}

impl Verdict {
    pub fn violation_count(&self) -> u64 {
        self.violations.values().map(|t| t.count).sum()
    }

    fn add(&mut self, kind: Violation, at_us: u64, example: impl FnOnce() -> String) {
        let tally = self.violations.entry(kind.label().to_owned()).or_default();
        tally.count += 1;
        if tally.examples.len() < EXAMPLES {
            tally.examples.push(example());
        }
        if at_us == UNTIMED {
            return;
        }
        let window = self.faults.iter().rposition(|f| f.at_us <= at_us);
        let bucket = match window {
            Some(i) => &mut self.faults[i].violations,
            None => &mut self.before_faults,
        };
        *bucket.entry(kind.label().to_owned()).or_default() += 1;
    }
}

/// One key's events, in the order they were sent.
struct KeyHistory<'h> {
    buyer: u32,
    key: uuid::Uuid,
    original: Payload,
    events: Vec<&'h Event>,
}

impl<'h> KeyHistory<'h> {
    fn same_payload(&self) -> impl Iterator<Item = &&'h Event> {
        self.events.iter().filter(|e| e.payload == self.original)
    }

    /// The first definite answer to the original payload, by arrival.
    fn first_definite(&self) -> Option<&'h Event> {
        self.same_payload()
            .filter(|e| is_definite(e))
            .min_by_key(|e| e.received_us)
            .copied()
    }

    /// The latest definite answer to the original payload, by arrival.
    fn latest_definite(&self) -> Option<&'h Event> {
        self.same_payload()
            .filter(|e| is_definite(e))
            .max_by_key(|e| e.received_us)
            .copied()
    }
}

fn is_definite(e: &Event) -> bool {
    e.answer.status.is_some() && !e.answer.retryable
}

fn is_created(e: &Event) -> bool {
    e.answer.status == Some(201)
}

/// `409 sold_out`, `201 replayed`, `no answer`.
fn describe(e: &Event) -> String {
    match (e.answer.status, &e.answer.code) {
        (None, _) => "no answer".to_owned(),
        (Some(201), _) if e.answer.replayed => "201 replayed".to_owned(),
        (Some(status), None) => status.to_string(),
        (Some(status), Some(code)) => format!("{status} {code}"),
    }
}

/// One line about a request for an example: what was sent, why, when, and
/// what came back.
fn line(e: &Event) -> String {
    let why = match e.purpose {
        Purpose::First => "first".to_owned(),
        Purpose::Retry => "retry".to_owned(),
        Purpose::Replay { after_fault: None } => "replay".to_owned(),
        Purpose::Replay {
            after_fault: Some(f),
        } => format!("replay after fault #{}", f + 1),
    };
    let order = e
        .answer
        .order_id
        .as_deref()
        .map(|id| format!(" order {id}"))
        .unwrap_or_default();
    format!(
        "[{why} qty {} sent {:.3}s → {}{order} at {:.3}s]",
        e.payload.qty,
        e.sent_us as f64 / 1e6,
        describe(e),
        e.received_us as f64 / 1e6
    )
}

/// Every request of a key's history, in the order they were sent: what
/// an example needs to be read without the run's logs.
fn every_line(k: &KeyHistory<'_>) -> String {
    let lines: Vec<String> = k.events.iter().map(|e| line(e)).collect();
    lines.join(" ")
}

/// Two bodies say the same thing: equal as JSON, or equal as text when
/// either is not JSON.
fn same_body(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) if a == b => true,
        (Some(a), Some(b)) => {
            match (
                serde_json::from_str::<serde_json::Value>(a),
                serde_json::from_str::<serde_json::Value>(b),
            ) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            }
        }
        (a, b) => a == b,
    }
}

/// Judges a history against the evidence. `buyer_ids` are the buyers'
/// ids as the database stores them (index = the events' `buyer`).
pub fn judge(history: &History, evidence: &Evidence, buyer_ids: &[String]) -> Verdict {
    let mut verdict = Verdict {
        faults: history
            .faults
            .iter()
            .map(|f| FaultWindow {
                name: f.name.clone(),
                at_us: f.at_us,
                ..FaultWindow::default()
            })
            .collect(),
        ..Verdict::default()
    };
    if history.overflow > 0 {
        verdict.add(Violation::HistoryIncomplete, UNTIMED, || {
            format!(
                "{} requests beyond --history-limit were not kept",
                history.overflow
            )
        });
    }
    let who = |buyer: u32, key: &uuid::Uuid| {
        let id = buyer_ids.get(buyer as usize).map_or("?", String::as_str);
        format!("buyer #{buyer} ({id}) key {key}")
    };

    count_requests(history, &mut verdict);
    let redis_losses = redis_losses(history);
    let keys = group_by_key(history);
    verdict.counts.keys = keys.len() as u64;

    let mut orders_by_id: HashMap<&str, Vec<&DbOrder>> = HashMap::new();
    let mut orders_by_key: HashMap<(u32, uuid::Uuid), &DbOrder> = HashMap::new();
    for order in &evidence.orders {
        orders_by_id
            .entry(order.id.as_str())
            .or_default()
            .push(order);
        match order.owner {
            Some(owner) if keys.contains_key(&owner) => {
                orders_by_key.insert(owner, order);
            }
            _ => verdict.add(Violation::OrderWithoutRequest, UNTIMED, || {
                format!(
                    "order {} of buyer {} key {}: no request of this run",
                    order.id, order.buyer, order.key
                )
            }),
        }
    }
    verdict.counts.database_orders = evidence.orders.len() as u64;

    let mut sorted: Vec<_> = keys.into_values().collect();
    sorted.sort_by_key(|k| k.events.first().map(|e| e.sent_us));
    for k in &sorted {
        let first = k.first_definite();
        match first {
            Some(e) if is_created(e) => verdict.counts.keys_created += 1,
            Some(_) => verdict.counts.keys_refused += 1,
            None => verdict.counts.keys_unsettled += 1,
        }
        if let Some(first) = first {
            for e in &k.events {
                if matches!(e.purpose, Purpose::Replay { .. }) {
                    if is_created(first) {
                        verdict.counts.replays_of_created_keys += 1;
                    } else {
                        verdict.counts.replays_of_refused_keys += 1;
                    }
                }
            }
        }
        let who = who(k.buyer, &k.key);
        shape(k, &who, &mut verdict);
        rule_1(k, &orders_by_id, &who, &mut verdict);
        rule_2(k, &who, &mut verdict);
        rule_3(
            k,
            orders_by_key.get(&(k.buyer, k.key)).copied(),
            evidence.by_key.get(&(k.buyer, k.key)),
            &who,
            &mut verdict,
        );
        let parts = decided_parts(k, &redis_losses);
        verdict.counts.keys_decided_again += parts.len() as u64 - 1;
        for part in &parts {
            rule_4(part, k, &who, &mut verdict);
            rule_5(part, k, &who, &mut verdict);
        }
    }
    for lookup in evidence.by_key.values() {
        *verdict
            .counts
            .by_key
            .entry(lookup.label().to_owned())
            .or_default() += 1;
    }
    verdict
}

fn count_requests(history: &History, verdict: &mut Verdict) {
    let mut originals: HashMap<(u32, uuid::Uuid), Payload> = HashMap::new();
    for e in &history.events {
        if e.purpose == Purpose::First {
            originals.insert((e.buyer, e.key), e.payload);
        }
    }
    let c = &mut verdict.counts;
    for e in &history.events {
        c.requests += 1;
        *c.answers.entry(describe(e)).or_default() += 1;
        match e.purpose {
            Purpose::First => c.first_attempts += 1,
            Purpose::Retry => c.retries += 1,
            Purpose::Replay { after_fault } => {
                if originals.get(&(e.buyer, e.key)) == Some(&e.payload) {
                    c.replays_same_payload += 1;
                } else {
                    c.replays_changed_payload += 1;
                }
                if let Some(f) = after_fault {
                    c.replays_after_faults += 1;
                    if let Some(window) = verdict.faults.get_mut(f) {
                        window.burst_replays += 1;
                    }
                }
            }
        }
    }
}

fn group_by_key(history: &History) -> HashMap<(u32, uuid::Uuid), KeyHistory<'_>> {
    let mut keys: HashMap<(u32, uuid::Uuid), KeyHistory<'_>> = HashMap::new();
    for e in &history.events {
        keys.entry((e.buyer, e.key))
            .or_insert_with(|| KeyHistory {
                buyer: e.buyer,
                key: e.key,
                original: e.payload,
                events: Vec::new(),
            })
            .events
            .push(e);
    }
    for k in keys.values_mut() {
        k.events.sort_by_key(|e| e.sent_us);
        // The original payload is the first attempt's, whatever was sent
        // (or recorded) before it.
        if let Some(first) = k.events.iter().find(|e| e.purpose == Purpose::First) {
            k.original = first.payload;
        } else if let Some(first) = k.events.first() {
            k.original = first.payload;
        }
    }
    keys
}

/// Every error body is `{"code", "message", "retryable"}` (a 201 without an
/// order id is rule 1's).
fn shape(k: &KeyHistory<'_>, who: &str, verdict: &mut Verdict) {
    for e in &k.events {
        if e.answer.malformed && !is_created(e) {
            verdict.add(Violation::AnswerOutOfShape, e.received_us, || {
                format!(
                    "{who}: {} with body {:?}",
                    line(e),
                    e.body.as_deref().unwrap_or("")
                )
            });
        }
    }
}

fn rule_1(
    k: &KeyHistory<'_>,
    orders_by_id: &HashMap<&str, Vec<&DbOrder>>,
    who: &str,
    verdict: &mut Verdict,
) {
    let mut ids: Vec<(&str, &Event)> = Vec::new();
    for e in k.events.iter().filter(|e| is_created(e)) {
        match e.answer.order_id.as_deref() {
            None => verdict.add(Violation::CreatedWithoutOrderId, e.received_us, || {
                format!("{who}: {}", line(e))
            }),
            Some(id) if !ids.iter().any(|(seen, _)| *seen == id) => ids.push((id, e)),
            Some(_) => {}
        }
    }
    if ids.len() > 1 {
        let at = ids.iter().map(|(_, e)| e.received_us).max().unwrap_or(0);
        verdict.add(Violation::TwoOrderIds, at, || {
            let lines: Vec<String> = ids.iter().map(|(_, e)| line(e)).collect();
            format!("{who}: {}", lines.join(" then "))
        });
    }
    for (id, e) in &ids {
        match orders_by_id.get(id).map(Vec::as_slice) {
            None | Some([]) => verdict.add(Violation::CreatedOrderMissing, e.received_us, || {
                format!("{who}: {} but no such order in the database", line(e))
            }),
            Some([order]) => {
                if order.owner != Some((k.buyer, k.key)) || order.payload != k.original {
                    verdict.add(Violation::CreatedOrderMismatch, e.received_us, || {
                        format!(
                            "{who}: {} but the database has it for buyer {} key {} qty {}",
                            line(e),
                            order.buyer,
                            order.key,
                            order.payload.qty
                        )
                    });
                }
            }
            Some(rows) => verdict.add(Violation::CreatedOrderDuplicated, e.received_us, || {
                format!("{who}: {} is {} rows in the database", line(e), rows.len())
            }),
        }
    }
}

fn rule_2(k: &KeyHistory<'_>, who: &str, verdict: &mut Verdict) {
    let created = k.same_payload().find(|e| is_created(e));
    let refused = k.same_payload().find(|e| is_definite(e) && !is_created(e));
    if let (Some(created), Some(refused)) = (created, refused) {
        let (earlier, later) = if created.received_us <= refused.received_us {
            (created, refused)
        } else {
            (refused, created)
        };
        verdict.add(Violation::CreatedAndRefused, later.received_us, || {
            format!(
                "{who}: {} then {}; the key's requests: {}",
                line(earlier),
                line(later),
                every_line(k)
            )
        });
    }
}

fn rule_3(
    k: &KeyHistory<'_>,
    order: Option<&DbOrder>,
    lookup: Option<&Lookup>,
    who: &str,
    verdict: &mut Verdict,
) {
    if let (Some(order), Some(latest)) = (order, k.latest_definite())
        && !is_created(latest)
    {
        verdict.add(Violation::OrderAfterRefusal, latest.received_us, || {
            format!(
                "{who}: order {} in the database, latest answer {}",
                order.id,
                line(latest)
            )
        });
    }
    let at = k.events.iter().map(|e| e.received_us).max().unwrap_or(0);
    let disagrees = match (order, lookup) {
        (Some(order), Some(Lookup::Order { order_id })) => *order_id != order.id,
        (Some(_), _) => true,
        (None, Some(Lookup::Order { .. })) => true,
        (None, _) => false,
    };
    if disagrees {
        verdict.add(Violation::ByKeyDisagrees, at, || {
            let lookup = lookup.map_or_else(|| "no lookup".to_owned(), Lookup::describe);
            match order {
                Some(order) => format!(
                    "{who}: order {} in the database, by-key says {lookup}",
                    order.id
                ),
                None => format!("{who}: no order in the database, by-key says {lookup}"),
            }
        });
    }
}

/// `whole`: the key's every request, for the example (`k` may be one part).
fn rule_4(k: &KeyHistory<'_>, whole: &KeyHistory<'_>, who: &str, verdict: &mut Verdict) {
    let Some(first) = k.first_definite() else {
        return;
    };
    for e in k.same_payload() {
        if std::ptr::eq(*e, first) || e.sent_us < first.received_us || !is_definite(e) {
            continue;
        }
        if e.answer.status != first.answer.status
            || !same_body(e.body.as_deref(), first.body.as_deref())
        {
            let reworded = e.answer.status == first.answer.status
                && !is_created(e)
                && e.answer.code == first.answer.code;
            let kind = if reworded {
                Violation::ReplayReworded
            } else {
                Violation::ReplayDiffers
            };
            verdict.add(kind, e.received_us, || {
                format!(
                    "{who}: first {} with {}, then {} with {}; the key's requests: {}",
                    line(first),
                    first.body.as_deref().unwrap_or(""),
                    line(e),
                    e.body.as_deref().unwrap_or(""),
                    every_line(whole)
                )
            });
        } else if is_created(e) && !e.answer.replayed {
            verdict.add(Violation::ReplayUnmarked, e.received_us, || {
                format!("{who}: first {}, then {}", line(first), line(e))
            });
        }
    }
}

/// When Redis lost its data (µs from the start): every FLUSHALL, every
/// kill, and every restart of an empty Redis among the announced faults.
fn redis_losses(history: &History) -> Vec<u64> {
    history
        .faults
        .iter()
        .filter(|f| {
            f.name.contains("flushall")
                || f.name.contains("redis-restart")
                || f.name.contains("redis-kill")
        })
        .map(|f| f.at_us)
        .collect()
}

/// The key's history as rules 4 and 5 judge it: one part, or, when the
/// key's first definite answer was `sold_out` (a refusal the README keeps
/// in Redis only) and Redis then lost its data, a new part from the loss
/// on (by the time the answers came back: a request sent while Redis was
/// down is decided after), whose first definite answer (for whatever
/// payload it was) is the key's answer from then on: the server decided
/// the key anew.
///
/// A loss counts from the moment the first answer was *sent*: the server
/// may have stored it just before the loss and answered after it (a slow
/// reply), or decided it after the loss (a claim made once Redis was back).
/// The new part's decision is then taken from requests sent after the
/// loss, which are surely decided after it, unless the first of those to
/// be answered heard 422 while the first answer came back after the loss:
/// the first answer then decided after the loss, and belongs to both parts
/// (its refusal is the key's record until the next loss erases it too).
/// The answer in flight across the loss decides only when no request sent
/// after it did.
fn decided_parts<'h>(k: &KeyHistory<'h>, redis_losses: &[u64]) -> Vec<KeyHistory<'h>> {
    let mut parts = Vec::new();
    let mut rest: Vec<&'h Event> = k.events.clone();
    let mut original = k.original;
    // Each loss splits a key once at most.
    let mut split_at: Option<u64> = None;
    loop {
        let part = KeyHistory {
            buyer: k.buyer,
            key: k.key,
            original,
            events: rest.clone(),
        };
        let first = part
            .first_definite()
            .filter(|first| first.answer.code.as_deref() == Some("sold_out"));
        let loss = first.and_then(|first| {
            redis_losses
                .iter()
                .copied()
                .filter(|&at| at >= first.sent_us && split_at.is_none_or(|s| at > s))
                .find(|&at| rest.iter().any(|e| e.received_us >= at))
        });
        let (Some(first), Some(at)) = (first, loss) else {
            parts.push(part);
            return parts;
        };
        split_at = Some(at);
        // The erased refusal belongs to the part it decided, even when its
        // answer came back after the loss.
        let (before, mut after): (Vec<&'h Event>, Vec<&'h Event>) = rest
            .into_iter()
            .partition(|e| e.received_us < at || std::ptr::eq(*e, first));
        parts.push(KeyHistory {
            events: before,
            ..part
        });
        // The decision is the first definite answer that is not a reuse
        // refusal (a 422 only says some other payload decided first),
        // preferably to a request sent after the loss.
        let decides = |e: &&&Event| {
            is_definite(e) && e.answer.code.as_deref() != Some("idempotency_key_reused")
        };
        // A 422 answered before any such decision says another payload's
        // record stood after the loss: the first answer's, when it came
        // back after the loss (decided once Redis was back).
        let earliest_sent_after = after
            .iter()
            .filter(|e| e.sent_us >= at && is_definite(e))
            .min_by_key(|e| e.received_us)
            .copied();
        let decided_by_first = earliest_sent_after.is_some_and(|e| {
            e.answer.code.as_deref() == Some("idempotency_key_reused")
                && e.payload != first.payload
                && first.received_us >= at
        });
        original = if decided_by_first {
            after.insert(0, first);
            first.payload
        } else {
            after
                .iter()
                .filter(|e| e.sent_us >= at)
                .filter(decides)
                .min_by_key(|e| e.received_us)
                .or_else(|| after.iter().filter(decides).min_by_key(|e| e.received_us))
                .or(after.first())
                .map_or(original, |e| e.payload)
        };
        rest = after;
    }
}

/// `whole`: the key's every request, for the example (`k` may be one part).
fn rule_5(k: &KeyHistory<'_>, whole: &KeyHistory<'_>, who: &str, verdict: &mut Verdict) {
    let Some(first) = k.first_definite() else {
        return;
    };
    let changed = k
        .events
        .iter()
        .filter(|e| e.payload != k.original && e.sent_us >= first.received_us);
    for e in changed {
        if is_created(e) {
            verdict.add(Violation::ChangedPayloadCreated, e.received_us, || {
                format!(
                    "{who}: first {}, then {}; the key's requests: {}",
                    line(first),
                    line(e),
                    every_line(whole)
                )
            });
        } else if is_definite(e) && e.answer.code.as_deref() != Some("idempotency_key_reused") {
            verdict.add(Violation::ChangedPayloadNot422, e.received_us, || {
                format!(
                    "{who}: first {}, then {}; the key's requests: {}",
                    line(first),
                    line(e),
                    every_line(whole)
                )
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::Answer;
    use crate::history::FaultMark;

    const ITEM: i64 = 7;
    const KEY: u128 = 0xA;
    const ORDER: &str = "order-1";

    fn receipt(order: &str, qty: i64) -> String {
        format!(
            r#"{{"order_id":"{order}","item_id":{ITEM},"qty":{qty},"unit_price_cents":100,"total_cents":{},"idempotency_key":"k","status":"confirmed","created_at_ms":5}}"#,
            100 * qty
        )
    }

    fn error(code: &str, retryable: bool) -> String {
        format!(r#"{{"code":"{code}","message":"m","retryable":{retryable}}}"#)
    }

    /// A request of buyer 0 under `KEY`, sent at `t` ms and answered 1 ms
    /// later with `status` and `body` (no answer without a status).
    fn event(
        purpose: Purpose,
        qty: i64,
        t: u64,
        status: Option<u16>,
        replayed: bool,
        body: &str,
    ) -> Event {
        let answer = match status {
            None => Answer::none(),
            Some(s) => Answer::read(s, replayed.then_some(b"true"), body.as_bytes()),
        };
        Event {
            buyer: 0,
            key: uuid::Uuid::from_u128(KEY),
            payload: Payload { item: ITEM, qty },
            purpose,
            sent_us: t * 1000,
            received_us: t * 1000 + 1000,
            body: status.map(|_| body.into()),
            answer,
        }
    }

    fn created(purpose: Purpose, t: u64, replayed: bool) -> Event {
        event(purpose, 1, t, Some(201), replayed, &receipt(ORDER, 1))
    }

    fn sold_out(purpose: Purpose, t: u64) -> Event {
        event(purpose, 1, t, Some(409), false, &error("sold_out", false))
    }

    const REPLAY: Purpose = Purpose::Replay { after_fault: None };

    fn db_order(id: &str, qty: i64) -> DbOrder {
        DbOrder {
            id: id.to_owned(),
            buyer: "b0".to_owned(),
            key: uuid::Uuid::from_u128(KEY).to_string(),
            owner: Some((0, uuid::Uuid::from_u128(KEY))),
            payload: Payload { item: ITEM, qty },
        }
    }

    /// The evidence of a database holding `orders`, with `by-key` agreeing.
    fn evidence(orders: Vec<DbOrder>) -> Evidence {
        let mut by_key = HashMap::new();
        let lookup = match orders.first() {
            Some(o) => Lookup::Order {
                order_id: o.id.clone(),
            },
            None => Lookup::Failed {
                code: "sold_out".into(),
            },
        };
        by_key.insert((0, uuid::Uuid::from_u128(KEY)), lookup);
        Evidence { orders, by_key }
    }

    fn judged(events: Vec<Event>, evidence: &Evidence) -> Verdict {
        let history = History {
            events,
            ..History::with_limit(100)
        };
        judge(&history, evidence, &["b0".to_owned()])
    }

    /// A history of `events` with one announced fault.
    fn with_fault(events: Vec<Event>, name: &str, at_us: u64) -> History {
        History {
            events,
            faults: vec![FaultMark {
                name: name.into(),
                at_us,
            }],
            ..History::with_limit(100)
        }
    }

    fn count(v: &Verdict, kind: Violation) -> u64 {
        v.violations.get(kind.label()).map_or(0, |t| t.count)
    }

    #[test]
    fn a_clean_history_has_no_violation_and_is_counted() {
        let events = vec![
            event(Purpose::First, 1, 0, None, false, ""),
            event(
                Purpose::Retry,
                1,
                5,
                Some(503),
                false,
                &error("unavailable", true),
            ),
            created(Purpose::Retry, 10, false),
            created(REPLAY, 20, true),
            event(
                REPLAY,
                2,
                30,
                Some(422),
                true,
                &error("idempotency_key_reused", false),
            ),
        ];
        let v = judged(events, &evidence(vec![db_order(ORDER, 1)]));
        assert_eq!(v.violation_count(), 0, "{:?}", v.violations);
        assert_eq!(v.counts.requests, 5);
        assert_eq!(v.counts.retries, 2);
        assert_eq!(v.counts.replays_same_payload, 1);
        assert_eq!(v.counts.replays_changed_payload, 1);
        assert_eq!(v.counts.replays_of_created_keys, 2);
        assert_eq!(v.counts.keys_created, 1);
        assert_eq!(v.counts.answers.get("201 replayed"), Some(&1));
        assert_eq!(v.counts.answers.get("no answer"), Some(&1));
        assert_eq!(v.counts.by_key.get("order"), Some(&1));
    }

    #[test]
    fn rule_1_a_201_must_name_one_existing_order_of_its_key() {
        let without_id = vec![event(
            Purpose::First,
            1,
            0,
            Some(201),
            false,
            r#"{"qty":1}"#,
        )];
        let v = judged(without_id, &evidence(vec![]));
        assert_eq!(count(&v, Violation::CreatedWithoutOrderId), 1);

        let two_ids = vec![
            created(Purpose::First, 0, false),
            event(REPLAY, 1, 10, Some(201), true, &receipt("order-2", 1)),
        ];
        let v = judged(two_ids, &evidence(vec![db_order(ORDER, 1)]));
        assert_eq!(count(&v, Violation::TwoOrderIds), 1);
        assert_eq!(
            count(&v, Violation::CreatedOrderMissing),
            1,
            "order-2 is not in the database"
        );

        let missing = vec![created(Purpose::First, 0, false)];
        let v = judged(missing, &evidence(vec![]));
        assert_eq!(count(&v, Violation::CreatedOrderMissing), 1);

        let elsewhere = DbOrder {
            owner: Some((0, uuid::Uuid::from_u128(0xB))),
            ..db_order(ORDER, 1)
        };
        let v = judged(
            vec![created(Purpose::First, 0, false)],
            &evidence(vec![elsewhere]),
        );
        assert_eq!(count(&v, Violation::CreatedOrderMismatch), 1);

        let v = judged(
            vec![created(Purpose::First, 0, false)],
            &evidence(vec![db_order(ORDER, 1), db_order(ORDER, 1)]),
        );
        assert_eq!(count(&v, Violation::CreatedOrderDuplicated), 1);
    }

    #[test]
    fn rule_2_a_key_is_never_both_created_and_refused() {
        let both = vec![created(Purpose::First, 0, false), sold_out(REPLAY, 10)];
        let v = judged(both, &evidence(vec![db_order(ORDER, 1)]));
        assert_eq!(count(&v, Violation::CreatedAndRefused), 1);

        // A 422 to another payload is not a refusal of the original.
        let reused = vec![
            created(Purpose::First, 0, false),
            event(
                REPLAY,
                2,
                10,
                Some(422),
                true,
                &error("idempotency_key_reused", false),
            ),
        ];
        let v = judged(reused, &evidence(vec![db_order(ORDER, 1)]));
        assert_eq!(count(&v, Violation::CreatedAndRefused), 0);

        // Retryable refusals are not definite.
        let retryable = vec![
            event(
                Purpose::First,
                1,
                0,
                Some(409),
                false,
                &error("stock_conflict", true),
            ),
            created(Purpose::Retry, 10, false),
        ];
        let v = judged(retryable, &evidence(vec![db_order(ORDER, 1)]));
        assert_eq!(count(&v, Violation::CreatedAndRefused), 0);
    }

    #[test]
    fn rule_3_no_order_behind_a_final_refusal_and_by_key_tells_the_truth() {
        // The first attempt's answer was lost, its order committed, and a
        // replay was refused: the buyer was told no, but has an order.
        let refused_last = vec![
            event(Purpose::First, 1, 0, None, false, ""),
            sold_out(Purpose::Retry, 10),
        ];
        let v = judged(refused_last, &evidence(vec![db_order(ORDER, 1)]));
        assert_eq!(count(&v, Violation::OrderAfterRefusal), 1);
        assert_eq!(count(&v, Violation::CreatedAndRefused), 0);

        // An unsettled key may have an order, if by-key names it.
        let unsettled = vec![event(Purpose::First, 1, 0, None, false, "")];
        let v = judged(unsettled.clone(), &evidence(vec![db_order(ORDER, 1)]));
        assert_eq!(v.violation_count(), 0, "{:?}", v.violations);

        let mut wrong = evidence(vec![db_order(ORDER, 1)]);
        wrong
            .by_key
            .insert((0, uuid::Uuid::from_u128(KEY)), Lookup::Unknown);
        let v = judged(unsettled.clone(), &wrong);
        assert_eq!(count(&v, Violation::ByKeyDisagrees), 1);

        let mut ghost = evidence(vec![]);
        ghost.by_key.insert(
            (0, uuid::Uuid::from_u128(KEY)),
            Lookup::Order {
                order_id: ORDER.into(),
            },
        );
        let v = judged(unsettled.clone(), &ghost);
        assert_eq!(count(&v, Violation::ByKeyDisagrees), 1);

        let stranger = DbOrder {
            owner: None,
            ..db_order("order-9", 1)
        };
        let mut e = evidence(vec![]);
        e.orders.push(stranger);
        let v = judged(vec![sold_out(Purpose::First, 0)], &e);
        assert_eq!(count(&v, Violation::OrderWithoutRequest), 1);
    }

    #[test]
    fn rule_4_a_replay_repeats_the_first_definite_answer() {
        let same = vec![
            sold_out(Purpose::First, 0),
            sold_out(REPLAY, 10),
            event(REPLAY, 1, 20, Some(503), false, &error("unavailable", true)),
        ];
        let v = judged(same, &evidence(vec![]));
        assert_eq!(v.violation_count(), 0, "{:?}", v.violations);

        let other_body = vec![
            sold_out(Purpose::First, 0),
            event(
                REPLAY,
                1,
                10,
                Some(409),
                true,
                &error("limit_exceeded", false),
            ),
        ];
        let v = judged(other_body, &evidence(vec![]));
        assert_eq!(count(&v, Violation::ReplayDiffers), 1);

        let reworded = vec![
            sold_out(Purpose::First, 0),
            event(
                REPLAY,
                1,
                10,
                Some(409),
                true,
                r#"{"code":"sold_out","message":"only 0 left","retryable":false}"#,
            ),
        ];
        let v = judged(reworded, &evidence(vec![]));
        assert_eq!(count(&v, Violation::ReplayReworded), 1);
        assert_eq!(count(&v, Violation::ReplayDiffers), 0);

        // Bodies are compared as JSON, not as text.
        let reordered = r#"{"retryable":false,"message":"m","code":"sold_out"}"#;
        let same_json = vec![
            sold_out(Purpose::First, 0),
            event(REPLAY, 1, 10, Some(409), true, reordered),
        ];
        let v = judged(same_json, &evidence(vec![]));
        assert_eq!(count(&v, Violation::ReplayDiffers), 0);

        let unmarked = vec![
            created(Purpose::First, 0, false),
            created(REPLAY, 10, false),
        ];
        let v = judged(unmarked, &evidence(vec![db_order(ORDER, 1)]));
        assert_eq!(count(&v, Violation::ReplayUnmarked), 1);

        // A request sent before the first answer came back is not a replay
        // of it.
        let mut concurrent = created(Purpose::Retry, 0, false);
        concurrent.received_us = 5000;
        let early = vec![created(Purpose::First, 0, false), concurrent];
        let v = judged(early, &evidence(vec![db_order(ORDER, 1)]));
        assert_eq!(count(&v, Violation::ReplayUnmarked), 0);
    }

    #[test]
    fn rule_5_another_payload_under_a_settled_key_is_refused_as_reuse() {
        let created_again = vec![
            sold_out(Purpose::First, 0),
            event(REPLAY, 2, 10, Some(201), false, &receipt(ORDER, 2)),
        ];
        let mut e = evidence(vec![db_order(ORDER, 2)]);
        e.by_key.insert(
            (0, uuid::Uuid::from_u128(KEY)),
            Lookup::Order {
                order_id: ORDER.into(),
            },
        );
        let v = judged(created_again, &e);
        assert_eq!(count(&v, Violation::ChangedPayloadCreated), 1);

        let sold_out_instead = vec![
            created(Purpose::First, 0, false),
            event(REPLAY, 2, 10, Some(409), false, &error("sold_out", false)),
        ];
        let v = judged(sold_out_instead, &evidence(vec![db_order(ORDER, 1)]));
        assert_eq!(count(&v, Violation::ChangedPayloadNot422), 1);
        assert_eq!(
            count(&v, Violation::CreatedAndRefused),
            0,
            "a refusal of another payload is not a refusal of the original"
        );

        let busy = vec![
            created(Purpose::First, 0, false),
            event(
                REPLAY,
                2,
                10,
                Some(429),
                false,
                &error("rate_limited", true),
            ),
        ];
        let v = judged(busy, &evidence(vec![db_order(ORDER, 1)]));
        assert_eq!(v.violation_count(), 0, "{:?}", v.violations);
    }

    /// A sold-out refusal lives in Redis only: after Redis lost it, the
    /// key is decided anew, for whatever payload asks first; rules 4 and 5
    /// then hold that new answer. Without a loss in between, the same
    /// history breaks rule 5.
    #[test]
    fn rule_5_allows_a_sold_out_key_decided_again_after_redis_lost_it() {
        let events = || {
            vec![
                sold_out(Purpose::First, 0),
                event(REPLAY, 2, 10, Some(409), false, &error("sold_out", false)),
                event(
                    REPLAY,
                    1,
                    20,
                    Some(422),
                    false,
                    &error("idempotency_key_reused", false),
                ),
            ]
        };
        let lost = with_fault(events(), "redis-restart", 5_000);
        let v = judge(&lost, &evidence(vec![]), &["b0".to_owned()]);
        assert_eq!(v.violation_count(), 0, "{:?}", v.violations);
        assert_eq!(v.counts.keys_decided_again, 1);

        // After the loss the original payload decided first; a changed
        // request answered 422 just before that answer came back is no
        // decision of its own.
        let reuse_first = with_fault(
            vec![
                sold_out(Purpose::First, 0),
                event(REPLAY, 1, 10, Some(409), false, &error("sold_out", false)),
                event(
                    REPLAY,
                    2,
                    9,
                    Some(422),
                    false,
                    &error("idempotency_key_reused", false),
                ),
                event(REPLAY, 1, 30, Some(409), false, &error("sold_out", false)),
            ],
            "flushall",
            5_000,
        );
        let v = judge(&reuse_first, &evidence(vec![]), &["b0".to_owned()]);
        assert_eq!(v.violation_count(), 0, "{:?}", v.violations);

        let kept = with_fault(events(), "db-connections-cut", 5_000);
        let v = judge(&kept, &evidence(vec![]), &["b0".to_owned()]);
        assert_eq!(count(&v, Violation::ChangedPayloadNot422), 1);
        assert_eq!(count(&v, Violation::ReplayDiffers), 1);
        assert_eq!(v.counts.keys_decided_again, 0);
    }

    /// The first refusal was stored just before Redis lost its data and
    /// its answer came back just after (a slow reply): the loss erased it
    /// all the same, so another payload sent after the loss is decided
    /// anew. With no loss in between, the same history breaks rule 5. (The
    /// fault run's MariaDB history on 2d82955 flagged two such keys.)
    #[test]
    fn a_refusal_answered_across_a_loss_is_decided_again_after_it() {
        // Sent at 0, answered at 0.9 s; the fault comes at 0.5 s.
        let slow_sold_out = || {
            let mut slow = sold_out(Purpose::First, 0);
            slow.received_us = 900_000;
            slow
        };
        let changed = || {
            event(
                REPLAY,
                2,
                2_000,
                Some(409),
                false,
                &error("sold_out", false),
            )
        };
        let history = |fault: &str| with_fault(vec![slow_sold_out(), changed()], fault, 500_000);
        let v = judge(
            &history("redis-kill"),
            &evidence(vec![]),
            &["b0".to_owned()],
        );
        assert_eq!(v.violation_count(), 0, "{:?}", v.violations);
        assert_eq!(v.counts.keys_decided_again, 1);

        let v = judge(
            &history("db-connections-cut"),
            &evidence(vec![]),
            &["b0".to_owned()],
        );
        assert_eq!(count(&v, Violation::ChangedPayloadNot422), 1);

        // A 201 after such a loss is still an order behind a definite
        // refusal: rule 2 knows no loss.
        let created_later = with_fault(
            vec![slow_sold_out(), created(REPLAY, 2_000, false)],
            "redis-kill",
            500_000,
        );
        let v = judge(
            &created_later,
            &evidence(vec![db_order(ORDER, 1)]),
            &["b0".to_owned()],
        );
        assert_eq!(count(&v, Violation::CreatedAndRefused), 1);
    }

    /// The first refusal was sent before Redis lost its data and decided
    /// after it (its claim was made once Redis was back): another payload
    /// then hears 422, and after a second loss erases that refusal too, it
    /// is decided anew. (The fault run's MariaDB history on 5608d89 flagged
    /// such a key as r4: 422, then 409 after the second loss.)
    #[test]
    fn a_refusal_decided_after_a_loss_is_erased_by_the_next_one() {
        // Sent at 0, answered at 0.9 s; the losses come at 0.5 s and 5 s.
        let mut first = sold_out(Purpose::First, 0);
        first.received_us = 900_000;
        let other = |t: u64, status: u16, code: &str| {
            event(REPLAY, 2, t, Some(status), false, &error(code, false))
        };
        let history = |events: Vec<Event>, losses: &[u64]| History {
            events,
            faults: losses
                .iter()
                .map(|&at_us| FaultMark {
                    name: "redis-kill".into(),
                    at_us,
                })
                .collect(),
            ..History::with_limit(100)
        };
        let events = || {
            vec![
                first.clone(),
                other(2_000, 422, "idempotency_key_reused"),
                other(6_000, 409, "sold_out"),
            ]
        };
        let v = judge(
            &history(events(), &[500_000, 5_000_000]),
            &evidence(vec![]),
            &["b0".to_owned()],
        );
        assert_eq!(v.violation_count(), 0, "{:?}", v.violations);

        // Without the second loss the 422 stands: the 409 differs from it.
        let v = judge(
            &history(events(), &[500_000]),
            &evidence(vec![]),
            &["b0".to_owned()],
        );
        assert_eq!(count(&v, Violation::ChangedPayloadNot422), 1);
    }

    #[test]
    fn violations_are_attributed_to_the_fault_they_followed() {
        let events = vec![
            created(Purpose::First, 0, false),
            sold_out(
                Purpose::Replay {
                    after_fault: Some(0),
                },
                10,
            ),
        ];
        let history = with_fault(events, "flushall", 5_000);
        let v = judge(
            &history,
            &evidence(vec![db_order(ORDER, 1)]),
            &["b0".to_owned()],
        );
        assert_eq!(v.faults[0].burst_replays, 1);
        assert_eq!(v.counts.replays_after_faults, 1);
        assert_eq!(v.faults[0].violations.get("r4_replay_differs"), Some(&1));
        assert_eq!(
            v.faults[0].violations.get("r2_created_and_refused"),
            Some(&1)
        );
        assert!(v.before_faults.is_empty());
        let example = &v.violations["r2_created_and_refused"].examples[0];
        assert!(
            example.contains("replay after fault #1") && example.contains("409 sold_out"),
            "{example}"
        );
    }

    #[test]
    fn an_incomplete_history_is_a_violation() {
        let history = History {
            overflow: 3,
            ..History::with_limit(0)
        };
        let v = judge(&history, &evidence(vec![]), &[]);
        assert_eq!(count(&v, Violation::HistoryIncomplete), 1);
    }

    #[test]
    fn error_bodies_out_of_shape_are_counted() {
        let events = vec![event(Purpose::First, 1, 0, Some(400), false, "<html>")];
        let v = judged(events, &evidence(vec![]));
        assert_eq!(count(&v, Violation::AnswerOutOfShape), 1);
    }
}
