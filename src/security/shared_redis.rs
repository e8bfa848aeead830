//! Redis for state that instances share but can do without: rate-limit windows and persisted
//! queries. It uses the application's one Redis pool (built in `App::build`, with the bus),
//! under its own, shorter deadline: a request never waits long on Redis.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bb8_redis::RedisConnectionManager;
use redis::aio::MultiplexedConnection;

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
    pool: bb8::Pool<RedisConnectionManager>,
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

    /// Shared state in Redis through `pool`, under the key prefix `prefix`.
    pub fn new(pool: bb8::Pool<RedisConnectionManager>, prefix: &str) -> Self {
        Self {
            inner: Some(Arc::new(Inner {
                pool,
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

    pub async fn run<T, F, Fut>(&self, command: F) -> Option<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let inner = self.inner.as_ref()?;
        if now_ms() < inner.down_until.load(Ordering::Relaxed) {
            return None;
        }
        let outcome = tokio::time::timeout(REDIS_TIMEOUT, async {
            let conn = inner.pool.get().await.map_err(|e| e.to_string())?;
            command(conn.clone()).await.map_err(|e| e.to_string())
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
