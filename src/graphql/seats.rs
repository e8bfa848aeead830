//! Numbered seats: the `Seat` object, the seats of a hold or a booking, and `seatMap`, a seated
//! event's seats, live, for a seat picker.
//!
//! Thousands of viewers open one event's map at once (an onsale). Each reads the event's row
//! to learn its version, but the seats themselves are read once per version and instance and
//! shared ([`SeatMaps`]); later changes reach every viewer as deltas from the bus.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Enum, ID, Object, SimpleObject, Subscription};
use futures_util::{Stream, StreamExt, stream};
use uuid::Uuid;

use super::context::ContextExt;
use super::events::current_event;
use super::ids::{parse_id, to_id};
use super::loaders::OwnedSeatsLoader;
use crate::app::AppState;
use crate::db::models::Event;
use crate::domain::seats::{self, EventSeat, SeatOwner};
use crate::realtime::{Topic, Update, Updates};

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "crate::domain::seats::SeatState")]
pub enum SeatState {
    Available,
    /// Kept by a hold (a checkout in progress or a waiting-list offer).
    Held,
    Booked,
}

/// One numbered seat of a seated event and its state.
pub struct SeatView(pub EventSeat);

#[Object(name = "Seat")]
impl SeatView {
    /// The venue seat's id: what `seatIds` take.
    async fn id(&self) -> ID {
        to_id(self.0.seat_id)
    }
    async fn section(&self) -> &str {
        &self.0.section
    }
    async fn row(&self) -> &str {
        &self.0.row_label
    }
    async fn number(&self) -> i32 {
        self.0.number
    }
    async fn state(&self) -> SeatState {
        self.0.state.into()
    }
}

/// The seats a hold or a booking has, in venue order (none for general admission, or once it
/// has ended). Batched: a page of bookings costs one query.
pub async fn seats_of(ctx: &Context<'_>, owner: SeatOwner) -> async_graphql::Result<Vec<SeatView>> {
    Ok(ctx
        .data_unchecked::<DataLoader<OwnedSeatsLoader>>()
        .load_one(owner)
        .await?
        .unwrap_or_default()
        .into_iter()
        .map(SeatView)
        .collect())
}

/// A seat map message: every seat (`full`), or only the seats that changed since the
/// previous message. Versions only increase.
#[derive(SimpleObject)]
#[graphql(name = "SeatMapUpdate")]
pub struct SeatMapMessage {
    pub event_id: ID,
    /// The event's version this map is at; matches `Event.version`.
    pub version: i32,
    /// True when `seats` is the whole map, to replace what the client has; false when it
    /// holds only the seats that changed.
    pub full: bool,
    pub seats: Vec<SeatView>,
}

impl SeatMapMessage {
    fn new(event_id: Uuid, version: i32, full: bool, seats: Vec<EventSeat>) -> Self {
        Self {
            event_id: to_id(event_id),
            version,
            full,
            seats: seats.into_iter().map(SeatView).collect(),
        }
    }
}

async fn read_map(
    app: &AppState,
    event_id: Uuid,
) -> async_graphql::Result<(Event, Vec<EventSeat>)> {
    let mut conn = app.conn().await?;
    Ok(seats::seat_map(&mut conn, event_id).await?)
}

/// The newest seat map read of each event someone is watching on this instance. Viewers hold
/// their event's entry; it goes when the last one leaves.
#[derive(Default)]
pub struct SeatMaps {
    events: Mutex<HashMap<Uuid, Weak<SharedMap>>>,
}

impl SeatMaps {
    fn watch(&self, event_id: Uuid) -> Arc<SharedMap> {
        let mut events = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(map) = events.get(&event_id).and_then(Weak::upgrade) {
            return map;
        }
        events.retain(|_, map| map.strong_count() > 0);
        let map = Arc::new(SharedMap::default());
        events.insert(event_id, Arc::downgrade(&map));
        map
    }
}

/// An event and all its seats as of one version.
type Snapshot = Arc<(Event, Vec<EventSeat>)>;

/// One event's newest map. The async lock makes viewers who need a newer one wait for a
/// single read instead of each making their own.
#[derive(Default)]
struct SharedMap(tokio::sync::Mutex<Option<Snapshot>>);

impl SharedMap {
    /// The map at `version` or newer. A viewer passes the version it read after attaching to
    /// the bus: every change after the map it gets then reaches it as an update.
    async fn at_least(
        &self,
        app: &AppState,
        event_id: Uuid,
        version: i32,
    ) -> async_graphql::Result<Snapshot> {
        let mut newest = self.0.lock().await;
        if let Some(map) = newest.as_ref().filter(|map| map.0.version >= version) {
            return Ok(map.clone());
        }
        let map = Arc::new(read_map(app, event_id).await?);
        *newest = Some(map.clone());
        Ok(map)
    }
}

#[derive(Default)]
pub struct SeatSubscription;

#[Subscription]
impl SeatSubscription {
    /// Every seat of a seated event with its state, then the seats whose state changes. After
    /// a gap (a change this stream could not pass on), the whole map is sent again with
    /// `full: true`. A general-admission event has no seat map (BAD_USER_INPUT, reason
    /// NO_SEAT_MAP); a draft's map is only its organizer's and admins' (NOT_FOUND to others).
    async fn seat_map(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = SeatMapMessage> + use<>> {
        let event_id = parse_id(&event_id, "eventId")?;
        let app = ctx.app().clone();
        // Attach before reading, so a change committed in between is not lost.
        let updates = app.bus.subscribe(Topic::SeatMap(event_id));
        // Someone else's draft does not exist, as for `event(id)`: not even that it has no
        // seat map may tell a stranger it is there.
        let event = current_event(ctx, event_id).await?;
        seats::check_seat_map(&event)?;
        // Shared between the connections of this instance where the server provides it.
        let map = match ctx.data_opt::<Arc<SeatMaps>>() {
            Some(maps) => maps.watch(event_id),
            None => Arc::default(),
        };
        let newest = map.at_least(&app, event_id, event.version).await?;
        let (event, seats) = &*newest;
        let first = SeatMapMessage::new(event_id, event.version, true, seats.clone());
        let watch = SeatMapWatch {
            updates,
            app,
            map,
            event_id,
            last_version: event.version,
        };
        Ok(
            stream::once(std::future::ready(first))
                .chain(stream::unfold(watch, SeatMapWatch::next)),
        )
    }
}

struct SeatMapWatch {
    updates: Updates,
    app: AppState,
    map: Arc<SharedMap>,
    event_id: Uuid,
    /// The version of the map as this stream last sent it.
    last_version: i32,
}

impl SeatMapWatch {
    async fn next(mut self) -> Option<(SeatMapMessage, Self)> {
        loop {
            let Update::SeatMap(update) = self.updates.next().await? else {
                continue;
            };
            if update.version <= self.last_version {
                continue;
            }
            if update.previous_version == Some(self.last_version) {
                self.last_version = update.version;
                let message =
                    SeatMapMessage::new(self.event_id, update.version, false, update.seats.clone());
                return Some((message, self));
            }
            // Something between the last message and this one went missing (or the bus lost
            // its Redis subscription): the database has the whole truth. Every viewer of the
            // event finds the same gap at once; they share one read.
            let newest = self
                .map
                .at_least(&self.app, self.event_id, update.version)
                .await;
            match newest.as_deref() {
                Ok((event, seats)) if event.version > self.last_version => {
                    self.last_version = event.version;
                    let message =
                        SeatMapMessage::new(self.event_id, event.version, true, seats.clone());
                    return Some((message, self));
                }
                Ok(_) => {}
                Err(error) => {
                    // The next change will find the same gap and try again.
                    tracing::warn!(event_id = %self.event_id, error = ?error.message, "cannot re-read a seat map");
                }
            }
        }
    }
}
