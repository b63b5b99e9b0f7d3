//! Idempotency records in the database (`idempotency_records`): the
//! embedded default's and strategy B's, the ones attempts use while the
//! breaker keeps Redis out, and the durable copy of refusals that Redis
//! alone could lose.
//!
//! A claim is one insert that the primary key (buyer, key) lets only one
//! attempt win, and that inserts nothing when the orders table already has
//! an order under the key. When the database holds the only records of the
//! server (no Redis records beside them), a won claim therefore proves the
//! key has no order; with Redis records beside them it proves nothing, since
//! an attempt claimed in Redis may commit meanwhile.

use super::{
    CLAIM_LEASE, Claimed, DurableAnswer, Finished, KeyScope, LeaseOwner, Proof, Record,
    RecordError, RecordStore, RequestHash, StoredResponse,
};
use crate::db::{Database, Dialect, orders};
use app::domain::{BuyerId, IdempotencyKey};
use sqlx::Row;
use std::collections::HashSet;
use std::time::Duration;

/// A refusal to keep in the database ([`SqlRecords::keep_durably`]).
#[derive(Debug, Clone)]
pub struct KeptRefusal {
    pub scope: KeyScope,
    pub hash: RequestHash,
    pub response: StoredResponse,
    pub now_ms: i64,
}

pub struct SqlRecords {
    db: Database,
    ttl: Duration,
    /// Whether a won claim proves the key has no order: true when these are
    /// the server's only records.
    proves: bool,
}

/// What a claim inserts: a running claim, or a record done with an answer.
enum Insert<'a> {
    Running(&'a LeaseOwner),
    Answered(&'a StoredResponse),
}

impl SqlRecords {
    pub fn new(db: Database, ttl: Duration, proves: bool) -> Self {
        Self { db, ttl, proves }
    }

    /// Deletes expired records; returns how many.
    ///
    /// # Errors
    /// Database failures.
    pub async fn purge_expired(&self, now_ms: i64) -> Result<u64, RecordError> {
        let sql = self
            .db
            .sql("DELETE FROM idempotency_records WHERE expires_at < ?");
        Ok(sqlx::query(&sql)
            .bind(now_ms)
            .execute(self.db.pool())
            .await?
            .rows_affected())
    }

    fn insert_ignore(&self, rest: &str) -> String {
        let sql = match self.db.dialect() {
            Dialect::Sqlite => format!("INSERT OR IGNORE INTO idempotency_records {rest}"),
            Dialect::MySql => format!("INSERT IGNORE INTO idempotency_records {rest}"),
            Dialect::Postgres => {
                format!("INSERT INTO idempotency_records {rest} ON CONFLICT DO NOTHING")
            }
        };
        self.db.sql(&sql).into_owned()
    }

    /// The claim's insert: only when no record and no order has the key.
    fn claim_sql(&self, answered: bool) -> String {
        let from_dual = if self.db.dialect() == Dialect::MySql {
            " FROM DUAL"
        } else {
            ""
        };
        let (columns, values) = if answered {
            (
                "(buyer, idempotency_key, request_hash, state, lease_until, expires_at, response_status, response_body)",
                "?, ?, ?, 'done', ?, ?, ?, ?",
            )
        } else {
            (
                "(buyer, idempotency_key, request_hash, state, lease_until, expires_at, owner)",
                "?, ?, ?, 'running', ?, ?, ?",
            )
        };
        self.insert_ignore(&format!(
            "{columns} SELECT {values}{from_dual} WHERE NOT EXISTS \
             (SELECT 1 FROM orders WHERE buyer = ? AND idempotency_key = ?)"
        ))
    }

    fn ttl_ms(&self) -> i64 {
        self.ttl.as_millis() as i64
    }

    fn proof(&self) -> Proof {
        if self.proves {
            Proof::NoOrder
        } else {
            Proof::Unproven
        }
    }

    async fn insert_claim(
        &self,
        scope: &KeyScope,
        hash: &RequestHash,
        insert: &Insert<'_>,
        now_ms: i64,
    ) -> Result<bool, RecordError> {
        let sql = self.claim_sql(matches!(insert, Insert::Answered(_)));
        let mut query = sqlx::query(&sql)
            .bind(scope.buyer.as_str())
            .bind(scope.key.as_str())
            .bind(hash.as_str())
            .bind(now_ms + CLAIM_LEASE.as_millis() as i64)
            .bind(now_ms + self.ttl_ms());
        query = match insert {
            Insert::Running(owner) => query.bind(owner.as_str()),
            Insert::Answered(answer) => query
                .bind(i64::from(answer.status))
                .bind(answer.body.as_str()),
        };
        let inserted = query
            .bind(scope.buyer.as_str())
            .bind(scope.key.as_str())
            .execute(self.db.pool())
            .await?
            .rows_affected();
        Ok(inserted == 1)
    }

    /// Keeps refusals in the database too, so losing Redis cannot lose
    /// them: one insert of new done records for the whole group; when some
    /// key already had a record, each running claim of the same payload is
    /// then turned done. A record already done stays as it is.
    ///
    /// # Errors
    /// Database failures: none of the group may be answered.
    pub async fn keep_durably(&self, group: &[KeptRefusal]) -> Result<(), RecordError> {
        if group.is_empty() {
            return Ok(());
        }
        let rows = vec!["(?, ?, ?, 'done', 0, ?, ?, ?)"; group.len()].join(", ");
        let insert = self.insert_ignore(&format!(
            "(buyer, idempotency_key, request_hash, state, lease_until, expires_at, response_status, response_body) \
             VALUES {rows}"
        ));
        // Groups vary in size: a prepared statement per size would crowd
        // each connection's statement cache.
        let mut query = sqlx::query(&insert).persistent(false);
        for kept in group {
            query = query
                .bind(kept.scope.buyer.as_str())
                .bind(kept.scope.key.as_str())
                .bind(kept.hash.as_str())
                .bind(kept.now_ms + self.ttl_ms())
                .bind(i64::from(kept.response.status))
                .bind(kept.response.body.as_str());
        }
        let inserted = query.execute(self.db.pool()).await?.rows_affected();
        if inserted == group.len() as u64 {
            return Ok(());
        }
        let update = self.db.sql(
            "UPDATE idempotency_records SET state = 'done', response_status = ?, response_body = ?, expires_at = ? \
             WHERE buyer = ? AND idempotency_key = ? AND request_hash = ? AND state = 'running'",
        );
        for kept in group {
            sqlx::query(&update)
                .bind(i64::from(kept.response.status))
                .bind(kept.response.body.as_str())
                .bind(kept.now_ms + self.ttl_ms())
                .bind(kept.scope.buyer.as_str())
                .bind(kept.scope.key.as_str())
                .bind(kept.hash.as_str())
                .execute(self.db.pool())
                .await?;
        }
        Ok(())
    }

    /// Everything the database keeps for one buyer's keys: each order's 201
    /// answer, and the refusals stored here. An order wins over a stored
    /// refusal of the same key.
    ///
    /// # Errors
    /// Database failures.
    pub async fn durable_answers(
        &self,
        buyer: &BuyerId,
        now_ms: i64,
    ) -> Result<Vec<DurableAnswer>, RecordError> {
        let mut answers = Vec::new();
        let mut ordered = HashSet::new();
        for order in orders::of_buyer(&self.db, buyer).await? {
            let hash = order.hash();
            let receipt = order.receipt;
            let body = serde_json::to_string(&receipt)
                .map_err(|e| RecordError(format!("receipt does not serialize: {e}")))?;
            ordered.insert(receipt.idempotency_key.clone());
            answers.push(DurableAnswer {
                key: receipt.idempotency_key,
                hash,
                response: StoredResponse { status: 201, body },
            });
        }
        let sql = self.db.sql(
            "SELECT idempotency_key, request_hash, response_status, response_body FROM idempotency_records \
             WHERE buyer = ? AND state = 'done' AND expires_at >= ?",
        );
        let rows = sqlx::query(&sql)
            .bind(buyer.as_str())
            .bind(now_ms)
            .fetch_all(self.db.pool())
            .await?;
        for row in rows {
            let key: String = row.try_get("idempotency_key")?;
            let Ok(key) = IdempotencyKey::parse(&key) else {
                continue;
            };
            if ordered.contains(&key) {
                continue;
            }
            let Some(response) = StoredResponse::from_fields(
                Some("done"),
                row.try_get("response_status")?,
                row.try_get("response_body")?,
            ) else {
                continue;
            };
            answers.push(DurableAnswer {
                key,
                hash: RequestHash::from_stored(row.try_get("request_hash")?),
                response,
            });
        }
        Ok(answers)
    }

    /// The answer the database keeps for a key, if done and not expired,
    /// with the hash of the payload it answered.
    ///
    /// # Errors
    /// Database failures.
    pub async fn kept_answer(
        &self,
        scope: &KeyScope,
        now_ms: i64,
    ) -> Result<Option<(RequestHash, StoredResponse)>, RecordError> {
        Ok(self
            .read(scope)
            .await?
            .filter(|row| row.expires_at >= now_ms)
            .and_then(|row| row.done.map(|done| (row.hash, done))))
    }

    async fn read(&self, scope: &KeyScope) -> Result<Option<RecordRow>, RecordError> {
        let sql = self.db.sql(
            "SELECT request_hash, state, response_status, response_body, lease_until, expires_at \
             FROM idempotency_records WHERE buyer = ? AND idempotency_key = ?",
        );
        let row = sqlx::query(&sql)
            .bind(scope.buyer.as_str())
            .bind(scope.key.as_str())
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|row| {
            let state: String = row.try_get("state")?;
            Ok(RecordRow {
                hash: RequestHash::from_stored(row.try_get("request_hash")?),
                done: StoredResponse::from_fields(
                    Some(&state),
                    row.try_get("response_status")?,
                    row.try_get("response_body")?,
                ),
                lease_until: row.try_get("lease_until")?,
                expires_at: row.try_get("expires_at")?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| RecordError::from(e))
    }

    /// Runs `statement` on the running claim of `owner` for this payload.
    async fn on_own_claim(
        &self,
        statement: &str,
        scope: &KeyScope,
        hash: &RequestHash,
        owner: &LeaseOwner,
    ) -> Result<(), RecordError> {
        let sql = format!(
            "{statement} WHERE buyer = ? AND idempotency_key = ? AND request_hash = ? \
             AND state = 'running' AND owner = ?"
        );
        sqlx::query(&self.db.sql(&sql))
            .bind(scope.buyer.as_str())
            .bind(scope.key.as_str())
            .bind(hash.as_str())
            .bind(owner.as_str())
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    async fn order_exists(&self, scope: &KeyScope) -> Result<bool, RecordError> {
        Ok(orders::by_key(&self.db, &scope.buyer, &scope.key)
            .await?
            .is_some())
    }
}

struct RecordRow {
    hash: RequestHash,
    done: Option<StoredResponse>,
    lease_until: i64,
    expires_at: i64,
}

#[async_trait::async_trait]
impl RecordStore for SqlRecords {
    fn kind(&self) -> &'static str {
        "database"
    }

    async fn claim(
        &self,
        scope: &KeyScope,
        hash: &RequestHash,
        owner: &LeaseOwner,
        now_ms: i64,
        answer: Option<&StoredResponse>,
    ) -> Result<Claimed, RecordError> {
        // Only a proving store may store an answer before the attempt runs.
        let insert = match answer.filter(|_| self.proves) {
            Some(answer) => Insert::Answered(answer),
            None => Insert::Running(owner),
        };
        // Two rounds at most: the second follows the removal of an expired record.
        for _ in 0..2 {
            if self.insert_claim(scope, hash, &insert, now_ms).await? {
                return Ok(match insert {
                    Insert::Answered(_) => Claimed::Answered,
                    Insert::Running(_) => Claimed::Run(self.proof()),
                });
            }
            let Some(row) = self.read(scope).await? else {
                if self.order_exists(scope).await? {
                    return Ok(Claimed::OrderExists);
                }
                continue;
            };
            if row.expires_at < now_ms {
                let sql = self.db.sql(
                    "DELETE FROM idempotency_records WHERE buyer = ? AND idempotency_key = ? AND expires_at < ?",
                );
                sqlx::query(&sql)
                    .bind(scope.buyer.as_str())
                    .bind(scope.key.as_str())
                    .bind(now_ms)
                    .execute(self.db.pool())
                    .await?;
                continue;
            }
            if row.hash != *hash {
                return Ok(Claimed::KeyReused(row.done, self.proof()));
            }
            if let Some(stored) = row.done {
                return Ok(Claimed::Replay(stored, self.proof()));
            }
            if row.lease_until > now_ms {
                return Ok(Claimed::InProgress);
            }
            // The claim's owner died: take it over, unless someone else just did.
            let sql = self.db.sql(
                "UPDATE idempotency_records SET lease_until = ?, owner = ? \
                 WHERE buyer = ? AND idempotency_key = ? AND state = 'running' AND lease_until = ?",
            );
            let taken = sqlx::query(&sql)
                .bind(now_ms + CLAIM_LEASE.as_millis() as i64)
                .bind(owner.as_str())
                .bind(scope.buyer.as_str())
                .bind(scope.key.as_str())
                .bind(row.lease_until)
                .execute(self.db.pool())
                .await?
                .rows_affected();
            return Ok(if taken == 1 {
                Claimed::Run(Proof::Unproven)
            } else {
                Claimed::InProgress
            });
        }
        Ok(Claimed::InProgress)
    }

    async fn finish(
        &self,
        scope: &KeyScope,
        hash: &RequestHash,
        owner: &LeaseOwner,
        response: &StoredResponse,
        now_ms: i64,
    ) -> Result<Finished, RecordError> {
        let sql = self.db.sql(
            "UPDATE idempotency_records SET state = 'done', response_status = ?, response_body = ?, expires_at = ?, owner = NULL \
             WHERE buyer = ? AND idempotency_key = ? AND request_hash = ? AND state = 'running' AND owner = ?",
        );
        let stored = sqlx::query(&sql)
            .bind(i64::from(response.status))
            .bind(response.body.as_str())
            .bind(now_ms + self.ttl_ms())
            .bind(scope.buyer.as_str())
            .bind(scope.key.as_str())
            .bind(hash.as_str())
            .bind(owner.as_str())
            .execute(self.db.pool())
            .await?
            .rows_affected();
        Ok(Finished::from_count(stored))
    }

    async fn abandon(
        &self,
        scope: &KeyScope,
        hash: &RequestHash,
        owner: &LeaseOwner,
    ) -> Result<(), RecordError> {
        self.on_own_claim("DELETE FROM idempotency_records", scope, hash, owner)
            .await
    }

    async fn step_aside(
        &self,
        scope: &KeyScope,
        hash: &RequestHash,
        owner: &LeaseOwner,
    ) -> Result<(), RecordError> {
        self.on_own_claim(
            "UPDATE idempotency_records SET lease_until = 0",
            scope,
            hash,
            owner,
        )
        .await
    }

    async fn lookup(&self, scope: &KeyScope, now_ms: i64) -> Result<Option<Record>, RecordError> {
        Ok(self
            .read(scope)
            .await?
            .filter(|row| row.expires_at >= now_ms)
            .map(|row| match row.done {
                Some(stored) => Record::Done(stored),
                None if row.lease_until > now_ms => Record::Running,
                None => Record::Abandoned,
            }))
    }
}
