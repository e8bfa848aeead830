//! The bus that carries committed changes to subscribers: seat counts, event details, seat
//! maps and each user's bookings, holds and waiting-list entries.
//!
//! Publishing delivers to local subscribers at once (`local`) and, with Redis configured, to
//! every other process through Redis pub/sub (`publisher`), where ONE connection per process
//! holds the pattern subscriptions that feed the same local channels (`listener`). On a Redis
//! Cluster, pub/sub is sharded instead (`SPUBLISH`/`SSUBSCRIBE`: each channel lives on the shard
//! owning its slot), which has no patterns, so an instance subscribes to exactly the channels
//! of the topics it has local subscribers for (`sharded`). What travels is in `topics`; how it
//! looks on Redis, in `wire`.
//!
//! Nothing here is the truth: messages carry the event's `version` (or, for bookings, a status
//! that only moves forward), so duplicates and reordering are harmless, and whenever messages
//! may have been missed (the Redis subscription was lost), every topic with local subscribers
//! is re-read from PostgreSQL and pushed again (`resync`).
//!
//! The bus knows rows (`db::models`) and the database, never the domain: what a commit
//! announces is decided by its caller, which hands the bus ready `Update`s.

mod listener;
mod local;
mod publisher;
mod resync;
mod sharded;
mod slots;
mod topics;
mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

pub use listener::{Heartbeat, RedisHealth};
pub use local::{Missed, Updates};
pub use resync::{RESYNC_MARGIN, reservation_changes_since};
pub use topics::{
    OrderUpdate, SeatMapUpdate, SeatUpdate, Topic, Update, booking_rank, hold_rank, waitlist_rank,
};

use crate::db::DbPool;
use crate::redis_conn::RedisCommands;
use listener::Subscription;
use publisher::Unsent;

/// How long a command on the bus's pooled connections may take (a PUBLISH round trip, a PING
/// for `/readyz`, a connection slot) before Redis counts as not answering.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest wait between attempts to resubscribe or to republish.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

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

/// The Redis side of a bus shared by several instances.
struct RedisBus {
    commands: RedisCommands,
    prefix: String,
    subscription: Mutex<Subscription>,
    /// Where subscribers' state is re-read after the subscription was lost.
    db: DbPool,
    unsent: Mutex<Unsent>,
    /// Messages for the one task that publishes them, so that a busy instance sends many in
    /// each round trip instead of a task and a pooled connection per commit.
    outbox: mpsc::UnboundedSender<publisher::Batch>,
    /// On a cluster: tells the sharded listener that a topic got its first local subscriber or
    /// lost its last one, so that it subscribes or unsubscribes its channel.
    topics_changed: Option<mpsc::UnboundedSender<Topic>>,
}

/// Where an instance hears the others: one Redis server (a pattern subscription on a
/// connection of its own), or a Redis Cluster, given by seed nodes (sharded subscriptions).
pub enum RedisSubscriber {
    Server(redis::Client),
    Cluster(Vec<String>),
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

    /// A bus shared by every instance using the same Redis and key prefix: `commands` carries
    /// its commands, and `subscriber` says how it hears the others (on connections of its
    /// own). Start-up does not wait for Redis: if it is down, bookings go on and the listener
    /// keeps reconnecting. `db` is where subscribers' state is re-read after the subscription
    /// was lost.
    pub fn with_redis(
        subscriber: RedisSubscriber,
        commands: RedisCommands,
        key_prefix: &str,
        heartbeat: Heartbeat,
        db: DbPool,
    ) -> Self {
        let (outbox, queued) = mpsc::unbounded_channel();
        let (topics_changed, changed) = mpsc::unbounded_channel();
        let cluster = matches!(subscriber, RedisSubscriber::Cluster(_));
        let inner = Arc::new(Inner {
            origin: Uuid::new_v4(),
            generation: AtomicU64::new(0),
            channels: Mutex::default(),
            redis: Some(RedisBus {
                commands,
                prefix: key_prefix.to_owned(),
                subscription: Mutex::new(Subscription::Starting),
                db,
                unsent: Mutex::default(),
                outbox,
                topics_changed: cluster.then_some(topics_changed),
            }),
        });
        tokio::spawn(publisher::send_queued(queued, Arc::downgrade(&inner)));
        match subscriber {
            RedisSubscriber::Cluster(seeds) => {
                tokio::spawn(sharded::listen(
                    seeds,
                    changed,
                    heartbeat,
                    Arc::downgrade(&inner),
                ));
            }
            RedisSubscriber::Server(client) => {
                let patterns = ["seats", "events", "user-bookings", "seat-maps", "orders"]
                    .map(|kind| format!("{key_prefix}{kind}:*"))
                    .to_vec();
                tokio::spawn(listener::listen(
                    client,
                    patterns,
                    heartbeat,
                    Arc::downgrade(&inner),
                ));
            }
        }
        Self { inner }
    }

    /// The Redis pool's connections and waits, for `/metrics`; `None` without Redis or on a
    /// Redis Cluster (one multiplexed cluster connection, no pool).
    pub fn redis_pool_state(&self) -> Option<bb8::State> {
        match &self.inner.redis.as_ref()?.commands {
            crate::redis_conn::RedisCommands::Single(pool) => Some(pool.state()),
            crate::redis_conn::RedisCommands::Cluster(_) => None,
        }
    }

    /// Moves on with every seat or event update this process hears of (see `Inner`).
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Relaxed)
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
        let _span = tracing::debug_span!("bus.publish", updates = updates.len()).entered();
        for update in &updates {
            self.inner.deliver_local(update);
        }
        let Some(redis) = &self.inner.redis else {
            return;
        };
        redis.queue(self.inner.origin, &updates);
    }
}
