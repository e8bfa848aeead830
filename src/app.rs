//! The application state handed to every handler and resolver.

use std::ops::Deref;
use std::sync::Arc;

use crate::config::Config;
use crate::db::{self, DbConn, DbPool};
use crate::domain::auth::{Passwords, Tokens};
use crate::domain::inventory::Changes;
use crate::domain::onsale::Onsale;
use crate::error::AppResult;
use crate::realtime::{Bus, Heartbeat, SeatMapUpdate, SeatUpdate, Update};
use crate::security::SharedRedis;
use crate::security::persisted::{PersistedQueries, load_allowlist};
use crate::security::rate_limit::RateLimiter;

pub struct App {
    pub config: Config,
    pub db: DbPool,
    pub bus: Bus,
    pub passwords: Passwords,
    pub tokens: Tokens,
    pub onsale: Onsale,
    pub rate_limiter: RateLimiter,
    pub persisted_queries: PersistedQueries,
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
            passwords: Passwords::new(config.password_hashing)?,
            tokens: Tokens::new(&config),
            onsale: Onsale::new(
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

    /// Announces what a committed transaction changed: the event's seat counts (and, when
    /// `details` changed, the event itself) to its watchers, and each booking, hold and
    /// waiting-list entry to its owner's `myBookingUpdates`.
    pub fn publish(&self, changes: Changes, details: bool) {
        if let Some(event) = &changes.event {
            self.onsale.observe(event);
        }
        self.bus.publish_all(announcements(changes, details));
    }

    /// A pooled connection, owned so it can be held across awaits in resolvers.
    pub async fn conn(&self) -> AppResult<DbConn> {
        Ok(self.db.get_owned().await?)
    }
}

/// What a committed transaction changed, as the bus's messages: the event's seat counts (and,
/// when `details` changed, the event itself) to its watchers, and each booking, hold and
/// waiting-list entry to its owner's `myBookingUpdates`, and the seats whose state changed to
/// the event's `seatMap` (seat changes always come with the event's new version).
pub fn announcements(changes: Changes, details: bool) -> Vec<Update> {
    let mut updates = Vec::with_capacity(
        3 + changes.bookings.len() + changes.holds.len() + changes.waitlist.len(),
    );
    if let Some(event) = changes.event {
        if !changes.seats.is_empty() {
            updates.push(Update::SeatMap(Arc::new(SeatMapUpdate {
                event_id: event.id,
                previous_version: changes.previous_version,
                version: event.version,
                seats: changes.seats,
            })));
        }
        updates.push(Update::Seats(SeatUpdate::from(&event)));
        if details {
            updates.push(Update::Event(Arc::new(event)));
        }
    }
    updates.extend(
        changes
            .bookings
            .into_iter()
            .map(|b| Update::Booking(Arc::new(b))),
    );
    updates.extend(changes.holds.into_iter().map(|h| Update::Hold(Arc::new(h))));
    updates.extend(
        changes
            .waitlist
            .into_iter()
            .map(|w| Update::Waitlist(Arc::new(w))),
    );
    updates
}
