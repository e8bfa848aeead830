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

use crate::support::FaultProxy;
use crate::support::converge;
use crate::support::{BookingId, TestApp, TestUser, eventually, redis_url};
use crate::support::{SEATS, WAIT, WsClient, seats};

const MY_BOOKINGS: &str = "subscription { myBookingUpdates { id ... on Booking { status } } }";
const CANCEL_EVENT: &str = "mutation($id: ID!) { cancelEvent(id: $id) { id } }";

fn init(token: &str) -> Value {
    json!({ "Authorization": format!("Bearer {token}") })
}

/// `count` bookings of one seat each for `buyer`, all at once.
async fn many_bookings(
    app: &TestApp,
    buyer: &TestUser,
    event_id: &str,
    count: usize,
) -> Vec<BookingId> {
    let all = (0..count).map(|_| app.book(buyer, event_id, 1));
    futures_util::future::join_all(all).await
}

/// Reads `myBookingUpdates` messages until every one of `expected` was seen CANCELLED; any other
/// booking or status fails the test.
async fn collect_cancellations(client: &mut WsClient, expected: &[BookingId]) {
    let mut cancelled: HashMap<BookingId, usize> = HashMap::new();
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
        let id = BookingId(booking["id"].as_str().unwrap().to_owned());
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
    let mut client = app.connect_ws(init(&buyer.token)).await;
    client.subscribe("mine", MY_BOOKINGS, json!({})).await;
    let other_event = app.event(organizer, 10).await;
    let topic = Topic::UserBookings(buyer.id);
    eventually(WAIT, || async {
        (app.state.bus.local_subscriber_count(topic) > 0)
            .then_some(())
            .ok_or("never subscribed")
    })
    .await;
    let sentinel = app.book(buyer, &other_event, 1).await;
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
        let id = BookingId(booking["id"].as_str().unwrap().to_owned());
        assert!(bookings.contains(&id), "{booking}");
        assert_eq!(booking["status"], "CANCELLED", "{booking}");
        cancelled.insert(id, ());
    }
}

/// PING the subscription often and give up on it soon, so a test sees a dead one in about a
/// second; the deadlines the tests wait with stay far longer (the CPU is shared).
fn quick_heartbeat(config: &mut evently::config::Config) {
    config.redis_ping_interval = Duration::from_millis(200);
    config.redis_ping_timeout = Duration::from_millis(1000);
}

/// An instance whose Redis traffic (subscription, publishing, rate limits) goes through a fault
/// proxy, and a peer that reaches Redis directly: what the watched instance misses while its
/// link is faulty, the peer still publishes and commits.
async fn watched_and_peer() -> (FaultProxy, TestApp, TestApp) {
    let (proxy, proxied) = FaultProxy::in_front_of(&redis_url()).await;
    let watched = TestApp::spawn_on_redis(&proxied, quick_heartbeat).await;
    let peer = watched
        .spawn_peer_with(|config| config.redis_url = Some(redis_url()))
        .await;
    (proxy, watched, peer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_subscription_is_reported_by_readyz_and_caught_up_after_it_resumes() {
    let (proxy, watched, peer) = watched_and_peer().await;
    let organizer = peer.user(Role::Organizer).await;
    let buyer = peer.user(Role::User).await;
    let event_id = peer.event(&organizer, 50).await;
    let mut client = watched.connect_ws(json!({})).await;
    client
        .subscribe("s", SEATS, json!({ "id": event_id }))
        .await;
    assert_eq!(seats(&mut client).await, (50, 1));
    assert_eq!(watched.wait_for_readiness("ready").await.0, 200);
    peer.book(&buyer, &event_id, 1).await;
    converge(&mut client, (49, 2)).await;

    proxy.stall();
    // Noticed by the heartbeat and reported, with the reason, while the link is down (still
    // 200: bookings are correct without Redis).
    let (code, body) = watched.wait_for_readiness("degraded").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["redis"], "down", "{body}");
    let names_the_subscription = |body: &Value| {
        body["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("subscription"))
    };
    if !names_the_subscription(&body) {
        eventually(WAIT, || async {
            let (_, body) = watched.readiness().await;
            if names_the_subscription(&body) {
                Ok(())
            } else {
                Err(format!("readiness never named the subscription: {body}"))
            }
        })
        .await;
    }

    // The peer goes on booking; nothing of it can reach the watched instance for now.
    peer.book(&buyer, &event_id, 1).await;
    peer.book(&buyer, &event_id, 1).await;
    proxy.resume();
    converge(&mut client, (47, 4)).await;
    assert_eq!(watched.wait_for_readiness("ready").await.0, 200);
    // And the bus carries the peer's changes again.
    peer.book(&buyer, &event_id, 1).await;
    converge(&mut client, (46, 5)).await;
    peer.assert_invariant().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_subscription_that_went_silent_for_good_is_replaced_and_caught_up() {
    let (proxy, watched, peer) = watched_and_peer().await;
    let organizer = peer.user(Role::Organizer).await;
    let buyer = peer.user(Role::User).await;
    let event_id = peer.event(&organizer, 50).await;
    let mut seats_feed = watched.connect_ws(json!({})).await;
    seats_feed
        .subscribe("s", SEATS, json!({ "id": event_id }))
        .await;
    assert_eq!(seats(&mut seats_feed).await, (50, 1));
    let mut bookings_feed = booking_feed(&watched, &organizer, &buyer).await;
    assert_eq!(watched.wait_for_readiness("ready").await.0, 200);

    // Every connection open now (the subscription among them) goes silent without closing;
    // new connections work. Nothing but a heartbeat can tell.
    proxy.strand();
    let booking = peer.book(&buyer, &event_id, 1).await;
    converge(&mut seats_feed, (49, 2)).await;
    let data = bookings_feed.next_data().await;
    assert_eq!(
        data["data"]["myBookingUpdates"],
        json!({ "id": booking, "status": "CONFIRMED" })
    );
    assert_eq!(watched.wait_for_readiness("ready").await.0, 200);
    peer.assert_invariant().await;
}
