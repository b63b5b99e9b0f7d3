//! What is known about an attempt, by its key: the answer of
//! `GET /api/orders/by-key/{key}` and of the Buy button's lookup after a
//! reload.
//!
//! The orders table first: a key that has an order always reads as that
//! order, whatever a record store says. Then the records: a stored refusal
//! reads as failed, a claim whose lease runs as in progress. A claim whose
//! owner's lease ran out reads as unknown (its order, had it committed,
//! would be in the orders table), so the browser may submit it again.

use crate::db::{Database, orders};
use crate::records::{KeyScope, Record, Records, RecordsAt};
use app::domain::{BuyerId, IdempotencyKey};
use app::model::KeyOutcome;

/// Reads what is known about keys.
pub struct Lookup {
    db: Database,
    records: Records,
}

impl Lookup {
    pub fn new(db: Database, records: Records) -> Self {
        Self { db, records }
    }

    /// Whether Redis keeps records beside the database's.
    pub fn redis_records(&self) -> bool {
        self.records.redis.is_some()
    }

    /// # Errors
    /// `Err(())` when the orders table cannot be read (the cause is logged).
    pub async fn outcome(&self, buyer: &BuyerId, key: &IdempotencyKey) -> Result<KeyOutcome, ()> {
        outcome_by_key(&self.db, &self.records, buyer, key).await
    }
}

async fn outcome_by_key(
    db: &Database,
    records: &Records,
    buyer: &BuyerId,
    key: &IdempotencyKey,
) -> Result<KeyOutcome, ()> {
    match orders::by_key(db, buyer, key).await {
        Ok(Some(order)) => {
            return Ok(KeyOutcome::Order {
                order: order.receipt,
            });
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "order lookup failed");
            return Err(());
        }
    }
    let scope = KeyScope {
        buyer: buyer.clone(),
        key: key.clone(),
    };
    let now = crate::db::now_ms();
    let mut stores = Vec::with_capacity(2);
    if records.redis.is_some() {
        stores.push(records.at(RecordsAt::Redis));
    }
    stores.push(records.at(RecordsAt::Database));
    let mut running = false;
    for store in stores {
        match store.lookup(&scope, now).await {
            Ok(Some(Record::Done(stored))) => {
                return Ok(match stored.replay().result {
                    Ok(order) => KeyOutcome::Order { order },
                    Err(error) => KeyOutcome::Failed { error },
                });
            }
            Ok(Some(Record::Running)) => running = true,
            Ok(Some(Record::Abandoned) | None) => {}
            Err(e) => {
                tracing::warn!(error = %e, store = store.kind(), "idempotency lookup failed; asking the other records");
            }
        }
    }
    Ok(if running {
        KeyOutcome::InProgress
    } else {
        KeyOutcome::Unknown
    })
}
