//! Stage 1: claim the buyer's idempotency key, or answer from what is known.
//!
//! A new key is claimed for this attempt (with a proof, or without one;
//! see [`super::refusal`]), and the attempt runs on. A key with a history is
//! answered here: a replay of the stored answer, 409 while another attempt
//! runs, 422 for another payload. A stored answer or a reuse that the store
//! cannot vouch for passes the gate first: an order in the database wins.
//!
//! When the sold-out memo knows the item has nothing left, the claim of a
//! proven-new key stores the refusal in the same step (one round trip; on a
//! single Redis, such claims go in batches).
//!
//! A key new to Redis that nothing vouches for (no generation to prove
//! with, or a claim taken over) runs only once the database shows no
//! durable answer for it: an order or a kept refusal found there is
//! answered instead, since Redis may have lost it.
//!
//! A Redis store that cannot vouch for a buyer (its data was lost, or the
//! generation moved on) first loads the buyer's durable answers from the
//! database, then claims again. A load that Redis's data loss overtook
//! writes nothing (its fence fell), and the buyer is loaded once more.

use super::refusal::{Gate, Refusal, Truth};
use super::{Attempt, Route};
use crate::metrics::{self as m, Metrics};
use crate::records::generation::RecordsGeneration;
use crate::records::redis::Loaded;
use crate::records::{
    COMMIT_WITHIN, Claimed, Finished, KeyScope, LeaseOwner, Proof, Records, RecordsAt, RequestHash,
    StoredResponse,
};
use crate::reservation::breaker::RedisCall;
use crate::reservation::guard::RedisGuard;
use crate::reservation::memo::SoldOutMemo;
use app::ports::Placement;
use std::sync::{Arc, LazyLock};
use std::time::Instant;
use tracing::Instrument;

/// The claim an attempt runs under, for the stages after it.
#[derive(Debug, Clone)]
pub struct ClaimedKey {
    pub scope: KeyScope,
    pub hash: RequestHash,
    pub owner: LeaseOwner,
    pub proof: Proof,
    pub records: RecordsAt,
    /// The claim's lease, less a margin: the ledger commits no order after
    /// it ([`crate::records::COMMIT_WITHIN`]).
    pub commit_by: Instant,
}

impl ClaimedKey {
    /// Stores `stored` under this claim for replays; true when stored (a
    /// claim taken over or lost since stores nothing).
    pub async fn finish(&self, records: &Records, stored: &StoredResponse) -> bool {
        let store = records.at(self.records);
        match store
            .finish(
                &self.scope,
                &self.hash,
                &self.owner,
                stored,
                crate::db::now_ms(),
            )
            .await
        {
            Ok(Finished::Stored) => true,
            Ok(Finished::NotOwner) => {
                tracing::warn!("the claim was taken over or lost before its answer was stored");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "storing the idempotent response failed");
                false
            }
        }
    }

    /// Drops the claim: the same key may run again.
    pub async fn abandon(&self, records: &Records) {
        let store = records.at(self.records);
        if let Err(e) = store.abandon(&self.scope, &self.hash, &self.owner).await {
            tracing::warn!(error = %e, "dropping the idempotency claim failed; it expires with its lease");
        }
    }
}

/// What stage 1 decided.
pub enum Claim {
    /// Run the attempt under this claim.
    Run(ClaimedKey),
    /// Answered here.
    Answered(Placement),
}

/// Loads of the buyer's answers one claim may run before it gives up ("try
/// again"): Redis lost its data during each.
const LOADS: usize = 2;

/// The stored answer of a refusal by the sold-out memo: the same for every
/// request, so it is serialized once.
static KNOWN_SOLD_OUT: LazyLock<Option<StoredResponse>> = LazyLock::new(|| {
    let refusal = Refusal::SoldOut {
        available: 0,
        settled: true,
    };
    StoredResponse::of(&Err(refusal.error())).and_then(Result::ok)
});

pub struct ClaimStage {
    records: Records,
    generation: Option<Arc<RecordsGeneration>>,
    gate: Arc<Gate>,
    memo: Option<Arc<SoldOutMemo>>,
    guard: Option<Arc<RedisGuard>>,
    metrics: Arc<Metrics>,
}

impl ClaimStage {
    pub fn new(
        records: Records,
        generation: Option<Arc<RecordsGeneration>>,
        gate: Arc<Gate>,
        memo: Option<Arc<SoldOutMemo>>,
        guard: Option<Arc<RedisGuard>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            records,
            generation,
            gate,
            memo,
            guard,
            metrics,
        }
    }

    fn count(&self, result: &'static str, route: &Route) {
        self.metrics
            .counter(
                m::IDEMPOTENCY,
                &[("result", result), ("strategy", route.strategy.label())],
            )
            .increment(1);
    }

    fn report(&self, route: &Route, call: RedisCall) {
        if let (RecordsAt::Redis, Some(guard), Some(ticket)) =
            (route.records, &self.guard, route.redis_ticket())
        {
            guard.report(ticket, call);
        }
    }

    pub async fn run(&self, attempt: &Attempt, route: &Route) -> Claim {
        let started = Instant::now();
        let store = self.records.at(route.records);
        let claim = self
            .claim(attempt, route)
            .instrument(tracing::info_span!("idempotency", store = store.kind()))
            .await;
        self.metrics
            .stage_took("idempotency", route.strategy.label(), started.elapsed());
        claim
    }

    async fn claim(&self, attempt: &Attempt, route: &Route) -> Claim {
        let scope = KeyScope {
            buyer: attempt.buyer.clone(),
            key: attempt.key.clone(),
        };
        let hash = attempt.hash();
        let owner = LeaseOwner::new();
        let store = self.records.at(route.records);
        let known_sold_out = route.reserves()
            && self
                .memo
                .as_ref()
                .is_some_and(|memo| memo.knows(attempt.request.item_id, Instant::now()));
        let answer = known_sold_out
            .then(|| &*KNOWN_SOLD_OUT)
            .and_then(Option::as_ref);

        // Each load of the buyer is followed by one more claim.
        let mut loads = 0;
        let mut commit_by;
        let claimed = loop {
            commit_by = Instant::now() + COMMIT_WITHIN;
            match store
                .claim(&scope, &hash, &owner, crate::db::now_ms(), answer)
                .await
            {
                Ok(Claimed::LoadBuyer) if loads < LOADS => {
                    loads += 1;
                    if let Err(e) = self.load_buyer(&scope).await {
                        tracing::warn!(error = %e, "loading the buyer's answers into Redis failed");
                        self.count("error", route);
                        return Claim::Answered(refuse(Refusal::Unavailable));
                    }
                }
                other => break other,
            }
        };
        let claimed = match claimed {
            Ok(claimed) => {
                self.report(route, RedisCall::Answered);
                claimed
            }
            Err(e) => {
                self.count("error", route);
                self.report(route, RedisCall::Failed);
                tracing::error!(error = %e, "idempotency store failed");
                // The claim may have been written before the answer was
                // lost: drop it, so a retry is not told "in progress".
                if let Err(e) = store.abandon(&scope, &hash, &owner).await {
                    tracing::warn!(error = %e, "dropping a possibly written claim failed; it expires with its lease");
                }
                return Claim::Answered(refuse(Refusal::Unavailable));
            }
        };
        match claimed {
            Claimed::Run(Proof::Unproven) if route.records == RecordsAt::Redis => {
                let claimed = ClaimedKey {
                    scope,
                    hash,
                    owner,
                    proof: Proof::Unproven,
                    records: route.records,
                    commit_by,
                };
                self.unproven(attempt, route, claimed).await
            }
            Claimed::Run(proof) => {
                self.count("new", route);
                Claim::Run(ClaimedKey {
                    scope,
                    hash,
                    owner,
                    proof,
                    records: route.records,
                    commit_by,
                })
            }
            Claimed::Answered => {
                self.count("new", route);
                self.metrics
                    .counter(
                        m::RESERVATIONS,
                        &[
                            ("result", "sold_out_memo"),
                            ("strategy", route.strategy.label()),
                        ],
                    )
                    .increment(1);
                Claim::Answered(refuse(Refusal::SoldOut {
                    available: 0,
                    settled: true,
                }))
            }
            Claimed::InProgress => {
                self.count("in_progress", route);
                Claim::Answered(refuse(Refusal::InProgress))
            }
            Claimed::Replay(stored, proof) if stored.is_order() || proof == Proof::NoOrder => {
                self.count("replay", route);
                Claim::Answered(stored.replay())
            }
            Claimed::Replay(stored, _) => {
                // A stored refusal the store cannot vouch for: an order in
                // the database (committed around Redis) wins.
                match self.truth(attempt, route).await {
                    Ok(Truth::Order(order)) => {
                        self.count("replay", route);
                        Claim::Answered(replayed(order))
                    }
                    Ok(_) => {
                        self.count("replay", route);
                        Claim::Answered(stored.replay())
                    }
                    Err(()) => Claim::Answered(refuse(Refusal::Unavailable)),
                }
            }
            Claimed::KeyReused(stored, proof)
                if proof == Proof::NoOrder || stored.as_ref().is_some_and(|s| s.is_order()) =>
            {
                self.count("mismatch", route);
                Claim::Answered(refuse(Refusal::KeyReused))
            }
            Claimed::KeyReused(..) | Claimed::OrderExists => {
                // The orders table decides: an order with this payload is
                // answered, anything else is a reuse.
                match self.truth(attempt, route).await {
                    Ok(Truth::Order(order)) => {
                        self.count("replay", route);
                        Claim::Answered(replayed(order))
                    }
                    Ok(Truth::Stored(stored)) => {
                        self.count("replay", route);
                        Claim::Answered(stored.replay())
                    }
                    Ok(Truth::Nothing | Truth::OtherPayload) => {
                        self.count("mismatch", route);
                        Claim::Answered(refuse(Refusal::KeyReused))
                    }
                    Err(()) => Claim::Answered(refuse(Refusal::Unavailable)),
                }
            }
            Claimed::LoadBuyer => {
                self.count("error", route);
                tracing::warn!("the buyer's records were lost again while loading them");
                Claim::Answered(refuse(Refusal::Unavailable))
            }
        }
    }

    /// A key new to Redis that nothing vouches for (no generation could be
    /// read, or a lease runs for orders around Redis; or a claim taken over
    /// after its lease): Redis may have lost the key's durable answer, so
    /// the database's copy (an order, or a kept refusal) is answered instead
    /// of a new decision, and stored under the claim.
    async fn unproven(&self, attempt: &Attempt, route: &Route, claimed: ClaimedKey) -> Claim {
        match self.truth(attempt, route).await {
            Ok(Truth::Nothing) => {
                self.count("new", route);
                Claim::Run(claimed)
            }
            Ok(Truth::Order(order)) => {
                self.count("replay", route);
                // The orders table answers its replays should this fail.
                if let Some(Ok(stored)) = StoredResponse::of(&Ok(order.clone())) {
                    claimed.finish(&self.records, &stored).await;
                }
                Claim::Answered(replayed(order))
            }
            // A kept refusal is replayed once the claim holds it too, so no
            // replay in Redis hears something else.
            Ok(Truth::Stored(stored)) => {
                self.count("replay", route);
                if claimed.finish(&self.records, &stored).await {
                    Claim::Answered(stored.replay())
                } else {
                    claimed.abandon(&self.records).await;
                    Claim::Answered(refuse(Refusal::Unavailable))
                }
            }
            Ok(Truth::OtherPayload) => {
                self.count("mismatch", route);
                claimed.abandon(&self.records).await;
                Claim::Answered(refuse(Refusal::KeyReused))
            }
            Err(()) => {
                claimed.abandon(&self.records).await;
                Claim::Answered(refuse(Refusal::Unavailable))
            }
        }
    }

    /// The gate's reading for this attempt, with an unproven claim.
    async fn truth(&self, attempt: &Attempt, route: &Route) -> Result<Truth, ()> {
        self.gate
            .truth(
                &attempt.buyer,
                &attempt.key,
                &attempt.hash(),
                Proof::Unproven,
                route.records,
            )
            .await
            .map_err(|e| {
                self.count("error", route);
                tracing::error!(error = %e, "reading the orders table for an unproven key failed");
            })
    }

    /// Loads the buyer's durable answers into Redis, vouched for by the
    /// current generation, under a fence that Redis loses with its data
    /// (see [`crate::records::redis::RedisRecords::fence_load`]).
    async fn load_buyer(&self, scope: &KeyScope) -> Result<(), crate::records::RecordError> {
        let (Some(redis), Some(generation)) = (&self.records.redis, &self.generation) else {
            return Ok(());
        };
        let Some(current) = generation.current() else {
            return Ok(());
        };
        let Some(load) = redis.fence_load(&scope.buyer, current).await? else {
            return Ok(());
        };
        let answers = self
            .records
            .sql
            .durable_answers(&scope.buyer, crate::db::now_ms())
            .await?;
        if redis
            .load_buyer(load, &answers, crate::db::now_ms())
            .await?
            == Loaded::FenceGone
        {
            tracing::info!(
                "the load's fence fell (Redis lost its data, or another load finished first); claiming again"
            );
        }
        Ok(())
    }
}

fn refuse(refusal: Refusal) -> Placement {
    Placement {
        result: Err(refusal.error()),
        replayed: false,
    }
}

fn replayed(order: app::model::Receipt) -> Placement {
    Placement {
        result: Ok(order),
        replayed: true,
    }
}
