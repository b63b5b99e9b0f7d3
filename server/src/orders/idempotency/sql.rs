//! Idempotency records in the database (`idempotency_records`), for the
//! embedded default and strategy B. A claim is an insert that the primary key
//! (buyer, key) lets only one request win.

use super::{CLAIM_LEASE, Claim, IdempotencyStore, KeyScope, Record, RecordError, StoredResponse};
use crate::db::{Database, Dialect};
use sqlx::Row;
use std::time::Duration;

pub struct SqlRecords {
    db: Database,
    ttl: Duration,
}

impl SqlRecords {
    pub fn new(db: Database, ttl: Duration) -> Self {
        Self { db, ttl }
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

    /// The claim's insert, which the primary key lets only one request win:
    /// a running claim, or (`answered`) a record done with its answer.
    fn insert_sql(&self, answered: bool) -> String {
        let columns = if answered {
            "(buyer, idempotency_key, request_hash, state, lease_until, expires_at, response_status, response_body) \
            VALUES (?, ?, ?, 'done', ?, ?, ?, ?)"
        } else {
            "(buyer, idempotency_key, request_hash, state, lease_until, expires_at) \
            VALUES (?, ?, ?, 'running', ?, ?)"
        };
        let sql = match self.db.dialect() {
            Dialect::Sqlite => format!("INSERT OR IGNORE INTO idempotency_records {columns}"),
            Dialect::MySql => format!("INSERT IGNORE INTO idempotency_records {columns}"),
            Dialect::Postgres => {
                format!("INSERT INTO idempotency_records {columns} ON CONFLICT DO NOTHING")
            }
        };
        self.db.sql(&sql).into_owned()
    }

    fn ttl_ms(&self) -> i64 {
        self.ttl.as_millis() as i64
    }
}

struct RecordRow {
    hash: String,
    state: String,
    status: Option<i64>,
    body: Option<String>,
    lease_until: i64,
    expires_at: i64,
}

impl SqlRecords {
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
            Ok(RecordRow {
                hash: row.try_get("request_hash")?,
                state: row.try_get("state")?,
                status: row.try_get("response_status")?,
                body: row.try_get("response_body")?,
                lease_until: row.try_get("lease_until")?,
                expires_at: row.try_get("expires_at")?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| RecordError::from(e))
    }
}

fn done(row: &RecordRow) -> Option<StoredResponse> {
    match (row.state.as_str(), row.status, &row.body) {
        ("done", Some(status), Some(body)) => Some(StoredResponse {
            status: u16::try_from(status).unwrap_or(500),
            body: body.clone(),
        }),
        _ => None,
    }
}

#[async_trait::async_trait]
impl IdempotencyStore for SqlRecords {
    fn kind(&self) -> &'static str {
        "database"
    }

    async fn claim(
        &self,
        scope: &KeyScope,
        hash: &str,
        now_ms: i64,
        answer: Option<&StoredResponse>,
    ) -> Result<Claim, RecordError> {
        let lease_until = now_ms + CLAIM_LEASE.as_millis() as i64;
        let insert = self.insert_sql(answer.is_some());
        // Two rounds at most: the second follows the removal of an expired record.
        for _ in 0..2 {
            let mut query = sqlx::query(&insert)
                .bind(scope.buyer.as_str())
                .bind(scope.key.as_str())
                .bind(hash)
                .bind(lease_until)
                .bind(now_ms + self.ttl_ms());
            if let Some(answer) = answer {
                query = query
                    .bind(i64::from(answer.status))
                    .bind(answer.body.as_str());
            }
            let inserted = query.execute(self.db.pool()).await?.rows_affected();
            if inserted == 1 {
                return Ok(if answer.is_some() {
                    Claim::Answered
                } else {
                    Claim::Claimed
                });
            }
            let Some(row) = self.read(scope).await? else {
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
            if row.hash != hash {
                return Ok(Claim::KeyReused);
            }
            if let Some(stored) = done(&row) {
                return Ok(Claim::Replay(stored));
            }
            if row.lease_until > now_ms {
                return Ok(Claim::InProgress);
            }
            // The claim's owner died: take it over, unless someone else just did.
            let sql = self.db.sql(
                "UPDATE idempotency_records SET lease_until = ? \
                 WHERE buyer = ? AND idempotency_key = ? AND state = 'running' AND lease_until = ?",
            );
            let taken = sqlx::query(&sql)
                .bind(lease_until)
                .bind(scope.buyer.as_str())
                .bind(scope.key.as_str())
                .bind(row.lease_until)
                .execute(self.db.pool())
                .await?
                .rows_affected();
            return Ok(if taken == 1 {
                Claim::Claimed
            } else {
                Claim::InProgress
            });
        }
        Ok(Claim::InProgress)
    }

    async fn finish(
        &self,
        scope: &KeyScope,
        hash: &str,
        response: &StoredResponse,
        now_ms: i64,
    ) -> Result<(), RecordError> {
        let sql = self.db.sql(
            "UPDATE idempotency_records SET state = 'done', response_status = ?, response_body = ?, expires_at = ? \
             WHERE buyer = ? AND idempotency_key = ? AND request_hash = ?",
        );
        sqlx::query(&sql)
            .bind(i64::from(response.status))
            .bind(response.body.as_str())
            .bind(now_ms + self.ttl_ms())
            .bind(scope.buyer.as_str())
            .bind(scope.key.as_str())
            .bind(hash)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    async fn abandon(&self, scope: &KeyScope, hash: &str) -> Result<(), RecordError> {
        let sql = self.db.sql(
            "DELETE FROM idempotency_records \
             WHERE buyer = ? AND idempotency_key = ? AND request_hash = ? AND state = 'running'",
        );
        sqlx::query(&sql)
            .bind(scope.buyer.as_str())
            .bind(scope.key.as_str())
            .bind(hash)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    async fn lookup(&self, scope: &KeyScope, now_ms: i64) -> Result<Option<Record>, RecordError> {
        Ok(self
            .read(scope)
            .await?
            .filter(|row| row.expires_at >= now_ms)
            .map(|row| match done(&row) {
                Some(stored) => Record::Done(stored),
                None => Record::Running,
            }))
    }
}
