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
//! how that transaction ended (see [`db::finish`]), and a batch that did commit is answered
//! from what it wrote.
//!
//! The onsale path holds at most [`connection_share`] of the pool's connections at once (its
//! workers, its replays and its one-at-a-time bookings together), so that a few hot events
//! cannot starve browsing and signing in.
//!
//! Once a batch finds the event sold out, the instance remembers it briefly and answers
//! SOLD_OUT without touching PostgreSQL: to requests without an idempotency key, and to those
//! whose key no booking of the event had at that version (the keys are loaded once per
//! sold-out version). A retry whose key booked gets its booking back. The hint only ever
//! refuses, never confirms; it lapses after [`SOLD_OUT_HINT_TTL`], and is dropped as soon as
//! the bus shows the event at any other version, committed by any instance (a key may have
//! booked since). With Redis down, other instances' commits are unseen: the TTL bounds that.
//!
//! One module past 600 lines: the queue, its workers and the batch transaction share one
//! contract (what each caller is told, and when a batch may be replayed). The seam for a later
//! split is [`book_batch`] (the transaction) apart from the queue and its workers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use uuid::Uuid;

use super::auth::live_sessions;
use super::bookings::{BookingChange, BookingRequest, book_seats, find_by_key, validate};
use super::events::{check_for_sale_to, lock_event, seats_of_user};
use super::holds::{check_sellable, take_from_expired};
use super::inventory::{Changes, Inventory};
use super::waitlist;
use crate::db::models::{Booking, Event, EventStatus};
use crate::db::schema::{bookings, events};
use crate::db::{self, DbConn, DbPool, Uncommitted};
use crate::error::{AppError, AppResult};
use crate::realtime::{Bus, Topic, Update, Updates};

/// The most bookings committed in one transaction.
pub const MAX_BATCH: usize = 256;
/// How long a sold-out event is answered from memory before PostgreSQL is asked again.
pub const SOLD_OUT_HINT_TTL: Duration = Duration::from_millis(250);
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
/// Batch sizes kept for [`Onsale::stats`].
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
pub struct OnsaleStats {
    /// Bookings handed to the batch workers and not answered yet.
    pub pending: usize,
    /// The sizes of the most recent committed batches, oldest first.
    pub batch_sizes: Vec<usize>,
    /// Bookings replayed one by one after their batch failed.
    pub replayed: u64,
    /// Connections the onsale path holds now, and the most it may hold.
    pub connections_held: usize,
    pub connection_limit: usize,
}

/// Who is booking: the token's user and session. The session is checked against PostgreSQL
/// with the booking (for a whole batch in one query), not before it.
#[derive(Debug, Clone, Copy)]
pub struct Buyer {
    pub user_id: Uuid,
    pub session_id: Uuid,
}

const SESSION_ENDED: AppError = AppError::Unauthenticated("session has ended; sign in again");

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
    reply: oneshot::Sender<AppResult<BookingChange>>,
    _pending: Pending,
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

/// Books seats through per-event batches, or one transaction per booking when group commit
/// is switched off.
#[derive(Clone)]
pub struct Onsale {
    inner: Arc<Inner>,
}

struct Inner {
    db: DbPool,
    bus: Bus,
    group_commit: bool,
    /// Seated events met so far: booked one at a time (see [`Onsale::book`]).
    seated: Mutex<HashSet<Uuid>>,
    queues: Mutex<HashMap<Uuid, mpsc::Sender<Job>>>,
    /// When PostgreSQL last said each event was sold out. Lapsed hints are dropped whenever
    /// one is added, so the map holds only events that sold out recently.
    sold_out: Mutex<HashMap<Uuid, SoldOut>>,
    /// The onsale path's share of the pool: see [`connection_share`].
    connections: Arc<Semaphore>,
    connection_limit: usize,
    pending: Arc<AtomicUsize>,
    recent_batches: Mutex<VecDeque<usize>>,
    replayed: AtomicU64,
}

/// What this instance knows about a sold-out event.
struct SoldOut {
    /// When PostgreSQL last said so.
    at: Instant,
    /// The event's version then; `None` when only a refusal was seen.
    version: Option<i32>,
    /// Fingerprints of the idempotency keys booked for the event as of `version`, loaded once
    /// per sold-out version: a request with a key not among them is not the retry of a booking
    /// and is refused without a query. `None` until loaded.
    keys: Option<Arc<HashSet<u64>>>,
}

impl Onsale {
    /// `pool_size` is `db`'s size, of which the onsale path takes [`connection_share`].
    pub fn new(db: DbPool, bus: Bus, group_commit: bool, pool_size: u32) -> Self {
        let connection_limit = connection_share(pool_size);
        Self {
            inner: Arc::new(Inner {
                db,
                bus,
                group_commit,
                seated: Mutex::default(),
                queues: Mutex::default(),
                sold_out: Mutex::default(),
                connections: Arc::new(Semaphore::new(connection_limit)),
                connection_limit,
                pending: Arc::default(),
                recent_batches: Mutex::default(),
                replayed: AtomicU64::new(0),
            }),
        }
    }

    pub fn stats(&self) -> OnsaleStats {
        let inner = &self.inner;
        OnsaleStats {
            // Spelled out: diesel's `RunQueryDsl::load` would be found first.
            pending: AtomicUsize::load(&inner.pending, Ordering::Relaxed),
            batch_sizes: lock(&inner.recent_batches).iter().copied().collect(),
            replayed: AtomicU64::load(&inner.replayed, Ordering::Relaxed),
            connections_held: inner.connection_limit - inner.connections.available_permits(),
            connection_limit: inner.connection_limit,
        }
    }

    /// Books seats for `buyer`, whose token has been verified but whose session has not: it is
    /// checked here, with the booking. Same contract as [`book_seats`]: a booking and, when
    /// this call changed availability, the event to publish. In a batch only the last booking
    /// carries the event, so one message goes out per commit.
    pub async fn book(&self, buyer: Buyer, request: BookingRequest) -> AppResult<BookingChange> {
        validate(&request)?;
        if self.refuses(buyer.user_id, &request) {
            return Err(AppError::SoldOut { seats_available: 0 });
        }
        if self.inner.known_sold_out(request.event_id) {
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
                self.inner.mark_sold_out(request.event_id);
            }
            return change;
        }
        let (reply, answer) = oneshot::channel();
        let mut job = Job {
            buyer,
            request,
            reply,
            _pending: Pending::new(&self.inner.pending),
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
        self.inner.known_sold_out(event_id)
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
        let hints = self.inner.lock_hints();
        let Some(hint) = hints.get(&request.event_id) else {
            return false;
        };
        if hint.at.elapsed() >= SOLD_OUT_HINT_TTL {
            return false;
        }
        match (&request.idempotency_key, &hint.keys) {
            (None, _) => true,
            (Some(key), Some(keys)) => !keys.contains(&fingerprint(user_id, key)),
            (Some(_), None) => false,
        }
    }

    /// Seats came back or the event changed: stop answering from memory.
    /// (Only batches mark an event sold out: a hold may take its last seats for a while.)
    pub fn observe(&self, event: &Event) {
        if event.seats_available > 0 || event.status != EventStatus::Published {
            self.inner.lock_hints().remove(&event.id);
        }
    }

    /// A sold-out answer without a transaction. A retried request whose idempotency key already
    /// booked seats still gets its booking back, which takes one indexed read.
    async fn refuse_sold_out(
        &self,
        buyer: Buyer,
        request: &BookingRequest,
    ) -> AppResult<BookingChange> {
        if request.idempotency_key.is_some() {
            let mut held = self.inner.connection().await?;
            ensure_live(&mut held.conn, buyer).await?;
            if let Some(booking) = find_by_key(&mut held.conn, buyer.user_id, request).await? {
                return Ok(BookingChange {
                    booking,
                    changed: false,
                    event: None,
                    also: Changes::default(),
                });
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

    fn lock_hints(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, SoldOut>> {
        lock(&self.sold_out)
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
    ) -> AppResult<BookingChange> {
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

    fn known_sold_out(&self, event_id: Uuid) -> bool {
        self.lock_hints()
            .get(&event_id)
            .is_some_and(|hint| hint.at.elapsed() < SOLD_OUT_HINT_TTL)
    }

    /// A refusal was seen, with no version: refuse requests without a key for a while.
    fn mark_sold_out(&self, event_id: Uuid) {
        let mut hints = self.lock_hints();
        forget_old_hints(&mut hints);
        hints
            .entry(event_id)
            .and_modify(|hint| hint.at = Instant::now())
            .or_insert(SoldOut {
                at: Instant::now(),
                version: None,
                keys: None,
            });
    }

    /// Records the event as a committed transaction left it. A new sold-out version gets its
    /// keys loaded, and is watched on the bus: any other version, committed by any instance,
    /// drops the hint, since keys may have booked since.
    fn note(self: &Arc<Self>, event: &Event) {
        if event.seats_available > 0 || event.status != EventStatus::Published {
            self.lock_hints().remove(&event.id);
            return;
        }
        let mut hints = self.lock_hints();
        forget_old_hints(&mut hints);
        match hints.get_mut(&event.id) {
            Some(hint) if hint.version == Some(event.version) => hint.at = Instant::now(),
            _ => {
                let hint = SoldOut {
                    at: Instant::now(),
                    version: Some(event.version),
                    keys: None,
                };
                hints.insert(event.id, hint);
                // Attached before the keys are read, so no later commit goes unseen.
                let updates = self.bus.subscribe(Topic::Seats(event.id));
                tokio::spawn(watch_sold_out(
                    self.clone(),
                    event.id,
                    event.version,
                    updates,
                ));
            }
        }
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
            tokio::spawn(run_worker(self.clone(), event_id, receiver.clone()));
        }
        queues.insert(event_id, sender.clone());
        sender
    }
}

/// A hint older than this is forgotten; one younger than it but past [`SOLD_OUT_HINT_TTL`] is
/// kept, not trusted, so a batch finding the same sold-out version again reuses its keys.
const HINT_KEPT: Duration = Duration::from_secs(60);

fn forget_old_hints(hints: &mut HashMap<Uuid, SoldOut>) {
    hints.retain(|_, hint| hint.at.elapsed() < HINT_KEPT);
}

/// Loads the keys booked for a sold-out event as of `version`, then drops the hint as soon as
/// the bus shows the event at another version (a cancellation, a booking on another
/// instance), or once the hint is gone.
async fn watch_sold_out(inner: Arc<Inner>, event_id: Uuid, version: i32, mut updates: Updates) {
    let is_current = |hint: Option<&SoldOut>| hint.is_some_and(|h| h.version == Some(version));
    let rows: AppResult<Vec<(Uuid, Option<String>)>> = async {
        let mut conn = inner.db.get().await?;
        Ok(bookings::table
            .filter(bookings::event_id.eq(event_id))
            .filter(bookings::idempotency_key.is_not_null())
            .select((bookings::user_id, bookings::idempotency_key))
            .load(&mut conn)
            .await?)
    }
    .await;
    // Without them, requests with a key keep asking PostgreSQL.
    if let Ok(rows) = rows {
        let keys: HashSet<u64> = rows
            .iter()
            .filter_map(|(user, key)| Some(fingerprint(*user, key.as_deref()?)))
            .collect();
        match inner.lock_hints().get_mut(&event_id) {
            Some(hint) if hint.version == Some(version) => hint.keys = Some(Arc::new(keys)),
            _ => return,
        }
    }
    loop {
        match tokio::time::timeout(SOLD_OUT_HINT_TTL, updates.next()).await {
            Ok(Some(Update::Seats(seats))) if seats.version != version => {
                let mut hints = inner.lock_hints();
                if is_current(hints.get(&event_id)) {
                    hints.remove(&event_id);
                }
                return;
            }
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(_quiet) if !is_current(inner.lock_hints().get(&event_id)) => return,
            Err(_quiet) => {}
        }
    }
}

/// A collision only sends a request the slow way, never refuses a retry.
fn fingerprint(user_id: Uuid, key: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    (user_id, key).hash(&mut hasher);
    hasher.finish()
}

async fn run_worker(
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
        let more_waiting = {
            let mut receiver = receiver.lock().await;
            let first = match tokio::time::timeout(WORKER_IDLE, receiver.recv()).await {
                Ok(Some(job)) => job,
                Ok(None) => return,
                Err(_idle) => {
                    // Unlist the queue, then finish whatever was sent before it was unlisted;
                    // later senders find the channel closed and start new workers.
                    lock(&inner.queues).remove(&event_id);
                    receiver.close();
                    continue;
                }
            };
            jobs.push(first);
            while jobs.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            !receiver.is_empty()
        };
        if held.is_none() {
            held = inner.connection().await.ok();
        }
        let healthy = commit(&inner, &mut held, event_id, &mut jobs).await;
        if !healthy || !more_waiting || inner.connections.available_permits() == 0 {
            held = None;
        }
    }
}

/// Commits one batch and answers every job in it. Returns false when the batch failed, so
/// the worker does not keep a connection that may be broken.
async fn commit(
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
    let outcome = match held {
        Some(held) => book_batch(&mut held.conn, &inner.db, event_id, &batch, abandoned).await,
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
            if let Some(event) = &event {
                inner.note(event);
            }
            if !also.is_empty() {
                inner
                    .bus
                    .publish_all(crate::app::announcements(also, false));
            }
            for (job, result) in jobs.drain(..).zip(results) {
                // The caller may have gone away during the COMMIT; the booking stands, and what
                // its caller would have announced is announced here.
                if let Err(Ok(change)) = job.reply.send(result) {
                    inner.bus.publish_all(crate::app::announcements(
                        change.into_announcements().1,
                        false,
                    ));
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
            inner.mark_sold_out(event_id);
        }
        let _ = job.reply.send(result);
    }
    false
}

/// Why a batch stepped aside: the event is seated, and its bookings need seats claimed one
/// at a time.
#[derive(Debug)]
struct SeatedEvent;

impl std::fmt::Display for SeatedEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a seated event is booked one at a time")
    }
}

impl std::error::Error for SeatedEvent {}

fn is_seated(error: &AppError) -> bool {
    matches!(error, AppError::Internal(e) if e.is::<SeatedEvent>())
}

/// What one booking request in a batch comes to, before anything is written.
enum Outcome {
    New(Booking),
    Replay(Booking),
    Refused(AppError),
}

/// Books a batch of requests for one event in one transaction. Returns each request's result
/// in order and the event as this transaction left it. `abandoned(i)` says whether request
/// `i`'s caller has gone; such requests are left out, as late as possible before the COMMIT.
/// [`Uncommitted::Failed`] and [`Uncommitted::RolledBack`] mean nothing was written and the
/// batch may be replayed one by one; [`Uncommitted::Unknown`] means it must not be.
pub async fn book_batch(
    conn: &mut AsyncPgConnection,
    pool: &DbPool,
    event_id: Uuid,
    batch: &[(Buyer, &BookingRequest)],
    abandoned: impl Fn(usize) -> bool + Send,
) -> Result<BatchResult, Uncommitted<AppError>> {
    let txid = db::begin(conn)
        .await
        .map_err(|e| Uncommitted::Failed(e.into()))?;
    let written = write_batch(conn, event_id, batch, abandoned).await;
    db::finish(conn, pool, txid, written).await
}

/// Each request's result, the event as the batch left it, and what else it changed.
pub type BatchResult = (Vec<AppResult<BookingChange>>, Option<Event>, Changes);

/// The writes of [`book_batch`], inside its transaction.
async fn write_batch(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    batch: &[(Buyer, &BookingRequest)],
    abandoned: impl Fn(usize) -> bool + Send,
) -> AppResult<BatchResult> {
    // Checked before the event row is locked, so another batch of this event can hold the
    // row meanwhile. A key used by that batch too is caught by the insert below.
    let pairs: Vec<(Uuid, Uuid)> = batch
        .iter()
        .map(|(b, _)| (b.session_id, b.user_id))
        .collect();
    let live = live_sessions(conn, &pairs).await?;
    let mut known = previous_bookings(conn, batch).await?;
    let event = lock_event(conn, event_id).await?;
    if event.venue_id.is_some() {
        return Err(anyhow::Error::new(SeatedEvent).into());
    }
    // Keys booked for this event by a transaction that held the row before us: asked again
    // now, so that retries racing each other across batches (a client retrying impatiently)
    // are answered as replays instead of meeting at the insert.
    let unknown: Vec<(Buyer, &BookingRequest)> = batch
        .iter()
        .filter(|(buyer, request)| {
            request
                .idempotency_key
                .as_ref()
                .is_some_and(|key| !known.contains_key(&(buyer.user_id, key.clone())))
        })
        .copied()
        .collect();
    known.extend(previous_bookings(conn, &unknown).await?);
    // Holds that have expired but are not swept yet must not refuse anyone: end them
    // now (their seats go to the waiting list first).
    let mut also = Changes::default();
    // Summed wide: a batch of absurd quantities must not overflow.
    let wanted: i64 = batch
        .iter()
        .map(|(_, r)| i64::from(r.quantity.max(0)))
        .sum();
    let wanted = i32::try_from(wanted).unwrap_or(i32::MAX);
    // So do seats freed while sales were paused: the waiting list's first.
    let mut inventory = Inventory::new(event);
    waitlist::catch_up(conn, &mut inventory, &mut also).await?;
    take_from_expired(conn, &mut inventory, wanted, &mut also).await?;
    let event = inventory.save(conn, &mut also).await?;
    let mut per_user = match event.max_per_user {
        Some(_) => {
            let users: Vec<Uuid> = batch.iter().map(|(b, _)| b.user_id).collect();
            seats_of_user(conn, event_id, &users).await?
        }
        None => HashMap::new(),
    };
    let gone: Vec<bool> = (0..batch.len()).map(&abandoned).collect();
    let mut remaining = event.seats_available;
    let now = Utc::now();
    let mut outcomes: Vec<Outcome> = batch
        .iter()
        .zip(gone)
        .map(|(&(buyer, request), gone)| {
            if gone {
                return Outcome::Refused(AppError::Unavailable);
            }
            if !live.contains(&(buyer.session_id, buyer.user_id)) {
                return Outcome::Refused(SESSION_ENDED);
            }
            let user_id = buyer.user_id;
            let key = request.idempotency_key.clone().map(|k| (user_id, k));
            if let Some(booking) = key.as_ref().and_then(|k| known.get(k)) {
                return replay(booking, request);
            }
            if let Err(reason) = check_for_sale_to(&event, user_id)
                .and_then(|()| check_sellable(&event, request.quantity))
            {
                return Outcome::Refused(reason);
            }
            if let Some(max) = event.max_per_user {
                let have = per_user.entry(user_id).or_insert(0);
                if *have + i64::from(request.quantity) > i64::from(max) {
                    return Outcome::Refused(AppError::BadUserInput {
                        message: format!(
                            "at most {max} seats per person for this event; you already have {have}"
                        ),
                        field: Some("quantity"),
                        reason: Some("LIMIT_PER_USER"),
                    });
                }
            }
            if request.quantity > remaining {
                return Outcome::Refused(AppError::SoldOut {
                    seats_available: remaining,
                });
            }
            remaining -= request.quantity;
            if let Some(have) = per_user.get_mut(&user_id) {
                *have += i64::from(request.quantity);
            }
            let booking = Booking::confirmed(
                event_id,
                user_id,
                request.quantity,
                request.idempotency_key.clone(),
                now,
            );
            if let Some(key) = key {
                known.insert(key, booking.clone());
            }
            Outcome::New(booking)
        })
        .collect();
    recheck_refused_keys(conn, batch, &mut outcomes).await?;

    let new = new_bookings(&outcomes);
    if !new.is_empty() {
        // Only a transaction for another event can have used one of these keys since we
        // looked (every one for this event locks its row): then fewer rows are inserted,
        // and the batch is replayed one by one, which sorts it out.
        let inserted = insert_bookings(conn, &new).await?;
        if inserted != new.len() {
            return Err(anyhow::anyhow!("an idempotency key was used concurrently").into());
        }
        // A caller that gave up while the batch was being written gets no booking, as late
        // as can be told. (One leaving during the COMMIT itself still books: the booking
        // stands and is announced, and a retry with its idempotency key finds it.)
        // A booking that another request of the batch replays (the same key, sent twice) is
        // kept for that one.
        let replayed: HashSet<Uuid> = outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| match o {
                Outcome::Replay(b) if !abandoned(i) => Some(b.id),
                _ => None,
            })
            .collect();
        let gone: Vec<Uuid> = outcomes
            .iter_mut()
            .enumerate()
            .filter_map(|(i, outcome)| match outcome {
                Outcome::New(booking) if abandoned(i) && !replayed.contains(&booking.id) => {
                    let id = booking.id;
                    *outcome = Outcome::Refused(AppError::Unavailable);
                    Some(id)
                }
                _ => None,
            })
            .collect();
        if !gone.is_empty() {
            // Their seats were counted out for others of the batch: refused ones are asked
            // again, one by one.
            if outcomes
                .iter()
                .any(|o| matches!(o, Outcome::Refused(AppError::SoldOut { .. })))
            {
                return Err(anyhow::anyhow!("callers left a batch with refusals").into());
            }
            diesel::delete(bookings::table.filter(bookings::id.eq_any(&gone)))
                .execute(conn)
                .await?;
        }
    }
    let new = new_bookings(&outcomes);
    if new.is_empty() {
        let results = outcomes.into_iter().map(|o| into_result(o, None)).collect();
        return Ok((results, Some(event), also));
    }
    // At most the event's seats, so no overflow.
    let taken: i32 = new.iter().map(|b| b.quantity).sum();
    let count = i32::try_from(new.len()).expect("batches are small");
    let updated: Option<Event> = diesel::update(
        events::table
            .find(event_id)
            .filter(events::status.eq(EventStatus::Published))
            .filter(events::starts_at.gt(diesel::dsl::now))
            .filter(events::seats_available.ge(taken)),
    )
    .set((
        events::seats_available.eq(events::seats_available - taken),
        // One step per booking, as if they had been committed one at a time.
        events::version.eq(events::version + count),
        events::updated_at.eq(diesel::dsl::now),
    ))
    .returning(Event::as_returning())
    .get_result(conn)
    .await
    .optional()?;
    let Some(updated) = updated else {
        return Err(anyhow::anyhow!("the event changed under its lock").into());
    };
    // The seat count after expired holds were ended was never the committed one: only
    // the count after this batch's bookings is announced (with its last booking).
    also.event = None;
    let last_new = outcomes
        .iter()
        .rposition(|o| matches!(o, Outcome::New(_)))
        .expect("at least one booking is new");
    let results = outcomes
        .into_iter()
        .enumerate()
        .map(|(i, o)| into_result(o, (i == last_new).then(|| updated.clone())))
        .collect();
    Ok((results, Some(updated), also))
}

/// Inserts the batch's bookings with one statement of fixed shape (one array per column),
/// which PostgreSQL plans once per connection, where a multi-row `VALUES` list would be a new
/// statement with eight parameters per row for every batch size. Returns how many rows were
/// inserted: a row whose idempotency key is taken is skipped. Rows go in in (user, key)
/// order, the same in every batch, so two batches (of two events) waiting on each other's
/// keys cannot deadlock.
async fn insert_bookings(conn: &mut AsyncPgConnection, new: &[&Booking]) -> AppResult<usize> {
    use diesel::sql_types::{Array, Int4, Nullable, Text, Timestamptz, Uuid as SqlUuid};
    let mut new = new.to_vec();
    new.sort_by(|a, b| (a.user_id, &a.idempotency_key).cmp(&(b.user_id, &b.idempotency_key)));
    let column = |f: fn(&Booking) -> Uuid| new.iter().map(|b| f(b)).collect::<Vec<_>>();
    let inserted = diesel::sql_query(
        "INSERT INTO bookings (id, event_id, user_id, quantity, status, idempotency_key, created_at) \
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::int4[], $5::text[], \
                              $6::text[], $7::timestamptz[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind::<Array<SqlUuid>, _>(column(|b| b.id))
    .bind::<Array<SqlUuid>, _>(column(|b| b.event_id))
    .bind::<Array<SqlUuid>, _>(column(|b| b.user_id))
    .bind::<Array<Int4>, _>(new.iter().map(|b| b.quantity).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(new.iter().map(|b| b.status.as_str()).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(
        new.iter()
            .map(|b| b.idempotency_key.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Timestamptz>, _>(new.iter().map(|b| b.created_at).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(inserted)
}

/// The keys were looked up before the event was locked, and another batch may have booked one
/// since: a request refused for want of seats must not hide that booking. Its retry gets the
/// booking. (A key booked meanwhile by a request that is about to succeed here is caught by
/// the insert's conflict instead.) Requests refused for their session are left refused.
async fn recheck_refused_keys(
    conn: &mut AsyncPgConnection,
    batch: &[(Buyer, &BookingRequest)],
    outcomes: &mut [Outcome],
) -> AppResult<()> {
    let refused = |o: &Outcome| {
        matches!(
            o,
            Outcome::Refused(AppError::SoldOut { .. } | AppError::BadUserInput { .. })
        )
    };
    let recheck: Vec<(Buyer, &BookingRequest)> = batch
        .iter()
        .zip(outcomes.iter())
        .filter(|((_, request), outcome)| request.idempotency_key.is_some() && refused(outcome))
        .map(|(entry, _)| *entry)
        .collect();
    if recheck.is_empty() {
        return Ok(());
    }
    let found = previous_bookings(conn, &recheck).await?;
    for ((buyer, request), outcome) in batch.iter().zip(outcomes.iter_mut()) {
        if let Some(key) = &request.idempotency_key
            && refused(outcome)
            && let Some(booking) = found.get(&(buyer.user_id, key.clone()))
        {
            *outcome = replay(booking, request);
        }
    }
    Ok(())
}

/// Bookings already made under the idempotency keys in this batch.
async fn previous_bookings(
    conn: &mut AsyncPgConnection,
    batch: &[(Buyer, &BookingRequest)],
) -> AppResult<HashMap<(Uuid, String), Booking>> {
    let keyed: Vec<(Uuid, &str)> = batch
        .iter()
        .filter_map(|(buyer, r)| r.idempotency_key.as_deref().map(|k| (buyer.user_id, k)))
        .collect();
    if keyed.is_empty() {
        return Ok(HashMap::new());
    }
    use diesel::sql_types::{Array, Text, Uuid as SqlUuid};
    let users: Vec<Uuid> = keyed.iter().map(|(u, _)| *u).collect();
    let keys: Vec<&str> = keyed.iter().map(|(_, k)| *k).collect();
    // Exact (user, key) pairs, each one lookup in the unique index: filtering on the users
    // and the keys separately would read every booking of every buyer in the batch.
    let rows: Vec<Booking> = diesel::sql_query(
        "SELECT b.* FROM bookings b \
         JOIN unnest($1::uuid[], $2::text[]) AS k(user_id, idempotency_key) \
           ON b.user_id = k.user_id AND b.idempotency_key = k.idempotency_key",
    )
    .bind::<Array<SqlUuid>, _>(users)
    .bind::<Array<Text>, _>(keys)
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|b| Some(((b.user_id, b.idempotency_key.clone()?), b)))
        .collect())
}

/// The bookings a batch writes: its outcomes that are new.
fn new_bookings(outcomes: &[Outcome]) -> Vec<&Booking> {
    outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::New(b) => Some(b),
            _ => None,
        })
        .collect()
}

fn replay(booking: &Booking, request: &BookingRequest) -> Outcome {
    if booking.event_id != request.event_id || booking.quantity != request.quantity {
        Outcome::Refused(AppError::Conflict(
            "this idempotencyKey was already used for a different booking request".into(),
        ))
    } else {
        Outcome::Replay(booking.clone())
    }
}

fn into_result(outcome: Outcome, event: Option<Event>) -> AppResult<BookingChange> {
    match outcome {
        Outcome::New(booking) => Ok(BookingChange {
            booking,
            changed: true,
            event,
            also: Changes::default(),
        }),
        Outcome::Replay(booking) => Ok(BookingChange {
            booking,
            changed: false,
            event: None,
            also: Changes::default(),
        }),
        Outcome::Refused(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use diesel_async::pooled_connection::AsyncDieselConnectionManager;

    use super::*;

    /// An onsale whose pool never connects: these tests send no bookings.
    fn onsale() -> Onsale {
        let manager =
            AsyncDieselConnectionManager::<AsyncPgConnection>::new("postgres://127.0.0.1:1/none");
        Onsale::new(
            bb8::Pool::builder().build_unchecked(manager),
            Bus::in_process(),
            true,
            4,
        )
    }

    #[tokio::test]
    async fn an_event_whose_workers_are_all_gone_gets_a_new_queue_and_workers() {
        let onsale = onsale();
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
