//! The bus that carries availability changes to `seatAvailability` subscribers.
//!
//! Each process keeps one local broadcast channel per event that has subscribers here, created
//! for the first and dropped with the last. Publishing delivers to local subscribers at once and,
//! with Redis configured, to every other process through Redis pub/sub, where one pattern
//! subscription per process feeds the same local channels. Messages carry the event's `version`,
//! so duplicates (a process hears its own messages back) and reordering are harmless: a
//! subscriber forwards only versions above the last it sent.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bb8_redis::RedisConnectionManager;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use uuid::Uuid;

use crate::db::models::Event;

/// Per-event buffer. A subscriber that falls further behind skips to the newest state.
const CHANNEL_CAPACITY: usize = 64;
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatUpdate {
    pub event_id: Uuid,
    pub capacity: i32,
    pub seats_available: i32,
    pub version: i32,
}

impl From<&Event> for SeatUpdate {
    fn from(event: &Event) -> Self {
        Self {
            event_id: event.id,
            capacity: event.capacity,
            seats_available: event.seats_available,
            version: event.version,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisHealth {
    NotConfigured,
    Up,
    Down,
}

#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    channels: Mutex<HashMap<Uuid, broadcast::Sender<SeatUpdate>>>,
    redis: Option<RedisBus>,
}

struct RedisBus {
    pool: bb8::Pool<RedisConnectionManager>,
    channel_prefix: String,
}

impl Bus {
    /// A bus for a single instance: no other process hears its messages.
    pub fn in_process() -> Self {
        Self {
            inner: Arc::new(Inner {
                channels: Mutex::default(),
                redis: None,
            }),
        }
    }

    /// A bus shared by every instance using the same Redis and key prefix. Start-up does not
    /// wait for Redis: if it is down, bookings go on and the listener keeps reconnecting.
    pub fn with_redis(url: &str, key_prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let manager = RedisConnectionManager::new(url)?;
        let pool = bb8::Pool::builder()
            .max_size(8)
            .connection_timeout(REDIS_TIMEOUT)
            .build_unchecked(manager);
        let channel_prefix = format!("{key_prefix}seats:");
        let inner = Arc::new(Inner {
            channels: Mutex::default(),
            redis: Some(RedisBus {
                pool,
                channel_prefix: channel_prefix.clone(),
            }),
        });
        tokio::spawn(listen(client, channel_prefix, Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// Attaches a subscriber to the event's channel. Read the current state only after this,
    /// so no change can fall between the read and the subscription.
    pub fn subscribe(&self, event_id: Uuid) -> SeatUpdates {
        let receiver = {
            let mut channels = self.inner.lock_channels();
            channels
                .entry(event_id)
                .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
                .subscribe()
        };
        SeatUpdates {
            event_id,
            receiver: Some(BroadcastStream::new(receiver)),
            bus: self.clone(),
        }
    }

    /// Announces a committed change. Never fails the caller: the change is already durable, and
    /// a Redis problem only delays other instances' subscribers.
    pub fn publish(&self, update: SeatUpdate) {
        self.inner.deliver_local(&update);
        if let Some(redis) = &self.inner.redis {
            let pool = redis.pool.clone();
            let channel = format!("{}{}", redis.channel_prefix, update.event_id);
            tokio::spawn(async move {
                let result = tokio::time::timeout(REDIS_TIMEOUT, async {
                    let payload = serde_json::to_string(&update)?;
                    let mut conn = pool.get().await?;
                    redis::cmd("PUBLISH")
                        .arg(&channel)
                        .arg(payload)
                        .query_async::<()>(&mut *conn)
                        .await?;
                    anyhow::Ok(())
                })
                .await;
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => tracing::warn!(%error, "publishing to Redis failed"),
                    Err(_) => tracing::warn!("publishing to Redis timed out"),
                }
            });
        }
    }

    pub async fn redis_health(&self) -> RedisHealth {
        let Some(redis) = &self.inner.redis else {
            return RedisHealth::NotConfigured;
        };
        let ping = tokio::time::timeout(REDIS_TIMEOUT, async {
            let mut conn = redis.pool.get().await?;
            redis::cmd("PING").query_async::<String>(&mut *conn).await?;
            anyhow::Ok(())
        })
        .await;
        if matches!(ping, Ok(Ok(()))) {
            RedisHealth::Up
        } else {
            RedisHealth::Down
        }
    }

    /// Events with at least one subscriber on this instance.
    pub fn local_channel_count(&self) -> usize {
        self.inner.lock_channels().len()
    }
}

impl Inner {
    fn lock_channels(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Uuid, broadcast::Sender<SeatUpdate>>> {
        // The map stays consistent even if a holder panicked, so a poisoned lock is still usable.
        self.channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn deliver_local(&self, update: &SeatUpdate) {
        if let Some(sender) = self.lock_channels().get(&update.event_id) {
            // An error only means the last subscriber left a moment ago.
            let _ = sender.send(update.clone());
        }
    }
}

/// Listens on Redis for every instance's messages, reconnecting with capped backoff.
async fn listen(client: redis::Client, channel_prefix: String, bus: Weak<Inner>) {
    let pattern = format!("{channel_prefix}*");
    let mut backoff = Duration::from_millis(100);
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.psubscribe(&pattern).await {
                Ok(()) => {
                    tracing::info!("listening for seat updates on Redis");
                    backoff = Duration::from_millis(100);
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let Some(bus) = bus.upgrade() else { return };
                        match serde_json::from_slice::<SeatUpdate>(message.get_payload_bytes()) {
                            Ok(update) => bus.deliver_local(&update),
                            Err(error) => tracing::warn!(%error, "ignoring malformed seat update"),
                        }
                    }
                    tracing::warn!("Redis subscription lost; reconnecting");
                }
                Err(error) => tracing::warn!(%error, "subscribing on Redis failed"),
            },
            Err(error) => tracing::warn!(%error, "connecting to Redis for seat updates failed"),
        }
        if bus.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A subscriber's view of one event's channel.
pub struct SeatUpdates {
    event_id: Uuid,
    /// `Some` until dropped: taken in `drop` so that it is gone before the count is read.
    receiver: Option<BroadcastStream<SeatUpdate>>,
    bus: Bus,
}

impl Stream for SeatUpdates {
    type Item = SeatUpdate;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(receiver) = self.receiver.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match Pin::new(&mut *receiver).poll_next(cx) {
                Poll::Ready(Some(Ok(update))) => return Poll::Ready(Some(update)),
                // Lagged: the missed messages are superseded by the ones still buffered.
                Poll::Ready(Some(Err(_))) => continue,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for SeatUpdates {
    fn drop(&mut self) {
        let mut channels = self.bus.inner.lock_channels();
        // Dropped under the lock, so two subscribers leaving together cannot both count the other.
        drop(self.receiver.take());
        if channels
            .get(&self.event_id)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            channels.remove(&self.event_id);
        }
    }
}
