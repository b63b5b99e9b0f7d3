//! Per-item write coalescing in front of the ledger.
//!
//! Orders for one item queue up; one worker per item takes whatever is
//! waiting (up to the batch limit) and hands it to
//! [`Ledger::write_batch`]: one versioned UPDATE and one multi-row INSERT in
//! one transaction, instead of one transaction (and one commit) per order.
//! While a batch is in the database the next one gathers, so the batch size
//! follows the load by itself: one order when the shop is quiet, many in a
//! frenzy. Every order still gets the answer it would have got alone.
//!
//! Workers stop when their item has been idle for a while; memory follows
//! the items being ordered, not the catalog.

use super::versioned::Ledger;
use super::{LedgerOrder, LedgerRefusal, LedgerWrite, Written};
use app::domain::ItemId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A worker with an empty queue for this long stops.
const IDLE: Duration = Duration::from_secs(2);

type Reply = oneshot::Sender<Result<Written, LedgerRefusal>>;
type Queue = mpsc::UnboundedSender<(LedgerOrder, Reply)>;

pub struct Coalescer {
    ledger: Arc<Ledger>,
    max_batch: usize,
    queues: Arc<Mutex<HashMap<ItemId, Queue>>>,
}

impl Coalescer {
    pub fn new(ledger: Arc<Ledger>, max_batch: usize) -> Self {
        Self {
            ledger,
            max_batch: max_batch.max(1),
            queues: Arc::default(),
        }
    }

    fn queue(&self, item: ItemId) -> Queue {
        let mut queues = self
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(queue) = queues.get(&item).filter(|q| !q.is_closed()) {
            return queue.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        queues.insert(item, tx.clone());
        tokio::spawn(worker(
            item,
            rx,
            self.ledger.clone(),
            self.max_batch,
            self.queues.clone(),
        ));
        tx
    }

    fn forget(&self, item: ItemId, queue: &Queue) {
        let mut queues = self
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if queues.get(&item).is_some_and(|q| q.same_channel(queue)) {
            queues.remove(&item);
        }
    }
}

#[async_trait::async_trait]
impl LedgerWrite for Coalescer {
    /// Writes one order through its item's batch.
    async fn write(&self, order: LedgerOrder) -> Result<Written, LedgerRefusal> {
        let item = order.request.item_id;
        let mut order = order;
        // Twice at most: a worker may stop just as this order arrives.
        for _ in 0..2 {
            let (reply, answer) = oneshot::channel();
            let queue = self.queue(item);
            match queue.send((order, reply)) {
                Ok(()) => {
                    // A worker that stopped without answering may have
                    // committed: the outcome is in doubt, not a failure.
                    return answer.await.unwrap_or(Err(LedgerRefusal::InDoubt(
                        sqlx::Error::Protocol("the item's batch worker stopped".into()),
                    )));
                }
                Err(mpsc::error::SendError((returned, _))) => {
                    order = returned;
                    self.forget(item, &queue);
                }
            }
        }
        self.ledger.write(order).await
    }
}

async fn worker(
    item: ItemId,
    mut rx: mpsc::UnboundedReceiver<(LedgerOrder, Reply)>,
    ledger: Arc<Ledger>,
    max_batch: usize,
    queues: Arc<Mutex<HashMap<ItemId, Queue>>>,
) {
    loop {
        let first = match tokio::time::timeout(IDLE, rx.recv()).await {
            Ok(Some(first)) => first,
            Ok(None) => return,
            Err(_) => {
                // Idle: leave, unless an order slipped in while deciding.
                let leaving = {
                    let mut map = queues
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let empty = rx.is_empty();
                    if empty {
                        map.remove(&item);
                        rx.close();
                    }
                    empty
                };
                if !leaving {
                    continue;
                }
                // Anything sent between the check and the close is served.
                while let Ok(late) = rx.try_recv() {
                    serve(&ledger, vec![late]).await;
                }
                return;
            }
        };
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        serve(&ledger, batch).await;
    }
}

async fn serve(ledger: &Ledger, batch: Vec<(LedgerOrder, Reply)>) {
    let (orders, replies): (Vec<LedgerOrder>, Vec<Reply>) = batch.into_iter().unzip();
    let results = if orders.len() == 1 {
        let mut orders = orders;
        match orders.pop() {
            Some(order) => vec![ledger.write(order).await],
            None => Vec::new(),
        }
    } else {
        ledger.write_batch(&orders).await
    };
    for (reply, result) in replies.into_iter().zip(results) {
        let _ = reply.send(result);
    }
}
