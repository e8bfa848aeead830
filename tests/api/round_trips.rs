//! Round trips to PostgreSQL per browse request, counted at a proxy in front of the database
//! as PostgreSQL `Sync` messages (one per extended-protocol exchange) and simple queries
//! (`BEGIN`, `COMMIT`). The pool has one connection, warmed by the same request first, so the
//! counts are of a connection whose prepared statements are cached, as in steady state.
//!
//! Before this was measured, a page of events cost 4 round trips (a `SELECT 1` when the
//! connection left the pool, the page, and both again for the organizers' DataLoader), one
//! event 4, and a signed-in page asking for `me` 6.

use evently::db::models::Role;
use serde_json::json;

use crate::support::{FaultProxy, TestApp, spawn_behind_database_proxy};

/// PostgreSQL's `Sync` message: the end of one extended-protocol exchange.
const SYNC: &[u8] = b"S\0\0\0\x04";

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
    proxy.count(SYNC);
    app.gql_ok(token, query, variables.clone()).await;
    let syncs = proxy.counted();
    proxy.count(b"BEGIN");
    app.gql_ok(token, query, variables).await;
    let begins = proxy.counted();
    proxy.count(b"COMMIT");
    (syncs + begins, begins)
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
