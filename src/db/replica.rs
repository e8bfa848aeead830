//! A PostgreSQL streaming replica for browse reads (`DATABASE_REPLICA_URL`), and the decision
//! whether to use it.
//!
//! A replica is behind the primary by however long it takes to replay what the primary wrote.
//! That is fine for showing the catalogue and never fine for deciding availability (a stale
//! seat count oversells), so callers choose: `App::conn` is always the primary, and only
//! reads that may lag ask for `ReadReplica::conn` (see `graphql::context::browse_conn`).
//!
//! A background task measures the lag every `CHECK_EVERY`: zero when the replica has replayed
//! everything it received, else how long ago the last transaction it replayed committed on the
//! primary. Past `REPLICA_MAX_LAG_MS`, or when the replica does not answer, reads go to the
//! primary until it has caught up again; `/readyz` reports which (degraded, not down: the
//! primary still serves every read).

use std::sync::Mutex;
use std::time::Duration;

use diesel::QueryableByName;
use diesel_async::AsyncPgConnection;
use diesel_async::RunQueryDsl;
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};

use super::{DbConn, DbPool, establish_connection};

/// How often the replica's lag is measured.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// How long taking a replica connection, or measuring the lag, may take before the replica
/// counts as down (the read then goes to the primary).
const REPLICA_TIMEOUT: Duration = Duration::from_millis(1000);

/// What `/readyz` says about the replica.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicaHealth {
    /// Not measured yet: reads go to the primary.
    Starting,
    /// Within the bound: browse reads go to it.
    Fresh { lag_ms: f64 },
    /// Past the bound: reads go to the primary.
    Lagging { lag_ms: f64 },
    /// Not answering: reads go to the primary.
    Down(String),
}

impl ReplicaHealth {
    /// Whether browse reads go to the primary instead.
    pub fn is_behind(&self) -> bool {
        !matches!(self, Self::Fresh { .. })
    }

    /// For `/readyz`: a word, the lag when measured, and why reads go to the primary.
    pub fn describe(&self) -> (&'static str, Option<f64>, Option<String>) {
        let primary = |why: &str| Some(format!("browse reads go to the primary: {why}"));
        match self {
            Self::Starting => ("starting", None, primary("the replica is not measured yet")),
            Self::Fresh { lag_ms } => ("up", Some(*lag_ms), None),
            Self::Lagging { lag_ms } => (
                "lagging",
                Some(*lag_ms),
                primary(&format!(
                    "the replica is {lag_ms:.0} ms behind, past REPLICA_MAX_LAG_MS"
                )),
            ),
            Self::Down(why) => ("down", None, primary(&format!("the replica {why}"))),
        }
    }
}

pub struct ReadReplica {
    pool: DbPool,
    max_lag: Duration,
    health: Mutex<ReplicaHealth>,
}

#[derive(QueryableByName)]
struct Lag {
    #[diesel(sql_type = diesel::sql_types::Double)]
    lag_ms: f64,
}

/// Zero when everything received was replayed (or this is not a standby), else the age of the
/// last replayed transaction.
const LAG_QUERY: &str = "SELECT CASE \
    WHEN pg_last_wal_receive_lsn() IS NULL \
      OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0::float8 \
    ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) * 1000, 0)::float8 \
    END AS lag_ms";

impl ReadReplica {
    /// A pool of at most `max_size` connections to the replica at `url`, and the task that
    /// measures its lag. Start-up does not wait for the replica: until it answers, reads go to
    /// the primary.
    pub fn start(url: &str, max_size: u32, max_lag: Duration) -> std::sync::Arc<Self> {
        let mut config = ManagerConfig::default();
        config.custom_setup = Box::new(establish_connection);
        let manager =
            AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
        let pool = Pool::builder()
            .max_size(max_size)
            .min_idle(Some(0))
            .connection_timeout(REPLICA_TIMEOUT)
            .build_unchecked(manager);
        let replica = std::sync::Arc::new(Self {
            pool,
            max_lag,
            health: Mutex::new(ReplicaHealth::Starting),
        });
        tokio::spawn(measure(std::sync::Arc::downgrade(&replica)));
        replica
    }

    pub fn health(&self) -> ReplicaHealth {
        self.health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_health(&self, health: ReplicaHealth) {
        let mut current = self
            .health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let was_fresh = matches!(*current, ReplicaHealth::Fresh { .. });
        let is_fresh = matches!(health, ReplicaHealth::Fresh { .. });
        if was_fresh && !is_fresh {
            tracing::warn!(?health, "read replica left: browse reads go to the primary");
        } else if !was_fresh && is_fresh {
            tracing::info!(?health, "read replica fresh: browse reads go to it");
        }
        *current = health;
    }

    /// A replica connection when the replica is within the bound and answers at once; `None`
    /// sends the caller to the primary.
    pub async fn conn(&self) -> Option<DbConn> {
        if !matches!(self.health(), ReplicaHealth::Fresh { .. }) {
            return None;
        }
        match self.pool.get_owned().await {
            Ok(conn) => Some(conn),
            Err(error) => {
                self.set_health(ReplicaHealth::Down(format!("no connection: {error}")));
                None
            }
        }
    }

    async fn lag(&self) -> Result<f64, String> {
        let measured = tokio::time::timeout(REPLICA_TIMEOUT, async {
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            diesel::sql_query(LAG_QUERY)
                .get_result::<Lag>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        match measured {
            Ok(Ok(lag)) => Ok(lag.lag_ms.max(0.0)),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(format!(
                "did not answer within {} ms",
                REPLICA_TIMEOUT.as_millis()
            )),
        }
    }
}

/// Measures the lag every `CHECK_EVERY` until the replica is dropped.
async fn measure(replica: std::sync::Weak<ReadReplica>) {
    let mut ticks = tokio::time::interval(CHECK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(replica) = replica.upgrade() else {
            return;
        };
        let health = match replica.lag().await {
            Ok(lag_ms) if lag_ms <= replica.max_lag.as_secs_f64() * 1e3 => {
                ReplicaHealth::Fresh { lag_ms }
            }
            Ok(lag_ms) => ReplicaHealth::Lagging { lag_ms },
            Err(why) => ReplicaHealth::Down(why),
        };
        replica.set_health(health);
    }
}
