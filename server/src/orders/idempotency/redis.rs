//! Idempotency records in Redis, one hash per (buyer, key), claimed and
//! finished by Lua scripts (`lua/idempotency_*.lua`) so a claim is atomic.
//! Records expire by themselves (PEXPIRE).
//!
//! Claims that carry their answer (an item known to be sold out) are sent in
//! batches on a single Redis: whatever waits while one batch runs goes in the
//! next, so a frenzy on a sold-out item costs one script per batch. Keys
//! with a history leave the batch and are claimed alone, as any other.

use super::{CLAIM_LEASE, Claim, IdempotencyStore, KeyScope, Record, RecordError, StoredResponse};
use crate::redis_conn::RedisConn;
use redis::{AsyncCommands, Script};
use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

static BEGIN: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../../../lua/idempotency_begin.lua")));
static FINISH: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../../../lua/idempotency_finish.lua")));
static ABANDON: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../../../lua/idempotency_abandon.lua")));
static ANSWER_BATCH: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../../../lua/idempotency_answer_batch.lua")));

/// Most keys one batch script touches (bounds the time Redis spends in it).
const ANSWER_BATCH_MAX: usize = 64;

/// One claim waiting for a batch: its record key, payload hash and answer,
/// and where to tell whether the key was new.
struct PendingAnswer {
    key: String,
    hash: String,
    answer: StoredResponse,
    reply: oneshot::Sender<Result<bool, RecordError>>,
}

pub struct RedisRecords {
    conn: RedisConn,
    prefix: String,
    ttl: Duration,
    /// The batching task's queue, started on first use (single Redis only).
    answers: OnceLock<mpsc::UnboundedSender<PendingAnswer>>,
}

impl RedisRecords {
    pub fn new(conn: RedisConn, prefix: impl Into<String>, ttl: Duration) -> Self {
        Self {
            conn,
            prefix: prefix.into(),
            ttl,
            answers: OnceLock::new(),
        }
    }

    /// Stores `answer` under the key if it is new, in the next batch;
    /// `false` when the key has a record.
    async fn answer_in_batch(
        &self,
        scope: &KeyScope,
        hash: &str,
        answer: &StoredResponse,
    ) -> Result<bool, RecordError> {
        let queue = self.answers.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(answer_batches(rx, self.conn.clone(), self.ttl_ms()));
            tx
        });
        let (reply, answered) = oneshot::channel();
        let pending = PendingAnswer {
            key: self.key(scope),
            hash: hash.to_owned(),
            answer: answer.clone(),
            reply,
        };
        if queue.send(pending).is_err() {
            return Err(RecordError("the answer batching task stopped".into()));
        }
        answered
            .await
            .unwrap_or_else(|_| Err(RecordError("the answer batching task stopped".into())))
    }

    /// `idem:{buyer}:key`: one buyer's records share a slot.
    fn key(&self, scope: &KeyScope) -> String {
        format!("{}idem:{{{}}}:{}", self.prefix, scope.buyer, scope.key)
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis() as u64
    }
}

#[async_trait::async_trait]
impl IdempotencyStore for RedisRecords {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn claim(
        &self,
        scope: &KeyScope,
        hash: &str,
        now_ms: i64,
        answer: Option<&StoredResponse>,
    ) -> Result<Claim, RecordError> {
        if let Some(answer) = answer.filter(|_| !self.conn.is_cluster())
            && self.answer_in_batch(scope, hash, answer).await?
        {
            return Ok(Claim::Answered);
        }
        let mut invocation = BEGIN.key(self.key(scope));
        invocation
            .arg(hash)
            .arg(now_ms)
            .arg(CLAIM_LEASE.as_millis() as u64)
            .arg(self.ttl_ms());
        if let Some(answer) = answer {
            invocation.arg(answer.status).arg(answer.body.as_str());
        }
        let (state, status, body): (i64, i64, String) =
            invocation.invoke_async(&mut self.conn.clone()).await?;
        Ok(match state {
            0 => Claim::Claimed,
            1 => Claim::Replay(StoredResponse {
                status: u16::try_from(status).unwrap_or(500),
                body,
            }),
            2 => Claim::InProgress,
            3 => Claim::KeyReused,
            4 => Claim::Answered,
            other => return Err(RecordError(format!("idempotency_begin returned {other}"))),
        })
    }

    async fn finish(
        &self,
        scope: &KeyScope,
        hash: &str,
        response: &StoredResponse,
        _now_ms: i64,
    ) -> Result<(), RecordError> {
        let _stored: i64 = FINISH
            .key(self.key(scope))
            .arg(hash)
            .arg(response.status)
            .arg(response.body.as_str())
            .arg(self.ttl_ms())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    async fn abandon(&self, scope: &KeyScope, hash: &str) -> Result<(), RecordError> {
        let _dropped: i64 = ABANDON
            .key(self.key(scope))
            .arg(hash)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    async fn lookup(&self, scope: &KeyScope, _now_ms: i64) -> Result<Option<Record>, RecordError> {
        let fields: HashMap<String, String> = self.conn.clone().hgetall(self.key(scope)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let stored = match (
            fields.get("state").map(String::as_str),
            fields.get("status"),
            fields.get("body"),
        ) {
            (Some("done"), Some(status), Some(body)) => Some(StoredResponse {
                status: status.parse().unwrap_or(500),
                body: body.clone(),
            }),
            _ => None,
        };
        Ok(Some(stored.map_or(Record::Running, Record::Done)))
    }
}

/// The batching task: takes whatever claims wait (up to
/// [`ANSWER_BATCH_MAX`] with one answer) and stores them with one script.
async fn answer_batches(
    mut queue: mpsc::UnboundedReceiver<PendingAnswer>,
    conn: RedisConn,
    ttl_ms: u64,
) {
    let mut next = queue.recv().await;
    while let Some(first) = next.take() {
        let mut batch = vec![first];
        while batch.len() < ANSWER_BATCH_MAX {
            match queue.try_recv() {
                Ok(pending) if pending.answer == batch[0].answer => batch.push(pending),
                Ok(other) => {
                    next = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        let mut invocation = ANSWER_BATCH.prepare_invoke();
        invocation
            .arg(batch[0].answer.status)
            .arg(batch[0].answer.body.as_str())
            .arg(ttl_ms);
        for pending in &batch {
            invocation
                .key(pending.key.as_str())
                .arg(pending.hash.as_str());
        }
        let answered: Result<Vec<i64>, RecordError> = invocation
            .invoke_async(&mut conn.clone())
            .await
            .map_err(RecordError::from);
        match answered {
            Ok(flags) if flags.len() == batch.len() => {
                for (pending, flag) in batch.into_iter().zip(flags) {
                    let _ = pending.reply.send(Ok(flag == 1));
                }
            }
            Ok(flags) => {
                let e = format!(
                    "idempotency_answer_batch answered {} of {} keys",
                    flags.len(),
                    batch.len()
                );
                for pending in batch {
                    let _ = pending.reply.send(Err(RecordError(e.clone())));
                }
            }
            Err(e) => {
                for pending in batch {
                    let _ = pending.reply.send(Err(RecordError(e.0.clone())));
                }
            }
        }
        if next.is_none() {
            next = queue.recv().await;
        }
    }
}
