//! When a buyer's Redis records can vouch for the database.
//!
//! A refusal may skip the orders table only if the claim proves the key has
//! no order. In Redis that proof is a per-buyer marker, written when the
//! buyer's durable answers (orders, stored refusals) were loaded from the
//! database into Redis, and kept up to date by every attempt that claims in
//! Redis. Two things can make a marker lie:
//!
//! - Redis loses data (a restart without persistence, a FLUSHALL, a
//!   failover): markers vanish with the records, so buyers are loaded again;
//! - an order commits without a Redis claim (the breaker sends attempts to
//!   the database's records, or a request asks for strategy B): its key is
//!   in the database, not in Redis.
//!
//! For the second, the database keeps one row: a `generation` and a bypass
//! lease. An instance that is about to commit an order around Redis first
//! takes the lease (starting one bumps the generation) and, the first time
//! for a generation, waits [`BYPASS_WAIT`]: longer than any instance keeps
//! trusting what it last read. While a lease runs, no instance proves
//! anything from Redis (its refusals are checked against the orders table);
//! afterwards, every marker of an older generation is stale and its buyer is
//! loaded again, with the orders committed around Redis.
//!
//! Every instance reads the row every [`REFRESH`] and trusts its reading for
//! [`MAX_AGE`]; an instance that cannot read it proves nothing.

use crate::background::BackgroundTask;
use crate::db::Database;
use sqlx::Row;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often each instance reads the generation row.
pub const REFRESH: Duration = Duration::from_millis(200);
/// How long a reading is trusted.
pub const MAX_AGE: Duration = Duration::from_secs(1);
/// How long an instance waits after a lease began before committing its
/// first order around Redis: every other instance has by then read the
/// lease, or stopped trusting its older reading.
pub const BYPASS_WAIT: Duration = Duration::from_millis(1_500);
/// How long one lease write covers; renewed while orders keep going around
/// Redis.
const LEASE: Duration = Duration::from_secs(5);
/// Renew when less than this is left.
const RENEW_BELOW: Duration = Duration::from_secs(2);

/// A generation of Redis records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation(i64);

impl Generation {
    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    generation: Generation,
    leased: bool,
    at: Instant,
}

/// This instance's own lease: until when it covers (by this instance's
/// clock, on the safe side) and the generation it already waited for.
#[derive(Debug, Default)]
struct OwnLease {
    covers_until: Option<Instant>,
    waited_for: Option<Generation>,
}

pub struct RecordsGeneration {
    db: Database,
    reading: Mutex<Option<Reading>>,
    lease: tokio::sync::Mutex<OwnLease>,
}

impl RecordsGeneration {
    /// Reads the row once.
    ///
    /// # Errors
    /// The database cannot be read.
    pub async fn start(db: Database) -> Result<Self, sqlx::Error> {
        let generation = Self {
            db,
            reading: Mutex::new(None),
            lease: tokio::sync::Mutex::new(OwnLease::default()),
        };
        generation.refresh().await?;
        Ok(generation)
    }

    fn reading(&self) -> std::sync::MutexGuard<'_, Option<Reading>> {
        self.reading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The generation this instance can vouch for right now: `None` while a
    /// bypass lease runs or when its last reading is too old.
    pub fn current(&self) -> Option<Generation> {
        let reading = (*self.reading())?;
        (!reading.leased && reading.at.elapsed() <= MAX_AGE).then_some(reading.generation)
    }

    /// Reads the row again.
    ///
    /// # Errors
    /// The database cannot be read.
    pub async fn refresh(&self) -> Result<(), sqlx::Error> {
        let now = self.db.dialect().now_ms_sql();
        let sql = format!(
            "SELECT generation, CASE WHEN bypass_until_ms > {now} THEN 1 ELSE 0 END AS leased \
             FROM record_generation WHERE id = 1"
        );
        let asked = Instant::now();
        let row = sqlx::query(&sql).fetch_one(self.db.pool()).await?;
        let generation = Generation(row.try_get("generation")?);
        let leased: i64 = row.try_get("leased")?;
        // The reading is as old as the question, not the answer.
        *self.reading() = Some(Reading {
            generation,
            leased: leased != 0,
            at: asked,
        });
        Ok(())
    }

    /// Reads the row every [`REFRESH`] until dropped.
    pub fn spawn_refresh(self: std::sync::Arc<Self>) -> BackgroundTask {
        BackgroundTask::every(REFRESH, move || {
            let generation = self.clone();
            async move {
                if let Err(e) = generation.refresh().await {
                    tracing::warn!(error = %e, "reading the records generation failed; proofs from Redis pause");
                }
            }
        })
    }

    /// Makes sure a bypass lease covers an order about to commit around
    /// Redis, starting one (and waiting [`BYPASS_WAIT`]) when none runs.
    ///
    /// # Errors
    /// The database cannot be written.
    pub async fn lease_for_bypass(&self) -> Result<(), sqlx::Error> {
        let mut own = self.lease.lock().await;
        let now = Instant::now();
        let covered = own
            .covers_until
            .is_some_and(|until| until.saturating_duration_since(now) >= RENEW_BELOW);
        if covered && own.waited_for.is_some() {
            return Ok(());
        }
        let db_now = self.db.dialect().now_ms_sql();
        let sql = format!(
            "UPDATE record_generation SET \
             generation = CASE WHEN bypass_until_ms > {db_now} THEN generation ELSE generation + 1 END, \
             bypass_until_ms = {db_now} + ? WHERE id = 1"
        );
        sqlx::query(&self.db.sql(&sql))
            .bind(LEASE.as_millis() as i64)
            .execute(self.db.pool())
            .await?;
        own.covers_until = Some(now + LEASE);
        let generation: i64 =
            sqlx::query_scalar("SELECT generation FROM record_generation WHERE id = 1")
                .fetch_one(self.db.pool())
                .await?;
        let generation = Generation(generation);
        if own.waited_for != Some(generation) {
            tracing::warn!(%generation, "orders go around Redis: waiting until every instance stops trusting its Redis records");
            tokio::time::sleep(BYPASS_WAIT).await;
            own.waited_for = Some(generation);
        }
        Ok(())
    }
}
