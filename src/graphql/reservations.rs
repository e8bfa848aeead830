//! Checkout holds, the waiting list and RSVPs: what a user has, or is waiting for, at an event
//! besides a booking.

use async_graphql::connection::Connection;
use async_graphql::{Context, Enum, ID, InputObject, Interface, Object, SimpleObject};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use async_graphql::dataloader::DataLoader;

use super::context::{ContextExt, require_viewer, viewer};
use super::loaders::{
    BookingLoader, HoldLoader, OfferLoader, RsvpCountsLoader, RsvpLoader, WaitlistLengthLoader,
};
use super::seats::{SeatNode, seats_of};
use super::types::{UserNode, connection, load_event, load_user, page_complexity, parse_id};
use crate::db::models::{self, Booking, Event};
use crate::domain::holds::{self, HoldRequest};
use crate::domain::pagination::{Cursor, PageRequest};
use crate::domain::seats::SeatOwner;
use crate::domain::{rsvp, waitlist};
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

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "models::WaitlistStatus")]
pub enum WaitlistStatus {
    /// In the queue (`position`).
    Waiting,
    /// Seats are kept for this entry as a hold (`hold`) until it expires: confirm it with
    /// `confirmHold`.
    Offered,
    /// The seats were booked.
    Fulfilled,
    /// The user left the list or turned the offer down.
    Left,
    /// The offer lapsed.
    Expired,
    /// The event was cancelled or is over.
    Closed,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "models::RsvpResponse")]
pub enum RsvpResponse {
    Going,
    Maybe,
    NotGoing,
}

/// Something a user has or waits for at an event: a booking, a hold (a checkout in progress or
/// a waiting-list offer) or a place on the waiting list. `myBookingUpdates` sends these.
#[derive(Interface)]
#[graphql(
    field(name = "id", ty = "ID"),
    field(name = "event", ty = "Event"),
    field(name = "user", ty = "UserNode"),
    field(name = "quantity", ty = "i32"),
    field(name = "created_at", ty = "DateTime<Utc>")
)]
pub enum Reservation {
    Booking(Booking),
    Hold(models::Hold),
    WaitlistEntry(WaitlistEntryNode),
}

#[Object(name = "Hold")]
impl models::Hold {
    async fn id(&self) -> ID {
        ID(self.id.to_string())
    }
    async fn event(&self, ctx: &Context<'_>) -> async_graphql::Result<Event> {
        load_event(ctx, self.event_id).await
    }
    async fn user(&self, ctx: &Context<'_>) -> async_graphql::Result<UserNode> {
        load_user(ctx, self.user_id).await
    }
    async fn quantity(&self) -> i32 {
        self.quantity
    }
    async fn status(&self) -> HoldStatus {
        self.status.into()
    }
    /// Confirm before this time (`confirmHold`), or the seats go back on sale.
    async fn expires_at(&self) -> DateTime<Utc> {
        self.expires_at
    }
    /// True for seats offered from the waiting list.
    async fn is_offer(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let offer = ctx.data_unchecked::<DataLoader<OfferLoader>>();
        Ok(offer.load_one(self.id).await?.unwrap_or(false))
    }
    /// The booking this hold became, once confirmed.
    async fn booking(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Booking>> {
        load_booking(ctx, self.booking_id).await
    }
    /// The seats held, for a seated event (best available, or the ones asked for).
    async fn seats(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<SeatNode>> {
        seats_of(ctx, SeatOwner::Hold(self.id)).await
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    /// When it was confirmed, released or expired.
    async fn ended_at(&self) -> Option<DateTime<Utc>> {
        self.ended_at
    }
}

/// A place on an event's waiting list.
#[derive(Clone)]
pub struct WaitlistEntryNode {
    entry: models::WaitlistEntry,
    /// Known when read with its place; looked up otherwise.
    position: Option<Option<i64>>,
}

impl From<waitlist::PlacedEntry> for WaitlistEntryNode {
    fn from(placed: waitlist::PlacedEntry) -> Self {
        Self {
            entry: placed.entry,
            position: Some(placed.position),
        }
    }
}

impl From<models::WaitlistEntry> for WaitlistEntryNode {
    fn from(entry: models::WaitlistEntry) -> Self {
        Self {
            entry,
            position: None,
        }
    }
}

#[Object(name = "WaitlistEntry")]
impl WaitlistEntryNode {
    async fn id(&self) -> ID {
        ID(self.entry.id.to_string())
    }
    async fn event(&self, ctx: &Context<'_>) -> async_graphql::Result<Event> {
        load_event(ctx, self.entry.event_id).await
    }
    async fn user(&self, ctx: &Context<'_>) -> async_graphql::Result<UserNode> {
        load_user(ctx, self.entry.user_id).await
    }
    async fn quantity(&self) -> i32 {
        self.entry.quantity
    }
    async fn status(&self) -> WaitlistStatus {
        self.entry.status.into()
    }
    /// 1 for the next in line; null once the entry has an offer or has ended.
    async fn position(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<i32>> {
        let position = match self.position {
            Some(position) => position,
            None if self.entry.status == models::WaitlistStatus::Waiting => {
                let mut conn = ctx.app().conn().await?;
                waitlist::place(&mut conn, self.entry.clone())
                    .await?
                    .position
            }
            None => None,
        };
        Ok(position.map(|p| i32::try_from(p).unwrap_or(i32::MAX)))
    }
    /// The seats offered to this entry, while OFFERED (and after).
    async fn hold(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<models::Hold>> {
        let Some(id) = self.entry.hold_id else {
            return Ok(None);
        };
        ctx.data_unchecked::<DataLoader<HoldLoader>>()
            .load_one(id)
            .await
    }
    /// The booking made from this entry, once FULFILLED.
    async fn booking(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Booking>> {
        load_booking(ctx, self.entry.booking_id).await
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.entry.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.entry.updated_at
    }
}

/// How many answered what.
#[derive(SimpleObject)]
pub struct RsvpCounts {
    /// GOING, with a seat.
    pub going: i32,
    /// GOING, on the waiting list while the event is full.
    pub waitlisted: i32,
    pub maybe: i32,
    pub not_going: i32,
}

impl From<rsvp::RsvpCounts> for RsvpCounts {
    fn from(counts: rsvp::RsvpCounts) -> Self {
        let int = |n: i64| i32::try_from(n).unwrap_or(i32::MAX);
        Self {
            going: int(counts.going),
            waitlisted: int(counts.waitlisted),
            maybe: int(counts.maybe),
            not_going: int(counts.not_going),
        }
    }
}

/// A user's answer to a free event's invitation.
#[derive(SimpleObject)]
pub struct Rsvp {
    pub response: RsvpResponse,
    /// The seat, while GOING and there was room.
    pub booking: Option<Booking>,
    /// The place in the queue, while GOING and the event is full. Promotion books the seat
    /// and tells `myBookingUpdates`.
    pub waitlist_entry: Option<WaitlistEntryNode>,
    pub updated_at: DateTime<Utc>,
}

impl From<rsvp::RsvpOutcome> for Rsvp {
    fn from(outcome: rsvp::RsvpOutcome) -> Self {
        Self {
            response: outcome.rsvp.response.into(),
            booking: outcome.booking,
            waitlist_entry: outcome.waitlist_entry.map(Into::into),
            updated_at: outcome.rsvp.updated_at,
        }
    }
}

async fn load_booking(
    ctx: &Context<'_>,
    id: Option<Uuid>,
) -> async_graphql::Result<Option<Booking>> {
    let Some(id) = id else { return Ok(None) };
    ctx.data_unchecked::<DataLoader<BookingLoader>>()
        .load_one(id)
        .await
}

/// The RSVP fields of an event, for its page.
pub async fn rsvp_counts(
    ctx: &Context<'_>,
    event: &Event,
) -> async_graphql::Result<Option<RsvpCounts>> {
    if !event.free {
        return Ok(None);
    }
    let counts = ctx.data_unchecked::<DataLoader<RsvpCountsLoader>>();
    Ok(Some(
        counts.load_one(event.id).await?.unwrap_or_default().into(),
    ))
}

pub async fn my_rsvp(
    ctx: &Context<'_>,
    event: &Event,
) -> async_graphql::Result<Option<RsvpResponse>> {
    if !event.free {
        return Ok(None);
    }
    let Some(viewer) = viewer(ctx).await? else {
        return Ok(None);
    };
    let responses = ctx.data_unchecked::<DataLoader<RsvpLoader>>();
    Ok(responses
        .load_one((event.id, viewer.id()))
        .await?
        .map(Into::into))
}

pub async fn waitlist_length(ctx: &Context<'_>, event: &Event) -> async_graphql::Result<i32> {
    let lengths = ctx.data_unchecked::<DataLoader<WaitlistLengthLoader>>();
    let count = lengths.load_one(event.id).await?.unwrap_or(0);
    Ok(i32::try_from(count).unwrap_or(i32::MAX))
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

pub fn parse_ids(ids: &[ID], field: &'static str) -> Result<Vec<Uuid>, AppError> {
    ids.iter().map(|id| parse_id(id, field)).collect()
}

fn hold_cursor(hold: &models::Hold) -> Cursor {
    Cursor {
        at: hold.created_at,
        id: hold.id,
    }
}

#[derive(Default)]
pub struct ReservationQuery;

#[Object]
impl ReservationQuery {
    /// The signed-in user's holds, newest first: live ones unless `all`.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn my_holds(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = false)] all: bool,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, models::Hold>> {
        let viewer = require_viewer(ctx).await?;
        let page = PageRequest::new(first, after.as_deref())?;
        let mut conn = ctx.app().conn().await?;
        let rows = holds::user_holds(&mut conn, viewer.id(), all, page).await?;
        Ok(connection(rows, page.after.is_some(), hold_cursor))
    }

    /// One of the signed-in user's holds (any user's, for an admin).
    async fn hold(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<models::Hold> {
        let viewer = require_viewer(ctx).await?;
        let id = parse_id(&id, "id")?;
        let mut conn = ctx.app().conn().await?;
        Ok(holds::visible_hold(&mut conn, &viewer, id).await?)
    }

    /// The signed-in user's waiting-list entries with their place in the queue, newest first:
    /// live ones (WAITING or OFFERED) unless `all`. At most 100.
    async fn my_waitlist_entries(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = false)] all: bool,
    ) -> async_graphql::Result<Vec<WaitlistEntryNode>> {
        let viewer = require_viewer(ctx).await?;
        let mut conn = ctx.app().conn().await?;
        let entries = waitlist::user_entries(&mut conn, viewer.id(), all).await?;
        Ok(entries.into_iter().map(Into::into).collect())
    }
}

#[derive(Default)]
pub struct ReservationMutation;

#[Object]
impl ReservationMutation {
    /// Keeps seats for the signed-in user for the event's hold time (`Event.holdMinutes`,
    /// 10 minutes by default) while they check out. Nobody else can take them until the hold
    /// is confirmed (`confirmHold`), released (`releaseHold`) or expires. SOLD_OUT when there
    /// are not enough seats; CONFLICT when a named seat is taken.
    async fn hold_seats(
        &self,
        ctx: &Context<'_>,
        input: HoldSeatsInput,
    ) -> async_graphql::Result<models::Hold> {
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
        let held = holds::hold_seats(&mut conn, viewer.id(), request).await?;
        Ok(app.commit(held))
    }

    /// Turns the signed-in user's hold into a booking, exactly once: confirming again returns
    /// the same booking. CONFLICT when the hold has expired or was released.
    async fn confirm_hold(
        &self,
        ctx: &Context<'_>,
        hold_id: ID,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Booking> {
        let viewer = require_viewer(ctx).await?;
        let hold_id = parse_id(&hold_id, "holdId")?;
        let app = ctx.app();
        let mut conn = app.conn().await?;
        let confirmed = holds::confirm_hold(&mut conn, &viewer, hold_id, idempotency_key).await?;
        Ok(app.commit(confirmed))
    }

    /// Gives the hold's seats back (the waiting list gets them first). Releasing a hold that
    /// has ended returns it unchanged.
    async fn release_hold(
        &self,
        ctx: &Context<'_>,
        hold_id: ID,
    ) -> async_graphql::Result<models::Hold> {
        let viewer = require_viewer(ctx).await?;
        let hold_id = parse_id(&hold_id, "holdId")?;
        let app = ctx.app();
        let mut conn = app.conn().await?;
        let released = holds::release_hold(&mut conn, &viewer, hold_id).await?;
        Ok(app.commit(released))
    }

    /// Joins a sold-out event's waiting list (BAD_USER_INPUT with reason SEATS_AVAILABLE
    /// while enough seats are free to book). When seats come back, the first entries that fit
    /// are offered them as holds, announced on `myBookingUpdates`. Joining again with the same
    /// quantity returns the same entry.
    async fn join_waitlist(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
        #[graphql(default = 1)] quantity: i32,
    ) -> async_graphql::Result<WaitlistEntryNode> {
        let viewer = require_viewer(ctx).await?;
        let event_id = parse_id(&event_id, "eventId")?;
        let app = ctx.app();
        let mut conn = app.conn().await?;
        let joined = waitlist::join(&mut conn, viewer.id(), event_id, quantity).await?;
        Ok(app.commit(joined).into())
    }

    /// Leaves the event's waiting list, giving up an offer not yet confirmed. Returns the
    /// entry, or null when the user was not on the list.
    async fn leave_waitlist(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
    ) -> async_graphql::Result<Option<WaitlistEntryNode>> {
        let viewer = require_viewer(ctx).await?;
        let event_id = parse_id(&event_id, "eventId")?;
        let app = ctx.app();
        let mut conn = app.conn().await?;
        let left = waitlist::leave(&mut conn, viewer.id(), event_id).await?;
        Ok(app.commit(left).map(Into::into))
    }

    /// Answers a free event's invitation. GOING takes a seat, or a place on the waiting list
    /// when the event is full; MAYBE and NOT_GOING give it back.
    async fn rsvp(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
        response: RsvpResponse,
    ) -> async_graphql::Result<Rsvp> {
        let viewer = require_viewer(ctx).await?;
        let event_id = parse_id(&event_id, "eventId")?;
        let app = ctx.app();
        let mut conn = app.conn().await?;
        let answered = rsvp::respond(&mut conn, viewer.id(), event_id, response.into()).await?;
        Ok(app.commit(answered).into())
    }
}
