//! Where freed seats go, and the holds and waiting-list places that hold seats apart from
//! bookings. A hold ends (confirmed, released, or expired by PostgreSQL's clock) exactly once,
//! by a guarded `UPDATE ... WHERE status = 'HELD'`; the seats it frees, like those of a
//! cancelled booking or of more capacity, go to the waiting list first ([`promote`]): each
//! waiting entry in order whose quantity fits what is free gets an offer, a hold of its own
//! lasting the event's `offer_minutes` (an RSVP's entry is booked straight away; an entry of an
//! event that sells ticket types is offered an order pending payment, see
//! [`super::waitlist_orders`]). An offer that
//! lapses ends its hold, which frees its seats for the next in line. So hold expiry, promotion
//! and offers call each other by nature, and live here together, which is why this file runs
//! past 600 lines: split, its halves would import each other.
//!
//! Everything here runs under the event's row lock ([`super::sale_rules::lock_event`]) and
//! moves seats through an [`Inventory`]. Outside the sales window nothing is offered (an offer
//! could not be confirmed): seats freed then are owed to the waiting list once sales reopen
//! ([`catch_up`]).
//! Expired holds the sweeper has not reached yet never block a sale: every sale ends them
//! first when it would otherwise be refused ([`take_from_expired`]).
//!
//! Also here: what a booking's cancellation does to its RSVP, and the RSVPs and waiting list
//! of an event that is cancelled or over.
//!
//! The middle layer: imports the bottom (sale rules, user limits, rows), the inventory and the
//! seats, never a command. The sweeper's transactions over it are [`super::sweeps`].

use chrono::{Duration, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::changes::Changes;
use super::inventory::Inventory;
use super::rows::insert_unkeyed_booking;
use super::sale_rules::unbookable_reason;
use super::seats::{self, SeatOwner};
use super::stock;
use super::user_limits::{hold_cap, seats_held_by, seats_of_user};
use super::waitlist_orders::{self, TicketedList};
use crate::db::models::{
    Booking, Event, Hold, HoldStatus, RsvpResponse, WaitlistEntry, WaitlistStatus,
};
use crate::db::schema::{holds, rsvps, waitlist_entries};
use crate::error::AppResult;

/// Before refusing a request for want of seats, ends the holds that have expired but that the
/// sweeper has not reached yet. (Their seats go to the waiting list first, if it has anyone.)
pub(crate) async fn take_from_expired(
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
pub(crate) async fn take_from_expired_seats(
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

pub(crate) async fn insert_hold(
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

/// Ends the event's expired holds, under its lock, and offers the seats to the waiting list.
pub(crate) async fn expire(
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
        promote(conn, inventory, changes).await?;
    }
    Ok(())
}

/// Which live holds to end.
pub(crate) enum Ending {
    One(Uuid),
    /// Every hold of the event past its expiry, by PostgreSQL's clock.
    ExpiredOf(Uuid),
}

/// Ends the live holds `which` names with `status`, in one guarded `UPDATE`, frees their seats
/// in `inventory`, and ends the waiting-list offers among them (the entry is EXPIRED for an
/// offer that lapsed, LEFT for one the user turned down). Returns the holds it ended.
pub(crate) async fn end_holds(
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
    // An order waiting for payment on one of them ends with it.
    stock::orders_of_ended_holds(conn, &ended_ids, status, changes).await?;
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
pub(crate) async fn end_all(
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
    stock::orders_of_ended_holds(conn, &ids, status, changes).await?;
    changes.holds.extend(ended);
    Ok(())
}

/// Entries read per round when promoting.
const PROMOTE_CHUNK: i64 = 100;

const ACTIVE: [WaitlistStatus; 2] = [WaitlistStatus::Waiting, WaitlistStatus::Offered];

pub(crate) async fn insert_entry(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    user_id: Uuid,
    quantity: i32,
    rsvp: bool,
    ticket_type_id: Option<Uuid>,
) -> AppResult<WaitlistEntry> {
    let now = Utc::now();
    let entry = WaitlistEntry {
        id: Uuid::new_v4(),
        event_id,
        user_id,
        quantity,
        status: WaitlistStatus::Waiting,
        rsvp,
        hold_id: None,
        booking_id: None,
        created_at: now,
        updated_at: now,
        ticket_type_id,
    };
    Ok(diesel::insert_into(waitlist_entries::table)
        .values(&entry)
        .returning(WaitlistEntry::as_returning())
        .get_result(conn)
        .await?)
}

pub(crate) async fn active_entry(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    user_id: Uuid,
) -> AppResult<Option<WaitlistEntry>> {
    Ok(waitlist_entries::table
        .filter(waitlist_entries::event_id.eq(event_id))
        .filter(waitlist_entries::user_id.eq(user_id))
        .filter(waitlist_entries::status.eq_any(ACTIVE))
        .select(WaitlistEntry::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Ends a live entry as LEFT, giving up its offer if it has one, under the event's lock.
pub(crate) async fn leave_entry(
    conn: &mut AsyncPgConnection,
    inventory: &mut Inventory,
    entry: &WaitlistEntry,
    changes: &mut Changes,
) -> AppResult<WaitlistEntry> {
    let left: WaitlistEntry = diesel::update(waitlist_entries::table.find(entry.id))
        .set((
            waitlist_entries::status.eq(WaitlistStatus::Left),
            waitlist_entries::updated_at.eq(diesel::dsl::now),
        ))
        .returning(WaitlistEntry::as_returning())
        .get_result(conn)
        .await?;
    if let Some(hold_id) = entry
        .hold_id
        .filter(|_| entry.status == WaitlistStatus::Offered)
    {
        let released = end_holds(
            conn,
            inventory,
            Ending::One(hold_id),
            HoldStatus::Released,
            changes,
        )
        .await?;
        if !released.is_empty() {
            promote(conn, inventory, changes).await?;
        }
    }
    changes.waitlist.push(left.clone());
    Ok(left)
}

/// Offers free seats to the waiting list, in order, under the event's lock (see the module
/// documentation). Entries too large for what is free keep their place.
pub async fn promote(
    conn: &mut AsyncPgConnection,
    inventory: &mut Inventory,
    changes: &mut Changes,
) -> AppResult<()> {
    let event = inventory.event.clone();
    // Outside the sales window an offer could never be confirmed: the seats stay on the
    // event until sales reopen or it is over.
    if unbookable_reason(&event).is_some() {
        return Ok(());
    }
    // An event that sells ticket types sells only through orders: its entries are offered
    // orders pending payment ([`waitlist_orders`]), and each depends on its type's stock.
    let mut ticketed = match event.currency {
        Some(_) => Some(TicketedList::load(conn, event.id).await?),
        None => None,
    };
    let mut after: Option<(chrono::DateTime<Utc>, Uuid)> = None;
    while inventory.available > 0 {
        let mut query = waitlist_entries::table
            .filter(waitlist_entries::event_id.eq(event.id))
            .filter(waitlist_entries::status.eq(WaitlistStatus::Waiting))
            .filter(waitlist_entries::quantity.le(inventory.available))
            .into_boxed();
        if let Some((at, id)) = after {
            query = query.filter(
                waitlist_entries::created_at
                    .gt(at)
                    .or(waitlist_entries::created_at
                        .eq(at)
                        .and(waitlist_entries::id.gt(id))),
            );
        }
        let waiting: Vec<WaitlistEntry> = query
            .select(WaitlistEntry::as_select())
            .order((waitlist_entries::created_at, waitlist_entries::id))
            .limit(PROMOTE_CHUNK)
            .load(conn)
            .await?;
        let Some(last) = waiting.last() else { break };
        after = Some((last.created_at, last.id));
        let exhausted = (waiting.len() as i64) < PROMOTE_CHUNK;
        for entry in waiting {
            if entry.quantity > inventory.available
                || ticketed
                    .as_ref()
                    .is_some_and(|list| !list.fits(&entry, inventory.available))
                || !within_limits(conn, &inventory.event, &entry).await?
            {
                continue;
            }
            let promoted = if entry.rsvp {
                book_entry(conn, inventory, &entry, changes).await?
            } else if let Some(list) = &mut ticketed {
                let promoted = offer_order(conn, inventory, list, &entry, changes).await?;
                // The type's and its quotas' counters moved: read them again for the next.
                *list = TicketedList::load(conn, event.id).await?;
                promoted
            } else {
                offer(conn, inventory, &entry, changes).await?
            };
            changes.waitlist.push(promoted);
            if inventory.available == 0 {
                break;
            }
        }
        if exhausted {
            break;
        }
    }
    Ok(())
}

/// Whether the entry's seats keep its user within the event's limits: the seats one user may
/// hold at once ([`hold_cap`], an offer being a hold), and `max_per_user`, which already
/// counts the entry. An entry that does not keeps its place, like one too large for the seats
/// free, until its user has room (say the limit was lowered, or they confirmed a hold).
async fn within_limits(
    conn: &mut AsyncPgConnection,
    event: &Event,
    entry: &WaitlistEntry,
) -> AppResult<bool> {
    if let Some(max) = event.max_per_user {
        let have = seats_of_user(conn, event.id, &[entry.user_id]).await?;
        return Ok(have.get(&entry.user_id).copied().unwrap_or(0) <= i64::from(max));
    }
    if entry.rsvp {
        // Booked straight away: no hold to count.
        return Ok(true);
    }
    let held = seats_held_by(conn, event.id, entry.user_id).await?;
    Ok(held + i64::from(entry.quantity) <= i64::from(hold_cap(event)))
}

/// Offers the waiting list the seats freed while sales were paused. [`promote`] offers nothing
/// outside the sales window (an offer could not be confirmed), so seats freed before the window
/// opens or after it closes stay free; once sales are open again they are the waiting list's
/// before anyone else's. Every sale of an event with a sales window runs this first, under the
/// event's lock, and the sweeper runs it for events nobody is buying
/// ([`super::sweeps::events_owed_seats`]). An event without a sales window pauses only when
/// it starts, and only an update can reopen it, which promotes by itself.
pub(crate) async fn catch_up(
    conn: &mut AsyncPgConnection,
    inventory: &mut Inventory,
    changes: &mut Changes,
) -> AppResult<()> {
    let event = &inventory.event;
    let has_window = event.sales_start_at.is_some() || event.sales_end_at.is_some();
    if !has_window || inventory.available == 0 {
        return Ok(());
    }
    promote(conn, inventory, changes).await
}

/// Offers an entry its seats as a hold of its own.
async fn offer(
    conn: &mut AsyncPgConnection,
    inventory: &mut Inventory,
    entry: &WaitlistEntry,
    changes: &mut Changes,
) -> AppResult<WaitlistEntry> {
    let event = inventory.event.clone();
    let hold = insert_hold(
        conn,
        &event,
        entry.user_id,
        entry.quantity,
        event.offer_minutes,
    )
    .await?;
    seats::claim(
        conn,
        &event,
        SeatOwner::Hold(hold.id),
        entry.quantity,
        &[],
        changes,
    )
    .await?;
    inventory.hold(entry.quantity);
    changes.holds.push(hold.clone());
    Ok(diesel::update(waitlist_entries::table.find(entry.id))
        .set((
            waitlist_entries::status.eq(WaitlistStatus::Offered),
            waitlist_entries::hold_id.eq(hold.id),
            waitlist_entries::updated_at.eq(diesel::dsl::now),
        ))
        .returning(WaitlistEntry::as_returning())
        .get_result(conn)
        .await?)
}

/// Offers an entry of an event that sells ticket types an order pending payment for its
/// seats, kept by a hold of its own (see [`waitlist_orders`]).
async fn offer_order(
    conn: &mut AsyncPgConnection,
    inventory: &mut Inventory,
    list: &TicketedList,
    entry: &WaitlistEntry,
    changes: &mut Changes,
) -> AppResult<WaitlistEntry> {
    let event = inventory.event.clone();
    let hold = insert_hold(
        conn,
        &event,
        entry.user_id,
        entry.quantity,
        list.offer_minutes(&event),
    )
    .await?;
    waitlist_orders::offer_order(conn, &event, list, entry, &hold, changes).await?;
    inventory.hold(entry.quantity);
    changes.holds.push(hold.clone());
    Ok(diesel::update(waitlist_entries::table.find(entry.id))
        .set((
            waitlist_entries::status.eq(WaitlistStatus::Offered),
            waitlist_entries::hold_id.eq(hold.id),
            waitlist_entries::updated_at.eq(diesel::dsl::now),
        ))
        .returning(WaitlistEntry::as_returning())
        .get_result(conn)
        .await?)
}

/// An offer's hold was confirmed by paying its order: the entry is FULFILLED with the order's
/// first booking.
pub(crate) async fn fulfil_offer(
    conn: &mut AsyncPgConnection,
    hold_id: Uuid,
    booking_id: Option<Uuid>,
    changes: &mut Changes,
) -> AppResult<()> {
    let fulfilled: Vec<WaitlistEntry> = diesel::update(
        waitlist_entries::table
            .filter(waitlist_entries::hold_id.eq(hold_id))
            .filter(waitlist_entries::status.eq(WaitlistStatus::Offered)),
    )
    .set((
        waitlist_entries::status.eq(WaitlistStatus::Fulfilled),
        waitlist_entries::booking_id.eq(booking_id),
        waitlist_entries::updated_at.eq(diesel::dsl::now),
    ))
    .returning(WaitlistEntry::as_returning())
    .get_results(conn)
    .await?;
    changes.waitlist.extend(fulfilled);
    Ok(())
}

/// Books an RSVP's entry straight away.
async fn book_entry(
    conn: &mut AsyncPgConnection,
    inventory: &mut Inventory,
    entry: &WaitlistEntry,
    changes: &mut Changes,
) -> AppResult<WaitlistEntry> {
    let event = inventory.event.clone();
    let booking = insert_unkeyed_booking(conn, event.id, entry.user_id, entry.quantity).await?;
    seats::claim(
        conn,
        &event,
        SeatOwner::Booking(booking.id),
        entry.quantity,
        &[],
        changes,
    )
    .await?;
    inventory.book(entry.quantity);
    diesel::update(
        rsvps::table
            .filter(rsvps::event_id.eq(event.id))
            .filter(rsvps::user_id.eq(entry.user_id)),
    )
    .set((
        rsvps::booking_id.eq(booking.id),
        rsvps::updated_at.eq(diesel::dsl::now),
    ))
    .execute(conn)
    .await?;
    changes.bookings.push(booking.clone());
    Ok(diesel::update(waitlist_entries::table.find(entry.id))
        .set((
            waitlist_entries::status.eq(WaitlistStatus::Fulfilled),
            waitlist_entries::booking_id.eq(booking.id),
            waitlist_entries::updated_at.eq(diesel::dsl::now),
        ))
        .returning(WaitlistEntry::as_returning())
        .get_result(conn)
        .await?)
}

/// Closes the waiting list of an event that is cancelled or over; the caller ends the offers'
/// holds.
pub(crate) async fn close_all(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    changes: &mut Changes,
) -> AppResult<()> {
    let closed: Vec<WaitlistEntry> = diesel::update(
        waitlist_entries::table
            .filter(waitlist_entries::event_id.eq(event_id))
            .filter(waitlist_entries::status.eq_any(ACTIVE)),
    )
    .set((
        waitlist_entries::status.eq(WaitlistStatus::Closed),
        waitlist_entries::updated_at.eq(diesel::dsl::now),
    ))
    .returning(WaitlistEntry::as_returning())
    .get_results(conn)
    .await?;
    changes.waitlist.extend(closed);
    Ok(())
}

/// A cancelled booking of an RSVP: its user is no longer going.
pub(crate) async fn forget_booking(
    conn: &mut AsyncPgConnection,
    booking: &Booking,
) -> AppResult<()> {
    // By the primary key (event, user): cancellations of paid events pass here too.
    diesel::update(
        rsvps::table
            .find((booking.event_id, booking.user_id))
            .filter(rsvps::booking_id.eq(booking.id)),
    )
    .set((
        rsvps::response.eq(RsvpResponse::NotGoing),
        rsvps::booking_id.eq(None::<Uuid>),
        rsvps::updated_at.eq(diesel::dsl::now),
    ))
    .execute(conn)
    .await?;
    Ok(())
}

/// Nobody is going to a cancelled event: its GOING answers become NOT_GOING, and none keeps the
/// booking (cancelled with the event) it had. MAYBE and NOT_GOING stay as they were.
pub(crate) async fn cancel_all(conn: &mut AsyncPgConnection, event_id: Uuid) -> AppResult<()> {
    diesel::update(
        rsvps::table
            .filter(rsvps::event_id.eq(event_id))
            .filter(rsvps::response.eq(RsvpResponse::Going)),
    )
    .set((
        rsvps::response.eq(RsvpResponse::NotGoing),
        rsvps::booking_id.eq(None::<Uuid>),
        rsvps::updated_at.eq(diesel::dsl::now),
    ))
    .execute(conn)
    .await?;
    Ok(())
}
