//! The order pipeline: every order, from the JSON API or the Buy button's
//! server function, crosses the same stages in this order. (Its input was
//! validated before: `OrderRequest`, `IdempotencyKey` and `BuyerId` cannot
//! hold bad values.)
//!
//! 0. **admit** (here): the buyer's rate limit, and the route: which layers
//!    the attempt crosses ([`Strategy`], and the Redis breaker's word).
//! 1. [`idempotency`]: claim the buyer's key, or answer from what is known
//!    (replay, 409 in progress, 422 key reused); an item the sold-out memo
//!    knows to have nothing left is refused in the claim itself.
//! 2. [`reserve`] (strategy A): take a hold in the reservation store; sold
//!    out and over-limit requests end here.
//! 3. [`ledger`]: the versioned SQL update and the order insert, retried
//!    with backoff on version conflicts, batched per item under load.
//! 4. [`settle`]: confirm the hold when the order committed, release it
//!    otherwise.
//! 5. [`answer`]: store the definite outcome for replays and answer it;
//!    every refusal passes the gate in [`refusal`] first.
//!
//! Stages 2 to 5 run detached from the request: a client that hangs up
//! cannot leave a hold unsettled or a claim running. They are tracked, and
//! shutting down waits for them.
//!
//! Guarantees: a unit is sold at most once (`stock >= qty` in the update);
//! one intent gives at most one order (the unique index on
//! `orders (buyer, idempotency_key)`); a key that has an order always answers
//! that order; a hold is given back at most once.

pub mod answer;
pub mod idempotency;
pub mod ledger;
pub mod lookup;
pub mod refusal;
pub mod reserve;
pub mod settle;
pub mod strategy;

use crate::hot_items::HotItems;
use crate::metrics::{self as m, Metrics};
use crate::rate_limit::RateLimiter;
use crate::records::{RecordsAt, RequestHash};
use crate::reservation::breaker::{Admission, Ticket};
use crate::reservation::guard::RedisGuard;
use crate::reservation::queue::QueuePass;
use answer::AnswerStage;
use app::domain::{BuyerId, IdempotencyKey};
use app::model::{KeyOutcome, OrderError, OrderRequest, Receipt};
use app::ports::Placement;
use idempotency::{Claim, ClaimStage, ClaimedKey};
use ledger::LedgerStage;
use lookup::Lookup;
use refusal::Refusal;
use reserve::ReserveStage;
use settle::SettleStage;
use std::sync::Arc;
use std::time::Instant;
use strategy::Strategy;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// One attempt at an intent to buy: who, under which key, what, and how.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub buyer: BuyerId,
    pub key: IdempotencyKey,
    pub request: OrderRequest,
    pub strategy: Strategy,
    /// The waiting-room pass sent with the order (`Queue-Pass`), if any.
    pub pass: Option<QueuePass>,
}

impl Attempt {
    /// The fingerprint its replays must match.
    pub fn hash(&self) -> RequestHash {
        RequestHash::of(&self.request, self.pass.as_ref().map(QueuePass::as_str))
    }
}

/// How an attempt crosses the layers, decided once when it is admitted.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub strategy: Strategy,
    /// The breaker's word, when Redis is in play.
    pub redis: Option<Admission>,
    /// Where the attempt's idempotency record lives.
    pub records: RecordsAt,
    /// Whether the server keeps records in Redis (beside the database's).
    redis_records: bool,
}

/// What stage 2 does for a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveRoute {
    Run,
    /// Strategy A with the breaker open.
    Bypassed,
    /// Strategy B.
    Skipped,
}

impl Route {
    pub fn reserve(&self) -> ReserveRoute {
        match (self.strategy, self.redis) {
            (Strategy::LedgerOnly, _) => ReserveRoute::Skipped,
            (Strategy::ReserveFirst, Some(Admission::Bypass(_))) => ReserveRoute::Bypassed,
            (Strategy::ReserveFirst, _) => ReserveRoute::Run,
        }
    }

    /// Whether the reservation stage runs.
    pub fn reserves(&self) -> bool {
        self.reserve() == ReserveRoute::Run
    }

    /// The breaker ticket to report Redis calls with, when Redis is used.
    pub fn redis_ticket(&self) -> Option<Ticket> {
        match self.redis {
            Some(Admission::Use(ticket)) => Some(ticket),
            _ => None,
        }
    }

    /// Whether an order of this attempt commits without its key reaching
    /// the Redis records that other attempts trust.
    pub fn around_redis(&self) -> bool {
        self.redis_records && self.records == RecordsAt::Database
    }
}

/// What stages 2 to 4 produced.
#[derive(Debug)]
pub enum Outcome {
    /// This attempt's order committed.
    Ordered(Receipt),
    /// The key already had this order (an earlier attempt committed it).
    AlreadyOrdered(Receipt),
    Refused(Refusal),
}

/// The stages, in request order.
pub struct Stages {
    pub claim: ClaimStage,
    /// Present when strategy A can run (it is the default, or per-request
    /// overrides are allowed).
    pub reserve: Option<ReserveStage>,
    pub ledger: LedgerStage,
    pub settle: SettleStage,
    pub answer: AnswerStage,
}

/// What the pipeline is built from (see `startup`).
pub struct Parts {
    pub default_strategy: Strategy,
    pub stages: Stages,
    /// Around Redis, when Redis carries strategy A.
    pub guard: Option<Arc<RedisGuard>>,
    pub lookup: Lookup,
    pub rate_limiter: RateLimiter,
    pub hot_items: Arc<HotItems>,
    pub metrics: Arc<Metrics>,
    /// Tracks the detached stages and their background work.
    pub tasks: TaskTracker,
}

pub struct OrderPipeline {
    default_strategy: Strategy,
    stages: Stages,
    guard: Option<Arc<RedisGuard>>,
    lookup: Lookup,
    /// Whether Redis keeps records beside the database's.
    redis_records: bool,
    rate_limiter: RateLimiter,
    hot_items: Arc<HotItems>,
    metrics: Arc<Metrics>,
    tasks: TaskTracker,
}

impl OrderPipeline {
    pub fn new(parts: Parts) -> Self {
        Self {
            redis_records: parts.lookup.redis_records(),
            default_strategy: parts.default_strategy,
            stages: parts.stages,
            guard: parts.guard,
            lookup: parts.lookup,
            rate_limiter: parts.rate_limiter,
            hot_items: parts.hot_items,
            metrics: parts.metrics,
            tasks: parts.tasks,
        }
    }

    /// What is known about an attempt of this buyer with this key.
    ///
    /// # Errors
    /// `unavailable` when the orders table cannot be read.
    pub async fn outcome_by_key(
        &self,
        buyer: &BuyerId,
        key: &IdempotencyKey,
    ) -> Result<KeyOutcome, OrderError> {
        self.lookup
            .outcome(buyer, key)
            .await
            .map_err(|()| Refusal::Unavailable.error())
    }

    pub fn strategy(&self) -> Strategy {
        self.default_strategy
    }

    /// Whether this pipeline can run `strategy` (A needs a reservation store).
    pub fn supports(&self, strategy: Strategy) -> bool {
        strategy == Strategy::LedgerOnly || self.stages.reserve.is_some()
    }

    pub fn guard(&self) -> Option<&Arc<RedisGuard>> {
        self.guard.as_ref()
    }

    /// Where the default strategy keeps its records: `redis` or `database`.
    pub fn records_kind(&self) -> &'static str {
        match self.route_records(self.default_strategy, None) {
            RecordsAt::Redis => "redis",
            RecordsAt::Database => "database",
        }
    }

    /// Places one order for one intent to buy. A strategy this pipeline
    /// does not support (A without a store) runs as B.
    pub async fn place(self: &Arc<Self>, attempt: Attempt) -> Placement {
        let started = Instant::now();
        let mut attempt = attempt;
        if !self.supports(attempt.strategy) {
            attempt.strategy = Strategy::LedgerOnly;
        }
        let strategy = attempt.strategy;
        let span = tracing::info_span!(
            "order",
            buyer = %attempt.buyer,
            key = %attempt.key,
            item = %attempt.request.item_id,
            qty = attempt.request.qty.get(),
            strategy = strategy.label(),
        );
        let placement = self.place_admitted(attempt).instrument(span).await;
        let outcome = match (&placement.result, placement.replayed) {
            (Ok(_), false) => "created",
            (Ok(_), true) => "replayed",
            (Err(e), _) => e.code.as_str(),
        };
        self.metrics
            .counter(
                m::ORDERS,
                &[("outcome", outcome), ("strategy", strategy.label())],
            )
            .increment(1);
        self.metrics
            .histogram(m::ORDER_SECONDS, &[("strategy", strategy.label())])
            .record(started.elapsed());
        placement
    }

    async fn place_admitted(self: &Arc<Self>, attempt: Attempt) -> Placement {
        // Stage 0: admit.
        if let Err(wait) = self.rate_limiter.check(&attempt.buyer, Instant::now()) {
            return refuse(Refusal::RateLimited {
                retry_in_ms: wait.as_millis(),
            });
        }
        self.hot_items.record(attempt.request.item_id);
        let route = self.route(attempt.strategy);
        // Stage 1.
        let claimed = match self.stages.claim.run(&attempt, &route).await {
            Claim::Answered(placement) => return placement,
            Claim::Run(claimed) => claimed,
        };
        // Stages 2 to 5, detached: they finish even if the client hangs up.
        let pipeline = self.clone();
        let stages = self.tasks.spawn(
            async move { pipeline.run_claimed(attempt, route, claimed).await }.in_current_span(),
        );
        stages.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "the order's stages did not finish");
            refuse(Refusal::Unavailable)
        })
    }

    /// Stages 2 to 5.
    async fn run_claimed(&self, attempt: Attempt, route: Route, claimed: ClaimedKey) -> Placement {
        let outcome = match self.reserve(&attempt, &route).await {
            Err(refusal) => Outcome::Refused(refusal),
            Ok(held) => {
                let written = self
                    .stages
                    .ledger
                    .run(&attempt, &route, held.is_some(), claimed.commit_by)
                    .await;
                self.stages
                    .settle
                    .run(&attempt, &route, held, written)
                    .await
            }
        };
        let placement = self
            .stages
            .answer
            .run(&attempt, &route, claimed, outcome)
            .await;
        if route.reserve() == ReserveRoute::Bypassed
            && let Some(guard) = &self.guard
        {
            guard.after_bypass(attempt.request.item_id).await;
        }
        placement
    }

    /// Stage 2, or nothing when this server runs no reservation store.
    async fn reserve(
        &self,
        attempt: &Attempt,
        route: &Route,
    ) -> Result<Option<reserve::Held>, Refusal> {
        match &self.stages.reserve {
            Some(stage) => stage.run(attempt, route).await,
            None => {
                self.metrics
                    .counter(
                        m::RESERVATIONS,
                        &[("result", "skipped"), ("strategy", route.strategy.label())],
                    )
                    .increment(1);
                Ok(None)
            }
        }
    }

    fn route(&self, strategy: Strategy) -> Route {
        let redis = match (strategy, &self.guard) {
            (Strategy::ReserveFirst, Some(guard)) => Some(guard.admit()),
            _ => None,
        };
        Route {
            strategy,
            redis,
            records: self.route_records(strategy, redis),
            redis_records: self.redis_records,
        }
    }

    /// Strategy A keeps its records where its reservations are (Redis,
    /// unless the breaker keeps it out); everything else uses the
    /// database's.
    fn route_records(&self, strategy: Strategy, redis: Option<Admission>) -> RecordsAt {
        match (strategy, redis) {
            (Strategy::ReserveFirst, Some(Admission::Bypass(_))) => RecordsAt::Database,
            (Strategy::ReserveFirst, _) if self.redis_records => RecordsAt::Redis,
            _ => RecordsAt::Database,
        }
    }
}

fn refuse(refusal: Refusal) -> Placement {
    Placement {
        result: Err(refusal.error()),
        replayed: false,
    }
}
