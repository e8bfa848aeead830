use std::sync::Arc;

use async_graphql::connection::Connection;
use async_graphql::{Context, ID, InputObject, Object};

use super::context::{ContextExt, require_viewer};
use super::types::{booking_cursor, connection, parse_id};
use crate::db::models::Booking;
use crate::domain::bookings::{self, BookingChange, BookingRequest};
use crate::domain::pagination::PageRequest;
use crate::realtime::{SeatUpdate, Update};

#[derive(InputObject)]
pub struct BookSeatsInput {
    pub event_id: ID,
    #[graphql(default = 1)]
    pub quantity: i32,
    /// Makes the request safe to retry: the same key always returns the same booking.
    pub idempotency_key: Option<String>,
}

#[derive(Default)]
pub struct BookingQuery;

#[Object]
impl BookingQuery {
    /// The signed-in user's bookings, newest first.
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

impl BookingMutation {
    /// Announces a change that happened (a replayed request changes nothing): the event's seat
    /// counts to its watchers, the booking to its owner's `myBookingUpdates`.
    fn publish(ctx: &Context<'_>, change: BookingChange) -> Booking {
        if let Some(event) = &change.event {
            ctx.app().bus.publish_all(vec![
                Update::Seats(SeatUpdate::from(event)),
                Update::Booking(Arc::new(change.booking.clone())),
            ]);
        }
        change.booking
    }
}

#[Object]
impl BookingMutation {
    /// Books seats, or fails with SOLD_OUT when fewer than `quantity` are left.
    async fn book_seats(
        &self,
        ctx: &Context<'_>,
        input: BookSeatsInput,
    ) -> async_graphql::Result<Booking> {
        let viewer = &require_viewer(ctx).await?;
        let request = BookingRequest {
            event_id: parse_id(&input.event_id, "eventId")?,
            quantity: input.quantity,
            idempotency_key: input.idempotency_key,
        };
        let mut conn = ctx.app().conn().await?;
        let change = bookings::book_seats(&mut conn, viewer, request).await?;
        Ok(Self::publish(ctx, change))
    }

    /// The booking's owner or an admin. Cancelling again returns the cancelled booking.
    async fn cancel_booking(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Booking> {
        let viewer = &require_viewer(ctx).await?;
        let id = parse_id(&id, "id")?;
        let mut conn = ctx.app().conn().await?;
        let change = bookings::cancel_booking(&mut conn, viewer, id).await?;
        Ok(Self::publish(ctx, change))
    }
}
