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

pub use super::rows::find_event;
pub use super::sale_rules::{on_sale, visible_to};
pub use lifecycle::{
    EventPatch, NewEvent, cancel_event, complete_ended, create_event, publish_event, update_event,
};
pub use queries::{
    EventFilter, count_events, events_by_id, find_event_with_organizer, list_events,
};
pub use rules::{
    DEFAULT_MAX_PER_BOOKING, MAX_CAPACITY, MAX_HOLD_MINUTES, MAX_OFFER_MINUTES, MAX_PER_USER,
};
