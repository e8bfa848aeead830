//! Business rules as plain async functions over `&mut AsyncPgConnection`. Multi-statement
//! writes run in one transaction; nothing here knows about GraphQL, HTTP or the realtime bus.
//! Every write returns a [`changes::Committed`]: its value and what it changed, which the App
//! announces after the commit (`App::commit`), the only place that does.
//!
//! # Layers
//!
//! Modules import only from layers below their own, so the booking path reads in one
//! direction (http → graphql resolver → a command here, or the booking queue → `App::commit`
//! → the realtime bus):
//!
//! 1. **Bottom: shared rules and vocabulary.** [`changes`] (`Committed`, `Changes`), [`rows`]
//!    (a row read by id or NOT_FOUND, the one booking insert), [`text`] (text checks),
//!    [`pagination`] (keyset pages), [`user_limits`] (per-user limits), and [`sale_rules`]
//!    (locking the event, who may buy, why it cannot be sold, what a request may ask; it reads
//!    the event through `rows`). No other domain import.
//! 2. **Middle: the inventory and where freed seats go.** [`inventory`] (an event's counters
//!    under its lock), [`seats`] (numbered seats), and [`freed_seats`] (hold expiry,
//!    waiting-list promotion and offers, which call each other by nature), which uses both.
//! 3. **Top: the commands.** [`bookings`], [`holds`], [`waitlist`], [`rsvp`], [`events`]
//!    (queries, rules, lifecycle), [`venues`], [`sweeps`] (the sweeper's transactions),
//!    [`auth`] and [`users`]. They import the layers below, and each other only one way:
//!    `users` hashes with `auth`'s `Passwords`.
//! 4. **Over the commands.** [`group_commit`], the onsale path's booking queue, books through
//!    `bookings` and checks sessions with `auth`; [`seed`] (demo data) creates through
//!    `users`, `venues` and `auth`.
//!
//! [`Viewer`], the signed-in user, is defined here and used at every layer. Nothing here
//! imports `crate::realtime`. [`resync`] reads changes back for the realtime bus and is on its
//! way out of the domain.

pub mod auth;
pub mod bookings;
pub mod changes;
pub mod events;
pub mod freed_seats;
pub mod group_commit;
pub mod holds;
pub mod inventory;
pub mod pagination;
pub mod resync;
pub mod rows;
pub mod rsvp;
pub mod sale_rules;
pub mod seats;
pub mod seed;
pub mod sweeps;
pub mod text;
pub mod user_limits;
pub mod users;
pub mod venues;
pub mod waitlist;

use crate::db::models::{Role, User};

/// The signed-in user of a request, re-read from the database on every request so that a role
/// change or a revoked session takes effect at once.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub user: User,
    pub session_id: uuid::Uuid,
}

impl Viewer {
    pub fn id(&self) -> uuid::Uuid {
        self.user.id
    }
    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }
    pub fn can_organize(&self) -> bool {
        matches!(self.user.role, Role::Organizer | Role::Admin)
    }
}
