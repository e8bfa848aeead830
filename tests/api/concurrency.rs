//! Many requests at once, then the invariants checked in SQL.

use evently::db::models::Role;
use futures_util::future::join_all;
use serde_json::json;

use crate::support::{BOOK, CANCEL, TestApp, TestUser, error_code};

/// `n` one-seat bookings spread over `buyers`, all sent together once awaited.
fn book_one_seat_each<'a>(
    app: &'a TestApp,
    buyers: &'a [TestUser],
    event_id: &'a str,
    n: usize,
) -> impl Iterator<Item = impl Future<Output = serde_json::Value> + 'a> {
    (0..n).map(move |i| {
        let token = &buyers[i % buyers.len()].token;
        app.gql(
            Some(token),
            BOOK,
            json!({ "input": { "eventId": event_id } }),
        )
    })
}

async fn users(app: &TestApp, n: usize) -> Vec<TestUser> {
    join_all((0..n).map(|_| app.user(Role::User))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_buyers_on_fifty_seats_sell_exactly_fifty() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 50).await;
    let buyers = users(&app, 30).await;
    let attempts = book_one_seat_each(&app, &buyers, &event_id, 300);
    let results = join_all(attempts).await;
    let confirmed = results.iter().filter(|r| r.get("errors").is_none()).count();
    let sold_out = results
        .iter()
        .filter(|r| r.get("errors").is_some() && error_code(r) == "SOLD_OUT")
        .count();
    assert_eq!(confirmed, 50);
    assert_eq!(sold_out, 250, "every other attempt is SOLD_OUT");
    app.assert_invariant().await;
    assert_eq!(app.count("bookings WHERE status = 'CONFIRMED'").await, 50);
    assert_eq!(
        app.count(&format!(
            "events WHERE id = '{event_id}' AND seats_available = 0 AND version = 51"
        ))
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_simultaneous_cancels_return_the_seats_once() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event_id = app.event(&organizer, 10).await;
    let booking_id = app.book(&buyer, &event_id, 4).await;
    let results =
        join_all((0..20).map(|_| app.gql(Some(&buyer.token), CANCEL, json!({ "id": booking_id }))))
            .await;
    for result in &results {
        assert!(result.get("errors").is_none(), "{result}");
        assert_eq!(result["data"]["cancelBooking"]["status"], "CANCELLED");
    }
    let cancelled_at: Vec<_> = results
        .iter()
        .map(|r| r["data"]["cancelBooking"]["cancelledAt"].clone())
        .collect();
    assert!(
        cancelled_at.windows(2).all(|w| w[0] == w[1]),
        "one cancellation, reported to all: {cancelled_at:?}"
    );
    app.assert_invariant().await;
    assert_eq!(
        app.count(&format!(
            "events WHERE id = '{event_id}' AND seats_available = 10 AND version = 3"
        ))
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_simultaneous_retries_with_one_key_make_one_booking() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event_id = app.event(&organizer, 100).await;
    let input =
        json!({ "input": { "eventId": event_id, "quantity": 2, "idempotencyKey": "checkout-42" } });
    let results = join_all((0..20).map(|_| app.gql(Some(&buyer.token), BOOK, input.clone()))).await;
    let ids: std::collections::HashSet<_> = results
        .iter()
        .map(|r| {
            assert!(r.get("errors").is_none(), "{r}");
            r["data"]["bookSeats"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "every retry returns the same booking");
    assert_eq!(app.count("bookings").await, 1);
    assert_eq!(
        app.count(&format!(
            "events WHERE id = '{event_id}' AND seats_available = 98"
        ))
        .await,
        1
    );

    // The same key for a different request is a conflict; another user's same key is theirs.
    let changed =
        json!({ "input": { "eventId": event_id, "quantity": 3, "idempotencyKey": "checkout-42" } });
    assert_eq!(
        error_code(&app.gql(Some(&buyer.token), BOOK, changed).await),
        "CONFLICT"
    );
    let other = app.user(Role::User).await;
    app.gql_ok(Some(&other.token), BOOK, input).await;
    app.assert_invariant().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bookings_racing_a_capacity_reduction_never_oversell() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 100).await;
    let buyers = users(&app, 10).await;
    let bookings = book_one_seat_each(&app, &buyers, &event_id, 80);
    let reductions = (0..5).map(|i| {
        let (app, organizer, event_id) = (&app, &organizer, &event_id);
        async move {
            let capacity = 60 - i * 10;
            app.gql(
                Some(&organizer.token),
                "mutation($id: ID!, $c: Int!) { updateEvent(id: $id, input: { capacity: $c }) { capacity seatsAvailable } }",
                json!({ "id": event_id, "c": capacity }),
            )
            .await
        }
    });
    let (booked, reduced) = tokio::join!(join_all(bookings), join_all(reductions));
    for result in &booked {
        if result.get("errors").is_some() {
            assert_eq!(error_code(result), "SOLD_OUT", "{result}");
        }
    }
    for result in &reduced {
        if result.get("errors").is_some() {
            assert_eq!(error_code(result), "BAD_USER_INPUT", "{result}");
        }
    }
    app.assert_invariant().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_an_event_while_buyers_book_leaves_no_confirmed_booking() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 500).await;
    let buyers = users(&app, 10).await;
    let bookings = book_one_seat_each(&app, &buyers, &event_id, 100);
    let cancel = app.gql(
        Some(&organizer.token),
        "mutation($id: ID!) { cancelEvent(id: $id) { status seatsAvailable } }",
        json!({ "id": event_id }),
    );
    let (booked, cancelled) = tokio::join!(join_all(bookings), cancel);
    assert_eq!(
        cancelled["data"]["cancelEvent"]["status"], "CANCELLED",
        "{cancelled}"
    );
    for result in booked.iter().filter(|r| r.get("errors").is_some()) {
        assert_eq!(
            result["errors"][0]["extensions"]["reason"], "EVENT_CANCELLED",
            "{result}"
        );
    }
    assert_eq!(
        app.count(&format!(
            "bookings WHERE event_id = '{event_id}' AND status = 'CONFIRMED'"
        ))
        .await,
        0
    );
    app.assert_invariant().await;
}
