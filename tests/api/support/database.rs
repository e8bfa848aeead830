//! The database of one test: a fresh copy of a template migrated once per process, dropped
//! with the last server using it, and the SQL the tests check their invariants with.

use diesel::QueryableByName;
use diesel::sql_types::{Integer, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::app::TestApp;

/// The server the tests use; override with TEST_DATABASE_URL (any database on it: the harness
/// creates its own).
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into())
}

fn database_url(name: &str) -> String {
    let base = server_url();
    let cut = base.rfind('/').unwrap_or(base.len());
    format!("{}/{name}", &base[..cut])
}

static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// Creates and migrates this process's template database once; also drops databases left by
/// earlier test runs whose process is gone.
async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let pid = std::process::id();
            let mut admin = AsyncPgConnection::establish(&server_url())
                .await
                .expect("PostgreSQL must be running for the tests (see README)");
            #[derive(QueryableByName)]
            struct Name {
                #[diesel(sql_type = diesel::sql_types::Text)]
                datname: String,
            }
            let stale: Vec<Name> = diesel::sql_query(
                "SELECT datname FROM pg_database WHERE datname LIKE 'evently\\_t\\_%' OR datname LIKE 'evently\\_tpl\\_%'",
            )
            .load(&mut admin)
            .await
            .unwrap();
            for Name { datname } in stale {
                let owner = datname.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
                if owner.is_some_and(|p| p != pid && !std::path::Path::new(&format!("/proc/{p}")).exists()) {
                    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{datname}\" WITH (FORCE)")).await;
                }
            }
            let name = format!("evently_tpl_{pid}");
            admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await.unwrap();
            admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await.unwrap();
            evently::db::run_migrations(&database_url(&name)).await.expect("migrations apply");
            name
        })
        .await
}

/// A fresh, migrated, empty database; dropped when the returned guard is dropped.
pub async fn fresh_database() -> TestDatabase {
    let template = template().await;
    let name = format!(
        "evently_t_{}_{}",
        std::process::id(),
        &Uuid::new_v4().simple().to_string()[..12]
    );
    let mut admin = AsyncPgConnection::establish(&server_url()).await.unwrap();
    admin
        .batch_execute(&format!(
            "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
        ))
        .await
        .unwrap();
    TestDatabase {
        url: database_url(&name),
        name,
    }
}

pub struct TestDatabase {
    pub url: String,
    name: String,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // A separate thread: this may run inside the test's runtime, which cannot block_on.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = AsyncPgConnection::establish(&server_url()).await.ok()?;
                admin.batch_execute(&sql).await.ok()
            })
        })
        .join();
    }
}

impl TestApp {
    pub async fn db(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.database.url)
            .await
            .unwrap()
    }

    /// A connection holding the event's row lock in an open transaction, so that bookings of it
    /// wait in the database until it is rolled back or dropped.
    pub async fn hold_event_row(&self, event_id: &str) -> AsyncPgConnection {
        let mut conn = self.db().await;
        diesel_async::SimpleAsyncConnection::batch_execute(
            &mut conn,
            &format!("BEGIN; SELECT id FROM events WHERE id = '{event_id}' FOR UPDATE"),
        )
        .await
        .unwrap();
        conn
    }

    /// Checks, in SQL, for every event: `seats_available + seats_held + confirmed seats =
    /// capacity`, `seats_held` = the seats of its live (HELD) holds, and for seated events
    /// that exactly the held and booked seats have claims, each belonging to a live hold or a
    /// confirmed booking of that event.
    pub async fn assert_invariant(&self) {
        #[derive(QueryableByName, Debug)]
        struct Row {
            #[expect(dead_code, reason = "named in failure messages")]
            #[diesel(sql_type = SqlUuid)]
            id: Uuid,
            #[diesel(sql_type = Integer)]
            capacity: i32,
            #[diesel(sql_type = Integer)]
            seats_available: i32,
            #[diesel(sql_type = Integer)]
            seats_held: i32,
            #[diesel(sql_type = Integer)]
            confirmed: i32,
            #[diesel(sql_type = Integer)]
            in_holds: i32,
            #[diesel(sql_type = diesel::sql_types::Bool)]
            seated: bool,
            #[diesel(sql_type = Integer)]
            claims: i32,
        }
        let rows: Vec<Row> = diesel::sql_query(
            "SELECT e.id, e.capacity, e.seats_available, e.seats_held, e.venue_id IS NOT NULL AS seated,
                    COALESCE((SELECT SUM(b.quantity) FROM bookings b
                              WHERE b.event_id = e.id AND b.status = 'CONFIRMED'), 0)::int AS confirmed,
                    COALESCE((SELECT SUM(h.quantity) FROM holds h
                              WHERE h.event_id = e.id AND h.status = 'HELD'), 0)::int AS in_holds,
                    (SELECT count(*) FROM seat_claims c WHERE c.event_id = e.id)::int AS claims
             FROM events e",
        )
        .load(&mut self.db().await)
        .await
        .unwrap();
        for row in rows {
            assert_eq!(
                row.seats_available + row.seats_held + row.confirmed,
                row.capacity,
                "invariant broken: {row:?}"
            );
            assert_eq!(
                row.seats_held, row.in_holds,
                "held seats miscounted: {row:?}"
            );
            if row.seated {
                assert_eq!(
                    row.claims,
                    row.seats_held + row.confirmed,
                    "seat claims do not match held and booked seats: {row:?}"
                );
            }
        }
        let stray = self
            .count(
                "seat_claims c
                 LEFT JOIN holds h ON h.id = c.hold_id AND h.event_id = c.event_id AND h.status = 'HELD'
                 LEFT JOIN bookings b ON b.id = c.booking_id AND b.event_id = c.event_id
                     AND b.status = 'CONFIRMED'
                 WHERE h.id IS NULL AND b.id IS NULL",
            )
            .await;
        assert_eq!(stray, 0, "seat claims of ended holds or cancelled bookings");
    }

    /// Counts rows matching a SQL condition on a table, for post-hoc checks.
    pub async fn count(&self, sql: &str) -> i64 {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let row: Count = diesel::sql_query(format!("SELECT count(*) AS n FROM {sql}"))
            .get_result(&mut self.db().await)
            .await
            .unwrap();
        row.n
    }

    /// Row counts and a checksum of every row of every table: equal fingerprints mean
    /// nothing was written in between.
    pub async fn fingerprint(&self) -> String {
        #[derive(QueryableByName)]
        struct Fingerprint {
            #[diesel(sql_type = diesel::sql_types::Text)]
            fingerprint: String,
        }
        let tables = ["users", "sessions", "refresh_tokens", "events", "bookings"];
        let parts = tables
            .iter()
            .map(|table| {
                format!(
                    "'{table}:' || (SELECT count(*) FROM {table}) || ':' || \
                     (SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t)"
                )
            })
            .collect::<Vec<_>>()
            .join(" || ' ' || ");
        let row: Fingerprint = diesel::sql_query(format!("SELECT {parts} AS fingerprint"))
            .get_result(&mut self.db().await)
            .await
            .unwrap();
        row.fingerprint
    }
}
