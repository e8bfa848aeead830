//! The inputs of the event queries and mutations (`events(filter:)`, `createEvent`,
//! `updateEvent`), apart from `events` so that file stays about the `Event` object and its
//! operations.

use async_graphql::{ID, InputObject, MaybeUndefined};
use chrono::{DateTime, Utc};

use super::events::EventStatus;

#[derive(InputObject, Default)]
pub struct EventFilter {
    /// Exact category, any letter case.
    pub category: Option<String>,
    /// Words to find in the title, venue or description.
    pub search: Option<String>,
    pub starts_after: Option<DateTime<Utc>>,
    pub starts_before: Option<DateTime<Utc>>,
    /// Defaults to PUBLISHED. DRAFT lists the caller's own drafts (every draft for an admin,
    /// none when signed out).
    pub status: Option<EventStatus>,
}

#[derive(InputObject)]
pub struct CreateEventInput {
    pub title: String,
    pub description: Option<String>,
    pub category: String,
    pub venue: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// Required for general admission. A seated event (`venueId`) has its venue's seats.
    pub capacity: Option<i32>,
    /// Defaults to 10.
    pub max_per_booking: Option<i32>,
    /// A venue with a seat layout (`createVenue`): seats are booked and held by number.
    pub venue_id: Option<ID>,
    /// A free event takes RSVPs (`rsvp`) instead of bookings. Defaults to false.
    #[graphql(default = false)]
    pub free: bool,
    /// DRAFT (visible only to its organizer and admins until `publishEvent`) or PUBLISHED
    /// (the default).
    pub status: Option<EventStatus>,
    /// Sales open at this time; by default as soon as the event is published. Before
    /// `startsAt`.
    pub sales_start_at: Option<DateTime<Utc>>,
    /// Sales close at this time; by default when the event starts. After `salesStartAt`, and
    /// no later than `endsAt` (bookings close when the event starts in any case).
    pub sales_end_at: Option<DateTime<Utc>>,
    /// Most seats one user may have for the event across all bookings and holds; unlimited
    /// by default. 1 to 1000; may be below `maxPerBooking`, and then limits each booking too.
    pub max_per_user: Option<i32>,
    /// How long `holdSeats` keeps seats. Defaults to 10 minutes; 1 to 1440.
    pub hold_minutes: Option<i32>,
    /// How long a waiting-list offer keeps seats. Defaults to 1440 (24 hours); 1 to 10080.
    pub offer_minutes: Option<i32>,
}

/// Only the fields given are changed; `description: null` clears the description.
#[derive(InputObject)]
pub struct UpdateEventInput {
    pub title: Option<String>,
    pub description: MaybeUndefined<String>,
    pub category: Option<String>,
    pub venue: Option<String>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    /// Cannot go below the seats already booked.
    pub capacity: Option<i32>,
    pub max_per_booking: Option<i32>,
    /// `null` clears it.
    pub sales_start_at: MaybeUndefined<DateTime<Utc>>,
    /// `null` clears it.
    pub sales_end_at: MaybeUndefined<DateTime<Utc>>,
    /// `null` removes the limit. Lowering it keeps the seats users already have.
    pub max_per_user: MaybeUndefined<i32>,
    pub hold_minutes: Option<i32>,
    pub offer_minutes: Option<i32>,
}
