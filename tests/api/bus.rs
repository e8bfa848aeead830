//! The bus under load and under faults: a user's booking changes arrive complete however many
//! come at once and however slowly they are read, and a Redis subscription that stops answering
//! is noticed, reported by `/readyz`, replaced and caught up from the database.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::Data;
use evently::db::models::Role;
use evently::graphql::context::Caller;
use evently::realtime::Topic;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{BOOK, TestApp, TestUser};
use crate::websocket::{WAIT, WsClient};

const TRANSPORT: &str = "graphql-transport-ws";
const MY_BOOKINGS: &str = "subscription { myBookingUpdates { id ... on Booking { status } } }";
const CANCEL_EVENT: &str = "mutation($id: ID!) { cancelEvent(id: $id) { id } }";

fn init(token: &str) -> Value {
    json!({ "Authorization": format!("Bearer {token}") })
}

async fn book(app: &TestApp, token: &str, event_id: &str) -> String {
    let data = app
        .gql_ok(
            Some(token),
            BOOK,
            json!({ "input": { "eventId": event_id, "quantity": 1 } }),
        )
        .await;
    data["bookSeats"]["id"].as_str().unwrap().to_owned()
}

/// `count` bookings of one seat each for `buyer`, all at once.
async fn many_bookings(
    app: &TestApp,
    buyer: &TestUser,
    event_id: &str,
    count: usize,
) -> Vec<String> {
    let all = (0..count).map(|_| book(app, &buyer.token, event_id));
    futures_util::future::join_all(all).await
}

/// Reads `myBookingUpdates` messages until every one of `expected` was seen CANCELLED; any other
/// booking or status fails the test.
async fn collect_cancellations(client: &mut WsClient, expected: &[String]) {
    let mut cancelled: HashMap<String, usize> = HashMap::new();
    while cancelled.len() < expected.len() {
        let message = client.next_message().await.unwrap_or_else(|error| {
            panic!(
                "only {} of {} cancellations arrived: {error}",
                cancelled.len(),
                expected.len()
            )
        });
        assert_eq!(message["type"], "next", "{message}");
        let booking = &message["payload"]["data"]["myBookingUpdates"];
        let id = booking["id"].as_str().unwrap().to_owned();
        assert!(
            expected.contains(&id),
            "a booking not cancelled here: {booking}"
        );
        assert_eq!(booking["status"], "CANCELLED", "{booking}");
        *cancelled.entry(id).or_default() += 1;
    }
}

/// Subscribes to the buyer's `myBookingUpdates` on `app` and waits until it is attached: a
/// booking made afterwards (on another event) is the first message.
async fn booking_feed(app: &TestApp, organizer: &TestUser, buyer: &TestUser) -> WsClient {
    let mut client = WsClient::connect(&app.ws_url(), TRANSPORT, init(&buyer.token))
        .await
        .unwrap();
    client.subscribe("mine", MY_BOOKINGS, json!({})).await;
    let other_event = app.event(organizer, 10).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while app
        .state
        .bus
        .local_subscriber_count(Topic::UserBookings(buyer.id))
        == 0
    {
        assert!(tokio::time::Instant::now() < deadline, "never subscribed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sentinel = book(app, &buyer.token, &other_event).await;
    let first = client.next_data().await;
    assert_eq!(first["data"]["myBookingUpdates"]["id"], sentinel.as_str());
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cancellation_of_a_cancelled_event_reaches_the_owner_on_another_instance() {
    let first = TestApp::spawn().await;
    let second = first.spawn_peer().await;
    let organizer = first.user(Role::Organizer).await;
    let buyer = first.user(Role::User).await;
    let event_id = first.event(&organizer, 100).await;
    let bookings = many_bookings(&first, &buyer, &event_id, 90).await;
    let mut feed = booking_feed(&second, &organizer, &buyer).await;

    first
        .gql_ok(
            Some(&organizer.token),
            CANCEL_EVENT,
            json!({ "id": event_id }),
        )
        .await;
    collect_cancellations(&mut feed, &bookings).await;
    first.assert_invariant().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_reads_nothing_while_its_bookings_change_still_gets_every_change() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event_id = app.event(&organizer, 200).await;
    let bookings = many_bookings(&app, &buyer, &event_id, 150).await;

    // The subscription run as a WebSocket runs it, but polled only when the test says so.
    let schema = evently::graphql::build_schema(app.state.clone());
    let mut session = Data::default();
    session.insert(Caller::Connection(buyer.token.clone()));
    evently::graphql::loaders::install(&app.state, &mut session);
    let mut stream = schema.execute_stream_with_session_data(
        async_graphql::Request::new(MY_BOOKINGS),
        Arc::new(session),
    );
    let topic = Topic::UserBookings(buyer.id);
    let deadline = tokio::time::Instant::now() + WAIT;
    while app.state.bus.local_subscriber_count(topic) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never subscribed");
        let early = tokio::time::timeout(Duration::from_millis(10), stream.next()).await;
        assert!(early.is_err(), "a message before any change: {early:?}");
    }

    // 150 changes while the stream is not polled at all: far more than any buffer holds.
    app.gql_ok(
        Some(&organizer.token),
        CANCEL_EVENT,
        json!({ "id": event_id }),
    )
    .await;
    let mut cancelled = HashMap::new();
    while cancelled.len() < bookings.len() {
        let response = tokio::time::timeout(WAIT, stream.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {} cancellations arrived",
                    cancelled.len(),
                    bookings.len()
                )
            })
            .expect("the subscription goes on");
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        let data = response.data.into_json().unwrap();
        let booking = &data["myBookingUpdates"];
        let id = booking["id"].as_str().unwrap().to_owned();
        assert!(bookings.contains(&id), "{booking}");
        assert_eq!(booking["status"], "CANCELLED", "{booking}");
        cancelled.insert(id, ());
    }
}
