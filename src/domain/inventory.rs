//! An event's seat counters inside one transaction, and the changes a transaction made, for
//! publishing after it commits.
//!
//! Every transaction that moves seats locks the event row first ([`super::events::lock_event`]),
//! adjusts an [`Inventory`] in memory as it takes, holds or frees seats, and writes the counters
//! back with one `UPDATE` ([`Inventory::save`]). The CHECK constraint
//! `seats_available >= 0 AND seats_held >= 0 AND seats_available + seats_held <= capacity` is
//! the last word on every write.

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
