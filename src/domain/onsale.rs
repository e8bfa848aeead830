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
//! the batch has committed, so "confirmed" always means durable. Anything unusual (a race on an
//! idempotency key with another instance, a database error) rolls the batch back and replays
//! its bookings one by one through [`book_seats`], which gives each its own precise answer.
//!
//! Once a batch finds the event sold out, the instance remembers it briefly and answers
//! SOLD_OUT without touching PostgreSQL. The hint only ever refuses, never confirms; it lapses
//! after [`SOLD_OUT_HINT_TTL`] and is dropped as soon as this instance sees seats come back.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::auth::live_sessions;
use super::bookings::{BookingChange, BookingRequest, book_seats, find_by_key, validate};
use super::events::{check_for_sale_to, lock_event, seats_of_user};
use super::holds::{check_sellable, take_from_expired};
use super::inventory::{Changes, Inventory};
use super::waitlist;
use crate::db::models::{Booking, Event, EventStatus};
use crate::db::schema::{bookings, events};
use crate::db::{DbConn, DbPool};
use crate::error::{AppError, AppResult};
use crate::realtime::Bus;

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
    sold_out: Mutex<HashMap<Uuid, SoldOut>>,
}

/// What this instance knows about a sold-out event.
struct SoldOut {
    /// When PostgreSQL last said so.
    at: Instant,
    /// The event's version then; `None` when only a refusal was seen.
    version: Option<i32>,
    /// Fingerprints of the idempotency keys booked for the event as of `version`, so that a
    /// retried request that did book can be told apart from a new one without a query.
    /// `None` until loaded.
    keys: Option<Arc<HashSet<u64>>>,
}

impl Onsale {
    pub fn new(db: DbPool, bus: Bus, group_commit: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                bus,
                group_commit,
                seated: Mutex::default(),
                queues: Mutex::default(),
                sold_out: Mutex::default(),
            }),
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
            let mut conn = self.inner.db.get().await?;
            ensure_live(&mut conn, buyer).await?;
            let event_id = request.event_id;
            let change = book_seats(&mut conn, buyer.user_id, request).await;
            if let Err(AppError::SoldOut { seats_available: 0 }) = &change {
                self.inner.mark_sold_out(event_id);
            }
            return change;
        }
        let (reply, answer) = oneshot::channel();
        let mut job = Job {
            buyer,
            request,
            reply,
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
    /// out and the request is not a retry of one that booked. Needs neither the database nor
    /// the user's session, so callers may ask before looking the session up.
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
            let mut conn = self.inner.db.get().await?;
            ensure_live(&mut conn, buyer).await?;
            if let Some(booking) = find_by_key(&mut conn, buyer.user_id, request).await? {
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

impl Inner {
    fn lock_seated(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.seated.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_hints(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, SoldOut>> {
        self.sold_out.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A lapsed hint is kept, not trusted: if the next batch finds the event still sold out
    /// at the same version, its idempotency keys need not be loaded again.
    fn known_sold_out(&self, event_id: Uuid) -> bool {
        self.lock_hints()
            .get(&event_id)
            .is_some_and(|hint| hint.at.elapsed() < SOLD_OUT_HINT_TTL)
    }

    fn mark_sold_out(&self, event_id: Uuid) {
        let hint = SoldOut {
            at: Instant::now(),
            version: None,
            keys: None,
        };
        self.lock_hints().insert(event_id, hint);
    }

    /// Records the event as a committed batch left it, loading the idempotency keys booked
    /// for it when it has just sold out.
    fn note(self: &Arc<Self>, event: &Event) {
        let mut hints = self.lock_hints();
        if event.seats_available > 0 || event.status != EventStatus::Published {
            hints.remove(&event.id);
            return;
        }
        let now = Instant::now();
        match hints.get_mut(&event.id) {
            Some(hint) if hint.version == Some(event.version) => hint.at = now,
            _ => {
                let hint = SoldOut {
                    at: now,
                    version: Some(event.version),
                    keys: None,
                };
                hints.insert(event.id, hint);
                tokio::spawn(load_keys(self.clone(), event.id, event.version));
            }
        }
    }

    fn queue(self: &Arc<Self>, event_id: Uuid) -> mpsc::Sender<Job> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues
            .entry(event_id)
            .or_insert_with(|| {
                let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
                let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
                for _ in 0..WORKERS_PER_EVENT {
                    tokio::spawn(run_worker(self.clone(), event_id, receiver.clone()));
                }
                sender
            })
            .clone()
    }
}

async fn run_worker(
    inner: Arc<Inner>,
    event_id: Uuid,
    receiver: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    // Held from one batch to the next while more are waiting, so a busy worker never queues
    // for a connection behind the requests it is serving; given back when the queue is empty.
    let mut conn: Option<DbConn> = None;
    loop {
        let more_waiting = {
            let mut receiver = receiver.lock().await;
            let first = match tokio::time::timeout(WORKER_IDLE, receiver.recv()).await {
                Ok(Some(job)) => job,
                Ok(None) => return,
                Err(_idle) => {
                    // Unlist the queue, then finish whatever was sent before it was unlisted;
                    // later senders find the channel closed and start new workers.
                    inner
                        .queues
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&event_id);
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
        if conn.is_none() {
            conn = inner.db.get_owned().await.ok();
        }
        let healthy = commit(&inner, conn.as_deref_mut(), event_id, &mut jobs).await;
        if !healthy || !more_waiting {
            conn = None;
        }
    }
}

/// Commits one batch and answers every job in it. Returns false when the batch failed, so
/// the worker does not keep a connection that may be broken.
async fn commit(
    inner: &Arc<Inner>,
    conn: Option<&mut AsyncPgConnection>,
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
    let outcome = match conn {
        Some(conn) => book_batch(conn, event_id, &batch, abandoned).await,
        None => Err(AppError::Unavailable),
    };
    tracing::debug!(
        size = batch.len(),
        micros = started.elapsed().as_micros() as u64,
        "batch committed"
    );
    drop(batch);
    match outcome {
        Ok((results, event, also)) => {
            if let Some(event) = &event {
                inner.note(event);
            }
            if !also.is_empty() {
                inner.bus.publish_changes(also, false);
            }
            for (job, result) in jobs.drain(..).zip(results) {
                // The caller may have gone away after the event was locked; the booking stands
                // either way, and what its caller would have announced is announced here.
                if let Err(Ok(change)) = job.reply.send(result) {
                    inner
                        .bus
                        .publish_changes(change.into_announcements().1, false);
                }
            }
            true
        }
        Err(error) => {
            if is_seated(&error) {
                inner.lock_seated().insert(event_id);
            } else {
                tracing::warn!(
                    ?error,
                    size = jobs.len(),
                    "batch failed; booking one by one"
                );
            }
            for job in jobs.drain(..).filter(|job| !job.reply.is_closed()) {
                let result = match inner.db.get().await {
                    Ok(mut conn) => match ensure_live(&mut conn, job.buyer).await {
                        Ok(()) => book_seats(&mut conn, job.buyer.user_id, job.request).await,
                        Err(error) => Err(error),
                    },
                    Err(error) => Err(error.into()),
                };
                if let Err(AppError::SoldOut { seats_available: 0 }) = &result {
                    inner.mark_sold_out(event_id);
                }
                let _ = job.reply.send(result);
            }
            false
        }
    }
}

/// Loads the fingerprints of the idempotency keys booked for a sold-out event. Nobody can
/// book it until seats come back, which changes its version, so the set stays complete for
/// as long as the hint it belongs to.
async fn load_keys(inner: Arc<Inner>, event_id: Uuid, version: i32) {
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
    let Ok(rows) = rows else {
        return; // Keyed requests keep asking PostgreSQL.
    };
    let keys: HashSet<u64> = rows
        .iter()
        .filter_map(|(user, key)| Some(fingerprint(*user, key.as_deref()?)))
        .collect();
    if let Some(hint) = inner.lock_hints().get_mut(&event_id)
        && hint.version == Some(version)
    {
        hint.keys = Some(Arc::new(keys));
    }
}

/// A collision only sends a request the slow way, never refuses a retry.
fn fingerprint(user_id: Uuid, key: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    (user_id, key).hash(&mut hasher);
    hasher.finish()
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
/// in order and the event as this transaction left it. `abandoned(i)` says, once the event is
/// locked, whether request `i`'s caller has gone; such requests are left out. An `Err` means
/// nothing was written and the batch should be replayed one by one.
pub async fn book_batch(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    batch: &[(Buyer, &BookingRequest)],
    abandoned: impl Fn(usize) -> bool + Send,
) -> AppResult<(Vec<AppResult<BookingChange>>, Option<Event>, Changes)> {
    conn.transaction(async move |conn| {
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
        // Holds that have expired but are not swept yet must not refuse anyone: end them
        // now (their seats go to the waiting list first).
        let mut also = Changes::default();
        let wanted: i32 = batch.iter().map(|(_, r)| r.quantity.max(0)).sum();
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

        let new: Vec<&Booking> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::New(b) => Some(b),
                _ => None,
            })
            .collect();
        if new.is_empty() {
            let results = outcomes.into_iter().map(|o| into_result(o, None)).collect();
            return Ok((results, Some(event), also));
        }
        let taken: i32 = new.iter().map(|b| b.quantity).sum();
        let count = i32::try_from(new.len()).expect("batches are small");
        // Another path may have used one of these idempotency keys since we looked: then
        // fewer rows come back and the batch is replayed one by one, which sorts it out.
        let inserted = insert_bookings(conn, &new).await?;
        if inserted != count as usize {
            return Err(anyhow::anyhow!("an idempotency key was used concurrently").into());
        }
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
    })
    .await
}

/// Inserts the batch's bookings with one statement of fixed shape (one array per column),
/// which PostgreSQL plans once per connection, where a multi-row `VALUES` list would be a new
/// statement with eight parameters per row for every batch size.
async fn insert_bookings(conn: &mut AsyncPgConnection, new: &[&Booking]) -> AppResult<usize> {
    use diesel::sql_types::{Array, Int4, Nullable, Text, Timestamptz, Uuid as SqlUuid};
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
