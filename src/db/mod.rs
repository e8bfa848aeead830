//! PostgreSQL access: the connection pool, the migration runner and the row types.
//! Every query in the crate lives under `db` or `domain`; GraphQL code never writes SQL.

pub mod cached_sql;
pub mod commerce;
pub mod models;
pub mod replica;
pub mod schema;

use std::time::Duration;

use anyhow::Context;
use diesel::ConnectionError;
use diesel::result::QueryResult;
use diesel_async::pooled_connection::bb8::{Pool, PooledConnection};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolableConnection, RecyclingMethod,
};
use diesel_async::{
    AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection, TransactionManager,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

pub type DbPool = Pool<AsyncPgConnection>;
pub type DbConn = PooledConnection<'static, AsyncPgConnection>;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Any fixed number works; every instance must use the same one so that only one of several
/// instances starting together applies migrations.
const MIGRATION_LOCK_KEY: i64 = 0x0e7e_9715;

/// Server-side cap on any one statement: a stuck query must not hold a pooled connection forever.
const STATEMENT_TIMEOUT_MS: u32 = 10_000;

pub async fn build_pool(database_url: &str, max_size: u32) -> anyhow::Result<DbPool> {
    // Connect once directly: bb8 would report any failure as a bare timeout.
    establish_connection(database_url)
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {}", redact(database_url)))?;
    let mut config = ManagerConfig::default();
    config.custom_setup = Box::new(establish_connection);
    config.recycling_method = RecyclingMethod::CustomFunction(Box::new(closed_or_broken));
    let manager =
        AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(database_url, config);
    Ok(Pool::builder()
        .max_size(max_size)
        .connection_timeout(Duration::from_secs(5))
        .build_unchecked(manager))
}

/// The check a connection passes when it is taken from the pool: not closed (its socket
/// ended, say after PostgreSQL restarted) and not left in a broken transaction. The default
/// check sends `SELECT 1`, a round trip on every checkout, as many as the query itself costs;
/// a link that died silently fails the request's own query instead, and the pool then drops it.
fn closed_or_broken(conn: &mut AsyncPgConnection) -> BoxFuture<'_, QueryResult<()>> {
    let broken = conn.is_broken();
    async move {
        if broken {
            Err(diesel::result::Error::BrokenTransactionManager)
        } else {
            Ok(())
        }
    }
    .boxed()
}

fn establish_connection(url: &str) -> BoxFuture<'_, diesel::ConnectionResult<AsyncPgConnection>> {
    async move {
        let mut conn = AsyncPgConnection::establish(url).await?;
        conn.set_instrumentation(crate::telemetry::traces::TransactionSpans::default());
        conn.batch_execute(&format!(
            "SET application_name = 'evently'; SET statement_timeout = {STATEMENT_TIMEOUT_MS}"
        ))
        .await
        .map_err(ConnectionError::CouldntSetupConfiguration)?;
        Ok(conn)
    }
    .boxed()
}

/// Applies pending migrations under a PostgreSQL advisory lock, so instances starting at the
/// same time queue up instead of racing. Diesel's migration harness is synchronous, hence the
/// blocking thread.
pub async fn run_migrations(database_url: &str) -> anyhow::Result<usize> {
    use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;

    let url = database_url.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
        let mut conn: AsyncConnectionWrapper<AsyncPgConnection> =
            diesel::Connection::establish(&url)
                .with_context(|| format!("cannot connect to PostgreSQL at {}", redact(&url)))?;
        let lock = diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"));
        diesel::RunQueryDsl::execute(lock, &mut conn)?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.len())
            .map_err(|e| anyhow::anyhow!("applying migrations: {e}"));
        let unlock = diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"));
        diesel::RunQueryDsl::execute(unlock, &mut conn)?;
        applied
    })
    .await?
}

/// Reverts every migration; used by the migration round-trip test and by `evently migrate --revert-all`.
pub async fn revert_all_migrations(database_url: &str) -> anyhow::Result<usize> {
    use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;

    let url = database_url.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
        let mut conn: AsyncConnectionWrapper<AsyncPgConnection> =
            diesel::Connection::establish(&url)?;
        conn.revert_all_migrations(MIGRATIONS)
            .map(|versions| versions.len())
            .map_err(|e| anyhow::anyhow!("reverting migrations: {e}"))
    })
    .await?
}

type Transactions = <AsyncPgConnection as AsyncConnection>::TransactionManager;

/// How long to wait for a transaction whose COMMIT went unanswered to end, before its outcome
/// is called unknown.
const OUTCOME_WAIT: Duration = Duration::from_secs(2);

/// Why a transaction opened with [`begin`] did not (knowingly) commit.
#[derive(Debug)]
pub enum Uncommitted<E> {
    /// The work failed and was rolled back.
    Failed(E),
    /// The COMMIT failed, and PostgreSQL says the transaction was rolled back: doing the work
    /// again is safe.
    RolledBack,
    /// The COMMIT got no answer and PostgreSQL cannot say how the transaction ended (yet).
    /// Doing the work again might do it twice.
    Unknown,
}

/// Opens a transaction, to be ended by [`finish`], and returns its id. Unlike
/// `AsyncConnection::transaction`, which reports a lost COMMIT like any other error, this pair
/// finds out whether a COMMIT whose reply was lost took effect, so that a caller never redoes
/// work that was in fact committed.
pub async fn begin(conn: &mut AsyncPgConnection) -> QueryResult<i64> {
    Transactions::begin_transaction(conn).await?;
    // Assigns the transaction its id now, so that it can be looked up if the COMMIT's
    // reply is lost.
    let id = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "txid_current()",
    ))
    .get_result(conn)
    .await;
    if id.is_err() {
        let _ = Transactions::rollback_transaction(conn).await;
    }
    id
}

/// Commits the transaction opened by [`begin`] when `work` succeeded, and rolls it back when
/// not. When the COMMIT itself fails (the connection dropped, say), another connection from
/// `pool` asks PostgreSQL how transaction `txid` ended: committed means `work`'s result
/// stands.
pub async fn finish<T, E>(
    conn: &mut AsyncPgConnection,
    pool: &DbPool,
    txid: i64,
    work: Result<T, E>,
) -> Result<T, Uncommitted<E>> {
    let value = match work {
        Ok(value) => value,
        Err(error) => {
            // A failed rollback leaves the connection broken, and the pool drops it; the
            // transaction ends with it.
            let _ = Transactions::rollback_transaction(conn).await;
            return Err(Uncommitted::Failed(error));
        }
    };
    let Err(error) = Transactions::commit_transaction(conn).await else {
        return Ok(value);
    };
    match committed(pool, txid).await {
        Some(true) => {
            tracing::warn!(?error, txid, "COMMIT went unanswered but took effect");
            Ok(value)
        }
        Some(false) => {
            tracing::warn!(
                ?error,
                txid,
                "COMMIT failed; the transaction was rolled back"
            );
            Err(Uncommitted::RolledBack)
        }
        None => {
            tracing::error!(
                ?error,
                txid,
                "COMMIT went unanswered; its outcome is unknown"
            );
            Err(Uncommitted::Unknown)
        }
    }
}

/// Whether transaction `txid` committed, asked of a fresh connection; `None` when that cannot
/// be told. A transaction whose connection was just cut may still be ending: its backend
/// finishes the COMMIT it received, or notices the lost client and rolls back, within
/// moments, so it is asked again for a short while.
async fn committed(pool: &DbPool, txid: i64) -> Option<bool> {
    #[derive(diesel::QueryableByName)]
    struct Status {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        status: Option<String>,
    }
    let deadline = tokio::time::Instant::now() + OUTCOME_WAIT;
    let mut conn = pool.get().await.ok()?;
    loop {
        let row: Status = diesel::sql_query("SELECT txid_status($1) AS status")
            .bind::<diesel::sql_types::BigInt, _>(txid)
            .get_result(&mut conn)
            .await
            .ok()?;
        match row.status.as_deref() {
            Some("committed") => return Some(true),
            Some("aborted") => return Some(false),
            Some("in progress") if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Still in progress (a half-open link), or too old to tell.
            _ => return None,
        }
    }
}

pub async fn ping(pool: &DbPool) -> anyhow::Result<()> {
    let mut conn = pool.get().await?;
    diesel::sql_query("SELECT 1").execute(&mut conn).await?;
    Ok(())
}

/// The URL without its password, for error messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}
