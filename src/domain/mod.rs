//! Business rules as plain async functions over `&mut AsyncPgConnection`. Multi-statement
//! writes run in one transaction; nothing here knows about GraphQL or HTTP.

pub mod auth;
pub mod bookings;
pub mod events;
pub mod holds;
pub mod inventory;
pub mod onsale;
pub mod pagination;
pub mod rsvp;
pub mod seats;
pub mod seed;
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
