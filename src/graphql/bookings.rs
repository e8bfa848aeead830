//! Bookings: the `Booking` object, the lists of bookings, and booking and cancelling seats.
//! A booking request goes to the group commit queue (`app.onsale`), which books many at once.

use async_graphql::connection::Connection;
use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Enum, ID, InputObject, Object};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::connections::{TotalCount, connection, page_complexity};
use super::context::{ContextExt, require_viewer, token_claims, viewer};
use super::events::{EventView, load_event};
use super::ids::{parse_id, parse_ids, to_id};
use super::loaders::BookingLoader;
use super::seats::{SeatView, seats_of};
use super::users::{UserView, load_user};
use crate::db::models::{self, Booking};
use crate::domain::bookings::{self, BookingRequest};
use crate::domain::group_commit::Buyer;
use crate::domain::holds::requested_quantity;
use crate::domain::pagination::PageRequest;
use crate::domain::seats::SeatOwner;
use crate::error::AppError;
use crate::security::rate_limit::Bucket;

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "models::BookingStatus")]
pub enum BookingStatus {
    Confirmed,
    Cancelled,
}

/// A booking as the API shows it: its idempotency key only to its owner and admins, and its
/// event, user and seats looked up.
pub struct BookingView(pub Booking);

/// A booking reached through something else (a hold, a waiting-list entry), batched.
pub(super) async fn load_booking(
    ctx: &Context<'_>,
    id: Option<Uuid>,
) -> async_graphql::Result<Option<BookingView>> {
    let Some(id) = id else { return Ok(None) };
    ctx.data_unchecked::<DataLoader<BookingLoader>>()
        .load_one(id)
        .await
        .map(|booking| booking.map(BookingView))
}

#[Object(name = "Booking")]
impl BookingView {
    pub(crate) async fn id(&self) -> ID {
        to_id(self.0.id)
    }
    pub(crate) async fn event(&self, ctx: &Context<'_>) -> async_graphql::Result<EventView> {
        load_event(ctx, self.0.event_id).await
    }
    pub(crate) async fn user(&self, ctx: &Context<'_>) -> async_graphql::Result<UserView> {
        load_user(ctx, self.0.user_id).await
    }
    pub(crate) async fn quantity(&self) -> i32 {
        self.0.quantity
    }
    /// The numbered seats of a seated event's booking; empty for general admission and once
    /// the booking is cancelled.
    async fn seats(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<SeatView>> {
        seats_of(ctx, SeatOwner::Booking(self.0.id)).await
    }
    async fn status(&self) -> BookingStatus {
        self.0.status.into()
    }
    /// Shown to the booking's owner and to admins; null for the event's organizer.
    async fn idempotency_key(&self, ctx: &Context<'_>) -> Option<&str> {
        let visible = match viewer(ctx).await {
            Ok(Some(viewer)) => viewer.id() == self.0.user_id || viewer.is_admin(),
            _ => false,
        };
        self.0.idempotency_key.as_deref().filter(|_| visible)
    }
    pub(crate) async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn cancelled_at(&self) -> Option<DateTime<Utc>> {
        self.0.cancelled_at
    }
}

#[derive(InputObject)]
pub struct BookSeatsInput {
    pub event_id: ID,
    /// How many seats; defaults to the number of `seatIds`, or 1.
    pub quantity: Option<i32>,
    /// Makes the request safe to retry: the same key always returns the same booking.
    pub idempotency_key: Option<String>,
    /// Particular seats of a seated event: all or none are booked, and `quantity` must be
    /// their number (or left out), as for `holdSeats`.
    #[graphql(default)]
    pub seat_ids: Vec<ID>,
}

#[derive(Default)]
pub struct BookingQuery;

#[Object]
impl BookingQuery {
    /// The signed-in user's bookings, newest first.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn my_bookings(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, BookingView, TotalCount>> {
        let viewer = &require_viewer(ctx).await?;
        let page = PageRequest::new(first, after.as_deref())?;
        let mut conn = ctx.app().conn().await?;
        let rows = bookings::user_bookings(&mut conn, viewer.id(), page).await?;
        let user_id = viewer.id();
        let total_count =
            TotalCount::new(move |conn| Box::pin(bookings::count_user_bookings(conn, user_id)));
        Ok(connection(rows, &page, BookingView, total_count))
    }

    /// An event's bookings, newest first: for its organizer and admins.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn event_bookings(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, BookingView, TotalCount>> {
        let viewer = &require_viewer(ctx).await?;
        let event_id = parse_id(&event_id, "eventId")?;
        let page = PageRequest::new(first, after.as_deref())?;
        let mut conn = ctx.app().conn().await?;
        let rows = bookings::event_bookings(&mut conn, viewer, event_id, page).await?;
        let total_count =
            TotalCount::new(move |conn| Box::pin(bookings::count_event_bookings(conn, event_id)));
        Ok(connection(rows, &page, BookingView, total_count))
    }
}

#[derive(Default)]
pub struct BookingMutation;

#[Object]
impl BookingMutation {
    /// Books seats, or fails with SOLD_OUT when fewer than `quantity` are left.
    async fn book_seats(
        &self,
        ctx: &Context<'_>,
        input: BookSeatsInput,
    ) -> async_graphql::Result<BookingView> {
        let seat_ids = parse_ids(&input.seat_ids, "seatIds")?;
        let request = BookingRequest {
            event_id: parse_id(&input.event_id, "eventId")?,
            // A quantity that disagrees with the seats named is refused, not ignored.
            quantity: requested_quantity(input.quantity, &seat_ids)?,
            idempotency_key: input.idempotency_key,
            seat_ids,
        };
        let app = ctx.app();
        // The token's signature is checked here; its session is checked with the booking
        // itself (for a whole batch of bookings in one query), so a booking costs no
        // separate database read. After a sell-out most requests are refusals, and a signed
        // token is enough to refuse: a refusal changes nothing.
        let claims = token_claims(ctx)?.ok_or(AppError::Unauthenticated("sign in to do this"))?;
        let booked = async {
            if app.onsale.refuses(claims.sub, &request) {
                return Err(AppError::SoldOut { seats_available: 0 });
            }
            let limit = app.config.rate_limits.booking;
            app.rate_limiter
                .check(Bucket::Booking, limit, &claims.sub.to_string())
                .await?;
            let buyer = Buyer {
                user_id: claims.sub,
                session_id: claims.sid,
            };
            app.onsale.book(buyer, request).await
        }
        .await;
        crate::telemetry::metrics::record_booking(&booked);
        Ok(BookingView(app.commit(booked?)))
    }

    /// The booking's owner or an admin. Cancelling again returns the cancelled booking.
    async fn cancel_booking(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<BookingView> {
        let viewer = &require_viewer(ctx).await?;
        let id = parse_id(&id, "id")?;
        let mut conn = ctx.app().conn().await?;
        let cancelled = bookings::cancel_booking(&mut conn, viewer, id).await?;
        Ok(BookingView(ctx.app().commit(cancelled)))
    }
}
