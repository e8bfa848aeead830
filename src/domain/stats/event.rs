//! One event's figures, in one SQL statement, so they all come from one snapshot: the seat
//! counters from the event row (moved by every booking under the event's lock), and counts of
//! its bookings, waiting-list entries and RSVP answers.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bool, Integer, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::error::AppResult;

/// An event's figures at `read_at`.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct EventStats {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub event_id: Uuid,
    /// The event's version when read: it moves with every change of its seats.
    #[diesel(sql_type = Integer)]
    pub version: i32,
    #[diesel(sql_type = Integer)]
    pub capacity: i32,
    #[diesel(sql_type = Integer)]
    pub available: i32,
    #[diesel(sql_type = Integer)]
    pub held: i32,
    /// Seats in confirmed bookings.
    #[diesel(sql_type = Integer)]
    pub sold: i32,
    /// Bookings ever made, cancelled ones included, and their tickets.
    #[diesel(sql_type = BigInt)]
    pub bookings: i64,
    #[diesel(sql_type = BigInt)]
    pub tickets: i64,
    #[diesel(sql_type = BigInt)]
    pub cancellations: i64,
    #[diesel(sql_type = BigInt)]
    pub tickets_cancelled: i64,
    /// Entries waiting now.
    #[diesel(sql_type = BigInt)]
    pub waitlist_length: i64,
    /// Entries that were offered seats or booked from the list.
    #[diesel(sql_type = BigInt)]
    pub promotions: i64,
    /// Entries whose offer became a booking.
    #[diesel(sql_type = BigInt)]
    pub promotions_fulfilled: i64,
    #[diesel(sql_type = Bool)]
    pub free: bool,
    #[diesel(sql_type = BigInt)]
    pub rsvp_going: i64,
    #[diesel(sql_type = BigInt)]
    pub rsvp_waitlisted: i64,
    #[diesel(sql_type = BigInt)]
    pub rsvp_maybe: i64,
    #[diesel(sql_type = BigInt)]
    pub rsvp_not_going: i64,
    #[diesel(sql_type = Timestamptz)]
    pub read_at: DateTime<Utc>,
}

impl EventStats {
    /// Sold ÷ capacity (0 for an event of no capacity).
    pub fn utilisation(&self) -> f64 {
        ratio(i64::from(self.sold), i64::from(self.capacity))
    }

    /// Cancelled bookings ÷ bookings (0 before the first booking).
    pub fn cancellation_rate(&self) -> f64 {
        ratio(self.cancellations, self.bookings)
    }
}

/// `part ÷ whole`, 0 when `whole` is 0.
pub fn ratio(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The figures of the event `event_id`, or `None` when there is no such event. Whoever calls
/// this has checked the caller may see them (`super::event_for_analytics`).
pub async fn event_stats(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
) -> AppResult<Option<EventStats>> {
    let stats = diesel::sql_query(
        "SELECT e.id AS event_id, e.version, e.capacity, e.seats_available AS available,
                e.seats_held AS held, e.capacity - e.seats_available - e.seats_held AS sold,
                b.bookings, b.tickets, b.cancellations, b.tickets_cancelled,
                w.waitlist_length, w.promotions, w.promotions_fulfilled,
                e.free, r.rsvp_going, r.rsvp_waitlisted, r.rsvp_maybe, r.rsvp_not_going,
                now() AS read_at
         FROM events e,
         LATERAL (SELECT count(*) AS bookings,
                         coalesce(sum(quantity), 0)::bigint AS tickets,
                         count(*) FILTER (WHERE status = 'CANCELLED') AS cancellations,
                         coalesce(sum(quantity) FILTER (WHERE status = 'CANCELLED'), 0)::bigint
                             AS tickets_cancelled
                  FROM bookings WHERE event_id = e.id) b,
         LATERAL (SELECT count(*) FILTER (WHERE status = 'WAITING') AS waitlist_length,
                         count(*) FILTER (WHERE hold_id IS NOT NULL OR booking_id IS NOT NULL)
                             AS promotions,
                         count(*) FILTER (WHERE status = 'FULFILLED') AS promotions_fulfilled
                  FROM waitlist_entries WHERE event_id = e.id) w,
         LATERAL (SELECT count(*) FILTER (WHERE response = 'GOING' AND booking_id IS NOT NULL)
                             AS rsvp_going,
                         count(*) FILTER (WHERE response = 'GOING' AND booking_id IS NULL)
                             AS rsvp_waitlisted,
                         count(*) FILTER (WHERE response = 'MAYBE') AS rsvp_maybe,
                         count(*) FILTER (WHERE response = 'NOT_GOING') AS rsvp_not_going
                  FROM rsvps WHERE event_id = e.id) r
         WHERE e.id = $1",
    )
    .bind::<diesel::sql_types::Uuid, _>(event_id)
    .get_result(conn)
    .await;
    match stats {
        Ok(stats) => Ok(Some(stats)),
        Err(diesel::result::Error::NotFound) => Ok(None),
        Err(error) => Err(error.into()),
    }
}
