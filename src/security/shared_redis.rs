//! Redis for state that instances share but can do without: rate-limit windows and persisted
//! queries. It uses the application's one way to Redis (built in `App::build`, with the bus:
//! a pool for one server, the cluster connection for a Redis Cluster), under its own, shorter
//! deadline: a request never waits long on Redis.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::redis_conn::{RedisCommands, RedisConn};

/// A Redis command slower than this (taking a pooled connection included) is treated as Redis
/// being down.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// After a failure, Redis is left alone this long, so an outage costs one timeout, not one per request.
const COOL_OFF: Duration = Duration::from_secs(5);

/// Redis for state shared by instances (rate-limit windows, persisted queries), which the
/// caller can always do without: every call returns `None` when Redis is not configured,
/// failing, or cooling off after a failure, and the caller falls back to in-process state.
#[derive(Clone)]
pub struct SharedRedis {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    commands: RedisCommands,
    prefix: String,
    /// Unix milliseconds before which Redis is not tried again.
    down_until: AtomicI64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl SharedRedis {
    pub fn none() -> Self {
        Self { inner: None }
    }

    /// Shared state in Redis through `commands`, under the key prefix `prefix`.
    pub fn new(commands: RedisCommands, prefix: &str) -> Self {
        Self {
            inner: Some(Arc::new(Inner {
                commands,
                prefix: prefix.to_owned(),
                down_until: AtomicI64::new(0),
            })),
        }
    }

    /// The full Redis key for `name`, under the configured prefix.
    pub fn key(&self, name: &str) -> String {
        match &self.inner {
            Some(inner) => format!("{}{name}", inner.prefix),
            None => name.to_owned(),
        }
    }

    /// The full Redis key for `name` of `owner` (a client or a user), with `owner` and `name`
    /// as its hash tag (`prefix{name:owner}`): on a Redis Cluster, every key one owner's
    /// state may ever need in one script or transaction lands on one slot, while different
    /// owners spread over the shards.
    pub fn tagged_key(&self, name: &str, owner: &str) -> String {
        let prefix = self
            .inner
            .as_ref()
            .map_or("", |inner| inner.prefix.as_str());
        format!("{prefix}{{{name}:{owner}}}")
    }

    pub async fn run<T, F, Fut>(&self, command: F) -> Option<T>
    where
        F: FnOnce(RedisConn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let inner = self.inner.as_ref()?;
        if now_ms() < inner.down_until.load(Ordering::Relaxed) {
            return None;
        }
        let outcome = tokio::time::timeout(REDIS_TIMEOUT, async {
            let conn = inner.commands.get().await.map_err(|e| e.to_string())?;
            command(conn).await.map_err(|e| e.to_string())
        })
        .await;
        match outcome {
            Ok(Ok(value)) => Some(value),
            failure => {
                let error = match failure {
                    Ok(Err(error)) => error,
                    _ => "timed out".to_owned(),
                };
                let until = now_ms() + COOL_OFF.as_millis() as i64;
                if inner.down_until.swap(until, Ordering::Relaxed) < now_ms() {
                    tracing::warn!(%error, "Redis unavailable: using in-process security state");
                }
                None
            }
        }
    }
}
