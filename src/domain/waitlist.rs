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
use super::sale_rules::{check_sellable, lock_event_for, unbookable_reason};
use super::stock::Stock;
use super::user_limits::check_user_limit;
use crate::db::commerce::TicketType;
use crate::db::models::{RsvpResponse, WaitlistEntry, WaitlistStatus};
use crate::db::schema::{rsvps, ticket_types, waitlist_entries};
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
/// An event that sells ticket types has one per type: `ticket_type_id` names the type waited
/// for (required there, refused elsewhere), and an entry is offered an order for it.
pub async fn join(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    event_id: Uuid,
    quantity: i32,
    ticket_type_id: Option<Uuid>,
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
            match (&event.currency, ticket_type_id) {
                (None, None) => check_sellable(&event, quantity)?,
                (None, Some(_)) => {
                    return Err(AppError::BadUserInput {
                        message: "this event sells no ticket types".into(),
                        field: Some("ticketTypeId"),
                        reason: Some("NO_TICKET_TYPES"),
                    });
                }
                (Some(_), None) => {
                    return Err(AppError::BadUserInput {
                        message: "this event sells ticket types: say which one you wait for".into(),
                        field: Some("ticketTypeId"),
                        reason: Some("TICKET_TYPE_REQUIRED"),
                    });
                }
                (Some(_), Some(type_id)) => {
                    check_waitable_type(conn, &event, type_id, quantity).await?;
                }
            }
            if let Some(existing) = active_entry(conn, event_id, user_id).await? {
                if existing.quantity != quantity || existing.ticket_type_id != ticket_type_id {
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
            let available = match ticket_type_id {
                Some(type_id) => Stock::load(conn, event_id)
                    .await?
                    .available(type_id, inventory.available),
                None => inventory.available,
            };
            if available >= quantity {
                return Err(AppError::not_possible(
                    "SEATS_AVAILABLE",
                    format!(
                        "{available} seats are available: book them instead"
                    ),
                ));
            }
            let entry =
                insert_entry(conn, event_id, user_id, quantity, false, ticket_type_id).await?;
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

/// Refuses to queue for a ticket type that an entry could never be offered: one of another
/// event, a hidden one, a free one (nothing to pay: with a seat free it is ordered at once), or
/// a quantity outside what one order of it may have.
async fn check_waitable_type(
    conn: &mut AsyncPgConnection,
    event: &crate::db::models::Event,
    type_id: Uuid,
    quantity: i32,
) -> AppResult<()> {
    if let Some(reason) = unbookable_reason(event) {
        return Err(reason);
    }
    let ticket_type: TicketType = ticket_types::table
        .find(type_id)
        .filter(ticket_types::event_id.eq(event.id))
        .filter(ticket_types::hidden.eq(false))
        .select(TicketType::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or(AppError::NotFound("ticket type"))?;
    if ticket_type.price_amount == 0 {
        return Err(AppError::not_possible(
            "FREE_TICKET_TYPE",
            "a free ticket type has no waiting list",
        ));
    }
    if quantity < ticket_type.min_per_order || quantity > ticket_type.max_per_order {
        return Err(AppError::BadUserInput {
            message: format!(
                "{} is sold {} to {} per order",
                ticket_type.name, ticket_type.min_per_order, ticket_type.max_per_order
            ),
            field: Some("quantity"),
            reason: Some("QUANTITY_OUT_OF_RANGE"),
        });
    }
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

/// The order an entry of a ticketed event was offered: the one its hold keeps the seats of.
pub async fn offered_order(
    conn: &mut AsyncPgConnection,
    hold_id: Uuid,
) -> AppResult<Option<crate::db::commerce::Order>> {
    use crate::db::schema::orders;
    Ok(orders::table
        .filter(orders::hold_id.eq(hold_id))
        .select(crate::db::commerce::Order::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Orders offered to the waiting list that still wait for their payment intent (it is created
/// after the commit that offered them, by the sweeper), oldest first.
pub async fn offers_awaiting_intent(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> AppResult<Vec<crate::db::commerce::Order>> {
    use crate::db::commerce::{Order, OrderStatus};
    use crate::db::schema::orders;
    let offered = waitlist_entries::table
        .filter(waitlist_entries::status.eq(WaitlistStatus::Offered))
        .filter(waitlist_entries::ticket_type_id.is_not_null())
        .select(waitlist_entries::hold_id);
    Ok(orders::table
        .filter(orders::status.eq(OrderStatus::PendingPayment))
        .filter(orders::intent_id.is_null())
        .filter(orders::hold_id.eq_any(offered))
        .order(orders::created_at)
        .select(Order::as_select())
        .limit(limit)
        .load(conn)
        .await?)
}
