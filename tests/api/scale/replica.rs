//! Browse reads on a real PostgreSQL streaming replica (`pg_basebackup -R`) on loopback: served
//! by the replica while it keeps up, by the primary once it lags past the bound or is down,
//! and never for what decides availability.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use evently::db::models::Role;
use serde_json::{Value, json};

use super::{free_ports, scratch_dir, services};
use crate::support::{TestApp, WAIT, eventually};

const EVENT: &str = "query($id: ID!) { event(id: $id) { title capacity seatsAvailable } }";
const EVENTS: &str = "query { events(first: 100) { edges { node { id title } } } }";
const UPDATE: &str = "mutation($id: ID!, $input: UpdateEventInput!) { updateEvent(id: $id, input: $input) { capacity seatsAvailable } }";
const BOOK: &str = "mutation($input: BookSeatsInput!) { bookSeats(input: $input) { quantity event { capacity seatsAvailable } } }";

/// A primary of its own and its streaming replica, started by `start_pg_replica`.
struct Replica {
    dir: PathBuf,
    primary: u16,
    replica: u16,
}

impl Replica {
    async fn start() -> Self {
        let replica = tokio::task::spawn_blocking(|| {
            let dir = scratch_dir("pg-replica");
            let primary = free_ports(40_000..50_000, 2, None);
            services(
                "start_pg_replica",
                &[
                    dir.display().to_string(),
                    primary.to_string(),
                    (primary + 1).to_string(),
                ],
            );
            Self {
                dir,
                primary,
                replica: primary + 1,
            }
        })
        .await
        .unwrap();
        evently::db::run_migrations(&replica.primary_url())
            .await
            .unwrap();
        replica
    }

    fn url(port: u16) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    }

    fn primary_url(&self) -> String {
        Self::url(self.primary)
    }

    /// Runs `sql` with psql on the node at `port`; its output, trimmed.
    fn sql(port: u16, sql: &str) -> String {
        let output = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &Self::url(port),
                "-c",
                sql,
            ])
            .output()
            .expect("psql runs");
        assert!(output.status.success(), "{sql}: {output:?}");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    fn on_primary(&self, sql: &str) -> String {
        Self::sql(self.primary, sql)
    }

    fn on_replica(&self, sql: &str) -> String {
        Self::sql(self.replica, sql)
    }

    /// Stops the replica at once, as if its machine went away.
    fn stop_replica(&self) {
        let status = Command::new("bash")
            .env("EVENTLY_SERVICES_FUNCTIONS_ONLY", "1")
            .arg("-c")
            .arg(format!(
                "source '{}/scripts/services.sh' && as_postgres \"$(pg_bin)/pg_ctl\" -D '{}/replica' -m immediate stop",
                env!("CARGO_MANIFEST_DIR"),
                self.dir.display()
            ))
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// A server on this primary, with browse reads on this replica while it is less than
    /// `max_lag` behind; no response cache, so every answer is read anew.
    async fn app(&self, max_lag: Duration) -> TestApp {
        let (primary, replica) = (self.primary_url(), Self::url(self.replica));
        let app = TestApp::spawn_with(move |config| {
            config.database_url = primary;
            config.database_replica_url = Some(replica);
            config.replica_max_lag = max_lag;
            config.response_cache_ttl = Duration::ZERO;
        })
        .await;
        let (_, ready) = replica_state(&app, "up").await;
        assert!(ready["replica_lag_ms"].as_f64().unwrap() <= max_lag.as_secs_f64() * 1e3);
        app
    }
}

/// Polls `/readyz` until it reports the replica as `state`.
async fn replica_state(app: &TestApp, state: &str) -> (u16, Value) {
    eventually(WAIT, || async {
        let (code, body) = app.readiness().await;
        if body["replica"] == state {
            Ok((code, body))
        } else {
            Err(format!("readiness says {body}"))
        }
    })
    .await
}

async fn title(app: &TestApp, token: &str, event: &str) -> String {
    let data = app.gql_ok(Some(token), EVENT, json!({ "id": event })).await;
    data["event"]["title"].as_str().unwrap().to_owned()
}

/// Waits until the replica has replayed the event (and so everything before it).
async fn replayed(replica: &Replica, event: &str) {
    let sql = format!("SELECT count(*) FROM events WHERE id = '{event}'");
    eventually(WAIT, || async { replica.on_replica(&sql) == "1" }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_reads_are_served_by_the_replica_while_it_keeps_up() {
    let replica = Replica::start().await;
    let app = replica.app(Duration::from_secs(60)).await;
    let organizer = app.user(Role::Organizer).await;
    let event = app.event(&organizer, 10).await;
    replayed(&replica, &event).await;

    // A change the replica has not replayed is on the primary only.
    replica.on_replica("SELECT pg_wal_replay_pause()");
    replica.on_primary(&format!(
        "UPDATE events SET title = 'Renamed on the primary' WHERE id = '{event}'"
    ));
    assert_eq!(title(&app, &organizer.token, &event).await, "Test Event");
    let listed = app.gql_ok(Some(&organizer.token), EVENTS, json!({})).await;
    assert_eq!(
        listed["events"]["edges"][0]["node"]["title"], "Test Event",
        "{listed}"
    );
    let (_, ready) = app.readiness().await;
    assert_eq!(ready["replica"], "up", "{ready}");

    replica.on_replica("SELECT pg_wal_replay_resume()");
    eventually(WAIT, || async {
        title(&app, &organizer.token, &event).await == "Renamed on the primary"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stops_replaying_is_left_for_the_primary_past_the_bound() {
    let replica = Replica::start().await;
    let app = replica.app(Duration::from_millis(1000)).await;
    let organizer = app.user(Role::Organizer).await;
    let event = app.event(&organizer, 10).await;
    replayed(&replica, &event).await;

    replica.on_replica("SELECT pg_wal_replay_pause()");
    replica.on_primary(&format!(
        "UPDATE events SET title = 'Renamed on the primary' WHERE id = '{event}'"
    ));
    // Past the bound, the API reads the primary, while the replica still has the old title.
    eventually(WAIT, || async {
        title(&app, &organizer.token, &event).await == "Renamed on the primary"
    })
    .await;
    let on_replica = format!("SELECT title FROM events WHERE id = '{event}'");
    assert_eq!(replica.on_replica(&on_replica), "Test Event");
    let (code, ready) = replica_state(&app, "lagging").await;
    assert_eq!(
        (code, &ready["status"]),
        (200, &json!("degraded")),
        "{ready}"
    );
    assert!(
        ready["replica_lag_ms"].as_f64().unwrap() > 1000.0,
        "{ready}"
    );

    // Caught up, it serves reads again.
    replica.on_replica("SELECT pg_wal_replay_resume()");
    let (_, ready) = replica_state(&app, "up").await;
    assert_eq!(ready["status"], "ready", "{ready}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_right_after_an_event_update_never_reads_stale_capacity() {
    let replica = Replica::start().await;
    // A generous bound: the stale replica stays in use for browsing throughout.
    let app = replica.app(Duration::from_secs(60)).await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = app.event(&organizer, 5).await;
    replayed(&replica, &event).await;

    replica.on_replica("SELECT pg_wal_replay_pause()");
    let updated = app
        .gql_ok(
            Some(&organizer.token),
            UPDATE,
            json!({ "id": event, "input": { "capacity": 50 } }),
        )
        .await;
    // A mutation's answer reads the primary.
    assert_eq!(updated["updateEvent"]["capacity"], 50, "{updated}");
    // Browsing still shows the replica's five seats...
    let browsed = app
        .gql_ok(Some(&buyer.token), EVENT, json!({ "id": event }))
        .await;
    assert_eq!(browsed["event"]["capacity"], 5, "{browsed}");
    // ...but booking goes by the primary's fifty.
    let booked = app
        .gql_ok(
            Some(&buyer.token),
            BOOK,
            json!({ "input": { "eventId": event, "quantity": 10 } }),
        )
        .await;
    assert_eq!(booked["bookSeats"]["quantity"], 10, "{booked}");
    assert_eq!(booked["bookSeats"]["event"]["capacity"], 50, "{booked}");
    assert_eq!(
        booked["bookSeats"]["event"]["seatsAvailable"], 40,
        "{booked}"
    );
    replica.on_replica("SELECT pg_wal_replay_resume()");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_on_when_the_replica_is_down() {
    let replica = Replica::start().await;
    let app = replica.app(Duration::from_millis(1000)).await;
    let organizer = app.user(Role::Organizer).await;
    let event = app.event(&organizer, 10).await;
    replayed(&replica, &event).await;

    replica.stop_replica();
    // Every read is answered, the first ones included (from the primary).
    for _ in 0..3 {
        assert_eq!(title(&app, &organizer.token, &event).await, "Test Event");
        let listed = app.gql_ok(None, EVENTS, json!({})).await;
        assert!(listed["events"]["edges"].is_array(), "{listed}");
    }
    let (code, ready) = replica_state(&app, "down").await;
    assert_eq!(
        (code, &ready["status"]),
        (200, &json!("degraded")),
        "{ready}"
    );
    assert!(ready["replica_reason"].is_string(), "{ready}");
}
