//! What a domain write hands back: the value it produced and the [`Changes`] its transaction
//! committed, for announcing. Every write returns a [`Committed`], and one place above the
//! domain (`App::commit`) announces it, so "who tells the subscribers?" has one answer.
//!
//! The bottom of the domain: it knows the rows and nothing else.

use crate::db::commerce::Order;
use crate::db::models::{Booking, Event, EventSeat, Hold, WaitlistEntry};

/// What one transaction changed, to announce once it has committed.
#[derive(Debug, Default)]
pub struct Changes {
    /// The event as the transaction left it, when its counters or details moved.
    pub event: Option<Event>,
    /// The event's version before the transaction, so a seat-map subscriber can tell whether
    /// it missed a change.
    pub previous_version: Option<i32>,
    /// The event's details or status changed too (not only its seat counts): its watchers are
    /// sent the whole event.
    pub event_details: bool,
    pub bookings: Vec<Booking>,
    pub holds: Vec<Hold>,
    pub waitlist: Vec<WaitlistEntry>,
    /// Seats of a seated event whose state changed.
    pub seats: Vec<EventSeat>,
    /// Orders that moved (announced on `orderUpdated`).
    pub orders: Vec<Order>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.event.is_none()
            && self.bookings.is_empty()
            && self.holds.is_empty()
            && self.waitlist.is_empty()
            && self.seats.is_empty()
            && self.orders.is_empty()
    }
}

/// The outcome of a domain write: its value, and what its transaction changed. A repeated
/// request that changed nothing (a replayed idempotency key, cancelling a cancelled booking)
/// carries no changes.
pub struct Committed<T> {
    pub value: T,
    pub changes: Changes,
}

impl<T> Committed<T> {
    pub fn new(value: T, changes: Changes) -> Self {
        Self { value, changes }
    }

    /// A value whose request changed nothing.
    pub fn unchanged(value: T) -> Self {
        Self::new(value, Changes::default())
    }

    /// Whether the write changed anything.
    pub fn changed(&self) -> bool {
        !self.changes.is_empty()
    }
}
