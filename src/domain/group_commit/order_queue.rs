//! Group commit for orders: the onsale's `placeOrder`s (one line, general admission) queue per
//! event like its bookings, and each batch is placed in one transaction ([`place_batch`]).
//! The workers share the booking queue's connections ([`super::connection_share`]) and its
//! bookkeeping; a batch that fails is replayed one by one through [`place_order`], which
//! gives each its own precise answer, unless its COMMIT went unanswered. Orders with several
//! lines or named seats, and the orders of seated events, are placed one at a time.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::batch::is_seated;
use super::order_batch::{OrderEntry, batchable, place_batch};
use super::worker::next_batch;
use super::{BookingQueue, Held, Inner, MAX_BATCH, Pending, QUEUE_CAPACITY};
use super::{WORKERS_PER_EVENT, lock};
use crate::db::Uncommitted;
use crate::db::commerce::Order;
use crate::domain::Viewer;
use crate::domain::changes::Committed;
use crate::domain::commerce::orders::{OrderRequest, place_order, validate};
use crate::error::{AppError, AppResult};

pub(super) struct OrderJob {
    viewer: Viewer,
    request: OrderRequest,
    quantity: i32,
    stripe_configured: bool,
    reply: oneshot::Sender<AppResult<Committed<Order>>>,
    _pending: Pending,
}

impl BookingQueue {
    /// Places an order: in a batch with the event's other orders when it can be (see the
    /// module documentation), else in a transaction of its own. Same contract as
    /// [`place_order`]; in a batch only the last new order carries the event, so one seat
    /// count goes out per commit.
    pub async fn place_order(
        &self,
        viewer: &Viewer,
        request: OrderRequest,
        stripe_configured: bool,
    ) -> AppResult<Committed<Order>> {
        let quantities = validate(&request)?;
        let seated = self.inner.lock_seated().contains(&request.event_id);
        if !self.inner.group_commit || seated || !batchable(&request) {
            let mut held = self.inner.connection().await?;
            return place_order(&mut held.conn, viewer, request, stripe_configured).await;
        }
        let (reply, answer) = oneshot::channel();
        let mut job = OrderJob {
            viewer: viewer.clone(),
            quantity: quantities[0],
            request,
            stripe_configured,
            reply,
            _pending: Pending::new(&self.inner.pending),
        };
        loop {
            let queue = self.inner.order_queue(job.request.event_id);
            match queue.send(job).await {
                Ok(()) => break,
                // The worker stopped for idleness between our lookup and our send.
                Err(mpsc::error::SendError(returned)) => job = returned,
            }
        }
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the order worker stopped without answering"))?
    }
}

impl Inner {
    /// The event's order queue, with workers started for it when it has none (or they are
    /// all gone).
    fn order_queue(self: &Arc<Self>, event_id: Uuid) -> mpsc::Sender<OrderJob> {
        let mut queues = lock(&self.order_queues);
        if let Some(queue) = queues.get(&event_id)
            && !queue.is_closed()
        {
            return queue.clone();
        }
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        for _ in 0..WORKERS_PER_EVENT {
            tokio::spawn(run_order_worker(self.clone(), event_id, receiver.clone()));
        }
        queues.insert(event_id, sender.clone());
        sender
    }
}

/// One worker of an event's order queue: as `worker::run_worker`, for orders.
async fn run_order_worker(
    inner: Arc<Inner>,
    event_id: Uuid,
    receiver: Arc<tokio::sync::Mutex<mpsc::Receiver<OrderJob>>>,
) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    let mut held: Option<Held> = None;
    loop {
        let Some(more_waiting) = next_batch(&receiver, &mut jobs, || {
            lock(&inner.order_queues).remove(&event_id)
        })
        .await
        else {
            return;
        };
        if held.is_none() {
            held = inner.connection().await.ok();
        }
        let healthy = commit_orders(&inner, &mut held, event_id, &mut jobs).await;
        if !healthy || !more_waiting || inner.connections.available_permits() == 0 {
            held = None;
        }
    }
}

/// Places one batch and answers every job in it. Returns false when the batch failed, so the
/// worker does not keep a connection that may be broken.
async fn commit_orders(
    inner: &Arc<Inner>,
    held: &mut Option<Held>,
    event_id: Uuid,
    jobs: &mut Vec<OrderJob>,
) -> bool {
    // A caller that gave up before the event was locked gets no order.
    jobs.retain(|job| !job.reply.is_closed());
    if jobs.is_empty() {
        return true;
    }
    let entries: Vec<OrderEntry<'_>> = jobs
        .iter()
        .map(|job| OrderEntry {
            viewer: &job.viewer,
            request: &job.request,
            quantity: job.quantity,
            stripe_configured: job.stripe_configured,
        })
        .collect();
    let abandoned = |i: usize| jobs[i].reply.is_closed();
    let started = std::time::Instant::now();
    let outcome = match held {
        Some(held) => place_batch(&mut held.conn, &inner.db, event_id, &entries, abandoned).await,
        None => Err(Uncommitted::Failed(AppError::Unavailable)),
    };
    drop(entries);
    let error = match outcome {
        Ok((results, also)) => {
            inner.record_batch(jobs.len());
            metrics::histogram!("evently_group_commit_batch_size").record(jobs.len() as f64);
            metrics::histogram!("evently_group_commit_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            if !also.is_empty() {
                inner.announcer.announce(also);
            }
            for (job, result) in jobs.drain(..).zip(results) {
                // A caller that left during the writes: its order stands (it expires unpaid
                // like any other) and is announced here.
                if let Err(Ok(committed)) = job.reply.send(result) {
                    inner.announcer.announce(committed.changes);
                }
            }
            return true;
        }
        Err(Uncommitted::Unknown) => {
            // Replaying could place everyone's order twice.
            for job in jobs.drain(..) {
                let _ = job.reply.send(Err(AppError::OutcomeUnknown));
            }
            return false;
        }
        Err(Uncommitted::Failed(error)) => Some(error),
        Err(Uncommitted::RolledBack) => None,
    };
    match error {
        Some(error) if is_seated(&error) => {
            inner.lock_seated().insert(event_id);
        }
        error => tracing::warn!(?error, size = jobs.len(), "order batch failed; one by one"),
    }
    *held = None;
    for job in jobs.drain(..).filter(|job| !job.reply.is_closed()) {
        inner.replayed.fetch_add(1, Ordering::Relaxed);
        let result = match inner.connection().await {
            Ok(mut held) => {
                place_order(
                    &mut held.conn,
                    &job.viewer,
                    job.request,
                    job.stripe_configured,
                )
                .await
            }
            Err(error) => Err(error),
        };
        let _ = job.reply.send(result);
    }
    false
}
