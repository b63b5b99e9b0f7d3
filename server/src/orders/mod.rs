//! The order pipeline: every order, from the JSON API or the Buy button's
//! server function, crosses the same stages in this order.
//!
//! 1. **validate**: done before the pipeline is called: `OrderRequest`,
//!    `IdempotencyKey` and `BuyerId` cannot hold bad values.
//! 2. [`idempotency`]: claim the buyer's key, or replay/refuse.
//! 3. [`reserve`] (strategy A): take a hold in the reservation store; sold
//!    out and over-limit requests end here.
//! 4. [`ledger`]: the versioned SQL update and the order insert, retried with
//!    backoff on version conflicts.
//! 5. [`settle`]: confirm the hold when the order committed, release it
//!    otherwise.
//! 6. record the outcome for replays (definite outcomes only).
//!
//! Guarantees: a unit is sold at most once (`stock >= qty` in the update);
//! one intent gives at most one order (the unique index on
//! `orders (buyer, idempotency_key)`); a committed order is never reported
//! as failed; a hold is given back at most once.

pub mod idempotency;
pub mod ledger;
pub mod reserve;
pub mod settle;

use crate::config::Strategy;
use crate::hot_items::HotItems;
use crate::metrics::{self as m, Metrics};
use crate::reservation::{Hold, HoldDeadline, HoldToken};
use app::checkout::Placement;
use app::domain::{BuyerId, IdempotencyKey};
use app::model::{ErrorCode, KeyOutcome, OrderError, OrderRequest, Receipt};
use idempotency::{Claim, IdempotencyStore, KeyScope, Record, StoredResponse, request_hash};
use ledger::{Ledger, LedgerRefusal, Written};
use reserve::{ReserveFailure, ReserveStage};
use std::sync::Arc;
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
            Strategy::RedisThenDb => &self.redis_then_db,
            Strategy::DbOnly => &self.db_only,
        }
    }
}

pub struct OrderPipeline {
    default_strategy: Strategy,
    records: Records,
    /// Present when strategy A can run (it is the default, or per-request
    /// overrides are allowed).
    reservation: Option<ReserveStage>,
    ledger: Ledger,
    hold_ttl: Duration,
    metrics: Arc<Metrics>,
    hot_items: Arc<HotItems>,
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
        ledger: Ledger,
        hold_ttl: Duration,
        metrics: Arc<Metrics>,
        hot_items: Arc<HotItems>,
    ) -> Self {
        Self {
            default_strategy,
            records,
            reservation,
            ledger,
            hold_ttl,
            metrics,
            hot_items,
        }
    }

    pub fn strategy(&self) -> Strategy {
        self.default_strategy
    }

    /// Whether this pipeline can run `strategy` (A needs a reservation store).
    pub fn supports(&self, strategy: Strategy) -> bool {
        strategy == Strategy::DbOnly || self.reservation.is_some()
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
            Strategy::DbOnly
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
            let placement = self.place_inner(buyer, key, request, strategy).await;
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

    fn stage_timer(&self, stage: &'static str, strategy: Strategy) -> metrics::Histogram {
        self.metrics.histogram(
            m::STAGE_SECONDS,
            &[("stage", stage), ("strategy", strategy.label())],
        )
    }

    fn count_idempotency(&self, result: &'static str, strategy: Strategy) {
        self.metrics
            .counter(
                m::IDEMPOTENCY,
                &[("result", result), ("strategy", strategy.label())],
            )
            .increment(1);
    }

    async fn place_inner(
        &self,
        buyer: &BuyerId,
        key: &IdempotencyKey,
        request: OrderRequest,
        strategy: Strategy,
    ) -> Placement {
        let scope = KeyScope {
            buyer: buyer.clone(),
            key: key.clone(),
        };
        let hash = request_hash(&request);
        let records = self.records.of(strategy);

        let started = Instant::now();
        let claim = records
            .claim(&scope, &hash, crate::db::now_ms())
            .instrument(tracing::info_span!("idempotency", store = records.kind()))
            .await;
        self.stage_timer("idempotency", strategy)
            .record(started.elapsed());
        match claim {
            Ok(Claim::Claimed) => self.count_idempotency("new", strategy),
            Ok(Claim::Replay(stored)) => {
                self.count_idempotency("replay", strategy);
                return replay(&stored);
            }
            Ok(Claim::InProgress) => {
                self.count_idempotency("in_progress", strategy);
                return refuse(OrderError::new(
                    ErrorCode::RequestInProgress,
                    "a request with this Idempotency-Key is still running",
                ));
            }
            Ok(Claim::KeyReused) => {
                self.count_idempotency("mismatch", strategy);
                return refuse(key_reused());
            }
            Err(e) => {
                self.count_idempotency("error", strategy);
                tracing::error!(error = %e, "idempotency store failed");
                // The claim may have been written before the answer was lost:
                // drop it, so a retry is not told "in progress" for a lease.
                if let Err(e) = records.abandon(&scope, &hash).await {
                    tracing::warn!(error = %e, "dropping a possibly written claim failed; it expires with its lease");
                }
                return refuse(unavailable());
            }
        }

        let outcome = self.run_stages(buyer, key, request, strategy).await;

        let (result, replayed) = match outcome {
            Outcome::Created(receipt) => (Ok(receipt), false),
            Outcome::AlreadyOrdered(receipt)
                if receipt.item_id == request.item_id && receipt.qty == request.qty =>
            {
                (Ok(receipt), true)
            }
            Outcome::AlreadyOrdered(_) => (Err(key_reused()), false),
            Outcome::Refused(error) => (Err(error), false),
        };
        self.record(records.as_ref(), &scope, &hash, &result).await;
        Placement { result, replayed }
    }

    /// Stages 3 to 5.
    async fn run_stages(
        &self,
        buyer: &BuyerId,
        key: &IdempotencyKey,
        request: OrderRequest,
        strategy: Strategy,
    ) -> Outcome {
        let item = request.item_id;
        let label = strategy.label();
        let token = HoldToken::new(buyer, key);
        let reservation = match strategy {
            Strategy::RedisThenDb => self.reservation.as_ref(),
            Strategy::DbOnly => None,
        };
        let held = match reservation {
            None => {
                self.metrics
                    .counter(
                        m::RESERVATIONS,
                        &[("result", "skipped"), ("strategy", label)],
                    )
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
                self.stage_timer("reserve", strategy)
                    .record(started.elapsed());
                match reserved {
                    Ok(held_by) => Some((stage, held_by)),
                    Err(ReserveFailure::Refused(error)) => return Outcome::Refused(error),
                    Err(ReserveFailure::Store(e)) => {
                        tracing::error!(error = %e, "reservation store failed");
                        return Outcome::Refused(unavailable());
                    }
                    Err(ReserveFailure::Database(e)) => {
                        tracing::error!(error = %e, "loading the reservation counter failed");
                        return Outcome::Refused(unavailable());
                    }
                }
            }
        };

        let started = Instant::now();
        let written = self.ledger.write(buyer, key, request, label).await;
        self.stage_timer("ledger", strategy)
            .record(started.elapsed());

        let started = Instant::now();
        let settle_span = tracing::info_span!("settle");
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
                    }
                    Outcome::AlreadyOrdered(receipt)
                }
                Err(refusal) => {
                    if let Some((stage, _)) = held {
                        settle::release(stage.store(), &self.metrics, item, &token).await;
                    }
                    Outcome::Refused(ledger_error(refusal))
                }
            }
        }
        .instrument(settle_span)
        .await;
        self.stage_timer("settle", strategy)
            .record(started.elapsed());
        outcome
    }

    /// Stores a definite outcome for replays; drops the claim otherwise.
    async fn record(
        &self,
        records: &dyn IdempotencyStore,
        scope: &KeyScope,
        hash: &str,
        result: &Result<Receipt, OrderError>,
    ) {
        let stored = match result {
            Ok(receipt) => {
                serde_json::to_string(receipt).map(|body| StoredResponse { status: 201, body })
            }
            Err(error) if !error.retryable => {
                serde_json::to_string(error).map(|body| StoredResponse {
                    status: error.code.http_status(),
                    body,
                })
            }
            Err(_) => {
                if let Err(e) = records.abandon(scope, hash).await {
                    tracing::warn!(error = %e, "dropping the idempotency claim failed; it expires with its lease");
                }
                return;
            }
        };
        let written = match stored {
            Ok(stored) => {
                records
                    .finish(scope, hash, &stored, crate::db::now_ms())
                    .await
            }
            Err(e) => Err(idempotency::RecordError(e.to_string())),
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
            Strategy::RedisThenDb => Strategy::DbOnly,
            Strategy::DbOnly => Strategy::RedisThenDb,
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
