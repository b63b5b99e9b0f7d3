//! Stage 5: the answer, stored for replays before it is given.
//!
//! An order is answered 201 and stored under its key (a failing store does
//! not matter: the orders table answers its replays). A definite refusal
//! first passes the gate ([`super::refusal`]): an order the database holds
//! for the key wins over it. The refusal is then stored where it must be
//! kept (the database's copies in groups, see
//! [`crate::records::kept_refusals`], and always under the attempt's own
//! claim); one that cannot be stored is not answered (the buyer hears "try
//! again"), so no replay can later hear something else. A retryable
//! failure drops the claim, so the same key can run again; an attempt that
//! cannot tell whether it ordered keeps its claim without a lease, so the
//! next attempt with the key asks the orders table before anything else.

use super::idempotency::ClaimedKey;
use super::refusal::{Gate, Keeping, Proof, Refusal, Truth};
use super::{Attempt, Outcome, Route};
use crate::metrics::Metrics;
use crate::records::kept_refusals::KeptRefusals;
use crate::records::sql::KeptRefusal;
use crate::records::{Records, RecordsAt, StoredResponse};
use app::model::Receipt;
use app::ports::Placement;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

pub struct AnswerStage {
    records: Records,
    kept_refusals: KeptRefusals,
    gate: Arc<Gate>,
    metrics: Arc<Metrics>,
}

impl AnswerStage {
    /// Starts the writer of refusals kept in the database.
    pub fn new(records: Records, gate: Arc<Gate>, metrics: Arc<Metrics>) -> Self {
        Self {
            kept_refusals: KeptRefusals::start(records.sql.clone()),
            records,
            gate,
            metrics,
        }
    }

    pub async fn run(
        &self,
        attempt: &Attempt,
        route: &Route,
        claim: ClaimedKey,
        outcome: Outcome,
    ) -> Placement {
        let started = Instant::now();
        let placement = self
            .answer(attempt, claim, outcome)
            .instrument(tracing::info_span!("answer"))
            .await;
        self.metrics
            .stage_took("answer", route.strategy.label(), started.elapsed());
        placement
    }

    async fn answer(&self, attempt: &Attempt, claim: ClaimedKey, outcome: Outcome) -> Placement {
        let same_payload = |receipt: &Receipt| {
            receipt.item_id == attempt.request.item_id && receipt.qty == attempt.request.qty
        };
        match outcome {
            Outcome::Ordered(receipt) => self.order(&claim, receipt, false).await,
            Outcome::AlreadyOrdered(receipt) if same_payload(&receipt) => {
                self.order(&claim, receipt, true).await
            }
            Outcome::AlreadyOrdered(_) => self.drop_claim(&claim, Refusal::KeyReused).await,
            Outcome::Refused(Refusal::OutcomeUnknown) => self.step_aside(&claim).await,
            Outcome::Refused(refusal) if refusal.keeping() == Keeping::Never => {
                self.drop_claim(&claim, refusal).await
            }
            // While the buyer's records settle, a refusal that could still
            // be contradicted is not final: "try again", without a database
            // read (an order committed meanwhile by an attempt from before
            // the loss stored its answer in Redis, so a retry replays it),
            // so the retries of a flood after a Redis loss stay off the
            // database.
            Outcome::Refused(refusal)
                if claim.proof == Proof::Unsettled && refusal.keeping() == Keeping::Durably =>
            {
                self.drop_claim(&claim, Refusal::RecordsSettling).await
            }
            Outcome::Refused(refusal) => {
                // Under an unsettled claim only refusals a new decision would
                // repeat reach here (no unit left and no hold to give one
                // back, no such item): they stand, since no attempt from
                // before Redis lost the records can commit an order that
                // contradicts them.
                let proof = match claim.proof {
                    Proof::Unsettled => Proof::NoOrder,
                    proof => proof,
                };
                let truth = self
                    .gate
                    .truth(
                        &attempt.buyer,
                        &attempt.key,
                        &claim.hash,
                        proof,
                        claim.records,
                    )
                    .await;
                match truth {
                    Ok(Truth::Nothing) => self.refuse(&claim, refusal).await,
                    Ok(Truth::Order(order)) => self.order(&claim, order, true).await,
                    // Replayed only once the claim's store holds it too
                    // (see `refuse`).
                    Ok(Truth::Stored(stored)) => {
                        if claim.finish(&self.records, &stored).await {
                            stored.replay()
                        } else {
                            self.drop_claim(&claim, Refusal::Unavailable).await
                        }
                    }
                    Ok(Truth::OtherPayload) => self.drop_claim(&claim, Refusal::KeyReused).await,
                    Err(e) => {
                        tracing::error!(error = %e, "the gate cannot read the orders table; not answering the refusal");
                        self.drop_claim(&claim, Refusal::Unavailable).await
                    }
                }
            }
        }
    }

    /// Answers an order, stored for replays when the store answers.
    async fn order(&self, claim: &ClaimedKey, receipt: Receipt, replayed: bool) -> Placement {
        let result = Ok(receipt);
        match StoredResponse::of(&result) {
            Some(Ok(stored)) => {
                claim.finish(&self.records, &stored).await;
            }
            Some(Err(e)) => tracing::error!(error = %e, "a receipt does not serialize"),
            None => {}
        }
        Placement { result, replayed }
    }

    /// Stores a definite refusal where it must be kept, then answers it; a
    /// refusal that cannot be kept is not answered.
    async fn refuse(&self, claim: &ClaimedKey, refusal: Refusal) -> Placement {
        let error = refusal.error();
        let stored = match StoredResponse::of(&Err(error.clone())) {
            Some(Ok(stored)) => stored,
            Some(Err(e)) => {
                tracing::error!(error = %e, "a refusal does not serialize");
                return self.drop_claim(claim, Refusal::Unavailable).await;
            }
            None => return self.drop_claim(claim, refusal).await,
        };
        let durably = refusal.keeping() == Keeping::Durably && claim.records == RecordsAt::Redis;
        if durably {
            let refusal = KeptRefusal {
                scope: claim.scope.clone(),
                hash: claim.hash.clone(),
                response: stored.clone(),
                now_ms: crate::db::now_ms(),
            };
            if let Err(e) = self.kept_refusals.keep(refusal).await {
                tracing::error!(error = %e, "keeping a refusal in the database failed; not answering it");
                return self.drop_claim(claim, Refusal::Unavailable).await;
            }
        }
        // The claim's store must hold it too. A claim lost with Redis's
        // data (or taken over) while the attempt ran leaves records that
        // may never hear of this refusal: the buyer may have been loaded
        // from the database before it was kept there, and then a new
        // decision for the key (another payload, a unit come back) would
        // contradict a definite answer. So it is not answered: a retry
        // hears what the key's records say by then.
        if !claim.finish(&self.records, &stored).await {
            return self.drop_claim(claim, Refusal::Unavailable).await;
        }
        Placement {
            result: Err(error),
            replayed: false,
        }
    }

    /// Keeps the claim for an attempt that may have ordered, without its
    /// lease: the next attempt takes it over at once and asks the orders
    /// table first.
    async fn step_aside(&self, claim: &ClaimedKey) -> Placement {
        let store = self.records.at(claim.records);
        if let Err(e) = store
            .step_aside(&claim.scope, &claim.hash, &claim.owner)
            .await
        {
            tracing::warn!(error = %e, "stepping aside failed; the claim is taken over when its lease runs out");
        }
        Placement {
            result: Err(Refusal::OutcomeUnknown.error()),
            replayed: false,
        }
    }

    /// Drops the claim (the key may run again) and answers `refusal`.
    async fn drop_claim(&self, claim: &ClaimedKey, refusal: Refusal) -> Placement {
        claim.abandon(&self.records).await;
        Placement {
            result: Err(refusal.error()),
            replayed: false,
        }
    }
}
