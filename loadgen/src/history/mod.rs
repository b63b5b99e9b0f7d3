//! The history of a run, and the checker that judges it, in the spirit of
//! Jepsen: keep every request and every answer, then decide afterwards
//! whether some order of events explains them all under the shop's
//! contract.
//!
//! # What is recorded
//!
//! With `--history`, every attempt at `POST /api/orders` becomes one
//! [`Event`]: the buyer, the idempotency key, the payload (item, qty), why
//! it was sent ([`Purpose`]: a new intent's first attempt, a retry of a
//! retryable answer, or a replay of an earlier key), when it left and when
//! its answer came back (µs since the start), the [`Answer`] as read by
//! [`crate::answer`], and the body as received (or none). Memory is bounded
//! by `--history-limit` events (about half a kilobyte each with its body);
//! a history that hit the limit is incomplete, and the checker says so as a
//! violation instead of judging half a run.
//!
//! # Replays
//!
//! Every intent that ends in a definite answer (a 201, or a refusal whose
//! body says `"retryable": false`) is offered to the [`replay::ReplayPool`];
//! throughout the run `--replay-rate` replays per second pick a random key
//! from it (keys answered 201 and keys refused, half each), mostly with the
//! same payload and one in four with another `qty`. When the fault script
//! says a fault just happened (`POST /fault?name=...` on the generator's
//! [`crate::control`] endpoint), a burst of `--fault-burst` replays follows
//! within half a second, marked with that fault. Replays are sent once,
//! never retried, and spread over every target.
//!
//! # The rules
//!
//! [`rules::judge`] checks the history against the database's orders and
//! the final `GET /api/orders/by-key/{key}` of every key ([`evidence`]).
//! A key's *original payload* is that of its first attempt; a request with
//! another payload is a *changed* request. A *definite* answer is a 201 or
//! an error whose body says `"retryable": false`; no answer, and retryable
//! errors, settle nothing and are allowed anywhere.
//!
//! 1. Every 201 carries an order id; all 201s of a key carry the same one;
//!    that order exists exactly once in the database, for that buyer, key
//!    and payload.
//! 2. No key was answered both 201 and a definite refusal for its original
//!    payload.
//! 3. No order exists for a key whose latest definite answer (original
//!    payload) was a refusal; and at the end `by-key` says `order` with the
//!    database's order id for every key that has one, and never `order` for
//!    a key that has none. An order nobody asked for is a violation too.
//! 4. A request with the original payload sent after the key's first
//!    definite answer came back, and answered definitely, repeats that
//!    answer: same status, same JSON body; a repeated 201 carries
//!    `Idempotent-Replayed: true`. A refusal repeated with the same status
//!    and code but another body is counted apart (`reworded`: decided
//!    again rather than replayed) from one that changed its status or code.
//! 5. A changed request sent after the key's first definite answer came
//!    back is never answered 201, and if answered definitely, it is 422
//!    `idempotency_key_reused`.
//!
//! One allowance, as the README states: a `sold_out` refusal is kept in
//! Redis only, so once Redis lost its data (a FLUSHALL or an empty restart
//! after the refusal), the key is decided anew by whichever request comes
//! first, with whatever payload. Rules 4 and 5 then judge the history from
//! the loss on by that new decision (counted as `keys_decided_again`);
//! rules 1 to 3, about orders, always judge the whole history. A first
//! answer that came back after the loss may have been decided after it:
//! when another payload sent after the loss hears 422 first, that answer is
//! the new decision, and the next loss may erase it in turn.
//!
//! Rules 1 to 3 count keys, rules 4 and 5 count requests. One incident can
//! break two rules (an order answered 201, then refused: rules 2 and 4);
//! each count says which promise broke.

pub mod evidence;
pub mod replay;
pub mod rules;

use crate::answer::Answer;
use crate::control::{Command, Reply};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What an order asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Payload {
    pub item: i64,
    pub qty: i64,
}

/// Why a request was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The first attempt of a new intent (a fresh key).
    First,
    /// The same request again, because the last answer was retryable.
    Retry,
    /// An earlier key sent again on purpose; `after_fault` is the index of
    /// the fault whose burst it belongs to.
    Replay { after_fault: Option<usize> },
}

/// One request and its answer.
#[derive(Debug, Clone)]
pub struct Event {
    /// Index of the buyer in the run's buyers.
    pub buyer: u32,
    pub key: uuid::Uuid,
    pub payload: Payload,
    pub purpose: Purpose,
    /// µs from the start of the run to the send.
    pub sent_us: u64,
    /// µs from the start of the run to the answer (or to giving up on it).
    pub received_us: u64,
    pub answer: Answer,
    /// The body as received; `None` when no answer came.
    pub body: Option<Box<str>>,
}

/// A fault the script announced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FaultMark {
    pub name: String,
    /// µs from the start of the run.
    pub at_us: u64,
}

/// Every event of a run, up to a limit.
#[derive(Debug, Default)]
pub struct History {
    pub events: Vec<Event>,
    pub faults: Vec<FaultMark>,
    /// Events that did not fit under the limit: the history is incomplete.
    pub overflow: u64,
    limit: usize,
}

impl History {
    pub fn with_limit(limit: usize) -> Self {
        Self {
            events: Vec::with_capacity(limit.min(1 << 16)),
            faults: Vec::new(),
            overflow: 0,
            limit,
        }
    }

    pub fn push(&mut self, event: Event) {
        if self.events.len() < self.limit {
            self.events.push(event);
        } else {
            self.overflow += 1;
        }
    }
}

/// The shared side of recording: the history, the replay pool and
/// schedule, and the clock they share, used by the senders, the dispatcher
/// and the control endpoint at once.
pub struct Recorder {
    /// Set when the load starts; the control endpoint is up before.
    start: OnceLock<Instant>,
    history: Mutex<History>,
    pool: Mutex<replay::ReplayPool>,
    schedule: Mutex<replay::ReplaySchedule>,
}

impl Recorder {
    /// Keeps up to `limit` events; replays `replay_rate` keys per second
    /// and `fault_burst` keys after each announced fault.
    pub fn new(limit: usize, replay_rate: f64, fault_burst: u32) -> Self {
        Self {
            start: OnceLock::new(),
            history: Mutex::new(History::with_limit(limit)),
            pool: Mutex::new(replay::ReplayPool::new()),
            schedule: Mutex::new(replay::ReplaySchedule::new(replay_rate, fault_burst)),
        }
    }

    /// The load starts now (the first call wins).
    pub fn begin(&self, start: Instant) {
        let _ = self.start.set(start);
    }

    /// Time since the start of the load (zero before it).
    fn elapsed(&self) -> Duration {
        self.start.get().map_or(Duration::ZERO, Instant::elapsed)
    }

    /// µs since the start of the load.
    pub fn now_us(&self) -> u64 {
        self.elapsed().as_micros() as u64
    }

    pub fn record(&self, event: Event) {
        lock(&self.history).push(event);
    }

    /// An intent ended with `answer`: a definite one makes its key a
    /// candidate for replays.
    pub fn settled(&self, key: replay::KeyRef, answer: &Answer) {
        if answer.status.is_some() && !answer.retryable {
            lock(&self.pool).offer(key, answer.status == Some(201));
        }
    }

    /// The replays due now, each with the fault whose burst it belongs to
    /// (none for a steady one); fewer when no key can be replayed yet.
    pub fn due_replays(&self) -> Vec<(replay::KeyRef, Option<usize>)> {
        self.due_replays_at(self.elapsed())
    }

    fn due_replays_at(&self, now: Duration) -> Vec<(replay::KeyRef, Option<usize>)> {
        let due = lock(&self.schedule).due(now);
        if due.is_empty() {
            return Vec::new();
        }
        let mut pool = lock(&self.pool);
        due.into_iter()
            .filter_map(|fault| pool.pick().map(|key| (key, fault)))
            .collect()
    }

    /// Notes a fault the script announced and schedules its burst of
    /// replays; returns its index.
    pub fn mark_fault(&self, name: &str) -> usize {
        let at = self.elapsed();
        let index = {
            let mut history = lock(&self.history);
            history.faults.push(FaultMark {
                name: name.to_owned(),
                at_us: at.as_micros() as u64,
            });
            history.faults.len() - 1
        };
        lock(&self.schedule).fault(index, at);
        index
    }

    /// The generator's control commands: `GET /status` (whether the load
    /// has started, and since when), `POST /fault?name=NAME`.
    pub fn command(&self, c: Command<'_>) -> Reply {
        match (c.method, c.path) {
            ("GET", "/status") => Reply::ok(serde_json::json!({
                "started": self.start.get().is_some(),
                "elapsed_s": self.elapsed().as_secs_f64(),
            })),
            ("POST", "/fault") => {
                let Some(name) = c.param("name").filter(|n| is_fault_name(n)) else {
                    return Reply::bad("name= must be 1 to 64 of A-Z a-z 0-9 - _ .");
                };
                let index = self.mark_fault(name);
                Reply::ok(serde_json::json!({
                    "fault": index + 1,
                    "name": name,
                    "at_s": self.elapsed().as_secs_f64(),
                }))
            }
            _ => Reply::not_found(),
        }
    }

    /// The history so far (the run is over when this is called).
    pub fn take(&self) -> History {
        std::mem::take(&mut *lock(&self.history))
    }
}

fn is_fault_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u128) -> Event {
        Event {
            buyer: 0,
            key: uuid::Uuid::from_u128(n),
            payload: Payload { item: 1, qty: 1 },
            purpose: Purpose::First,
            sent_us: 0,
            received_us: 1,
            answer: Answer::none(),
            body: None,
        }
    }

    #[test]
    fn a_history_over_its_limit_counts_what_it_dropped() {
        let mut h = History::with_limit(2);
        for n in 0..5 {
            h.push(event(n));
        }
        assert_eq!(h.events.len(), 2);
        assert_eq!(h.overflow, 3);
    }

    #[test]
    fn only_definite_answers_make_a_key_replayable() {
        // Before the load starts, faults are marked at 0 s.
        let r = Recorder::new(10, 0.0, 10);
        let key = replay::KeyRef {
            buyer: 0,
            key: uuid::Uuid::from_u128(1),
            payload: Payload { item: 1, qty: 1 },
        };
        r.settled(key, &Answer::none());
        r.mark_fault("nothing-settled");
        assert!(
            r.due_replays_at(Duration::from_secs(1)).is_empty(),
            "no answer settles nothing"
        );
        let sold_out = Answer::read(
            409,
            None,
            br#"{"code":"sold_out","message":"m","retryable":false}"#,
        );
        r.settled(key, &sold_out);
        r.mark_fault("flushall");
        let due = r.due_replays_at(Duration::from_secs(2));
        assert_eq!(due.len(), 10);
        assert!(
            due.iter()
                .all(|(k, fault)| k.key == key.key && *fault == Some(1))
        );
    }

    #[test]
    fn faults_are_announced_by_name_on_the_control_endpoint() {
        let r = Recorder::new(10, 0.0, 0);
        let command = |method, path, query| Command::new(method, path, query);
        let status = r.command(command("GET", "/status", ""));
        assert!(
            status.body.contains(r#""started":false"#),
            "{}",
            status.body
        );
        assert_eq!(
            r.command(command("POST", "/fault", "name=flushall")).status,
            200
        );
        assert_eq!(
            r.command(command("POST", "/fault", "name=a%20b")).status,
            400
        );
        assert_eq!(r.command(command("POST", "/fault", "")).status, 400);
        assert_eq!(r.command(command("DELETE", "/fault", "")).status, 404);
        r.begin(Instant::now());
        assert!(
            r.command(command("GET", "/status", ""))
                .body
                .contains(r#""started":true"#)
        );
        let history = r.take();
        assert_eq!(history.faults.len(), 1);
        assert_eq!(history.faults[0].name, "flushall");
    }
}
