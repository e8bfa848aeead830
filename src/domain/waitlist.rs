//! The waiting list of a sold-out event: first come, first served.
//!
//! Whenever seats come back (a cancellation, a hold that ends, more capacity), [`promote`] runs
//! in the same transaction, under the event's lock, before anyone else can see the seats: each
//! waiting entry in order whose quantity fits what is free gets an offer, a hold of its own that
//! lasts the event's `offer_minutes`. An entry that came from an RSVP is booked straight away
//! instead (its user already said they are going). A partial unique index allows one live
//! entry per user and event, so nobody is counted twice.

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::events::{
    check_user_limit, hold_cap, lock_event, lock_event_for, seats_held_by, seats_of_user,
    unbookable_reason,
};
use super::holds::{Ending, check_sellable, end_holds, insert_hold, take_from_expired};
use super::inventory::{Changes, Inventory};
use super::seats::{self, SeatOwner};
use crate::db::models::{Booking, Event, HoldStatus, RsvpResponse, WaitlistEntry, WaitlistStatus};
use crate::db::schema::{bookings, rsvps, waitlist_entries};
use crate::error::{AppError, AppResult};

/// Entries read per round when promoting.
const PROMOTE_CHUNK: i64 = 100;

/// A waiting-list entry and its place in the queue (1 is next; none once it has an offer or
/// has ended).
#[derive(Debug, Clone, QueryableByName)]
pub struct PlacedEntry {
    #[diesel(embed)]
    pub entry: WaitlistEntry,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    pub position: Option<i64>,
}

const ACTIVE: [WaitlistStatus; 2] = [WaitlistStatus::Waiting, WaitlistStatus::Offered];

/// Puts the user on the event's waiting list. Only a sold-out event has one: with enough
/// seats free, book them instead. Joining again with the same quantity returns the same entry.
pub async fn join(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    event_id: Uuid,
    quantity: i32,
) -> AppResult<(PlacedEntry, Changes)> {
    if quantity < 1 {
        return Err(AppError::bad_input(
            "quantity",
            "quantity must be at least 1",
        ));
    }
    let entry = conn
        .transaction(async move |conn| {
            let event = lock_event_for(conn, event_id, user_id).await?;
            check_sellable(&event, quantity)?;
            if let Some(existing) = active_entry(conn, event_id, user_id).await? {
                if existing.quantity != quantity {
                    return Err(AppError::Conflict(format!(
                        "you are already on this waiting list for {} seats; leave it first to change that",
                        existing.quantity
                    )));
                }
                return Ok((existing, Changes::default()));
            }
            check_user_limit(conn, &event, user_id, quantity).await?;
            let mut changes = Changes::default();
            let mut inventory = Inventory::new(event);
            catch_up(conn, &mut inventory, &mut changes).await?;
            take_from_expired(conn, &mut inventory, quantity, &mut changes).await?;
            if inventory.available >= quantity {
                return Err(AppError::not_possible(
                    "SEATS_AVAILABLE",
                    format!(
                        "{} seats are available: book them instead",
                        inventory.available
                    ),
                ));
            }
            let entry = insert_entry(conn, event_id, user_id, quantity, false).await?;
            inventory.save(conn, &mut changes).await?;
            changes.waitlist.push(entry.clone());
            Ok((entry, changes))
        })
        .await?;
    let (entry, changes) = entry;
    // The entry is committed: a failure to read its place must not lose the changes.
    let placed = match place(conn, entry.clone()).await {
        Ok(placed) => placed,
        Err(error) => {
            tracing::warn!(error = %error.message(), "cannot read a new entry's place");
            PlacedEntry {
                entry,
                position: None,
            }
        }
    };
    Ok((placed, changes))
}

pub(super) async fn insert_entry(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    user_id: Uuid,
    quantity: i32,
    rsvp: bool,
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
    };
    Ok(diesel::insert_into(waitlist_entries::table)
        .values(&entry)
        .returning(WaitlistEntry::as_returning())
        .get_result(conn)
        .await?)
}

pub(super) async fn active_entry(
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

/// Takes the user off the event's waiting list. An offer not yet confirmed is given up, and
/// its seats go to the next in line. Leaving the place an RSVP queued for is answering
/// NOT_GOING. Returns the entry, or `None` when there was none.
pub async fn leave(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    event_id: Uuid,
) -> AppResult<(Option<WaitlistEntry>, Changes)> {
    conn.transaction(async move |conn| {
        let event = lock_event_for(conn, event_id, user_id).await?;
        let mut changes = Changes::default();
        let Some(entry) = active_entry(conn, event_id, user_id).await? else {
            return Ok((None, changes));
        };
        let mut inventory = Inventory::new(event);
        let left = leave_entry(conn, &mut inventory, &entry, &mut changes).await?;
        if entry.rsvp {
            // Only a queued answer: one with a seat has no live entry.
            diesel::update(
                rsvps::table
                    .find((event_id, user_id))
                    .filter(rsvps::booking_id.is_null()),
            )
            .set((
                rsvps::response.eq(RsvpResponse::NotGoing),
                rsvps::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
        }
        inventory.save(conn, &mut changes).await?;
        Ok((Some(left), changes))
    })
    .await
}

/// Ends a live entry as LEFT, giving up its offer if it has one, under the event's lock.
pub(super) async fn leave_entry(
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
                || !within_limits(conn, &inventory.event, &entry).await?
            {
                continue;
            }
            let promoted = if entry.rsvp {
                book_entry(conn, inventory, &entry, changes).await?
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
/// ([`events_owed_seats`]). An event without a sales window pauses only when it starts, and
/// only an update can reopen it, which promotes by itself.
pub(super) async fn catch_up(
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

/// Events on sale, with a sales window, whose free seats a waiting entry fits: seats freed
/// while their sales were paused (see [`catch_up`]), for the sweeper.
pub async fn events_owed_seats(conn: &mut AsyncPgConnection, limit: i64) -> AppResult<Vec<Uuid>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        id: Uuid,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT e.id FROM events e \
         WHERE e.status = 'PUBLISHED' AND e.seats_available > 0 AND e.starts_at > now() \
           AND (e.sales_start_at IS NOT NULL OR e.sales_end_at IS NOT NULL) \
           AND (e.sales_start_at IS NULL OR e.sales_start_at <= now()) \
           AND (e.sales_end_at IS NULL OR e.sales_end_at > now()) \
           AND EXISTS (SELECT 1 FROM waitlist_entries w WHERE w.event_id = e.id \
                         AND w.status = 'WAITING' AND w.quantity <= e.seats_available) \
         LIMIT $1",
    )
    .bind::<diesel::sql_types::BigInt, _>(limit)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|row| row.id).collect())
}

/// Offers one event's free seats to its waiting list, in a transaction of its own (see
/// [`catch_up`]). Safe to run on several instances at once: the event lock queues them, and
/// an entry is offered once.
pub async fn catch_up_event(conn: &mut AsyncPgConnection, event_id: Uuid) -> AppResult<Changes> {
    conn.transaction(async move |conn| {
        let event = lock_event(conn, event_id).await?;
        let mut changes = Changes::default();
        let mut inventory = Inventory::new(event);
        catch_up(conn, &mut inventory, &mut changes).await?;
        inventory.save(conn, &mut changes).await?;
        Ok(changes)
    })
    .await
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

/// Books an RSVP's entry straight away.
async fn book_entry(
    conn: &mut AsyncPgConnection,
    inventory: &mut Inventory,
    entry: &WaitlistEntry,
    changes: &mut Changes,
) -> AppResult<WaitlistEntry> {
    let event = inventory.event.clone();
    let booking = insert_booking(conn, event.id, entry.user_id, entry.quantity).await?;
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

pub(super) async fn insert_booking(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    user_id: Uuid,
    quantity: i32,
) -> AppResult<Booking> {
    let booking = Booking::confirmed(event_id, user_id, quantity, None, Utc::now());
    Ok(diesel::insert_into(bookings::table)
        .values(&booking)
        .returning(Booking::as_returning())
        .get_result(conn)
        .await?)
}

/// Closes the waiting list of an event that is cancelled or over; the caller ends the offers'
/// holds.
pub(super) async fn close_all(
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

const PLACED: &str = "SELECT e.*, \
     CASE WHEN e.status = 'WAITING' THEN \
       (SELECT count(*) FROM waitlist_entries w \
         WHERE w.event_id = e.event_id AND w.status = 'WAITING' \
           AND (w.created_at, w.id) <= (e.created_at, e.id)) \
     END AS position \
     FROM waitlist_entries e";

/// The entry with its place in the queue.
pub async fn place(conn: &mut AsyncPgConnection, entry: WaitlistEntry) -> AppResult<PlacedEntry> {
    let placed: Option<PlacedEntry> = diesel::sql_query(format!("{PLACED} WHERE e.id = $1"))
        .bind::<diesel::sql_types::Uuid, _>(entry.id)
        .get_result(conn)
        .await
        .optional()?;
    Ok(placed.unwrap_or(PlacedEntry {
        entry,
        position: None,
    }))
}

/// The user's waiting-list entries, newest first: live ones (waiting or offered) unless `all`.
pub async fn user_entries(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    all: bool,
) -> AppResult<Vec<PlacedEntry>> {
    let filter = if all {
        ""
    } else {
        " AND e.status IN ('WAITING', 'OFFERED')"
    };
    Ok(diesel::sql_query(format!(
        "{PLACED} WHERE e.user_id = $1{filter} ORDER BY e.created_at DESC, e.id DESC LIMIT 100"
    ))
    .bind::<diesel::sql_types::Uuid, _>(user_id)
    .load(conn)
    .await?)
}

/// How many entries wait for each of the events.
pub async fn waiting_counts(
    conn: &mut AsyncPgConnection,
    event_ids: &[Uuid],
) -> AppResult<std::collections::HashMap<Uuid, i64>> {
    let rows: Vec<(Uuid, i64)> = waitlist_entries::table
        .filter(waitlist_entries::event_id.eq_any(event_ids))
        .filter(waitlist_entries::status.eq(WaitlistStatus::Waiting))
        .group_by(waitlist_entries::event_id)
        .select((waitlist_entries::event_id, diesel::dsl::count_star()))
        .load(conn)
        .await?;
    Ok(rows.into_iter().collect())
}

/// Which of these holds are waiting-list offers.
pub async fn offers_among(
    conn: &mut AsyncPgConnection,
    hold_ids: &[Uuid],
) -> AppResult<std::collections::HashSet<Uuid>> {
    let rows: Vec<Option<Uuid>> = waitlist_entries::table
        .filter(waitlist_entries::hold_id.eq_any(hold_ids))
        .select(waitlist_entries::hold_id)
        .load(conn)
        .await?;
    Ok(rows.into_iter().flatten().collect())
}
