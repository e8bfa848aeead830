//! The onsale path: group commit for bookings.
//!
//! When thousands of buyers hit one event at once, one transaction per booking queues them all
//! on the event row's lock, and PostgreSQL commits only about a thousand of them a second. So
//! each instance keeps one queue per event: a worker takes whatever bookings have arrived while
//! the previous batch was committing and commits them together, with one query for the buyers'
//! sessions, one for their idempotency keys, one lock of the event row, one `INSERT` and one
//! conditional `UPDATE`. Three workers take turns, so batches' checks overlap another's
//! commit. Nobody waits for a timer: a lone booking is committed at once, and batches grow only
//! as fast as requests pile up.
//!
//! The guard is still PostgreSQL's. Seats are counted against the locked row, the `UPDATE`
//! still says `WHERE seats_available >= taken`, and the CHECK constraints still hold, so several
//! instances batching the same event stay correct. Each caller gets its own answer only after
//! the batch has committed, so "confirmed" always means durable. An idempotency key booked
//! meanwhile by another batch or instance is found by the insert and answered as a replay.
//! Anything else unusual (a database error, a dropped connection) rolls the batch back and
//! replays its bookings one by one through [`book_seats`], which gives each its own precise
//! answer. A batch whose COMMIT went unanswered is never replayed blindly: PostgreSQL is asked
//! how that transaction ended (see [`crate::db::finish`]), and a batch that did commit is answered
//! from what it wrote.
//!
//! The onsale path holds at most [`connection_share`] of the pool's connections at once (its
//! workers, its replays and its one-at-a-time bookings together), so that a few hot events
//! cannot starve browsing and signing in.
//!
//! Once a batch finds the event sold out, the instance remembers it briefly and answers
//! SOLD_OUT without touching PostgreSQL ([`sold_out`]).
//!
//! Each caller receives its booking as a [`Committed`] to hand to `App::commit`; what a batch
//! changed besides, and the bookings of callers that left during the COMMIT, go to the
//! [`Announcer`] given at construction. The queue never talks to the bus itself.
//!
//! Split along its seams: the queue and its bookkeeping here, the workers in [`worker`], the
//! batch transaction in [`batch`] (which decides what each caller is told), the sold-out hint
//! in [`sold_out`].
//!
//! Orders of the onsale (`placeOrder` with one line of general admission) take the same path
//! through queues of their own ([`order_queue`], [`order_batch`]), sharing the workers'
//! connections and the queue's bookkeeping.
//!
//! The top of the domain: it queues what [`book_seats`] and `commerce::orders::place_order`
//! would do one at a time.

mod batch;
mod order_batch;
mod order_queue;
mod sold_out;
mod worker;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel_async::AsyncPgConnection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use uuid::Uuid;

use super::auth::live_sessions;
use super::bookings::{BookingRequest, book_seats, find_by_key, validate};
use super::changes::{Changes, Committed};
use crate::db::models::{Booking, Event, EventStatus};
use crate::db::{DbConn, DbPool, Uncommitted};
use crate::error::{AppError, AppResult};
use batch::SESSION_ENDED;
pub use batch::{BatchResult, Buyer, book_batch};
use sold_out::SoldOutHints;
pub use sold_out::{SOLD_OUT_HINT_TTL, SeatVersions};

/// What the queue needs from the layer that announces commits (the App, over the realtime
/// bus), given at construction so that the domain never imports the bus.
pub trait Announcer: Send + Sync + 'static {
    /// Announces changes a batch committed that no caller will: what it changed besides its
    /// bookings (holds it found expired, offers it made), and the bookings of callers that left
    /// during the COMMIT.
    fn announce(&self, changes: Changes);
    /// The versions of the event's seat counts as committed by any instance, from the moment
    /// of the call on: the sold-out hint is dropped as soon as one differs from the version it
    /// was taken at. The stream ends when nothing more can be heard.
    fn seat_versions(&self, event_id: Uuid) -> SeatVersions;
}

/// The most bookings committed in one transaction.
pub const MAX_BATCH: usize = 256;
/// Workers per event with bookings waiting. One batch holds the event row while the others
/// check their batches' sessions and idempotency keys, then wait for the row. Measured with
/// bench onsale (256 buyers): 1 worker 4,400 bookings/s, 2 about 5,000, 3 about 5,700, 4 fewer.
const WORKERS_PER_EVENT: usize = 3;
/// Bookings waiting for one event's workers; senders wait when it is full.
const QUEUE_CAPACITY: usize = 4096;
/// A worker with nothing to do for this long stops; the next booking starts a new one.
const WORKER_IDLE: Duration = Duration::from_secs(30);
/// How long a booking waits for one of the onsale path's connections before it is refused
/// SERVICE_UNAVAILABLE: twice the pool's own wait, since it shares half the pool, and within
/// the default request deadline (15 s).
const CONNECTION_WAIT: Duration = Duration::from_secs(10);
/// Batch sizes kept for [`BookingQueue::stats`].
const RECENT_BATCHES: usize = 1024;

/// How many pooled connections the onsale path may hold at once: half the pool, at least one.
/// An event's bookings queue on its row lock, so its [`WORKERS_PER_EVENT`] workers are all it
/// can use; with the default pool of 16, eight connections serve two or three hot events at
/// full speed, more hot events share them, and the other half of the pool stays free for
/// browsing, signing in and everything else (`bench onsale --events N` measures both sides).
pub fn connection_share(pool_size: u32) -> usize {
    (pool_size as usize / 2).max(1)
}

/// What the onsale path has been doing, for tests and diagnostics.
#[derive(Debug, Clone)]
pub struct BookingQueueStats {
    /// Bookings and orders handed to the batch workers and not answered yet.
    pub pending: usize,
    /// The sizes of the most recent committed batches (of bookings and of orders), oldest
    /// first.
    pub batch_sizes: Vec<usize>,
    /// Bookings and orders replayed one by one after their batch failed.
    pub replayed: u64,
    /// Connections the onsale path holds now, and the most it may hold.
    pub connections_held: usize,
    pub connection_limit: usize,
}

/// Checks one buyer's session, for the paths that book one at a time.
async fn ensure_live(conn: &mut AsyncPgConnection, buyer: Buyer) -> AppResult<()> {
    let pair = (buyer.session_id, buyer.user_id);
    if live_sessions(conn, &[pair]).await?.contains(&pair) {
        Ok(())
    } else {
        Err(SESSION_ENDED)
    }
}

struct Job {
    buyer: Buyer,
    request: BookingRequest,
    reply: oneshot::Sender<AppResult<Committed<Booking>>>,
    _pending: Pending,
    /// For the queue-wait histogram (`evently_group_commit_queue_wait_seconds`).
    queued_at: std::time::Instant,
    /// The caller's span, which the batch's span follows from (a link, in a trace).
    span: tracing::Span,
}

/// Counts a booking as pending from the moment it is queued until its job is dropped, answered
/// or not.
struct Pending(Arc<AtomicUsize>);

impl Pending {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A pooled connection within the onsale path's share of the pool.
struct Held {
    conn: DbConn,
    _permit: OwnedSemaphorePermit,
}

/// The onsale path's booking queue: books seats through per-event batches, or one transaction
/// per booking when group commit is switched off.
#[derive(Clone)]
pub struct BookingQueue {
    inner: Arc<Inner>,
}

struct Inner {
    db: DbPool,
    announcer: Arc<dyn Announcer>,
    group_commit: bool,
    /// Seated events met so far: booked one at a time (see [`BookingQueue::book`]).
    seated: Mutex<HashSet<Uuid>>,
    queues: Mutex<HashMap<Uuid, mpsc::Sender<Job>>>,
    order_queues: Mutex<HashMap<Uuid, mpsc::Sender<order_queue::OrderJob>>>,
    /// Events this instance lately found sold out: see [`sold_out`].
    sold_out: SoldOutHints,
    /// The onsale path's share of the pool: see [`connection_share`].
    connections: Arc<Semaphore>,
    connection_limit: usize,
    pending: Arc<AtomicUsize>,
    recent_batches: Mutex<VecDeque<usize>>,
    replayed: AtomicU64,
}

impl BookingQueue {
    /// `pool_size` is `db`'s size, of which the onsale path takes [`connection_share`].
    pub fn new(db: DbPool, announcer: impl Announcer, group_commit: bool, pool_size: u32) -> Self {
        let connection_limit = connection_share(pool_size);
        Self {
            inner: Arc::new(Inner {
                sold_out: SoldOutHints::new(db.clone()),
                db,
                announcer: Arc::new(announcer),
                group_commit,
                seated: Mutex::default(),
                queues: Mutex::default(),
                order_queues: Mutex::default(),
                connections: Arc::new(Semaphore::new(connection_limit)),
                connection_limit,
                pending: Arc::default(),
                recent_batches: Mutex::default(),
                replayed: AtomicU64::new(0),
            }),
        }
    }

    pub fn stats(&self) -> BookingQueueStats {
        let inner = &self.inner;
        BookingQueueStats {
            // Spelled out: diesel's `RunQueryDsl::load` would be found first.
            pending: AtomicUsize::load(&inner.pending, Ordering::Relaxed),
            batch_sizes: lock(&inner.recent_batches).iter().copied().collect(),
            replayed: AtomicU64::load(&inner.replayed, Ordering::Relaxed),
            connections_held: inner.connection_limit - inner.connections.available_permits(),
            connection_limit: inner.connection_limit,
        }
    }

    /// Books seats for `buyer`, whose token has been verified but whose session has not: it is
    /// checked here, with the booking. Same contract as [`book_seats`]: the booking and what
    /// this call changed, to announce. In a batch only the last booking carries the event, so
    /// one seat count goes out per commit.
    pub async fn book(
        &self,
        buyer: Buyer,
        request: BookingRequest,
    ) -> AppResult<Committed<Booking>> {
        validate(&request)?;
        if self.refuses(buyer.user_id, &request) {
            return Err(AppError::SoldOut { seats_available: 0 });
        }
        if self.inner.sold_out.known(request.event_id) {
            return self.refuse_sold_out(buyer, &request).await;
        }
        // Particular seats, and seated events, are booked one at a time: each needs its seats
        // claimed, which the batch does not do.
        let seated =
            !request.seat_ids.is_empty() || self.inner.lock_seated().contains(&request.event_id);
        if !self.inner.group_commit || seated {
            let held = self.inner.connection().await?;
            let change = self.inner.book_one(held, buyer, &request).await;
            if let Err(AppError::SoldOut { seats_available: 0 }) = &change {
                self.inner.sold_out.mark(request.event_id);
            }
            return change;
        }
        let (reply, answer) = oneshot::channel();
        let mut job = Job {
            buyer,
            request,
            reply,
            _pending: Pending::new(&self.inner.pending),
            queued_at: std::time::Instant::now(),
            span: tracing::Span::current(),
        };
        loop {
            let queue = self.inner.queue(job.request.event_id);
            match queue.send(job).await {
                Ok(()) => break,
                // The worker stopped for idleness between our lookup and our send.
                Err(mpsc::error::SendError(returned)) => job = returned,
            }
        }
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the booking worker stopped without answering"))?
    }

    /// Whether this instance currently answers SOLD_OUT for the event without asking PostgreSQL.
    pub fn known_sold_out(&self, event_id: Uuid) -> bool {
        self.inner.sold_out.known(event_id)
    }

    /// True when the request is certain to be refused SOLD_OUT: the event is known to be sold
    /// out, and the request has no idempotency key or one that no booking of the event had when
    /// it sold out (a retry of a booking made on any instance gets it back instead). Needs
    /// neither the database nor the user's session, so callers may ask before looking the
    /// session up.
    pub fn refuses(&self, user_id: Uuid, request: &BookingRequest) -> bool {
        if validate(request).is_err() {
            return false; // The booking path says what is wrong with it.
        }
        self.inner.sold_out.refuses(
            request.event_id,
            user_id,
            request.idempotency_key.as_deref(),
        )
    }

    /// Seats came back or the event changed: stop answering from memory.
    /// (Only batches mark an event sold out: a hold may take its last seats for a while.)
    pub fn observe(&self, event: &Event) {
        if event.seats_available > 0 || event.status != EventStatus::Published {
            self.inner.sold_out.forget(event.id);
        }
    }

    /// A sold-out answer without a transaction. A retried request whose idempotency key already
    /// booked seats still gets its booking back, which takes one indexed read.
    async fn refuse_sold_out(
        &self,
        buyer: Buyer,
        request: &BookingRequest,
    ) -> AppResult<Committed<Booking>> {
        if request.idempotency_key.is_some() {
            let mut held = self.inner.connection().await?;
            ensure_live(&mut held.conn, buyer).await?;
            if let Some(booking) = find_by_key(&mut held.conn, buyer.user_id, request).await? {
                return Ok(Committed::unchanged(booking));
            }
        }
        Err(AppError::SoldOut { seats_available: 0 })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    fn lock_seated(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        lock(&self.seated)
    }

    /// A connection within the onsale path's share of the pool, waited for as long as the
    /// pool itself would wait.
    async fn connection(&self) -> AppResult<Held> {
        let permit =
            tokio::time::timeout(CONNECTION_WAIT, self.connections.clone().acquire_owned())
                .await
                .map_err(|_| AppError::Unavailable)?
                .expect("the semaphore is never closed");
        let conn = self.db.get_owned().await?;
        Ok(Held {
            conn,
            _permit: permit,
        })
    }

    /// Books in a transaction of its own on `held`, checking the session first. A booking
    /// whose COMMIT failed and was rolled back is booked again, once, on a new connection.
    async fn book_one(
        &self,
        mut held: Held,
        buyer: Buyer,
        request: &BookingRequest,
    ) -> AppResult<Committed<Booking>> {
        ensure_live(&mut held.conn, buyer).await?;
        let first = book_seats(&mut held.conn, &self.db, buyer.user_id, request).await;
        let result = match first {
            Err(Uncommitted::RolledBack) => {
                drop(held);
                let mut held = self.connection().await?;
                book_seats(&mut held.conn, &self.db, buyer.user_id, request).await
            }
            other => other,
        };
        result.map_err(|uncommitted| match uncommitted {
            Uncommitted::Failed(error) => error,
            Uncommitted::RolledBack => AppError::Unavailable,
            Uncommitted::Unknown => AppError::OutcomeUnknown,
        })
    }

    fn record_batch(&self, size: usize) {
        let mut recent = lock(&self.recent_batches);
        if recent.len() == RECENT_BATCHES {
            recent.pop_front();
        }
        recent.push_back(size);
    }

    /// The event's queue, with workers started for it when it has none, or when its workers
    /// are all gone (they panicked): then its receiver is dropped and the old queue is closed.
    fn queue(self: &Arc<Self>, event_id: Uuid) -> mpsc::Sender<Job> {
        let mut queues = lock(&self.queues);
        if let Some(queue) = queues.get(&event_id)
            && !queue.is_closed()
        {
            return queue.clone();
        }
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        for _ in 0..WORKERS_PER_EVENT {
            tokio::spawn(worker::run_worker(self.clone(), event_id, receiver.clone()));
        }
        queues.insert(event_id, sender.clone());
        sender
    }
}

#[cfg(test)]
mod tests {
    use diesel_async::pooled_connection::AsyncDieselConnectionManager;

    use super::*;

    /// Announces nothing and hears nothing: these tests commit no bookings.
    struct Silent;

    impl Announcer for Silent {
        fn announce(&self, _changes: Changes) {}
        fn seat_versions(&self, _event_id: Uuid) -> SeatVersions {
            Box::pin(futures_util::stream::empty())
        }
    }

    /// A queue whose pool never connects: these tests send no bookings.
    fn queue() -> BookingQueue {
        let manager =
            AsyncDieselConnectionManager::<AsyncPgConnection>::new("postgres://127.0.0.1:1/none");
        BookingQueue::new(
            bb8::Pool::builder().build_unchecked(manager),
            Silent,
            true,
            4,
        )
    }

    #[tokio::test]
    async fn an_event_whose_workers_are_all_gone_gets_a_new_queue_and_workers() {
        let onsale = queue();
        let event_id = Uuid::new_v4();
        // Workers that died took the queue's receiver with them: the queue is closed.
        let (dead, receiver) = mpsc::channel(1);
        drop(receiver);
        lock(&onsale.inner.queues).insert(event_id, dead);

        let queue = onsale.inner.queue(event_id);
        assert!(
            !queue.is_closed(),
            "a closed queue was handed out: every booking would spin until its deadline"
        );
        assert!(!lock(&onsale.inner.queues)[&event_id].is_closed());
    }
}
