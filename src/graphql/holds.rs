//! Holds: seats kept for a user for a while, during checkout (`holdSeats`) or as a
//! waiting-list offer; the `Hold` object, the user's holds, and confirming or releasing one.

use async_graphql::connection::Connection;
use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Enum, ID, InputObject, Object};
use chrono::{DateTime, Utc};

use super::bookings::{BookingView, load_booking};
use super::connections::{TotalCount, connection, page_complexity};
use super::context::{ContextExt, require_viewer};
use super::events::{EventView, load_event};
use super::ids::{parse_id, parse_ids, to_id};
use super::loaders::OfferLoader;
use super::seats::{SeatView, seats_of};
use super::users::{UserView, load_user};
use crate::db::models::{self, Hold};
use crate::domain::holds::{self, HoldRequest};
use crate::domain::pagination::PageRequest;
use crate::domain::seats::SeatOwner;
use crate::error::AppError;
use crate::security::rate_limit::Bucket;

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "models::HoldStatus")]
pub enum HoldStatus {
    /// The seats are kept until `expiresAt`.
    Held,
    /// Turned into a booking (`booking`).
    Confirmed,
    /// Given back before it expired.
    Released,
    /// Not confirmed in time; the seats went back on sale.
    Expired,
}

/// A hold as the API shows it: whether it is an offer, its booking and seats looked up.
pub struct HoldView(pub Hold);

#[Object(name = "Hold")]
impl HoldView {
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
    async fn status(&self) -> HoldStatus {
        self.0.status.into()
    }
    /// Confirm before this time (`confirmHold`), or the seats go back on sale.
    async fn expires_at(&self) -> DateTime<Utc> {
        self.0.expires_at
    }
    /// True for seats offered from the waiting list.
    async fn is_offer(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let offer = ctx.data_unchecked::<DataLoader<OfferLoader>>();
        Ok(offer.load_one(self.0.id).await?.unwrap_or(false))
    }
    /// The booking this hold became, once confirmed.
    async fn booking(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<BookingView>> {
        load_booking(ctx, self.0.booking_id).await
    }
    /// The seats held, for a seated event (best available, or the ones asked for).
    async fn seats(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<SeatView>> {
        seats_of(ctx, SeatOwner::Hold(self.0.id)).await
    }
    pub(crate) async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When it was confirmed, released or expired.
    async fn ended_at(&self) -> Option<DateTime<Utc>> {
        self.0.ended_at
    }
}

#[derive(InputObject)]
pub struct HoldSeatsInput {
    pub event_id: ID,
    /// How many seats; defaults to the number of `seatIds`, or 1.
    pub quantity: Option<i32>,
    /// Particular seats of a seated event (all or none are held). Without them a seated event
    /// gives the best seats available.
    #[graphql(default)]
    pub seat_ids: Vec<ID>,
}

#[derive(Default)]
pub struct HoldQuery;

#[Object]
impl HoldQuery {
    /// The signed-in user's holds, newest first: live ones unless `all`.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn my_holds(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = false)] all: bool,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, HoldView, TotalCount>> {
        let viewer = require_viewer(ctx).await?;
        let page = PageRequest::new(first, after.as_deref())?;
        let mut conn = ctx.app().conn().await?;
        let rows = holds::user_holds(&mut conn, viewer.id(), all, page).await?;
        let user_id = viewer.id();
        let total_count =
            TotalCount::new(move |conn| Box::pin(holds::count_user_holds(conn, user_id, all)));
        Ok(connection(rows, &page, HoldView, total_count))
    }

    /// One of the signed-in user's holds (any user's, for an admin).
    async fn hold(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<HoldView> {
        let viewer = require_viewer(ctx).await?;
        let id = parse_id(&id, "id")?;
        let mut conn = ctx.app().conn().await?;
        Ok(HoldView(holds::visible_hold(&mut conn, &viewer, id).await?))
    }
}

#[derive(Default)]
pub struct HoldMutation;

#[Object]
impl HoldMutation {
    /// Keeps seats for the signed-in user for the event's hold time (`Event.holdMinutes`,
    /// 10 minutes by default) while they check out. Nobody else can take them until the hold
    /// is confirmed (`confirmHold`), released (`releaseHold`) or expires. SOLD_OUT when there
    /// are not enough seats; CONFLICT when a named seat is taken.
    async fn hold_seats(
        &self,
        ctx: &Context<'_>,
        input: HoldSeatsInput,
    ) -> async_graphql::Result<HoldView> {
        let viewer = require_viewer(ctx).await?;
        let request = HoldRequest {
            event_id: parse_id(&input.event_id, "eventId")?,
            quantity: input.quantity,
            seat_ids: parse_ids(&input.seat_ids, "seatIds")?,
        };
        let app = ctx.app();
        app.rate_limiter
            .check(
                Bucket::Booking,
                app.config.rate_limits.booking,
                &viewer.id().to_string(),
            )
            .await
            .map_err(AppError::from)?;
        let mut conn = app.conn().await?;
        let hold = app.commit(holds::hold_seats(&mut conn, viewer.id(), request).await?);
        Ok(HoldView(hold))
    }

    /// Turns the signed-in user's hold into a booking, exactly once: confirming again returns
    /// the same booking. CONFLICT when the hold has expired or was released.
    async fn confirm_hold(
        &self,
        ctx: &Context<'_>,
        hold_id: ID,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<BookingView> {
        let viewer = require_viewer(ctx).await?;
        let hold_id = parse_id(&hold_id, "holdId")?;
        let app = ctx.app();
        let mut conn = app.conn().await?;
        let booking =
            app.commit(holds::confirm_hold(&mut conn, &viewer, hold_id, idempotency_key).await?);
        Ok(BookingView(booking))
    }

    /// Gives the hold's seats back (the waiting list gets them first). Releasing a hold that
    /// has ended returns it unchanged.
    async fn release_hold(
        &self,
        ctx: &Context<'_>,
        hold_id: ID,
    ) -> async_graphql::Result<HoldView> {
        let viewer = require_viewer(ctx).await?;
        let hold_id = parse_id(&hold_id, "holdId")?;
        let app = ctx.app();
        let mut conn = app.conn().await?;
        let hold = app.commit(holds::release_hold(&mut conn, &viewer, hold_id).await?);
        Ok(HoldView(hold))
    }
}
