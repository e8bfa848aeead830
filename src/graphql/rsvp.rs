//! RSVPs: a free event's invitation answered (GOING takes a seat, or a place on the waiting
//! list), the counts of answers and the caller's own answer on an event's page.

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::bookings::BookingView;
use super::context::{ContextExt, require_viewer, viewer};
use super::ids::parse_id;
use super::loaders::{RsvpCountsLoader, RsvpLoader};
use super::waitlist::WaitlistEntryView;
use crate::db::models::{self, Event};
use crate::domain::rsvp;

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "models::RsvpResponse")]
pub enum RsvpResponse {
    Going,
    Maybe,
    NotGoing,
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
    pub booking: Option<BookingView>,
    /// The place in the queue, while GOING and the event is full. Promotion books the seat
    /// and tells `myBookingUpdates`.
    pub waitlist_entry: Option<WaitlistEntryView>,
    pub updated_at: DateTime<Utc>,
}

impl From<rsvp::RsvpOutcome> for Rsvp {
    fn from(outcome: rsvp::RsvpOutcome) -> Self {
        Self {
            response: outcome.rsvp.response.into(),
            booking: outcome.booking.map(BookingView),
            waitlist_entry: outcome.waitlist_entry.map(Into::into),
            updated_at: outcome.rsvp.updated_at,
        }
    }
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

#[derive(Default)]
pub struct RsvpMutation;

#[Object]
impl RsvpMutation {
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
        let outcome =
            app.commit(rsvp::respond(&mut conn, viewer.id(), event_id, response.into()).await?);
        Ok(outcome.into())
    }
}
