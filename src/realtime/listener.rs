//! Hearing the other instances: ONE pattern subscription per process on a dedicated Redis
//! connection, whose messages feed the local channels (a process skips its own). After every
//! (re)subscription the topics with local subscribers are caught up from the database
//! (`resync`), since messages published while it was down are gone.
//!
//! A subscription can die without a word: a half-open TCP connection (a NAT or load balancer
//! dropped it, Redis hangs) delivers nothing and reports no error. So the listener sends PING
//! on it every `Heartbeat::interval`; an answer not back within `Heartbeat::timeout` (behind
//! whatever messages came first, on the same connection) ends the subscription as if it had
//! closed. Until a new one is up, `Bus::redis_health` says why, for `/readyz`.

use std::sync::Weak;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;

use super::resync::{self, RESYNC_MARGIN};
use super::{Bus, Inner, MAX_BACKOFF, REDIS_TIMEOUT, lock, wire};

/// What `/readyz` says about Redis.
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
pub(super) enum Subscription {
    /// The first subscription since start-up is being set up.
    Starting,
    Up,
    /// Lost, or never came up: why, until a new one is up.
    Down(String),
}

impl Bus {
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
}

impl Inner {
    fn set_subscription(&self, state: Subscription) {
        if let Some(redis) = &self.redis {
            *lock(&redis.subscription) = state;
        }
    }
}

/// Listens on Redis for every instance's messages, reconnecting with capped backoff. After
/// every (re)subscription, local subscribers get their state again from the database, since
/// messages published while the subscription was down are gone.
pub(super) async fn listen(
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
            match wire::decode(message.get_payload_bytes()) {
                Ok((origin, _, _)) if origin == inner.origin => {}
                Ok((_, update, sent_at_us)) => {
                    crate::telemetry::metrics::record_bus_lag(sent_at_us);
                    inner.deliver_local(&update);
                }
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
