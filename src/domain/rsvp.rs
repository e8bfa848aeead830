//! RSVP for free events. GOING takes a seat through a booking of one seat, or a place on the
//! waiting list while the event is full (promoted straight to a booking when a seat frees up);
//! MAYBE and NOT_GOING give the seat or the place back. All under the event's row lock, like
//! every other change of its seats.
//!
//! Top layer: a command module (also asked by the booking and event commands to forget the
//! answers of bookings they cancel).

use chrono::Utc;
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::changes::{Changes, Committed};
use super::freed_seats;
use super::inventory::Inventory;
use super::rows::insert_unkeyed_booking;
use super::sale_rules::{lock_event_for, unbookable_reason};
use super::seats::{self, SeatOwner};
use super::user_limits::check_user_limit;
use crate::db::models::{Booking, BookingStatus, Rsvp, RsvpResponse, WaitlistEntry};
use crate::db::schema::{bookings, rsvps};
use crate::error::{AppError, AppResult};

/// A user's answer and what it holds for them.
#[derive(Debug, Clone)]
pub struct RsvpOutcome {
    pub rsvp: Rsvp,
    /// The seat, while going.
    pub booking: Option<Booking>,
    /// The place in the queue, while going but the event is full.
    pub waitlist_entry: Option<WaitlistEntry>,
}

/// Records the user's answer for a free event, taking or giving back a seat to match.
/// Answering the same again changes nothing.
pub async fn respond(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    event_id: Uuid,
    response: RsvpResponse,
) -> AppResult<Committed<RsvpOutcome>> {
    conn.transaction(async move |conn| {
        let event = lock_event_for(conn, event_id, user_id).await?;
        if !event.free {
            return Err(AppError::not_possible(
                "NOT_FREE",
                "this event sells tickets: book seats instead",
            ));
        }
        if let Some(reason) = unbookable_reason(&event) {
            return Err(reason);
        }
        let current = find(conn, event_id, user_id).await?;
        let mut booking = match current.as_ref().and_then(|r| r.booking_id) {
            Some(id) => bookings::table
                .find(id)
                .filter(bookings::status.eq(BookingStatus::Confirmed))
                .select(Booking::as_select())
                .first(conn)
                .await
                .optional()?,
            None => None,
        };
        let mut entry = freed_seats::active_entry(conn, event_id, user_id).await?;
        let mut changes = Changes::default();
        let mut inventory = Inventory::new(event);
        match response {
            RsvpResponse::Going if booking.is_some() || entry.is_some() => {}
            RsvpResponse::Going => {
                check_user_limit(conn, &inventory.event, user_id, 1).await?;
                freed_seats::catch_up(conn, &mut inventory, &mut changes).await?;
                freed_seats::take_from_expired(conn, &mut inventory, 1, &mut changes).await?;
                if inventory.available >= 1 {
                    let taken = insert_unkeyed_booking(conn, event_id, user_id, 1).await?;
                    let owner = SeatOwner::Booking(taken.id);
                    let event = inventory.event.clone();
                    seats::claim(conn, &event, owner, 1, &[], &mut changes).await?;
                    inventory.book(1);
                    changes.bookings.push(taken.clone());
                    booking = Some(taken);
                } else {
                    let waiting =
                        freed_seats::insert_entry(conn, event_id, user_id, 1, true, None).await?;
                    changes.waitlist.push(waiting.clone());
                    entry = Some(waiting);
                }
            }
            RsvpResponse::Maybe | RsvpResponse::NotGoing => {
                if let Some(taken) = booking.take() {
                    let cancelled: Booking = diesel::update(bookings::table.find(taken.id))
                        .set((
                            bookings::status.eq(BookingStatus::Cancelled),
                            bookings::cancelled_at.eq(diesel::dsl::now),
                        ))
                        .returning(Booking::as_returning())
                        .get_result(conn)
                        .await?;
                    let event = inventory.event.clone();
                    seats::release_bookings(conn, &event, &[taken.id], &mut changes).await?;
                    inventory.unbook(cancelled.quantity);
                    changes.bookings.push(cancelled);
                }
                if let Some(waiting) = entry.take() {
                    freed_seats::leave_entry(conn, &mut inventory, &waiting, &mut changes).await?;
                }
                freed_seats::promote(conn, &mut inventory, &mut changes).await?;
            }
        }
        let rsvp = Rsvp {
            event_id,
            user_id,
            response,
            booking_id: booking.as_ref().map(|b| b.id),
            updated_at: Utc::now(),
        };
        let rsvp: Rsvp = diesel::insert_into(rsvps::table)
            .values(&rsvp)
            .on_conflict((rsvps::event_id, rsvps::user_id))
            .do_update()
            .set((
                rsvps::response.eq(excluded(rsvps::response)),
                rsvps::booking_id.eq(excluded(rsvps::booking_id)),
                rsvps::updated_at.eq(excluded(rsvps::updated_at)),
            ))
            .returning(Rsvp::as_returning())
            .get_result(conn)
            .await?;
        inventory.save(conn, &mut changes).await?;
        let outcome = RsvpOutcome {
            rsvp,
            booking,
            waitlist_entry: entry,
        };
        Ok(Committed::new(outcome, changes))
    })
    .await
}

pub async fn find(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    user_id: Uuid,
) -> AppResult<Option<Rsvp>> {
    Ok(rsvps::table
        .find((event_id, user_id))
        .select(Rsvp::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// How many answered what, for an event's page.
#[derive(Debug, Clone, Copy, Default)]
pub struct RsvpCounts {
    /// GOING with a seat.
    pub going: i64,
    /// GOING, waiting for a seat.
    pub waitlisted: i64,
    pub maybe: i64,
    pub not_going: i64,
}

/// The answers to each of the events.
pub async fn counts(
    conn: &mut AsyncPgConnection,
    event_ids: &[Uuid],
) -> AppResult<std::collections::HashMap<Uuid, RsvpCounts>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        event_id: Uuid,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        going: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        waitlisted: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        maybe: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        not_going: i64,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT event_id, \
                count(*) FILTER (WHERE response = 'GOING' AND booking_id IS NOT NULL) AS going, \
                count(*) FILTER (WHERE response = 'GOING' AND booking_id IS NULL) AS waitlisted, \
                count(*) FILTER (WHERE response = 'MAYBE') AS maybe, \
                count(*) FILTER (WHERE response = 'NOT_GOING') AS not_going \
         FROM rsvps WHERE event_id = ANY($1) GROUP BY event_id",
    )
    .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(event_ids)
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let counts = RsvpCounts {
                going: row.going,
                waitlisted: row.waitlisted,
                maybe: row.maybe,
                not_going: row.not_going,
            };
            (row.event_id, counts)
        })
        .collect())
}

/// One user's answers to each of the events.
pub async fn responses(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    event_ids: &[Uuid],
) -> AppResult<std::collections::HashMap<Uuid, RsvpResponse>> {
    let rows: Vec<(Uuid, RsvpResponse)> = rsvps::table
        .filter(rsvps::user_id.eq(user_id))
        .filter(rsvps::event_id.eq_any(event_ids))
        .select((rsvps::event_id, rsvps::response))
        .load(conn)
        .await?;
    Ok(rows.into_iter().collect())
}
