use async_graphql::connection::Connection;
use async_graphql::{Context, ID, InputObject, MaybeUndefined, Object};
use chrono::{DateTime, Utc};

use super::context::{ContextExt, require_viewer, viewer};
use super::types::{EventStatus, connection, event_cursor, page_complexity, parse_id};
use crate::db::models::{self, Event};
use crate::domain::events::{self, EventPatch, NewEvent};
use crate::domain::pagination::PageRequest;
use crate::error::{AppError, AppResult};

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

/// Whether the caller may see the event (drafts, and drafts that were cancelled: only their
/// organizer and admins). The caller is looked up only for such an event, and a token that is
/// no longer valid sees what a signed-out caller sees, so that no error tells a stranger a
/// draft exists.
pub(super) async fn may_see(ctx: &Context<'_>, event: &Event) -> AppResult<bool> {
    if events::visible_to(event, None) {
        return Ok(true);
    }
    let viewer = match viewer(ctx).await {
        Ok(viewer) => viewer,
        Err(AppError::Unauthenticated(_)) => None,
        Err(error) => return Err(error),
    };
    Ok(events::visible_to(event, viewer.as_ref()))
}

fn patch<T>(value: MaybeUndefined<T>) -> Option<Option<T>> {
    match value {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(value) => Some(Some(value)),
    }
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
        // Only a listing of drafts, or of cancelled events (which may have been drafts),
        // depends on who asks.
        let viewer = match filter.status {
            Some(models::EventStatus::Draft | models::EventStatus::Cancelled) => {
                viewer(ctx).await?
            }
            _ => None,
        };
        let mut conn = ctx.app().conn().await?;
        let rows = events::list_events(&mut conn, viewer.as_ref(), &filter, page).await?;
        Ok(connection(rows, page.after.is_some(), event_cursor))
    }

    /// Null when there is no such event, or when it is a draft of someone else.
    async fn event(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Event>> {
        let id = parse_id(&id, "id")?;
        let event = {
            let mut conn = ctx.app().conn().await?;
            events::find_event(&mut conn, id).await?
        };
        match event {
            Some(event) if may_see(ctx, &event).await? => Ok(Some(event)),
            _ => Ok(None),
        }
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
            venue_id: input
                .venue_id
                .map(|id| parse_id(&id, "venueId"))
                .transpose()?,
            free: input.free,
            draft: match input.status {
                None | Some(EventStatus::Published) => false,
                Some(EventStatus::Draft) => true,
                Some(_) => {
                    return Err(crate::error::AppError::bad_input(
                        "status",
                        "a new event is DRAFT or PUBLISHED",
                    )
                    .into());
                }
            },
            sales_start_at: input.sales_start_at,
            sales_end_at: input.sales_end_at,
            max_per_user: input.max_per_user,
            hold_minutes: input.hold_minutes,
            offer_minutes: input.offer_minutes,
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
            description: patch(input.description),
            category: input.category,
            venue: input.venue,
            starts_at: input.starts_at,
            ends_at: input.ends_at,
            capacity: input.capacity,
            max_per_booking: input.max_per_booking,
            sales_start_at: patch(input.sales_start_at),
            sales_end_at: patch(input.sales_end_at),
            max_per_user: patch(input.max_per_user),
            hold_minutes: input.hold_minutes,
            offer_minutes: input.offer_minutes,
        };
        let app = ctx.app();
        let mut conn = app.conn().await?;
        let updated = events::update_event(&mut conn, viewer, id, patch).await?;
        Ok(app.commit(updated))
    }

    /// The event's organizer or an ADMIN. Makes a DRAFT visible to everyone and bookable inside
    /// its sales window. Repeating it returns the published event.
    async fn publish_event(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Event> {
        let viewer = &require_viewer(ctx).await?;
        let id = parse_id(&id, "id")?;
        let app = ctx.app();
        let mut conn = app.conn().await?;
        let published = events::publish_event(&mut conn, viewer, id).await?;
        if published.changed() {
            tracing::info!(event_id = %id, "event published");
        }
        Ok(app.commit(published))
    }

    /// Cancels the event and every booking of it. Repeating it returns the cancelled event.
    async fn cancel_event(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Event> {
        let viewer = &require_viewer(ctx).await?;
        let id = parse_id(&id, "id")?;
        let app = ctx.app();
        let mut conn = app.conn().await?;
        let cancelled = events::cancel_event(&mut conn, viewer, id).await?;
        if cancelled.changed() {
            tracing::info!(
                event_id = %id,
                bookings = cancelled.changes.bookings.len(),
                holds = cancelled.changes.holds.len(),
                "event cancelled"
            );
        }
        Ok(app.commit(cancelled))
    }
}
