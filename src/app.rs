//! The application state handed to every handler and resolver, and the one seam where what
//! the domain committed is announced ([`App::commit`], through [`announce`]).

mod announce;

use std::ops::Deref;
use std::sync::Arc;

use crate::config::Config;
use crate::db::{self, DbConn, DbPool};
use crate::domain::auth::{Passwords, Tokens};
use crate::domain::changes::Committed;
use crate::domain::group_commit::BookingQueue;
use crate::error::AppResult;
use crate::realtime::{Bus, Heartbeat};
use crate::security::SharedRedis;
use crate::security::persisted::{PersistedQueries, load_allowlist};
use crate::security::rate_limit::RateLimiter;

pub struct App {
    pub config: Config,
    pub db: DbPool,
    pub bus: Bus,
    pub passwords: Passwords,
    pub tokens: Tokens,
    pub onsale: BookingQueue,
    pub rate_limiter: RateLimiter,
    pub persisted_queries: PersistedQueries,
    /// The payment providers orders go through.
    pub payments: crate::payments::Providers,
    /// The process's metrics recorder, which `/metrics` renders (see `telemetry::metrics`).
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

impl App {
    /// Connects to PostgreSQL (failing fast when it cannot) and sets up the bus: Redis pub/sub
    /// when `REDIS_URL` is set, otherwise an in-process bus for a single instance. Redis is set
    /// up here once: one pool for the bus and the shared security state, and the same client
    /// opens the bus's dedicated subscription connection.
    pub async fn build(config: Config) -> anyhow::Result<AppState> {
        /// Pooled Redis connections: the bus's eight and the security state's sixteen of when
        /// each had a pool of its own.
        const REDIS_POOL_SIZE: u32 = 24;
        let db = db::build_pool(&config.database_url, config.database_pool_size).await?;
        let (bus, shared) = match &config.redis_url {
            Some(url) => {
                let client = redis::Client::open(url.as_str())?;
                let pool = bb8::Pool::builder()
                    .max_size(REDIS_POOL_SIZE)
                    .connection_timeout(config.redis_connect_timeout)
                    .build_unchecked(bb8_redis::RedisConnectionManager::new(
                        client.get_connection_info().clone(),
                    )?);
                let heartbeat = Heartbeat {
                    interval: config.redis_ping_interval,
                    timeout: config.redis_ping_timeout,
                };
                let bus = Bus::with_redis(
                    client,
                    pool.clone(),
                    &config.redis_prefix,
                    heartbeat,
                    db.clone(),
                );
                (bus, SharedRedis::new(pool, &config.redis_prefix))
            }
            None => {
                tracing::info!(
                    "REDIS_URL is not set: using the in-process bus (single instance only)"
                );
                (Bus::in_process(), SharedRedis::none())
            }
        };
        let allowlist = match &config.graphql.persisted_query_allowlist {
            Some(path) => Some(load_allowlist(path)?),
            None => None,
        };
        let state = AppState(Arc::new(App {
            metrics: crate::telemetry::metrics::handle(),
            payments: crate::payments::Providers::new(config.stripe.as_ref().map(|stripe| {
                std::sync::Arc::new(crate::payments::stripe::StripeClient::new(
                    &stripe.api_base,
                    stripe.secret_key.expose(),
                )) as std::sync::Arc<dyn crate::payments::PaymentProvider>
            })),
            passwords: Passwords::new(config.password_hashing)?,
            tokens: Tokens::new(&config),
            onsale: BookingQueue::new(
                db.clone(),
                bus.clone(),
                config.group_commit,
                config.database_pool_size,
            ),
            rate_limiter: RateLimiter::new(shared.clone()),
            persisted_queries: PersistedQueries::new(
                shared,
                config.graphql.automatic_persisted_queries,
                config.graphql.max_document_bytes,
                allowlist,
            ),
            config,
            db,
            bus,
        }));
        crate::sweeper::spawn(&state);
        Ok(state)
    }

    /// Announces what a domain write committed, and returns its value: the event's seat
    /// counts (and, when its details changed, the event itself) to its watchers, each booking,
    /// hold and waiting-list entry to its owner's `myBookingUpdates`, and changed seats to the
    /// event's seat map. The booking queue's sold-out hint is told what the event now is. The
    /// only caller of the bus's publish (with the queue's own announcements, which take the same
    /// path in [`announce`]).
    pub fn commit<T>(&self, committed: Committed<T>) -> T {
        let Committed { value, changes } = committed;
        if let Some(event) = &changes.event {
            self.onsale.observe(event);
        }
        announce::publish(&self.bus, changes);
        value
    }

    /// A pooled connection, owned so it can be held across awaits in resolvers.
    pub async fn conn(&self) -> AppResult<DbConn> {
        Ok(self.db.get_owned().await?)
    }
}
