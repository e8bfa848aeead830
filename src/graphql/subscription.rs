use async_graphql::{Context, ID, Subscription};
use futures_util::{Stream, StreamExt, stream};

use super::context::ContextExt;
use super::types::{SeatAvailability, parse_id};
use crate::domain::events;
use crate::error::AppError;
use crate::realtime::SeatUpdate;

#[derive(Default)]
pub struct AvailabilitySubscription;

#[Subscription]
impl AvailabilitySubscription {
    /// The event's seat counts now, then again after every change. Versions only increase.
    async fn seat_availability(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = SeatAvailability> + use<>> {
        let event_id = parse_id(&event_id, "eventId")?;
        let app = ctx.app();
        // Attach before reading, so a change committed in between is not lost.
        let updates = app.bus.subscribe(event_id);
        let current = {
            let mut conn = app.conn().await?;
            events::find_event(&mut conn, event_id)
                .await?
                .ok_or(AppError::NotFound("event"))?
        };
        let first = SeatUpdate::from(&current);
        let mut last_version = first.version;
        let later = updates.filter(move |update| {
            let newer = update.version > last_version;
            if newer {
                last_version = update.version;
            }
            std::future::ready(newer)
        });
        Ok(stream::once(std::future::ready(first))
            .chain(later)
            .map(SeatAvailability::from))
    }
}
