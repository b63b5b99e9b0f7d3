//! Stage 4: confirm or release the hold, to match what the ledger did.
//!
//! After the ledger committed, `confirm` ends the hold and the units stay
//! taken. When the ledger refused or failed, `release` gives the hold back
//! (idempotent: a second release finds nothing). Neither can undo a committed
//! order: a failing confirm is retried in the background (left alone, the
//! reaper would give the units of a sold order back at the hold's deadline),
//! never turned into an error for a buyer whose order exists. Confirming is
//! idempotent, and a confirm that arrives after the reaper took the hold back
//! takes its units again, so a late retry still converges.
//!
//! When the ledger cannot say whether the order committed (its COMMIT went
//! unacknowledged and the orders table could not be read), the hold is
//! neither confirmed nor released: a background task asks the orders table
//! until it answers and then confirms; an order that never committed leaves
//! its hold to the reaper, or to a retry of the same intent, which finds it.
//!
//! Background work is spawned on the pipeline's task tracker, so shutting
//! down waits for it. Failed store calls count against the Redis breaker.

use super::ledger::versioned::Ledger;
use super::ledger::{LedgerRefusal, Written};
use super::refusal::Refusal;
use super::reserve::{Held, HeldBy};
use super::{Attempt, Outcome, Route};
use crate::metrics::{self as m, Metrics};
use crate::reservation::breaker::{RedisCall, Ticket};
use crate::reservation::guard::RedisGuard;
use crate::reservation::memo::SoldOutMemo;
use crate::reservation::{Confirmed, ReservationStore};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Background confirm retries: 50 ms doubling to 5 s, 12 attempts (about a
/// minute in all).
const CONFIRM_RETRIES: u32 = 12;
/// How long an order in doubt is asked after, at most (the hold's deadline
/// has long passed by then; the reaper and reconciliation take over).
const RESOLVE_RETRIES: u32 = 20;

#[derive(Clone)]
pub struct SettleStage {
    store: Option<Arc<dyn ReservationStore>>,
    memo: Option<Arc<SoldOutMemo>>,
    guard: Option<Arc<RedisGuard>>,
    ledger: Arc<Ledger>,
    metrics: Arc<Metrics>,
    tasks: TaskTracker,
}

impl SettleStage {
    pub fn new(
        store: Option<Arc<dyn ReservationStore>>,
        memo: Option<Arc<SoldOutMemo>>,
        guard: Option<Arc<RedisGuard>>,
        ledger: Arc<Ledger>,
        metrics: Arc<Metrics>,
        tasks: TaskTracker,
    ) -> Self {
        Self {
            store,
            memo,
            guard,
            ledger,
            metrics,
            tasks,
        }
    }

    pub async fn run(
        &self,
        attempt: &Attempt,
        route: &Route,
        held: Option<Held>,
        written: Result<Written, LedgerRefusal>,
    ) -> Outcome {
        let started = Instant::now();
        let outcome = self
            .settle(attempt, route, held, written)
            .instrument(tracing::info_span!("settle"))
            .await;
        self.metrics
            .stage_took("settle", route.strategy.label(), started.elapsed());
        outcome
    }

    async fn settle(
        &self,
        attempt: &Attempt,
        route: &Route,
        held: Option<Held>,
        written: Result<Written, LedgerRefusal>,
    ) -> Outcome {
        let ticket = route.redis_ticket();
        match written {
            Ok(Written::Created(receipt)) => {
                if let Some(held) = held {
                    self.confirm(held, ticket).await;
                }
                Outcome::Ordered(receipt)
            }
            Ok(Written::AlreadyOrdered(receipt)) => {
                if let Some(held) = held {
                    // A hold of an earlier attempt belongs to that order; a
                    // hold this attempt took is surplus.
                    match held.by {
                        HeldBy::EarlierAttempt => self.confirm(held, ticket).await,
                        HeldBy::ThisAttempt => self.release(held, ticket).await,
                    }
                }
                Outcome::AlreadyOrdered(receipt)
            }
            Err(LedgerRefusal::InDoubt(e)) => {
                tracing::error!(error = %e, "order in doubt: its hold waits until the orders table answers");
                if let Some(held) = held {
                    self.resolve_later(attempt.clone(), held, ticket);
                }
                Outcome::Refused(Refusal::OutcomeUnknown)
            }
            Err(refusal) => {
                if let Some(held) = held {
                    self.release(held, ticket).await;
                }
                Outcome::Refused(refusal_of(refusal))
            }
        }
    }

    fn report(&self, ticket: Option<Ticket>, call: RedisCall) {
        if let (Some(guard), Some(ticket)) = (&self.guard, ticket) {
            guard.report(ticket, call);
        }
    }

    async fn confirm(&self, held: Held, ticket: Option<Ticket>) {
        let Some(store) = &self.store else {
            return;
        };
        let result = match store.confirm(held.item, &held.token).await {
            Ok(confirmed) => {
                self.report(ticket, RedisCall::Answered);
                match confirmed {
                    Confirmed::HoldEnded => "hold_ended",
                    Confirmed::TakenAfterReap => {
                        tracing::warn!(item = %held.item, "order committed after its hold expired; units taken again");
                        "taken_after_reap"
                    }
                    Confirmed::NoHold => {
                        tracing::warn!(item = %held.item, "order committed but no hold was known (reservation store flushed?)");
                        "no_hold"
                    }
                }
            }
            Err(e) => {
                self.report(ticket, RedisCall::Failed);
                tracing::warn!(item = %held.item, error = %e, "confirm failed; retrying in the background");
                let stage = self.clone();
                self.tasks
                    .spawn(async move { stage.retry_confirm(held).await });
                "error"
            }
        };
        self.metrics
            .counter(m::CONFIRMS, &[("result", result)])
            .increment(1);
    }

    async fn retry_confirm(&self, held: Held) {
        let Some(store) = &self.store else {
            return;
        };
        let mut pause = Duration::from_millis(50);
        for _ in 0..CONFIRM_RETRIES {
            tokio::time::sleep(pause).await;
            match store.confirm(held.item, &held.token).await {
                Ok(outcome) => {
                    tracing::info!(item = %held.item, ?outcome, "confirm succeeded on retry");
                    self.metrics
                        .counter(m::CONFIRMS, &[("result", "retried")])
                        .increment(1);
                    return;
                }
                Err(e) => tracing::warn!(item = %held.item, error = %e, "confirm retry failed"),
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
        tracing::error!(item = %held.item, token = %held.token, "confirm gave up; the counter stays above the database until reconciled");
    }

    async fn release(&self, held: Held, ticket: Option<Ticket>) {
        let Some(store) = &self.store else {
            return;
        };
        let result = match store.release(held.item, &held.token).await {
            Ok(given_back) => {
                self.report(ticket, RedisCall::Answered);
                if given_back {
                    // Units came back through this instance: offer them now.
                    if let Some(memo) = &self.memo {
                        memo.forget(held.item);
                    }
                    "given_back"
                } else {
                    "nothing_held"
                }
            }
            Err(e) => {
                self.report(ticket, RedisCall::Failed);
                tracing::error!(item = %held.item, error = %e, "release failed; the reaper will give the hold back at its deadline");
                "error"
            }
        };
        self.metrics
            .counter(m::RELEASES, &[("result", result)])
            .increment(1);
    }

    /// Asks the orders table, with backoff, whether the order in doubt
    /// committed, and confirms its hold if it did.
    fn resolve_later(&self, attempt: Attempt, held: Held, ticket: Option<Ticket>) {
        let stage = self.clone();
        self.tasks.spawn(async move {
            let key = (attempt.buyer.clone(), attempt.key.clone());
            let mut pause = Duration::from_millis(100);
            for _ in 0..RESOLVE_RETRIES {
                tokio::time::sleep(pause).await;
                match stage
                    .ledger
                    .resolve_in_doubt(held.item, std::slice::from_ref(&key))
                    .await
                {
                    Ok(found) => {
                        if found.into_iter().next().flatten().is_some() {
                            tracing::info!(item = %held.item, "the order in doubt committed; confirming its hold");
                            stage.confirm(held, ticket).await;
                        } else {
                            tracing::info!(item = %held.item, "the order in doubt did not commit; its hold goes back at its deadline");
                        }
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "the orders table still cannot say"),
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            tracing::error!(item = %held.item, "gave up asking about an order in doubt; reconciliation will repair the counter");
        });
    }
}

/// What the buyer hears when the ledger did not write.
fn refusal_of(refusal: LedgerRefusal) -> Refusal {
    match refusal {
        LedgerRefusal::SoldOut { available } => Refusal::SoldOut {
            available: available.max(0),
            settled: available <= 0,
        },
        LedgerRefusal::LimitExceeded { limit, already } => Refusal::LimitExceeded {
            limit: Some(limit),
            already,
        },
        LedgerRefusal::UnknownItem => Refusal::UnknownItem,
        LedgerRefusal::Conflict { attempts } => Refusal::StockConflict { attempts },
        LedgerRefusal::NotStarted { starts_in_ms } => Refusal::SaleNotStarted { starts_in_ms },
        LedgerRefusal::Ended => Refusal::SaleEnded,
        LedgerRefusal::WaitingRoomUnavailable => {
            tracing::warn!(
                "an order for an item with a waiting room came around the reservation store"
            );
            Refusal::Unavailable
        }
        LedgerRefusal::LeaseRanOut => {
            tracing::warn!("an order stalled past its claim's lease and was rolled back");
            Refusal::Unavailable
        }
        LedgerRefusal::Database(e) => {
            tracing::error!(error = %e, "ledger write failed");
            Refusal::Unavailable
        }
        LedgerRefusal::InDoubt(e) => {
            tracing::error!(error = %e, "ledger write in doubt");
            Refusal::OutcomeUnknown
        }
    }
}
