//! The reference client: npm `graphql-ws` (pinned in tests/js/package-lock.json) drives a real
//! server from Node, as browser apps do. `scripts/test.sh` runs `npm ci` in tests/js first.

use std::time::Duration;

use evently::db::models::Role;
use serde_json::json;

use crate::support::{TestApp, run_node};

#[tokio::test]
async fn the_reference_graphql_ws_client_subscribes_queries_mutates_and_is_refused_a_bad_token() {
    let app = TestApp::spawn_with(|config| {
        config.websocket.ping_interval = Duration::from_millis(300);
        config.websocket.idle_timeout = Duration::from_secs(5);
    })
    .await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event_id = app.event(&organizer, 10).await;

    let seen = run_node(
        "reference-client.mjs",
        &[
            ("EVENTLY_WS_URL", app.ws_url().as_str()),
            ("EVENTLY_TOKEN", &buyer.token),
            ("EVENTLY_EVENT_ID", &event_id),
        ],
    )
    .await;
    assert_eq!(
        seen["query"],
        json!({ "data": { "event": { "title": "Test Event", "seatsAvailable": 10 } } })
    );
    assert_eq!(
        seen["mutation"],
        json!({ "data": { "bookSeats": { "quantity": 2, "status": "CONFIRMED" } } })
    );
    assert_eq!(
        seen["seats"],
        json!([{ "seatsAvailable": 10, "version": 1 }, { "seatsAvailable": 8, "version": 2 }])
    );
    assert_eq!(seen["validation"], json!(["GRAPHQL_VALIDATION_FAILED"]));
    assert!(seen["pongs"].as_i64().unwrap() >= 1, "{seen}");
    assert!(seen["serverPings"].as_i64().unwrap() >= 1, "{seen}");
    assert_eq!(
        seen["badToken"],
        json!({ "code": 4403, "reason": "Forbidden" })
    );
    assert_eq!(app.count("bookings").await, 1);
}
