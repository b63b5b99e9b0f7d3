//! Idempotency records: what stage 1 of the order pipeline
//! ([`crate::orders::idempotency`]) claims, and stage 5 stores.
//!
//! Modelled on Stripe's Idempotency-Key and the IETF httpapi draft. The first
//! attempt with a key claims it and runs; a replay with the same payload gets
//! the stored response again; the same key with another payload is refused;
//! a replay while the first still runs is told so (409, Retry-After). A claim
//! whose owner died is taken over after its lease, and only the claim's
//! current owner may finish or drop it. Keys are scoped to the buyer, so one
//! buyer can never read another's receipt.
//!
//! Only definite outcomes are stored (an order, sold out, limit, unknown
//! item). A retryable failure (conflict, unavailable) drops the claim so the
//! same key can run again: storing it would turn a retry into a replay of the
//! failure.
//!
//! Two stores: [`redis::RedisRecords`] when Redis carries the reservation
//! layer (strategy A keeps the database out of requests Redis turns away),
//! [`sql::SqlRecords`] otherwise ([`Records`] holds both). The orders table
//! is the last word: a claim says whether it *proves* that the key has no
//! order ([`Proof`]), and a refusal that rests on no proof is checked against
//! the orders table before it is answered (see [`crate::orders::refusal`]).

pub mod generation;
pub mod kept_refusals;
pub mod redis;
pub mod sql;

use app::domain::{BuyerId, IdempotencyKey};
use app::model::{ErrorCode, OrderError, OrderRequest, Receipt};
use app::ports::Placement;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// How long a claim stays exclusive before a replay may take it over. A
/// claim outlives its attempt only when that attempt's server died or its
/// store call failed after writing; the lease bounds how long its replays
/// hear "in progress". A takeover never proves anything: the first attempt
/// may have ordered.
pub const CLAIM_LEASE: Duration = Duration::from_secs(10);

/// An attempt commits its order within this time of its claim, or not at
/// all: the lease less a margin for the instances' clocks and the COMMIT's
/// own trip. Past the lease its claim may be taken over, or (after Redis
/// lost it) the buyer's reloaded records may prove the key new; an order
/// committed then could contradict the answer given meanwhile.
pub const COMMIT_WITHIN: Duration = Duration::from_secs(8);

/// A key as seen by one buyer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyScope {
    pub buyer: BuyerId,
    pub key: IdempotencyKey,
}

/// The fingerprint of a payload: a replay must match it exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHash(String);

impl RequestHash {
    /// The fingerprint of an order's payload: the item, the quantity and,
    /// for an item with a waiting room, the pass it is placed with (a new
    /// pass is a new request; retries of the same intent carry the same).
    pub fn of(request: &OrderRequest, pass: Option<&str>) -> Self {
        let text = match pass {
            None => format!("order:v1:{}:{}", request.item_id, request.qty.get()),
            Some(pass) => format!(
                "order:v1:{}:{}:pass:{pass}",
                request.item_id,
                request.qty.get()
            ),
        };
        // One write of the whole digest: a `{:02x}` per byte cost more than
        // the hash itself on a sold-out answer.
        Self(format!("{:x}", Sha256::digest(text)))
    }

    /// A hash as a store kept it.
    pub fn from_stored(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Who holds a claim: one random id per attempt. Finishing or dropping a
/// claim checks it, so an attempt whose claim was taken over cannot
/// overwrite or delete the new owner's. Drawn from the thread's seeded
/// CSPRNG, not the OS: every order attempt makes one, sold-out floods
/// included, and needs no `getrandom` system call for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseOwner(String);

impl LeaseOwner {
    pub fn new() -> Self {
        let mut text = uuid::Uuid::encode_buffer();
        Self(
            uuid::Uuid::from_u128(rand::random())
                .simple()
                .encode_lower(&mut text)
                .to_owned(),
        )
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for LeaseOwner {
    fn default() -> Self {
        Self::new()
    }
}

/// The response stored for replays: the HTTP status and the JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
}

impl StoredResponse {
    /// The response kept for replays of a definite outcome; `None` for a
    /// retryable failure, which is never stored.
    ///
    /// # Errors
    /// The receipt or error does not serialize.
    pub fn of(result: &Result<Receipt, OrderError>) -> Option<Result<Self, serde_json::Error>> {
        match result {
            Ok(receipt) => {
                Some(serde_json::to_string(receipt).map(|body| Self { status: 201, body }))
            }
            Err(error) if !error.retryable => Some(serde_json::to_string(error).map(|body| Self {
                status: error.code.http_status(),
                body,
            })),
            Err(_) => None,
        }
    }

    /// A record's fields as a store keeps them (`state`, `status`, `body`):
    /// the response when the record is done.
    pub fn from_fields(
        state: Option<&str>,
        status: Option<i64>,
        body: Option<String>,
    ) -> Option<Self> {
        match (state, status, body) {
            (Some("done"), Some(status), Some(body)) => Some(Self {
                status: u16::try_from(status).unwrap_or(500),
                body,
            }),
            _ => None,
        }
    }

    pub fn is_order(&self) -> bool {
        self.status == 201
    }

    /// Plays the stored response back.
    pub fn replay(&self) -> Placement {
        let unreadable = |e: serde_json::Error| {
            tracing::error!(error = %e, status = self.status, "a stored response does not parse");
            OrderError::new(ErrorCode::Internal, "stored response unreadable")
        };
        let result = if self.is_order() {
            serde_json::from_str::<Receipt>(&self.body).map_err(unreadable)
        } else {
            Err(serde_json::from_str::<OrderError>(&self.body).unwrap_or_else(unreadable))
        };
        Placement {
            result,
            replayed: true,
        }
    }
}

/// An answer the database keeps for a key: an order, or a refusal stored
/// durably. What a Redis store loads when it lost (or never had) a buyer's
/// records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableAnswer {
    pub key: IdempotencyKey,
    pub hash: RequestHash,
    pub response: StoredResponse,
}

/// Whether a claim proves that its key has no order and no stored answer,
/// and that no other attempt can make one while this one runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// Proven: a refusal may be answered without reading the orders table.
    NoOrder,
    /// Not proven (a takeover, a store that cannot vouch for its records):
    /// a refusal is checked against the orders table first.
    Unproven,
    /// Not proven, and not final yet: the buyer's records were loaded again
    /// (Redis lost them) less than a lease ago, so an attempt that claimed
    /// the key before the loss may still commit an order for it. A refusal
    /// that a new decision might not repeat is answered "try again", never
    /// stored; a settled sell-out stands.
    Unsettled,
}

/// The answer of [`RecordStore::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// This attempt owns the key: run it.
    Run(Proof),
    /// An earlier attempt finished: answer this again (`Proof` says whether
    /// the store can vouch that no order contradicts a stored refusal).
    Replay(StoredResponse, Proof),
    /// An earlier attempt with this key is still running.
    InProgress,
    /// The key was used with another payload; the stored answer, if done.
    KeyReused(Option<StoredResponse>, Proof),
    /// The key was new (proven) and now holds the answer given with the claim.
    Answered,
    /// The orders table has an order under this key (the store had no
    /// record for it): answer from the orders table.
    OrderExists,
    /// The store cannot vouch for this buyer's records (lost, expired, or
    /// from an older generation): load them from the database and claim again.
    LoadBuyer,
}

/// What is known about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Running, and its lease has not run out.
    Running,
    /// Running, but its owner's lease ran out: the owner died or stalled.
    Abandoned,
    Done(StoredResponse),
}

/// The answer of [`RecordStore::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Stored,
    /// The claim was taken over or is gone: nothing was written.
    NotOwner,
}

impl Finished {
    /// From how many records a store changed (1 or 0).
    pub fn from_count(changed: u64) -> Self {
        if changed == 1 {
            Self::Stored
        } else {
            Self::NotOwner
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
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

/// Where an attempt's record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordsAt {
    Redis,
    Database,
}

/// The server's record stores: the database's always (the embedded
/// default's and strategy B's, and the durable copy of refusals), Redis's
/// when Redis carries strategy A.
#[derive(Clone)]
pub struct Records {
    pub sql: Arc<sql::SqlRecords>,
    pub redis: Option<Arc<redis::RedisRecords>>,
}

impl Records {
    pub fn at(&self, at: RecordsAt) -> &dyn RecordStore {
        match (at, &self.redis) {
            (RecordsAt::Redis, Some(redis)) => redis.as_ref(),
            _ => self.sql.as_ref(),
        }
    }
}

/// The records contract both stores keep.
#[async_trait::async_trait]
pub trait RecordStore: Send + Sync + 'static {
    /// `redis` or `database`, for readiness and spans.
    fn kind(&self) -> &'static str;

    /// Claims the key for this payload, or reports an earlier attempt.
    ///
    /// With `answer`, a refusal decided before the attempt runs (an item
    /// known to be sold out), a key proven new is stored as done with that
    /// answer in the same step ([`Claimed::Answered`]); any other key is
    /// reported as usual.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn claim(
        &self,
        scope: &KeyScope,
        hash: &RequestHash,
        owner: &LeaseOwner,
        now_ms: i64,
        answer: Option<&StoredResponse>,
    ) -> Result<Claimed, RecordError>;

    /// Stores the definite response of a claimed key, if `owner` still
    /// holds the claim.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn finish(
        &self,
        scope: &KeyScope,
        hash: &RequestHash,
        owner: &LeaseOwner,
        response: &StoredResponse,
        now_ms: i64,
    ) -> Result<Finished, RecordError>;

    /// Drops a running claim of `owner` whose attempt may be retried with
    /// the same key.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn abandon(
        &self,
        scope: &KeyScope,
        hash: &RequestHash,
        owner: &LeaseOwner,
    ) -> Result<(), RecordError>;

    /// Ends `owner`'s lease but keeps its claim: for an attempt that cannot
    /// tell whether it ordered. The next attempt with the key takes the claim
    /// over at once, and a takeover proves nothing.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn step_aside(
        &self,
        scope: &KeyScope,
        hash: &RequestHash,
        owner: &LeaseOwner,
    ) -> Result<(), RecordError>;

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
    use app::model::OrderStatus;

    fn request(item: i64, qty: i64) -> OrderRequest {
        OrderRequest {
            item_id: ItemId::new(item).expect("id"),
            qty: Quantity::new(qty).expect("qty"),
        }
    }

    #[test]
    fn the_hash_tells_payloads_apart_and_is_stable() {
        let hash = |item, qty| RequestHash::of(&request(item, qty), None);
        assert_eq!(hash(1, 2), hash(1, 2));
        assert_ne!(hash(1, 2), hash(1, 3));
        assert_ne!(hash(12, 1), hash(1, 2));
        assert_ne!(hash(11, 2), hash(1, 1));
        assert_eq!(hash(1, 1).as_str().len(), 64);
        let with_pass = RequestHash::of(&request(1, 1), Some("p1"));
        assert_ne!(with_pass, hash(1, 1), "the pass is part of the payload");
        assert_ne!(with_pass, RequestHash::of(&request(1, 1), Some("p2")));
    }

    /// Records stored by earlier releases (in Redis and in the database)
    /// must still match: the hash is SHA-256 of the payload's text, in
    /// lowercase hex.
    #[test]
    fn the_hash_is_the_one_earlier_releases_stored() {
        assert_eq!(
            RequestHash::of(&request(1, 1), None).as_str(),
            "faeffd9cd34aa893c4923a708fc26b09b23d5d7e72c8819f678aeba94271a704"
        );
        assert_eq!(
            RequestHash::of(&request(1, 1), Some("p1")).as_str(),
            "7a164d6d9757674f1e0ded21892125c1763c5748878b04c3045b5782e8b50339"
        );
    }

    #[test]
    fn only_definite_outcomes_are_stored_and_they_replay_as_they_were() {
        let receipt = Receipt {
            order_id: "o1".into(),
            item_id: ItemId::new(3).expect("id"),
            qty: Quantity::new(1).expect("qty"),
            unit_price_cents: 100,
            total_cents: 100,
            idempotency_key: IdempotencyKey::parse("k1").expect("key"),
            status: OrderStatus::Confirmed,
            pay_by_ms: None,
            created_at_ms: 1,
        };
        let stored = StoredResponse::of(&Ok(receipt.clone()))
            .expect("stored")
            .expect("serializes");
        assert_eq!(stored.status, 201);
        assert_eq!(stored.replay().result, Ok(receipt));
        assert!(stored.replay().replayed);

        let sold_out = OrderError::new(ErrorCode::SoldOut, "sold out");
        let stored = StoredResponse::of(&Err(sold_out.clone()))
            .expect("stored")
            .expect("serializes");
        assert_eq!(stored.status, 409);
        assert_eq!(stored.replay().result, Err(sold_out));

        let busy = OrderError::new(ErrorCode::Unavailable, "busy");
        assert!(StoredResponse::of(&Err(busy)).is_none());
    }

    #[test]
    fn records_are_done_only_with_status_and_body() {
        assert!(StoredResponse::from_fields(Some("done"), Some(409), Some("{}".into())).is_some());
        assert!(StoredResponse::from_fields(Some("running"), None, None).is_none());
        assert!(StoredResponse::from_fields(Some("done"), None, Some("{}".into())).is_none());
    }
}
