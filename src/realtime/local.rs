//! Delivery on this instance: one broadcast channel per topic that has subscribers here, created
//! for the first and dropped with the last, and each subscriber's view of it ([`Updates`]).
//! Every message reaches these channels, whether published here or heard from Redis.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::topics::{Topic, Update};
use super::{Bus, Inner, lock};

/// Per-topic buffer. A subscriber that falls behind on seat counts or event details skips to
/// the newest state; one that falls behind on a user's bookings is told (`Missed`) and re-reads
/// them from the database, so a burst (an event cancelled with hundreds of bookings) costs a
/// query, not a silent gap.
const CHANNEL_CAPACITY: usize = 64;

impl Bus {
    /// Attaches a subscriber to a topic. Read the current state only after this, so no change
    /// can fall between the read and the subscription.
    pub fn subscribe(&self, topic: Topic) -> Updates {
        let receiver = lock(&self.inner.channels)
            .entry(topic)
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe();
        Updates {
            topic,
            receiver: Some(BroadcastStream::new(receiver)),
            bus: self.clone(),
        }
    }

    /// Subscribers of `topic` on this instance.
    pub fn local_subscriber_count(&self, topic: Topic) -> usize {
        lock(&self.inner.channels)
            .get(&topic)
            .map_or(0, broadcast::Sender::receiver_count)
    }

    /// Topics with at least one subscriber on this instance.
    pub fn local_channel_count(&self) -> usize {
        lock(&self.inner.channels).len()
    }
}

impl Inner {
    /// Hands `update` to this instance's subscribers of its topic.
    pub(super) fn deliver_local(&self, update: &Update) {
        if matches!(
            update,
            Update::Seats(_) | Update::Event(_) | Update::SeatMap(_)
        ) {
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(sender) = lock(&self.channels).get(&update.topic()) {
            // An error only means the last subscriber left a moment ago.
            let _ = sender.send(update.clone());
        }
    }
}

/// A subscriber's view of one topic's channel. For seat counts and event details, a subscriber
/// that was not polled for a while (a slow client) gets only the newest state, not a backlog.
pub struct Updates {
    topic: Topic,
    /// `Some` until dropped: taken in `drop` so that it is gone before the count is read.
    receiver: Option<BroadcastStream<Update>>,
    bus: Bus,
}

impl Stream for Updates {
    type Item = Update;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let topic = self.topic;
        let coalesce = topic.newest_supersedes();
        let Some(receiver) = self.receiver.as_mut() else {
            return Poll::Ready(None);
        };
        let mut newest = None;
        loop {
            match Pin::new(&mut *receiver).poll_next(cx) {
                // Newest by version, not by arrival: a change from Redis can arrive after a
                // later one delivered locally.
                Poll::Ready(Some(Ok(update))) if coalesce => {
                    if newest
                        .as_ref()
                        .is_none_or(|kept: &Update| kept.order().1 < update.order().1)
                    {
                        newest = Some(update);
                    }
                }
                Poll::Ready(Some(Ok(update))) => return Poll::Ready(Some(update)),
                // Lagged: seat counts and event details missed are superseded by the ones
                // still buffered; a seat-map delta carries the version it follows, so its
                // subscriber sees the gap and re-reads the map. A user's bookings are read with
                // `next_or_missed` instead.
                Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(missed)))) => {
                    crate::telemetry::metrics::record_dropped("bus", missed);
                    tracing::debug!(missed, ?topic, "a slow subscriber skipped updates");
                }
                Poll::Ready(None) => return Poll::Ready(newest),
                Poll::Pending => {
                    return match newest {
                        Some(update) => Poll::Ready(Some(update)),
                        None => Poll::Pending,
                    };
                }
            }
        }
    }
}

/// Messages this subscriber never got: it fell behind and the channel dropped the oldest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missed(pub u64);

impl Updates {
    /// The next message as sent, without skipping: `Err(Missed)` when some were dropped
    /// because this subscriber fell behind. For changes that do not supersede each other (a
    /// user's bookings), the caller then re-reads the state (`reservation_changes_since`);
    /// polling as a `Stream` would skip them silently.
    pub async fn next_or_missed(&mut self) -> Option<Result<Update, Missed>> {
        match self.receiver.as_mut()?.next().await? {
            Ok(update) => Some(Ok(update)),
            Err(BroadcastStreamRecvError::Lagged(missed)) => {
                crate::telemetry::metrics::record_dropped("bus", missed);
                Some(Err(Missed(missed)))
            }
        }
    }
}

impl Drop for Updates {
    fn drop(&mut self) {
        let mut channels = lock(&self.bus.inner.channels);
        // Dropped under the lock, so two subscribers leaving together cannot both count the other.
        drop(self.receiver.take());
        if channels
            .get(&self.topic)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            channels.remove(&self.topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;
    use uuid::Uuid;

    use super::*;
    use crate::db::models::{Booking, BookingStatus};
    use crate::realtime::{SeatMapUpdate, SeatUpdate};

    fn seats(version: i32) -> Update {
        Update::Seats(SeatUpdate {
            event_id: Uuid::nil(),
            capacity: 1000,
            seats_available: 1000 - version,
            seats_held: 0,
            version,
        })
    }

    fn version(update: Option<Update>) -> Option<i32> {
        match update {
            Some(Update::Seats(seats)) => Some(seats.version),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_skips_to_the_newest_state() {
        let bus = Bus::in_process();
        let mut slow = bus.subscribe(Topic::Seats(Uuid::nil()));
        // Far more than the channel holds, while the subscriber is not polled.
        for v in 1..=(CHANNEL_CAPACITY as i32 * 3) {
            bus.publish(seats(v));
        }
        assert_eq!(
            version(slow.next().await),
            Some(CHANNEL_CAPACITY as i32 * 3)
        );
        bus.publish(seats(1000));
        assert_eq!(version(slow.next().await), Some(1000));
    }

    #[tokio::test]
    async fn skipping_keeps_the_highest_version_whatever_the_arrival_order() {
        let bus = Bus::in_process();
        let mut slow = bus.subscribe(Topic::Seats(Uuid::nil()));
        for v in [3, 7, 5, 6] {
            bus.publish(seats(v));
        }
        assert_eq!(version(slow.next().await), Some(7));
    }

    #[tokio::test]
    async fn channels_exist_only_while_someone_listens() {
        let bus = Bus::in_process();
        let event = Uuid::new_v4();
        let first = bus.subscribe(Topic::Seats(event));
        let second = bus.subscribe(Topic::Seats(event));
        let other = bus.subscribe(Topic::UserBookings(event));
        assert_eq!(bus.local_channel_count(), 2);
        drop(first);
        assert_eq!(bus.local_channel_count(), 2);
        drop((second, other));
        assert_eq!(bus.local_channel_count(), 0);
        // Publishing with no one listening is not an error and creates nothing.
        bus.publish(seats(1));
        assert_eq!(bus.local_channel_count(), 0);
    }

    #[tokio::test]
    async fn booking_changes_are_not_coalesced() {
        let bus = Bus::in_process();
        let user = Uuid::new_v4();
        let mut feed = bus.subscribe(Topic::UserBookings(user));
        let booking = |status| Booking {
            id: Uuid::new_v4(),
            event_id: Uuid::nil(),
            user_id: user,
            quantity: 1,
            status,
            idempotency_key: None,
            created_at: Utc::now(),
            cancelled_at: None,
        };
        let sent = [
            booking(BookingStatus::Confirmed),
            booking(BookingStatus::Cancelled),
        ];
        bus.publish_all(
            sent.iter()
                .cloned()
                .map(|b| Update::Booking(Arc::new(b)))
                .collect(),
        );
        for expected in &sent {
            match feed.next().await {
                Some(Update::Booking(got)) => assert_eq!(got.id, expected.id),
                other => panic!("expected a booking, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn seat_map_deltas_are_not_coalesced() {
        let bus = Bus::in_process();
        let event_id = Uuid::new_v4();
        let mut feed = bus.subscribe(Topic::SeatMap(event_id));
        let delta = |version: i32| {
            Update::SeatMap(Arc::new(SeatMapUpdate {
                event_id,
                previous_version: Some(version - 1),
                version,
                seats: Vec::new(),
            }))
        };
        bus.publish_all((2..=4).map(delta).collect());
        for expected in 2..=4 {
            match feed.next().await {
                Some(Update::SeatMap(got)) => assert_eq!(got.version, expected),
                other => panic!("expected a seat-map delta, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_booking_subscriber_that_falls_behind_is_told_what_it_missed() {
        let bus = Bus::in_process();
        let user = Uuid::new_v4();
        let mut slow = bus.subscribe(Topic::UserBookings(user));
        let booking = || Booking {
            id: Uuid::new_v4(),
            event_id: Uuid::nil(),
            user_id: user,
            quantity: 1,
            status: BookingStatus::Cancelled,
            idempotency_key: None,
            created_at: Utc::now(),
            cancelled_at: Some(Utc::now()),
        };
        let sent: Vec<Booking> = (0..CHANNEL_CAPACITY + 10).map(|_| booking()).collect();
        bus.publish_all(
            sent.iter()
                .cloned()
                .map(|b| Update::Booking(Arc::new(b)))
                .collect(),
        );
        assert_eq!(
            slow.next_or_missed().await.unwrap().unwrap_err(),
            Missed(10)
        );
        // Then the ones still buffered, in order.
        for expected in &sent[10..] {
            match slow.next_or_missed().await {
                Some(Ok(Update::Booking(got))) => assert_eq!(got.id, expected.id),
                other => panic!("expected a booking, got {other:?}"),
            }
        }
    }
}
