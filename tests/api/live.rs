//! Live updates beyond seat counts (`eventUpdated`, `myBookingUpdates`) and how subscribers
//! converge to the database when Redis goes away and comes back.

use std::collections::HashMap;
use std::time::Duration;

use evently::db::models::Role;
use serde_json::{Value, json};

use crate::support::{BOOK, CANCEL, TestApp};
use crate::support::{OwnRedis, SEATS, converge, seats};

const EVENT_UPDATED: &str =
    "subscription($id: ID!) { eventUpdated(eventId: $id) { id title status version } }";
const MY_BOOKINGS: &str =
    "subscription { myBookingUpdates { id quantity event { id } ... on Booking { status } } }";

fn init(token: &str) -> Value {
    json!({ "Authorization": format!("Bearer {token}") })
}

#[tokio::test]
async fn event_updated_sends_the_event_then_each_change_of_details_or_status() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event_id = app.event(&organizer, 10).await;
    let mut client = app.connect_ws(json!({})).await;
    client
        .subscribe("e", EVENT_UPDATED, json!({ "id": event_id }))
        .await;
    let first = client.next_data().await;
    assert_eq!(
        first["data"]["eventUpdated"],
        json!({ "id": event_id, "title": "Test Event", "status": "PUBLISHED", "version": 1 })
    );
    // A booking changes seat counts, not details: the next message is the rename.
    app.book(&buyer, &event_id, 1).await;
    app.gql_ok(
        Some(&organizer.token),
        "mutation($id: ID!) { updateEvent(id: $id, input: { title: \"Renamed\" }) { id } }",
        json!({ "id": event_id }),
    )
    .await;
    assert_eq!(
        client.next_data().await["data"]["eventUpdated"],
        json!({ "id": event_id, "title": "Renamed", "status": "PUBLISHED", "version": 3 })
    );
    app.gql_ok(
        Some(&organizer.token),
        "mutation($id: ID!) { cancelEvent(id: $id) { id } }",
        json!({ "id": event_id }),
    )
    .await;
    assert_eq!(
        client.next_data().await["data"]["eventUpdated"],
        json!({ "id": event_id, "title": "Renamed", "status": "CANCELLED", "version": 4 })
    );
    // Unknown events are refused like every other lookup.
    client
        .subscribe("x", EVENT_UPDATED, json!({ "id": uuid::Uuid::new_v4() }))
        .await;
    let refused = client.next_message().await.unwrap();
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{refused}"
    );
}

#[tokio::test]
async fn my_booking_updates_follow_the_signed_in_users_bookings_only() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let stranger = app.user(Role::User).await;
    let event_id = app.event(&organizer, 20).await;
    let mut client = app.connect_ws(init(&buyer.token)).await;
    client.subscribe("mine", MY_BOOKINGS, json!({})).await;

    let first = app.book(&buyer, &event_id, 2).await;
    assert_eq!(
        client.next_data().await["data"]["myBookingUpdates"],
        json!({ "id": first, "status": "CONFIRMED", "quantity": 2, "event": { "id": event_id } })
    );
    // Someone else's booking is not sent: the next message is the buyer's own cancellation.
    app.book(&stranger, &event_id, 1).await;
    app.gql_ok(Some(&buyer.token), CANCEL, json!({ "id": first }))
        .await;
    let cancelled = client.next_data().await;
    assert_eq!(cancelled["data"]["myBookingUpdates"]["id"], first.as_str());
    assert_eq!(cancelled["data"]["myBookingUpdates"]["status"], "CANCELLED");

    // When the organizer cancels the event, each owner hears about their own booking.
    let second = app.book(&buyer, &event_id, 3).await;
    assert_eq!(
        client.next_data().await["data"]["myBookingUpdates"]["status"],
        "CONFIRMED"
    );
    app.gql_ok(
        Some(&organizer.token),
        "mutation($id: ID!) { cancelEvent(id: $id) { id } }",
        json!({ "id": event_id }),
    )
    .await;
    let by_organizer = client.next_data().await;
    assert_eq!(
        by_organizer["data"]["myBookingUpdates"],
        json!({ "id": second, "status": "CANCELLED", "quantity": 3, "event": { "id": event_id } })
    );
}

#[tokio::test]
async fn my_booking_updates_need_a_signed_in_connection() {
    let app = TestApp::spawn_without_redis().await;
    let mut client = app.connect_ws(json!({})).await;
    client.subscribe("mine", MY_BOOKINGS, json!({})).await;
    let refused = client.next_message().await.unwrap();
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(
        refused["payload"][0]["extensions"]["code"],
        "UNAUTHENTICATED"
    );
}

#[tokio::test]
async fn my_booking_updates_end_when_the_access_token_expires() {
    let app = TestApp::spawn_with(|config| {
        config.access_token_ttl = Duration::from_secs(2);
    })
    .await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 10).await;
    let buyer = app.user(Role::User).await;
    let mut client = app.connect_ws(init(&buyer.token)).await;
    client.subscribe("mine", MY_BOOKINGS, json!({})).await;
    client
        .subscribe("seats", SEATS, json!({ "id": event_id }))
        .await;
    assert_eq!(seats(&mut client).await, (10, 1));
    let ended = client.next_message().await.unwrap();
    assert_eq!(ended["type"], "error", "{ended}");
    assert_eq!(ended["id"], "mine");
    assert_eq!(ended["payload"][0]["extensions"]["code"], "UNAUTHENTICATED");
    // Public subscriptions on the same connection carry on.
    let late = app.user(Role::User).await;
    app.book(&late, &event_id, 1).await;
    assert_eq!(seats(&mut client).await, (9, 2));
}

#[tokio::test]
async fn my_booking_updates_end_when_the_session_ends() {
    let app = TestApp::spawn_without_redis().await;
    let admin = app.user(Role::Admin).await;
    let event_id = app.event(&admin, 10).await;
    let buyer = app.user(Role::User).await;
    let booking = app.book(&buyer, &event_id, 1).await;
    let mut client = app.connect_ws(init(&buyer.token)).await;
    client.subscribe("mine", MY_BOOKINGS, json!({})).await;
    app.gql_ok(Some(&buyer.token), "mutation { logout }", json!({}))
        .await;
    // The next change for this user is not delivered: the session is over.
    app.gql_ok(Some(&admin.token), CANCEL, json!({ "id": booking }))
        .await;
    let ended = client.next_message().await.unwrap();
    assert_eq!(ended["type"], "error", "{ended}");
    assert_eq!(ended["payload"][0]["extensions"]["code"], "UNAUTHENTICATED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_converge_to_the_database_after_redis_restarts() {
    let mut redis = OwnRedis::start().await;
    let first = TestApp::spawn_on_redis(&redis.url(), |_| {}).await;
    let second = first.spawn_peer().await;
    let third = first.spawn_peer().await;
    let organizer = first.user(Role::Organizer).await;
    let buyer = first.user(Role::User).await;
    let event_id = first.event(&organizer, 100).await;
    let mut on_first = first.connect_ws(json!({})).await;
    let mut on_second = second.connect_ws(json!({})).await;
    let mut buyers_feed = second.connect_ws(init(&buyer.token)).await;
    on_first
        .subscribe("s", SEATS, json!({ "id": event_id }))
        .await;
    on_second
        .subscribe("s", SEATS, json!({ "id": event_id }))
        .await;
    buyers_feed.subscribe("b", MY_BOOKINGS, json!({})).await;
    assert_eq!(seats(&mut on_first).await, (100, 1));
    assert_eq!(seats(&mut on_second).await, (100, 1));
    let mut bookings = vec![first.book(&buyer, &event_id, 1).await];
    converge(&mut on_first, (99, 2)).await;
    converge(&mut on_second, (99, 2)).await;

    redis.stop().await;
    let (code, body) = first.wait_for_readiness("degraded").await;
    assert_eq!(
        (code, &body["redis"], &body["postgres"]),
        (200, &json!("down"), &json!("up"))
    );
    // Bookings go on everywhere; each instance's own subscribers hear its changes at once.
    bookings.push(first.book(&buyer, &event_id, 2).await);
    assert_eq!(seats(&mut on_first).await, (97, 3));
    bookings.push(second.book(&buyer, &event_id, 3).await);
    assert_eq!(seats(&mut on_second).await, (94, 4));
    // The third instance's change reaches no one, and it leaves before Redis is back: only the
    // database can tell the others.
    bookings.push(third.book(&buyer, &event_id, 4).await);
    third.shutdown.cancel();
    let server = third.server.lock().unwrap().take().unwrap();
    server.await.unwrap().unwrap();
    drop(third);

    redis.restart().await;
    converge(&mut on_first, (90, 5)).await;
    converge(&mut on_second, (90, 5)).await;
    let mut seen: HashMap<String, Value> = HashMap::new();
    while seen.len() < bookings.len() {
        let data = buyers_feed.next_data().await;
        let booking = data["data"]["myBookingUpdates"].clone();
        seen.insert(booking["id"].as_str().unwrap().to_owned(), booking);
    }
    for id in &bookings {
        assert_eq!(seen[id.as_str()]["status"], "CONFIRMED", "{id}");
    }
    assert_eq!(first.wait_for_readiness("ready").await.0, 200);

    // And the bus works as before: a booking on the second instance reaches the first.
    second.book(&buyer, &event_id, 1).await;
    converge(&mut on_first, (89, 6)).await;
    first.assert_invariant().await;
}

#[tokio::test]
async fn without_redis_bookings_and_local_subscribers_carry_on() {
    // Nothing listens on port 1: Redis is down from the start.
    let app = TestApp::spawn_on_redis("redis://127.0.0.1:1", |_| {}).await;
    let (code, mut body) = app.readiness().await;
    assert_eq!(code, 200, "{body}");
    let latency = body.as_object_mut().unwrap().remove("latency_ms");
    assert!(latency.is_some_and(|l| l["postgres"].is_number() && l["redis"].is_number()));
    // The reason is Redis's silence or the subscription's, whichever is noticed first.
    let reason = body["reason"].as_str().unwrap_or_default().to_owned();
    assert!(!reason.is_empty(), "{body}");
    assert_eq!(
        body,
        json!({ "status": "degraded", "postgres": "up", "redis": "down", "reason": reason })
    );
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event_id = app.event(&organizer, 5).await;
    let mut client = app.connect_ws(json!({})).await;
    client
        .subscribe("s", SEATS, json!({ "id": event_id }))
        .await;
    assert_eq!(seats(&mut client).await, (5, 1));
    app.book(&buyer, &event_id, 2).await;
    assert_eq!(seats(&mut client).await, (3, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_subscribers_on_two_instances_all_end_on_the_final_count() {
    let first = TestApp::spawn().await;
    let second = first.spawn_peer().await;
    let organizer = first.user(Role::Organizer).await;
    let event_id = first.event(&organizer, 100).await;
    let mut subscribers = Vec::new();
    for i in 0..40 {
        let app = if i % 2 == 0 { &first } else { &second };
        let mut client = app.connect_ws(json!({})).await;
        // Half share one execution per instance, half run their own.
        let query = if i % 4 < 2 {
            SEATS
        } else {
            "subscription($id: ID!) { seatAvailability(eventId: $id) { seatsAvailable version } }"
        };
        client
            .subscribe("s", query, json!({ "id": event_id }))
            .await;
        let first_message = client.next_data().await;
        assert_eq!(first_message["data"]["seatAvailability"]["version"], 1);
        subscribers.push(client);
    }
    let mut buyers = Vec::new();
    for _ in 0..10 {
        buyers.push(first.user(Role::User).await);
    }
    // Twenty bookings at once, half on each instance.
    let bookings = buyers.iter().flat_map(|buyer| {
        [&first, &second].map(|app| {
            app.gql_ok(
                Some(&buyer.token),
                BOOK,
                json!({ "input": { "eventId": event_id, "quantity": 1 } }),
            )
        })
    });
    futures_util::future::join_all(bookings).await;
    let final_state = (80, 21);
    for client in &mut subscribers {
        let mut last_version = 1;
        loop {
            let data = client.next_data().await;
            let seats = &data["data"]["seatAvailability"];
            let version = seats["version"].as_i64().unwrap();
            assert!(version > last_version, "{last_version} then {version}");
            last_version = version;
            if version == final_state.1 {
                assert_eq!(seats["seatsAvailable"], final_state.0);
                break;
            }
        }
    }
    first.assert_invariant().await;
}
