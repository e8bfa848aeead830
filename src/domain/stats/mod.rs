//! Analytics for organizers and admins, read from the committed rows: one event's figures
//! ([`event`]), figures over a period in buckets of a time zone ([`periods`]), and the
//! attendee list a page at a time for the CSV export ([`attendees`]), revenue per currency,
//! ticket type and promo code ([`revenue`]) and the orders for their export ([`orders`]).
//!
//! Every figure is exact at the moment it is read: each is one SQL statement (one snapshot)
//! over the bookings, waiting-list entries and answers themselves, or the event's own
//! counters, which its bookings move under its lock. Nothing is cached or rolled up, so
//! nothing can drift.
//!
//! Top layer: it only reads, and imports the bottom layer (who may see an event).

pub mod attendees;
pub mod event;
pub mod orders;
pub mod periods;
pub mod revenue;

use uuid::Uuid;

use crate::db::models::Event;
use crate::domain::Viewer;
use crate::domain::rows::find_event;
use crate::domain::sale_rules::visible_to;
use crate::error::{AppError, AppResult};
use diesel_async::AsyncPgConnection;

pub use event::{EventStats, event_stats};
pub use periods::{
    Bucket, CategoryFigures, EventFigures, Interval, PlatformStats, Totals, buckets,
    organizer_stats, platform_stats, sales_over_time,
};

/// The event, when `viewer` may read its analytics: its organizer or an admin. Someone else's
/// draft is `NOT_FOUND` (as everywhere), someone else's published event `FORBIDDEN`.
pub async fn event_for_analytics(
    conn: &mut AsyncPgConnection,
    viewer: &Viewer,
    event_id: Uuid,
) -> AppResult<Event> {
    let event = find_event(conn, event_id)
        .await?
        .ok_or(AppError::NotFound("event"))?;
    if viewer.is_admin() || event.organizer_id == viewer.id() {
        Ok(event)
    } else if !visible_to(&event, Some(viewer)) {
        Err(AppError::NotFound("event"))
    } else {
        Err(AppError::Forbidden(
            "only the event's organizer or an admin can see its analytics",
        ))
    }
}
