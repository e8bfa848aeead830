//! Graceful shutdown (issue 15, "Restart it"): the trigger a test fires is the future `serve`
//! waits on, the one SIGTERM resolves in `main`. `/readyz` says `draining` at once, new work is
//! still served during the drain, work in flight finishes with its answer, WebSockets close
//! with 1012 and graphql-ws clients resume elsewhere, and after the drain the listener is gone.

use std::time::Duration;

use diesel_async::SimpleAsyncConnection;
use evently::db::models::Role;
use serde_json::json;

use crate::support::{SEATS, TestApp, WAIT, eventually, run_node, seats};

const BOOKINGS_WAITING_FOR_A_LOCK: &str =
    "pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'";

/// Waits for the server task to end, as `main` does before the process exits.
async fn stopped(app: &TestApp) {
    let server = app.server.lock().unwrap().take().unwrap();
    tokio::time::timeout(WAIT, server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_drops_at_once_while_a_queued_booking_still_gets_its_answer() {
    // A drain longer than the test: everything below happens inside it.
    let app = TestApp::spawn_with(|config| config.shutdown_drain = WAIT * 3).await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event_id = app.event(&organizer, 5).await;
    assert_eq!(app.readiness().await.0, 200);

    // The booking queues for the group-commit workers behind a locked event row.
    let mut blocker = app.hold_event_row(&event_id).await;
    let (booking, ()) = tokio::join!(app.try_book(&buyer, &event_id, 2), async {
        eventually(WAIT, || async {
            (app.count(BOOKINGS_WAITING_FOR_A_LOCK).await > 0)
                .then_some(())
                .ok_or("the booking never reached the lock")
        })
        .await;
        app.shutdown.cancel();
        // At once: the first probe after the trigger already says so.
        let (code, body) = app.readiness().await;
        assert_eq!((code, body), (503, json!({ "status": "draining" })));
        // New work is still served while the load balancer catches up.
        let fresh = reqwest::Client::new();
        let answer: serde_json::Value = fresh
            .post(format!("{}/graphql", app.base_url))
            .json(&json!({ "query": "{ events(first: 1) { edges { node { id } } } }" }))
            .send()
            .await
            .expect("served during the drain")
            .json()
            .await
            .unwrap();
        assert!(answer["errors"].is_null(), "{answer}");
        blocker.batch_execute("COMMIT").await.unwrap();
    });
    assert_eq!(
        booking["data"]["bookSeats"]["status"], "CONFIRMED",
        "{booking}"
    );
    let id = booking["data"]["bookSeats"]["id"].as_str().unwrap();
    // What the caller heard is what PostgreSQL holds, and nothing else.
    assert_eq!(
        app.count(&format!(
            "bookings WHERE id = '{id}' AND status = 'CONFIRMED' AND quantity = 2"
        ))
        .await,
        1
    );
    assert_eq!(app.count("bookings").await, 1);
    assert_eq!(app.count("events WHERE seats_available = 3").await, 1);
    app.assert_invariant().await;
}

#[tokio::test]
async fn a_graphql_ws_client_is_told_1012_service_restart() {
    let app = TestApp::spawn_with(|config| config.shutdown_drain = Duration::from_millis(50)).await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 5).await;
    let mut watcher = app.connect_ws(json!({})).await;
    watcher
        .subscribe("1", SEATS, json!({ "id": event_id }))
        .await;
    assert_eq!(seats(&mut watcher).await, (5, 1));

    app.shutdown.cancel();
    assert_eq!(watcher.closed().await, (1012, "server restarting".into()));
    stopped(&app).await;
}

#[tokio::test]
async fn after_the_drain_the_listener_refuses_connections() {
    let app =
        TestApp::spawn_with(|config| config.shutdown_drain = Duration::from_millis(300)).await;
    app.shutdown.cancel();
    eventually(WAIT, || async {
        tokio::net::TcpStream::connect(app.addr)
            .await
            .is_err()
            .then_some(())
            .ok_or("still accepting connections")
    })
    .await;
    stopped(&app).await;
    assert!(
        reqwest::get(format!("{}/healthz", app.base_url))
            .await
            .is_err(),
        "nothing answers once the drain is over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graphql_ws_client_reconnects_elsewhere_after_1012_and_sees_the_current_seats() {
    // No Redis: B's booking can reach the client only through B itself, once it has moved.
    let first = TestApp::spawn_without_redis().await;
    let second = first.spawn_peer().await;
    let organizer = first.user(Role::Organizer).await;
    let buyer = first.user(Role::User).await;
    let event_id = first.event(&organizer, 5).await;
    let ready = std::env::temp_dir().join(format!("evently-shutdown-{}", uuid::Uuid::new_v4()));
    let (a_url, b_url, ready_file) = (first.ws_url(), second.ws_url(), ready.display().to_string());
    let env = [
        ("EVENTLY_A_WS_URL", a_url.as_str()),
        ("EVENTLY_B_WS_URL", b_url.as_str()),
        ("EVENTLY_EVENT_ID", event_id.as_str()),
        ("EVENTLY_READY_FILE", ready_file.as_str()),
        ("EVENTLY_EXPECTED_SEATS", "3"),
    ];
    let (seen, ()) = tokio::join!(run_node("shutdown-reconnect.mjs", &env), async {
        eventually(WAIT, || async {
            ready
                .exists()
                .then_some(())
                .ok_or("the client never subscribed")
        })
        .await;
        second.book(&buyer, &event_id, 2).await;
        first.shutdown.cancel();
    });
    let _ = std::fs::remove_file(&ready);
    assert_eq!(seen["closeCodes"][0], 1012, "{seen}");
    assert_eq!(seen["connectedTo"], json!([a_url, b_url]), "{seen}");
    assert_eq!(seen["seats"][0], 5, "{seen}");
    assert_eq!(
        seen["seats"].as_array().unwrap().last().unwrap(),
        3,
        "{seen}"
    );
    stopped(&first).await;
}

#[tokio::test]
async fn an_event_stream_ends_when_the_drain_is_over() {
    let app = TestApp::spawn_with(|config| config.shutdown_drain = Duration::from_millis(50)).await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 5).await;
    let mut stream = app
        .client
        .post(format!("{}/graphql/stream", app.base_url))
        .header("accept", "text/event-stream")
        .json(&json!({ "query": SEATS, "variables": { "id": event_id } }))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut text = String::new();
    while !text.contains("seatsAvailable") {
        let chunk = stream.chunk().await.unwrap().expect("the stream is open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }

    app.shutdown.cancel();
    // The body ends (rather than the server waiting on it until the grace is over).
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(chunk) = stream.chunk().await.transpose() {
            if chunk.is_err() {
                return false;
            }
        }
        true
    })
    .await
    .expect("the stream ends");
    assert!(ended, "the stream ends cleanly, not cut off");
    stopped(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_takes_no_longer_than_its_grace_even_with_work_stuck() {
    let app = TestApp::spawn_with(|config| {
        config.shutdown_grace = Duration::from_millis(300);
    })
    .await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event_id = app.event(&organizer, 5).await;
    let blocker = app.hold_event_row(&event_id).await;
    let booking = app.try_book(&buyer, &event_id, 2);
    tokio::pin!(booking);
    tokio::select! {
        answer = &mut booking => panic!("the booking cannot finish while the row is held: {answer}"),
        () = eventually(WAIT, || async {
            (app.count(BOOKINGS_WAITING_FOR_A_LOCK).await > 0)
                .then_some(())
                .ok_or("the booking never reached the lock")
        }) => {}
    }
    app.shutdown.cancel();
    // The row is still held: only the grace can end the shutdown.
    stopped(&app).await;
    drop(blocker);
}
