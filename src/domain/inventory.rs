//! An event's seat counters inside one transaction. The changes a transaction made, for
//! announcing after it commits, are [`super::changes::Changes`] (re-exported here for the
//! realtime bus, which still names this path).
//!
//! Every transaction that moves seats locks the event row first
//! ([`super::sale_rules::lock_event`]), adjusts an [`Inventory`] in memory as it takes, holds
//! or frees seats, and writes the counters back with one `UPDATE` ([`Inventory::save`]). The
//! CHECK constraint
//! `seats_available >= 0 AND seats_held >= 0 AND seats_available + seats_held <= capacity` is
//! the last word on every write.
//!
//! The middle layer: imports only [`super::changes`] from the domain.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

pub use super::changes::Changes;
use crate::db::models::Event;
use crate::db::schema::events;
use crate::error::AppResult;

/// A locked event's counters, changed in memory and written back once.
#[derive(Debug)]
pub struct Inventory {
    /// The event as locked.
    pub event: Event,
    pub available: i32,
    pub held: i32,
    /// Changes made (each bumps the event's version by one).
    pub steps: i32,
}

impl Inventory {
    pub fn new(event: Event) -> Self {
        Self {
            available: event.seats_available,
            held: event.seats_held,
            steps: 0,
            event,
        }
    }

    /// Seats from the free pool into a hold.
    pub fn hold(&mut self, quantity: i32) {
        self.available -= quantity;
        self.held += quantity;
        self.steps += 1;
    }

    /// Seats from the free pool into a booking.
    pub fn book(&mut self, quantity: i32) {
        self.available -= quantity;
        self.steps += 1;
    }

    /// A hold becomes a booking.
    pub fn confirm(&mut self, quantity: i32) {
        self.held -= quantity;
        self.steps += 1;
    }

    /// A hold ends without a booking: its seats are free again.
    pub fn unhold(&mut self, quantity: i32) {
        self.held -= quantity;
        self.available += quantity;
        self.steps += 1;
    }

    /// A booking is cancelled: its seats are free again.
    pub fn unbook(&mut self, quantity: i32) {
        self.available += quantity;
        self.steps += 1;
    }

    /// Writes the counters back (when anything changed) and records the event in `changes`.
    /// Returns the event as it now stands.
    pub async fn save(
        self,
        conn: &mut AsyncPgConnection,
        changes: &mut Changes,
    ) -> AppResult<Event> {
        if self.steps == 0 {
            return Ok(self.event);
        }
        let event: Event = diesel::update(events::table.find(self.event.id))
            .set((
                events::seats_available.eq(self.available),
                events::seats_held.eq(self.held),
                events::version.eq(events::version + self.steps),
                events::updated_at.eq(diesel::dsl::now),
            ))
            .returning(Event::as_returning())
            .get_result(conn)
            .await?;
        if changes.previous_version.is_none() {
            changes.previous_version = Some(self.event.version);
        }
        changes.event = Some(event.clone());
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::sale_rules::tests::event;

    /// An inventory of an event with `available` free seats and `held` held ones.
    fn inventory(available: i32, held: i32) -> Inventory {
        Inventory::new(Event {
            seats_available: available,
            seats_held: held,
            ..event()
        })
    }

    fn counters(inventory: &Inventory) -> (i32, i32, i32) {
        (inventory.available, inventory.held, inventory.steps)
    }

    #[test]
    fn a_new_inventory_starts_from_the_locked_row_with_no_steps() {
        let inventory = inventory(7, 3);
        assert_eq!(counters(&inventory), (7, 3, 0));
    }

    #[test]
    fn holding_moves_free_seats_to_held_and_confirming_keeps_them_taken() {
        let mut inventory = inventory(10, 0);
        inventory.hold(4);
        assert_eq!(counters(&inventory), (6, 4, 1));
        inventory.confirm(4);
        assert_eq!(counters(&inventory), (6, 0, 2));
    }

    #[test]
    fn a_hold_that_ends_without_a_booking_frees_its_seats() {
        let mut inventory = inventory(6, 4);
        inventory.unhold(4);
        assert_eq!(counters(&inventory), (10, 0, 1));
    }

    #[test]
    fn booking_and_cancelling_take_and_return_free_seats() {
        let mut inventory = inventory(10, 2);
        inventory.book(3);
        assert_eq!(counters(&inventory), (7, 2, 1));
        inventory.unbook(3);
        assert_eq!(counters(&inventory), (10, 2, 2));
    }

    #[test]
    fn every_step_counts_once_toward_the_version() {
        let mut inventory = inventory(10, 0);
        inventory.hold(1);
        inventory.hold(1);
        inventory.unhold(1);
        inventory.book(2);
        inventory.confirm(1);
        // Free + held + booked stays the capacity: 10 = 7 free + 0 held + 3 taken.
        assert_eq!(counters(&inventory), (7, 0, 5));
    }
}
