//! Loading a counter from the database, the source of truth.
//!
//! A counter that is not loaded (first sale, FLUSHALL, restart) is never
//! guessed: it is set from the item's stock minus the live holds whose
//! orders have not committed. A hold whose order did commit (its confirm was
//! lost, say in a Redis outage) is ended instead of being subtracted a
//! second time. One loader per item runs at a time, so a burst on a cold
//! item reads the database once.

use super::memo::SoldOutMemo;
use super::{CounterSeed, HoldToken, ReservationStore, StoreError};
use crate::db::{Database, items, orders};
use app::domain::ItemId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum LoadFailure {
    #[error("no such item")]
    UnknownItem,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading the database failed: {0}")]
    Database(#[from] sqlx::Error),
}

pub struct CounterLoader {
    store: Arc<dyn ReservationStore>,
    db: Database,
    memo: Arc<SoldOutMemo>,
    loading: Mutex<HashMap<ItemId, Arc<tokio::sync::Mutex<()>>>>,
}

impl CounterLoader {
    pub fn new(store: Arc<dyn ReservationStore>, db: Database, memo: Arc<SoldOutMemo>) -> Self {
        Self {
            store,
            db,
            memo,
            loading: Mutex::default(),
        }
    }

    /// Loads the item's counter unless it is loaded (or another request
    /// just loaded it).
    ///
    /// # Errors
    /// An unknown item, or a failing store or database.
    pub async fn load(&self, item: ItemId) -> Result<(), LoadFailure> {
        let lock = {
            let mut loading = self
                .loading
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            loading.entry(item).or_default().clone()
        };
        let guard = lock.lock().await;
        let result = self.load_locked(item).await;
        drop(guard);
        let mut loading = self
            .loading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if loading
            .get(&item)
            .is_some_and(|l| Arc::strong_count(l) <= 2)
        {
            loading.remove(&item);
        }
        result
    }

    /// Drops the item's counter and loads it again: for counters known to
    /// have missed orders (sold around Redis while the breaker was open).
    ///
    /// # Errors
    /// As [`CounterLoader::load`].
    pub async fn reload(&self, item: ItemId) -> Result<(), LoadFailure> {
        self.memo.forget(item);
        self.store.forget_counter(item).await?;
        self.load(item).await
    }

    async fn load_locked(&self, item: ItemId) -> Result<(), LoadFailure> {
        if self.store.counter(item).await?.is_some() {
            return Ok(());
        }
        let Some(row) = items::get(&self.db, item).await? else {
            return Err(LoadFailure::UnknownItem);
        };
        // The stock first, then which holds' orders committed: see load.lua.
        let committed = self.committed_holds(item).await?;
        let counter = self
            .store
            .load(item, CounterSeed::of(&row), &committed)
            .await?;
        tracing::info!(%item, counter, db_stock = row.stock, committed_holds = committed.len(), "loaded reservation counter from the database");
        Ok(())
    }

    /// The item's live holds whose orders the database already has.
    async fn committed_holds(&self, item: ItemId) -> Result<Vec<HoldToken>, LoadFailure> {
        let tokens = self.store.hold_tokens(item).await?;
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let by_parts: HashMap<_, _> = tokens
            .into_iter()
            .filter_map(|token| token.parts().map(|parts| (parts, token)))
            .collect();
        let pairs: Vec<_> = by_parts.keys().cloned().collect();
        let committed = orders::which_exist(&self.db, &pairs).await?;
        Ok(committed
            .into_iter()
            .filter_map(|parts| by_parts.get(&parts).cloned())
            .collect())
    }
}
