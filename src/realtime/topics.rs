//! What the bus carries and where: a [`Topic`] is what a subscriber listens to, an [`Update`]
//! one committed change for one topic. Each update also says what a later one replaces and how
//! far along it is (an event's version, a booking's status), which is all the bus needs to drop
//! stale repeats, coalesce a slow subscriber and keep only the newest unsent message.

use std::sync::Arc;

use uuid::Uuid;

use crate::db::models::{
    Booking, BookingStatus, Event, EventSeat, Hold, HoldStatus, WaitlistEntry, WaitlistStatus,
};

/// An event's seat counts at one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatUpdate {
    pub event_id: Uuid,
    pub capacity: i32,
    pub seats_available: i32,
    pub seats_held: i32,
    pub version: i32,
}

impl From<&Event> for SeatUpdate {
    fn from(event: &Event) -> Self {
        Self {
            event_id: event.id,
            capacity: event.capacity,
            seats_available: event.seats_available,
            seats_held: event.seats_held,
            version: event.version,
        }
    }
}

/// Seats of a seated event that changed in one transaction, which moved the event from
/// `previous_version` to `version`. A subscriber that did not send `previous_version` last
/// missed something and reads the whole map again; so does one that gets a message without a
/// `previous_version` (sent after the Redis subscription was lost).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatMapUpdate {
    pub event_id: Uuid,
    pub previous_version: Option<i32>,
    pub version: i32,
    pub seats: Vec<EventSeat>,
}

/// An order moved (placed, paid, expired, refunded): who owns it and how far along it is. The
/// subscriber re-reads the order itself, so the message stays small.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderUpdate {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub event_id: Uuid,
    /// The order's version: each change bumps it by one.
    pub version: i32,
}

/// What a subscriber listens to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// An event's seat counts.
    Seats(Uuid),
    /// An event's details and status.
    Event(Uuid),
    /// A user's bookings.
    UserBookings(Uuid),
    /// The states of a seated event's seats.
    SeatMap(Uuid),
    /// One order's changes.
    Order(Uuid),
}

impl Topic {
    pub(super) fn channel(&self, prefix: &str) -> String {
        match self {
            Self::Seats(id) => format!("{prefix}seats:{id}"),
            Self::Event(id) => format!("{prefix}events:{id}"),
            Self::UserBookings(id) => format!("{prefix}user-bookings:{id}"),
            Self::SeatMap(id) => format!("{prefix}seat-maps:{id}"),
            Self::Order(id) => format!("{prefix}orders:{id}"),
        }
    }

    /// Whether the newest message makes the older ones pointless (a full state, not a change).
    /// Seat-map changes are deltas: skipping one would only force a full re-read.
    pub(super) fn newest_supersedes(&self) -> bool {
        !matches!(self, Self::UserBookings(_) | Self::SeatMap(_))
    }
}

/// One committed change. Cloned once per local subscriber, so the large ones are shared.
#[derive(Debug, Clone)]
pub enum Update {
    Seats(SeatUpdate),
    Event(Arc<Event>),
    Booking(Arc<Booking>),
    /// A hold started or ended (a waiting-list offer is a hold).
    Hold(Arc<Hold>),
    /// A waiting-list entry moved (an offer made, lapsed or taken; the list closed).
    Waitlist(Arc<WaitlistEntry>),
    /// Seats of a seated event changed state.
    SeatMap(Arc<SeatMapUpdate>),
    /// An order moved, for `orderUpdated`.
    Order(OrderUpdate),
    /// The same, for its owner's `myBookingUpdates`.
    UserOrder(OrderUpdate),
}

impl Update {
    pub fn topic(&self) -> Topic {
        match self {
            Self::Seats(update) => Topic::Seats(update.event_id),
            Self::Event(event) => Topic::Event(event.id),
            Self::Booking(booking) => Topic::UserBookings(booking.user_id),
            Self::Hold(hold) => Topic::UserBookings(hold.user_id),
            Self::Waitlist(entry) => Topic::UserBookings(entry.user_id),
            Self::SeatMap(update) => Topic::SeatMap(update.event_id),
            Self::Order(update) => Topic::Order(update.order_id),
            Self::UserOrder(update) => Topic::UserBookings(update.user_id),
        }
    }

    /// For the changes a user is told about: the thing that changed and how far along its
    /// states it is, so a subscriber can drop a stale repeat.
    pub fn reservation_rank(&self) -> Option<(Uuid, i64)> {
        match self {
            Self::Booking(booking) => Some((booking.id, booking_rank(booking))),
            Self::Hold(hold) => Some((hold.id, hold_rank(hold))),
            Self::Waitlist(entry) => Some((entry.id, waitlist_rank(entry))),
            Self::UserOrder(update) => Some((update.order_id, update.version.into())),
            Self::Seats(_) | Self::Event(_) | Self::SeatMap(_) | Self::Order(_) => None,
        }
    }

    /// What a later message replaces, and how late this one is: the event's version, or the
    /// booking's status (which only ever moves from CONFIRMED to CANCELLED).
    pub(super) fn order(&self) -> (UnsentKey, i64) {
        match self {
            Self::Seats(update) => (UnsentKey::Topic(self.topic()), update.version.into()),
            Self::Event(event) => (UnsentKey::Topic(self.topic()), event.version.into()),
            Self::Booking(booking) => (UnsentKey::Booking(booking.id), booking_rank(booking)),
            Self::Hold(hold) => (UnsentKey::Booking(hold.id), hold_rank(hold)),
            Self::Waitlist(entry) => (UnsentKey::Booking(entry.id), waitlist_rank(entry)),
            Self::SeatMap(update) => (UnsentKey::Topic(self.topic()), update.version.into()),
            Self::Order(update) => (UnsentKey::Topic(self.topic()), update.version.into()),
            Self::UserOrder(update) => (UnsentKey::Booking(update.order_id), update.version.into()),
        }
    }
}

/// A hold is held, then ended one way or another.
pub fn hold_rank(hold: &Hold) -> i64 {
    match hold.status {
        HoldStatus::Held => 0,
        _ => 1,
    }
}

/// A waiting-list entry waits, may get an offer, then ends.
pub fn waitlist_rank(entry: &WaitlistEntry) -> i64 {
    match entry.status {
        WaitlistStatus::Waiting => 0,
        WaitlistStatus::Offered => 1,
        _ => 2,
    }
}

/// Orders a booking's states: a subscriber never goes from CANCELLED back to CONFIRMED.
pub fn booking_rank(booking: &Booking) -> i64 {
    match booking.status {
        BookingStatus::Confirmed => 0,
        BookingStatus::Cancelled => 1,
    }
}

impl From<SeatUpdate> for Update {
    fn from(update: SeatUpdate) -> Self {
        Self::Seats(update)
    }
}

/// What a later message replaces: the state of a topic, or one booking, hold, waiting-list
/// entry or order on a user's topic (each moves through its own states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum UnsentKey {
    Topic(Topic),
    Booking(Uuid),
}
