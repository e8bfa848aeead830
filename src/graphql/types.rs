//! GraphQL shapes of the domain's rows.

use async_graphql::connection::{Connection, Edge};
use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Enum, ID, Object, OutputType, SimpleObject};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::context::{ContextExt, viewer};
use super::loaders::{EventLoader, UserLoader, VenueLoader};
use super::reservations;
use super::seats::{SeatNode, seats_of};
use super::venues::VenueNode;
use crate::db::models;
use crate::domain::auth::IssuedTokens;
use crate::domain::pagination::{Cursor, Page};
use crate::domain::seats::{self, SeatOwner};
use crate::error::{AppError, AppResult};
use crate::realtime::SeatUpdate;

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "models::Role")]
pub enum Role {
    User,
    Organizer,
    Admin,
}

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

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "models::BookingStatus")]
pub enum BookingStatus {
    Confirmed,
    Cancelled,
}

/// A page of `first` rows (default 20, at most 100) costs that many times one row, so the
/// complexity limit bounds the rows a query can fan out to, not just its field count.
pub fn page_complexity(first: Option<i32>, child_complexity: usize) -> usize {
    let rows = first
        .unwrap_or(crate::domain::pagination::DEFAULT_PAGE_SIZE)
        .clamp(1, crate::domain::pagination::MAX_PAGE_SIZE);
    (rows as usize).saturating_mul(child_complexity)
}

pub fn parse_id(id: &ID, field: &'static str) -> AppResult<Uuid> {
    id.parse()
        .map_err(|_| AppError::bad_input(field, format!("`{field}` is not a valid id")))
}

pub(super) async fn load_user(ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<UserNode> {
    ctx.data_unchecked::<DataLoader<UserLoader>>()
        .load_one(id)
        .await?
        .map(UserNode::other)
        .ok_or_else(|| AppError::NotFound("user").into())
}

/// A user as the API shows it. Whether the email may be shown is known where the user is
/// reached: the caller's own account (`me`, a sign-in's payload) shows it; anyone else's
/// shows it only to admins and to that user.
pub struct UserNode {
    user: models::User,
    own: bool,
}

impl UserNode {
    /// The caller's own account.
    pub fn own(user: models::User) -> Self {
        Self { user, own: true }
    }
    /// An account reached through something else (an organizer, a booking's user).
    pub fn other(user: models::User) -> Self {
        Self { user, own: false }
    }
}

pub(super) async fn load_event(
    ctx: &Context<'_>,
    id: Uuid,
) -> async_graphql::Result<models::Event> {
    ctx.data_unchecked::<DataLoader<EventLoader>>()
        .load_one(id)
        .await?
        .ok_or_else(|| AppError::NotFound("event").into())
}

#[Object(name = "User")]
impl UserNode {
    async fn id(&self) -> ID {
        ID(self.user.id.to_string())
    }
    /// Shown to the user themselves and to admins; null for everyone else.
    async fn email(&self, ctx: &Context<'_>) -> Option<&str> {
        let visible = self.own
            || match viewer(ctx).await {
                Ok(Some(viewer)) => viewer.id() == self.user.id || viewer.is_admin(),
                _ => false,
            };
        visible.then_some(self.user.email.as_str())
    }
    async fn name(&self) -> &str {
        &self.user.name
    }
    async fn role(&self) -> Role {
        self.user.role.into()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.user.created_at
    }
}

#[Object(name = "Event")]
impl models::Event {
    async fn id(&self) -> ID {
        ID(self.id.to_string())
    }
    async fn title(&self) -> &str {
        &self.title
    }
    async fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }
    async fn category(&self) -> &str {
        &self.category
    }
    async fn venue(&self) -> &str {
        &self.venue
    }
    async fn starts_at(&self) -> DateTime<Utc> {
        self.starts_at
    }
    async fn ends_at(&self) -> DateTime<Utc> {
        self.ends_at
    }
    async fn capacity(&self) -> i32 {
        self.capacity
    }
    async fn seats_available(&self) -> i32 {
        self.seats_available
    }
    /// Seats kept by holds (checkouts in progress and waiting-list offers):
    /// `seatsAvailable + seatsHeld + booked = capacity`.
    async fn seats_held(&self) -> i32 {
        self.seats_held
    }
    async fn sold_out(&self) -> bool {
        self.seats_available == 0
    }
    /// Most seats one booking may take.
    async fn max_per_booking(&self) -> i32 {
        self.max_per_booking
    }
    /// When sales open; null: as soon as the event is published.
    async fn sales_start_at(&self) -> Option<DateTime<Utc>> {
        self.sales_start_at
    }
    /// When sales close; null: when the event starts (they close then in any case).
    async fn sales_end_at(&self) -> Option<DateTime<Utc>> {
        self.sales_end_at
    }
    /// Most seats one user may have for the event, bookings and holds together; null: no limit.
    async fn max_per_user(&self) -> Option<i32> {
        self.max_per_user
    }
    /// How long a hold keeps seats during checkout, in minutes.
    async fn hold_minutes(&self) -> i32 {
        self.hold_minutes
    }
    /// How long a waiting-list offer keeps seats, in minutes.
    async fn offer_minutes(&self) -> i32 {
        self.offer_minutes
    }
    /// A free event takes RSVPs instead of bookings.
    async fn free(&self) -> bool {
        self.free
    }
    /// Whether it can be booked now: published, not started and inside its sales window
    /// (whether seats are left is `soldOut`).
    async fn on_sale(&self) -> bool {
        crate::domain::events::on_sale(self)
    }
    async fn status(&self) -> EventStatus {
        self.status.into()
    }
    /// Increases by one with every change to the event; matches `SeatAvailability.version`.
    async fn version(&self) -> i32 {
        self.version
    }
    async fn organizer(&self, ctx: &Context<'_>) -> async_graphql::Result<UserNode> {
        load_user(ctx, self.organizer_id).await
    }
    /// The venue whose seats a seated event has; null for general admission.
    async fn venue_layout(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<VenueNode>> {
        let Some(venue_id) = self.venue_id else {
            return Ok(None);
        };
        Ok(ctx
            .data_unchecked::<DataLoader<VenueLoader>>()
            .load_one(venue_id)
            .await?
            .map(VenueNode))
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
    ) -> async_graphql::Result<Vec<SeatNode>> {
        let mut conn = ctx.app().conn().await?;
        let seats = seats::event_seats(&mut conn, self, section.as_deref()).await?;
        Ok(seats.into_iter().map(SeatNode).collect())
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
    /// How many wait on the waiting list (not counting those with an offer).
    async fn waitlist_length(&self, ctx: &Context<'_>) -> async_graphql::Result<i32> {
        reservations::waitlist_length(ctx, self).await
    }
    /// For a free event: how many answered what. Null for a ticketed event.
    async fn rsvp_counts(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<reservations::RsvpCounts>> {
        reservations::rsvp_counts(ctx, self).await
    }
    /// For a free event: the signed-in user's answer, if any.
    async fn my_rsvp(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<reservations::RsvpResponse>> {
        reservations::my_rsvp(ctx, self).await
    }
}

#[Object(name = "Booking")]
impl models::Booking {
    pub(crate) async fn id(&self) -> ID {
        ID(self.id.to_string())
    }
    pub(crate) async fn event(&self, ctx: &Context<'_>) -> async_graphql::Result<models::Event> {
        load_event(ctx, self.event_id).await
    }
    pub(crate) async fn user(&self, ctx: &Context<'_>) -> async_graphql::Result<UserNode> {
        load_user(ctx, self.user_id).await
    }
    pub(crate) async fn quantity(&self) -> i32 {
        self.quantity
    }
    /// The numbered seats of a seated event's booking; empty for general admission and once
    /// the booking is cancelled.
    async fn seats(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<SeatNode>> {
        seats_of(ctx, SeatOwner::Booking(self.id)).await
    }
    async fn status(&self) -> BookingStatus {
        self.status.into()
    }
    /// Shown to the booking's owner and to admins; null for the event's organizer.
    async fn idempotency_key(&self, ctx: &Context<'_>) -> Option<&str> {
        let visible = match viewer(ctx).await {
            Ok(Some(viewer)) => viewer.id() == self.user_id || viewer.is_admin(),
            _ => false,
        };
        self.idempotency_key.as_deref().filter(|_| visible)
    }
    pub(crate) async fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    async fn cancelled_at(&self) -> Option<DateTime<Utc>> {
        self.cancelled_at
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
            event_id: ID(update.event_id.to_string()),
            capacity: update.capacity,
            seats_available: update.seats_available,
            seats_held: update.seats_held,
            sold_out: update.seats_available == 0,
            version: update.version,
        }
    }
}

#[derive(SimpleObject)]
pub struct AuthPayload {
    /// Send as `Authorization: Bearer <accessToken>`.
    pub access_token: String,
    /// Single use: `refreshToken` returns a new one with each new access token.
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: i32,
    pub user: UserNode,
}

impl From<IssuedTokens> for AuthPayload {
    fn from(issued: IssuedTokens) -> Self {
        Self {
            access_token: issued.access_token,
            refresh_token: issued.refresh_token,
            expires_in: issued.expires_in,
            user: UserNode::own(issued.user),
        }
    }
}

/// A Relay connection over one page of rows.
pub fn connection<T: OutputType>(
    page: Page<T>,
    had_cursor: bool,
    cursor_of: impl Fn(&T) -> Cursor,
) -> Connection<String, T> {
    let mut connection = Connection::new(had_cursor, page.has_next_page);
    connection.edges.extend(
        page.items
            .into_iter()
            .map(|item| Edge::new(cursor_of(&item).encode(), item)),
    );
    connection
}

pub fn event_cursor(event: &models::Event) -> Cursor {
    Cursor {
        at: event.starts_at,
        id: event.id,
    }
}

pub fn booking_cursor(booking: &models::Booking) -> Cursor {
    Cursor {
        at: booking.created_at,
        id: booking.id,
    }
}
