//! Holds: seats kept for one buyer during checkout, or offered to the head of the waiting list.
//!
//! A hold moves seats from `seats_available` to `seats_held` under the event's row lock, and
//! ends exactly once, by a guarded `UPDATE ... WHERE status = 'HELD'`: confirmed into a booking,
//! released by its owner, or expired. Expiry is checked against PostgreSQL's clock
//! (`expires_at <= now()`), by the sweeper and by any buyer who would otherwise be refused, so
//! an expired hold that the sweeper has not reached yet never blocks a sale.

use chrono::{Duration, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::Viewer;
use super::bookings::{check_idempotency_key, find_booking};
use super::events::{check_hold_limit, lock_event, lock_event_for, unbookable_reason};
use super::inventory::{Changes, Inventory};
use super::pagination::{Page, PageRequest};
use super::seats::{self, SeatOwner};
use super::waitlist;
use crate::db::models::{Booking, Event, Hold, HoldStatus, WaitlistEntry, WaitlistStatus};
use crate::db::schema::{bookings, holds, waitlist_entries};
use crate::error::{AppError, AppResult};

/// Most seats one request may name.
pub const MAX_SEAT_IDS: usize = 100;

pub struct HoldRequest {
    pub event_id: Uuid,
    /// Defaults to the number of `seat_ids`, or 1.
    pub quantity: Option<i32>,
    pub seat_ids: Vec<Uuid>,
}

/// The quantity a request for seats comes to: the seats named, or `quantity` (default 1).
pub fn requested_quantity(quantity: Option<i32>, seat_ids: &[Uuid]) -> AppResult<i32> {
    if seat_ids.is_empty() {
        let quantity = quantity.unwrap_or(1);
        if quantity < 1 {
            return Err(AppError::bad_input(
                "quantity",
                "quantity must be at least 1",
            ));
        }
        return Ok(quantity);
    }
    if seat_ids.len() > MAX_SEAT_IDS {
        return Err(AppError::bad_input(
            "seatIds",
            format!("at most {MAX_SEAT_IDS} seats per request"),
        ));
    }
    let mut unique = seat_ids.to_vec();
    unique.sort_unstable();
    unique.dedup();
    if unique.len() != seat_ids.len() {
        return Err(AppError::bad_input("seatIds", "a seat is named twice"));
    }
    let count = seat_ids.len() as i32;
    match quantity {
        Some(quantity) if quantity != count => Err(AppError::bad_input(
            "quantity",
            "quantity must match the number of seatIds",
        )),
        _ => Ok(count),
    }
}

/// Why a request for seats of this event cannot go on: the event is not on sale, or it is a
/// free event (which takes RSVPs), or the request is larger than one booking may be.
pub(super) fn check_sellable(event: &Event, quantity: i32) -> AppResult<()> {
    if let Some(reason) = unbookable_reason(event) {
        return Err(reason);
    }
    if event.free {
        return Err(AppError::not_possible(
            "FREE_EVENT",
            "this event is free: answer with rsvp instead",
        ));
    }
    if quantity > event.max_per_booking {
        return Err(AppError::bad_input(
            "quantity",
            format!("at most {} seats per booking", event.max_per_booking),
        ));
    }
    Ok(())
}

/// Keeps seats for the user for the event's hold time, within the seats one user may hold at
/// once ([`super::events::hold_cap`]).
pub async fn hold_seats(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    request: HoldRequest,
) -> AppResult<(Hold, Changes)> {
    let quantity = requested_quantity(request.quantity, &request.seat_ids)?;
    let request = &request;
    conn.transaction(async move |conn| {
        let event = lock_event_for(conn, request.event_id, user_id).await?;
        check_sellable(&event, quantity)?;
        check_hold_limit(conn, &event, user_id, quantity).await?;
        let mut changes = Changes::default();
        let mut inventory = Inventory::new(event);
        waitlist::catch_up(conn, &mut inventory, &mut changes).await?;
        let seat_ids = &request.seat_ids;
        take_from_expired_seats(conn, &mut inventory, quantity, seat_ids, &mut changes).await?;
        if inventory.available < quantity {
            return Err(AppError::SoldOut {
                seats_available: inventory.available,
            });
        }
        let minutes = inventory.event.hold_minutes;
        let hold = insert_hold(conn, &inventory.event, user_id, quantity, minutes).await?;
        let owner = SeatOwner::Hold(hold.id);
        seats::claim(
            conn,
            &inventory.event,
            owner,
            quantity,
            &request.seat_ids,
            &mut changes,
        )
        .await?;
        inventory.hold(quantity);
        inventory.save(conn, &mut changes).await?;
        changes.holds.push(hold.clone());
        Ok((hold, changes))
    })
    .await
}

/// Before refusing a request for want of seats, ends the holds that have expired but that the
/// sweeper has not reached yet. (Their seats go to the waiting list first, if it has anyone.)
pub(super) async fn take_from_expired(
    conn: &mut AsyncPgConnection,
    inventory: &mut Inventory,
    wanted: i32,
    changes: &mut Changes,
) -> AppResult<()> {
    if inventory.available < wanted && inventory.held > 0 {
        expire(conn, inventory, changes).await?;
    }
    Ok(())
}

/// The same for a request naming seats: one of them may be kept by an expired hold even while
/// other seats are free.
pub(super) async fn take_from_expired_seats(
    conn: &mut AsyncPgConnection,
    inventory: &mut Inventory,
    wanted: i32,
    seat_ids: &[Uuid],
    changes: &mut Changes,
) -> AppResult<()> {
    if !seat_ids.is_empty() && inventory.held > 0 {
        expire(conn, inventory, changes).await?;
    }
    take_from_expired(conn, inventory, wanted, changes).await
}

pub(super) async fn insert_hold(
    conn: &mut AsyncPgConnection,
    event: &Event,
    user_id: Uuid,
    quantity: i32,
    minutes: i32,
) -> AppResult<Hold> {
    let now = Utc::now();
    // Nobody can confirm once sales close or the event starts, so no hold outlasts that.
    let expires_at = [
        Some(now + Duration::minutes(minutes.into())),
        event.sales_end_at,
        Some(event.starts_at),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(now);
    let hold = Hold {
        id: Uuid::new_v4(),
        event_id: event.id,
        user_id,
        quantity,
        status: HoldStatus::Held,
        expires_at,
        created_at: now,
        ended_at: None,
        booking_id: None,
    };
    Ok(diesel::insert_into(holds::table)
        .values(&hold)
        .returning(Hold::as_returning())
        .get_result(conn)
        .await?)
}

pub async fn find_hold(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<Hold> {
    holds::table
        .find(id)
        .select(Hold::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or(AppError::NotFound("hold"))
}

/// A hold is its owner's business (and an admin's); to anyone else it does not exist.
fn ensure_owner(viewer: &Viewer, hold: &Hold) -> AppResult<()> {
    if hold.user_id == viewer.id() || viewer.is_admin() {
        Ok(())
    } else {
        Err(AppError::NotFound("hold"))
    }
}

fn ended_error(hold: &Hold) -> AppError {
    match hold.status {
        HoldStatus::Released => {
            AppError::Conflict("this hold was released; hold the seats again".into())
        }
        _ => AppError::Conflict(format!(
            "this hold expired at {}; hold the seats again",
            hold.expires_at.to_rfc3339()
        )),
    }
}

/// Turns the user's hold into a booking, exactly once: confirming a confirmed hold again
/// returns the same booking. An expired or released hold cannot be confirmed.
pub async fn confirm_hold(
    conn: &mut AsyncPgConnection,
    viewer: &Viewer,
    hold_id: Uuid,
    idempotency_key: Option<String>,
) -> AppResult<(Booking, Changes)> {
    check_idempotency_key(idempotency_key.as_deref())?;
    let hold = find_hold(conn, hold_id).await?;
    if hold.user_id != viewer.id() {
        return Err(AppError::NotFound("hold"));
    }
    let idempotency_key = &idempotency_key;
    conn.transaction(async move |conn| {
        let event = lock_event(conn, hold.event_id).await?;
        // Read again under the lock: the sweeper or another confirmation may have ended it.
        let hold = find_hold(conn, hold_id).await?;
        match hold.status {
            HoldStatus::Confirmed => {
                let booking_id = hold.booking_id.ok_or_else(|| {
                    AppError::from(anyhow::anyhow!("confirmed hold without a booking"))
                })?;
                return Ok((find_booking(conn, booking_id).await?, Changes::default()));
            }
            HoldStatus::Released | HoldStatus::Expired => return Err(ended_error(&hold)),
            HoldStatus::Held if hold.expires_at <= Utc::now() => return Err(ended_error(&hold)),
            HoldStatus::Held => {}
        }
        if let Some(reason) = unbookable_reason(&event) {
            return Err(reason);
        }
        let now = Utc::now();
        let booking = Booking::confirmed(
            event.id,
            hold.user_id,
            hold.quantity,
            idempotency_key.clone(),
            now,
        );
        let inserted: Option<Booking> = diesel::insert_into(bookings::table)
            .values(&booking)
            .on_conflict(diesel::upsert::on_constraint(
                "bookings_user_idempotency_key",
            ))
            .do_nothing()
            .returning(Booking::as_returning())
            .get_result(conn)
            .await
            .optional()?;
        let Some(booking) = inserted else {
            return Err(AppError::Conflict(
                "this idempotencyKey was already used for a different booking request".into(),
            ));
        };
        // PostgreSQL's clock has the last word on expiry: the sweeper uses the same test.
        let confirmed: Option<Hold> = diesel::update(
            holds::table
                .find(hold_id)
                .filter(holds::status.eq(HoldStatus::Held))
                .filter(holds::expires_at.gt(diesel::dsl::now)),
        )
        .set((
            holds::status.eq(HoldStatus::Confirmed),
            holds::booking_id.eq(booking.id),
            holds::ended_at.eq(diesel::dsl::now),
        ))
        .returning(Hold::as_returning())
        .get_result(conn)
        .await
        .optional()?;
        let Some(confirmed) = confirmed else {
            return Err(ended_error(&Hold {
                status: HoldStatus::Expired,
                ..hold
            }));
        };
        let mut changes = Changes::default();
        seats::transfer(conn, &event, hold_id, booking.id, &mut changes).await?;
        let fulfilled: Vec<WaitlistEntry> = diesel::update(
            waitlist_entries::table
                .filter(waitlist_entries::hold_id.eq(hold_id))
                .filter(waitlist_entries::status.eq(WaitlistStatus::Offered)),
        )
        .set((
            waitlist_entries::status.eq(WaitlistStatus::Fulfilled),
            waitlist_entries::booking_id.eq(booking.id),
            waitlist_entries::updated_at.eq(diesel::dsl::now),
        ))
        .returning(WaitlistEntry::as_returning())
        .get_results(conn)
        .await?;
        changes.waitlist.extend(fulfilled);
        let mut inventory = Inventory::new(event);
        inventory.confirm(confirmed.quantity);
        inventory.save(conn, &mut changes).await?;
        changes.holds.push(confirmed);
        changes.bookings.push(booking.clone());
        Ok((booking, changes))
    })
    .await
}

/// Gives the hold's seats back (to the waiting list first). Releasing a hold that has ended
/// returns it as it is.
pub async fn release_hold(
    conn: &mut AsyncPgConnection,
    viewer: &Viewer,
    hold_id: Uuid,
) -> AppResult<(Hold, Changes)> {
    let hold = find_hold(conn, hold_id).await?;
    ensure_owner(viewer, &hold)?;
    if hold.status != HoldStatus::Held {
        return Ok((hold, Changes::default()));
    }
    conn.transaction(async move |conn| {
        let event = lock_event(conn, hold.event_id).await?;
        let mut changes = Changes::default();
        let mut inventory = Inventory::new(event);
        let released = end_holds(
            conn,
            &mut inventory,
            Ending::One(hold_id),
            HoldStatus::Released,
            &mut changes,
        )
        .await?;
        let Some(released) = released.into_iter().next() else {
            return Ok((find_hold(conn, hold_id).await?, changes));
        };
        waitlist::promote(conn, &mut inventory, &mut changes).await?;
        inventory.save(conn, &mut changes).await?;
        Ok((released, changes))
    })
    .await
}

/// Ends the event's expired holds, under its lock, and offers the seats to the waiting list.
pub(super) async fn expire(
    conn: &mut AsyncPgConnection,
    inventory: &mut Inventory,
    changes: &mut Changes,
) -> AppResult<()> {
    let event_id = inventory.event.id;
    let ended = end_holds(
        conn,
        inventory,
        Ending::ExpiredOf(event_id),
        HoldStatus::Expired,
        changes,
    )
    .await?;
    if !ended.is_empty() {
        waitlist::promote(conn, inventory, changes).await?;
    }
    Ok(())
}

/// Which live holds to end.
pub(super) enum Ending {
    One(Uuid),
    /// Every hold of the event past its expiry, by PostgreSQL's clock.
    ExpiredOf(Uuid),
}

/// Ends the live holds `which` names with `status`, in one guarded `UPDATE`, frees their seats
/// in `inventory`, and ends the waiting-list offers among them (the entry is EXPIRED for an
/// offer that lapsed, LEFT for one the user turned down). Returns the holds it ended.
pub(super) async fn end_holds(
    conn: &mut AsyncPgConnection,
    inventory: &mut Inventory,
    which: Ending,
    status: HoldStatus,
    changes: &mut Changes,
) -> AppResult<Vec<Hold>> {
    let live = holds::status.eq(HoldStatus::Held);
    let end = (
        holds::status.eq(status),
        holds::ended_at.eq(diesel::dsl::now),
    );
    let ended: Vec<Hold> = match which {
        Ending::One(id) => {
            diesel::update(holds::table.find(id).filter(live))
                .set(end)
                .returning(Hold::as_returning())
                .get_results(conn)
                .await?
        }
        Ending::ExpiredOf(event_id) => {
            diesel::update(
                holds::table
                    .filter(holds::event_id.eq(event_id))
                    .filter(live)
                    .filter(holds::expires_at.le(diesel::dsl::now)),
            )
            .set(end)
            .returning(Hold::as_returning())
            .get_results(conn)
            .await?
        }
    };
    if ended.is_empty() {
        return Ok(ended);
    }
    let ended_ids: Vec<Uuid> = ended.iter().map(|h| h.id).collect();
    seats::release_holds(conn, &inventory.event, &ended_ids, changes).await?;
    for hold in &ended {
        inventory.unhold(hold.quantity);
    }
    let entry_status = match status {
        HoldStatus::Expired => WaitlistStatus::Expired,
        _ => WaitlistStatus::Left,
    };
    let entries: Vec<WaitlistEntry> = diesel::update(
        waitlist_entries::table
            .filter(waitlist_entries::hold_id.eq_any(&ended_ids))
            .filter(waitlist_entries::status.eq(WaitlistStatus::Offered)),
    )
    .set((
        waitlist_entries::status.eq(entry_status),
        waitlist_entries::updated_at.eq(diesel::dsl::now),
    ))
    .returning(WaitlistEntry::as_returning())
    .get_results(conn)
    .await?;
    changes.waitlist.extend(entries);
    changes.holds.extend(ended.iter().cloned());
    Ok(ended)
}

/// Ends every live hold of an event that is being cancelled or completed; the caller resets
/// the counters.
pub(super) async fn end_all(
    conn: &mut AsyncPgConnection,
    event: &Event,
    status: HoldStatus,
    changes: &mut Changes,
) -> AppResult<()> {
    let ended: Vec<Hold> = diesel::update(
        holds::table
            .filter(holds::event_id.eq(event.id))
            .filter(holds::status.eq(HoldStatus::Held)),
    )
    .set((
        holds::status.eq(status),
        holds::ended_at.eq(diesel::dsl::now),
    ))
    .returning(Hold::as_returning())
    .get_results(conn)
    .await?;
    let ids: Vec<Uuid> = ended.iter().map(|h| h.id).collect();
    seats::release_holds(conn, event, &ids, changes).await?;
    changes.holds.extend(ended);
    Ok(())
}

/// Events with holds past their expiry, for the sweeper.
pub async fn events_with_expired_holds(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> AppResult<Vec<Uuid>> {
    Ok(holds::table
        .filter(holds::status.eq(HoldStatus::Held))
        .filter(holds::expires_at.le(diesel::dsl::now))
        .select(holds::event_id)
        .distinct()
        .limit(limit)
        .load(conn)
        .await?)
}

/// Ends one event's expired holds in a transaction of its own. Safe to run on several
/// instances at once: the event lock queues them, and a hold ends only once.
pub async fn sweep_event(conn: &mut AsyncPgConnection, event_id: Uuid) -> AppResult<Changes> {
    conn.transaction(async move |conn| {
        let event = lock_event(conn, event_id).await?;
        let mut changes = Changes::default();
        let mut inventory = Inventory::new(event);
        expire(conn, &mut inventory, &mut changes).await?;
        inventory.save(conn, &mut changes).await?;
        Ok(changes)
    })
    .await
}

/// The user's holds, newest first; only live ones unless `all`.
pub async fn user_holds(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    all: bool,
    page: PageRequest,
) -> AppResult<Page<Hold>> {
    let mut query = holds::table.filter(holds::user_id.eq(user_id)).into_boxed();
    if !all {
        query = query
            .filter(holds::status.eq(HoldStatus::Held))
            .filter(holds::expires_at.gt(diesel::dsl::now));
    }
    if let Some(cursor) = page.after {
        query = query.filter(
            holds::created_at
                .lt(cursor.at)
                .or(holds::created_at.eq(cursor.at).and(holds::id.lt(cursor.id))),
        );
    }
    let rows = query
        .select(Hold::as_select())
        .order((holds::created_at.desc(), holds::id.desc()))
        .limit(page.limit())
        .load(conn)
        .await?;
    Ok(page.finish(rows))
}

/// The hold, for its owner or an admin.
pub async fn visible_hold(
    conn: &mut AsyncPgConnection,
    viewer: &Viewer,
    id: Uuid,
) -> AppResult<Hold> {
    let hold = find_hold(conn, id).await?;
    ensure_owner(viewer, &hold)?;
    Ok(hold)
}

pub async fn holds_by_id(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> AppResult<std::collections::HashMap<Uuid, Hold>> {
    let rows: Vec<Hold> = holds::table
        .filter(holds::id.eq_any(ids))
        .select(Hold::as_select())
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(|h| (h.id, h)).collect())
}
