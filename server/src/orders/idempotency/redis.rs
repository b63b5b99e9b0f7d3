//! Idempotency records in Redis, one hash per (buyer, key), claimed and
//! finished by Lua scripts (`lua/idempotency_*.lua`) so a claim is atomic.
//! Records expire by themselves (PEXPIRE).

use super::{CLAIM_LEASE, Claim, IdempotencyStore, KeyScope, Record, RecordError, StoredResponse};
use crate::redis_conn::RedisConn;
use redis::{AsyncCommands, Script};
use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

static BEGIN: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../../../lua/idempotency_begin.lua")));
static FINISH: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../../../lua/idempotency_finish.lua")));
static ABANDON: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../../../lua/idempotency_abandon.lua")));

pub struct RedisRecords {
    conn: RedisConn,
    prefix: String,
    ttl: Duration,
}

impl RedisRecords {
    pub fn new(conn: RedisConn, prefix: impl Into<String>, ttl: Duration) -> Self {
        Self {
            conn,
            prefix: prefix.into(),
            ttl,
        }
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

    async fn claim(&self, scope: &KeyScope, hash: &str, now_ms: i64) -> Result<Claim, RecordError> {
        let (state, status, body): (i64, i64, String) = BEGIN
            .key(self.key(scope))
            .arg(hash)
            .arg(now_ms)
            .arg(CLAIM_LEASE.as_millis() as u64)
            .arg(self.ttl_ms())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(match state {
            0 => Claim::Claimed,
            1 => Claim::Replay(StoredResponse {
                status: u16::try_from(status).unwrap_or(500),
                body,
            }),
            2 => Claim::InProgress,
            3 => Claim::KeyReused,
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
