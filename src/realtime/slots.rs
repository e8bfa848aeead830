//! Connection slots shared by every instance: how many WebSockets a user holds across the
//! deployment. Each signed-in connection holds a lease in a Redis sorted set per user (member:
//! the connection's id, score: when the lease runs out); leases are renewed while the
//! connection lives and given back when it ends, so an instance that dies frees its slots
//! when their leases run out. Without Redis, each instance counts only its own connections.

use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use super::{Bus, REDIS_TIMEOUT};

/// Drops expired leases, then takes one if fewer than the maximum are held.
const CLAIM: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
";

impl Bus {
    fn slots_key(&self, user: Uuid) -> Option<String> {
        let redis = self.inner.redis.as_ref()?;
        // The hash tag keeps a user's slots on one cluster slot, whatever else is added later.
        Some(format!("{}{{ws-connections:{user}}}", redis.prefix))
    }

    /// Takes one of the user's `max` connection slots for `lease`. `None` when Redis cannot
    /// say (not configured or unavailable): the caller then relies on its own count.
    pub async fn claim_connection_slot(
        &self,
        user: Uuid,
        connection: Uuid,
        max: usize,
        lease: Duration,
    ) -> Option<bool> {
        let key = self.slots_key(user)?;
        let commands = &self.inner.redis.as_ref()?.commands;
        let now = Utc::now().timestamp_millis();
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        let claimed = tokio::time::timeout(REDIS_TIMEOUT, async {
            let mut conn = commands.get().await?;
            let taken: i64 = redis::Script::new(CLAIM)
                .key(&key)
                .arg(now)
                .arg(max)
                .arg(now + lease_ms)
                .arg(connection.to_string())
                .arg(lease_ms)
                .invoke_async(&mut conn)
                .await?;
            anyhow::Ok(taken == 1)
        })
        .await;
        match claimed {
            Ok(Ok(taken)) => Some(taken),
            Ok(Err(error)) => {
                tracing::debug!(%error, "cannot count connections in Redis; counting locally");
                None
            }
            Err(_) => None,
        }
    }

    /// Extends a slot's lease; done while the connection lives.
    pub fn renew_connection_slot(&self, user: Uuid, connection: Uuid, lease: Duration) {
        self.slot_command(user, move |key| {
            let until = Utc::now().timestamp_millis()
                + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
            let mut pipe = redis::pipe();
            pipe.cmd("ZADD")
                .arg(&key)
                .arg("XX")
                .arg(until)
                .arg(connection.to_string())
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2))
                .ignore();
            pipe
        });
    }

    /// Gives a slot back when its connection ends.
    pub fn release_connection_slot(&self, user: Uuid, connection: Uuid) {
        self.slot_command(user, move |key| {
            let mut pipe = redis::pipe();
            pipe.cmd("ZREM")
                .arg(key)
                .arg(connection.to_string())
                .ignore();
            pipe
        });
    }

    /// Runs a slot update in the background: a failure only means the lease runs out on its own.
    fn slot_command(&self, user: Uuid, command: impl FnOnce(String) -> redis::Pipeline) {
        let (Some(key), Some(redis)) = (self.slots_key(user), self.inner.redis.as_ref()) else {
            return;
        };
        let pipe = command(key);
        let commands = redis.commands.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REDIS_TIMEOUT, async {
                let mut conn = commands.get().await?;
                pipe.query_async::<()>(&mut conn).await?;
                anyhow::Ok(())
            })
            .await;
        });
    }
}
