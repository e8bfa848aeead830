//! Holds, the waiting list and RSVP, through the API: each flow, and each race the issue names,
//! ending with the invariant checked in SQL and nobody holding a seat twice.

use evently::db::models::Role;
use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::support::WsClient;
use crate::support::operations::{CONFIRM, HOLD};
use crate::support::{
    BookingId, CANCEL, EventId, TestApp, TestUser, error_code, event_input, eventually,
};

const RELEASE: &str = "mutation($id: ID!) { releaseHold(holdId: $id) { id status } }";
const JOIN: &str = "mutation($id: ID!, $q: Int!) { joinWaitlist(eventId: $id, quantity: $q) { id status position quantity } }";
const LEAVE: &str = "mutation($id: ID!) { leaveWaitlist(eventId: $id) { id status } }";
const ENTRIES: &str =
    "{ myWaitlistEntries { id status position quantity hold { id status expiresAt } } }";
const RSVP: &str = "mutation($id: ID!, $r: RsvpResponse!) { rsvp(eventId: $id, response: $r) { response booking { id status } waitlistEntry { id status position } } }";
const COUNTS: &str = "query($id: ID!) { event(id: $id) { seatsAvailable rsvpCounts { going waitlisted maybe notGoing } myRsvp } }";
const UPDATES: &str = "subscription { myBookingUpdates { __typename id quantity event { id } ... on Hold { status isOffer } ... on Booking { status } ... on WaitlistEntry { status } } }";

async fn counts(app: &TestApp, event_id: &str) -> (i64, i64) {
    let data = app
        .gql_ok(
            None,
            "query($id: ID!) { event(id: $id) { seatsAvailable seatsHeld } }",
            json!({ "id": event_id }),
        )
        .await;
    (
        data["event"]["seatsAvailable"].as_i64().unwrap(),
        data["event"]["seatsHeld"].as_i64().unwrap(),
    )
}

/// Runs a statement against the test database: how tests move a hold's clock.
async fn execute(app: &TestApp, sql: &str) -> usize {
    use diesel_async::RunQueryDsl;
    diesel::sql_query(sql)
        .execute(&mut app.db().await)
        .await
        .unwrap()
}

/// Moves a hold's expiry into the past, as if its time had run out.
async fn expire(app: &TestApp, hold_id: &str) {
    let sql =
        format!("UPDATE holds SET expires_at = now() - interval '1 second' WHERE id = '{hold_id}'");
    assert_eq!(execute(app, &sql).await, 1);
}

/// Nobody has a seat twice: every offer's hold is live or has ended with its entry, no hold
/// belongs to two entries, nobody has two live entries for one event or two seats from one RSVP.
async fn assert_no_double_allocation(app: &TestApp) {
    app.assert_invariant().await;
    let offered_without_live_hold = app
        .count(
            "waitlist_entries w JOIN holds h ON h.id = w.hold_id \
             WHERE w.status = 'OFFERED' AND h.status <> 'HELD'",
        )
        .await;
    assert_eq!(offered_without_live_hold, 0, "an offer outlived its hold");
    let live_holds_of_ended_entries = app
        .count(
            "waitlist_entries w JOIN holds h ON h.id = w.hold_id \
             WHERE w.status IN ('LEFT', 'EXPIRED', 'CLOSED') AND h.status = 'HELD'",
        )
        .await;
    assert_eq!(
        live_holds_of_ended_entries, 0,
        "an ended entry kept its seats"
    );
    let doubled_entries = app
        .count(
            "(SELECT event_id, user_id FROM waitlist_entries WHERE status IN ('WAITING', 'OFFERED') \
              GROUP BY event_id, user_id HAVING count(*) > 1) AS d",
        )
        .await;
    assert_eq!(doubled_entries, 0, "a user is on one waiting list twice");
    let doubled_rsvp_seats = app
        .count(
            "(SELECT b.event_id, b.user_id FROM bookings b JOIN events e ON e.id = b.event_id \
              WHERE e.free AND b.status = 'CONFIRMED' GROUP BY b.event_id, b.user_id \
              HAVING count(*) > 1) AS d",
        )
        .await;
    assert_eq!(doubled_rsvp_seats, 0, "an RSVP took two seats");
}

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
    let mut watcher = WsClient::connect(&app.ws_url(), "graphql-transport-ws", json!({}))
        .await
        .unwrap();
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

async fn free_event(app: &TestApp, capacity: i32) -> String {
    let organizer = app.user(Role::Organizer).await;
    let mut input = event_input("Free Meetup", capacity);
    input["free"] = json!(true);
    let data = app
        .gql_ok(
            Some(&organizer.token),
            "mutation($input: CreateEventInput!) { createEvent(input: $input) { id } }",
            json!({ "input": input }),
        )
        .await;
    data["createEvent"]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn rsvp_takes_a_seat_or_a_place_in_line_and_gives_it_back() {
    let app = TestApp::spawn().await;
    let event_id = free_event(&app, 1).await;
    let (first, second, third) = (
        app.user(Role::User).await,
        app.user(Role::User).await,
        app.user(Role::User).await,
    );
    let rsvp = |user: &TestUser, response: &str| {
        let token = user.token.clone();
        let variables = json!({ "id": event_id, "r": response });
        let app = &app;
        async move { app.gql(Some(&token), RSVP, variables).await }
    };
    let going = rsvp(&first, "GOING").await;
    assert_eq!(
        going["data"]["rsvp"]["booking"]["status"], "CONFIRMED",
        "{going}"
    );
    // Saying it again changes nothing.
    let again = rsvp(&first, "GOING").await;
    assert_eq!(
        again["data"]["rsvp"]["booking"]["id"],
        going["data"]["rsvp"]["booking"]["id"]
    );
    let full = rsvp(&second, "GOING").await;
    assert_eq!(full["data"]["rsvp"]["booking"], Value::Null);
    assert_eq!(full["data"]["rsvp"]["waitlistEntry"]["position"], 1);
    rsvp(&third, "MAYBE").await;
    let shown = app
        .gql_ok(Some(&second.token), COUNTS, json!({ "id": event_id }))
        .await;
    assert_eq!(
        shown["event"]["rsvpCounts"],
        json!({ "going": 1, "waitlisted": 1, "maybe": 1, "notGoing": 0 })
    );
    assert_eq!(shown["event"]["myRsvp"], "GOING");

    // Changing to NOT_GOING frees the seat, and the one in line is booked straight away.
    let declined = rsvp(&first, "NOT_GOING").await;
    assert_eq!(
        declined["data"]["rsvp"]["booking"],
        Value::Null,
        "{declined}"
    );
    let shown = app
        .gql_ok(Some(&second.token), COUNTS, json!({ "id": event_id }))
        .await;
    assert_eq!(
        shown["event"]["rsvpCounts"],
        json!({ "going": 1, "waitlisted": 0, "maybe": 1, "notGoing": 1 })
    );
    assert_eq!(shown["event"]["seatsAvailable"], 0);
    assert_eq!(
        app.count("bookings WHERE status = 'CONFIRMED'").await,
        1,
        "exactly one seat is taken"
    );
    // A ticketed event does not take RSVPs, and a free one does not sell tickets.
    let organizer = app.user(Role::Organizer).await;
    let ticketed = app.event(&organizer, 5).await;
    let refused = app
        .gql(
            Some(&first.token),
            RSVP,
            json!({ "id": ticketed, "r": "GOING" }),
        )
        .await;
    assert_eq!(refused["errors"][0]["extensions"]["reason"], "NOT_FREE");
    let refused = app.try_book(&third, &event_id, 1).await;
    assert_eq!(refused["errors"][0]["extensions"]["reason"], "FREE_EVENT");
    assert_no_double_allocation(&app).await;
}

#[tokio::test]
async fn concurrent_rsvps_never_seat_more_than_capacity_or_anyone_twice() {
    let app = TestApp::spawn().await;
    let event_id = free_event(&app, 5).await;
    let mut users = Vec::new();
    for _ in 0..12 {
        users.push(app.user(Role::User).await);
    }
    // Everyone says GOING twice at once, and some change their minds at the same time.
    let answers = join_all(users.iter().enumerate().flat_map(|(i, user)| {
        let app = &app;
        let event_id = &event_id;
        let second = if i % 3 == 0 { "NOT_GOING" } else { "GOING" };
        ["GOING", second].map(move |response| async move {
            app.gql(
                Some(&user.token),
                RSVP,
                json!({ "id": event_id, "r": response }),
            )
            .await
        })
    }))
    .await;
    assert!(answers.iter().all(|a| a["errors"].is_null()), "{answers:?}");
    let seated = app
        .count(&format!(
            "bookings WHERE event_id = '{event_id}' AND status = 'CONFIRMED'"
        ))
        .await;
    assert!(seated <= 5);
    let going_with_seat = app
        .count(&format!(
            "rsvps WHERE event_id = '{event_id}' AND response = 'GOING' AND booking_id IS NOT NULL"
        ))
        .await;
    assert_eq!(
        going_with_seat, seated,
        "every seat belongs to a GOING answer"
    );
    // Seats are only free when nobody is waiting for one.
    let waiting = app
        .count(&format!(
            "waitlist_entries WHERE event_id = '{event_id}' AND status = 'WAITING'"
        ))
        .await;
    let (available, _) = counts(&app, &event_id).await;
    assert!(
        available == 0 || waiting == 0,
        "{available} free seats while {waiting} wait"
    );
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
async fn nothing_is_offered_or_held_past_the_end_of_sales() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let mut input = event_input("Closing Soon", 2);
    let sales_end = chrono::Utc::now() + chrono::Duration::minutes(5);
    input["salesEndAt"] = json!(sales_end.to_rfc3339());
    let created = app
        .gql_ok(
            Some(&organizer.token),
            "mutation($input: CreateEventInput!) { createEvent(input: $input) { id } }",
            json!({ "input": input }),
        )
        .await;
    let event_id = created["createEvent"]["id"].as_str().unwrap().to_owned();
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
    let booked = app.try_book(&owner, &event_id, 1).await;
    let booking = booked["data"]["bookSeats"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
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
