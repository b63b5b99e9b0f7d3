//! The order pipeline: every order, from the JSON API or the Buy button's
//! server function, crosses the same stages in this order.
//!
//! 1. **validate**: done before the pipeline is called: `OrderRequest`,
//!    `IdempotencyKey` and `BuyerId` cannot hold bad values.
//! 2. [`idempotency`]: claim the buyer's key, or replay/refuse. An item the
//!    reservation stage recently saw sold out is refused in the claim itself.
//! 3. [`reserve`] (strategy A): take a hold in the reservation store; sold
//!    out and over-limit requests end here.
//! 4. [`ledger`]: the versioned SQL update and the order insert, retried with
//!    backoff on version conflicts; under load [`coalesce`] batches one
//!    item's orders into one transaction.
//! 5. [`settle`]: confirm the hold when the order committed, release it
//!    otherwise.
//! 6. record the outcome for replays (definite outcomes only).
//!
//! Guarantees: a unit is sold at most once (`stock >= qty` in the update);
//! one intent gives at most one order (the unique index on
//! `orders (buyer, idempotency_key)`); a committed order is never reported
//! as failed; a hold is given back at most once.

pub mod coalesce;
pub mod idempotency;
pub mod ledger;
pub mod reserve;
pub mod settle;
pub mod strategy;

use crate::hot_items::HotItems;
use crate::metrics::{self as m, Metrics};
use crate::orders::strategy::Strategy;
use crate::reservation::breaker::{Admission, Breaker, BreakerState};
use crate::reservation::{Hold, HoldDeadline, HoldToken};
use app::checkout::Placement;
use app::domain::{BuyerId, IdempotencyKey, ItemId};
use app::model::{ErrorCode, KeyOutcome, OrderError, OrderRequest, Receipt};
use coalesce::Coalescer;
use idempotency::{Claim, IdempotencyStore, KeyScope, Record, StoredResponse, request_hash};
use ledger::{Ledger, LedgerRefusal, Written};
use reserve::{ReserveFailure, ReserveStage};
use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Where each strategy keeps its idempotency records: strategy A in Redis
/// when Redis is configured (so requests Redis turns away never touch the
/// database), strategy B in the database.
pub struct Records {
    pub redis_then_db: Arc<dyn IdempotencyStore>,
    pub db_only: Arc<dyn IdempotencyStore>,
}

impl Records {
    fn of(&self, strategy: Strategy) -> &Arc<dyn IdempotencyStore> {
        match strategy {
            Strategy::ReserveFirst => &self.redis_then_db,
            Strategy::LedgerOnly => &self.db_only,
        }
    }
}

pub struct OrderPipeline {
    default_strategy: Strategy,
    records: Records,
    /// Present when strategy A can run (it is the default, or per-request
    /// overrides are allowed).
    reservation: Option<ReserveStage>,
    ledger: Arc<Ledger>,
    /// Batches each item's ledger writes; `None` writes one by one.
    coalescer: Option<Coalescer>,
    hold_ttl: Duration,
    metrics: Arc<Metrics>,
    hot_items: Arc<HotItems>,
    /// Around the Redis layer, when Redis carries it.
    breaker: Option<Arc<Breaker>>,
    /// Items ordered while the breaker kept Redis out: their counters missed
    /// those orders and are reloaded from the database once it closes.
    bypassed_items: Mutex<HashSet<ItemId>>,
}

/// How one request crosses the layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Route {
    /// The strategy asked for (the metrics label).
    strategy: Strategy,
    /// Whether the reservation layer runs (A, unless the breaker is open).
    reserve: bool,
}

impl Route {
    fn label(self) -> &'static str {
        self.strategy.label()
    }

    /// Strategy A keeps its records where its reservations are; a bypassed
    /// A request and every B request use the database's.
    fn records(self) -> Strategy {
        if self.reserve {
            Strategy::ReserveFirst
        } else {
            Strategy::LedgerOnly
        }
    }
}

/// What one run of stages 3 to 5 produced.
enum Outcome {
    Created(Receipt),
    /// The key already had an order (the idempotency record was lost).
    AlreadyOrdered(Receipt),
    Refused(OrderError),
}

impl OrderPipeline {
    pub fn new(
        default_strategy: Strategy,
        records: Records,
        reservation: Option<ReserveStage>,
        ledger: Arc<Ledger>,
        coalescer: Option<Coalescer>,
        hold_ttl: Duration,
        metrics: Arc<Metrics>,
        hot_items: Arc<HotItems>,
        breaker: Option<Arc<Breaker>>,
    ) -> Self {
        Self {
            default_strategy,
            records,
            reservation,
            ledger,
            coalescer,
            hold_ttl,
            metrics,
            hot_items,
            breaker,
            bypassed_items: Mutex::default(),
        }
    }

    pub fn breaker(&self) -> Option<&Arc<Breaker>> {
        self.breaker.as_ref()
    }

    fn set_breaker_gauge(&self, state: BreakerState) {
        self.metrics
            .gauge(m::BREAKER_STATE, &[])
            .set(state.gauge_value());
    }

    /// Asks the breaker whether this request may use Redis.
    fn admit(&self, strategy: Strategy) -> Admission {
        match (strategy, &self.breaker) {
            (Strategy::ReserveFirst, Some(breaker)) => breaker.admit(),
            _ => Admission::Call,
        }
    }

    /// Tells the breaker how Redis did for an order that used it.
    fn report(&self, admission: Admission, redis_failed: bool) {
        let Some(breaker) = &self.breaker else {
            return;
        };
        if admission == Admission::Skip {
            return;
        }
        let state = breaker.record(!redis_failed, Instant::now());
        self.set_breaker_gauge(state);
        if state == BreakerState::Open {
            tracing::warn!(
                "Redis failing: circuit breaker open; orders go straight to the database"
            );
        }
    }

    /// The half-open probe, run by a background task: when the cooldown is
    /// over, PING the store; on success close the breaker and reload the
    /// counters of items sold around Redis from the database.
    pub async fn probe_redis(&self) {
        let (Some(breaker), Some(stage)) = (&self.breaker, &self.reservation) else {
            return;
        };
        if !breaker.begin_probe(Instant::now()) {
            return;
        }
        self.set_breaker_gauge(BreakerState::HalfOpen);
        let answered = stage.store().ping().await.is_ok();
        let state = breaker.record(answered, Instant::now());
        self.set_breaker_gauge(state);
        if state != BreakerState::Closed {
            return;
        }
        tracing::info!("Redis answering again: circuit breaker closed");
        let items: Vec<ItemId> = self
            .bypassed_items
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain()
            .collect();
        for item in items {
            if let Err(e) = stage.reload_counter(item).await {
                tracing::warn!(%item, error = ?e, "could not reload a stale counter; reconciliation will repair it");
            }
        }
    }

    /// Units of this item came back through this instance (a restock):
    /// offer them at once rather than after the sold-out memo expires.
    pub fn forget_sold_out(&self, item: ItemId) {
        if let Some(stage) = &self.reservation {
            stage.forget_sold_out(item);
        }
    }

    /// An order sent around Redis that finished after the breaker closed
    /// may have committed after the probe reloaded its item's counter, which
    /// then misses it: reload the counter again (the reload counts live
    /// holds, so orders meanwhile going through Redis stay correct).
    async fn reload_if_redis_is_back(&self, item: ItemId) {
        let (Some(breaker), Some(stage)) = (&self.breaker, &self.reservation) else {
            return;
        };
        if breaker.state(Instant::now()) != BreakerState::Closed {
            return;
        }
        if let Err(e) = stage.reload_counter(item).await {
            tracing::warn!(%item, error = ?e, "could not reload a stale counter; reconciliation will repair it");
        }
    }

    pub fn strategy(&self) -> Strategy {
        self.default_strategy
    }

    /// Whether this pipeline can run `strategy` (A needs a reservation store).
    pub fn supports(&self, strategy: Strategy) -> bool {
        strategy == Strategy::LedgerOnly || self.reservation.is_some()
    }

    pub fn idempotency_kind(&self) -> &'static str {
        self.records.of(self.default_strategy).kind()
    }

    /// Places one order for one intent to buy, with the given strategy
    /// (which the caller checked with [`OrderPipeline::supports`]; strategy A
    /// without a store runs as B).
    pub async fn place(
        &self,
        buyer: &BuyerId,
        key: &IdempotencyKey,
        request: OrderRequest,
        strategy: Strategy,
    ) -> Placement {
        let strategy = if self.supports(strategy) {
            strategy
        } else {
            Strategy::LedgerOnly
        };
        let span = tracing::info_span!(
            "order",
            buyer = %buyer,
            key = %key,
            item = %request.item_id,
            qty = request.qty.get(),
            strategy = strategy.label(),
        );
        async {
            let started = Instant::now();
            self.hot_items.record(request.item_id);
            let admission = self.admit(strategy);
            tracing::debug!(?admission, "redis breaker admission");
            let bypassed = admission == Admission::Skip;
            if bypassed {
                self.bypassed_items
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(request.item_id);
            }
            let route = Route {
                strategy,
                reserve: strategy == Strategy::ReserveFirst && !bypassed,
            };
            let (placement, redis_failed) = self.place_inner(buyer, key, request, route).await;
            self.report(admission, redis_failed);
            if bypassed {
                self.reload_if_redis_is_back(request.item_id).await;
            }
            let outcome = match (&placement.result, placement.replayed) {
                (Ok(_), false) => "created",
                (Ok(_), true) => "replayed",
                (Err(e), _) => e.code.as_str(),
            };
            let label = strategy.label();
            self.metrics
                .counter(m::ORDERS, &[("outcome", outcome), ("strategy", label)])
                .increment(1);
            self.metrics
                .histogram(m::ORDER_SECONDS, &[("strategy", label)])
                .record(started.elapsed());
            placement
        }
        .instrument(span)
        .await
    }

    fn stage_timer(&self, stage: &'static str, route: Route) -> metrics::Histogram {
        self.metrics.histogram(
            m::STAGE_SECONDS,
            &[("stage", stage), ("strategy", route.label())],
        )
    }

    fn count_idempotency(&self, result: &'static str, route: Route) {
        self.metrics
            .counter(
                m::IDEMPOTENCY,
                &[("result", result), ("strategy", route.label())],
            )
            .increment(1);
    }

    /// Stages 2 to 6. The flag says whether Redis failed along the way
    /// (for the breaker).
    async fn place_inner(
        &self,
        buyer: &BuyerId,
        key: &IdempotencyKey,
        request: OrderRequest,
        route: Route,
    ) -> (Placement, bool) {
        let scope = KeyScope {
            buyer: buyer.clone(),
            key: key.clone(),
        };
        let hash = request_hash(&request);
        let records = self.records.of(route.records());
        let records_in_redis = route.reserve && records.kind() == "redis";

        // An item the reservation stage knows to be sold out is refused in
        // the claim itself: one round trip, and the refusal is recorded for
        // replays like any other.
        let known_sold_out = route.reserve
            && self
                .reservation
                .as_ref()
                .is_some_and(|stage| stage.known_sold_out(request.item_id));
        let answer = known_sold_out
            .then(|| &*KNOWN_SOLD_OUT)
            .and_then(Option::as_ref);

        let started = Instant::now();
        let claim = records
            .claim(&scope, &hash, crate::db::now_ms(), answer)
            .instrument(tracing::info_span!("idempotency", store = records.kind()))
            .await;
        self.stage_timer("idempotency", route)
            .record(started.elapsed());
        match claim {
            Ok(Claim::Claimed) => self.count_idempotency("new", route),
            Ok(Claim::Answered) => {
                self.count_idempotency("new", route);
                self.metrics
                    .counter(
                        m::RESERVATIONS,
                        &[("result", "sold_out_memo"), ("strategy", route.label())],
                    )
                    .increment(1);
                return (refuse(reserve::sold_out(0)), false);
            }
            Ok(Claim::Replay(stored)) => {
                self.count_idempotency("replay", route);
                return (replay(&stored), false);
            }
            Ok(Claim::InProgress) => {
                self.count_idempotency("in_progress", route);
                let error = OrderError::new(
                    ErrorCode::RequestInProgress,
                    "a request with this Idempotency-Key is still running",
                );
                return (refuse(error), false);
            }
            Ok(Claim::KeyReused) => {
                // A record store that missed the original (Redis flushed, or
                // the breaker sent requests to the database's records) may
                // hold a changed payload's claim; the orders table decides.
                if let Ok(Some(order)) = self.ledger.order_by_key(buyer, key).await {
                    if order.item_id == request.item_id && order.qty == request.qty {
                        self.count_idempotency("replay", route);
                        return (
                            Placement {
                                result: Ok(order),
                                replayed: true,
                            },
                            false,
                        );
                    }
                }
                self.count_idempotency("mismatch", route);
                return (refuse(key_reused()), false);
            }
            Err(e) => {
                self.count_idempotency("error", route);
                tracing::error!(error = %e, "idempotency store failed");
                // The claim may have been written before the answer was lost:
                // drop it, so a retry is not told "in progress" for a lease.
                if let Err(e) = records.abandon(&scope, &hash).await {
                    tracing::warn!(error = %e, "dropping a possibly written claim failed; it expires with its lease");
                }
                return (refuse(unavailable()), records_in_redis);
            }
        }

        let (outcome, redis_failed) = self.run_stages(buyer, key, request, route).await;

        let (result, replayed) = match outcome {
            Outcome::Created(receipt) => (Ok(receipt), false),
            Outcome::AlreadyOrdered(receipt)
                if receipt.item_id == request.item_id && receipt.qty == request.qty =>
            {
                (Ok(receipt), true)
            }
            Outcome::AlreadyOrdered(_) => {
                // The order under this key has another payload: this record
                // store never saw the original (its records were lost or
                // kept elsewhere). Storing the refusal under this payload's
                // hash would make the original's own replays look like a
                // reuse, so only answer it; the orders table stays the judge.
                if let Err(e) = records.abandon(&scope, &hash).await {
                    tracing::warn!(error = %e, "dropping the idempotency claim failed; it expires with its lease");
                }
                return (refuse(key_reused()), redis_failed);
            }
            Outcome::Refused(error) => (Err(error), false),
        };
        self.record(records.as_ref(), &scope, &hash, &result).await;
        (Placement { result, replayed }, redis_failed)
    }

    /// Stages 3 to 5; the flag says whether the reservation store failed.
    async fn run_stages(
        &self,
        buyer: &BuyerId,
        key: &IdempotencyKey,
        request: OrderRequest,
        route: Route,
    ) -> (Outcome, bool) {
        let item = request.item_id;
        let label = route.label();
        let token = HoldToken::new(buyer, key);
        let reservation = if route.reserve {
            self.reservation.as_ref()
        } else {
            None
        };
        let held = match reservation {
            None => {
                let result = if route.strategy == Strategy::ReserveFirst {
                    "bypassed"
                } else {
                    "skipped"
                };
                self.metrics
                    .counter(m::RESERVATIONS, &[("result", result), ("strategy", label)])
                    .increment(1);
                None
            }
            Some(stage) => {
                let hold = Hold {
                    token: token.clone(),
                    buyer: buyer.clone(),
                    qty: request.qty,
                    deadline: HoldDeadline::at_ms(
                        crate::db::now_ms() + self.hold_ttl.as_millis() as i64,
                    ),
                };
                let started = Instant::now();
                let reserved = stage
                    .reserve(item, &hold, label)
                    .instrument(tracing::info_span!("reserve", store = stage.store().kind()))
                    .await;
                self.stage_timer("reserve", route).record(started.elapsed());
                match reserved {
                    Ok(held_by) => Some((stage, held_by)),
                    Err(ReserveFailure::Refused(error)) => return (Outcome::Refused(error), false),
                    Err(ReserveFailure::Store(e)) => {
                        tracing::error!(error = %e, "reservation store failed");
                        return (Outcome::Refused(unavailable()), true);
                    }
                    Err(ReserveFailure::Database(e)) => {
                        tracing::error!(error = %e, "loading the reservation counter failed");
                        return (Outcome::Refused(unavailable()), false);
                    }
                }
            }
        };

        let started = Instant::now();
        let written = async {
            match &self.coalescer {
                Some(coalescer) => coalescer.write(buyer, key, request, label).await,
                None => self.ledger.write(buyer, key, request, label).await,
            }
        }
        .instrument(tracing::info_span!(
            "ledger",
            coalesced = self.coalescer.is_some()
        ))
        .await;
        self.stage_timer("ledger", route).record(started.elapsed());

        let started = Instant::now();
        let outcome = async {
            match written {
                Ok(Written::Created(receipt)) => {
                    if let Some((stage, _)) = held {
                        settle::confirm(stage.store(), &self.metrics, item, &token).await;
                    }
                    Outcome::Created(receipt)
                }
                Ok(Written::AlreadyOrdered(receipt)) => {
                    if let Some((stage, held_by)) = held {
                        settle::settle_duplicate(
                            stage.store(),
                            &self.metrics,
                            item,
                            &token,
                            held_by,
                        )
                        .await;
                        stage.forget_sold_out(item);
                    }
                    Outcome::AlreadyOrdered(receipt)
                }
                Err(refusal) => {
                    if let Some((stage, _)) = held {
                        settle::release(stage.store(), &self.metrics, item, &token).await;
                        stage.forget_sold_out(item);
                    }
                    Outcome::Refused(ledger_error(refusal))
                }
            }
        }
        .instrument(tracing::info_span!("settle"))
        .await;
        self.stage_timer("settle", route).record(started.elapsed());
        (outcome, false)
    }

    /// Stores a definite outcome for replays; drops the claim otherwise.
    async fn record(
        &self,
        records: &dyn IdempotencyStore,
        scope: &KeyScope,
        hash: &str,
        result: &Result<Receipt, OrderError>,
    ) {
        let written = match stored_response(result) {
            Some(Ok(stored)) => {
                records
                    .finish(scope, hash, &stored, crate::db::now_ms())
                    .await
            }
            Some(Err(e)) => Err(idempotency::RecordError(e.to_string())),
            None => {
                if let Err(e) = records.abandon(scope, hash).await {
                    tracing::warn!(error = %e, "dropping the idempotency claim failed; it expires with its lease");
                }
                return;
            }
        };
        if let Err(e) = written {
            // The order itself is safe: replays find it through the orders table.
            tracing::warn!(error = %e, "storing the idempotent response failed");
        }
    }

    /// What is known about an attempt of this buyer with this key.
    ///
    /// # Errors
    /// `unavailable` when neither the record nor the orders table can be read.
    pub async fn outcome_by_key(
        &self,
        buyer: &BuyerId,
        key: &IdempotencyKey,
    ) -> Result<KeyOutcome, OrderError> {
        let scope = KeyScope {
            buyer: buyer.clone(),
            key: key.clone(),
        };
        // The default strategy's records first, then the other's (overrides
        // may have written there), then the orders table.
        let mut stores = vec![self.records.of(self.default_strategy)];
        let other = self.records.of(match self.default_strategy {
            Strategy::ReserveFirst => Strategy::LedgerOnly,
            Strategy::LedgerOnly => Strategy::ReserveFirst,
        });
        if !Arc::ptr_eq(stores[0], other) {
            stores.push(other);
        }
        for store in stores {
            match store.lookup(&scope, crate::db::now_ms()).await {
                Ok(Some(Record::Done(stored))) => {
                    return Ok(match replay(&stored).result {
                        Ok(order) => KeyOutcome::Order { order },
                        Err(error) => KeyOutcome::Failed { error },
                    });
                }
                Ok(Some(Record::Running)) => return Ok(KeyOutcome::InProgress),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "idempotency lookup failed; asking the orders table")
                }
            }
        }
        match self.ledger.order_by_key(buyer, key).await {
            Ok(Some(order)) => Ok(KeyOutcome::Order { order }),
            Ok(None) => Ok(KeyOutcome::Unknown),
            Err(e) => {
                tracing::error!(error = %e, "order lookup failed");
                Err(unavailable())
            }
        }
    }
}

/// The stored answer of a refusal by the sold-out memo: the same for every
/// request, so it is serialized once.
static KNOWN_SOLD_OUT: LazyLock<Option<StoredResponse>> =
    LazyLock::new(|| stored_response(&Err(reserve::sold_out(0))).and_then(Result::ok));

/// The response kept for replays of a definite outcome; `None` for a
/// retryable failure, which is never stored.
fn stored_response(
    result: &Result<Receipt, OrderError>,
) -> Option<Result<StoredResponse, serde_json::Error>> {
    match result {
        Ok(receipt) => {
            Some(serde_json::to_string(receipt).map(|body| StoredResponse { status: 201, body }))
        }
        Err(error) if !error.retryable => {
            Some(serde_json::to_string(error).map(|body| StoredResponse {
                status: error.code.http_status(),
                body,
            }))
        }
        Err(_) => None,
    }
}

fn refuse(error: OrderError) -> Placement {
    Placement {
        result: Err(error),
        replayed: false,
    }
}

fn replay(stored: &StoredResponse) -> Placement {
    let unreadable = |e: serde_json::Error| {
        tracing::error!(error = %e, status = stored.status, "a stored response does not parse");
        OrderError::new(ErrorCode::Internal, "stored response unreadable")
    };
    let result = if stored.status == 201 {
        serde_json::from_str::<Receipt>(&stored.body).map_err(unreadable)
    } else {
        Err(serde_json::from_str::<OrderError>(&stored.body).unwrap_or_else(unreadable))
    };
    Placement {
        result,
        replayed: true,
    }
}

fn key_reused() -> OrderError {
    OrderError::new(
        ErrorCode::IdempotencyKeyReused,
        "this Idempotency-Key was already used with a different request",
    )
}

fn unavailable() -> OrderError {
    OrderError::new(
        ErrorCode::Unavailable,
        "the shop is busy; nothing was ordered, try again",
    )
}

fn ledger_error(refusal: LedgerRefusal) -> OrderError {
    match refusal {
        LedgerRefusal::SoldOut { available } => reserve::sold_out(available),
        LedgerRefusal::LimitExceeded { limit, already } => OrderError::new(
            ErrorCode::LimitExceeded,
            format!("at most {limit} per buyer; you already have {already}"),
        ),
        LedgerRefusal::UnknownItem => reserve::unknown_item(),
        LedgerRefusal::Conflict { attempts } => OrderError::new(
            ErrorCode::StockConflict,
            format!("too many buyers at once ({attempts} attempts); try again"),
        ),
        LedgerRefusal::Database(e) => {
            tracing::error!(error = %e, "ledger write failed");
            unavailable()
        }
    }
}
