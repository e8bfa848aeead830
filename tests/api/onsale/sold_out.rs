//! The sold-out hint: a sold-out event is refused from memory until a seat comes back, and a
//! retry whose key booked on another instance still gets its booking.

use super::*;

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

#[tokio::test]
async fn a_retry_whose_key_booked_on_another_instance_gets_its_booking_while_sold_out() {
    let app = TestApp::spawn().await;
    let peer = app.spawn_peer().await;
    let organizer = app.user(Role::Organizer).await;
    let (first, second) = (app.user(Role::User).await, app.user(Role::User).await);
    let event_id = app.event(&organizer, 1).await;
    let book = async |target: &TestApp, buyer: &TestUser, key: &str| {
        let input = json!({ "eventId": event_id, "idempotencyKey": key });
        target
            .gql(Some(&buyer.token), BOOK, json!({ "input": input }))
            .await
    };
    // This instance sells the last seat and remembers the event as sold out.
    let sold = outcome(&book(&app, &first, "a").await).unwrap();
    assert!(app.state.onsale.known_sold_out(event_id.parse().unwrap()));
    // On the other instance, the seat comes back and is booked again under another key.
    peer.gql_ok(Some(&first.token), CANCEL, json!({ "id": sold }))
        .await;
    let rebooked = outcome(&book(&peer, &second, "b").await).unwrap();
    // Its retry on this instance gets the booking back.
    assert_eq!(outcome(&book(&app, &second, "b").await), Ok(rebooked));
    app.assert_invariant().await;
}
