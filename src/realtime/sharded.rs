//! Hearing the other instances on a Redis Cluster, with sharded pub/sub: each channel lives on
//! the shard that owns its slot, so a message is sent (`SPUBLISH`) to one shard and heard only
//! by the instances subscribed there (`SSUBSCRIBE`), instead of being copied to every node of
//! the cluster. Sharded pub/sub has no patterns, so this instance subscribes to exactly the
//! channels of the topics it has local subscribers for: the bus tells this task when a topic
//! gets its first subscriber or loses its last (`Inner::topic_changed`), and the task
//! subscribes or unsubscribes that one channel.
//!
//! The connection is the `redis` crate's cluster connection over RESP3, where messages arrive
//! as push messages on the same connections that carry commands; it reaches every master,
//! routes each `SSUBSCRIBE` to the channel's shard and follows a failover itself. What it
//! cannot do is tell that messages were missed, which is this task's job:
//!
//! - a channel subscribed for a new topic is caught up from PostgreSQL once the shard
//!   confirms it (a change committed between the subscriber reading its state and the
//!   subscription being confirmed was published to no one here);
//! - a connection to a shard that drops (the crate reports a `Disconnection`), a shard that
//!   unsubscribes us by itself (a failover or resharding moved the channel's slot: Redis sends
//!   `sunsubscribe`), a PING to the masters that goes unanswered (a half-open connection,
//!   checked every `Heartbeat::interval`), or a slot range whose master changed since the
//!   subscriptions were set up (seen at the same check: the crate moves subscriptions to a
//!   promoted replica silently) count as the subscription lost, as in `listener`:
//!   `/readyz` says why until every channel is subscribed again on its (possibly new) shard,
//!   and then every topic with local subscribers is re-read from PostgreSQL.

use std::collections::HashMap;
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use redis::cluster_async::ClusterConnection;
use redis::{ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::listener::{Heartbeat, Subscription};
use super::resync::{self, RESYNC_MARGIN};
use super::topics::Topic;
use super::{Inner, MAX_BACKOFF, lock, wire};

/// How far back a topic that just got its first subscriber here is caught up on a user's
/// bookings: the changes that may have fallen between the subscriber's start and the shard's
/// confirmation, with room for clock skew, and not much older ones the client already knows.
const NEW_TOPIC_MARGIN: TimeDelta = TimeDelta::seconds(2);

struct Sharded {
    bus: Weak<Inner>,
    prefix: String,
    client: redis::cluster::ClusterClient,
    conn: Option<ClusterConnection>,
    /// Channels subscribed on their shards, and their topics.
    subscribed: HashMap<String, Topic>,
    /// Which master served which slots when the subscriptions were last set up. The crate
    /// moves subscriptions to a promoted replica by itself, without a word, and messages sent
    /// meanwhile are lost: a change here counts as the subscriptions lost.
    masters: Option<Vec<(i64, i64, String)>>,
    /// While the subscriptions are (possibly) lost: since when messages may have been missed.
    lost_since: Option<DateTime<Utc>>,
    /// The last time every message sent before it was known to have arrived.
    last_heard: DateTime<Utc>,
    timeout: Duration,
    backoff: Duration,
}

/// Follows the topics with local subscribers on the cluster at `seeds` until the bus is gone.
pub(super) async fn listen(
    seeds: Vec<String>,
    mut changed: mpsc::UnboundedReceiver<Topic>,
    heartbeat: Heartbeat,
    bus: Weak<Inner>,
) {
    let Some(prefix) = bus
        .upgrade()
        .and_then(|inner| inner.redis.as_ref().map(|redis| redis.prefix.clone()))
    else {
        return;
    };
    let (push_sender, mut pushes) = mpsc::unbounded_channel::<PushInfo>();
    let client = redis::cluster::ClusterClientBuilder::new(seeds)
        .use_protocol(ProtocolVersion::RESP3)
        .push_sender(push_sender)
        .connection_timeout(heartbeat.timeout)
        .response_timeout(heartbeat.timeout)
        .build();
    let client = match client {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot use the Redis Cluster seed nodes for live updates");
            if let Some(inner) = bus.upgrade() {
                inner.set_subscription(Subscription::Down("has bad seed nodes".into()));
            }
            return;
        }
    };
    let mut listener = Sharded {
        bus,
        prefix,
        client,
        conn: None,
        subscribed: HashMap::new(),
        masters: None,
        // Subscribers may attach before the first subscriptions are up.
        lost_since: Some(Utc::now()),
        last_heard: Utc::now(),
        timeout: heartbeat.timeout,
        backoff: Duration::from_millis(100),
    };
    let mut ticks = tokio::time::interval(heartbeat.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retry_at = Instant::now();
    loop {
        let recovering = listener.lost_since.is_some();
        tokio::select! {
            topic = changed.recv(), if !recovering => {
                let Some(topic) = topic else { return };
                listener.reconcile(topic).await;
            }
            push = pushes.recv() => {
                let Some(push) = push else { return };
                listener.on_push(push);
            }
            _ = ticks.tick(), if !recovering => listener.check().await,
            () = tokio::time::sleep_until(retry_at), if recovering => {
                listener.recover().await;
                retry_at = Instant::now() + listener.backoff;
            }
        }
        if listener.bus.strong_count() == 0 {
            return;
        }
        if !recovering && listener.lost_since.is_some() {
            retry_at = Instant::now() + Duration::from_millis(100);
        }
    }
}

impl Sharded {
    /// Messages may have been missed from now on: says why until `recover` succeeds.
    fn lose(&mut self, why: String) {
        if self.lost_since.is_none() {
            tracing::warn!(why, "Redis Cluster subscription down; resubscribing");
            self.lost_since = Some(self.last_heard);
            self.backoff = Duration::from_millis(100);
        }
        if let Some(inner) = self.bus.upgrade() {
            inner.set_subscription(Subscription::Down(why));
        }
    }

    fn on_push(&mut self, push: PushInfo) {
        match push.kind {
            PushKind::SMessage => {
                let Some(Value::BulkString(payload)) = push.data.get(1) else {
                    return;
                };
                let Some(inner) = self.bus.upgrade() else {
                    return;
                };
                match wire::decode(payload) {
                    Ok((origin, _, _)) if origin == inner.origin => {}
                    Ok((_, update, sent_at_us)) => {
                        crate::telemetry::metrics::record_bus_lag(sent_at_us);
                        inner.deliver_local(&update);
                    }
                    Err(error) => tracing::warn!(%error, "ignoring a malformed update"),
                }
            }
            // We unsubscribe a channel only after forgetting it, so one still remembered was
            // dropped by its shard: its slot moved (a failover or a resharding).
            PushKind::SUnsubscribe => {
                let channel = match push.data.first() {
                    Some(Value::BulkString(channel)) => String::from_utf8_lossy(channel),
                    _ => return,
                };
                if self.subscribed.remove(channel.as_ref()).is_some() {
                    self.lose("was dropped by a shard (its slot moved)".into());
                }
            }
            PushKind::Disconnection => {
                self.lose("lost its connection to a shard".into());
            }
            _ => {}
        }
    }

    /// Subscribes `topic`'s channel if it has local subscribers and is not subscribed yet, and
    /// unsubscribes it if it has none left.
    async fn reconcile(&mut self, topic: Topic) {
        let Some(inner) = self.bus.upgrade() else {
            return;
        };
        let wanted = lock(&inner.channels).contains_key(&topic);
        let channel = topic.channel(&self.prefix);
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if wanted && !self.subscribed.contains_key(&channel) {
            let subscribed = tokio::time::timeout(self.timeout, conn.ssubscribe(&channel)).await;
            match subscribed {
                Ok(Ok(())) => {
                    self.subscribed.insert(channel, topic);
                    let since = Utc::now() - NEW_TOPIC_MARGIN;
                    tokio::spawn(resync::resync_topics(inner, vec![topic], since));
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "SSUBSCRIBE failed");
                    self.lose("was refused".into());
                }
                Err(_) => self.lose(format!(
                    "could not be set up within {} ms",
                    self.timeout.as_millis()
                )),
            }
        } else if !wanted && self.subscribed.remove(&channel).is_some() {
            // A failure leaves a stray subscription, whose messages find no local channel.
            let _ = tokio::time::timeout(self.timeout, conn.sunsubscribe(&channel)).await;
        }
    }

    /// PINGs every master over the connections that carry the subscriptions.
    async fn ping(&mut self) -> Result<(), String> {
        let Some(conn) = self.conn.as_mut() else {
            return Err("cannot connect".into());
        };
        let sent = Utc::now();
        let command = redis::cmd("PING");
        let ping = command.query_async::<Value>(conn);
        match tokio::time::timeout(self.timeout, ping).await {
            Ok(Ok(_)) => {
                self.last_heard = sent;
                Ok(())
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "PING on the Redis Cluster failed");
                Err("failed a PING".into())
            }
            Err(_) => Err(format!(
                "did not answer PING within {} ms",
                self.timeout.as_millis()
            )),
        }
    }

    async fn check(&mut self) {
        if let Err(why) = self.ping().await {
            self.lose(why);
            return;
        }
        let masters = self.masters().await;
        if masters.is_some() && self.masters.is_some() && masters != self.masters {
            self.lose("moved: a shard's master changed (a failover)".into());
        }
    }

    /// Each slot range and the address of its master, as a node of the cluster says; `None`
    /// when that cannot be told now.
    async fn masters(&mut self) -> Option<Vec<(i64, i64, String)>> {
        let conn = self.conn.as_mut()?;
        let command = redis::cmd("CLUSTER");
        let mut command = command;
        command.arg("SLOTS");
        let slots = tokio::time::timeout(self.timeout, command.query_async::<Value>(conn))
            .await
            .ok()?
            .ok()?;
        let Value::Array(ranges) = slots else {
            return None;
        };
        let mut masters: Vec<(i64, i64, String)> = ranges
            .iter()
            .filter_map(|range| {
                let Value::Array(fields) = range else {
                    return None;
                };
                let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(node))) =
                    (fields.first(), fields.get(1), fields.get(2))
                else {
                    return None;
                };
                let address = match (node.first(), node.get(1)) {
                    (Some(Value::BulkString(host)), Some(Value::Int(port))) => {
                        format!("{}:{port}", String::from_utf8_lossy(host))
                    }
                    _ => return None,
                };
                Some((*start, *end, address))
            })
            .collect();
        masters.sort();
        Some(masters)
    }

    /// Connects if needed, subscribes every topic with local subscribers on its shard, and
    /// then catches them all up from PostgreSQL; backs off when any of it fails.
    async fn recover(&mut self) {
        let Some(since) = self.lost_since else { return };
        match self.resubscribe().await {
            Ok(()) => {
                let Some(inner) = self.bus.upgrade() else {
                    return;
                };
                tracing::info!(
                    channels = self.subscribed.len(),
                    "listening for live updates on the Redis Cluster (sharded pub/sub)"
                );
                self.lost_since = None;
                self.backoff = Duration::from_millis(100);
                inner.set_subscription(Subscription::Up);
                inner.generation.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(resync::resync_local(inner, since - RESYNC_MARGIN));
            }
            Err(why) => {
                if let Some(inner) = self.bus.upgrade() {
                    inner.set_subscription(Subscription::Down(why));
                }
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    async fn resubscribe(&mut self) -> Result<(), String> {
        if self.conn.is_none() {
            let connect = self.client.get_async_connection();
            match tokio::time::timeout(self.timeout, connect).await {
                Ok(Ok(conn)) => self.conn = Some(conn),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "connecting to the Redis Cluster failed");
                    return Err("cannot connect".into());
                }
                Err(_) => return Err("cannot connect".into()),
            }
        }
        self.ping().await?;
        let Some(inner) = self.bus.upgrade() else {
            return Ok(());
        };
        let wanted: Vec<Topic> = lock(&inner.channels).keys().copied().collect();
        drop(inner);
        let conn = self.conn.clone().ok_or("cannot connect")?;
        let prefix = &self.prefix;
        // Every channel again, even those still remembered: SSUBSCRIBE is idempotent, and one
        // whose shard failed over is subscribed on the new master.
        let attempts = wanted.iter().map(|topic| {
            let mut conn = conn.clone();
            let channel = topic.channel(prefix);
            async move {
                let done = conn.ssubscribe(&channel).await;
                (channel, *topic, done)
            }
        });
        let outcomes =
            tokio::time::timeout(self.timeout, futures_util::future::join_all(attempts)).await;
        let Ok(outcomes) = outcomes else {
            return Err(format!(
                "could not be set up within {} ms",
                self.timeout.as_millis()
            ));
        };
        let mut subscribed = HashMap::new();
        for (channel, topic, done) in outcomes {
            if let Err(error) = done {
                tracing::warn!(%error, "SSUBSCRIBE failed");
                return Err("was refused".into());
            }
            subscribed.insert(channel, topic);
        }
        // Channels whose topics lost their last subscriber meanwhile.
        let mut conn = conn;
        for channel in self.subscribed.keys() {
            if !subscribed.contains_key(channel) {
                let _ = tokio::time::timeout(self.timeout, conn.sunsubscribe(channel)).await;
            }
        }
        self.subscribed = subscribed;
        self.masters = self.masters().await;
        Ok(())
    }
}
