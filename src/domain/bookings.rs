//! Booking seats one transaction at a time, and cancelling bookings. The guard against
//! overselling is PostgreSQL's: a conditional `UPDATE events ... WHERE seats_available >= n`
//! on the event row, backed by a CHECK constraint, inside the transaction that inserts the
//! booking. The onsale path ([`super::group_commit`]) batches bookings and comes back here for
//! seated events and for a batch that cannot be committed as a whole.
//!
//! Top layer: a command module.

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::Viewer;
use super::changes::{Changes, Committed};
use super::freed_seats;
use super::inventory::Inventory;
use super::pagination::{Page, PageRequest, load_page};
use super::rows::{find_booking, find_event, insert_booking, rows_by_id};
pub use super::sale_rules::MAX_IDEMPOTENCY_KEY_LEN;
use super::sale_rules::{
    check_idempotency_key, check_sellable, lock_event, lock_event_for, requested_quantity,
    visible_to,
};
use super::seats::{self, SeatOwner};
use super::stock;
use super::user_limits::check_user_limit;
use crate::db::models::{Booking, BookingStatus};
use crate::db::schema::bookings;
use crate::db::{self, DbPool, Uncommitted};
use crate::error::{AppError, AppResult};

pub struct BookingRequest {
    pub event_id: Uuid,
    pub quantity: i32,
    pub idempotency_key: Option<String>,
    /// Particular seats of a seated event (then `quantity` is their number); empty for the
    /// best available.
    pub seat_ids: Vec<Uuid>,
}

enum Attempt {
    Created(Booking, Box<Changes>),
    Existing(Booking),
}

/// Checks what can be checked without the database.
pub(crate) fn validate(request: &BookingRequest) -> AppResult<()> {
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

/// Books seats in a transaction of its own. The onsale path ([`super::group_commit`]) batches
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
) -> Result<Committed<Booking>, Uncommitted<AppError>> {
    validate(request).map_err(Uncommitted::Failed)?;
    let txid = db::begin(conn)
        .await
        .map_err(|e| Uncommitted::Failed(e.into()))?;
    let attempt = attempt_booking(conn, user_id, request).await;
    match db::finish(conn, pool, txid, attempt).await? {
        Attempt::Created(booking, changes) => Ok(Committed::new(booking, *changes)),
        Attempt::Existing(booking) => Ok(Committed::unchanged(booking)),
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
    freed_seats::catch_up(conn, &mut inventory, &mut changes).await?;
    freed_seats::take_from_expired_seats(
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
    let Some(booking) = insert_booking(conn, &booking).await? else {
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
    changes.bookings.push(booking.clone());
    Ok(Attempt::Created(booking, Box::new(changes)))
}

/// The booking already made under this request's idempotency key, if any. The same key for a
/// different request is a conflict, not a replay.
pub(crate) async fn find_by_key(
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

/// Cancels a booking and returns its seats (to the waiting list first), exactly once however
/// many times it is called.
pub async fn cancel_booking(
    conn: &mut AsyncPgConnection,
    viewer: &Viewer,
    id: Uuid,
) -> AppResult<Committed<Booking>> {
    let booking = find_booking(conn, id).await?;
    if booking.user_id != viewer.id() && !viewer.is_admin() {
        return Err(AppError::Forbidden("you can only cancel your own bookings"));
    }
    if booking.status == BookingStatus::Cancelled {
        return Ok(Committed::unchanged(booking));
    }
    if stock::booking_has_order(conn, id).await? {
        return Err(AppError::not_possible(
            "ORDER_BOOKING",
            "these seats were bought in an order: cancel or refund the order instead",
        ));
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
            return Ok(Committed::unchanged(find_booking(conn, id).await?));
        };
        let mut changes = Changes::default();
        seats::release_bookings(conn, &event, &[id], &mut changes).await?;
        // An RSVP whose booking is cancelled is no longer going.
        freed_seats::forget_booking(conn, &cancelled).await?;
        let mut inventory = Inventory::new(event);
        inventory.unbook(cancelled.quantity);
        freed_seats::promote(conn, &mut inventory, &mut changes).await?;
        inventory.save(conn, &mut changes).await?;
        changes.bookings.push(cancelled.clone());
        Ok(Committed::new(cancelled, changes))
    })
    .await
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

/// How many bookings the user has: [`user_bookings`] across all its pages.
pub async fn count_user_bookings(conn: &mut AsyncPgConnection, user_id: Uuid) -> AppResult<i64> {
    let query = bookings::table.filter(bookings::user_id.eq(user_id));
    Ok(query.count().get_result(conn).await?)
}

/// How many bookings the event has: [`event_bookings`] across all its pages. Whoever asks has
/// been let see them by `event_bookings`.
pub async fn count_event_bookings(conn: &mut AsyncPgConnection, event_id: Uuid) -> AppResult<i64> {
    let query = bookings::table.filter(bookings::event_id.eq(event_id));
    Ok(query.count().get_result(conn).await?)
}

async fn list_newest_first(
    conn: &mut AsyncPgConnection,
    query: bookings::BoxedQuery<'_, diesel::pg::Pg>,
    page: PageRequest,
) -> AppResult<Page<Booking>> {
    let query = query.select(Booking::as_select());
    Ok(load_page!(
        conn,
        query,
        page,
        newest_first(bookings::created_at, bookings::id)
    ))
}

pub async fn bookings_by_id(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> AppResult<std::collections::HashMap<Uuid, Booking>> {
    Ok(rows_by_id!(conn, bookings, Booking, ids))
}
