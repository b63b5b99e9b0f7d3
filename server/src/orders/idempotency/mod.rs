//! Stage 1: the buyer-scoped idempotency record.
//!
//! Modelled on Stripe's Idempotency-Key and the IETF httpapi draft. The first
//! request with a key claims it and runs; a replay with the same payload gets
//! the stored response again; the same key with another payload is refused;
//! a replay while the first still runs is told so (409, Retry-After). A claim
//! whose server died is taken over after its lease. Keys are scoped to the
//! buyer, so one buyer can never read another's receipt.
//!
//! Only definite outcomes are stored (an order, sold out, limit, unknown
//! item). A retryable failure (conflict, unavailable) drops the claim so the
//! same key can run again: storing it would turn a retry into a replay of the
//! failure.
//!
//! Two stores: [`redis::RedisRecords`] when Redis carries the reservation
//! layer (strategy A keeps the database out of requests Redis turns away),
//! [`sql::SqlRecords`] otherwise. Either way the unique index on
//! `orders (buyer, idempotency_key)` is the last word on duplicates.

pub mod redis;
pub mod sql;

use app::domain::{BuyerId, IdempotencyKey};
use app::model::OrderRequest;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::time::Duration;

/// How long a claim stays exclusive before a replay may take it over. A
/// claim outlives its request only when that request died or its store call
/// failed after writing; the lease bounds how long its replays hear "in
/// progress". Taking over a claim whose request is in fact still running is
/// safe: both runs share the hold token and the unique index on
/// `orders (buyer, idempotency_key)` lets only one order exist.
pub const CLAIM_LEASE: Duration = Duration::from_secs(10);

/// A key as seen by one buyer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyScope {
    pub buyer: BuyerId,
    pub key: IdempotencyKey,
}

/// The response stored for replays: the HTTP status and the JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
}

/// The answer of [`IdempotencyStore::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This request owns the key: run it.
    Claimed,
    /// An earlier request finished: answer this again.
    Replay(StoredResponse),
    /// An earlier request with this key is still running.
    InProgress,
    /// The key was used with another payload.
    KeyReused,
    /// The key was new and now holds the answer given with the claim.
    Answered,
}

/// What is known about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Running,
    Done(StoredResponse),
}

#[derive(Debug, thiserror::Error)]
#[error("idempotency store failed: {0}")]
pub struct RecordError(pub String);

impl From<sqlx::Error> for RecordError {
    fn from(e: sqlx::Error) -> Self {
        Self(e.to_string())
    }
}

impl From<::redis::RedisError> for RecordError {
    fn from(e: ::redis::RedisError) -> Self {
        Self(e.to_string())
    }
}

/// The fingerprint of a payload: a replay must match it exactly.
pub fn request_hash(request: &OrderRequest) -> String {
    let digest = Sha256::digest(format!(
        "order:v1:{}:{}",
        request.item_id,
        request.qty.get()
    ));
    let mut hex = String::with_capacity(2 * digest.len());
    for byte in digest {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

#[async_trait::async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    fn kind(&self) -> &'static str;

    /// Claims the key for this payload, or reports an earlier request.
    ///
    /// With `answer`, a refusal decided before the request runs (an item
    /// known to be sold out), a key never seen before is stored as done with
    /// that answer in the same step ([`Claim::Answered`]); a key with a
    /// history is reported as usual, and an abandoned claim is taken over to
    /// run, since its first attempt may have ordered.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn claim(
        &self,
        scope: &KeyScope,
        hash: &str,
        now_ms: i64,
        answer: Option<&StoredResponse>,
    ) -> Result<Claim, RecordError>;

    /// Stores the definite response of a claimed key.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn finish(
        &self,
        scope: &KeyScope,
        hash: &str,
        response: &StoredResponse,
        now_ms: i64,
    ) -> Result<(), RecordError>;

    /// Drops a claim whose request may be retried with the same key.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn abandon(&self, scope: &KeyScope, hash: &str) -> Result<(), RecordError>;

    /// What is known about the key, if anything (expired records are gone).
    ///
    /// # Errors
    /// The store is unreachable.
    async fn lookup(&self, scope: &KeyScope, now_ms: i64) -> Result<Option<Record>, RecordError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use app::domain::{ItemId, Quantity};

    fn request(item: i64, qty: i64) -> OrderRequest {
        OrderRequest {
            item_id: ItemId::new(item).expect("id"),
            qty: Quantity::new(qty).expect("qty"),
        }
    }

    #[test]
    fn the_hash_tells_payloads_apart_and_is_stable() {
        assert_eq!(request_hash(&request(1, 2)), request_hash(&request(1, 2)));
        assert_ne!(request_hash(&request(1, 2)), request_hash(&request(1, 3)));
        assert_ne!(request_hash(&request(12, 1)), request_hash(&request(1, 2)));
        assert_ne!(request_hash(&request(11, 2)), request_hash(&request(1, 1)));
        assert_eq!(request_hash(&request(1, 1)).len(), 64);
    }
}
