//! Idempotency records in Redis: one hash per (buyer, key), claimed,
//! finished and dropped by Lua scripts (`lua/idempotency_*.lua`) so each
//! step is atomic, plus one marker per buyer that says which generation of
//! records is complete for that buyer (see [`super::generation`]). Records
//! and the marker share the buyer's hash tag, so every script runs in one
//! cluster slot.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `p idem:{buyer}:key` | hash | `hash`, `state` (`running`/`done`), `status`, `body`, `owner`, `lease_until` |
//! | `p idem:{buyer}:key` | string | a done record a batch stored: `<hash>\n<status>\n<body>` |
//! | `p idem:{buyer}` | string | the generation whose records hold every durable answer of the buyer, or the fence `~<id>` of a load under way |
//!
//! Claims that carry their answer (an item known to be sold out) are sent in
//! batches on a single Redis: whatever waits while the batches in flight run
//! goes in the next, so a frenzy on a sold-out item costs one script per
//! batch. Keys that are not proven new leave the batch and are claimed alone.
//! A batch stores each answer as one string (one `SET … NX PX` where a hash
//! takes three commands); every script, and the lookup, reads
//! both shapes.
//!
//! A buyer's answers are loaded from the database under a fence put where
//! the marker goes before the read ([`RedisRecords::fence_load`]): if Redis
//! loses its data between the read and the write, the fence goes with it
//! and the load writes nothing, so a marker never vouches for records that
//! miss an answer stored in between.

use super::generation::{Generation, RecordsGeneration};
use super::{
    CLAIM_LEASE, Claimed, DurableAnswer, Finished, KeyScope, LeaseOwner, Proof, Record,
    RecordError, RecordStore, RequestHash, StoredResponse,
};
use crate::redis_conn::RedisConn;
use app::domain::BuyerId;
use redis::Script;
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};

static CLAIM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../../lua/idempotency_claim.lua")));
static FINISH: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../../lua/idempotency_finish.lua")));
static ABANDON: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../../lua/idempotency_abandon.lua")));
static STEP_ASIDE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../../lua/idempotency_step_aside.lua")));
static ANSWER_BATCH: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../../lua/idempotency_answer_batch.lua")));
static LOAD_FENCE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../../lua/idempotency_load_fence.lua")));
static LOAD_BUYER: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../../lua/idempotency_load_buyer.lua")));
static READ: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../../lua/idempotency_read.lua")));

/// Most keys one batch script touches (bounds the time Redis spends in it).
const ANSWER_BATCH_MAX: usize = 64;

/// Batch scripts sent and not yet answered, at most: while Redis runs one,
/// the next is on its way, so neither Redis nor the server waits for the
/// other.
const ANSWER_BATCHES_IN_FLIGHT: usize = 2;

/// A marker lives this much less than the records it vouches for (or a
/// tenth of their time, if that is less), so it never outlives one of them.
const MARKER_MARGIN: Duration = Duration::from_secs(60);

/// How long a load's fence stands: far longer than a read of one buyer's
/// answers (a load still reading when it falls writes nothing, and the
/// buyer is loaded again).
const LOAD_FENCE_TTL: Duration = Duration::from_secs(30);

/// A load of one buyer's durable answers under way: the fence it reads the
/// database under (see `lua/idempotency_load_fence.lua`).
#[must_use = "a fenced load writes nothing until it is finished with load_buyer"]
pub struct BuyerLoad {
    buyer: BuyerId,
    generation: Generation,
    fence: String,
}

/// What became of a load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// The answers are in Redis and the buyer's marker vouches for them.
    Written,
    /// The fence fell before the write (Redis lost its data since the read,
    /// or another load under the same fence finished first): nothing was
    /// written, and the answers read may miss some stored meanwhile.
    FenceGone,
}

/// One claim waiting for a batch: its keys, payload hash, answer and
/// generation, and where to tell whether the key was proven new.
struct PendingAnswer {
    record: String,
    marker: String,
    hash: RequestHash,
    answer: StoredResponse,
    generation: Generation,
    reply: oneshot::Sender<Result<bool, RecordError>>,
}

pub struct RedisRecords {
    conn: RedisConn,
    prefix: String,
    ttl: Duration,
    generation: Arc<RecordsGeneration>,
    /// The batching task's queue, started on first use (single Redis only).
    answers: OnceLock<mpsc::UnboundedSender<PendingAnswer>>,
}

impl RedisRecords {
    pub fn new(
        conn: RedisConn,
        prefix: impl Into<String>,
        ttl: Duration,
        generation: Arc<RecordsGeneration>,
    ) -> Self {
        Self {
            conn,
            prefix: prefix.into(),
            ttl,
            generation,
            answers: OnceLock::new(),
        }
    }

    /// `idem:{buyer}:key`: one buyer's records share a slot.
    fn record_key(&self, scope: &KeyScope) -> String {
        format!("{}idem:{{{}}}:{}", self.prefix, scope.buyer, scope.key)
    }

    /// `idem:{buyer}`: the buyer's marker.
    fn marker_key(&self, buyer: &BuyerId) -> String {
        format!("{}idem:{{{buyer}}}", self.prefix)
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis() as u64
    }

    fn marker_ttl_ms(&self) -> u64 {
        let margin = MARKER_MARGIN.min(self.ttl / 10);
        self.ttl.saturating_sub(margin).as_millis().max(1) as u64
    }

    /// A buyer who was just minted has no order and no answer anywhere:
    /// mark their records complete at once, so their first order needs no
    /// database read. Does nothing when this server cannot vouch for a
    /// generation.
    ///
    /// # Errors
    /// The store is unreachable.
    pub async fn mark_new_buyer(&self, buyer: &BuyerId) -> Result<(), RecordError> {
        let Some(generation) = self.generation.current() else {
            return Ok(());
        };
        let _: Option<String> = redis::cmd("SET")
            .arg(self.marker_key(buyer))
            .arg(generation.get())
            .arg("PX")
            .arg(self.marker_ttl_ms())
            .arg("NX")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Starts loading a buyer's durable answers for `generation`: puts (or
    /// shares) the fence the database is then read under. `None` when the
    /// buyer's records are already complete for `generation`.
    ///
    /// # Errors
    /// The store is unreachable.
    pub async fn fence_load(
        &self,
        buyer: &BuyerId,
        generation: Generation,
    ) -> Result<Option<BuyerLoad>, RecordError> {
        let fence: Option<String> = LOAD_FENCE
            .key(self.marker_key(buyer))
            .arg(generation.get())
            .arg(format!("~{}", LeaseOwner::new().as_str()))
            .arg(LOAD_FENCE_TTL.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(fence.map(|fence| BuyerLoad {
            buyer: buyer.clone(),
            generation,
            fence,
        }))
    }

    /// Writes a buyer's durable answers, read from the database under
    /// `load`'s fence and before `now_ms`, and marks the buyer's records
    /// complete for its generation, settled one lease later: until then an
    /// attempt that claimed before Redis lost the records may still commit.
    /// Writes nothing when the fence fell since.
    ///
    /// # Errors
    /// The store is unreachable.
    pub async fn load_buyer(
        &self,
        load: BuyerLoad,
        answers: &[DurableAnswer],
        now_ms: i64,
    ) -> Result<Loaded, RecordError> {
        let BuyerLoad {
            buyer,
            generation,
            fence,
        } = load;
        let mut invocation = LOAD_BUYER.key(self.marker_key(&buyer));
        invocation
            .arg(fence)
            .arg(format!(
                "{generation}@{}",
                now_ms + CLAIM_LEASE.as_millis() as i64
            ))
            .arg(self.marker_ttl_ms())
            .arg(self.ttl_ms());
        for answer in answers {
            let scope = KeyScope {
                buyer: buyer.clone(),
                key: answer.key.clone(),
            };
            invocation
                .key(self.record_key(&scope))
                .arg(answer.hash.as_str())
                .arg(answer.response.status)
                .arg(answer.response.body.as_str());
        }
        let written: i64 = invocation.invoke_async(&mut self.conn.clone()).await?;
        Ok(if written < 0 {
            Loaded::FenceGone
        } else {
            Loaded::Written
        })
    }

    /// Runs a script that acts on a running claim of `owner` (KEYS record;
    /// ARGV hash, owner).
    async fn on_own_claim(
        &self,
        script: &Script,
        scope: &KeyScope,
        hash: &RequestHash,
        owner: &LeaseOwner,
    ) -> Result<(), RecordError> {
        let _acted: i64 = script
            .key(self.record_key(scope))
            .arg(hash.as_str())
            .arg(owner.as_str())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Stores `answer` under the key if it is proven new, in the next
    /// batch; `false` when it is not.
    async fn answer_in_batch(
        &self,
        scope: &KeyScope,
        hash: &RequestHash,
        answer: &StoredResponse,
        generation: Generation,
    ) -> Result<bool, RecordError> {
        let queue = self.answers.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(answer_batches(rx, self.conn.clone(), self.ttl_ms()));
            tx
        });
        let (reply, answered) = oneshot::channel();
        let pending = PendingAnswer {
            record: self.record_key(scope),
            marker: self.marker_key(&scope.buyer),
            hash: hash.clone(),
            answer: answer.clone(),
            generation,
            reply,
        };
        if queue.send(pending).is_err() {
            return Err(RecordError("the answer batching task stopped".into()));
        }
        answered
            .await
            .unwrap_or_else(|_| Err(RecordError("the answer batching task stopped".into())))
    }
}

#[async_trait::async_trait]
impl RecordStore for RedisRecords {
    fn kind(&self) -> &'static str {
        "redis"
    }

    /// Runs `lua/idempotency_claim.lua` (KEYS record, marker; ARGV hash,
    /// now, lease, ttl, owner, generation, [status, body]).
    async fn claim(
        &self,
        scope: &KeyScope,
        hash: &RequestHash,
        owner: &LeaseOwner,
        now_ms: i64,
        answer: Option<&StoredResponse>,
    ) -> Result<Claimed, RecordError> {
        let generation = self.generation.current();
        if let (Some(answer), Some(generation)) = (answer, generation)
            && !self.conn.is_cluster()
            && self
                .answer_in_batch(scope, hash, answer, generation)
                .await?
        {
            return Ok(Claimed::Answered);
        }
        let mut invocation = CLAIM.key(self.record_key(scope));
        invocation
            .key(self.marker_key(&scope.buyer))
            .arg(hash.as_str())
            .arg(now_ms)
            .arg(CLAIM_LEASE.as_millis() as u64)
            .arg(self.ttl_ms())
            .arg(owner.as_str())
            .arg(generation.map(|g| g.to_string()).unwrap_or_default());
        if let (Some(answer), Some(_)) = (answer, generation) {
            invocation.arg(answer.status).arg(answer.body.as_str());
        }
        let (state, status, body): (i64, i64, String) =
            invocation.invoke_async(&mut self.conn.clone()).await?;
        let proof = if generation.is_some() {
            Proof::NoOrder
        } else {
            Proof::Unproven
        };
        let stored = || {
            StoredResponse::from_fields(Some("done"), Some(status), Some(body.clone()))
                .filter(|_| status != 0)
        };
        Ok(match state {
            0 => Claimed::Run(Proof::NoOrder),
            5 | 6 => Claimed::Run(Proof::Unproven),
            8 => Claimed::Run(Proof::Unsettled),
            7 => Claimed::LoadBuyer,
            1 => match stored() {
                Some(stored) => Claimed::Replay(stored, proof),
                None => return Err(RecordError("a done record without a response".into())),
            },
            2 => Claimed::InProgress,
            3 => Claimed::KeyReused(stored(), proof),
            4 => Claimed::Answered,
            other => return Err(RecordError(format!("idempotency_claim returned {other}"))),
        })
    }

    /// Runs `lua/idempotency_finish.lua` (KEYS record; ARGV hash, owner,
    /// status, body, ttl). An order is stored even over a lost claim.
    async fn finish(
        &self,
        scope: &KeyScope,
        hash: &RequestHash,
        owner: &LeaseOwner,
        response: &StoredResponse,
        _now_ms: i64,
    ) -> Result<Finished, RecordError> {
        let stored: i64 = FINISH
            .key(self.record_key(scope))
            .arg(hash.as_str())
            .arg(owner.as_str())
            .arg(response.status)
            .arg(response.body.as_str())
            .arg(self.ttl_ms())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(match stored {
            1 => Finished::Stored,
            2 => {
                tracing::warn!(
                    "the claim of an order was lost or taken over while it ran; its answer was stored over it"
                );
                Finished::Stored
            }
            _ => Finished::NotOwner,
        })
    }

    /// Runs `lua/idempotency_abandon.lua` (KEYS record; ARGV hash, owner).
    async fn abandon(
        &self,
        scope: &KeyScope,
        hash: &RequestHash,
        owner: &LeaseOwner,
    ) -> Result<(), RecordError> {
        self.on_own_claim(&ABANDON, scope, hash, owner).await
    }

    /// Runs `lua/idempotency_step_aside.lua` (KEYS record; ARGV hash, owner).
    async fn step_aside(
        &self,
        scope: &KeyScope,
        hash: &RequestHash,
        owner: &LeaseOwner,
    ) -> Result<(), RecordError> {
        self.on_own_claim(&STEP_ASIDE, scope, hash, owner).await
    }

    /// Runs `lua/idempotency_read.lua` (KEYS record), which reads either
    /// shape of a record.
    async fn lookup(&self, scope: &KeyScope, now_ms: i64) -> Result<Option<Record>, RecordError> {
        let (state, status, body, lease_until): (
            Option<String>,
            Option<i64>,
            Option<String>,
            Option<i64>,
        ) = READ
            .key(self.record_key(scope))
            .invoke_async(&mut self.conn.clone())
            .await?;
        if state.is_none() {
            return Ok(None);
        }
        if let Some(stored) = StoredResponse::from_fields(state.as_deref(), status, body) {
            return Ok(Some(Record::Done(stored)));
        }
        Ok(Some(if lease_until.unwrap_or(0) > now_ms {
            Record::Running
        } else {
            Record::Abandoned
        }))
    }
}

/// The batching task: takes whatever claims wait (up to
/// [`ANSWER_BATCH_MAX`] with one answer and one generation) and stores them
/// with one script, with at most [`ANSWER_BATCHES_IN_FLIGHT`] scripts sent
/// and not yet answered.
async fn answer_batches(
    mut queue: mpsc::UnboundedReceiver<PendingAnswer>,
    conn: RedisConn,
    ttl_ms: u64,
) {
    let in_flight = Arc::new(Semaphore::new(ANSWER_BATCHES_IN_FLIGHT));
    let mut next = queue.recv().await;
    while let Some(first) = next.take() {
        // Requests keep arriving while the earlier batches run: they join
        // this one.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        let mut yielded = false;
        while batch.len() < ANSWER_BATCH_MAX {
            match queue.try_recv() {
                Ok(pending)
                    if pending.answer == batch[0].answer
                        && pending.generation == batch[0].generation =>
                {
                    batch.push(pending)
                }
                Ok(other) => {
                    next = Some(other);
                    break;
                }
                Err(_) if !yielded => {
                    // Let the requests already read off their sockets reach
                    // the queue first, so Redis runs fewer, larger scripts
                    // (measured with one batch in flight, at 5,000 sold-out
                    // req/s: a fifth fewer scripts, and Redis's CPU per
                    // request back to what it was before the batch checked
                    // markers). When nothing else is ready, this costs one
                    // turn of the scheduler.
                    yielded = true;
                    tokio::task::yield_now().await;
                }
                Err(_) => break,
            }
        }
        let conn = conn.clone();
        tokio::spawn(async move {
            store_batch(batch, conn, ttl_ms).await;
            drop(permit);
        });
        if next.is_none() {
            next = queue.recv().await;
        }
    }
}

/// Runs one batch script and tells each claim whether its key was proven
/// new.
async fn store_batch(batch: Vec<PendingAnswer>, mut conn: RedisConn, ttl_ms: u64) {
    let mut invocation = ANSWER_BATCH.prepare_invoke();
    invocation
        .arg(batch[0].answer.status)
        .arg(batch[0].answer.body.as_str())
        .arg(ttl_ms)
        .arg(batch[0].generation.get());
    for pending in &batch {
        invocation
            .key(pending.record.as_str())
            .key(pending.marker.as_str())
            .arg(pending.hash.as_str());
    }
    let answered = invocation
        .invoke_async::<Vec<i64>>(&mut conn)
        .await
        .map_err(RecordError::from)
        .and_then(|flags| {
            if flags.len() == batch.len() {
                Ok(flags)
            } else {
                Err(RecordError(format!(
                    "idempotency_answer_batch answered {} of {} keys",
                    flags.len(),
                    batch.len()
                )))
            }
        });
    match answered {
        Ok(flags) => {
            for (pending, flag) in batch.into_iter().zip(flags) {
                let _ = pending.reply.send(Ok(flag == 1));
            }
        }
        Err(e) => {
            for pending in batch {
                let _ = pending.reply.send(Err(RecordError(e.0.clone())));
            }
        }
    }
}
