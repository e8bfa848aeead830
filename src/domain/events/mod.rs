//! Events: reading and listing them ([`queries`]), the rules a new or changed event must meet
//! ([`rules`]), and their life from draft to published, cancelled or completed
//! ([`lifecycle`]). Whether an event is on sale, and to whom, is a rule every command shares:
//! it lives at the bottom of the domain, in [`super::sale_rules`].
//!
//! Top layer: a command module. `lifecycle` uses the middle layer (a cancelled or completed
//! event ends its holds and closes its waiting list through [`super::freed_seats`]).

pub mod lifecycle;
pub mod queries;
pub mod rules;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use super::rows::find_event;
pub use super::sale_rules::{on_sale, visible_to};
pub use lifecycle::{cancel_event, complete_ended, create_event, publish_event, update_event};
pub use queries::{EventFilter, events_by_id, list_events};
pub use rules::{
    DEFAULT_MAX_PER_BOOKING, MAX_CAPACITY, MAX_HOLD_MINUTES, MAX_OFFER_MINUTES, MAX_PER_USER,
};

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub title: String,
    pub description: Option<String>,
    pub category: String,
    pub venue: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// Required for general admission; a seated event's capacity is its venue's seat count.
    pub capacity: Option<i32>,
    pub max_per_booking: Option<i32>,
    /// Seats come from this venue's layout.
    pub venue_id: Option<Uuid>,
    /// Free events take RSVPs instead of bookings.
    pub free: bool,
    /// Created as a draft, to publish later.
    pub draft: bool,
    pub sales_start_at: Option<DateTime<Utc>>,
    pub sales_end_at: Option<DateTime<Utc>>,
    pub max_per_user: Option<i32>,
    pub hold_minutes: Option<i32>,
    pub offer_minutes: Option<i32>,
}

/// A partial update: `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct EventPatch {
    pub title: Option<String>,
    pub description: Option<Option<String>>,
    pub category: Option<String>,
    pub venue: Option<String>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub capacity: Option<i32>,
    pub max_per_booking: Option<i32>,
    pub sales_start_at: Option<Option<DateTime<Utc>>>,
    pub sales_end_at: Option<Option<DateTime<Utc>>>,
    pub max_per_user: Option<Option<i32>>,
    pub hold_minutes: Option<i32>,
    pub offer_minutes: Option<i32>,
}
