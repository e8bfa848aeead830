//! Round trips to PostgreSQL per request, counted at a proxy in front of the database (the
//! server sending again after PostgreSQL answered; queries pipelined together count once).
//! The pool has one connection, warmed by the same request first, so the counts are of a
//! connection whose prepared statements are cached, as in steady state.
//!
//! Before this was measured, a page of events cost 4 round trips (a `SELECT 1` when the
//! connection left the pool, the page, and both again for the organizers' DataLoader), one
//! event 4, and a signed-in page asking for `me` 6. A booking through the group commit took
//! 13 with an idempotency key and 10 without (the key lookup and the insert were hand-written
//! SQL, prepared anew each time, and the lookup a round trip of its own); now 9 either way.

use evently::db::models::Role;
use serde_json::json;

use crate::support::{FaultProxy, TestApp, spawn_behind_database_proxy};

const LIST: &str = "query { events(first: 20) { edges { node { id title venue startsAt capacity \
    seatsAvailable seatsHeld soldOut organizer { id name } } } pageInfo { hasNextPage endCursor } } }";
const DETAIL: &str = "query($id: ID!) { event(id: $id) { id title description venue startsAt \
    endsAt capacity seatsAvailable maxPerBooking status organizer { id name } } }";
const SIGNED_IN_LIST: &str = "query { me { id name role } events(first: 20) { edges { node { id \
    title seatsAvailable organizer { id name } } } } }";

/// The round trips one request costs once its statements are prepared, and how many of them
/// were `BEGIN`.
async fn round_trips(
    app: &TestApp,
    proxy: &FaultProxy,
    token: Option<&str>,
    query: &str,
    variables: serde_json::Value,
) -> (usize, usize) {
    // Twice: the first prepares the statements on the one connection.
    for _ in 0..2 {
        app.gql_ok(token, query, variables.clone()).await;
    }
    proxy.round_trips();
    app.gql_ok(token, query, variables.clone()).await;
    let trips = proxy.round_trips();
    proxy.count(b"BEGIN");
    app.gql_ok(token, query, variables).await;
    (trips, proxy.counted())
}

async fn app_with_events() -> (TestApp, FaultProxy, String, String) {
    let (app, proxy) = spawn_behind_database_proxy(|config| {
        config.database_pool_size = 1;
        config.response_cache_ttl = std::time::Duration::ZERO;
        // The session cache's epoch reads (one per fifth of a lease) go through the same
        // proxy: a long lease keeps them out of the few requests counted here.
        config.session_cache_lease = std::time::Duration::from_secs(60);
    })
    .await;
    let organizer = app.user(Role::Organizer).await;
    let mut first = None;
    for _ in 0..3 {
        first.get_or_insert(app.event(&organizer, 10).await);
    }
    let buyer = app.user(Role::User).await;
    (app, proxy, first.unwrap().to_string(), buyer.token)
}

#[tokio::test]
async fn a_page_of_events_with_their_organizers_is_one_round_trip() {
    let (app, proxy, _, _) = app_with_events().await;
    let (trips, begins) = round_trips(&app, &proxy, None, LIST, json!({})).await;
    assert_eq!((trips, begins), (1, 0), "round trips (and BEGINs) per page");
}

#[tokio::test]
async fn an_event_with_its_organizer_is_one_round_trip() {
    let (app, proxy, event, _) = app_with_events().await;
    let (trips, begins) = round_trips(&app, &proxy, None, DETAIL, json!({ "id": event })).await;
    assert_eq!(
        (trips, begins),
        (1, 0),
        "round trips (and BEGINs) per event"
    );
}

#[tokio::test]
async fn a_signed_in_page_costs_no_more_round_trips_than_an_anonymous_one() {
    let (app, proxy, _, token) = app_with_events().await;
    let (trips, begins) = round_trips(&app, &proxy, Some(&token), SIGNED_IN_LIST, json!({})).await;
    assert_eq!(
        (trips, begins),
        (1, 0),
        "round trips (and BEGINs) per signed-in page: the session comes from the cache"
    );
}

/// The round trips of one `bookSeats` (a batch of one, through the group commit) once the
/// connection's statements are prepared.
async fn booking_round_trips(
    app: &TestApp,
    proxy: &FaultProxy,
    token: &str,
    event: &str,
    key: Option<&str>,
) -> usize {
    let input = |n: usize| {
        let mut input = json!({ "eventId": event, "quantity": 1 });
        if let Some(key) = key {
            input["idempotencyKey"] = json!(format!("{key}-{n}"));
        }
        json!({ "input": input })
    };
    for n in 0..2 {
        app.gql_ok(Some(token), crate::support::BOOK, input(n))
            .await;
    }
    proxy.round_trips();
    app.gql_ok(Some(token), crate::support::BOOK, input(2))
        .await;
    proxy.round_trips()
}

#[tokio::test]
async fn a_booking_with_an_idempotency_key_costs_no_more_round_trips_than_one_without() {
    let (app, proxy, event, token) = app_with_events().await;
    let without = booking_round_trips(&app, &proxy, &token, &event, None).await;
    let with = booking_round_trips(&app, &proxy, &token, &event, Some("key")).await;
    assert_eq!(
        with, without,
        "round trips of a booking with a fresh key ({with}) and without ({without})"
    );
}
