//! Sales terms: the sales window and the per-user cap, checked on create and update and held
//! to by bookings, holds and the waiting list.

use super::*;

#[tokio::test]
async fn sales_terms_are_validated_on_create_and_update() {
    let app = TestApp::spawn_without_redis().await;
    let organizer = app.user(Role::Organizer).await;
    let starts = Utc::now() + Duration::days(7);
    let ends = starts + Duration::hours(2);
    let at = |t: chrono::DateTime<Utc>| t.to_rfc3339();
    // The event's own dates, exactly, so the window can be set against them.
    let dated = |extra: &Value| {
        let mut input = json!({ "startsAt": at(starts), "endsAt": at(ends) });
        for (key, value) in extra.as_object().unwrap() {
            input[key] = value.clone();
        }
        input_with(input)
    };
    let bad = [
        (
            json!({ "salesStartAt": at(starts - Duration::days(2)), "salesEndAt": at(starts - Duration::days(2)) }),
            "salesEndAt",
        ),
        (
            json!({ "salesStartAt": at(starts - Duration::days(1)), "salesEndAt": at(starts - Duration::days(2)) }),
            "salesEndAt",
        ),
        (json!({ "salesStartAt": at(starts) }), "salesStartAt"),
        (
            json!({ "salesEndAt": at(ends + Duration::seconds(1)) }),
            "salesEndAt",
        ),
        (json!({ "maxPerUser": 0 }), "maxPerUser"),
        (json!({ "maxPerUser": 1001 }), "maxPerUser"),
        (json!({ "holdMinutes": 0 }), "holdMinutes"),
        (json!({ "holdMinutes": 1441 }), "holdMinutes"),
        (json!({ "offerMinutes": 0 }), "offerMinutes"),
        (json!({ "offerMinutes": 10081 }), "offerMinutes"),
    ];
    for (extra, field) in &bad {
        let body = app
            .gql(
                Some(&organizer.token),
                CREATE,
                json!({ "input": dated(extra) }),
            )
            .await;
        assert_eq!(
            (error_code(&body), &body["errors"][0]["extensions"]["field"]),
            ("BAD_USER_INPUT", &json!(field)),
            "{extra}: {body}"
        );
    }
    assert_eq!(app.count("events").await, 0);

    // The limits of the ranges are fine, and a window may end when the event ends.
    let id = create(
        &app,
        &organizer,
        dated(&json!({
            "salesStartAt": at(Utc::now() - Duration::days(1)),
            "salesEndAt": at(ends),
            "maxPerUser": 1000, "holdMinutes": 1440, "offerMinutes": 10080,
        })),
    )
    .await;
    for (extra, field) in &bad {
        // On update both dates of a pair move together; the event's own dates stay.
        let body = app
            .gql(
                Some(&organizer.token),
                UPDATE,
                json!({ "id": id, "input": extra }),
            )
            .await;
        assert_eq!(
            (error_code(&body), &body["errors"][0]["extensions"]["field"]),
            ("BAD_USER_INPUT", &json!(field)),
            "{extra}: {body}"
        );
    }
    // Moving the event before its sales open is refused too.
    let sales_open = starts - Duration::days(1);
    app.gql_ok(
        Some(&organizer.token),
        UPDATE,
        json!({ "id": id, "input": { "salesStartAt": at(sales_open) } }),
    )
    .await;
    let body = app
        .gql(
            Some(&organizer.token),
            UPDATE,
            json!({ "id": id, "input": { "startsAt": at(sales_open - Duration::hours(1)) } }),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["field"], "salesStartAt",
        "{body}"
    );
    let fields = app
        .gql_ok(
            None,
            "query($id: ID!) { event(id: $id) { maxPerUser holdMinutes offerMinutes seatsHeld free } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        fields["event"],
        json!({ "maxPerUser": 1000, "holdMinutes": 1440, "offerMinutes": 10080, "seatsHeld": 0, "free": false })
    );
    // `null` removes the limit.
    app.gql_ok(
        Some(&organizer.token),
        UPDATE,
        json!({ "id": id, "input": { "maxPerUser": null } }),
    )
    .await;
    assert_eq!(app.count("events WHERE max_per_user IS NULL").await, 1);
}

#[tokio::test]
async fn bookings_wait_for_the_sales_window_and_stop_when_it_closes() {
    let app = TestApp::spawn_without_redis().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let opens = Utc::now() + Duration::days(1);
    let id = create(
        &app,
        &organizer,
        json!({ "salesStartAt": opens.to_rfc3339() }),
    )
    .await;
    let book = || {
        app.gql(
            Some(&buyer.token),
            BOOK,
            json!({ "input": { "eventId": id } }),
        )
    };
    let body = book().await;
    assert_eq!(
        reason(&body),
        ("BAD_USER_INPUT", &json!("SALES_NOT_STARTED")),
        "{body}"
    );

    let window = |start: Duration, end: Duration| {
        json!({ "id": id, "input": {
            "salesStartAt": (Utc::now() + start).to_rfc3339(),
            "salesEndAt": (Utc::now() + end).to_rfc3339(),
        } })
    };
    let data = app
        .gql_ok(
            Some(&organizer.token),
            UPDATE,
            window(Duration::hours(-2), Duration::hours(-1)),
        )
        .await;
    assert_eq!(data["updateEvent"]["onSale"], false);
    let body = book().await;
    assert_eq!(
        reason(&body),
        ("BAD_USER_INPUT", &json!("SALES_ENDED")),
        "{body}"
    );

    let data = app
        .gql_ok(
            Some(&organizer.token),
            UPDATE,
            window(Duration::hours(-1), Duration::hours(1)),
        )
        .await;
    assert_eq!(data["updateEvent"]["onSale"], true);
    let body = book().await;
    assert!(body.get("errors").is_none(), "{body}");
    app.assert_invariant().await;
}

#[tokio::test]
async fn a_user_gets_at_most_max_per_user_seats_of_an_event() {
    let app = TestApp::spawn_without_redis().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let other = app.user(Role::User).await;
    let id = create(&app, &organizer, json!({ "maxPerUser": 4 })).await;
    let app = &app;
    let book = |user: &TestUser, quantity: i32| {
        let token = user.token.clone();
        let input = json!({ "input": { "eventId": id, "quantity": quantity } });
        async move { app.gql(Some(&token), BOOK, input).await }
    };
    assert!(book(&buyer, 3).await.get("errors").is_none());
    let body = book(&buyer, 2).await;
    assert_eq!(
        reason(&body),
        ("BAD_USER_INPUT", &json!("LIMIT_PER_USER")),
        "{body}"
    );
    assert!(book(&buyer, 1).await.get("errors").is_none());
    assert!(book(&other, 4).await.get("errors").is_none());
    assert_eq!(app.count("bookings").await, 3);

    // Holds count, and a confirmation keeps within the limit.
    let held = create(app, &organizer, json!({ "maxPerUser": 4 })).await;
    let hold = |user: &TestUser, quantity: i32| {
        let token = user.token.clone();
        let input = json!({ "input": { "eventId": held, "quantity": quantity } });
        async move { app.gql(Some(&token), HOLD, input).await }
    };
    let first = hold(&buyer, 3).await;
    assert!(first.get("errors").is_none(), "{first}");
    let body = hold(&buyer, 2).await;
    assert_eq!(
        reason(&body),
        ("BAD_USER_INPUT", &json!("LIMIT_PER_USER")),
        "{body}"
    );
    let body = app.try_book(&buyer, &held, 2).await;
    assert_eq!(
        reason(&body),
        ("BAD_USER_INPUT", &json!("LIMIT_PER_USER")),
        "{body}"
    );
    app.gql_ok(
        Some(&buyer.token),
        CONFIRM,
        json!({ "id": first["data"]["holdSeats"]["id"] }),
    )
    .await;
    assert!(hold(&buyer, 1).await.get("errors").is_none());
    assert_eq!(
        reason(&hold(&buyer, 1).await),
        ("BAD_USER_INPUT", &json!("LIMIT_PER_USER"))
    );

    // The waiting list: an entry counts for what it waits for, and its offer cannot take the
    // user past the limit.
    let queued = create(app, &organizer, json!({ "capacity": 5, "maxPerUser": 4 })).await;
    let (filler, single) = (app.user(Role::User).await, app.user(Role::User).await);
    let book_in = |user: &TestUser, quantity: i32| {
        let token = user.token.clone();
        let input = json!({ "input": { "eventId": queued, "quantity": quantity } });
        async move { app.gql(Some(&token), BOOK, input).await }
    };
    let fill = book_in(&filler, 4).await;
    let single_booking = book_in(&single, 1).await["data"]["bookSeats"]["id"].clone();
    let join = |user: &TestUser, quantity: i32| {
        let token = user.token.clone();
        let variables = json!({ "id": queued, "q": quantity });
        async move { app.gql(Some(&token), JOIN, variables).await }
    };
    // The filler has four: no place in line for more.
    assert_eq!(
        reason(&join(&filler, 1).await),
        ("BAD_USER_INPUT", &json!("LIMIT_PER_USER"))
    );
    assert!(join(&buyer, 4).await.get("errors").is_none());
    // One seat comes back; the buyer's entry for four does not fit it, and the entry already
    // counts four towards the buyer's limit, so the buyer cannot book it on the side.
    app.gql_ok(Some(&single.token), CANCEL, json!({ "id": single_booking }))
        .await;
    assert_eq!(
        reason(&book_in(&buyer, 1).await),
        ("BAD_USER_INPUT", &json!("LIMIT_PER_USER"))
    );
    // Four more come back: the offer, confirmed, gives the buyer exactly four.
    app.gql_ok(
        Some(&filler.token),
        CANCEL,
        json!({ "id": fill["data"]["bookSeats"]["id"] }),
    )
    .await;
    let entries = app
        .gql_ok(
            Some(&buyer.token),
            "{ myWaitlistEntries { status hold { id } } }",
            json!({}),
        )
        .await;
    let entry = &entries["myWaitlistEntries"][0];
    assert_eq!(entry["status"], "OFFERED", "{entries}");
    app.gql_ok(
        Some(&buyer.token),
        CONFIRM,
        json!({ "id": entry["hold"]["id"] }),
    )
    .await;
    let seats = app
        .count(&format!(
            "bookings b, generate_series(1, b.quantity) WHERE b.event_id = '{queued}' \
             AND b.user_id = '{}' AND b.status = 'CONFIRMED'",
            buyer.id
        ))
        .await;
    assert_eq!(seats, 4);
    app.assert_invariant().await;
}
