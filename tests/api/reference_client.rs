//! The reference client: npm `graphql-ws` (pinned in tests/js/package-lock.json) drives a real
//! server from Node, as browser apps do. `scripts/test.sh` runs `npm ci` in tests/js first.

use std::time::Duration;

use evently::db::models::Role;
use serde_json::{Value, json};

use crate::helpers::TestApp;

/// Runs a script of tests/js with Node and the given environment, and returns the JSON it
/// prints; fails the test if it fails or takes over a minute.
pub async fn run_node(script: &str, env: &[(&str, &str)]) -> Value {
    let js = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js");
    assert!(
        std::path::Path::new(js)
            .join("node_modules/graphql-ws")
            .exists(),
        "run `npm ci` in tests/js (scripts/test.sh does)"
    );
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("node")
            .arg(script)
            .current_dir(js)
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the node client finishes")
    .expect("node is installed (scripts/services.sh)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "node failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

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
