//! The batch transaction: many bookings of one event committed together, with one query for
//! the buyers' sessions and one for their idempotency keys (pipelined: one round trip), one
//! lock of the event row, one `INSERT … ON CONFLICT DO NOTHING` over the batch and one
//! conditional `UPDATE`. The hand-written statements keep their prepared statements per
//! connection (`db::cached_sql`), so a batch with keys costs no more round trips than one
//! without. It decides what each caller is told; the queue and its
//! workers ([`super::worker`]) only carry the answers.

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::db::cached_sql::cached;
use crate::db::models::{Booking, Event, EventStatus};
use crate::db::schema::{bookings, events};
use crate::db::{self, DbPool, Uncommitted};
use crate::domain::auth::live_sessions;
use crate::domain::bookings::BookingRequest;
use crate::domain::changes::{Changes, Committed};
use crate::domain::freed_seats;
use crate::domain::inventory::Inventory;
use crate::domain::sale_rules::{check_for_sale_to, check_sellable, lock_event};
use crate::domain::user_limits::{check_per_user, seats_of_user};
use crate::error::{AppError, AppResult};

/// Who is booking: the token's user and session. The session is checked against PostgreSQL
/// with the booking (for a whole batch in one query), not before it.
#[derive(Debug, Clone, Copy)]
pub struct Buyer {
    pub user_id: Uuid,
    pub session_id: Uuid,
}

pub(super) const SESSION_ENDED: AppError =
    AppError::Unauthenticated("session has ended; sign in again");

/// Why a batch stepped aside: the event is seated, and its bookings need seats claimed one
/// at a time.
#[derive(Debug)]
pub(super) struct SeatedEvent;

impl std::fmt::Display for SeatedEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a seated event is booked one at a time")
    }
}

impl std::error::Error for SeatedEvent {}

pub(super) fn is_seated(error: &AppError) -> bool {
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
pub type BatchResult = (Vec<AppResult<Committed<Booking>>>, Option<Event>, Changes);

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
    // Both reads go out together, one round trip (diesel-async pipelines queries polled
    // at once on one connection); PostgreSQL still runs them one after the other.
    let (live, mut known) = {
        let shared: &AsyncPgConnection = conn;
        futures_util::try_join!(
            live_sessions(shared, &pairs),
            previous_bookings(shared, batch)
        )?
    };
    let event = lock_event(conn, event_id).await?;
    if event.venue_id.is_some() {
        return Err(anyhow::Error::new(SeatedEvent).into());
    }
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
    freed_seats::catch_up(conn, &mut inventory, &mut also).await?;
    freed_seats::take_from_expired(conn, &mut inventory, wanted, &mut also).await?;
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
                if let Err(refusal) = check_per_user(max, *have, request.quantity) {
                    return Outcome::Refused(refusal);
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
        // A key looked up before the event was locked may have been booked since, by a
        // transaction that held the row before us (a client retrying impatiently, its
        // retries in several batches): then fewer rows are inserted, and those requests are
        // answered with that booking. Asking only then keeps the common case to one
        // statement while the event is locked.
        let inserted = insert_bookings(conn, &new).await?;
        if inserted != new.len() {
            replay_keys_taken_meanwhile(conn, batch, &mut outcomes).await?;
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
    let inserted = cached(diesel::sql_query(
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
    .bind::<Array<Timestamptz>, _>(new.iter().map(|b| b.created_at).collect::<Vec<_>>()))
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

/// After an insert that skipped rows: the requests whose idempotency key another transaction
/// booked since the batch looked (the insert skipped their rows) are answered with that
/// booking, and so are the requests of the batch that replayed one of those skipped rows.
/// Seats counted out for them were not taken, so a batch that refused someone for want of
/// seats or over a per-user limit is replayed one by one instead, which gives each its exact
/// answer.
async fn replay_keys_taken_meanwhile(
    conn: &mut AsyncPgConnection,
    batch: &[(Buyer, &BookingRequest)],
    outcomes: &mut [Outcome],
) -> AppResult<()> {
    let found = previous_bookings(conn, batch).await?;
    // The rows the insert skipped: a booking of ours whose key is found under another id.
    let skipped: HashSet<Uuid> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            Outcome::New(booking) => {
                let key = (booking.user_id, booking.idempotency_key.clone()?);
                let stored = found.get(&key)?;
                (stored.id != booking.id).then_some(booking.id)
            }
            _ => None,
        })
        .collect();
    if skipped.is_empty() {
        // Not a key: only a key can make the insert skip a row.
        return Err(anyhow::anyhow!("the batch's insert skipped rows without a key").into());
    }
    if outcomes.iter().any(|o| {
        matches!(
            o,
            Outcome::Refused(AppError::SoldOut { .. } | AppError::BadUserInput { .. })
        )
    }) {
        return Err(anyhow::anyhow!("an idempotency key was used concurrently").into());
    }
    for ((buyer, request), outcome) in batch.iter().zip(outcomes.iter_mut()) {
        let ours = match outcome {
            Outcome::New(booking) | Outcome::Replay(booking) => booking.id,
            Outcome::Refused(_) => continue,
        };
        if !skipped.contains(&ours) {
            continue;
        }
        let key = request
            .idempotency_key
            .clone()
            .map(|key| (buyer.user_id, key));
        match key.and_then(|key| found.get(&key)) {
            Some(stored) => *outcome = replay(stored, request),
            None => return Err(anyhow::anyhow!("a skipped booking without its key").into()),
        }
    }
    Ok(())
}

/// Bookings already made under the idempotency keys in this batch.
async fn previous_bookings(
    mut conn: &AsyncPgConnection,
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
    let rows: Vec<Booking> = cached(
        diesel::sql_query(
            "SELECT b.* FROM bookings b \
         JOIN unnest($1::uuid[], $2::text[]) AS k(user_id, idempotency_key) \
           ON b.user_id = k.user_id AND b.idempotency_key = k.idempotency_key",
        )
        .bind::<Array<SqlUuid>, _>(users)
        .bind::<Array<Text>, _>(keys),
    )
    .load(&mut conn)
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

/// What one request of a committed batch is answered: a new booking carries itself to
/// announce, and the last new one of the batch the event's seat count, so that one message
/// goes out per commit.
fn into_result(outcome: Outcome, event: Option<Event>) -> AppResult<Committed<Booking>> {
    match outcome {
        Outcome::New(booking) => {
            let changes = Changes {
                event,
                bookings: vec![booking.clone()],
                ..Changes::default()
            };
            Ok(Committed::new(booking, changes))
        }
        Outcome::Replay(booking) => Ok(Committed::unchanged(booking)),
        Outcome::Refused(error) => Err(error),
    }
}
