//! The Redis reservation store: the Lua scripts in `lua/`, compiled in and
//! run by EVALSHA (the redis crate's `Script` falls back to loading the
//! script on NOSCRIPT, e.g. after a Redis restart).
//!
//! Keys of item 42 under prefix `p`:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `p inv:{42}:stock` | string | units neither held nor sold |
//! | `p inv:{42}:holds` | hash | token → `qty:buyer[:pass]` |
//! | `p inv:{42}:deadlines` | sorted set | token → deadline (ms) |
//! | `p inv:{42}:buyers` | hash | buyer → units held or bought (limited items) |
//! | `p inv:{42}:meta` | hash | `version` of the load, `max_per_buyer`, the sale terms (`starts`, `ends`, `queued`, `rate`, `ttl`, `paused`, `terms_version`), the waiting room's `queue_loaded`, token bucket (`tokens`, `last_ms`) and counts (`passes_used`, `passes_expired`) |
//! | `p inv:{42}:reaped` | hash | reaped token → `qty:buyer[:pass]`, for a late confirm |
//! | `p inv:{42}:passes` | hash | waiting-room pass → `buyer|expires_ms|state` |
//! | `p inv:{42}:open` | sorted set | open pass → expiry (ms) |
//! | `p inv:{42}:pass_of` | hash | buyer → pass |
//! | `p inv:{42}:line` | sorted set | ticket → place in the waiting room |
//! | `p inv:{42}:tickets` | hash | buyer → ticket |
//! | `p inv:{42}:ticket_buyers` | hash | ticket → buyer |
//! | `p inv:holding` | set | ids of items that may have holds (the reaper's worklist) |
//! | `p inv:queues` | set | ids of items with a waiting room (the admitter's worklist) |
//!
//! The `{42}` hash tag puts every key of an item in one cluster slot, so each
//! script touches one slot. The worklist is a separate single-key command.

use super::queue::{
    Admitted, Joined, LineEntry, PassState, PassView, QueuePass, QueueRead, QueueStats,
    QueueTicket, QueueView, SaleTerms, WaitingRoom,
};
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
    terms: Script,
    queue_join: Script,
    queue_load: Script,
    queue_admit: Script,
    queue_status: Script,
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
    terms: Script::new(include_str!("../../../lua/terms.lua")),
    queue_join: Script::new(include_str!("../../../lua/queue_join.lua")),
    queue_load: Script::new(include_str!("../../../lua/queue_load.lua")),
    queue_admit: Script::new(include_str!("../../../lua/queue_admit.lua")),
    queue_status: Script::new(include_str!("../../../lua/queue_status.lua")),
});

/// The keys of one item.
struct ItemKeys {
    stock: String,
    holds: String,
    deadlines: String,
    buyers: String,
    meta: String,
    reaped: String,
    passes: String,
    open: String,
    pass_of: String,
    line: String,
    tickets: String,
    ticket_buyers: String,
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
            passes: format!("{base}:passes"),
            open: format!("{base}:open"),
            pass_of: format!("{base}:pass_of"),
            line: format!("{base}:line"),
            tickets: format!("{base}:tickets"),
            ticket_buyers: format!("{base}:ticket_buyers"),
        }
    }

    fn worklist_key(&self) -> String {
        format!("{}inv:holding", self.prefix)
    }

    fn queues_key(&self) -> String {
        format!("{}inv:queues", self.prefix)
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

    /// Runs `lua/reserve.lua` (KEYS stock, holds, deadlines, buyers, meta,
    /// passes, open; ARGV token, buyer, qty, deadline, pass); when it took a
    /// hold, lists the item
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
            .key(&k.passes)
            .key(&k.open)
            .arg(hold.token.as_str())
            .arg(hold.buyer.as_str())
            .arg(hold.qty.get())
            .arg(hold.deadline.as_ms())
            .arg(hold.pass.as_ref().map_or("", QueuePass::as_str))
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
            -3 => Reserved::PassRequired,
            -4 => Reserved::PassInvalid,
            -5 => Reserved::NotStarted {
                starts_in_ms: value,
            },
            -6 => Reserved::Ended,
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

    /// Runs `lua/load.lua` (KEYS stock, holds, meta, deadlines, reaped; ARGV stock,
    /// version, max_per_buyer, the six terms, committed tokens...).
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
            .key(&k.reaped)
            .arg(seed.stock)
            .arg(seed.version)
            .arg(seed.max_per_buyer.unwrap_or(0));
        for term in terms_args(&seed.terms) {
            invocation.arg(term);
        }
        for token in committed {
            invocation.arg(token.as_str());
        }
        let (_loaded, counter): (i64, i64) = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        self.list_waiting_room(item, &seed.terms).await?;
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
    /// reaped, passes, open; ARGV token).
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
            .key(&k.passes)
            .key(&k.open)
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

    /// Runs `lua/release.lua` (KEYS stock, holds, deadlines, buyers, reaped,
    /// passes, open; ARGV token).
    async fn release(&self, item: ItemId, token: &HoldToken) -> Result<bool, StoreError> {
        let k = self.keys(item);
        let given_back: i64 = SCRIPTS
            .release
            .key(&k.stock)
            .key(&k.holds)
            .key(&k.deadlines)
            .key(&k.buyers)
            .key(&k.reaped)
            .key(&k.passes)
            .key(&k.open)
            .arg(token.as_str())
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(given_back == 1)
    }

    /// Runs `lua/reap.lua` (KEYS stock, holds, deadlines, buyers, reaped,
    /// passes, open; ARGV now, batch, memory) until a batch comes back short, then drops the
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
                .key(&k.passes)
                .key(&k.open)
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

    /// Runs `lua/reconcile.lua` (KEYS stock, holds, meta, reaped; ARGV
    /// stock, version).
    async fn reconcile(&self, item: ItemId, seed: CounterSeed) -> Result<Reconciled, StoreError> {
        let k = self.keys(item);
        let (status, value): (i64, i64) = SCRIPTS
            .reconcile
            .key(&k.stock)
            .key(&k.holds)
            .key(&k.meta)
            .key(&k.reaped)
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

/// The terms as `lua/terms.lua` and `lua/load.lua` take them: start, end
/// ('' when none), waiting room, rate, pass lifetime, paused.
fn terms_args(terms: &SaleTerms) -> [String; 6] {
    let ms = |v: Option<i64>| v.map(|ms| ms.to_string()).unwrap_or_default();
    let flag = |on: bool| if on { "1" } else { "0" }.to_owned();
    let (rate, ttl) = terms
        .waiting_room
        .map_or((0, 120), |w| (w.per_second, w.pass_ttl_secs));
    [
        ms(terms.starts_at_ms),
        ms(terms.ends_at_ms),
        flag(terms.waiting_room.is_some()),
        rate.to_string(),
        ttl.to_string(),
        flag(terms.paused),
    ]
}

impl RedisStore {
    /// Keeps the admitter's worklist: items whose terms have a waiting room.
    async fn list_waiting_room(&self, item: ItemId, terms: &SaleTerms) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let _: i64 = if terms.waiting_room.is_some() {
            conn.sadd(self.queues_key(), item.get()).await
        } else {
            conn.srem(self.queues_key(), item.get()).await
        }
        .map_err(store_error)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl WaitingRoom for RedisStore {
    /// Runs `lua/terms.lua` (KEYS meta; ARGV version, the six terms).
    async fn set_terms(
        &self,
        item: ItemId,
        terms: &SaleTerms,
        version: i64,
    ) -> Result<bool, StoreError> {
        let k = self.keys(item);
        let mut invocation = SCRIPTS.terms.key(&k.meta);
        invocation.arg(version);
        for term in terms_args(terms) {
            invocation.arg(term);
        }
        let applied: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        self.list_waiting_room(item, terms).await?;
        Ok(applied == 1)
    }

    /// Runs `lua/queue_join.lua` (KEYS meta, line, tickets, ticket_buyers;
    /// ARGV buyer, ticket, place).
    async fn join(
        &self,
        item: ItemId,
        buyer: &BuyerId,
        ticket: &QueueTicket,
        place: f64,
    ) -> Result<Joined, StoreError> {
        let k = self.keys(item);
        let (status, ticket): (i64, String) = SCRIPTS
            .queue_join
            .key(&k.meta)
            .key(&k.line)
            .key(&k.tickets)
            .key(&k.ticket_buyers)
            .arg(buyer.as_str())
            .arg(ticket.as_str())
            .arg(place)
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(match status {
            -1 => Joined::LineNotLoaded,
            new => Joined::In {
                ticket: QueueTicket::from_stored(ticket),
                new: new == 1,
            },
        })
    }

    /// Runs `lua/queue_load.lua` (KEYS meta, line, tickets, ticket_buyers;
    /// ARGV buyer, ticket, place, in line, per ticket).
    async fn load_line(&self, item: ItemId, entries: &[LineEntry]) -> Result<bool, StoreError> {
        let k = self.keys(item);
        let mut invocation = SCRIPTS.queue_load.key(&k.meta);
        invocation
            .key(&k.line)
            .key(&k.tickets)
            .key(&k.ticket_buyers);
        for entry in entries {
            invocation
                .arg(entry.buyer.as_str())
                .arg(entry.ticket.as_str())
                .arg(entry.place)
                .arg(if entry.in_line { "1" } else { "0" });
        }
        let loaded: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(loaded == 1)
    }

    /// Runs `lua/queue_admit.lua` (KEYS stock, meta, line, tickets,
    /// ticket_buyers, passes, open, pass_of; ARGV candidate passes).
    async fn admit(&self, item: ItemId, candidates: &[QueuePass]) -> Result<Admitted, StoreError> {
        let k = self.keys(item);
        let mut invocation = SCRIPTS.queue_admit.key(&k.stock);
        invocation
            .key(&k.meta)
            .key(&k.line)
            .key(&k.tickets)
            .key(&k.ticket_buyers)
            .key(&k.passes)
            .key(&k.open)
            .key(&k.pass_of);
        for pass in candidates {
            invocation.arg(pass.as_str());
        }
        let (admitted, expired): (i64, i64) = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(match admitted {
            -1 => Admitted::LineNotLoaded,
            -2 => Admitted::CounterNotLoaded,
            n => Admitted::Done {
                admitted: n.max(0) as u64,
                expired: expired.max(0) as u64,
            },
        })
    }

    /// Runs `lua/queue_status.lua` (KEYS stock, holds, meta, line, tickets,
    /// passes, pass_of; ARGV buyer).
    async fn queue_view(&self, item: ItemId, buyer: &BuyerId) -> Result<QueueRead, StoreError> {
        let k = self.keys(item);
        #[allow(clippy::type_complexity)]
        let answer: (
            i64,
            String,
            i64,
            String,
            String,
            i64,
            i64,
            i64,
            i64,
            i64,
            i64,
            i64,
        ) = SCRIPTS
            .queue_status
            .key(&k.stock)
            .key(&k.holds)
            .key(&k.meta)
            .key(&k.line)
            .key(&k.tickets)
            .key(&k.passes)
            .key(&k.pass_of)
            .arg(buyer.as_str())
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        let (
            status,
            ticket,
            rank,
            pass,
            state,
            expires,
            sold_out,
            ended,
            before,
            paused,
            rate,
            now,
        ) = answer;
        Ok(match status {
            -1 => QueueRead::LineNotLoaded,
            -2 => QueueRead::CounterNotLoaded,
            0 => QueueRead::NotJoined,
            _ => QueueRead::Joined(QueueView {
                ticket: QueueTicket::from_stored(ticket),
                rank: u64::try_from(rank).ok(),
                pass: pass_view(pass, &state, expires),
                sold_out: sold_out == 1,
                ended: ended == 1,
                before_start: before == 1,
                paused: paused == 1,
                per_second: u32::try_from(rate).unwrap_or(0),
                now_ms: now,
            }),
        })
    }

    async fn queue_stats(&self, item: ItemId) -> Result<QueueStats, StoreError> {
        let k = self.keys(item);
        let mut conn = self.conn();
        let waiting: u64 = conn.zcard(&k.line).await.map_err(store_error)?;
        let open_passes: u64 = conn.zcard(&k.open).await.map_err(store_error)?;
        let (used, expired): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(&k.meta)
            .arg("passes_used")
            .arg("passes_expired")
            .query_async(&mut conn)
            .await
            .map_err(store_error)?;
        Ok(QueueStats {
            waiting,
            open_passes,
            passes_used: used.unwrap_or(0),
            passes_expired: expired.unwrap_or(0),
        })
    }

    async fn items_with_waiting_rooms(&self) -> Result<Vec<ItemId>, StoreError> {
        let ids: Vec<i64> = self
            .conn()
            .smembers(self.queues_key())
            .await
            .map_err(store_error)?;
        Ok(ids
            .into_iter()
            .filter_map(|id| ItemId::new(id).ok())
            .collect())
    }
}

/// A pass as the status script reports it.
fn pass_view(pass: String, state: &str, expires_at_ms: i64) -> Option<PassView> {
    let state = match state {
        "open" => PassState::Open,
        "held" => PassState::Held,
        "used" => PassState::Used,
        _ => return None,
    };
    (!pass.is_empty()).then(|| PassView {
        pass: QueuePass::from_raw(pass),
        state,
        expires_at_ms,
    })
}
