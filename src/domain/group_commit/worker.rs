//! The workers of one event's queue: each takes whatever bookings have arrived while the
//! previous batch was committing, commits them together ([`book_batch`]), and answers every
//! caller. A batch that fails is replayed one by one, unless its COMMIT went unanswered.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use uuid::Uuid;

use super::batch::{book_batch, is_seated};
use super::{Buyer, Held, Inner, Job, MAX_BATCH, WORKER_IDLE, lock};
use crate::db::Uncommitted;
use crate::domain::bookings::BookingRequest;
use crate::error::AppError;

pub(super) async fn run_worker(
    inner: Arc<Inner>,
    event_id: Uuid,
    receiver: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    // Held from one batch to the next while more are waiting, so a busy worker never queues
    // for a connection behind the requests it is serving; given back when the queue is empty,
    // or when the onsale path's share of the pool is all taken and others may be waiting.
    let mut held: Option<Held> = None;
    loop {
        // Unlisted when idle, then whatever was sent before that is finished; later senders
        // find the channel closed and start new workers.
        let Some(more_waiting) = next_batch(&receiver, &mut jobs, || {
            lock(&inner.queues).remove(&event_id)
        })
        .await
        else {
            return;
        };
        if held.is_none() {
            held = inner.connection().await.ok();
        }
        let healthy = commit_batch(&inner, &mut held, event_id, &mut jobs).await;
        if !healthy || !more_waiting || inner.connections.available_permits() == 0 {
            held = None;
        }
    }
}

/// Waits for a job, then takes whatever else has arrived, up to [`MAX_BATCH`] in `jobs`.
/// Returns whether more are waiting, or `None` once the queue is closed and drained. A queue
/// idle for [`WORKER_IDLE`] is unlisted (`unlist`) and closed, and the loop goes on to finish
/// what was sent before that. Shared by the booking and the order workers.
pub(super) async fn next_batch<J, T>(
    receiver: &tokio::sync::Mutex<mpsc::Receiver<J>>,
    jobs: &mut Vec<J>,
    unlist: impl Fn() -> T,
) -> Option<bool> {
    let mut receiver = receiver.lock().await;
    let first = loop {
        match tokio::time::timeout(WORKER_IDLE, receiver.recv()).await {
            Ok(Some(job)) => break job,
            Ok(None) => return None,
            Err(_idle) => {
                unlist();
                receiver.close();
            }
        }
    };
    jobs.push(first);
    while jobs.len() < MAX_BATCH {
        match receiver.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
    Some(!receiver.is_empty())
}

/// Commits one batch and answers every job in it: each caller gets its own `Committed`
/// booking to announce; the batch's other changes, and those of callers that left, are handed
/// to the [`super::Announcer`] here. Returns false when the batch failed, so
/// the worker does not keep a connection that may be broken.
async fn commit_batch(
    inner: &Arc<Inner>,
    held: &mut Option<Held>,
    event_id: Uuid,
    jobs: &mut Vec<Job>,
) -> bool {
    // A caller that gave up (its request timed out or its client left) before the event was
    // locked gets no booking, as if its own transaction had been rolled back.
    jobs.retain(|job| !job.reply.is_closed());
    if jobs.is_empty() {
        return true;
    }
    let batch: Vec<(Buyer, &BookingRequest)> = jobs.iter().map(|j| (j.buyer, &j.request)).collect();
    let abandoned = |i: usize| jobs[i].reply.is_closed();
    let started = std::time::Instant::now();
    let span = tracing::debug_span!(parent: None, "group_commit.batch", size = jobs.len());
    for job in jobs.iter() {
        metrics::histogram!("evently_group_commit_queue_wait_seconds")
            .record(started.duration_since(job.queued_at).as_secs_f64());
        span.follows_from(&job.span);
    }
    let outcome = match held {
        Some(held) => {
            let batch = book_batch(&mut held.conn, &inner.db, event_id, &batch, abandoned);
            tracing::Instrument::instrument(batch, span).await
        }
        None => Err(Uncommitted::Failed(AppError::Unavailable)),
    };
    tracing::debug!(
        size = batch.len(),
        micros = started.elapsed().as_micros() as u64,
        "batch committed"
    );
    drop(batch);
    let error = match outcome {
        Ok((results, event, also)) => {
            inner.record_batch(jobs.len());
            metrics::histogram!("evently_group_commit_batch_size").record(jobs.len() as f64);
            metrics::histogram!("evently_group_commit_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            if let Some(event) = &event {
                let announcer = &inner.announcer;
                inner.sold_out.note(event, |id| announcer.seat_versions(id));
            }
            if !also.is_empty() {
                inner.announcer.announce(also);
            }
            for (job, result) in jobs.drain(..).zip(results) {
                // The caller may have gone away during the COMMIT; the booking stands, and what
                // its caller would have announced is announced here.
                if let Err(Ok(committed)) = job.reply.send(result) {
                    inner.announcer.announce(committed.changes);
                }
            }
            return true;
        }
        Err(Uncommitted::Unknown) => {
            // Replaying could book everyone twice.
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
        error => tracing::warn!(
            ?error,
            size = jobs.len(),
            "batch failed; booking one by one"
        ),
    }
    // On a new connection: the batch's may be the reason it failed. It is taken within the
    // onsale path's share, after the batch's own is given back.
    *held = None;
    for job in jobs.drain(..).filter(|job| !job.reply.is_closed()) {
        inner.replayed.fetch_add(1, Ordering::Relaxed);
        let result = match inner.connection().await {
            Ok(held) => inner.book_one(held, job.buyer, &job.request).await,
            Err(error) => Err(error),
        };
        if let Err(AppError::SoldOut { seats_available: 0 }) = &result {
            inner.sold_out.mark(event_id);
        }
        let _ = job.reply.send(result);
    }
    false
}
