use std::sync::Arc;

use async_graphql::connection::Connection;
use async_graphql::{Context, ID, InputObject, MaybeUndefined, Object};
use chrono::{DateTime, Utc};

use super::context::{ContextExt, require_viewer};
use super::types::{EventStatus, connection, event_cursor, page_complexity, parse_id};
use crate::db::models::Event;
use crate::domain::events::{self, EventPatch, NewEvent};
use crate::domain::pagination::PageRequest;
use crate::realtime::{SeatUpdate, Update};

#[derive(InputObject, Default)]
pub struct EventFilter {
    /// Exact category, any letter case.
    pub category: Option<String>,
    /// Words to find in the title, venue or description.
    pub search: Option<String>,
    pub starts_after: Option<DateTime<Utc>>,
    pub starts_before: Option<DateTime<Utc>>,
    /// Defaults to PUBLISHED.
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
    pub capacity: i32,
    /// Defaults to 10.
    pub max_per_booking: Option<i32>,
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
}

#[derive(Default)]
pub struct EventQuery;

#[Object]
impl EventQuery {
    /// Events ordered by start time, then id. Lists published events unless `filter.status` says otherwise.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        filter: Option<EventFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Event>> {
        let page = PageRequest::new(first, after.as_deref())?;
        let filter = filter.unwrap_or_default();
        let filter = events::EventFilter {
            category: filter.category,
            search: filter.search,
            starts_after: filter.starts_after,
            starts_before: filter.starts_before,
            status: filter.status.map(Into::into),
        };
        let mut conn = ctx.app().conn().await?;
        let rows = events::list_events(&mut conn, &filter, page).await?;
        Ok(connection(rows, page.after.is_some(), event_cursor))
    }

    async fn event(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Event>> {
        let id = parse_id(&id, "id")?;
        let mut conn = ctx.app().conn().await?;
        Ok(events::find_event(&mut conn, id).await?)
    }
}

#[derive(Default)]
pub struct EventMutation;

#[Object]
impl EventMutation {
    /// ORGANIZER or ADMIN. The caller becomes the event's organizer.
    async fn create_event(
        &self,
        ctx: &Context<'_>,
        input: CreateEventInput,
    ) -> async_graphql::Result<Event> {
        let viewer = &require_viewer(ctx).await?;
        let new = NewEvent {
            title: input.title,
            description: input.description,
            category: input.category,
            venue: input.venue,
            starts_at: input.starts_at,
            ends_at: input.ends_at,
            capacity: input.capacity,
            max_per_booking: input.max_per_booking,
        };
        let mut conn = ctx.app().conn().await?;
        Ok(events::create_event(&mut conn, viewer, new).await?)
    }

    /// The event's organizer or an ADMIN.
    async fn update_event(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateEventInput,
    ) -> async_graphql::Result<Event> {
        let viewer = &require_viewer(ctx).await?;
        let id = parse_id(&id, "id")?;
        let patch = EventPatch {
            title: input.title,
            description: match input.description {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(None),
                MaybeUndefined::Value(text) => Some(Some(text)),
            },
            category: input.category,
            venue: input.venue,
            starts_at: input.starts_at,
            ends_at: input.ends_at,
            capacity: input.capacity,
            max_per_booking: input.max_per_booking,
        };
        let app = ctx.app();
        let mut conn = app.conn().await?;
        let event = events::update_event(&mut conn, viewer, id, patch).await?;
        app.onsale.observe(&event);
        app.bus.publish_all(vec![
            Update::Seats(SeatUpdate::from(&event)),
            Update::Event(Arc::new(event.clone())),
        ]);
        Ok(event)
    }

    /// Cancels the event and every booking of it. Repeating it returns the cancelled event.
    async fn cancel_event(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Event> {
        let viewer = &require_viewer(ctx).await?;
        let id = parse_id(&id, "id")?;
        let app = ctx.app();
        let mut conn = app.conn().await?;
        let cancelled = events::cancel_event(&mut conn, viewer, id).await?;
        if cancelled.changed {
            tracing::info!(event_id = %id, bookings = cancelled.bookings.len(), "event cancelled");
            app.onsale.observe(&cancelled.event);
            // Each affected booking goes to its owner's `myBookingUpdates`.
            let mut updates = Vec::with_capacity(cancelled.bookings.len() + 2);
            updates.push(Update::Seats(SeatUpdate::from(&cancelled.event)));
            updates.push(Update::Event(Arc::new(cancelled.event.clone())));
            updates.extend(
                cancelled
                    .bookings
                    .into_iter()
                    .map(|booking| Update::Booking(Arc::new(booking))),
            );
            app.bus.publish_all(updates);
        }
        Ok(cancelled.event)
    }
}
