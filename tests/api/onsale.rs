//! The onsale path: batched bookings (group commit) racing each other across instances and
//! the one-transaction-per-booking path, and the sold-out hint.

use std::collections::HashMap;

use evently::db::models::Role;
use evently::domain::bookings::BookingRequest;
use evently::domain::onsale::{Buyer, Onsale};
use futures_util::future::join_all;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{BOOK, CANCEL, TestApp, error_code};

/// What one request came to: the booking id, or the error code.
fn outcome(body: &Value) -> Result<String, String> {
    match body.get("errors") {
        Some(_) => Err(error_code(body).to_owned()),
        None => Ok(body["data"]["bookSeats"]["id"].as_str().unwrap().to_owned()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_on_two_instances_and_the_single_path_never_oversell_or_book_a_key_twice() {
    let app = TestApp::spawn().await;
    let peer = app.spawn_peer().await;
    // A third way in: one transaction per booking, as with EVENTLY_GROUP_COMMIT=false.
    let single = Onsale::new(app.state.db.clone(), app.state.bus.clone(), false);
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 120).await;
    let event_uuid: Uuid = event_id.parse().unwrap();
    let buyers = join_all((0..40).map(|_| app.user(Role::User))).await;

    // 200 keys, each sent three times (once by each path) with the same request: 400 seats
    // wanted in quantities of 1 to 3, for 120 seats.
    let request = |k: usize| {
        (
            &buyers[k % buyers.len()],
            1 + (k % 3) as i32,
            format!("key-{k}"),
        )
    };
    let event = event_id.as_str();
    let over_http = (0..400).map(|i| {
        let k = i % 200;
        let (buyer, quantity, key) = request(k);
        let instance = if i < 200 { &app } else { &peer };
        async move {
            let variables = json!({ "input": {
                "eventId": event, "quantity": quantity, "idempotencyKey": key,
            } });
            (
                k,
                outcome(&instance.gql(Some(&buyer.token), BOOK, variables).await),
            )
        }
    });
    let direct = (0..200).map(|k| {
        let (buyer, quantity, key) = request(k);
        let (single, app) = (&single, &app);
        async move {
            let claims = app.state.tokens.decode(&buyer.token).unwrap();
            let who = Buyer {
                user_id: buyer.id,
                session_id: claims.sid,
            };
            let result = single
                .book(
                    who,
                    BookingRequest {
                        event_id: event_uuid,
                        quantity,
                        idempotency_key: Some(key),
                        seat_ids: Vec::new(),
                    },
                )
                .await;
            let result = result
                .map(|change| change.booking.id.to_string())
                .map_err(|error| error.code().to_owned());
            (k, result)
        }
    });
    let (http, direct) = tokio::join!(join_all(over_http), join_all(direct));

    let mut by_key: HashMap<usize, Vec<Result<String, String>>> = HashMap::new();
    for (k, result) in http.into_iter().chain(direct) {
        by_key.entry(k).or_default().push(result);
    }
    let mut booked = 0;
    for (k, results) in &by_key {
        assert_eq!(results.len(), 3);
        // Every copy of a request gets the same answer: one booking, or SOLD_OUT for all.
        assert!(
            results.iter().all(|r| r == &results[0]),
            "key {k} answered differently: {results:?}"
        );
        match &results[0] {
            Ok(_) => booked += 1,
            Err(code) => assert_eq!(code, "SOLD_OUT", "key {k}"),
        }
    }
    assert_eq!(
        app.count("bookings WHERE status = 'CONFIRMED'").await,
        booked,
        "one row per key that was booked"
    );
    assert_eq!(
        app.count(
            "(SELECT user_id, idempotency_key FROM bookings GROUP BY 1, 2 HAVING count(*) > 1) d"
        )
        .await,
        0
    );
    app.assert_invariant().await;
    // More seats were wanted than exist, in quantities of at most 3.
    assert_eq!(
        app.count(&format!(
            "events WHERE id = '{event_id}' AND seats_available < 3"
        ))
        .await,
        1
    );
}

#[tokio::test]
async fn a_sold_out_event_is_refused_from_memory_until_a_seat_comes_back() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event_id = app.event(&organizer, 2).await;
    let book = |key: &str| {
        app.gql(
            Some(&buyer.token),
            BOOK,
            json!({ "input": { "eventId": event_id, "idempotencyKey": key } }),
        )
    };
    let first = outcome(&book("first").await).unwrap();
    assert!(!app.state.onsale.known_sold_out(event_id.parse().unwrap()));
    // The batch that takes the last seat marks the event.
    outcome(&book("second").await).unwrap();
    assert!(app.state.onsale.known_sold_out(event_id.parse().unwrap()));

    let refused = book("third").await;
    assert_eq!(error_code(&refused), "SOLD_OUT");
    assert_eq!(refused["errors"][0]["extensions"]["seatsAvailable"], 0);

    let retry = |key: &str| BookingRequest {
        event_id: event_id.parse().unwrap(),
        quantity: 1,
        idempotency_key: Some(key.to_owned()),
        seat_ids: Vec::new(),
    };
    let unkeyed = BookingRequest {
        idempotency_key: None,
        ..retry("")
    };
    assert!(
        app.state.onsale.refuses(buyer.id, &unkeyed),
        "refused from memory"
    );
    assert!(
        !app.state.onsale.refuses(buyer.id, &retry("first")),
        "a retry is never refused from memory"
    );
    // A retry of a booking that went through still gets its booking back, not SOLD_OUT.
    assert_eq!(outcome(&book("first").await), Ok(first.clone()));
    assert_eq!(error_code(&book("fourth").await), "SOLD_OUT");

    app.gql_ok(Some(&buyer.token), CANCEL, json!({ "id": first }))
        .await;
    assert!(!app.state.onsale.known_sold_out(event_id.parse().unwrap()));
    outcome(&book("fifth").await).expect("the returned seat is sold at once");
    app.assert_invariant().await;

    // The session is checked with the booking: once signed out, the token books nothing.
    app.gql_ok(Some(&buyer.token), "mutation { logout }", json!({}))
        .await;
    let bookings = app.count("bookings").await;
    let other = app.event(&organizer, 5).await;
    let refused = app
        .gql(
            Some(&buyer.token),
            BOOK,
            json!({ "input": { "eventId": other } }),
        )
        .await;
    assert_eq!(error_code(&refused), "UNAUTHENTICATED", "{refused}");
    assert_eq!(app.count("bookings").await, bookings);
}
