//! Events: the `Event` object, the event queries, the organizer's mutations (create, update,
//! publish, cancel) and the live views of one event (`seatAvailability`, `eventUpdated`).

use async_graphql::connection::Connection;
use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Enum, ID, MaybeUndefined, Object, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt, stream};
use uuid::Uuid;

use super::connections::{TotalCount, connection, page_complexity};
use super::context::{ContextExt, browse_conn, require_viewer, viewer};
pub use super::event_inputs::{CreateEventInput, EventFilter, UpdateEventInput};
use super::ids::{parse_id, to_id};
use super::loaders::{EventLoader, VenueLoader};
use super::rsvp::{self, RsvpCounts, RsvpResponse};
use super::seats::SeatView;
use super::users::{UserView, load_user};
use super::venues::VenueView;
use super::waitlist;
use crate::db::models::{self, Event};
use crate::domain::events::{self, EventPatch, NewEvent};
use crate::domain::pagination::PageRequest;
use crate::domain::seats;
use crate::error::{AppError, AppResult};
use crate::realtime::{SeatUpdate, Topic, Update, Updates};

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "models::EventStatus")]
pub enum EventStatus {
    /// Being prepared: visible only to its organizer and admins, and not bookable.
    Draft,
    Published,
    Cancelled,
    /// Over: it has ended.
    Completed,
}

/// An event as the API shows it: the row's columns (not `publishedAt`), and what follows
/// from them or from other rows (`soldOut`, `onSale`, the organizer, seats, RSVPs). The
/// organizer comes with the row when it was read joined to it (a page of events, one event
/// by id), and from the request's DataLoader otherwise.
pub struct EventView(pub Event, Option<models::User>);

impl From<Event> for EventView {
    fn from(event: Event) -> Self {
        Self(event, None)
    }
}

impl From<(Event, models::User)> for EventView {
    fn from((event, organizer): (Event, models::User)) -> Self {
        Self(event, Some(organizer))
    }
}

/// An event reached through something else, batched with the other lookups of the request.
pub(super) async fn load_event(ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<EventView> {
    ctx.data_unchecked::<DataLoader<EventLoader>>()
        .load_one(id)
        .await?
        .map(EventView::from)
        .ok_or_else(|| AppError::NotFound("event").into())
}

#[Object(name = "Event")]
impl EventView {
    async fn id(&self) -> ID {
        to_id(self.0.id)
    }
    /// The ticket types on sale, in the order they were created. Hidden ones only for the
    /// organizer and admins, or when `accessCode` is a code that unlocks them. Empty for an
    /// event sold with `bookSeats`.
    async fn ticket_types(
        &self,
        ctx: &Context<'_>,
        access_code: Option<String>,
    ) -> async_graphql::Result<Vec<super::commerce::TicketTypeView>> {
        super::commerce::event_ticket_types(ctx, &self.0, access_code.as_deref()).await
    }
    /// The ISO 4217 currency of its prices, set by its first ticket type; null while it sells
    /// no ticket types.
    async fn currency(&self) -> Option<&str> {
        self.0.currency.as_deref()
    }
    /// How it is paid for, its refund policy, and (for its organizer) its quotas and codes.
    async fn sales(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<super::commerce::EventSalesView> {
        super::commerce::event_sales(ctx, &self.0).await
    }
    async fn title(&self) -> &str {
        &self.0.title
    }
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    async fn category(&self) -> &str {
        &self.0.category
    }
    async fn venue(&self) -> &str {
        &self.0.venue
    }
    async fn starts_at(&self) -> DateTime<Utc> {
        self.0.starts_at
    }
    async fn ends_at(&self) -> DateTime<Utc> {
        self.0.ends_at
    }
    async fn capacity(&self) -> i32 {
        self.0.capacity
    }
    async fn seats_available(&self) -> i32 {
        self.0.seats_available
    }
    /// Seats kept by holds (checkouts in progress and waiting-list offers):
    /// `seatsAvailable + seatsHeld + booked = capacity`.
    async fn seats_held(&self) -> i32 {
        self.0.seats_held
    }
    async fn sold_out(&self) -> bool {
        self.0.seats_available == 0
    }
    /// Most seats one booking may take.
    async fn max_per_booking(&self) -> i32 {
        self.0.max_per_booking
    }
    /// When sales open; null: as soon as the event is published.
    async fn sales_start_at(&self) -> Option<DateTime<Utc>> {
        self.0.sales_start_at
    }
    /// When sales close; null: when the event starts (they close then in any case).
    async fn sales_end_at(&self) -> Option<DateTime<Utc>> {
        self.0.sales_end_at
    }
    /// Most seats one user may have for the event, bookings and holds together; null: no limit.
    async fn max_per_user(&self) -> Option<i32> {
        self.0.max_per_user
    }
    /// How long a hold keeps seats during checkout, in minutes.
    async fn hold_minutes(&self) -> i32 {
        self.0.hold_minutes
    }
    /// How long a waiting-list offer keeps seats, in minutes.
    async fn offer_minutes(&self) -> i32 {
        self.0.offer_minutes
    }
    /// A free event takes RSVPs instead of bookings.
    async fn free(&self) -> bool {
        self.0.free
    }
    /// Whether it can be booked now: published, not started and inside its sales window
    /// (whether seats are left is `soldOut`).
    async fn on_sale(&self) -> bool {
        events::on_sale(&self.0)
    }
    async fn status(&self) -> EventStatus {
        self.0.status.into()
    }
    /// Increases by one with every change to the event; matches `SeatAvailability.version`.
    async fn version(&self) -> i32 {
        self.0.version
    }
    async fn organizer(&self, ctx: &Context<'_>) -> async_graphql::Result<UserView> {
        match &self.1 {
            Some(organizer) => Ok(UserView::other(organizer.clone())),
            None => load_user(ctx, self.0.organizer_id).await,
        }
    }
    /// The venue whose seats a seated event has; null for general admission.
    async fn venue_layout(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<VenueView>> {
        let Some(venue_id) = self.0.venue_id else {
            return Ok(None);
        };
        Ok(ctx
            .data_unchecked::<DataLoader<VenueLoader>>()
            .load_one(venue_id)
            .await?
            .map(VenueView))
    }
    /// A seated event's seats in venue order (of one section when given), each with its
    /// state. Empty for general admission. For a live view, subscribe to `seatMap`.
    ///
    /// A venue has up to 20,000 seats, so this field counts as 100 rows towards the query's
    /// complexity: one event's map per query, not a page of them.
    #[graphql(complexity = "100 * child_complexity")]
    async fn seats(
        &self,
        ctx: &Context<'_>,
        section: Option<String>,
    ) -> async_graphql::Result<Vec<SeatView>> {
        let mut conn = browse_conn(ctx).await?;
        let seats = seats::event_seats(&mut conn, &self.0, section.as_deref()).await?;
        Ok(seats.into_iter().map(SeatView).collect())
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// How many wait on the waiting list (not counting those with an offer).
    async fn waitlist_length(&self, ctx: &Context<'_>) -> async_graphql::Result<i32> {
        waitlist::waitlist_length(ctx, &self.0).await
    }
    /// For a free event: how many answered what. Null for a ticketed event.
    async fn rsvp_counts(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<RsvpCounts>> {
        rsvp::rsvp_counts(ctx, &self.0).await
    }
    /// For a free event: the signed-in user's answer, if any.
    async fn my_rsvp(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<RsvpResponse>> {
        rsvp::my_rsvp(ctx, &self.0).await
    }
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

/// The event, if there is one and the caller may see it (see [`may_see`]).
async fn find_visible_event(ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Event>> {
    Ok(find_visible_event_with_organizer(ctx, id)
        .await?
        .map(|(event, _)| event))
}

/// [`find_visible_event`] with the event's organizer, read in the same query.
async fn find_visible_event_with_organizer(
    ctx: &Context<'_>,
    id: Uuid,
) -> async_graphql::Result<Option<(Event, models::User)>> {
    let found = {
        let mut conn = browse_conn(ctx).await?;
        events::find_event_with_organizer(&mut conn, id).await?
    };
    match found {
        Some((event, organizer)) if may_see(ctx, &event).await? => Ok(Some((event, organizer))),
        _ => Ok(None),
    }
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
    ) -> async_graphql::Result<Connection<String, EventView, TotalCount>> {
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
        let mut conn = browse_conn(ctx).await?;
        let rows = events::list_events(&mut conn, viewer.as_ref(), &filter, page).await?;
        let total_count = TotalCount::new(move |conn| {
            let (viewer, filter) = (viewer.clone(), filter.clone());
            Box::pin(async move { events::count_events(conn, viewer.as_ref(), &filter).await })
        });
        Ok(connection(rows, &page, EventView::from, total_count))
    }

    /// Null when there is no such event, or when it is a draft of someone else.
    async fn event(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<EventView>> {
        let id = parse_id(&id, "id")?;
        Ok(find_visible_event_with_organizer(ctx, id)
            .await?
            .map(EventView::from))
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
    ) -> async_graphql::Result<EventView> {
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
        Ok(EventView::from(
            events::create_event(&mut conn, viewer, new).await?,
        ))
    }

    /// The event's organizer or an ADMIN.
    async fn update_event(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateEventInput,
    ) -> async_graphql::Result<EventView> {
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
        Ok(EventView::from(app.commit(updated)))
    }

    /// The event's organizer or an ADMIN. Makes a DRAFT visible to everyone and bookable inside
    /// its sales window. Repeating it returns the published event.
    async fn publish_event(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<EventView> {
        let viewer = &require_viewer(ctx).await?;
        let id = parse_id(&id, "id")?;
        let app = ctx.app();
        let mut conn = app.conn().await?;
        let published = events::publish_event(&mut conn, viewer, id).await?;
        if published.changed() {
            tracing::info!(event_id = %id, "event published");
        }
        Ok(EventView::from(app.commit(published)))
    }

    /// Cancels the event and every booking of it. Repeating it returns the cancelled event.
    async fn cancel_event(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<EventView> {
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
        let refunds_due = !cancelled.changes.orders.is_empty();
        let event = EventView::from(app.commit(cancelled));
        if refunds_due {
            // Its paid orders' refunds were recorded with it: carry them out now, apart from
            // this request (the sweeper retries any the provider does not take).
            super::commerce::send_refunds_in_background(app);
        }
        Ok(event)
    }
}

/// An event's seat counts at one version.
#[derive(SimpleObject, Clone)]
pub struct SeatAvailability {
    pub event_id: ID,
    pub capacity: i32,
    pub seats_available: i32,
    /// Seats kept by holds: checkouts in progress and waiting-list offers. Always
    /// `seatsAvailable + seatsHeld + booked = capacity`.
    pub seats_held: i32,
    pub sold_out: bool,
    pub version: i32,
}

impl From<SeatUpdate> for SeatAvailability {
    fn from(update: SeatUpdate) -> Self {
        Self {
            event_id: to_id(update.event_id),
            capacity: update.capacity,
            seats_available: update.seats_available,
            seats_held: update.seats_held,
            sold_out: update.seats_available == 0,
            version: update.version,
        }
    }
}

#[derive(Default)]
pub struct EventSubscription;

/// Messages of one topic whose version is above the last one passed on.
fn newer_than(
    updates: Updates,
    mut last_version: i32,
    version: impl Fn(&Update) -> Option<i32> + Send + 'static,
) -> impl Stream<Item = Update> + Send + 'static {
    updates.filter(move |update| {
        let newer = version(update).is_some_and(|v| v > last_version);
        if newer {
            last_version = version(update).unwrap_or(last_version);
        }
        std::future::ready(newer)
    })
}

/// The event as the caller may see it: someone else's draft is NOT_FOUND. (`seatAvailability`
/// is executed once for all its subscribers, as a signed-out caller: see `http::fanout`. So a
/// draft's seat counts are NOT_FOUND to everyone; its organizer can follow `eventUpdated`.)
pub(super) async fn current_event(
    ctx: &Context<'_>,
    event_id: Uuid,
) -> async_graphql::Result<Event> {
    find_visible_event(ctx, event_id)
        .await?
        .ok_or_else(|| AppError::NotFound("event").into())
}

#[Subscription]
impl EventSubscription {
    /// The event's seat counts now, then again after every change. Versions only increase.
    async fn seat_availability(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = SeatAvailability> + use<>> {
        let event_id = parse_id(&event_id, "eventId")?;
        let app = ctx.app();
        // Attach before reading, so a change committed in between is not lost.
        let updates = app.bus.subscribe(Topic::Seats(event_id));
        let first = SeatUpdate::from(&current_event(ctx, event_id).await?);
        let later = newer_than(updates, first.version, |update| match update {
            Update::Seats(seats) => Some(seats.version),
            _ => None,
        })
        .filter_map(|update| {
            std::future::ready(match update {
                Update::Seats(seats) => Some(seats),
                _ => None,
            })
        });
        Ok(stream::once(std::future::ready(first))
            .chain(later)
            .map(SeatAvailability::from))
    }

    /// The event now, then again whenever its details or status change (for instance when it
    /// is cancelled). For seat counts, subscribe to `seatAvailability`: this one is not sent
    /// for bookings, so its `seatsAvailable` is only as fresh as the last change of details.
    async fn event_updated(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = EventView> + use<>> {
        let event_id = parse_id(&event_id, "eventId")?;
        let app = ctx.app();
        let updates = app.bus.subscribe(Topic::Event(event_id));
        let first = current_event(ctx, event_id).await?;
        let later = newer_than(updates, first.version, |update| match update {
            Update::Event(event) => Some(event.version),
            _ => None,
        })
        .filter_map(|update| {
            std::future::ready(match update {
                Update::Event(event) => Some(Event::clone(&event)),
                _ => None,
            })
        });
        Ok(stream::once(std::future::ready(first))
            .chain(later)
            .map(EventView::from))
    }
}
