//! Seat claims: the seats named are the ones held and booked, a request with one taken seat
//! claims nothing, two buyers never share a seat, and cancelled bookings and expired holds free
//! theirs.

use super::*;

#[tokio::test]
async fn held_seats_then_booked_are_exactly_the_ones_named() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let seated = seated_event(&app, &organizer).await;
    let wanted = [seated.id("A 2-2"), seated.id("A 2-3")];

    let body = hold(&app, &buyer, &seated.event_id, None, &wanted).await;
    assert!(body.get("errors").is_none(), "{body}");
    let held = &body["data"]["holdSeats"];
    assert_eq!(held["quantity"], 2);
    assert_eq!(
        states(&held["seats"]),
        [
            ("A 2-2".to_owned(), "HELD".to_owned()),
            ("A 2-3".to_owned(), "HELD".to_owned())
        ]
    );
    let seats = seat_states(&app, &seated.event_id).await;
    assert_eq!(state_of(&seats, "A 2-2"), "HELD");
    assert_eq!(state_of(&seats, "A 2-3"), "HELD");
    assert_eq!(
        seats
            .iter()
            .filter(|(_, state)| state == "AVAILABLE")
            .count(),
        8
    );
    app.assert_invariant().await;

    let confirmed = app
        .gql_ok(Some(&buyer.token), CONFIRM, json!({ "id": held["id"] }))
        .await;
    let booking = &confirmed["confirmHold"];
    assert_eq!(
        states(&booking["seats"]),
        [
            ("A 2-2".to_owned(), "BOOKED".to_owned()),
            ("A 2-3".to_owned(), "BOOKED".to_owned())
        ]
    );
    let seats = seat_states(&app, &seated.event_id).await;
    assert_eq!(state_of(&seats, "A 2-2"), "BOOKED");
    assert_eq!(state_of(&seats, "A 2-3"), "BOOKED");
    let mine = app
        .gql_ok(
            Some(&buyer.token),
            "{ myBookings { edges { node { id seats { id section row number state } } } } }",
            json!({}),
        )
        .await;
    let node = &mine["myBookings"]["edges"][0]["node"];
    assert_eq!(node["id"], booking["id"]);
    assert_eq!(node["seats"][0]["id"], seated.id("A 2-2"));
    app.assert_invariant().await;

    // Without seat ids, a hold gets the best available: the first free seats in venue order.
    let other = app.user(Role::User).await;
    let body = hold(&app, &other, &seated.event_id, Some(3), &[]).await;
    assert!(body.get("errors").is_none(), "{body}");
    let seats = seat_states(&app, &seated.event_id).await;
    for label in ["A 1-1", "A 1-2", "A 1-3"] {
        assert_eq!(state_of(&seats, label), "HELD", "{label}");
    }
    assert_eq!(state_of(&seats, "A 1-4"), "AVAILABLE");
    // Released, they are free again.
    let released = app
        .gql_ok(
            Some(&other.token),
            "mutation($id: ID!) { releaseHold(holdId: $id) { status } }",
            json!({ "id": body["data"]["holdSeats"]["id"] }),
        )
        .await;
    assert_eq!(released["releaseHold"]["status"], "RELEASED");
    let seats = seat_states(&app, &seated.event_id).await;
    assert_eq!(state_of(&seats, "A 1-1"), "AVAILABLE");
    app.assert_invariant().await;

    // Booked directly by number.
    let body = book(&app, &other, &seated.event_id, &[seated.id("B 1-2")]).await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(body["data"]["bookSeats"]["quantity"], 1);
    let seats = seat_states(&app, &seated.event_id).await;
    assert_eq!(state_of(&seats, "B 1-2"), "BOOKED");
    app.assert_invariant().await;

    // A seat of another venue is not a seat of this event; a GA event has no numbered seats.
    let elsewhere = seated_event(&app, &organizer).await;
    let body = hold(
        &app,
        &other,
        &seated.event_id,
        None,
        &[elsewhere.id("B 1-1")],
    )
    .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "seatIds");
    let ga = app.event(&organizer, 5).await;
    let body = book(&app, &other, &ga, &[seated.id("A 1-1")]).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "seatIds");
    app.assert_invariant().await;
}

#[tokio::test]
async fn a_request_with_one_taken_seat_claims_nothing() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let first = app.user(Role::User).await;
    let second = app.user(Role::User).await;
    let seated = seated_event(&app, &organizer).await;
    hold_ok(&app, &first, &seated.event_id, &[seated.id("B 1-2")]).await;
    let before = seat_states(&app, &seated.event_id).await;
    let three = [seated.id("B 1-1"), seated.id("B 1-2"), seated.id("A 1-1")];

    let body = hold(&app, &second, &seated.event_id, None, &three).await;
    assert_eq!(error_code(&body), "CONFLICT", "{body}");
    assert_eq!(message(&body), "seat B 1-2 is already taken");
    let body = book(&app, &second, &seated.event_id, &three).await;
    assert_eq!(error_code(&body), "CONFLICT", "{body}");
    assert_eq!(message(&body), "seat B 1-2 is already taken");

    assert_eq!(seat_states(&app, &seated.event_id).await, before);
    let user = second.id;
    assert_eq!(
        app.count(&format!("holds WHERE user_id = '{user}'")).await,
        0
    );
    assert_eq!(
        app.count(&format!("bookings WHERE user_id = '{user}'"))
            .await,
        0
    );
    let event = app
        .gql_ok(None, EVENT_SEATS, json!({ "id": seated.event_id }))
        .await;
    assert_eq!(event["event"]["seatsAvailable"], 9);
    app.assert_invariant().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_buyers_on_one_seat() {
    const BUYERS: usize = 16;
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let seated = seated_event(&app, &organizer).await;
    let mut buyers = Vec::new();
    for _ in 0..BUYERS {
        buyers.push(app.user(Role::User).await);
    }
    // One race per contested seat, by holds and direct bookings at once, some asking for a
    // neighbour too: each time exactly one buyer gets the seat.
    for (round, contested) in ["A 1-1", "A 1-2", "B 1-2"].into_iter().enumerate() {
        let seat = seated.id(contested);
        let neighbour = seated.id(&format!("A 2-{}", round + 1));
        let attempts = buyers.iter().enumerate().map(|(i, buyer)| {
            let seat_ids = if i % 3 == 0 {
                vec![neighbour.clone(), seat.clone()]
            } else {
                vec![seat.clone()]
            };
            let app = &app;
            let event_id = &seated.event_id;
            async move {
                if i % 2 == 0 {
                    hold(app, buyer, event_id, None, &seat_ids).await
                } else {
                    book(app, buyer, event_id, &seat_ids).await
                }
            }
        });
        let results = futures_util::future::join_all(attempts).await;
        let winners = results
            .iter()
            .filter(|body| body.get("errors").is_none())
            .count();
        assert_eq!(winners, 1, "round {round}: {results:?}");
        for body in results.iter().filter(|body| body.get("errors").is_some()) {
            assert_eq!(error_code(body), "CONFLICT", "{body}");
            assert!(message(body).ends_with("is already taken"), "{body}");
        }
        let claims = app
            .count(&format!(
                "seat_claims WHERE seat_id = '{seat}' AND event_id = '{}'",
                seated.event_id
            ))
            .await;
        assert_eq!(claims, 1);
        app.assert_invariant().await;
    }
    let states = seat_states(&app, &seated.event_id).await;
    for contested in ["A 1-1", "A 1-2", "B 1-2"] {
        assert_ne!(state_of(&states, contested), "AVAILABLE", "{contested}");
    }
    // No user has a seat twice, and the seat itself is the database's to guard: a second
    // claim on a taken seat is refused by the primary key, whatever the application does.
    assert_eq!(
        app.count(
            "(SELECT c.seat_id FROM seat_claims c
              LEFT JOIN holds h ON h.id = c.hold_id LEFT JOIN bookings b ON b.id = c.booking_id
              GROUP BY COALESCE(h.user_id, b.user_id), c.seat_id HAVING count(*) > 1) twice"
        )
        .await,
        0
    );
    let duplicate = diesel::sql_query(
        "INSERT INTO seat_claims (event_id, seat_id, hold_id, booking_id)
         SELECT event_id, seat_id, hold_id, booking_id FROM seat_claims LIMIT 1",
    )
    .execute(&mut app.db().await)
    .await;
    assert!(
        matches!(
            duplicate,
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _
            ))
        ),
        "a second claim on a seat was not refused by its key: {duplicate:?}"
    );
}

#[tokio::test]
async fn a_cancelled_booking_frees_its_seats() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let other = app.user(Role::User).await;
    let seated = seated_event(&app, &organizer).await;
    let pair = [seated.id("A 1-2"), seated.id("A 1-3")];
    let body = book(&app, &buyer, &seated.event_id, &pair).await;
    assert!(body.get("errors").is_none(), "{body}");
    let booking_id = body["data"]["bookSeats"]["id"].clone();
    let body = book(&app, &other, &seated.event_id, &pair[..1]).await;
    assert_eq!(error_code(&body), "CONFLICT", "{body}");

    let cancelled = app
        .gql_ok(Some(&buyer.token), CANCEL, json!({ "id": booking_id }))
        .await;
    assert_eq!(cancelled["cancelBooking"]["status"], "CANCELLED");
    let seats = seat_states(&app, &seated.event_id).await;
    assert_eq!(state_of(&seats, "A 1-2"), "AVAILABLE");
    assert_eq!(state_of(&seats, "A 1-3"), "AVAILABLE");
    let booking = app
        .gql_ok(
            Some(&buyer.token),
            "{ myBookings { edges { node { status seats { id } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        booking["myBookings"]["edges"][0]["node"],
        json!({ "status": "CANCELLED", "seats": [] })
    );
    app.assert_invariant().await;
    // Free for anyone again.
    let body = book(&app, &other, &seated.event_id, &pair[..1]).await;
    assert!(body.get("errors").is_none(), "{body}");
    app.assert_invariant().await;
}

#[tokio::test]
async fn a_seat_kept_by_an_expired_hold_can_be_bought_before_the_sweeper_comes() {
    let app = TestApp::spawn_with(|config| {
        config.sweep_interval = std::time::Duration::from_secs(3600);
    })
    .await;
    let organizer = app.user(Role::Organizer).await;
    let (first, second) = (app.user(Role::User).await, app.user(Role::User).await);
    let seated = seated_event(&app, &organizer).await;
    let seat = [seated.id("A 1-1")];
    let hold_id = hold_ok(&app, &first, &seated.event_id, &seat).await;
    // Its time runs out; the sweeper has not come round, and other seats are free.
    {
        use diesel_async::RunQueryDsl;
        let expired = diesel::sql_query(format!(
            "UPDATE holds SET expires_at = now() - interval '1 second' WHERE id = '{hold_id}'"
        ))
        .execute(&mut app.db().await)
        .await
        .unwrap();
        assert_eq!(expired, 1);
    }
    let body = book(&app, &second, &seated.event_id, &seat).await;
    assert!(
        body.get("errors").is_none(),
        "an expired hold kept its seat: {body}"
    );
    let seats = seat_states(&app, &seated.event_id).await;
    assert_eq!(state_of(&seats, "A 1-1"), "BOOKED");
    assert_eq!(app.count("holds WHERE status = 'EXPIRED'").await, 1);
    app.assert_invariant().await;
}
