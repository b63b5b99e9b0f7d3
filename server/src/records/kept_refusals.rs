//! Refusals kept in the database, written in groups.
//!
//! While holds are live, a sold-out refusal must reach the database before
//! it is answered (see [`crate::orders::refusal`]): a unit may still come
//! back, so Redis alone could lose a refusal that a new decision would not
//! repeat. In the first second of a flood that is thousands of refusals.
//! One insert each would put thousands of small transactions in front of
//! the orders' own ledger writes; instead one writer takes every refusal
//! waiting at that moment and keeps them all with one statement (a group
//! commit). A few groups may be in flight at once, so one slow statement
//! (a database stalling under a fault) does not hold every refusal behind
//! it, and a group that takes too long counts as failed. Each caller still
//! hears whether its own refusal was kept: a refusal whose group failed is
//! never answered (the buyer hears "try again").

use super::RecordError;
use super::sql::{KeptRefusal, SqlRecords};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// The most refusals one statement keeps (six values each, far below every
/// database's limit on bound values).
const GROUP: usize = 256;
/// Groups in flight at once.
const WRITERS: usize = 4;
/// A group not kept by then has failed (its insert may still land: a kept
/// refusal that was answered "try again" only makes a retry hear it).
const GROUP_TIMEOUT: Duration = Duration::from_secs(3);

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
    let writers = Arc::new(Semaphore::new(WRITERS));
    let mut taken = Vec::with_capacity(GROUP);
    loop {
        // A free writer first, so the group takes everything that came
        // while all were busy.
        let Ok(writer) = writers.clone().acquire_owned().await else {
            return;
        };
        if queue.recv_many(&mut taken, GROUP).await == 0 {
            return;
        }
        let (group, callers): (Vec<_>, Vec<_>) =
            taken.drain(..).map(|w| (w.refusal, w.kept)).unzip();
        let sql = sql.clone();
        tokio::spawn(async move {
            let result = match tokio::time::timeout(GROUP_TIMEOUT, sql.keep_durably(&group)).await {
                Ok(result) => result,
                Err(_) => Err(RecordError(format!(
                    "keeping {} refusals took longer than {GROUP_TIMEOUT:?}",
                    group.len()
                ))),
            };
            drop(writer);
            for caller in callers {
                // A caller that went away no longer needs its answer.
                let _ = caller.send(result.clone());
            }
        });
    }
}
