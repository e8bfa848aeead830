//! Rows read and written the same way everywhere: a row read by id is NOT_FOUND when it is
//! missing ([`OrNotFound`]), rows read by their ids come keyed by id ([`rows_by_id!`], for the
//! DataLoaders), and a booking goes in through one [`insert_booking`], which answers a used
//! idempotency key with no row instead of an error.
//!
//! Bottom layer: imports no other domain module.

use chrono::Utc;
use diesel::prelude::*;
use diesel::upsert::on_constraint;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::db::models::{Booking, Event};
use crate::db::schema::{bookings, events};
use crate::error::{AppError, AppResult};

/// A read of one row whose absence is the caller's NOT_FOUND.
pub trait OrNotFound<T> {
    /// The row, or NOT_FOUND naming `what` when there is none.
    fn or_not_found(self, what: &'static str) -> AppResult<T>;
}

impl<T> OrNotFound<T> for QueryResult<T> {
    fn or_not_found(self, what: &'static str) -> AppResult<T> {
        self.optional()?.ok_or(AppError::NotFound(what))
    }
}

/// The rows of `$table` (a diesel schema module in scope) whose ids are among `$ids`, read as
/// `$row` and keyed by id. Evaluates to the map; a database error returns from the enclosing
/// function. A macro because each table is a type of its own.
macro_rules! rows_by_id {
    ($conn:expr, $table:ident, $row:ty, $ids:expr) => {{
        let rows: Vec<$row> = $table::table
            .filter($table::id.eq_any($ids))
            .select(<$row>::as_select())
            .load($conn)
            .await?;
        rows.into_iter()
            .map(|row| (row.id, row))
            .collect::<std::collections::HashMap<uuid::Uuid, $row>>()
    }};
}
pub(crate) use rows_by_id;

/// Inserts a booking. `None` when its user already used its idempotency key (the unique
/// constraint `bookings_user_idempotency_key`): a concurrent request with the same key waits
/// on the index and, once that one commits, inserts nothing. A booking without a key always
/// goes in.
pub(crate) async fn insert_booking(
    conn: &mut AsyncPgConnection,
    booking: &Booking,
) -> AppResult<Option<Booking>> {
    Ok(diesel::insert_into(bookings::table)
        .values(booking)
        .on_conflict(on_constraint("bookings_user_idempotency_key"))
        .do_nothing()
        .returning(Booking::as_returning())
        .get_result(conn)
        .await
        .optional()?)
}

/// Books `quantity` seats for the user without an idempotency key (an RSVP, a waiting-list
/// entry booked straight away).
pub(crate) async fn insert_unkeyed_booking(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    user_id: Uuid,
    quantity: i32,
) -> AppResult<Booking> {
    let booking = Booking::confirmed(event_id, user_id, quantity, None, Utc::now());
    insert_booking(conn, &booking)
        .await?
        .ok_or_else(|| anyhow::anyhow!("a booking without an idempotency key conflicted").into())
}

pub(crate) async fn find_booking(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<Booking> {
    bookings::table
        .find(id)
        .select(Booking::as_select())
        .first(conn)
        .await
        .or_not_found("booking")
}

/// The event, or `None`: whether a caller may see it is [`super::sale_rules::visible_to`].
pub async fn find_event(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<Option<Event>> {
    Ok(events::table
        .find(id)
        .select(Event::as_select())
        .first(conn)
        .await
        .optional()?)
}
