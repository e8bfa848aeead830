//! The application state handed to every handler and resolver, and the one seam where what
//! the domain committed is announced ([`App::commit`], through [`announce`]).

mod announce;

use std::ops::Deref;
use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::db::replica::ReadReplica;
use crate::db::{self, DbConn, DbPool};
use crate::domain::auth::{Passwords, Tokens};
use crate::domain::changes::Committed;
use crate::domain::group_commit::BookingQueue;
use crate::domain::session_cache::SessionCache;
use crate::error::AppResult;
use crate::realtime::{Bus, Heartbeat, RedisSubscriber};
use crate::redis_conn::RedisCommands;
use crate::security::SharedRedis;
use crate::security::persisted::{PersistedQueries, load_allowlist};
use crate::security::rate_limit::RateLimiter;

pub struct App {
    pub config: Config,
    pub db: DbPool,
    /// Where browse reads may go (`DATABASE_REPLICA_URL`); see [`App::browse_conn`].
    pub replica: Option<Arc<ReadReplica>>,
    pub bus: Bus,
    pub passwords: Passwords,
    pub tokens: Tokens,
    pub onsale: BookingQueue,
    pub rate_limiter: RateLimiter,
    /// Signed-in sessions, cached while this instance holds a lease on the session epoch.
    pub sessions: SessionCache,
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
    /// when `REDIS_URL` is set, sharded pub/sub on a Redis Cluster when `REDIS_CLUSTER_URLS`
    /// is, otherwise an in-process bus for a single instance. Redis is set up here once: one
    /// way to send commands for the bus and the shared security state (a pool, or the cluster
    /// connection, which needs a cluster that answers at start-up to learn its slots), and the
    /// bus's dedicated subscription connections.
    pub async fn build(config: Config) -> anyhow::Result<AppState> {
        /// Pooled Redis connections: the bus's eight and the security state's sixteen of when
        /// each had a pool of its own.
        const REDIS_POOL_SIZE: u32 = 24;
        let db = db::build_pool(&config.database_url, config.database_pool_size).await?;
        let heartbeat = Heartbeat {
            interval: config.redis_ping_interval,
            timeout: config.redis_ping_timeout,
        };
        let redis = if !config.redis_cluster_urls.is_empty() {
            let urls = &config.redis_cluster_urls;
            let commands = RedisCommands::cluster(urls, config.redis_connect_timeout)
                .await
                .context("cannot connect to the Redis Cluster (REDIS_CLUSTER_URLS)")?;
            Some((RedisSubscriber::Cluster(urls.clone()), commands))
        } else if let Some(url) = &config.redis_url {
            let commands =
                RedisCommands::single(url, REDIS_POOL_SIZE, config.redis_connect_timeout)?;
            Some((
                RedisSubscriber::Server(redis::Client::open(url.as_str())?),
                commands,
            ))
        } else {
            None
        };
        let (bus, shared) = match redis {
            Some((subscriber, commands)) => {
                let bus = Bus::with_redis(
                    subscriber,
                    commands.clone(),
                    &config.redis_prefix,
                    heartbeat,
                    db.clone(),
                );
                (bus, SharedRedis::new(commands, &config.redis_prefix))
            }
            None => {
                tracing::info!(
                    "REDIS_URL is not set: using the in-process bus (single instance only)"
                );
                (Bus::in_process(), SharedRedis::none())
            }
        };
        let replica = config
            .database_replica_url
            .as_deref()
            .map(|url| ReadReplica::start(url, config.database_pool_size, config.replica_max_lag));
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
            sessions: SessionCache::new(config.session_cache_lease),
            persisted_queries: PersistedQueries::new(
                shared,
                config.graphql.automatic_persisted_queries,
                config.graphql.max_document_bytes,
                allowlist,
            ),
            config,
            db,
            replica,
            bus,
        }));
        crate::sweeper::spawn(&state);
        state.sessions.spawn_reader(state.db.clone());
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

    /// A connection for reads that may be up to `REPLICA_MAX_LAG_MS` behind (browsing the
    /// catalogue): the replica's while it is within that bound, the primary's otherwise. Never
    /// for anything that decides availability or follows a write.
    pub async fn browse_conn(&self) -> AppResult<DbConn> {
        if let Some(replica) = &self.replica
            && let Some(conn) = replica.conn().await
        {
            return Ok(conn);
        }
        self.conn().await
    }
}
