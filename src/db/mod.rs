//! PostgreSQL access: the connection pool, the migration runner and the row types.
//! Every query in the crate lives under `db` or `domain`; GraphQL code never writes SQL.

pub mod models;
pub mod schema;

use std::time::Duration;

use anyhow::Context;
use diesel::ConnectionError;
use diesel_async::pooled_connection::bb8::{Pool, PooledConnection};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
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
    let manager =
        AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(database_url, config);
    Ok(Pool::builder()
        .max_size(max_size)
        .connection_timeout(Duration::from_secs(5))
        .build_unchecked(manager))
}

fn establish_connection(url: &str) -> BoxFuture<'_, diesel::ConnectionResult<AsyncPgConnection>> {
    async move {
        let mut conn = AsyncPgConnection::establish(url).await?;
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
