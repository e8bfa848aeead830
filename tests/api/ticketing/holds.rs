//! Holds: seats kept until confirmed exactly once, released or expired, ended by the sweeper
//! (once, however many instances sweep), and private to their owner.

use super::*;

#[tokio::test]
async fn a_hold_keeps_seats_until_confirmed_exactly_once() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let other = app.user(Role::User).await;
    let event_id = app.event(&organizer, 5).await;

    let body = app.try_hold(&buyer, &event_id, 3).await;
    let held = &body["data"]["holdSeats"];
    assert_eq!(held["status"], "HELD", "{body}");
    assert_eq!(held["isOffer"], false);
    assert_eq!(held["event"]["seatsAvailable"], 2);
    assert_eq!(held["event"]["seatsHeld"], 3);
    let expires: chrono::DateTime<chrono::Utc> =
        held["expiresAt"].as_str().unwrap().parse().unwrap();
    let minutes = (expires - chrono::Utc::now()).num_seconds() as f64 / 60.0;
    assert!(
        (9.0..=10.0).contains(&minutes),
        "default hold time is 10 minutes: {minutes}"
    );
    let hold_id = held["id"].as_str().unwrap().to_owned();

    // The held seats are not for sale to anyone else.
    let refused = app.try_book(&other, &event_id, 3).await;
    assert_eq!(error_code(&refused), "SOLD_OUT");
    // Nor can anyone else confirm or release the hold: to them it does not exist.
    for query in [CONFIRM, RELEASE] {
        let body = app
            .gql(Some(&other.token), query, json!({ "id": hold_id }))
            .await;
        assert_eq!(error_code(&body), "NOT_FOUND", "{body}");
    }

    let confirm = || {
        app.gql(
            Some(&buyer.token),
            CONFIRM,
            json!({ "id": hold_id, "key": "checkout-1" }),
        )
    };
    let (first, again) = tokio::join!(confirm(), confirm());
    let booking = &first["data"]["confirmHold"];
    assert_eq!(booking["status"], "CONFIRMED", "{first}");
    assert_eq!(booking["quantity"], 3);
    assert_eq!(
        again["data"]["confirmHold"]["id"], booking["id"],
        "confirmed twice: {again}"
    );
    assert_eq!(counts(&app, &event_id).await, (2, 0));
    assert_eq!(app.count("bookings").await, 1);

    let hold_now = app
        .gql_ok(
            Some(&buyer.token),
            "query($id: ID!) { hold(id: $id) { status booking { id } } }",
            json!({ "id": hold_id }),
        )
        .await;
    assert_eq!(hold_now["hold"]["status"], "CONFIRMED");
    assert_eq!(hold_now["hold"]["booking"]["id"], booking["id"]);
    // A confirmed hold cannot be released: the booking is cancelled instead.
    let released = app
        .gql_ok(Some(&buyer.token), RELEASE, json!({ "id": hold_id }))
        .await;
    assert_eq!(released["releaseHold"]["status"], "CONFIRMED");
    assert_no_double_allocation(&app).await;
}

#[tokio::test]
async fn released_and_expired_holds_give_their_seats_back_and_cannot_be_confirmed() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let other = app.user(Role::User).await;
    let event_id = app.event(&organizer, 4).await;

    let released = app.hold(&buyer, &event_id, 2).await;
    let body = app
        .gql_ok(Some(&buyer.token), RELEASE, json!({ "id": released }))
        .await;
    assert_eq!(body["releaseHold"]["status"], "RELEASED");
    assert_eq!(counts(&app, &event_id).await, (4, 0));
    let late = app
        .gql(Some(&buyer.token), CONFIRM, json!({ "id": released }))
        .await;
    assert_eq!(error_code(&late), "CONFLICT", "{late}");

    // An expired hold that the sweeper has not reached yet does not block a buyer: the
    // buyer's own transaction ends it.
    let expired = app.hold(&buyer, &event_id, 4).await;
    assert_eq!(counts(&app, &event_id).await, (0, 4));
    expire(&app, &expired).await;
    let bought = app.try_book(&other, &event_id, 3).await;
    assert!(
        bought["errors"].is_null(),
        "an expired hold blocked a sale: {bought}"
    );
    assert_eq!(counts(&app, &event_id).await, (1, 0));
    let late = app
        .gql(Some(&buyer.token), CONFIRM, json!({ "id": expired }))
        .await;
    assert_eq!(error_code(&late), "CONFLICT");
    assert!(
        late["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{late}"
    );
    assert_no_double_allocation(&app).await;
}

#[tokio::test]
async fn the_sweeper_releases_expired_holds_and_tells_the_owner() {
    let app = TestApp::spawn_with(|config| {
        config.sweep_interval = std::time::Duration::from_millis(50);
    })
    .await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event_id = app.event(&organizer, 3).await;
    let mut client = WsClient::connect(
        &app.ws_url(),
        "graphql-transport-ws",
        json!({ "Authorization": format!("Bearer {}", buyer.token) }),
    )
    .await
    .unwrap();
    client.subscribe("mine", UPDATES, json!({})).await;
    let mut watcher = app.connect_ws(json!({})).await;
    watcher
        .subscribe(
            "seats",
            "subscription($id: ID!) { seatAvailability(eventId: $id) { seatsAvailable seatsHeld version } }",
            json!({ "id": event_id }),
        )
        .await;
    let first = watcher.next_data().await["data"]["seatAvailability"].clone();
    assert_eq!(first["seatsHeld"], 0);
    // The subscription is attached once it is acknowledged by its first message: make one.
    let hold_id = app.hold(&buyer, &event_id, 2).await;
    let held = watcher.next_data().await["data"]["seatAvailability"].clone();
    assert_eq!(
        (held["seatsAvailable"].as_i64(), held["seatsHeld"].as_i64()),
        (Some(1), Some(2))
    );
    let started = client.next_data().await;
    assert_eq!(
        started["data"]["myBookingUpdates"],
        json!({ "__typename": "Hold", "id": hold_id, "quantity": 2, "event": { "id": event_id }, "status": "HELD", "isOffer": false })
    );
    expire(&app, &hold_id).await;
    let ended = client.next_data().await;
    assert_eq!(ended["data"]["myBookingUpdates"]["id"], hold_id.as_str());
    assert_eq!(ended["data"]["myBookingUpdates"]["status"], "EXPIRED");
    // Watchers of the event see the seats come back.
    let released = watcher.next_data().await["data"]["seatAvailability"].clone();
    assert_eq!(
        (
            released["seatsAvailable"].as_i64(),
            released["seatsHeld"].as_i64()
        ),
        (Some(3), Some(0))
    );
    assert!(released["version"].as_i64() > held["version"].as_i64());
    assert_eq!(counts(&app, &event_id).await, (3, 0));
    assert_no_double_allocation(&app).await;
}

#[tokio::test]
async fn confirmations_racing_expiry_each_either_book_or_are_refused() {
    let app = TestApp::spawn_with(|config| {
        config.sweep_interval = std::time::Duration::from_millis(10);
    })
    .await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 40).await;
    let mut holds = Vec::new();
    for _ in 0..20 {
        let buyer = app.user(Role::User).await;
        let id = app.hold(&buyer, &event_id, 2).await;
        holds.push((buyer, id));
    }
    // Every hold runs out within the next 300 ms while its owner confirms it.
    let sql = format!(
        "UPDATE holds SET expires_at = now() + (random() * interval '300 milliseconds') \
         WHERE event_id = '{event_id}'"
    );
    assert_eq!(execute(&app, &sql).await, 20);
    let results = join_all(holds.iter().enumerate().map(|(i, (buyer, id))| {
        let app = &app;
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(15 * i as u64)).await;
            app.gql(Some(&buyer.token), CONFIRM, json!({ "id": id }))
                .await
        }
    }))
    .await;
    let mut confirmed = 0;
    for ((_, id), body) in holds.iter().zip(&results) {
        let status = app
            .count(&format!("holds WHERE id = '{id}' AND status = 'CONFIRMED'"))
            .await;
        if body["errors"].is_null() {
            confirmed += 1;
            assert_eq!(
                status, 1,
                "a confirmed booking whose hold did not end confirmed"
            );
        } else {
            assert_eq!(error_code(body), "CONFLICT", "{body}");
            assert_eq!(status, 0, "a refused confirmation left its hold confirmed");
        }
    }
    assert_eq!(app.count("bookings").await, confirmed);
    // Wait for the sweeper to end the rest, by watching the database converge.
    eventually(std::time::Duration::from_secs(10), || async {
        let held = app.count("holds WHERE status = 'HELD'").await;
        if held == 0 {
            Ok(())
        } else {
            Err(format!("the sweeper did not end the holds: {held} held"))
        }
    })
    .await;
    assert_eq!(counts(&app, &event_id).await, (40 - 2 * confirmed, 0));
    assert_no_double_allocation(&app).await;
}

#[tokio::test]
async fn many_holds_expiring_at_once_while_buyers_book() {
    let app = TestApp::spawn_with(|config| {
        config.sweep_interval = std::time::Duration::from_millis(5);
    })
    .await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 50).await;
    for _ in 0..25 {
        let holder = app.user(Role::User).await;
        app.hold(&holder, &event_id, 2).await;
    }
    assert_eq!(counts(&app, &event_id).await, (0, 50));
    let mut buyers = Vec::new();
    for _ in 0..30 {
        buyers.push(app.user(Role::User).await);
    }
    let sql = format!("UPDATE holds SET expires_at = now() WHERE event_id = '{event_id}'");
    assert_eq!(execute(&app, &sql).await, 25);
    let results = join_all(buyers.iter().map(|b| app.try_book(b, &event_id, 2))).await;
    let booked = results.iter().filter(|r| r["errors"].is_null()).count();
    for refused in results.iter().filter(|r| !r["errors"].is_null()) {
        assert_eq!(error_code(refused), "SOLD_OUT", "{refused}");
    }
    // 50 seats came back, 2 per buyer: exactly 25 of the 30 buyers get them.
    assert_eq!(booked, 25);
    assert_eq!(app.count("holds WHERE status = 'HELD'").await, 0);
    assert_eq!(counts(&app, &event_id).await, (0, 0));
    assert_no_double_allocation(&app).await;
}

#[tokio::test]
async fn instances_sweeping_at_once_end_each_hold_once() {
    // Only the sweeps this test runs: the background ones wait an hour.
    let app = TestApp::spawn_with(|config| {
        config.sweep_interval = std::time::Duration::from_secs(3600);
    })
    .await;
    let peer = app.spawn_peer().await;
    let organizer = app.user(Role::Organizer).await;
    let mut events = Vec::new();
    for _ in 0..5 {
        events.push(app.event(&organizer, 10).await);
    }
    let mut holders = Vec::new();
    for event_id in &events {
        for _ in 0..4 {
            let holder = app.user(Role::User).await;
            app.hold(&holder, event_id, 2).await;
            holders.push(holder);
        }
    }
    assert_eq!(
        execute(&app, "UPDATE holds SET expires_at = now()").await,
        20
    );
    let (here, there) = tokio::join!(
        evently::sweeper::sweep(&app.state),
        evently::sweeper::sweep(&peer.state)
    );
    // Each event was swept by one of them; the other found nothing left to do.
    assert_eq!(here.unwrap() + there.unwrap(), events.len());
    assert_eq!(app.count("holds WHERE status = 'EXPIRED'").await, 20);
    for event_id in &events {
        assert_eq!(counts(&app, event_id).await, (10, 0));
    }
    assert_no_double_allocation(&app).await;
}

#[tokio::test]
async fn signing_in_is_needed_for_every_reservation_and_holds_are_private() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 3).await;
    let owner = app.user(Role::User).await;
    let hold_id = app.hold(&owner, &event_id, 1).await;
    let calls = [
        (
            HOLD,
            json!({ "input": { "eventId": event_id, "quantity": 1 } }),
        ),
        (CONFIRM, json!({ "id": hold_id })),
        (RELEASE, json!({ "id": hold_id })),
        (JOIN, json!({ "id": event_id, "q": 1 })),
        (LEAVE, json!({ "id": event_id })),
        (RSVP, json!({ "id": event_id, "r": "GOING" })),
        (ENTRIES, json!({})),
        ("{ myHolds { edges { node { id } } } }", json!({})),
        (
            "query($id: ID!) { hold(id: $id) { id } }",
            json!({ "id": hold_id }),
        ),
    ];
    for (query, variables) in &calls {
        let body = app.gql(None, query, variables.clone()).await;
        assert_eq!(error_code(&body), "UNAUTHENTICATED", "{query}: {body}");
    }
    // Someone else's hold does not exist for a user, and is visible to an admin.
    let other = app.user(Role::User).await;
    let body = app
        .gql(
            Some(&other.token),
            "query($id: ID!) { hold(id: $id) { id } }",
            json!({ "id": hold_id }),
        )
        .await;
    assert_eq!(error_code(&body), "NOT_FOUND");
    let admin = app.user(Role::Admin).await;
    let seen = app
        .gql_ok(
            Some(&admin.token),
            "query($id: ID!) { hold(id: $id) { id user { id } } }",
            json!({ "id": hold_id }),
        )
        .await;
    assert_eq!(seen["hold"]["user"]["id"], owner.id.to_string());
    // Nothing changed.
    assert_eq!(app.count("holds").await, 1);
    assert_eq!(app.count("waitlist_entries").await, 0);
    assert_no_double_allocation(&app).await;
}
