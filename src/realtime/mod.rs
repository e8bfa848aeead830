//! The bus that carries committed changes to subscribers: seat counts, event details and each
//! user's bookings.
//!
//! Each process keeps one local broadcast channel per topic that has subscribers here, created
//! for the first and dropped with the last. Publishing delivers to local subscribers at once and,
//! with Redis configured, to every other process through Redis pub/sub, where ONE connection per
//! process holds the pattern subscriptions that feed the same local channels. A process skips
//! its own messages when they come back from Redis (it delivered them already).
//!
//! Nothing here is the truth: messages carry the event's `version` (or, for bookings, a status
//! that only moves forward), so duplicates and reordering are harmless, and whenever messages
//! may have been missed (the Redis subscription was lost), every topic with local subscribers
//! is re-read from PostgreSQL and pushed again.
//!
//! A subscription can also die without a word: a half-open TCP connection (a NAT or load
//! balancer dropped it, Redis hangs) delivers nothing and reports no error. So the listener
//! sends PING on it every `Heartbeat::interval`; an answer not back within `Heartbeat::timeout`
//! (behind whatever messages came first, on the same connection) ends the subscription as if
//! it had closed. Until a new one is up, `Bus::redis_health` says why, for `/readyz`.

mod resync;
mod slots;

pub use resync::{RESYNC_MARGIN, reservation_changes_since};

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bb8_redis::RedisConnectionManager;
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use uuid::Uuid;

use crate::db::DbPool;
use crate::db::models::{
    Booking, BookingStatus, Event, EventSeat, Hold, HoldStatus, WaitlistEntry, WaitlistStatus,
};

/// Per-topic buffer. A subscriber that falls behind on seat counts or event details skips to
/// the newest state; one that falls behind on a user's bookings is told (`Missed`) and re-reads
/// them from the database, so a burst (an event cancelled with hundreds of bookings) costs a
/// query, not a silent gap.
const CHANNEL_CAPACITY: usize = 64;
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Messages kept for republishing while Redis refuses them (the newest per topic or booking).
const MAX_UNSENT: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatUpdate {
    pub event_id: Uuid,
    pub capacity: i32,
    pub seats_available: i32,
    #[serde(default)]
    pub seats_held: i32,
    pub version: i32,
}

impl From<&Event> for SeatUpdate {
    fn from(event: &Event) -> Self {
        Self {
            event_id: event.id,
            capacity: event.capacity,
            seats_available: event.seats_available,
            seats_held: event.seats_held,
            version: event.version,
        }
    }
}

/// Seats of a seated event that changed in one transaction, which moved the event from
/// `previous_version` to `version`. A subscriber that did not send `previous_version` last
/// missed something and reads the whole map again; so does one that gets a message without a
/// `previous_version` (sent after the Redis subscription was lost).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatMapUpdate {
    pub event_id: Uuid,
    pub previous_version: Option<i32>,
    pub version: i32,
    pub seats: Vec<EventSeat>,
}

/// What a subscriber listens to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// An event's seat counts.
    Seats(Uuid),
    /// An event's details and status.
    Event(Uuid),
    /// A user's bookings.
    UserBookings(Uuid),
    /// The states of a seated event's seats.
    SeatMap(Uuid),
}

impl Topic {
    fn channel(&self, prefix: &str) -> String {
        match self {
            Self::Seats(id) => format!("{prefix}seats:{id}"),
            Self::Event(id) => format!("{prefix}events:{id}"),
            Self::UserBookings(id) => format!("{prefix}user-bookings:{id}"),
            Self::SeatMap(id) => format!("{prefix}seat-maps:{id}"),
        }
    }

    /// Whether the newest message makes the older ones pointless (a full state, not a change).
    /// Seat-map changes are deltas: skipping one would only force a full re-read.
    fn newest_supersedes(&self) -> bool {
        !matches!(self, Self::UserBookings(_) | Self::SeatMap(_))
    }
}

/// One committed change. Cloned once per local subscriber, so the large ones are shared.
#[derive(Debug, Clone)]
pub enum Update {
    Seats(SeatUpdate),
    Event(Arc<Event>),
    Booking(Arc<Booking>),
    /// A hold started or ended (a waiting-list offer is a hold).
    Hold(Arc<Hold>),
    /// A waiting-list entry moved (an offer made, lapsed or taken; the list closed).
    Waitlist(Arc<WaitlistEntry>),
    /// Seats of a seated event changed state.
    SeatMap(Arc<SeatMapUpdate>),
}

impl Update {
    pub fn topic(&self) -> Topic {
        match self {
            Self::Seats(update) => Topic::Seats(update.event_id),
            Self::Event(event) => Topic::Event(event.id),
            Self::Booking(booking) => Topic::UserBookings(booking.user_id),
            Self::Hold(hold) => Topic::UserBookings(hold.user_id),
            Self::Waitlist(entry) => Topic::UserBookings(entry.user_id),
            Self::SeatMap(update) => Topic::SeatMap(update.event_id),
        }
    }

    /// For the changes a user is told about: the thing that changed and how far along its
    /// states it is, so a subscriber can drop a stale repeat.
    pub fn reservation_rank(&self) -> Option<(Uuid, i64)> {
        match self {
            Self::Booking(booking) => Some((booking.id, booking_rank(booking))),
            Self::Hold(hold) => Some((hold.id, hold_rank(hold))),
            Self::Waitlist(entry) => Some((entry.id, waitlist_rank(entry))),
            Self::Seats(_) | Self::Event(_) | Self::SeatMap(_) => None,
        }
    }

    /// What a later message replaces, and how late this one is: the event's version, or the
    /// booking's status (which only ever moves from CONFIRMED to CANCELLED).
    fn order(&self) -> (UnsentKey, i64) {
        match self {
            Self::Seats(update) => (UnsentKey::Topic(self.topic()), update.version.into()),
            Self::Event(event) => (UnsentKey::Topic(self.topic()), event.version.into()),
            Self::Booking(booking) => (UnsentKey::Booking(booking.id), booking_rank(booking)),
            Self::Hold(hold) => (UnsentKey::Booking(hold.id), hold_rank(hold)),
            Self::Waitlist(entry) => (UnsentKey::Booking(entry.id), waitlist_rank(entry)),
            Self::SeatMap(update) => (UnsentKey::Topic(self.topic()), update.version.into()),
        }
    }
}

/// A hold is held, then ended one way or another.
pub fn hold_rank(hold: &Hold) -> i64 {
    match hold.status {
        HoldStatus::Held => 0,
        _ => 1,
    }
}

/// A waiting-list entry waits, may get an offer, then ends.
pub fn waitlist_rank(entry: &WaitlistEntry) -> i64 {
    match entry.status {
        WaitlistStatus::Waiting => 0,
        WaitlistStatus::Offered => 1,
        _ => 2,
    }
}

/// Orders a booking's states: a subscriber never goes from CANCELLED back to CONFIRMED.
pub fn booking_rank(booking: &Booking) -> i64 {
    match booking.status {
        BookingStatus::Confirmed => 0,
        BookingStatus::Cancelled => 1,
    }
}

impl From<SeatUpdate> for Update {
    fn from(update: SeatUpdate) -> Self {
        Self::Seats(update)
    }
}

/// The message on the wire between instances.
#[derive(Serialize)]
struct EnvelopeRef<'a> {
    origin: Uuid,
    update: WireRef<'a>,
}

#[derive(Serialize)]
enum WireRef<'a> {
    Seats(&'a SeatUpdate),
    Event(&'a Event),
    Booking(&'a Booking),
    Hold(&'a Hold),
    Waitlist(&'a WaitlistEntry),
    SeatMap(&'a SeatMapUpdate),
}

#[derive(Deserialize)]
struct Envelope {
    origin: Uuid,
    update: Wire,
}

#[derive(Deserialize)]
enum Wire {
    Seats(SeatUpdate),
    Event(Event),
    Booking(Booking),
    Hold(Hold),
    Waitlist(WaitlistEntry),
    SeatMap(SeatMapUpdate),
}

impl From<Wire> for Update {
    fn from(wire: Wire) -> Self {
        match wire {
            Wire::Seats(update) => Self::Seats(update),
            Wire::Event(event) => Self::Event(Arc::new(event)),
            Wire::Booking(booking) => Self::Booking(Arc::new(booking)),
            Wire::Hold(hold) => Self::Hold(Arc::new(hold)),
            Wire::Waitlist(entry) => Self::Waitlist(Arc::new(entry)),
            Wire::SeatMap(update) => Self::SeatMap(Arc::new(update)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisHealth {
    NotConfigured,
    Up,
    /// Why: Redis does not answer, or this instance does not hear the others.
    Down(String),
}

/// How the Redis subscription is checked (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub interval: Duration,
    pub timeout: Duration,
}

/// Whether this instance hears the other instances' messages.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Subscription {
    /// The first subscription since start-up is being set up.
    Starting,
    Up,
    /// Lost, or never came up: why, until a new one is up.
    Down(String),
}

#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    /// Tells this process's messages apart when Redis echoes them back.
    origin: Uuid,
    /// Seat and event updates heard so far, local or remote (and resubscriptions, after which
    /// some may have been missed): anything cached from public data is stale once it moves.
    generation: AtomicU64,
    channels: Mutex<HashMap<Topic, broadcast::Sender<Update>>>,
    redis: Option<RedisBus>,
}

struct RedisBus {
    pool: bb8::Pool<RedisConnectionManager>,
    prefix: String,
    subscription: Mutex<Subscription>,
    db: DbPool,
    unsent: Mutex<Unsent>,
    /// Messages for the one task that publishes them, so that a busy instance sends many in
    /// each round trip instead of a task and a pooled connection per commit.
    outbox: mpsc::UnboundedSender<Vec<(UnsentKey, Pending)>>,
}

/// The most messages sent to Redis in one pipelined round trip.
const MAX_PIPELINE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum UnsentKey {
    Topic(Topic),
    Booking(Uuid),
}

struct Pending {
    channel: String,
    payload: String,
    rank: i64,
}

#[derive(Default)]
struct Unsent {
    entries: HashMap<UnsentKey, Pending>,
    retrying: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent even if a holder panicked, so a poisoned lock is still usable.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Bus {
    /// A bus for a single instance: no other process hears its messages.
    pub fn in_process() -> Self {
        Self {
            inner: Arc::new(Inner {
                origin: Uuid::new_v4(),
                generation: AtomicU64::new(0),
                channels: Mutex::default(),
                redis: None,
            }),
        }
    }

    /// A bus shared by every instance using the same Redis and key prefix. Start-up does not
    /// wait for Redis: if it is down, bookings go on and the listener keeps reconnecting. `db`
    /// is where subscribers' state is re-read after the subscription was lost.
    pub fn with_redis(
        url: &str,
        key_prefix: &str,
        heartbeat: Heartbeat,
        db: DbPool,
    ) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let manager = RedisConnectionManager::new(url)?;
        let pool = bb8::Pool::builder()
            .max_size(8)
            .connection_timeout(REDIS_TIMEOUT)
            .build_unchecked(manager);
        let (outbox, queued) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            origin: Uuid::new_v4(),
            generation: AtomicU64::new(0),
            channels: Mutex::default(),
            redis: Some(RedisBus {
                pool,
                prefix: key_prefix.to_owned(),
                subscription: Mutex::new(Subscription::Starting),
                db,
                unsent: Mutex::default(),
                outbox,
            }),
        });
        tokio::spawn(send_queued(queued, Arc::downgrade(&inner)));
        let patterns = ["seats", "events", "user-bookings", "seat-maps"]
            .map(|kind| format!("{key_prefix}{kind}:*"))
            .to_vec();
        tokio::spawn(listen(client, patterns, heartbeat, Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// Moves on with every seat or event update this process hears of (see `Inner`).
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Relaxed)
    }

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

    /// Announces a committed change. Never fails the caller: the change is already durable, and
    /// a Redis problem only delays other instances' subscribers.
    pub fn publish(&self, update: impl Into<Update>) {
        self.publish_all(vec![update.into()]);
    }

    /// Announces several changes of one commit, sent to Redis in one round trip.
    pub fn publish_all(&self, updates: Vec<Update>) {
        if updates.is_empty() {
            return;
        }
        for update in &updates {
            self.inner.deliver_local(update);
        }
        let Some(redis) = &self.inner.redis else {
            return;
        };
        let batch: Vec<(UnsentKey, Pending)> = updates
            .iter()
            .filter_map(|update| {
                let payload = serde_json::to_string(&EnvelopeRef {
                    origin: self.inner.origin,
                    update: match update {
                        Update::Seats(seats) => WireRef::Seats(seats),
                        Update::Event(event) => WireRef::Event(event),
                        Update::Booking(booking) => WireRef::Booking(booking),
                        Update::Hold(hold) => WireRef::Hold(hold),
                        Update::Waitlist(entry) => WireRef::Waitlist(entry),
                        Update::SeatMap(update) => WireRef::SeatMap(update),
                    },
                })
                .inspect_err(|error| tracing::error!(%error, "cannot serialize an update"))
                .ok()?;
                let (key, rank) = update.order();
                let channel = update.topic().channel(&redis.prefix);
                Some((
                    key,
                    Pending {
                        channel,
                        payload,
                        rank,
                    },
                ))
            })
            .collect();
        // Only fails once the bus is being dropped, when there is no one left to tell.
        let _ = redis.outbox.send(batch);
    }

    /// Whether Redis answers and this instance hears the others through it; the subscription
    /// being set up for the first time counts as heard (readiness goes by the PING then).
    pub async fn redis_health(&self) -> RedisHealth {
        let Some(redis) = &self.inner.redis else {
            return RedisHealth::NotConfigured;
        };
        if let Subscription::Down(why) = &*lock(&redis.subscription) {
            return RedisHealth::Down(format!(
                "not receiving other instances' updates: the Redis subscription {why}"
            ));
        }
        let ping = tokio::time::timeout(REDIS_TIMEOUT, async {
            let mut conn = redis.pool.get().await?;
            redis::cmd("PING").query_async::<String>(&mut *conn).await?;
            anyhow::Ok(())
        })
        .await;
        if matches!(ping, Ok(Ok(()))) {
            RedisHealth::Up
        } else {
            RedisHealth::Down(format!(
                "Redis did not answer PING within {} ms",
                REDIS_TIMEOUT.as_millis()
            ))
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

/// Sends messages to Redis in one pipeline.
/// Sends queued messages in order, as many per round trip as have piled up meanwhile.
async fn send_queued(
    mut queued: mpsc::UnboundedReceiver<Vec<(UnsentKey, Pending)>>,
    bus: Weak<Inner>,
) {
    while let Some(mut batch) = queued.recv().await {
        while batch.len() < MAX_PIPELINE {
            match queued.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        let Some(inner) = bus.upgrade() else { return };
        let Some(redis) = &inner.redis else { return };
        if let Err(error) = publish_batch(&redis.pool, &batch).await {
            tracing::warn!(%error, count = batch.len(), "publishing to Redis failed; will retry");
            inner.keep_unsent(batch);
        }
    }
}

async fn publish_batch(
    pool: &bb8::Pool<RedisConnectionManager>,
    batch: &[(UnsentKey, Pending)],
) -> anyhow::Result<()> {
    // Generous for big batches (an event cancelled with thousands of bookings).
    let limit = REDIS_TIMEOUT + Duration::from_millis(batch.len() as u64 / 10);
    tokio::time::timeout(limit, async {
        let mut pipe = redis::pipe();
        for (_, pending) in batch {
            pipe.cmd("PUBLISH")
                .arg(&pending.channel)
                .arg(&pending.payload)
                .ignore();
        }
        let mut conn = pool.get().await?;
        pipe.query_async::<()>(&mut *conn).await?;
        anyhow::Ok(())
    })
    .await
    .map_err(|_| anyhow::anyhow!("timed out"))?
}

impl Inner {
    fn set_subscription(&self, state: Subscription) {
        if let Some(redis) = &self.redis {
            *lock(&redis.subscription) = state;
        }
    }

    fn deliver_local(&self, update: &Update) {
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

    /// Keeps messages Redis refused, the newest per topic or booking, and makes sure a retry
    /// loop is running. Without this, a failed PUBLISH while the other instances' subscriptions
    /// stay up would leave their subscribers stale until the next change.
    fn keep_unsent(self: &Arc<Self>, batch: Vec<(UnsentKey, Pending)>) {
        let Some(redis) = &self.redis else { return };
        let start = {
            let mut unsent = lock(&redis.unsent);
            for (key, pending) in batch {
                match unsent.entries.get(&key) {
                    Some(kept) if kept.rank >= pending.rank => {}
                    None if unsent.entries.len() >= MAX_UNSENT => {
                        tracing::warn!("too many unsent updates; dropping one");
                    }
                    _ => {
                        unsent.entries.insert(key, pending);
                    }
                }
            }
            !std::mem::replace(&mut unsent.retrying, true)
        };
        if start {
            tokio::spawn(retry_unsent(Arc::downgrade(self)));
        }
    }
}

async fn retry_unsent(bus: Weak<Inner>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        tokio::time::sleep(backoff).await;
        let Some(inner) = bus.upgrade() else { return };
        let Some(redis) = &inner.redis else { return };
        let batch: Vec<(UnsentKey, Pending)> = std::mem::take(&mut lock(&redis.unsent).entries)
            .into_iter()
            .collect();
        match publish_batch(&redis.pool, &batch).await {
            Ok(()) => {
                tracing::info!(
                    count = batch.len(),
                    "republished updates Redis refused earlier"
                );
                backoff = Duration::from_millis(200);
            }
            Err(error) => {
                tracing::debug!(%error, "republishing failed");
                let mut unsent = lock(&redis.unsent);
                for (key, pending) in batch {
                    // A newer message kept meanwhile wins.
                    unsent.entries.entry(key).or_insert(pending);
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        let mut unsent = lock(&redis.unsent);
        if unsent.entries.is_empty() {
            unsent.retrying = false;
            return;
        }
    }
}

/// Listens on Redis for every instance's messages, reconnecting with capped backoff. After
/// every (re)subscription, local subscribers get their state again from the database, since
/// messages published while the subscription was down are gone.
async fn listen(
    client: redis::Client,
    patterns: Vec<String>,
    heartbeat: Heartbeat,
    bus: Weak<Inner>,
) {
    let mut backoff = Duration::from_millis(100);
    // Subscribers may attach before the first subscription is up.
    let mut lost_at = Utc::now();
    loop {
        let why = match subscribe(&client, &patterns, heartbeat.timeout).await {
            Ok(pubsub) => {
                tracing::info!("listening for live updates on Redis");
                backoff = Duration::from_millis(100);
                let Some(inner) = bus.upgrade() else { return };
                inner.set_subscription(Subscription::Up);
                inner.generation.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(resync::resync_local(inner, lost_at - RESYNC_MARGIN));
                let Some((why, last_heard)) = follow(pubsub, heartbeat, &bus).await else {
                    return;
                };
                lost_at = last_heard;
                why
            }
            Err(why) => why,
        };
        tracing::warn!(why, "Redis subscription down; reconnecting");
        let Some(inner) = bus.upgrade() else { return };
        inner.set_subscription(Subscription::Down(why));
        drop(inner);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A new pattern subscription, or why there is none. A connection that Redis does not answer
/// is given up after `timeout`, like a PING.
async fn subscribe(
    client: &redis::Client,
    patterns: &[String],
    timeout: Duration,
) -> Result<redis::aio::PubSub, String> {
    let attempt = async {
        let mut pubsub = client.get_async_pubsub().await.map_err(|error| {
            tracing::warn!(%error, "connecting to Redis for live updates failed");
            "cannot connect".to_owned()
        })?;
        pubsub.psubscribe(patterns).await.map_err(|error| {
            tracing::warn!(%error, "subscribing on Redis failed");
            "was refused".to_owned()
        })?;
        Ok(pubsub)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "could not be set up within {} ms",
                timeout.as_millis()
            ))
        })
}

/// Delivers the subscription's messages until it fails, checking it with PING meanwhile.
/// Returns why it failed and when Redis was last heard from (every message sent before then
/// arrived), or `None` once the bus is gone.
async fn follow(
    pubsub: redis::aio::PubSub,
    heartbeat: Heartbeat,
    bus: &Weak<Inner>,
) -> Option<(String, DateTime<Utc>)> {
    let (mut sink, mut messages) = pubsub.split();
    let last_heard = AtomicI64::new(Utc::now().timestamp_millis());
    let pings = async {
        let mut ticks = tokio::time::interval(heartbeat.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let sent = Utc::now();
            // In subscribed mode Redis answers `["pong", ""]`, not `PONG`.
            match tokio::time::timeout(heartbeat.timeout, sink.ping::<redis::Value>()).await {
                Ok(Ok(_)) => last_heard.store(sent.timestamp_millis(), Ordering::Relaxed),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "PING on the Redis subscription failed");
                    return "failed a PING".to_owned();
                }
                Err(_) => {
                    return format!(
                        "did not answer PING within {} ms",
                        heartbeat.timeout.as_millis()
                    );
                }
            }
        }
    };
    let delivery = async {
        while let Some(message) = messages.next().await {
            let inner = bus.upgrade()?;
            match serde_json::from_slice::<Envelope>(message.get_payload_bytes()) {
                Ok(envelope) if envelope.origin == inner.origin => {}
                Ok(envelope) => inner.deliver_local(&envelope.update.into()),
                Err(error) => tracing::warn!(%error, "ignoring a malformed update"),
            }
        }
        Some("was closed".to_owned())
    };
    let why = tokio::select! {
        why = pings => why,
        why = delivery => why?,
    };
    let last_heard = DateTime::from_timestamp_millis(last_heard.load(Ordering::Relaxed))
        .unwrap_or_else(Utc::now);
    Some((why, last_heard))
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
            Err(BroadcastStreamRecvError::Lagged(missed)) => Some(Err(Missed(missed))),
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
    use super::*;

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

    #[test]
    fn a_seat_map_update_round_trips_on_the_wire() {
        use crate::db::models::SeatState;
        let update = SeatMapUpdate {
            event_id: Uuid::new_v4(),
            previous_version: Some(3),
            version: 4,
            seats: vec![EventSeat {
                seat_id: Uuid::new_v4(),
                section: "A".into(),
                row_label: "1".into(),
                number: 7,
                state: SeatState::Held,
            }],
        };
        let text = serde_json::to_string(&EnvelopeRef {
            origin: Uuid::new_v4(),
            update: WireRef::SeatMap(&update),
        })
        .unwrap();
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert!(matches!(back.update, Wire::SeatMap(got) if got == update));
    }

    #[test]
    fn the_wire_format_round_trips() {
        let update = SeatUpdate {
            event_id: Uuid::new_v4(),
            capacity: 10,
            seats_available: 4,
            seats_held: 0,
            version: 7,
        };
        let origin = Uuid::new_v4();
        let text = serde_json::to_string(&EnvelopeRef {
            origin,
            update: WireRef::Seats(&update),
        })
        .unwrap();
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert_eq!(back.origin, origin);
        assert!(matches!(back.update, Wire::Seats(seats) if seats == update));
    }
}
