//! The attendees of an event, a page at a time, for the CSV export: its confirmed bookings
//! oldest first, with who booked and, for a seated event, which seats. The export streams
//! page after page (keyset on `(created_at, id)`, the `bookings_event_created_idx` order), so
//! memory stays that of one page however many attendees there are, and a pooled connection is
//! held only while a page is read.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::error::AppResult;

/// Attendees read per page.
pub const PAGE_SIZE: i64 = 1_000;

#[derive(Debug, Clone, QueryableByName)]
pub struct Attendee {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub booking_id: Uuid,
    #[diesel(sql_type = Timestamptz)]
    pub booked_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub email: String,
    #[diesel(sql_type = Integer)]
    pub quantity: i32,
    /// `Section Row-Number` of each seat, `; `-separated (none for general admission).
    #[diesel(sql_type = Nullable<Text>)]
    pub seats: Option<String>,
}

/// The page of attendees after `after` (the last one of the previous page).
pub async fn attendee_page(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    after: Option<(DateTime<Utc>, Uuid)>,
) -> AppResult<Vec<Attendee>> {
    let (after_at, after_id) = match after {
        Some((at, id)) => (Some(at), Some(id)),
        None => (None, None),
    };
    Ok(diesel::sql_query(
        "SELECT b.id AS booking_id, b.created_at AS booked_at, u.name, u.email, b.quantity,
                (SELECT string_agg(s.section || ' ' || s.row_label || '-' || s.number, '; '
                                   ORDER BY s.position)
                 FROM seat_claims c JOIN venue_seats s ON s.id = c.seat_id
                 WHERE c.booking_id = b.id) AS seats
         FROM bookings b JOIN users u ON u.id = b.user_id
         WHERE b.event_id = $1 AND b.status = 'CONFIRMED'
           AND ($2::timestamptz IS NULL OR (b.created_at, b.id) > ($2, $3::uuid))
         ORDER BY b.created_at, b.id
         LIMIT $4",
    )
    .bind::<diesel::sql_types::Uuid, _>(event_id)
    .bind::<Nullable<Timestamptz>, _>(after_at)
    .bind::<Nullable<diesel::sql_types::Uuid>, _>(after_id)
    .bind::<BigInt, _>(PAGE_SIZE)
    .load(conn)
    .await?)
}
