//! Taking and returning seats. The guard against overselling is PostgreSQL's: a conditional
//! `UPDATE events ... WHERE seats_available >= n` on the event row, backed by a CHECK
//! constraint, inside the transaction that inserts the booking.

use chrono::Utc;
use diesel::prelude::*;
use diesel::upsert::on_constraint;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::Viewer;
use super::events::{check_user_limit, find_event, lock_event, lock_event_for, visible_to};
use super::holds::{check_sellable, requested_quantity, take_from_expired_seats};
use super::inventory::{Changes, Inventory};
use super::pagination::{Page, PageRequest};
use super::seats::{self, SeatOwner};
use super::{rsvp, waitlist};
use crate::db::models::{Booking, BookingStatus, Event};
use crate::db::schema::bookings;
use crate::db::{self, DbPool, Uncommitted};
use crate::error::{AppError, AppResult};

pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;

pub struct BookingRequest {
    pub event_id: Uuid,
    pub quantity: i32,
    pub idempotency_key: Option<String>,
    /// Particular seats of a seated event (then `quantity` is their number); empty for the
    /// best available.
    pub seat_ids: Vec<Uuid>,
}

/// A booking and what this call changed, for publishing. A replayed idempotent request
/// changes nothing.
pub struct BookingChange {
    pub booking: Booking,
    /// True when this call made or cancelled the booking.
    pub changed: bool,
    /// The event as committed, when this call is the one to announce its seat count (in a
    /// batch, only the last booking is).
    pub event: Option<Event>,
    /// Anything else the transaction changed (holds it found expired, seats it claimed).
    pub also: Changes,
}

impl BookingChange {
    /// The booking, and what to announce once committed: the event's seat count (when this
    /// change carries it), the booking when it changed, and anything else the transaction did.
    pub fn into_announcements(self) -> (Booking, Changes) {
        let mut changes = self.also;
        if self.event.is_some() {
            changes.event = self.event;
        }
        if self.changed {
            changes.bookings.push(self.booking.clone());
        }
        (self.booking, changes)
    }
}

enum Attempt {
    Created(Booking, Box<Changes>),
    Existing(Booking),
}

/// Checks what can be checked without the database.
pub(super) fn validate(request: &BookingRequest) -> AppResult<()> {
    if request.quantity < 1 {
        return Err(AppError::bad_input(
            "quantity",
            "quantity must be at least 1",
        ));
    }
    if !request.seat_ids.is_empty() {
        requested_quantity(Some(request.quantity), &request.seat_ids)?;
    }
    check_idempotency_key(request.idempotency_key.as_deref())
}

/// An idempotency key is 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] bytes of printable text.
pub(super) fn check_idempotency_key(key: Option<&str>) -> AppResult<()> {
    if let Some(key) = key
        && (key.is_empty()
            || key.len() > MAX_IDEMPOTENCY_KEY_LEN
            || key.chars().any(char::is_control))
    {
        return Err(AppError::bad_input(
            "idempotencyKey",
            format!("idempotencyKey must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes"),
        ));
    }
    Ok(())
}

/// Books seats in a transaction of its own. The onsale path ([`super::onsale`]) batches
/// bookings and falls back to this one when a batch cannot be committed as a whole.
///
/// A COMMIT whose reply is lost is looked up (see [`db::finish`]): if it took effect, the
/// booking it wrote is the answer. The caller decides what to do with a booking that was
/// rolled back ([`Uncommitted::RolledBack`]: it may book again) or whose fate is unknown.
pub async fn book_seats(
    conn: &mut AsyncPgConnection,
    pool: &DbPool,
    user_id: Uuid,
    request: &BookingRequest,
) -> Result<BookingChange, Uncommitted<AppError>> {
    validate(request).map_err(Uncommitted::Failed)?;
    let txid = db::begin(conn)
        .await
        .map_err(|e| Uncommitted::Failed(e.into()))?;
    let attempt = attempt_booking(conn, user_id, request).await;
    match db::finish(conn, pool, txid, attempt).await? {
        Attempt::Created(booking, mut also) => Ok(BookingChange {
            booking,
            changed: true,
            event: also.event.take(),
            also: *also,
        }),
        Attempt::Existing(booking) => Ok(unchanged(booking)),
    }
}

/// The writes of [`book_seats`], inside its transaction.
async fn attempt_booking(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    request: &BookingRequest,
) -> AppResult<Attempt> {
    // Every transaction that changes an event's seats locks its row first, so batches,
    // single bookings and cancellations queue in one order and cannot deadlock.
    let event = lock_event_for(conn, request.event_id, user_id).await?;
    if let Some(existing) = find_by_key(conn, user_id, request).await? {
        return Ok(Attempt::Existing(existing));
    }
    check_sellable(&event, request.quantity)?;
    check_user_limit(conn, &event, user_id, request.quantity).await?;
    let mut changes = Changes::default();
    let mut inventory = Inventory::new(event);
    waitlist::catch_up(conn, &mut inventory, &mut changes).await?;
    take_from_expired_seats(
        conn,
        &mut inventory,
        request.quantity,
        &request.seat_ids,
        &mut changes,
    )
    .await?;
    if inventory.available < request.quantity {
        return Err(AppError::SoldOut {
            seats_available: inventory.available,
        });
    }
    let booking = Booking::confirmed(
        inventory.event.id,
        user_id,
        request.quantity,
        request.idempotency_key.clone(),
        Utc::now(),
    );
    // A concurrent request with the same key for another event waits here on the
    // unique index and, once that one commits, inserts nothing.
    let inserted: Option<Booking> = diesel::insert_into(bookings::table)
        .values(&booking)
        .on_conflict(on_constraint("bookings_user_idempotency_key"))
        .do_nothing()
        .returning(Booking::as_returning())
        .get_result(conn)
        .await
        .optional()?;
    let Some(booking) = inserted else {
        return find_by_key(conn, user_id, request)
            .await?
            .map(Attempt::Existing)
            .ok_or_else(|| anyhow::anyhow!("idempotency conflict without a row").into());
    };
    let owner = SeatOwner::Booking(booking.id);
    let event = inventory.event.clone();
    seats::claim(
        conn,
        &event,
        owner,
        request.quantity,
        &request.seat_ids,
        &mut changes,
    )
    .await?;
    inventory.book(request.quantity);
    inventory.save(conn, &mut changes).await?;
    Ok(Attempt::Created(booking, Box::new(changes)))
}

/// The booking already made under this request's idempotency key, if any. The same key for a
/// different request is a conflict, not a replay.
pub(super) async fn find_by_key(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    request: &BookingRequest,
) -> AppResult<Option<Booking>> {
    let Some(key) = &request.idempotency_key else {
        return Ok(None);
    };
    let existing: Option<Booking> = bookings::table
        .filter(bookings::user_id.eq(user_id))
        .filter(bookings::idempotency_key.eq(key))
        .select(Booking::as_select())
        .first(conn)
        .await
        .optional()?;
    match existing {
        Some(booking)
            if booking.event_id != request.event_id || booking.quantity != request.quantity =>
        {
            Err(AppError::Conflict(
                "this idempotencyKey was already used for a different booking request".into(),
            ))
        }
        other => Ok(other),
    }
}

pub(super) async fn find_booking(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<Booking> {
    bookings::table
        .find(id)
        .select(Booking::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or(AppError::NotFound("booking"))
}

/// Cancels a booking and returns its seats (to the waiting list first), exactly once however
/// many times it is called.
pub async fn cancel_booking(
    conn: &mut AsyncPgConnection,
    viewer: &Viewer,
    id: Uuid,
) -> AppResult<BookingChange> {
    let booking = find_booking(conn, id).await?;
    if booking.user_id != viewer.id() && !viewer.is_admin() {
        return Err(AppError::Forbidden("you can only cancel your own bookings"));
    }
    if booking.status == BookingStatus::Cancelled {
        return Ok(unchanged(booking));
    }
    conn.transaction(async move |conn| {
        let event = lock_event(conn, booking.event_id).await?;
        if event.starts_at <= Utc::now() {
            return Err(AppError::not_possible(
                "EVENT_STARTED",
                "bookings cannot be cancelled once the event has started",
            ));
        }
        let cancelled: Option<Booking> = diesel::update(
            bookings::table
                .find(id)
                .filter(bookings::status.eq(BookingStatus::Confirmed)),
        )
        .set((
            bookings::status.eq(BookingStatus::Cancelled),
            bookings::cancelled_at.eq(diesel::dsl::now),
        ))
        .returning(Booking::as_returning())
        .get_result(conn)
        .await
        .optional()?;
        let Some(cancelled) = cancelled else {
            // Someone else cancelled it first; report the booking as it now stands.
            return Ok(unchanged(find_booking(conn, id).await?));
        };
        let mut changes = Changes::default();
        seats::release_bookings(conn, &event, &[id], &mut changes).await?;
        // An RSVP whose booking is cancelled is no longer going.
        rsvp::forget_booking(conn, &cancelled).await?;
        let mut inventory = Inventory::new(event);
        inventory.unbook(cancelled.quantity);
        waitlist::promote(conn, &mut inventory, &mut changes).await?;
        inventory.save(conn, &mut changes).await?;
        Ok(BookingChange {
            booking: cancelled,
            changed: true,
            event: changes.event.take(),
            also: changes,
        })
    })
    .await
}

fn unchanged(booking: Booking) -> BookingChange {
    BookingChange {
        booking,
        changed: false,
        event: None,
        also: Changes::default(),
    }
}

pub async fn user_bookings(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    page: PageRequest,
) -> AppResult<Page<Booking>> {
    let query = bookings::table
        .filter(bookings::user_id.eq(user_id))
        .into_boxed();
    list_newest_first(conn, query, page).await
}

pub async fn event_bookings(
    conn: &mut AsyncPgConnection,
    viewer: &Viewer,
    event_id: Uuid,
    page: PageRequest,
) -> AppResult<Page<Booking>> {
    let event = find_event(conn, event_id)
        .await?
        .filter(|event| visible_to(event, Some(viewer)))
        .ok_or(AppError::NotFound("event"))?;
    if !viewer.is_admin() && event.organizer_id != viewer.id() {
        return Err(AppError::Forbidden(
            "only the event's organizer or an admin can see its bookings",
        ));
    }
    let query = bookings::table
        .filter(bookings::event_id.eq(event_id))
        .into_boxed();
    list_newest_first(conn, query, page).await
}

async fn list_newest_first(
    conn: &mut AsyncPgConnection,
    mut query: bookings::BoxedQuery<'_, diesel::pg::Pg>,
    page: PageRequest,
) -> AppResult<Page<Booking>> {
    if let Some(cursor) = page.after {
        query = query.filter(
            bookings::created_at.lt(cursor.at).or(bookings::created_at
                .eq(cursor.at)
                .and(bookings::id.lt(cursor.id))),
        );
    }
    let rows = query
        .select(Booking::as_select())
        .order((bookings::created_at.desc(), bookings::id.desc()))
        .limit(page.limit())
        .load(conn)
        .await?;
    Ok(page.finish(rows))
}

pub async fn bookings_by_id(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> AppResult<std::collections::HashMap<Uuid, Booking>> {
    let rows: Vec<Booking> = bookings::table
        .filter(bookings::id.eq_any(ids))
        .select(Booking::as_select())
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(|b| (b.id, b)).collect())
}
