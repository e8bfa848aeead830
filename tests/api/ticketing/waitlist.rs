//! The waiting list: freed seats offered in order, offers that lapse, promotion racing
//! cancellations, more capacity, a cancelled event, and the end of sales.

use super::*;

/// An event of `capacity` seats, sold out to one buyer.
async fn sold_out_event(app: &TestApp, capacity: i64) -> (EventId, TestUser, BookingId) {
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, capacity as i32).await;
    let owner = app.user(Role::User).await;
    let booking = app.book(&owner, &event_id, capacity).await;
    (event_id, owner, booking)
}

#[tokio::test]
async fn the_waiting_list_offers_freed_seats_in_order_and_moves_on_when_an_offer_lapses() {
    let app = TestApp::spawn().await;
    let (event_id, owner, booking) = sold_out_event(&app, 2).await;
    let early = app.user(Role::User).await;
    let late = app.user(Role::User).await;

    // Not sold out for one seat? Then there is no waiting list to join.
    let organizer = app.user(Role::Organizer).await;
    let open = app.event(&organizer, 5).await;
    let body = app
        .gql(Some(&early.token), JOIN, json!({ "id": open, "q": 1 }))
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    assert_eq!(body["errors"][0]["extensions"]["reason"], "SEATS_AVAILABLE");

    let first = app
        .gql_ok(Some(&early.token), JOIN, json!({ "id": event_id, "q": 2 }))
        .await;
    assert_eq!(first["joinWaitlist"]["status"], "WAITING");
    assert_eq!(first["joinWaitlist"]["position"], 1);
    let again = app
        .gql_ok(Some(&early.token), JOIN, json!({ "id": event_id, "q": 2 }))
        .await;
    assert_eq!(again["joinWaitlist"]["id"], first["joinWaitlist"]["id"]);
    let second = app
        .gql_ok(Some(&late.token), JOIN, json!({ "id": event_id, "q": 2 }))
        .await;
    assert_eq!(second["joinWaitlist"]["position"], 2);
    let length = app
        .gql_ok(
            None,
            "query($id: ID!) { event(id: $id) { waitlistLength } }",
            json!({ "id": event_id }),
        )
        .await;
    assert_eq!(length["event"]["waitlistLength"], 2);

    // The first in line hears of the offer on myBookingUpdates.
    let mut client = WsClient::connect(
        &app.ws_url(),
        "graphql-transport-ws",
        json!({ "Authorization": format!("Bearer {}", early.token) }),
    )
    .await
    .unwrap();
    client.subscribe("mine", UPDATES, json!({})).await;
    // Make sure the subscription is attached before the cancellation: a hold of its own.
    let probe_event = app.event(&organizer, 1).await;
    let probe = app.hold(&early, &probe_event, 1).await;
    assert_eq!(
        client.next_data().await["data"]["myBookingUpdates"]["id"],
        probe.as_str()
    );

    app.gql_ok(Some(&owner.token), CANCEL, json!({ "id": booking }))
        .await;
    let mut offer = None;
    let mut entry_offered = false;
    while offer.is_none() || !entry_offered {
        let message = client.next_data().await["data"]["myBookingUpdates"].clone();
        match message["__typename"].as_str().unwrap() {
            "Hold" => {
                assert_eq!(message["isOffer"], true);
                assert_eq!(message["status"], "HELD");
                assert_eq!(message["quantity"], 2);
                offer = Some(message["id"].as_str().unwrap().to_owned());
            }
            "WaitlistEntry" => {
                assert_eq!(message["status"], "OFFERED");
                entry_offered = true;
            }
            other => panic!("unexpected update {other}: {message}"),
        }
    }
    let offer = offer.unwrap();
    // The freed seats went to the waiting list, not back on sale.
    assert_eq!(counts(&app, &event_id).await, (0, 2));
    let buyer = app.user(Role::User).await;
    assert_eq!(
        error_code(&app.try_book(&buyer, &event_id, 1).await),
        "SOLD_OUT"
    );
    let entries = app.gql_ok(Some(&early.token), ENTRIES, json!({})).await;
    let entry = &entries["myWaitlistEntries"][0];
    assert_eq!(entry["status"], "OFFERED");
    assert_eq!(entry["position"], Value::Null);
    assert_eq!(entry["hold"]["id"], offer.as_str());
    let expires: chrono::DateTime<chrono::Utc> = entry["hold"]["expiresAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let hours = (expires - chrono::Utc::now()).num_minutes() as f64 / 60.0;
    assert!(
        (23.9..=24.0).contains(&hours),
        "offers last 24 hours: {hours}"
    );
    let waiting = app.gql_ok(Some(&late.token), ENTRIES, json!({})).await;
    assert_eq!(waiting["myWaitlistEntries"][0]["position"], 1);

    // The offer lapses: the next in line gets it, in the sweeping transaction.
    expire(&app, &offer).await;
    evently::sweeper::sweep(&app.state).await.unwrap();
    let lapsed = app.gql_ok(Some(&early.token), ENTRIES, json!({})).await;
    assert_eq!(lapsed["myWaitlistEntries"], json!([]));
    let next = app.gql_ok(Some(&late.token), ENTRIES, json!({})).await;
    let next = &next["myWaitlistEntries"][0];
    assert_eq!(next["status"], "OFFERED");
    let next_offer = next["hold"]["id"].as_str().unwrap();
    let booked = app
        .gql_ok(Some(&late.token), CONFIRM, json!({ "id": next_offer }))
        .await;
    assert_eq!(booked["confirmHold"]["quantity"], 2);
    let all = app
        .gql_ok(
            Some(&late.token),
            "{ myWaitlistEntries(all: true) { status } }",
            json!({}),
        )
        .await;
    assert_eq!(all["myWaitlistEntries"][0]["status"], "FULFILLED");
    assert_eq!(counts(&app, &event_id).await, (0, 0));
    assert_no_double_allocation(&app).await;
}

#[tokio::test]
async fn cancellations_racing_promotion_offer_each_seat_once_and_let_nobody_slip_in() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 6).await;
    let mut owners = Vec::new();
    for _ in 0..6 {
        let owner = app.user(Role::User).await;
        let body = app.try_book(&owner, &event_id, 1).await;
        let id = body["data"]["bookSeats"]["id"].as_str().unwrap().to_owned();
        owners.push((owner, id));
    }
    let mut waiting = Vec::new();
    for _ in 0..4 {
        let user = app.user(Role::User).await;
        app.gql_ok(Some(&user.token), JOIN, json!({ "id": event_id, "q": 1 }))
            .await;
        waiting.push(user);
    }
    let mut snipers = Vec::new();
    for _ in 0..10 {
        snipers.push(app.user(Role::User).await);
    }
    // Six cancellations, one waiting user leaving, and ten buyers trying for the freed seats,
    // all at once.
    let cancels = join_all(
        owners
            .iter()
            .map(|(owner, id)| app.gql(Some(&owner.token), CANCEL, json!({ "id": id }))),
    );
    let leave = app.gql(Some(&waiting[3].token), LEAVE, json!({ "id": event_id }));
    let snipes = join_all(snipers.iter().map(|s| app.try_book(s, &event_id, 1)));
    let (cancels, left, snipes) = tokio::join!(cancels, leave, snipes);
    assert!(cancels.iter().all(|c| c["errors"].is_null()));
    assert!(left["errors"].is_null(), "{left}");
    // Whatever the order, the three who stayed in line each got exactly one offer.
    for user in &waiting[..3] {
        let entries = app.gql_ok(Some(&user.token), ENTRIES, json!({})).await;
        assert_eq!(
            entries["myWaitlistEntries"][0]["status"], "OFFERED",
            "{entries}"
        );
    }
    let offers = app.count("holds WHERE status = 'HELD'").await;
    assert_eq!(offers, 3);
    // A buyer only got a seat if it was not owed to the waiting list: with three in line
    // and six seats freed, at most three buyers succeed.
    let sniped = snipes.iter().filter(|s| s["errors"].is_null()).count() as i64;
    assert!(
        sniped <= 3,
        "{sniped} buyers took seats owed to the waiting list"
    );
    let (available, held) = counts(&app, &event_id).await;
    assert_eq!(held, 3);
    assert_eq!(available + sniped, 3);
    assert_no_double_allocation(&app).await;
}

#[tokio::test]
async fn more_capacity_goes_to_the_waiting_list_first_skipping_entries_that_do_not_fit() {
    let app = TestApp::spawn().await;
    let (event_id, _owner, _) = sold_out_event(&app, 2).await;
    let (one, pair, other) = (
        app.user(Role::User).await,
        app.user(Role::User).await,
        app.user(Role::User).await,
    );
    for (user, q) in [(&one, 1), (&pair, 2), (&other, 1)] {
        app.gql_ok(Some(&user.token), JOIN, json!({ "id": event_id, "q": q }))
            .await;
    }
    let admin = app.user(Role::Admin).await;
    let buyer = app.user(Role::User).await;
    let grow = app.gql(
        Some(&admin.token),
        "mutation($id: ID!) { updateEvent(id: $id, input: { capacity: 4 }) { capacity seatsAvailable seatsHeld } }",
        json!({ "id": event_id }),
    );
    let snipe = app.try_book(&buyer, &event_id, 1);
    let (grown, sniped) = tokio::join!(grow, snipe);
    assert!(grown["errors"].is_null(), "{grown}");
    // Two new seats: the first in line takes one; the pair does not fit in the other and
    // keeps its place; the next single takes it. Nothing is left for the buyer.
    assert_eq!(error_code(&sniped), "SOLD_OUT", "{sniped}");
    let status = |user: &TestUser| {
        let user = user.clone();
        let app = &app;
        async move {
            app.gql_ok(Some(&user.token), ENTRIES, json!({})).await["myWaitlistEntries"][0].clone()
        }
    };
    assert_eq!(status(&one).await["status"], "OFFERED");
    assert_eq!(status(&other).await["status"], "OFFERED");
    let pair_entry = status(&pair).await;
    assert_eq!(pair_entry["status"], "WAITING");
    assert_eq!(pair_entry["position"], 1);
    assert_eq!(counts(&app, &event_id).await, (0, 2));
    // Capacity cannot drop below what is booked and held.
    let shrink = app
        .gql(
            Some(&admin.token),
            "mutation($id: ID!) { updateEvent(id: $id, input: { capacity: 3 }) { capacity } }",
            json!({ "id": event_id }),
        )
        .await;
    assert_eq!(error_code(&shrink), "BAD_USER_INPUT");
    assert_no_double_allocation(&app).await;
}

#[tokio::test]
async fn cancelling_an_event_releases_its_holds_and_closes_its_waiting_list() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 2).await;
    let holder = app.user(Role::User).await;
    let waiter = app.user(Role::User).await;
    app.hold(&holder, &event_id, 2).await;
    app.gql_ok(Some(&waiter.token), JOIN, json!({ "id": event_id, "q": 1 }))
        .await;
    app.gql_ok(
        Some(&organizer.token),
        "mutation($id: ID!) { cancelEvent(id: $id) { status seatsAvailable seatsHeld } }",
        json!({ "id": event_id }),
    )
    .await;
    assert_eq!(app.count("holds WHERE status = 'RELEASED'").await, 1);
    let entries = app
        .gql_ok(
            Some(&waiter.token),
            "{ myWaitlistEntries(all: true) { status } }",
            json!({}),
        )
        .await;
    assert_eq!(entries["myWaitlistEntries"][0]["status"], "CLOSED");
    assert_eq!(counts(&app, &event_id).await, (2, 0));
    assert_no_double_allocation(&app).await;
}

#[tokio::test]
async fn nothing_is_offered_or_held_past_the_end_of_sales() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let mut input = event_input("Closing Soon", 2);
    let sales_end = chrono::Utc::now() + chrono::Duration::minutes(5);
    input["salesEndAt"] = json!(sales_end.to_rfc3339());
    let event_id = app.create_event(&organizer, input).await;
    // A hold's ten minutes would run past the end of sales: it ends with them.
    let buyer = app.user(Role::User).await;
    let body = app.try_hold(&buyer, &event_id, 1).await;
    let expires: chrono::DateTime<chrono::Utc> = body["data"]["holdSeats"]["expiresAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        expires <= sales_end,
        "a hold outlasts sales: {expires} > {sales_end}"
    );
    let owner = app.user(Role::User).await;
    let booking = app.book(&owner, &event_id, 1).await;
    let waiter = app.user(Role::User).await;
    app.gql_ok(Some(&waiter.token), JOIN, json!({ "id": event_id, "q": 1 }))
        .await;

    // Sales close; then a seat comes back. An offer now could never be confirmed.
    let sql = format!(
        "UPDATE events SET sales_end_at = now() - interval '1 second' WHERE id = '{event_id}'"
    );
    assert_eq!(execute(&app, &sql).await, 1);
    app.gql_ok(Some(&owner.token), CANCEL, json!({ "id": booking }))
        .await;
    let entries = app.gql_ok(Some(&waiter.token), ENTRIES, json!({})).await;
    assert_eq!(entries["myWaitlistEntries"][0]["status"], "WAITING");
    assert_eq!(
        app.count("holds WHERE status = 'HELD'").await,
        1,
        "only the buyer's hold"
    );
    assert_no_double_allocation(&app).await;
}
