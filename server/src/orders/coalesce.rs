//! Stage 3, under load: per-item write coalescing in front of the ledger.
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

use super::ledger::{BatchedOrder, Ledger, LedgerRefusal, Written};
use app::domain::{BuyerId, IdempotencyKey, ItemId};
use app::model::OrderRequest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A worker with an empty queue for this long stops.
const IDLE: Duration = Duration::from_secs(2);

type Reply = oneshot::Sender<Result<Written, LedgerRefusal>>;
type Queue = mpsc::UnboundedSender<(BatchedOrder, Reply)>;

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

    /// Writes one order through its item's batch.
    ///
    /// # Errors
    /// As [`Ledger::write`].
    pub async fn write(
        &self,
        buyer: &BuyerId,
        key: &IdempotencyKey,
        request: OrderRequest,
        strategy: &'static str,
    ) -> Result<Written, LedgerRefusal> {
        let mut order = BatchedOrder {
            buyer: buyer.clone(),
            key: key.clone(),
            request,
            strategy,
        };
        // Twice at most: a worker may stop just as this order arrives.
        for _ in 0..2 {
            let (reply, answer) = oneshot::channel();
            let queue = self.queue(request.item_id);
            match queue.send((order, reply)) {
                Ok(()) => {
                    return answer
                        .await
                        .unwrap_or(Err(LedgerRefusal::Conflict { attempts: 0 }));
                }
                Err(mpsc::error::SendError((returned, _))) => {
                    order = returned;
                    self.forget(request.item_id, &queue);
                }
            }
        }
        self.ledger.write(buyer, key, request, strategy).await
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

async fn worker(
    item: ItemId,
    mut rx: mpsc::UnboundedReceiver<(BatchedOrder, Reply)>,
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

async fn serve(ledger: &Ledger, batch: Vec<(BatchedOrder, Reply)>) {
    let (orders, replies): (Vec<BatchedOrder>, Vec<Reply>) = batch.into_iter().unzip();
    let results = if orders.len() == 1 {
        let o = &orders[0];
        vec![ledger.write(&o.buyer, &o.key, o.request, o.strategy).await]
    } else {
        ledger.write_batch(&orders).await
    };
    for (reply, result) in replies.into_iter().zip(results) {
        let _ = reply.send(result);
    }
}
