//! Stage 3: the ledger, the versioned SQL update that makes an order true.
//!
//! [`versioned::Ledger`] runs the article's update (read `stock, version`;
//! `UPDATE ... WHERE id = ? AND version = ? AND stock >= ?`; insert the
//! order; commit; back off and retry on a conflict), one order at a time or
//! a batch of one item's orders in one transaction. Under load,
//! [`coalesce::Coalescer`] gathers each item's orders into such batches.
//! Both write through [`LedgerWrite`], so the stage does not care which.
//!
//! A commit whose acknowledgement is lost (the connection dropped after the
//! COMMIT left) is never run again blindly: the ledger waits for the item's
//! row lock (held until that transaction ends) and reads the orders table.
//! An order found there is this attempt's order; none means nothing was
//! written. When even that read fails, the outcome is *in doubt*: the buyer
//! hears "try again" and the hold stays until the orders table can be read.
//!
//! No order commits later than its claim's lease allows
//! ([`crate::records::COMMIT_WITHIN`]): an attempt that stalled that long
//! rolls back and the buyer hears "try again", so a replay that takes the
//! claim over, or that Redis's reloaded records prove new, never races it.
//!
//! The sale window is checked again with the database's clock, and an item
//! with a waiting room is sold only to orders that went through the
//! reservation store (which checked their pass): while the breaker keeps
//! Redis out, such orders hear "try again". Every order created here enters
//! its first status (`confirmed`, or `awaiting_payment` with a payment
//! window); an order that takes units an expiry returned stops their
//! [`ResaleClock`].
//!
//! An order about to commit around Redis (the breaker is open, or the
//! attempt asked for strategy B) first takes the records generation's
//! bypass lease, so no instance keeps vouching for Redis records that miss
//! it (see [`crate::records::generation`]).

pub mod coalesce;
pub mod versioned;

use super::strategy::Strategy;
use super::{Attempt, Route};
use crate::metrics::{self as m, Metrics};
use crate::payments::resale::ResaleClock;
use crate::records::generation::RecordsGeneration;
use app::domain::{BuyerId, IdempotencyKey};
use app::model::{OrderRequest, Receipt};
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// One order as the ledger writes it.
#[derive(Debug, Clone)]
pub struct LedgerOrder {
    pub buyer: BuyerId,
    pub key: IdempotencyKey,
    pub request: OrderRequest,
    /// For the metrics label.
    pub strategy: Strategy,
    /// The waiting-room pass it was placed with, kept with the order.
    pub pass: Option<String>,
    /// Whether a reservation was taken for it (and with it, its pass
    /// checked): an item with a waiting room is sold only that way.
    pub reserved: bool,
    /// No COMMIT after this: its claim's lease is running out
    /// ([`crate::records::COMMIT_WITHIN`]).
    pub commit_by: Instant,
}

/// A committed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    Created(Receipt),
    /// The (buyer, key) already had this order: nothing new was written.
    AlreadyOrdered(Receipt),
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerRefusal {
    #[error("sold out ({available} left)")]
    SoldOut { available: i64 },
    #[error("over the per-buyer limit")]
    LimitExceeded { limit: i64, already: i64 },
    #[error("unknown item")]
    UnknownItem,
    #[error("version conflicts on every attempt")]
    Conflict { attempts: u32 },
    /// By the database's clock.
    #[error("the sale has not started")]
    NotStarted { starts_in_ms: i64 },
    #[error("the sale has ended")]
    Ended,
    /// The item has a waiting room, whose passes only the reservation
    /// store can check, and the order came without a reservation.
    #[error("the waiting room needs the reservation store")]
    WaitingRoomUnavailable,
    /// The claim's lease ran out before the COMMIT: nothing was written.
    #[error("the claim's lease ran out before the commit")]
    LeaseRanOut,
    /// Nothing was written.
    #[error("database failure: {0}")]
    Database(#[from] sqlx::Error),
    /// A commit may have happened, and the orders table could not be read
    /// to find out.
    #[error("commit in doubt: {0}")]
    InDoubt(sqlx::Error),
}

/// Writes orders: the ledger itself, or the coalescer in front of it.
#[async_trait::async_trait]
pub trait LedgerWrite: Send + Sync + 'static {
    /// Writes one order, retrying version conflicts.
    ///
    /// # Errors
    /// Sold out, over the limit, unknown item, conflicts on every attempt, a
    /// database failure (nothing written) or a commit in doubt.
    async fn write(&self, order: LedgerOrder) -> Result<Written, LedgerRefusal>;
}

pub struct LedgerStage {
    writer: Arc<dyn LedgerWrite>,
    generation: Option<Arc<RecordsGeneration>>,
    metrics: Arc<Metrics>,
    /// Present when orders have a payment deadline.
    resale: Option<Arc<ResaleClock>>,
}

impl LedgerStage {
    /// `generation` is present when Redis keeps records beside the
    /// database's: orders around Redis then take its bypass lease.
    pub fn new(
        writer: Arc<dyn LedgerWrite>,
        generation: Option<Arc<RecordsGeneration>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            writer,
            generation,
            metrics,
            resale: None,
        }
    }

    /// Orders created here stop the clock of units an expiry returned.
    #[must_use]
    pub fn with_resale_clock(mut self, resale: Option<Arc<ResaleClock>>) -> Self {
        self.resale = resale;
        self
    }

    /// # Errors
    /// As [`LedgerWrite::write`].
    pub async fn run(
        &self,
        attempt: &Attempt,
        route: &Route,
        reserved: bool,
        commit_by: Instant,
    ) -> Result<Written, LedgerRefusal> {
        let started = Instant::now();
        let written = async {
            if route.around_redis()
                && let Some(generation) = &self.generation
            {
                generation.lease_for_bypass().await?;
            }
            self.writer
                .write(LedgerOrder {
                    buyer: attempt.buyer.clone(),
                    key: attempt.key.clone(),
                    request: attempt.request,
                    strategy: route.strategy,
                    pass: attempt.pass.as_ref().map(|p| p.as_str().to_owned()),
                    reserved,
                    commit_by,
                })
                .await
        }
        .instrument(tracing::info_span!("ledger"))
        .await;
        self.metrics
            .stage_took("ledger", route.strategy.label(), started.elapsed());
        if let Ok(Written::Created(receipt)) = &written {
            self.metrics
                .counter(m::ORDER_TRANSITIONS, &[("to", receipt.status.as_str())])
                .increment(1);
            if let Some(resale) = &self.resale {
                resale.sold(receipt.item_id, i64::from(receipt.qty.get()));
            }
        }
        written
    }
}
