//! The cache of anonymous query answers: reused while nothing changed, dropped as soon as
//! this instance or another one changes what it shows.

use evently::db::models::Role;
use serde_json::{Value, json};

use crate::support::{BOOK, TestApp};
use crate::support::{SEATS, seats};

const EVENT: &str = "query($id: ID!) { event(id: $id) { seatsAvailable } }";

/// An anonymous query: its seat count and whether the answer came from the cache.
async fn anonymous(app: &TestApp, event_id: &str) -> (i64, bool) {
    let response = app
        .client
        .post(format!("{}/graphql", app.base_url))
        .json(&json!({ "query": EVENT, "variables": { "id": event_id } }))
        .send()
        .await
        .unwrap();
    let hit = response.headers().get("x-evently-cache").is_some();
    let body: Value = response.json().await.unwrap();
    (
        body["data"]["event"]["seatsAvailable"].as_i64().unwrap(),
        hit,
    )
}

#[tokio::test]
async fn anonymous_answers_are_reused_until_this_or_another_instance_changes_something() {
    let app = TestApp::spawn().await;
    let peer = app.spawn_peer().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event_id = app.event(&organizer, 10).await;

    assert_eq!(anonymous(&app, &event_id).await, (10, false));
    assert_eq!(
        anonymous(&app, &event_id).await,
        (10, true),
        "the same question again"
    );

    // A booking on this instance drops what it had cached.
    let book = json!({ "input": { "eventId": event_id } });
    app.gql_ok(Some(&buyer.token), BOOK, book.clone()).await;
    assert_eq!(anonymous(&app, &event_id).await, (9, false));

    // A booking on another instance drops it too, once the bus has brought the news.
    assert_eq!(anonymous(&peer, &event_id).await, (9, false));
    assert_eq!(anonymous(&peer, &event_id).await, (9, true));
    let mut watcher = peer.connect_ws(json!({})).await;
    watcher
        .subscribe("1", SEATS, json!({ "id": event_id }))
        .await;
    assert_eq!(seats(&mut watcher).await.0, 9);
    app.gql_ok(Some(&buyer.token), BOOK, book).await;
    assert_eq!(
        seats(&mut watcher).await.0,
        8,
        "the peer heard of the booking"
    );
    assert_eq!(anonymous(&peer, &event_id).await, (8, false));

    // Signed-in requests are never answered from the cache.
    for _ in 0..2 {
        let response = app
            .client
            .post(format!("{}/graphql", app.base_url))
            .bearer_auth(&buyer.token)
            .json(&json!({ "query": EVENT, "variables": { "id": event_id } }))
            .send()
            .await
            .unwrap();
        assert!(response.headers().get("x-evently-cache").is_none());
    }
}

#[tokio::test]
async fn a_cache_ttl_of_zero_switches_it_off() {
    let app =
        TestApp::spawn_with(|config| config.response_cache_ttl = std::time::Duration::ZERO).await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 10).await;
    for _ in 0..2 {
        assert_eq!(anonymous(&app, &event_id).await, (10, false));
    }
}
