//! Refusals kept in the database, written in groups.
//!
//! While holds are live, a sold-out refusal must reach the database before
//! it is answered (see [`crate::orders::refusal`]): a unit may still come
//! back, so Redis alone could lose a refusal that a new decision would not
//! repeat. In the first second of a flood that is thousands of refusals.
//! One insert each would put thousands of small transactions in front of
//! the orders' own ledger writes; instead one writer takes every refusal
//! waiting at that moment and keeps them all with one statement (a group
//! commit). A refusal waits at most for the group in flight and its own,
//! and each caller still hears whether its own refusal was kept: a refusal
//! whose group failed is never answered.

use super::RecordError;
use super::sql::{KeptRefusal, SqlRecords};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The most refusals one statement keeps (six values each, far below every
/// database's limit on bound values).
const GROUP: usize = 256;

struct Waiting {
    refusal: KeptRefusal,
    kept: oneshot::Sender<Result<(), RecordError>>,
}

/// The handle callers keep refusals through; its writer stops when the last
/// handle is dropped.
#[derive(Clone)]
pub struct KeptRefusals {
    waiting: mpsc::Sender<Waiting>,
}

impl KeptRefusals {
    /// Starts the writer on the current runtime.
    pub fn start(sql: Arc<SqlRecords>) -> Self {
        let (waiting, queue) = mpsc::channel(GROUP * 16);
        tokio::spawn(write_groups(sql, queue));
        Self { waiting }
    }

    /// Keeps one refusal; returns once its group is in the database.
    ///
    /// # Errors
    /// The group's insert failed, or the writer stopped.
    pub async fn keep(&self, refusal: KeptRefusal) -> Result<(), RecordError> {
        let stopped = || RecordError("the writer of kept refusals stopped".to_owned());
        let (kept, answer) = oneshot::channel();
        self.waiting
            .send(Waiting { refusal, kept })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn write_groups(sql: Arc<SqlRecords>, mut queue: mpsc::Receiver<Waiting>) {
    let mut taken = Vec::with_capacity(GROUP);
    while queue.recv_many(&mut taken, GROUP).await > 0 {
        let (group, callers): (Vec<_>, Vec<_>) =
            taken.drain(..).map(|w| (w.refusal, w.kept)).unzip();
        let result = sql.keep_durably(&group).await;
        for caller in callers {
            // A caller that went away no longer needs its answer.
            let _ = caller.send(result.clone());
        }
    }
}
