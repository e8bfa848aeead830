//! The waiting list: a place in an event's queue, offered seats as a hold when some come
//! back; the `WaitlistEntry` object, the user's entries, joining and leaving.

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Enum, ID, Object};
use chrono::{DateTime, Utc};

use super::bookings::{BookingView, load_booking};
use super::commerce::TicketTypeView;
use super::context::{ContextExt, require_viewer};
use super::events::{EventView, load_event};
use super::holds::HoldView;
use super::ids::{parse_id, to_id};
use super::loaders::{HoldLoader, WaitlistLengthLoader};
use super::orders::{OrderView, load_ticket_type};
use super::users::{UserView, load_user};
use crate::db::models::{self, Event};
use crate::domain::waitlist;

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "models::WaitlistStatus")]
pub enum WaitlistStatus {
    /// In the queue (`position`).
    Waiting,
    /// Seats are kept for this entry as a hold (`hold`) until it expires: confirm it with
    /// `confirmHold`. At an event that sells ticket types, the hold keeps the seats of an
    /// order pending payment (`order`) for the entry's ticket type: pay it.
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

/// A place on an event's waiting list.
#[derive(Clone)]
pub struct WaitlistEntryView {
    entry: models::WaitlistEntry,
    /// Known when read with its place; looked up otherwise.
    position: Option<Option<i64>>,
}

impl From<waitlist::PlacedEntry> for WaitlistEntryView {
    fn from(placed: waitlist::PlacedEntry) -> Self {
        Self {
            entry: placed.entry,
            position: Some(placed.position),
        }
    }
}

impl From<models::WaitlistEntry> for WaitlistEntryView {
    fn from(entry: models::WaitlistEntry) -> Self {
        Self {
            entry,
            position: None,
        }
    }
}

#[Object(name = "WaitlistEntry")]
impl WaitlistEntryView {
    pub(crate) async fn id(&self) -> ID {
        to_id(self.entry.id)
    }
    pub(crate) async fn event(&self, ctx: &Context<'_>) -> async_graphql::Result<EventView> {
        load_event(ctx, self.entry.event_id).await
    }
    pub(crate) async fn user(&self, ctx: &Context<'_>) -> async_graphql::Result<UserView> {
        load_user(ctx, self.entry.user_id).await
    }
    pub(crate) async fn quantity(&self) -> i32 {
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
    async fn hold(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<HoldView>> {
        let Some(id) = self.entry.hold_id else {
            return Ok(None);
        };
        ctx.data_unchecked::<DataLoader<HoldLoader>>()
            .load_one(id)
            .await
            .map(|hold| hold.map(HoldView))
    }
    /// The ticket type waited for, at an event that sells them.
    async fn ticket_type(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<TicketTypeView>> {
        match self.entry.ticket_type_id {
            Some(id) => load_ticket_type(ctx, id).await.map(Some),
            None => Ok(None),
        }
    }
    /// At an event that sells ticket types: the order pending payment this entry was offered
    /// (its seats are the `hold`'s), while OFFERED and after.
    async fn order(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<OrderView>> {
        let (Some(hold_id), Some(_)) = (self.entry.hold_id, self.entry.ticket_type_id) else {
            return Ok(None);
        };
        let mut conn = ctx.app().conn().await?;
        Ok(waitlist::offered_order(&mut conn, hold_id)
            .await?
            .map(OrderView))
    }
    /// The booking made from this entry, once FULFILLED.
    async fn booking(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<BookingView>> {
        load_booking(ctx, self.entry.booking_id).await
    }
    pub(crate) async fn created_at(&self) -> DateTime<Utc> {
        self.entry.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.entry.updated_at
    }
}

/// How many wait on an event's list, for its page.
pub async fn waitlist_length(ctx: &Context<'_>, event: &Event) -> async_graphql::Result<i32> {
    let lengths = ctx.data_unchecked::<DataLoader<WaitlistLengthLoader>>();
    let count = lengths.load_one(event.id).await?.unwrap_or(0);
    Ok(i32::try_from(count).unwrap_or(i32::MAX))
}

#[derive(Default)]
pub struct WaitlistQuery;

#[Object]
impl WaitlistQuery {
    /// The signed-in user's waiting-list entries with their place in the queue, newest first:
    /// live ones (WAITING or OFFERED) unless `all`. At most 100.
    async fn my_waitlist_entries(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = false)] all: bool,
    ) -> async_graphql::Result<Vec<WaitlistEntryView>> {
        let viewer = require_viewer(ctx).await?;
        let mut conn = ctx.app().conn().await?;
        let entries = waitlist::user_entries(&mut conn, viewer.id(), all).await?;
        Ok(entries.into_iter().map(Into::into).collect())
    }
}

#[derive(Default)]
pub struct WaitlistMutation;

#[Object]
impl WaitlistMutation {
    /// Joins a sold-out event's waiting list (BAD_USER_INPUT with reason SEATS_AVAILABLE
    /// while enough seats are free to book). When seats come back, the first entries that fit
    /// are offered them as holds, announced on `myBookingUpdates`. Joining again with the same
    /// quantity returns the same entry. At an event that sells ticket types, name the
    /// (priced, visible) `ticketTypeId` waited for; the entry is offered an order pending
    /// payment for `quantity` tickets of it at its price, announced on `myBookingUpdates`.
    async fn join_waitlist(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
        #[graphql(default = 1)] quantity: i32,
        ticket_type_id: Option<ID>,
    ) -> async_graphql::Result<WaitlistEntryView> {
        let viewer = require_viewer(ctx).await?;
        let event_id = parse_id(&event_id, "eventId")?;
        let ticket_type_id = ticket_type_id
            .map(|id| parse_id(&id, "ticketTypeId"))
            .transpose()?;
        let app = ctx.app();
        let mut conn = app.conn().await?;
        let entry = app.commit(
            waitlist::join(&mut conn, viewer.id(), event_id, quantity, ticket_type_id).await?,
        );
        Ok(entry.into())
    }

    /// Leaves the event's waiting list, giving up an offer not yet confirmed. Returns the
    /// entry, or null when the user was not on the list.
    async fn leave_waitlist(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
    ) -> async_graphql::Result<Option<WaitlistEntryView>> {
        let viewer = require_viewer(ctx).await?;
        let event_id = parse_id(&event_id, "eventId")?;
        let app = ctx.app();
        let mut conn = app.conn().await?;
        let entry = app.commit(waitlist::leave(&mut conn, viewer.id(), event_id).await?);
        Ok(entry.map(Into::into))
    }
}
