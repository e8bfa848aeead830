//! Holds: seats kept for one buyer during checkout. The commands on a hold (hold seats,
//! confirm it into a booking, release it) and the reads of one user's holds. How a hold ends
//! by expiry, and the offers the waiting list gets as holds, live with the other paths of freed
//! seats in [`super::freed_seats`].
//!
//! A hold moves seats from `seats_available` to `seats_held` under the event's row lock, and
//! ends exactly once, by a guarded `UPDATE ... WHERE status = 'HELD'`: confirmed into a booking,
//! released by its owner, or expired. Expiry is checked against PostgreSQL's clock
//! (`expires_at <= now()`), by the sweeper and by any buyer who would otherwise be refused, so
//! an expired hold that the sweeper has not reached yet never blocks a sale.
//!
//! Top layer: a command module.

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::Viewer;
use super::changes::{Changes, Committed};
use super::freed_seats::{self, Ending};
use super::inventory::Inventory;
use super::pagination::{Page, PageRequest, load_page};
use super::rows::{OrNotFound, find_booking, insert_booking, rows_by_id};
pub use super::sale_rules::{MAX_SEAT_IDS, requested_quantity};
use super::sale_rules::{
    check_idempotency_key, check_sellable, lock_event, lock_event_for, unbookable_reason,
};
use super::seats::{self, SeatOwner};
use super::stock;
use super::user_limits::check_hold_limit;
use crate::db::models::{Booking, Hold, HoldStatus, WaitlistEntry, WaitlistStatus};
use crate::db::schema::{holds, waitlist_entries};
use crate::error::{AppError, AppResult};

pub struct HoldRequest {
    pub event_id: Uuid,
    /// Defaults to the number of `seat_ids`, or 1.
    pub quantity: Option<i32>,
    pub seat_ids: Vec<Uuid>,
}

/// Keeps seats for the user for the event's hold time, within the seats one user may hold at
/// once ([`super::user_limits::hold_cap`]).
pub async fn hold_seats(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    request: HoldRequest,
) -> AppResult<Committed<Hold>> {
    let quantity = requested_quantity(request.quantity, &request.seat_ids)?;
    let request = &request;
    conn.transaction(async move |conn| {
        let event = lock_event_for(conn, request.event_id, user_id).await?;
        check_sellable(&event, quantity)?;
        check_hold_limit(conn, &event, user_id, quantity).await?;
        let mut changes = Changes::default();
        let mut inventory = Inventory::new(event);
        freed_seats::catch_up(conn, &mut inventory, &mut changes).await?;
        let seat_ids = &request.seat_ids;
        freed_seats::take_from_expired_seats(
            conn,
            &mut inventory,
            quantity,
            seat_ids,
            &mut changes,
        )
        .await?;
        if inventory.available < quantity {
            return Err(AppError::SoldOut {
                seats_available: inventory.available,
            });
        }
        let minutes = inventory.event.hold_minutes;
        let hold =
            freed_seats::insert_hold(conn, &inventory.event, user_id, quantity, minutes).await?;
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
        Ok(Committed::new(hold, changes))
    })
    .await
}

pub async fn find_hold(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<Hold> {
    holds::table
        .find(id)
        .select(Hold::as_select())
        .first(conn)
        .await
        .or_not_found("hold")
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
) -> AppResult<Committed<Booking>> {
    check_idempotency_key(idempotency_key.as_deref())?;
    let hold = find_hold(conn, hold_id).await?;
    if hold.user_id != viewer.id() {
        return Err(AppError::NotFound("hold"));
    }
    if stock::hold_has_order(conn, hold_id).await? {
        return Err(AppError::not_possible(
            "ORDER_HOLD",
            "this hold keeps an order's seats: the order is confirmed by paying it",
        ));
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
                return Ok(Committed::unchanged(find_booking(conn, booking_id).await?));
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
        let Some(booking) = insert_booking(conn, &booking).await? else {
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
        Ok(Committed::new(booking, changes))
    })
    .await
}

/// Gives the hold's seats back (to the waiting list first). Releasing a hold that has ended
/// returns it as it is.
pub async fn release_hold(
    conn: &mut AsyncPgConnection,
    viewer: &Viewer,
    hold_id: Uuid,
) -> AppResult<Committed<Hold>> {
    let hold = find_hold(conn, hold_id).await?;
    ensure_owner(viewer, &hold)?;
    if hold.status != HoldStatus::Held {
        return Ok(Committed::unchanged(hold));
    }
    conn.transaction(async move |conn| {
        let event = lock_event(conn, hold.event_id).await?;
        let mut changes = Changes::default();
        let mut inventory = Inventory::new(event);
        let released = freed_seats::end_holds(
            conn,
            &mut inventory,
            Ending::One(hold_id),
            HoldStatus::Released,
            &mut changes,
        )
        .await?;
        let Some(released) = released.into_iter().next() else {
            return Ok(Committed::new(find_hold(conn, hold_id).await?, changes));
        };
        freed_seats::promote(conn, &mut inventory, &mut changes).await?;
        inventory.save(conn, &mut changes).await?;
        Ok(Committed::new(released, changes))
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
    let query = user_holds_matching(user_id, all).select(Hold::as_select());
    Ok(load_page!(
        conn,
        query,
        page,
        newest_first(holds::created_at, holds::id)
    ))
}

/// How many holds [`user_holds`] lists across all its pages.
pub async fn count_user_holds(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    all: bool,
) -> AppResult<i64> {
    let query = user_holds_matching(user_id, all);
    Ok(query.count().get_result(conn).await?)
}

fn user_holds_matching<'a>(user_id: Uuid, all: bool) -> holds::BoxedQuery<'a, diesel::pg::Pg> {
    let mut query = holds::table.filter(holds::user_id.eq(user_id)).into_boxed();
    if !all {
        query = query
            .filter(holds::status.eq(HoldStatus::Held))
            .filter(holds::expires_at.gt(diesel::dsl::now));
    }
    query
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
    Ok(rows_by_id!(conn, holds, Hold, ids))
}
