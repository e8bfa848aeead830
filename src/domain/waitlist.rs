//! The waiting list of a sold-out event, first come, first served: joining and leaving it, and
//! reading entries with their place in the queue. How freed seats reach the list (promotion,
//! offers, catching up after a paused sale) is in [`super::freed_seats`]. A partial unique
//! index allows one live entry per user and event, so nobody is counted twice.
//!
//! Top layer: a command module.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::changes::{Changes, Committed};
use super::freed_seats::{self, active_entry, insert_entry};
use super::inventory::Inventory;
use super::sale_rules::{check_sellable, lock_event_for};
use super::user_limits::check_user_limit;
use crate::db::models::{RsvpResponse, WaitlistEntry, WaitlistStatus};
use crate::db::schema::{rsvps, waitlist_entries};
use crate::error::{AppError, AppResult};

/// A waiting-list entry and its place in the queue (1 is next; none once it has an offer or
/// has ended).
#[derive(Debug, Clone, QueryableByName)]
pub struct PlacedEntry {
    #[diesel(embed)]
    pub entry: WaitlistEntry,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    pub position: Option<i64>,
}

/// Puts the user on the event's waiting list. Only a sold-out event has one: with enough
/// seats free, book them instead. Joining again with the same quantity returns the same entry.
pub async fn join(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    event_id: Uuid,
    quantity: i32,
) -> AppResult<Committed<PlacedEntry>> {
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
            freed_seats::catch_up(conn, &mut inventory, &mut changes).await?;
            freed_seats::take_from_expired(conn, &mut inventory, quantity, &mut changes).await?;
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
    Ok(Committed::new(placed, changes))
}

/// Takes the user off the event's waiting list. An offer not yet confirmed is given up, and
/// its seats go to the next in line. Leaving the place an RSVP queued for is answering
/// NOT_GOING. Returns the entry, or `None` when there was none.
pub async fn leave(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    event_id: Uuid,
) -> AppResult<Committed<Option<WaitlistEntry>>> {
    conn.transaction(async move |conn| {
        let event = lock_event_for(conn, event_id, user_id).await?;
        let mut changes = Changes::default();
        let Some(entry) = active_entry(conn, event_id, user_id).await? else {
            return Ok(Committed::new(None, changes));
        };
        let mut inventory = Inventory::new(event);
        let left = freed_seats::leave_entry(conn, &mut inventory, &entry, &mut changes).await?;
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
        Ok(Committed::new(Some(left), changes))
    })
    .await
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
