//! The Redis reservation store: the Lua scripts in `lua/`, compiled in and
//! run by EVALSHA (the redis crate's `Script` falls back to loading the
//! script on NOSCRIPT, e.g. after a Redis restart).
//!
//! Keys of item 42 under prefix `p`:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `p inv:{42}:stock` | string | units neither held nor sold |
//! | `p inv:{42}:holds` | hash | token → `qty:buyer` |
//! | `p inv:{42}:deadlines` | sorted set | token → deadline (ms) |
//! | `p inv:{42}:buyers` | hash | buyer → units held or bought (limited items) |
//! | `p inv:{42}:meta` | hash | `version` of the load, `max_per_buyer` |
//! | `p inv:{42}:reaped` | hash | reaped token → `qty:buyer`, for a late confirm |
//! | `p inv:holding` | set | ids of items that may have holds (the reaper's worklist) |
//!
//! The `{42}` hash tag puts every key of an item in one cluster slot, so each
//! script touches one slot. The worklist is a separate single-key command.

use super::{
    Confirmed, CounterSeed, Hold, HoldToken, REAP_BATCH, REAPED_MEMORY_SECS, Reaped, Reconciled,
    ReservationStore, Reserved, StoreError,
};
use crate::redis_conn::RedisConn;
use app::domain::{BuyerId, ItemId};
use redis::{AsyncCommands, RedisError, Script};
use std::sync::LazyLock;

struct Scripts {
    reserve: Script,
    confirm: Script,
    release: Script,
    reap: Script,
    load: Script,
    restock: Script,
    return_units: Script,
    reconcile: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    reserve: Script::new(include_str!("../../../lua/reserve.lua")),
    confirm: Script::new(include_str!("../../../lua/confirm.lua")),
    release: Script::new(include_str!("../../../lua/release.lua")),
    reap: Script::new(include_str!("../../../lua/reap.lua")),
    load: Script::new(include_str!("../../../lua/load.lua")),
    restock: Script::new(include_str!("../../../lua/restock.lua")),
    return_units: Script::new(include_str!("../../../lua/return_units.lua")),
    reconcile: Script::new(include_str!("../../../lua/reconcile.lua")),
});

/// The keys of one item.
struct ItemKeys {
    stock: String,
    holds: String,
    deadlines: String,
    buyers: String,
    meta: String,
    reaped: String,
}

pub struct RedisStore {
    conn: RedisConn,
    prefix: String,
}

impl RedisStore {
    /// `prefix` goes before every key; it must not contain braces.
    pub fn new(conn: RedisConn, prefix: impl Into<String>) -> Self {
        Self {
            conn,
            prefix: prefix.into(),
        }
    }

    fn keys(&self, item: ItemId) -> ItemKeys {
        let base = format!("{}inv:{{{item}}}", self.prefix);
        ItemKeys {
            stock: format!("{base}:stock"),
            holds: format!("{base}:holds"),
            deadlines: format!("{base}:deadlines"),
            buyers: format!("{base}:buyers"),
            meta: format!("{base}:meta"),
            reaped: format!("{base}:reaped"),
        }
    }

    fn worklist_key(&self) -> String {
        format!("{}inv:holding", self.prefix)
    }

    fn conn(&self) -> RedisConn {
        self.conn.clone()
    }
}

fn store_error(e: RedisError) -> StoreError {
    if e.is_timeout() {
        StoreError::Timeout
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        StoreError::Unreachable(e.to_string())
    } else {
        StoreError::Protocol(e.to_string())
    }
}

#[async_trait::async_trait]
impl ReservationStore for RedisStore {
    fn kind(&self) -> &'static str {
        if self.conn.is_cluster() {
            "redis-cluster"
        } else {
            "redis"
        }
    }

    /// Runs `lua/reserve.lua` (KEYS stock, holds, deadlines, buyers, meta;
    /// ARGV token, buyer, qty, deadline); when it took a hold, lists the item
    /// for the reaper (`SADD`, a separate command: the worklist lives in
    /// another cluster slot). A refusal (sold out, limit) costs one round
    /// trip. A hold whose listing failed is given back; a hold left unlisted
    /// by a crash between the two is still reaped by the reconciliation pass,
    /// which reaps every item.
    async fn reserve(&self, item: ItemId, hold: &Hold) -> Result<Reserved, StoreError> {
        let k = self.keys(item);
        let mut conn = self.conn();
        let (status, value, holds): (i64, i64, i64) = SCRIPTS
            .reserve
            .key(&k.stock)
            .key(&k.holds)
            .key(&k.deadlines)
            .key(&k.buyers)
            .key(&k.meta)
            .arg(hold.token.as_str())
            .arg(hold.buyer.as_str())
            .arg(hold.qty.get())
            .arg(hold.deadline.as_ms())
            .invoke_async(&mut conn)
            .await
            .map_err(store_error)?;
        let reserved = match status {
            1 => Reserved::Held { remaining: value },
            2 => Reserved::AlreadyHeld,
            0 => Reserved::SoldOut {
                available: value,
                holds: holds.max(0) as u64,
            },
            -1 => Reserved::NotLoaded,
            -2 => Reserved::LimitExceeded { already: value },
            other => {
                return Err(StoreError::Protocol(format!(
                    "reserve returned status {other}"
                )));
            }
        };
        if matches!(reserved, Reserved::Held { .. }) {
            let listed: Result<i64, RedisError> = conn.sadd(self.worklist_key(), item.get()).await;
            if let Err(e) = listed {
                let _ = self.release(item, &hold.token).await;
                return Err(store_error(e));
            }
        }
        Ok(reserved)
    }

    /// Runs `lua/load.lua` (KEYS stock, holds, meta, deadlines; ARGV stock,
    /// version, max_per_buyer, committed tokens...).
    async fn load(
        &self,
        item: ItemId,
        seed: CounterSeed,
        committed: &[HoldToken],
    ) -> Result<i64, StoreError> {
        let k = self.keys(item);
        let mut invocation = SCRIPTS.load.key(&k.stock);
        invocation
            .key(&k.holds)
            .key(&k.meta)
            .key(&k.deadlines)
            .arg(seed.stock)
            .arg(seed.version)
            .arg(seed.max_per_buyer.unwrap_or(0));
        for token in committed {
            invocation.arg(token.as_str());
        }
        let (_loaded, counter): (i64, i64) = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(counter)
    }

    async fn hold_tokens(&self, item: ItemId) -> Result<Vec<HoldToken>, StoreError> {
        let tokens: Vec<String> = self
            .conn()
            .hkeys(self.keys(item).holds)
            .await
            .map_err(store_error)?;
        Ok(tokens.into_iter().map(HoldToken::from_stored).collect())
    }

    /// Runs `lua/confirm.lua` (KEYS stock, holds, deadlines, buyers, meta,
    /// reaped; ARGV token).
    async fn confirm(&self, item: ItemId, token: &HoldToken) -> Result<Confirmed, StoreError> {
        let k = self.keys(item);
        let status: i64 = SCRIPTS
            .confirm
            .key(&k.stock)
            .key(&k.holds)
            .key(&k.deadlines)
            .key(&k.buyers)
            .key(&k.meta)
            .key(&k.reaped)
            .arg(token.as_str())
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        match status {
            1 => Ok(Confirmed::HoldEnded),
            2 => Ok(Confirmed::TakenAfterReap),
            0 => Ok(Confirmed::NoHold),
            other => Err(StoreError::Protocol(format!("confirm returned {other}"))),
        }
    }

    /// Runs `lua/release.lua` (KEYS stock, holds, deadlines, buyers, reaped;
    /// ARGV token).
    async fn release(&self, item: ItemId, token: &HoldToken) -> Result<bool, StoreError> {
        let k = self.keys(item);
        let given_back: i64 = SCRIPTS
            .release
            .key(&k.stock)
            .key(&k.holds)
            .key(&k.deadlines)
            .key(&k.buyers)
            .key(&k.reaped)
            .arg(token.as_str())
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(given_back == 1)
    }

    /// Runs `lua/reap.lua` (KEYS stock, holds, deadlines, buyers, reaped;
    /// ARGV now, batch, memory) until a batch comes back short, then drops the
    /// item from the worklist if it has no hold left. A hold added between
    /// the check and the removal is caught by checking again afterwards.
    async fn reap(&self, item: ItemId, now_ms: i64) -> Result<Reaped, StoreError> {
        let k = self.keys(item);
        let mut conn = self.conn();
        let mut total = Reaped::default();
        loop {
            let (given_back, holds_left): (u64, u64) = SCRIPTS
                .reap
                .key(&k.stock)
                .key(&k.holds)
                .key(&k.deadlines)
                .key(&k.buyers)
                .key(&k.reaped)
                .arg(now_ms)
                .arg(REAP_BATCH)
                .arg(REAPED_MEMORY_SECS)
                .invoke_async(&mut conn)
                .await
                .map_err(store_error)?;
            total.given_back += given_back;
            total.holds_left = holds_left;
            if given_back < u64::from(REAP_BATCH) {
                break;
            }
        }
        if total.holds_left == 0 {
            let worklist = self.worklist_key();
            let _: i64 = conn
                .srem(&worklist, item.get())
                .await
                .map_err(store_error)?;
            let holds: u64 = conn.hlen(&k.holds).await.map_err(store_error)?;
            if holds > 0 {
                let _: i64 = conn
                    .sadd(&worklist, item.get())
                    .await
                    .map_err(store_error)?;
                total.holds_left = holds;
            }
        }
        Ok(total)
    }

    async fn items_with_holds(&self) -> Result<Vec<ItemId>, StoreError> {
        let ids: Vec<i64> = self
            .conn()
            .smembers(self.worklist_key())
            .await
            .map_err(store_error)?;
        Ok(ids
            .into_iter()
            .filter_map(|id| ItemId::new(id).ok())
            .collect())
    }

    /// Runs `lua/restock.lua` (KEYS stock, meta; ARGV delta, version).
    async fn restock(
        &self,
        item: ItemId,
        delta: i64,
        version_after: i64,
    ) -> Result<bool, StoreError> {
        let k = self.keys(item);
        let (applied, _counter): (i64, i64) = SCRIPTS
            .restock
            .key(&k.stock)
            .key(&k.meta)
            .arg(delta)
            .arg(version_after)
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(applied == 1)
    }

    /// Runs `lua/return_units.lua` (KEYS stock, meta, buyers; ARGV qty,
    /// version, buyer).
    async fn return_units(
        &self,
        item: ItemId,
        qty: i64,
        version_after: i64,
        buyer: &BuyerId,
    ) -> Result<bool, StoreError> {
        let k = self.keys(item);
        let (applied, _counter): (i64, i64) = SCRIPTS
            .return_units
            .key(&k.stock)
            .key(&k.meta)
            .key(&k.buyers)
            .arg(qty)
            .arg(version_after)
            .arg(buyer.as_str())
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(applied == 1)
    }

    /// Runs `lua/reconcile.lua` (KEYS stock, holds, meta; ARGV stock, version).
    async fn reconcile(&self, item: ItemId, seed: CounterSeed) -> Result<Reconciled, StoreError> {
        let k = self.keys(item);
        let (status, value): (i64, i64) = SCRIPTS
            .reconcile
            .key(&k.stock)
            .key(&k.holds)
            .key(&k.meta)
            .arg(seed.stock)
            .arg(seed.version)
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        match status {
            0 => Ok(Reconciled::NotLoaded),
            1 => Ok(Reconciled::Busy {
                holds: value.max(0) as u64,
            }),
            2 => Ok(Reconciled::Repaired { drift: value }),
            3 => Ok(Reconciled::InStep),
            other => Err(StoreError::Protocol(format!("reconcile returned {other}"))),
        }
    }

    async fn forget_counter(&self, item: ItemId) -> Result<(), StoreError> {
        let _: i64 = self
            .conn()
            .del(self.keys(item).stock)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn counter(&self, item: ItemId) -> Result<Option<i64>, StoreError> {
        self.conn()
            .get(self.keys(item).stock)
            .await
            .map_err(store_error)
    }

    async fn live_holds(&self, item: ItemId) -> Result<u64, StoreError> {
        self.conn()
            .hlen(self.keys(item).holds)
            .await
            .map_err(store_error)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let pong: String = redis::cmd("PING")
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Protocol(format!("PING answered {pong}")))
        }
    }
}
