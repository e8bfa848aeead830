use async_graphql::connection::Connection;
use async_graphql::{Context, ID, InputObject, Object};

use super::context::{ContextExt, require_viewer, token_claims};
use super::reservations::parse_ids;
use super::types::{booking_cursor, connection, page_complexity, parse_id};
use crate::db::models::Booking;
use crate::domain::bookings::{self, BookingRequest};
use crate::domain::group_commit::Buyer;
use crate::domain::holds::requested_quantity;
use crate::domain::pagination::PageRequest;
use crate::error::AppError;
use crate::security::rate_limit::Bucket;

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
    ) -> async_graphql::Result<Connection<String, Booking>> {
        let viewer = &require_viewer(ctx).await?;
        let page = PageRequest::new(first, after.as_deref())?;
        let mut conn = ctx.app().conn().await?;
        let rows = bookings::user_bookings(&mut conn, viewer.id(), page).await?;
        Ok(connection(rows, page.after.is_some(), booking_cursor))
    }

    /// An event's bookings, newest first: for its organizer and admins.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn event_bookings(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Booking>> {
        let viewer = &require_viewer(ctx).await?;
        let event_id = parse_id(&event_id, "eventId")?;
        let page = PageRequest::new(first, after.as_deref())?;
        let mut conn = ctx.app().conn().await?;
        let rows = bookings::event_bookings(&mut conn, viewer, event_id, page).await?;
        Ok(connection(rows, page.after.is_some(), booking_cursor))
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
    ) -> async_graphql::Result<Booking> {
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
        if app.onsale.refuses(claims.sub, &request) {
            return Err(AppError::SoldOut { seats_available: 0 }.into());
        }
        let limit = app.config.rate_limits.booking;
        app.rate_limiter
            .check(Bucket::Booking, limit, &claims.sub.to_string())
            .await
            .map_err(AppError::from)?;
        let buyer = Buyer {
            user_id: claims.sub,
            session_id: claims.sid,
        };
        let booked = app.onsale.book(buyer, request).await?;
        Ok(app.commit(booked))
    }

    /// The booking's owner or an admin. Cancelling again returns the cancelled booking.
    async fn cancel_booking(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Booking> {
        let viewer = &require_viewer(ctx).await?;
        let id = parse_id(&id, "id")?;
        let mut conn = ctx.app().conn().await?;
        let cancelled = bookings::cancel_booking(&mut conn, viewer, id).await?;
        Ok(ctx.app().commit(cancelled))
    }
}
