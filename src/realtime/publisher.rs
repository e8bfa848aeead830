//! Sending this instance's messages to the others: one task drains an outbox and PUBLISHes
//! what piled up in one pipelined round trip, so a busy instance does not spend a task and a
//! pooled connection per commit. Messages Redis refused are kept (the newest per topic or
//! booking, up to `MAX_UNSENT`) and republished with capped backoff: without that, a failed
//! PUBLISH while the other instances' subscriptions stay up would leave their subscribers
//! stale until the next change.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bb8_redis::RedisConnectionManager;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::topics::{UnsentKey, Update};
use super::{Inner, MAX_BACKOFF, REDIS_TIMEOUT, RedisBus, lock, wire};

/// The most messages sent to Redis in one pipelined round trip.
const MAX_PIPELINE: usize = 1024;
/// Messages kept for republishing while Redis refuses them (the newest per topic or booking).
const MAX_UNSENT: usize = 10_000;

/// A message ready for Redis.
pub(super) struct Pending {
    channel: String,
    payload: String,
    rank: i64,
}

#[derive(Default)]
pub(super) struct Unsent {
    entries: HashMap<UnsentKey, Pending>,
    retrying: bool,
}

/// What the outbox carries: messages of one commit, with what each replaces.
pub(super) type Batch = Vec<(UnsentKey, Pending)>;

impl RedisBus {
    /// Hands one commit's messages to the publishing task.
    pub(super) fn queue(&self, origin: Uuid, updates: &[Update]) {
        let sent_at_us = Some(chrono::Utc::now().timestamp_micros());
        let batch: Batch = updates
            .iter()
            .filter_map(|update| {
                let payload = wire::encode_sent(origin, update, sent_at_us)
                    .inspect_err(|error| tracing::error!(%error, "cannot serialize an update"))
                    .ok()?;
                let (key, rank) = update.order();
                let channel = update.topic().channel(&self.prefix);
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
        let _ = self.outbox.send(batch);
    }
}

/// Sends queued messages in order, as many per round trip as have piled up meanwhile.
pub(super) async fn send_queued(mut queued: mpsc::UnboundedReceiver<Batch>, bus: Weak<Inner>) {
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

/// Sends messages to Redis in one pipeline.
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
    /// Keeps messages Redis refused, the newest per topic or booking, and makes sure a retry
    /// loop is running. Without this, a failed PUBLISH while the other instances' subscriptions
    /// stay up would leave their subscribers stale until the next change.
    fn keep_unsent(self: &Arc<Self>, batch: Batch) {
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
        let batch: Batch = std::mem::take(&mut lock(&redis.unsent).entries)
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
