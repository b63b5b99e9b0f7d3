//! Every refusal the pipeline can give, and the one gate each passes.
//!
//! # The gate
//!
//! A key that has an order always answers that order. So no refusal (sold
//! out, over the limit, unknown item, a stored refusal replayed) is answered
//! or stored for a key without one of these:
//!
//! - the claim's proof ([`Proof::NoOrder`]) that the key has no order and
//!   that no other attempt can commit one while this one runs: Redis
//!   records whose buyer marker is of the current generation (see
//!   [`crate::records::generation`]), or database records on a server that
//!   keeps no others;
//! - else a read of the orders table (and of the refusals the database
//!   keeps), right before answering: an order found there is answered
//!   instead (201, replayed), or the key is reported reused when that order
//!   has another payload.
//!
//! A sold-out flood therefore costs the database nothing: its claims are
//! proven. The reads happen only for attempts that could not be proven
//! (a claim taken over after its lease, a store that lost its data, orders
//! going around Redis).
//!
//! # After Redis loses a buyer's records
//!
//! An attempt that claimed a key before the loss may still be running, and
//! its claim is gone. So for one lease after the buyer's answers are loaded
//! again, a new key's claim is [`Proof::Unsettled`]: a refusal that a new
//! decision might not repeat is answered "try again" and not stored (a
//! settled sell-out still stands), and the ledger commits no order later
//! than [`crate::records::COMMIT_WITHIN`] after its claim. Once the lease has passed, every attempt from before
//! the loss has committed or never will, and claims prove again.
//!
//! # Keeping refusals
//!
//! A definite refusal is stored before it is answered. Redis alone keeps a
//! refusal that a new decision would repeat word for word (no unit left and
//! no hold that could give one back, with the database's stock at zero too:
//! see [`crate::reservation::settled`]; or no such item); every other
//! definite refusal is also kept in the database, so losing Redis cannot
//! turn it into a different answer later.

use crate::db::{Database, orders};
use crate::records::{
    KeyScope, RecordError, RecordsAt, RequestHash, StoredResponse, sql::SqlRecords,
};
use app::domain::{BuyerId, IdempotencyKey};
use app::model::{ErrorCode, OrderError, Receipt};
use std::sync::Arc;

pub use crate::records::Proof;

/// Why an attempt did not produce an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Fewer units than asked are left. `settled`: none left, no hold that
    /// could give one back, and none in the database's stock, so a new
    /// decision would say the same.
    SoldOut {
        available: i64,
        settled: bool,
    },
    /// The buyer would exceed the item's per-buyer limit.
    LimitExceeded {
        limit: Option<i64>,
        already: i64,
    },
    UnknownItem,
    /// Version conflicts on every attempt.
    StockConflict {
        attempts: u32,
    },
    /// A store or the database failed and nothing was ordered: the same key
    /// may be tried again.
    Unavailable,
    /// The buyer's records were lost by Redis and loaded again less than a
    /// lease ago: an attempt from before may still order under this key, so
    /// no refusal is final yet.
    RecordsSettling,
    /// The order's COMMIT went unacknowledged and the orders table could not
    /// be read: it may or may not exist. The same key may be tried again; its
    /// next attempt asks the orders table before anything else.
    OutcomeUnknown,
    /// Another attempt with this key is running.
    InProgress,
    /// The key was used with another payload.
    KeyReused,
    /// The buyer orders too fast.
    RateLimited {
        retry_in_ms: u128,
    },
    /// The sale opens later: retry then.
    SaleNotStarted {
        starts_in_ms: i64,
    },
    SaleEnded,
    /// The item has a waiting room and no pass came with the order.
    PassRequired,
    /// The pass is another buyer's or item's, expired, or used.
    PassInvalid,
}

/// Where a stored refusal is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keeping {
    /// Not stored: retryable.
    Never,
    /// In the claim's store.
    ClaimStore,
    /// In the claim's store and in the database.
    Durably,
}

impl Refusal {
    /// The `{code, message, retryable}` the buyer sees.
    pub fn error(&self) -> OrderError {
        match self {
            Self::SoldOut { available, .. } if *available > 0 => {
                OrderError::new(ErrorCode::SoldOut, format!("only {available} left"))
            }
            Self::SoldOut { .. } => OrderError::new(ErrorCode::SoldOut, "sold out"),
            Self::LimitExceeded {
                limit: Some(limit),
                already,
            } => OrderError::new(
                ErrorCode::LimitExceeded,
                format!("at most {limit} per buyer; you already have {already}"),
            ),
            Self::LimitExceeded {
                limit: None,
                already,
            } => OrderError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "this item allows a limited quantity per buyer; you already have {already}"
                ),
            ),
            Self::UnknownItem => OrderError::new(ErrorCode::UnknownItem, "no such item"),
            Self::StockConflict { attempts } => OrderError::new(
                ErrorCode::StockConflict,
                format!("too many buyers at once ({attempts} attempts); try again"),
            ),
            Self::Unavailable => OrderError::new(
                ErrorCode::Unavailable,
                "the shop is busy; nothing was ordered, try again",
            ),
            Self::RecordsSettling => OrderError::new(
                ErrorCode::Unavailable,
                "the shop is recovering this buyer's recent orders; try again in a few seconds with the same key",
            )
            .retry_after(2),
            Self::OutcomeUnknown => OrderError::new(
                ErrorCode::Unavailable,
                "the shop could not confirm this order yet; try again with the same key to learn its outcome",
            ),
            Self::InProgress => OrderError::new(
                ErrorCode::RequestInProgress,
                "a request with this Idempotency-Key is still running",
            ),
            Self::KeyReused => OrderError::new(
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was already used with a different request",
            ),
            Self::SaleNotStarted { starts_in_ms } => {
                let secs = u64::try_from(*starts_in_ms)
                    .unwrap_or(0)
                    .div_ceil(1000)
                    .max(1);
                OrderError::new(
                    ErrorCode::SaleNotStarted,
                    format!("the sale starts in {secs} s"),
                )
                .retry_after(secs)
            }
            Self::SaleEnded => OrderError::new(ErrorCode::SaleEnded, "the sale has ended"),
            Self::PassRequired => OrderError::new(
                ErrorCode::QueuePassRequired,
                "this item has a waiting room: join it and order with its pass (Queue-Pass)",
            ),
            Self::PassInvalid => OrderError::new(
                ErrorCode::QueuePassInvalid,
                "this pass is not valid for this buyer and item (another's, expired or used)",
            ),
            Self::RateLimited { retry_in_ms } => OrderError::new(
                ErrorCode::RateLimited,
                format!(
                    "too many order attempts; try again in {} ms",
                    (*retry_in_ms).max(1)
                ),
            ),
        }
    }

    /// Whether the same attempt could succeed later (never stored).
    pub fn is_retryable(&self) -> bool {
        self.error().retryable
    }

    pub fn keeping(&self) -> Keeping {
        match self {
            _ if self.is_retryable() => Keeping::Never,
            Self::KeyReused => Keeping::Never,
            Self::SoldOut {
                available: 0,
                settled: true,
            }
            | Self::UnknownItem
            | Self::SaleEnded
            | Self::PassRequired
            | Self::PassInvalid => Keeping::ClaimStore,
            _ => Keeping::Durably,
        }
    }

    /// The public code (`sold_out`, ...), the outcome label of metrics.
    pub fn code(&self) -> ErrorCode {
        self.error().code
    }
}

/// What the database holds for a key that the claim could not vouch for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Truth {
    /// Nothing: the refusal stands.
    Nothing,
    /// An order with this attempt's payload: answer it.
    Order(Receipt),
    /// A refusal the database kept for this payload: answer it again.
    Stored(StoredResponse),
    /// An order or a kept refusal with another payload.
    OtherPayload,
}

/// The gate: reads the truth about a key from the database when the
/// claim proved nothing.
pub struct Gate {
    db: Database,
    sql: Arc<SqlRecords>,
}

impl Gate {
    pub fn new(db: Database, sql: Arc<SqlRecords>) -> Self {
        Self { db, sql }
    }

    /// What stands for an attempt about to be refused: nothing to read when
    /// `proof` holds; else the orders table, then (when the claim's records
    /// were Redis) the refusals the database keeps.
    ///
    /// # Errors
    /// The database cannot be read: the refusal cannot be answered.
    pub async fn truth(
        &self,
        buyer: &BuyerId,
        key: &IdempotencyKey,
        hash: &RequestHash,
        proof: Proof,
        records: RecordsAt,
    ) -> Result<Truth, RecordError> {
        if proof == Proof::NoOrder {
            return Ok(Truth::Nothing);
        }
        if let Some(order) = orders::by_key(&self.db, buyer, key).await? {
            return Ok(if order.hash() == *hash {
                Truth::Order(order.receipt)
            } else {
                Truth::OtherPayload
            });
        }
        if records == RecordsAt::Database {
            // The claim read these records itself.
            return Ok(Truth::Nothing);
        }
        let scope = KeyScope {
            buyer: buyer.clone(),
            key: key.clone(),
        };
        Ok(
            match self.sql.kept_answer(&scope, crate::db::now_ms()).await? {
                None => Truth::Nothing,
                Some((kept, stored)) if kept == *hash => Truth::Stored(stored),
                Some(_) => Truth::OtherPayload,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_their_public_codes_and_retryability() {
        let cases = [
            (
                Refusal::SoldOut {
                    available: 0,
                    settled: true,
                },
                "sold_out",
                false,
            ),
            (Refusal::UnknownItem, "unknown_item", false),
            (
                Refusal::LimitExceeded {
                    limit: Some(2),
                    already: 2,
                },
                "limit_exceeded",
                false,
            ),
            (
                Refusal::StockConflict { attempts: 8 },
                "stock_conflict",
                true,
            ),
            (Refusal::Unavailable, "unavailable", true),
            (Refusal::OutcomeUnknown, "unavailable", true),
            (Refusal::RecordsSettling, "unavailable", true),
            (Refusal::InProgress, "request_in_progress", true),
            (Refusal::KeyReused, "idempotency_key_reused", false),
            (
                Refusal::RateLimited { retry_in_ms: 5 },
                "rate_limited",
                true,
            ),
        ];
        for (refusal, code, retryable) in cases {
            let error = refusal.error();
            assert_eq!(error.code.as_str(), code);
            assert_eq!(error.retryable, retryable, "{code}");
        }
    }

    #[test]
    fn only_answers_a_new_decision_would_repeat_stay_out_of_the_database() {
        let settled = Refusal::SoldOut {
            available: 0,
            settled: true,
        };
        assert_eq!(settled.keeping(), Keeping::ClaimStore);
        assert_eq!(Refusal::UnknownItem.keeping(), Keeping::ClaimStore);
        let held = Refusal::SoldOut {
            available: 0,
            settled: false,
        };
        assert_eq!(held.keeping(), Keeping::Durably, "held units may come back");
        let some_left = Refusal::SoldOut {
            available: 2,
            settled: true,
        };
        assert_eq!(some_left.keeping(), Keeping::Durably, "the count changes");
        let limit = Refusal::LimitExceeded {
            limit: Some(1),
            already: 1,
        };
        assert_eq!(limit.keeping(), Keeping::Durably);
        assert_eq!(Refusal::Unavailable.keeping(), Keeping::Never);
        assert_eq!(Refusal::KeyReused.keeping(), Keeping::Never);
    }

    #[test]
    fn a_sale_not_started_says_when_to_retry() {
        let error = Refusal::SaleNotStarted {
            starts_in_ms: 1_500,
        }
        .error();
        assert_eq!(error.retry_after_secs, Some(2));
        assert_eq!(error.code.http_status(), 409);
        assert_eq!(
            Refusal::SaleNotStarted { starts_in_ms: 1 }.keeping(),
            Keeping::Never
        );
    }

    #[test]
    fn the_sold_out_message_says_what_is_left() {
        let some = Refusal::SoldOut {
            available: 2,
            settled: false,
        };
        assert_eq!(some.error().message, "only 2 left");
    }
}
