//! Sending the load.
//!
//! Open model: request `i` is due at `start + i / rate`. A dispatcher wakes
//! every millisecond and sends every request that is due, whether or not
//! earlier ones returned. A request's latency runs from its *scheduled*
//! time, not from when it actually left, so a stalled server is charged for
//! the whole stall (coordinated omission corrected); the service time (from
//! the actual send) is kept too. In-flight requests are capped; requests
//! that would exceed the cap are counted as dropped, never silently skipped.
//!
//! With a history (`--history`, open model only), every attempt of every
//! order, retries included, is recorded with its answer and body, and the
//! dispatcher also sends the replays the [`Recorder`] says are due (a steady
//! rate, and a burst after each announced fault), spread over the targets.
//! Replays are kept out of the latency figures and the counts below, which
//! describe the load itself: one final answer per new intent.
//!
//! Both senders read answers with [`Answer::read`] and build order bodies
//! with one function; a request is retried while its answer's body says
//! `"retryable": true` (or no answer came).
//!
//! Closed loop: `concurrency` workers each send as soon as their previous
//! request returned, for measuring maximum throughput. Each worker owns one
//! keep-alive HTTP/1.1 connection (plain hyper, no pool), so the generator
//! spends as little CPU per request as it can and leaves the rest to the
//! server it measures.

use crate::answer::{Answer, IDEMPOTENT_REPLAYED};
use crate::cli::{Endpoint, RunArgs};
use crate::history::replay::KeyRef;
use crate::history::{Event, History, Payload, Purpose, Recorder};
use crate::setup::Target;
use hdrhistogram::Histogram;
use hyper::body::Bytes;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// At most this many requests in flight in the open model.
const MAX_IN_FLIGHT: usize = 20_000;

pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()?)
}

fn histogram() -> Histogram<u64> {
    // Microseconds from 1 µs to 10 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!("3 digits is valid")))
}

/// What one request came back with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Created,
    Conflict409,
    Other4xx,
    Server5xx,
    Ok2xx,
    /// No answer (connection error, timeout).
    Failed,
}

impl Class {
    fn of(status: u16) -> Self {
        match status {
            201 => Self::Created,
            409 => Self::Conflict409,
            200..=299 => Self::Ok2xx,
            400..=499 => Self::Other4xx,
            _ => Self::Server5xx,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub created: u64,
    pub conflict_409: u64,
    pub other_4xx: u64,
    pub server_5xx: u64,
    pub ok_2xx: u64,
    pub failed: u64,
    pub dropped: u64,
    /// Error codes seen, with counts.
    pub codes: std::collections::BTreeMap<String, u64>,
}

impl Counts {
    fn add(&mut self, class: Class) {
        match class {
            Class::Created => self.created += 1,
            Class::Conflict409 => self.conflict_409 += 1,
            Class::Other4xx => self.other_4xx += 1,
            Class::Server5xx => self.server_5xx += 1,
            Class::Ok2xx => self.ok_2xx += 1,
            Class::Failed => self.failed += 1,
        }
    }

    pub fn answered(&self) -> u64 {
        self.created + self.conflict_409 + self.other_4xx + self.server_5xx + self.ok_2xx
    }
}

pub struct Recorded {
    /// Scheduled-to-completion latency (µs).
    pub corrected: Histogram<u64>,
    /// Send-to-completion latency (µs).
    pub service: Histogram<u64>,
    /// Per second since the start: corrected latencies (µs).
    pub timeline: Vec<Histogram<u64>>,
    pub counts: Counts,
    /// Order ids of 201 answers, per item id.
    pub created_orders: std::collections::HashMap<i64, Vec<String>>,
    /// 201 answers per item id.
    pub created_per_item: std::collections::HashMap<i64, u64>,
}

impl Recorded {
    /// Adds another worker's recordings to these.
    fn merge(&mut self, other: Recorded) {
        let _ = self.corrected.add(&other.corrected);
        let _ = self.service.add(&other.service);
        for (i, h) in other.timeline.into_iter().enumerate() {
            while self.timeline.len() <= i {
                self.timeline.push(histogram());
            }
            let _ = self.timeline[i].add(&h);
        }
        let c = other.counts;
        self.counts.created += c.created;
        self.counts.conflict_409 += c.conflict_409;
        self.counts.other_4xx += c.other_4xx;
        self.counts.server_5xx += c.server_5xx;
        self.counts.ok_2xx += c.ok_2xx;
        self.counts.failed += c.failed;
        self.counts.dropped += c.dropped;
        for (code, n) in c.codes {
            *self.counts.codes.entry(code).or_default() += n;
        }
        for (item, ids) in other.created_orders {
            self.created_orders.entry(item).or_default().extend(ids);
        }
        for (item, n) in other.created_per_item {
            *self.created_per_item.entry(item).or_default() += n;
        }
    }

    fn new() -> Self {
        Self {
            corrected: histogram(),
            service: histogram(),
            timeline: Vec::new(),
            counts: Counts::default(),
            created_orders: std::collections::HashMap::new(),
            created_per_item: std::collections::HashMap::new(),
        }
    }
}

pub struct Outcome {
    pub recorded: Recorded,
    pub sent: u64,
    pub elapsed: Duration,
    /// Every request and answer, with `--history`.
    pub history: Option<History>,
}

/// What every request of a run shares, built once.
struct Plan {
    args: RunArgs,
    target: Arc<Target>,
    /// Per target, the URL requests go to.
    urls: Vec<String>,
    recorder: Option<Arc<Recorder>>,
}

/// One request: which target, and for an order, as whom, with which key
/// and payload (none for `GET /healthz`).
#[derive(Debug, Clone, Copy)]
struct Shot {
    target: usize,
    order: Option<KeyRef>,
}

impl Plan {
    fn new(args: &RunArgs, target: &Arc<Target>, recorder: Option<Arc<Recorder>>) -> Self {
        let path = match args.endpoint {
            Endpoint::Healthz => "/healthz",
            Endpoint::Orders => "/api/orders",
        };
        Self {
            args: args.clone(),
            target: target.clone(),
            urls: args.targets.iter().map(|t| format!("{t}{path}")).collect(),
            recorder,
        }
    }

    /// The `n`th new request: a fresh key, buyers and items in turn.
    fn shot(&self, n: u64) -> Shot {
        let order = match self.args.endpoint {
            Endpoint::Healthz => None,
            Endpoint::Orders => Some(KeyRef {
                buyer: (n % self.target.buyers.len() as u64) as u32,
                key: uuid::Uuid::new_v4(),
                payload: Payload {
                    item: self.target.items[(n % self.target.items.len() as u64) as usize].id,
                    qty: self.args.qty,
                },
            }),
        };
        Shot {
            target: (n % self.urls.len() as u64) as usize,
            order,
        }
    }

    fn cookie(&self, order: &KeyRef) -> &str {
        self.target
            .buyers
            .get(order.buyer as usize)
            .map_or("", |b| b.cookie.as_str())
    }
}

/// The JSON body of an order, built the same way by both senders.
fn order_body(payload: Payload) -> String {
    format!(r#"{{"item_id":{},"qty":{}}}"#, payload.item, payload.qty)
}

/// An attempt on its way, with a history kept: recorded when its answer
/// comes, or as "no answer" if the run gives up on it first (its task is
/// aborted at the drain deadline), so the history holds every request
/// sent.
struct InFlight<'p> {
    recorder: &'p Recorder,
    order: KeyRef,
    purpose: Purpose,
    sent_us: u64,
    answered: bool,
}

impl<'p> InFlight<'p> {
    /// `None` without a history, or for a request that is no order.
    fn start(plan: &'p Plan, shot: &Shot, purpose: Purpose) -> Option<Self> {
        let recorder = plan.recorder.as_deref()?;
        Some(Self {
            recorder,
            order: shot.order?,
            purpose,
            sent_us: recorder.now_us(),
            answered: false,
        })
    }

    fn record(&self, answer: Answer, body: Option<Bytes>) {
        self.recorder.record(Event {
            buyer: self.order.buyer,
            key: self.order.key,
            payload: self.order.payload,
            purpose: self.purpose,
            sent_us: self.sent_us,
            received_us: self.recorder.now_us(),
            answer,
            body: body.map(|b| String::from_utf8_lossy(&b).into()),
        });
    }

    fn answered(mut self, answer: &Answer, body: Option<Bytes>) {
        self.answered = true;
        self.record(answer.clone(), body);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.record(Answer::none(), None);
        }
    }
}

/// One logical request: retried with the same key while its answer was
/// retryable (as the answer's body says), up to `--retries` times. With a
/// history, every attempt is recorded and a definite end makes the key a
/// candidate for replays.
async fn fire(client: &reqwest::Client, plan: &Plan, shot: &Shot) -> Answer {
    let mut purpose = Purpose::First;
    let mut attempt = 0;
    loop {
        let in_flight = InFlight::start(plan, shot, purpose);
        let (answer, body) = fire_once(client, plan, shot).await;
        if let Some(in_flight) = in_flight {
            in_flight.answered(&answer, body);
        }
        if !answer.retryable || attempt >= plan.args.retries {
            if let (Some(recorder), Some(order)) = (&plan.recorder, shot.order) {
                recorder.settled(order, &answer);
            }
            return answer;
        }
        attempt += 1;
        purpose = Purpose::Retry;
        tokio::time::sleep(crate::answer::retry_pause(attempt)).await;
    }
}

/// A replay: sent once, never retried, recorded.
async fn replay(client: &reqwest::Client, plan: &Plan, shot: &Shot, after_fault: Option<usize>) {
    let in_flight = InFlight::start(plan, shot, Purpose::Replay { after_fault });
    let (answer, body) = fire_once(client, plan, shot).await;
    if let Some(in_flight) = in_flight {
        in_flight.answered(&answer, body);
    }
}

/// One attempt through reqwest; the body comes back too (none when no
/// answer came).
async fn fire_once(client: &reqwest::Client, plan: &Plan, shot: &Shot) -> (Answer, Option<Bytes>) {
    let url = &plan.urls[shot.target];
    let request = match &shot.order {
        None => client.get(url),
        Some(order) => {
            let mut request = client
                .post(url)
                .header("Idempotency-Key", order.key.to_string())
                .header("Cookie", plan.cookie(order))
                .header("Content-Type", "application/json")
                .body(order_body(order.payload));
            if let Some(strategy) = &plan.args.strategy {
                request = request.header("X-Order-Strategy", strategy);
            }
            request
        }
    };
    crate::answer::send(request.timeout(Duration::from_secs_f64(plan.args.request_timeout))).await
}

type RawConnection = hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>;

/// One request on the worker's own connection (opened, or reopened after a
/// failure, on demand).
async fn send_raw(
    connection: &mut Option<RawConnection>,
    base: &str,
    plan: &Plan,
    shot: &Shot,
) -> Answer {
    use http_body_util::BodyExt;
    if connection.as_ref().is_none_or(|c| c.is_closed()) {
        let authority = base
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let Ok(stream) = tokio::net::TcpStream::connect(&authority).await else {
            return Answer::none();
        };
        let _ = stream.set_nodelay(true);
        let Ok((sender, conn)) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
        else {
            return Answer::none();
        };
        tokio::spawn(conn);
        *connection = Some(sender);
    }
    let Some(sender) = connection.as_mut() else {
        return Answer::none();
    };
    if sender.ready().await.is_err() {
        *connection = None;
        return Answer::none();
    }
    let host = base.trim_start_matches("http://");
    let request = match &shot.order {
        None => hyper::Request::get("/healthz")
            .header("host", host)
            .body(http_body_util::Full::new(Bytes::new())),
        Some(order) => {
            let mut builder = hyper::Request::post("/api/orders")
                .header("host", host)
                .header("content-type", "application/json")
                .header("idempotency-key", order.key.to_string())
                .header("cookie", plan.cookie(order));
            if let Some(strategy) = &plan.args.strategy {
                builder = builder.header("x-order-strategy", strategy.as_str());
            }
            builder.body(http_body_util::Full::new(Bytes::from(order_body(
                order.payload,
            ))))
        }
    };
    let Ok(request) = request else {
        return Answer::none();
    };
    let Ok(response) = sender.send_request(request).await else {
        *connection = None;
        return Answer::none();
    };
    let status = response.status().as_u16();
    let replayed = response.headers().get(IDEMPOTENT_REPLAYED).cloned();
    let Ok(body) = response.into_body().collect().await else {
        *connection = None;
        return Answer::none();
    };
    Answer::read(
        status,
        replayed.as_ref().map(|v| v.as_bytes()),
        &body.to_bytes(),
    )
}

fn record(
    recorded: &Mutex<Recorded>,
    start: Instant,
    scheduled: Instant,
    sent: Instant,
    shot: &Shot,
    answer: &Answer,
) {
    let mut r = recorded
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    record_into(&mut r, start, scheduled, sent, shot, answer);
}

fn record_into(
    r: &mut Recorded,
    start: Instant,
    scheduled: Instant,
    sent: Instant,
    shot: &Shot,
    answer: &Answer,
) {
    let done = Instant::now();
    let corrected = done.saturating_duration_since(scheduled).as_micros().max(1) as u64;
    let service = done.saturating_duration_since(sent).as_micros().max(1) as u64;
    let second = scheduled.saturating_duration_since(start).as_secs() as usize;
    let _ = r.corrected.record(corrected);
    let _ = r.service.record(service);
    while r.timeline.len() <= second {
        r.timeline.push(histogram());
    }
    let _ = r.timeline[second].record(corrected);
    let class = answer.status.map_or(Class::Failed, Class::of);
    r.counts.add(class);
    if let Some(code) = &answer.code {
        match r.counts.codes.get_mut(code) {
            Some(n) => *n += 1,
            None => {
                r.counts.codes.insert(code.clone(), 1);
            }
        }
    }
    if let (Class::Created, Some(order)) = (class, shot.order) {
        let item = order.payload.item;
        *r.created_per_item.entry(item).or_default() += 1;
        if let Some(order) = &answer.order_id {
            r.created_orders
                .entry(item)
                .or_default()
                .push(order.clone());
        }
    }
}

/// Sends the load and waits for the answers (bounded by the request
/// timeout). With a recorder, every order request and answer is kept and
/// replays are sent beside the load.
pub async fn drive(
    client: &reqwest::Client,
    args: &RunArgs,
    target: &Arc<Target>,
    recorder: Option<Arc<Recorder>>,
) -> Outcome {
    let plan = Arc::new(Plan::new(args, target, recorder));
    let recorded = Arc::new(Mutex::new(Recorded::new()));
    let start = Instant::now();
    if let Some(recorder) = &plan.recorder {
        recorder.begin(start);
    }
    let deadline = start + args.duration();
    let mut tasks = tokio::task::JoinSet::new();
    let mut sent = 0u64;
    match (args.rate, args.concurrency) {
        (Some(rate), _) => {
            let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
            let mut ticker = tokio::time::interval(Duration::from_millis(1));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut replays = 0usize;
            'schedule: loop {
                ticker.tick().await;
                let now = Instant::now();
                loop {
                    let scheduled = start + interval.mul_f64(sent as f64);
                    if scheduled > now {
                        break;
                    }
                    if scheduled >= deadline || sent >= args.max_requests {
                        break 'schedule;
                    }
                    sent += 1;
                    while tasks.try_join_next().is_some() {}
                    if tasks.len() >= MAX_IN_FLIGHT {
                        recorded.lock().map(|mut r| r.counts.dropped += 1).ok();
                        continue;
                    }
                    let shot = plan.shot(sent - 1);
                    let (client, plan, recorded) = (client.clone(), plan.clone(), recorded.clone());
                    tasks.spawn(async move {
                        let actually_sent = Instant::now();
                        let answer = fire(&client, &plan, &shot).await;
                        record(&recorded, start, scheduled, actually_sent, &shot, &answer);
                    });
                }
                let due = plan
                    .recorder
                    .as_ref()
                    .map(|r| r.due_replays())
                    .unwrap_or_default();
                for (order, after_fault) in due {
                    let shot = Shot {
                        target: replays % plan.urls.len(),
                        order: Some(order),
                    };
                    replays += 1;
                    let (client, plan) = (client.clone(), plan.clone());
                    tasks.spawn(async move { replay(&client, &plan, &shot, after_fault).await });
                }
            }
        }
        (None, Some(concurrency)) => {
            let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
            for worker in 0..concurrency {
                let (plan, recorded, counter) = (plan.clone(), recorded.clone(), counter.clone());
                tasks.spawn(async move {
                    // Each worker records on its own and merges once at the
                    // end: no lock on the hot path.
                    let mut local = Recorded::new();
                    let base = plan.args.targets[worker as usize % plan.args.targets.len()].clone();
                    let mut connection = None;
                    loop {
                        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if Instant::now() >= deadline || n >= plan.args.max_requests {
                            break;
                        }
                        let shot = plan.shot(n);
                        let scheduled = Instant::now();
                        let answer = send_raw(&mut connection, &base, &plan, &shot).await;
                        record_into(&mut local, start, scheduled, scheduled, &shot, &answer);
                    }
                    recorded
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .merge(local);
                });
            }
        }
        (None, None) => {}
    }
    let drain = tokio::time::sleep(Duration::from_secs_f64(args.request_timeout + 5.0));
    tokio::pin!(drain);
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            () = &mut drain => {
                tasks.abort_all();
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    if args.concurrency.is_some() {
        sent = recorded
            .lock()
            .map(|r| r.counts.answered() + r.counts.failed)
            .unwrap_or_default();
    }
    let recorded = match Arc::try_unwrap(recorded) {
        Ok(m) => m
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
        Err(shared) => {
            let mut r = shared
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            std::mem::replace(&mut *r, Recorded::new())
        }
    };
    Outcome {
        recorded,
        sent,
        elapsed,
        history: plan.recorder.as_ref().map(|r| r.take()),
    }
}
