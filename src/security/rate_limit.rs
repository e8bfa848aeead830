//! Sliding-window rate limits shared by every instance through Redis, with an in-process
//! window per instance when Redis is not configured or not answering.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest,
};
use async_graphql::{Pos, Request, ServerResult};
use uuid::Uuid;

use super::SharedRedis;
use super::client::ClientIp;
use super::deadline::OverHttp;
use crate::app::AppState;
use crate::config::RateLimit;
use crate::error::AppError;
use crate::graphql::context::Caller;

/// A sorted set per key holds the times of the requests in the window (scored in
/// milliseconds by Redis's own clock, so instances need not agree on the time). Returns 0
/// when the request is admitted (and recorded), else the milliseconds until a slot frees.
const SLIDING_WINDOW: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, time[1] .. time[2] .. ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
";

/// Local windows are swept of idle keys once they number this many, at most once per
/// `LOCAL_SWEEP_EVERY`, so a flood from many addresses cannot make every check a full scan.
const LOCAL_SWEEP_AT: usize = 10_000;
const LOCAL_SWEEP_EVERY: Duration = Duration::from_secs(10);

/// What a limit counts: it names the Redis key and the error message.
#[derive(Debug, Clone, Copy)]
pub enum Bucket {
    Login,
    Register,
    /// Sign-in attempts (login and register) on one account, from any address.
    Account,
    Booking,
    Requests,
}

impl Bucket {
    fn name(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Register => "register",
            Self::Account => "account",
            Self::Booking => "booking",
            Self::Requests => "requests",
        }
    }
}

/// Refused: retry after this many whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after_secs: u64,
}

impl From<Limited> for AppError {
    fn from(limited: Limited) -> Self {
        AppError::RateLimited {
            retry_after_secs: limited.retry_after_secs,
        }
    }
}

#[derive(Clone)]
pub struct RateLimiter {
    redis: SharedRedis,
    script: Arc<redis::Script>,
    local: Arc<Mutex<LocalWindows>>,
}

struct LocalWindows {
    /// Per key: the window's length and the times of the requests in it.
    windows: HashMap<String, (Duration, VecDeque<Instant>)>,
    swept_at: Instant,
}

impl RateLimiter {
    pub fn new(redis: SharedRedis) -> Self {
        Self {
            redis,
            script: Arc::new(redis::Script::new(SLIDING_WINDOW)),
            local: Arc::new(Mutex::new(LocalWindows {
                windows: HashMap::new(),
                swept_at: Instant::now(),
            })),
        }
    }

    /// Counts one request by `client` against `limit`; `None` (a disabled limit) costs nothing.
    pub async fn check(
        &self,
        bucket: Bucket,
        limit: Option<RateLimit>,
        client: &str,
    ) -> Result<(), Limited> {
        let Some(limit) = limit else {
            return Ok(());
        };
        let key = self
            .redis
            .tagged_key(&format!("ratelimit:{}", bucket.name()), client);
        let window_ms = limit.window.as_millis() as u64;
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let script = self.script.clone();
        let shared = self
            .redis
            .run(|mut conn| {
                let key = key.clone();
                async move {
                    script
                        .key(key)
                        .arg(window_ms)
                        .arg(limit.max)
                        .arg(nonce)
                        .invoke_async::<u64>(&mut conn)
                        .await
                }
            })
            .await;
        let wait_ms = match shared {
            Some(wait_ms) => wait_ms,
            None => self.check_locally(key, limit),
        };
        if wait_ms == 0 {
            Ok(())
        } else {
            tracing::debug!(bucket = bucket.name(), client, wait_ms, "rate limited");
            metrics::counter!("evently_rate_limit_refusals_total", "bucket" => bucket.name())
                .increment(1);
            Err(Limited {
                retry_after_secs: wait_ms.div_ceil(1000).max(1),
            })
        }
    }

    fn check_locally(&self, key: String, limit: RateLimit) -> u64 {
        let now = Instant::now();
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        if local.windows.len() >= LOCAL_SWEEP_AT
            && now.duration_since(local.swept_at) >= LOCAL_SWEEP_EVERY
        {
            local.swept_at = now;
            local.windows.retain(|_, (length, times)| {
                times
                    .back()
                    .is_some_and(|last| now.duration_since(*last) < *length)
            });
        }
        let (length, times) = local
            .windows
            .entry(key)
            .or_insert_with(|| (limit.window, VecDeque::new()));
        *length = limit.window;
        while times
            .front()
            .is_some_and(|first| now.duration_since(*first) >= limit.window)
        {
            times.pop_front();
        }
        if times.len() < limit.max as usize {
            times.push_back(now);
            return 0;
        }
        let oldest = times.front().copied().unwrap_or(now);
        let wait = limit.window.saturating_sub(now.duration_since(oldest));
        (wait.as_millis() as u64).max(1)
    }
}

/// Charges each operation of a WebSocket connection to the request budget, as every HTTP
/// request is: a signed-in connection to its user's, an anonymous one to its address's. One
/// connection must not become an unmetered channel.
pub struct WebSocketBudget;

impl ExtensionFactory for WebSocketBudget {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(WebSocketBudget)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for WebSocketBudget {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        // HTTP requests are charged by the HTTP layer, which marks them.
        if let Some(app) = ctx.data_opt::<AppState>()
            && app.config.rate_limits.requests.is_some()
            && ctx.data_opt::<OverHttp>().is_none()
        {
            let limit = app.config.rate_limits.requests;
            let user = match ctx.data_opt::<Caller>() {
                Some(Caller::Connection(token)) => app.tokens.decode(token).ok(),
                _ => None,
            };
            // A signed-in connection is charged to its user, an anonymous one to its address.
            let client = budget_key(user.map(|claims| claims.sub), ctx.data_opt().copied());
            if let Some(client) = client
                && let Err(limited) = app
                    .rate_limiter
                    .check(Bucket::Requests, limit, &client)
                    .await
            {
                let error: async_graphql::Error = AppError::from(limited).into();
                return Err(error.into_server_error(Pos::default()));
            }
        }
        next.run(ctx, request).await
    }
}

/// Whose `RATE_LIMIT_REQUESTS` budget a request or operation spends: its user's when it is
/// signed in, else its address's (an IPv6 client's /64); `None` when neither is known.
pub fn budget_key(user: Option<Uuid>, client: Option<ClientIp>) -> Option<String> {
    match (user, client) {
        (Some(user), _) => Some(format!("user:{user}")),
        (None, Some(client)) => Some(client.rate_limit_key()),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_in_process_window_admits_up_to_the_limit_per_key() {
        let limiter = RateLimiter::new(SharedRedis::none());
        let limit = RateLimit::per(3, 60);
        for _ in 0..3 {
            limiter.check(Bucket::Login, limit, "ip:a").await.unwrap();
        }
        let refused = limiter
            .check(Bucket::Login, limit, "ip:a")
            .await
            .unwrap_err();
        assert!((1..=60).contains(&refused.retry_after_secs), "{refused:?}");
        // Other clients and other buckets have windows of their own; no limit, no window.
        limiter.check(Bucket::Login, limit, "ip:b").await.unwrap();
        limiter
            .check(Bucket::Register, limit, "ip:a")
            .await
            .unwrap();
        for _ in 0..100 {
            limiter.check(Bucket::Login, None, "ip:a").await.unwrap();
        }
    }
}
