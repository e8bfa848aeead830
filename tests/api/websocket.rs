//! Subscriptions over real WebSockets, speaking graphql-transport-ws (and the legacy graphql-ws).

use std::time::Duration;

use evently::db::models::Role;
use serde_json::json;

use crate::support::{BOOK, SEATS, TestApp, WAIT, WsClient, eventually, operation_errors, seats};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_sees_the_current_count_then_every_change() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event_id = app.event(&organizer, 10).await;
    let init = json!({ "Authorization": format!("Bearer {}", buyer.token) });
    let mut client = app.connect_ws(init).await;
    client
        .subscribe("1", SEATS, json!({ "id": event_id }))
        .await;
    let first = client.next_data().await;
    assert_eq!(
        first["data"]["seatAvailability"],
        json!({ "eventId": event_id, "capacity": 10, "seatsAvailable": 10, "soldOut": false, "version": 1 })
    );

    let booked = app
        .gql_ok(
            Some(&buyer.token),
            BOOK,
            json!({ "input": { "eventId": event_id, "quantity": 3 } }),
        )
        .await;
    assert_eq!(seats(&mut client).await, (7, 2));
    app.book(&buyer, &event_id, 7).await;
    let sold_out = client.next_data().await;
    assert_eq!(sold_out["data"]["seatAvailability"]["soldOut"], true);
    let id = booked["bookSeats"]["id"].as_str().unwrap();
    app.gql_ok(
        Some(&buyer.token),
        "mutation($id: ID!) { cancelBooking(id: $id) { id } }",
        json!({ "id": id }),
    )
    .await;
    assert_eq!(seats(&mut client).await, (3, 4));
    app.gql_ok(
        Some(&organizer.token),
        "mutation($id: ID!) { updateEvent(id: $id, input: { capacity: 20 }) { id } }",
        json!({ "id": event_id }),
    )
    .await;
    assert_eq!(seats(&mut client).await, (13, 5));
    app.gql_ok(
        Some(&organizer.token),
        "mutation($id: ID!) { cancelEvent(id: $id) { id } }",
        json!({ "id": event_id }),
    )
    .await;
    assert_eq!(seats(&mut client).await, (20, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_see_each_others_changes_through_redis() {
    let first = TestApp::spawn().await;
    let second = first.spawn_peer().await;
    let organizer = first.user(Role::Organizer).await;
    let buyer = first.user(Role::User).await;
    let event_id = first.event(&organizer, 50).await;
    let mut on_first = first.connect_ws(json!({})).await;
    let mut on_second = second.connect_ws(json!({})).await;
    on_first
        .subscribe("a", SEATS, json!({ "id": event_id }))
        .await;
    on_second
        .subscribe("b", SEATS, json!({ "id": event_id }))
        .await;
    assert_eq!(seats(&mut on_first).await, (50, 1));
    assert_eq!(seats(&mut on_second).await, (50, 1));

    // A booking on the second instance reaches the first instance's subscriber, and vice versa.
    second.book(&buyer, &event_id, 5).await;
    assert_eq!(seats(&mut on_first).await, (45, 2));
    assert_eq!(seats(&mut on_second).await, (45, 2));
    first.book(&buyer, &event_id, 2).await;
    assert_eq!(seats(&mut on_second).await, (43, 3));
    assert_eq!(seats(&mut on_first).await, (43, 3));
}

#[tokio::test]
async fn the_legacy_graphql_ws_protocol_works_too() {
    let app = TestApp::spawn_without_redis().await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 8).await;
    let mut client = WsClient::connect(
        &app.ws_url(),
        "graphql-ws",
        json!({ "authToken": organizer.token }),
    )
    .await
    .unwrap();
    client
        .subscribe("1", SEATS, json!({ "id": event_id }))
        .await;
    assert_eq!(seats(&mut client).await, (8, 1));
    app.book(&organizer, &event_id, 2).await;
    assert_eq!(seats(&mut client).await, (6, 2));
}

#[tokio::test]
async fn a_bad_token_in_connection_init_is_refused() {
    let app = TestApp::spawn_without_redis().await;
    let refused = WsClient::connect(
        &app.ws_url(),
        "graphql-transport-ws",
        json!({ "Authorization": "Bearer forged" }),
    )
    .await;
    assert!(refused.is_err(), "a forged token must not be acknowledged");
}

#[tokio::test]
async fn subscribing_to_an_unknown_event_is_an_error_with_a_code() {
    let app = TestApp::spawn_without_redis().await;
    let mut client = app.connect_ws(json!({})).await;
    client
        .subscribe("1", SEATS, json!({ "id": uuid::Uuid::new_v4() }))
        .await;
    let message = client.next_message().await.unwrap();
    let errors = operation_errors(&message);
    assert_eq!(errors[0]["extensions"]["code"], "NOT_FOUND", "{message}");
    assert_eq!(
        app.state.bus.local_channel_count(),
        0,
        "the failed subscription left no channel behind"
    );
}

#[tokio::test]
async fn an_open_connection_loses_its_rights_when_the_session_ends() {
    let app = TestApp::spawn_without_redis().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event_id = app.event(&organizer, 10).await;
    let init = json!({ "Authorization": format!("Bearer {}", buyer.token) });
    let mut client = app.connect_ws(init).await;
    let book = json!({ "input": { "eventId": event_id } });
    client.subscribe("1", BOOK, book.clone()).await;
    assert_eq!(
        client.next_data().await["data"]["bookSeats"]["status"],
        "CONFIRMED"
    );
    assert_eq!(client.next_message().await.unwrap()["type"], "complete");

    app.gql_ok(Some(&buyer.token), "mutation { logout }", json!({}))
        .await;
    client.subscribe("2", BOOK, book).await;
    let refused = client.next_message().await.unwrap();
    let errors = operation_errors(&refused);
    assert_eq!(
        errors[0]["extensions"]["code"], "UNAUTHENTICATED",
        "{refused}"
    );
    assert_eq!(app.count("bookings").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_seat_subscriptions_share_one_execution() {
    let app = TestApp::spawn_without_redis().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event_id = app.event(&organizer, 10).await;
    let uuid: uuid::Uuid = event_id.parse().unwrap();
    let topic = evently::realtime::Topic::Seats(uuid);
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = app.connect_ws(json!({})).await;
        client
            .subscribe("s", SEATS, json!({ "id": event_id }))
            .await;
        assert_eq!(seats(&mut client).await, (10, 1));
        clients.push(client);
    }
    assert_eq!(app.state.bus.local_subscriber_count(topic), 1);
    // Another selection is another execution.
    let mut other = app.connect_ws(json!({})).await;
    other
        .subscribe(
            "v",
            "subscription($id: ID!) { seatAvailability(eventId: $id) { version } }",
            json!({ "id": event_id }),
        )
        .await;
    assert_eq!(
        other.next_data().await["data"]["seatAvailability"]["version"],
        1
    );
    assert_eq!(app.state.bus.local_subscriber_count(topic), 2);

    app.book(&buyer, &event_id, 4).await;
    for client in &mut clients {
        assert_eq!(seats(client).await, (6, 2));
    }
    // A late joiner starts from the current state, not the first one the execution sent.
    let mut late = app.connect_ws(json!({})).await;
    late.subscribe("s", SEATS, json!({ "id": event_id })).await;
    assert_eq!(seats(&mut late).await, (6, 2));
    // Completing one does not end the others.
    clients[0]
        .send(json!({ "id": "s", "type": "complete" }))
        .await;
    app.book(&buyer, &event_id, 1).await;
    assert_eq!(seats(&mut clients[1]).await, (5, 3));
    assert_eq!(seats(&mut late).await, (5, 3));

    // When everyone has left, the execution and the channel go away.
    drop((clients, other, late));
    eventually(WAIT, || async {
        (app.state.bus.local_channel_count() == 0)
            .then_some(())
            .ok_or("the channel outlived its subscribers")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_over_a_websocket_looks_its_caller_up_once_per_operation() {
    // No sweeper rounds: only the operations' statements are counted.
    let (app, proxy) = crate::support::spawn_behind_database_proxy(|config| {
        config.sweep_interval = Duration::from_secs(3600);
    })
    .await;
    let organizer = app.user(Role::Organizer).await;
    for _ in 0..40 {
        app.event(&organizer, 10).await;
    }
    let init = json!({ "Authorization": format!("Bearer {}", organizer.token) });
    let mut client = app.connect_ws(init).await;
    // Every `email` asks who the caller is: before, each asked PostgreSQL again.
    let query = "{ events(first: 40) { edges { node { organizer { email } } } } }";
    for id in ["1", "2"] {
        // PostgreSQL's Sync message ends every statement sent: one per round trip.
        proxy.count(b"S\0\0\0\x04");
        client.subscribe(id, query, json!({})).await;
        let data = client.next_data().await;
        let edges = data["data"]["events"]["edges"].as_array().unwrap();
        assert_eq!(edges.len(), 40, "{data}");
        assert!(
            edges
                .iter()
                .all(|e| e["node"]["organizer"]["email"].is_string())
        );
        assert_eq!(client.next_message().await.unwrap()["type"], "complete");
        // Looking the caller up for each `email` costs at least two round trips per event
        // (80 or more; 230 were measured before the fix). Batching the organizers' DataLoader
        // may split under load, and each pooled checkout pings, so the bound leaves room.
        let round_trips = proxy.counted();
        assert!(
            round_trips < 40,
            "one list of 40 events took {round_trips} round trips to PostgreSQL"
        );
    }
    // Each operation checks the session again: a logout shows at the next one.
    app.gql_ok(Some(&organizer.token), "mutation { logout }", json!({}))
        .await;
    client.subscribe("3", "{ me { id } }", json!({})).await;
    let message = client.next_message().await.unwrap();
    assert_eq!(
        operation_errors(&message)[0]["extensions"]["code"],
        "UNAUTHENTICATED",
        "{message}"
    );
}
