//! Seat maps: venues with numbered seats, claims that two buyers can never share, and the live
//! `seatMap` subscription.

use diesel_async::RunQueryDsl;
use evently::db::models::Role;
use evently::domain::holds::{self, HoldRequest};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::OwnRedis;
use crate::support::{BOOK, CANCEL, TestApp, TestUser, error_code, event_input};
use crate::support::{WsClient, operation_errors};

const CREATE_VENUE: &str = "mutation($input: CreateVenueInput!) {
    createVenue(input: $input) { id name address seatCount sections { name rows { label seats } } }
}";
const CREATE_EVENT: &str = "mutation($input: CreateEventInput!) {
    createEvent(input: $input) { id capacity seatsAvailable venueLayout { id seatCount } }
}";
const EVENT_SEATS: &str = "query($id: ID!, $section: String) {
    event(id: $id) { seatsAvailable seats(section: $section) { id section row number state } }
}";
const SEAT_MAP: &str = "subscription($id: ID!) {
    seatMap(eventId: $id) { eventId version full seats { id section row number state } }
}";

/// Section A: rows 1 and 2 of 4 seats; section B: one row of 2. Ten seats.
fn layout() -> Value {
    json!({
        "name": "Small Hall",
        "address": "1 Main Street",
        "sections": [
            { "name": "A", "rows": [{ "label": "1", "seats": 4 }, { "label": "2", "seats": 4 }] },
            { "name": "B", "rows": [{ "label": "1", "seats": 2 }] },
        ],
    })
}

struct Seated {
    event_id: String,
    /// Seat ids by label ("A 1-1"), from the event's seat listing.
    seats: Vec<(String, String)>,
}

impl Seated {
    fn id(&self, label: &str) -> String {
        self.seats
            .iter()
            .find(|(l, _)| l == label)
            .unwrap_or_else(|| panic!("no seat {label}"))
            .1
            .clone()
    }
}

fn label(seat: &Value) -> String {
    format!(
        "{} {}-{}",
        seat["section"].as_str().unwrap(),
        seat["row"].as_str().unwrap(),
        seat["number"]
    )
}

/// Seat labels and states, in listing order.
fn states(seats: &Value) -> Vec<(String, String)> {
    seats
        .as_array()
        .unwrap()
        .iter()
        .map(|seat| (label(seat), seat["state"].as_str().unwrap().to_owned()))
        .collect()
}

/// A published event in the venue, its capacity the venue's seats; returns its id.
async fn event_in_venue(
    app: &TestApp,
    organizer: &TestUser,
    title: &str,
    venue_id: &str,
) -> String {
    let mut input = event_input(title, 0);
    input["capacity"] = Value::Null;
    input["venueId"] = json!(venue_id);
    let event = app
        .gql_ok(
            Some(&organizer.token),
            CREATE_EVENT,
            json!({ "input": input }),
        )
        .await;
    event["createEvent"]["id"].as_str().unwrap().to_owned()
}

async fn seated_event(app: &TestApp, organizer: &TestUser) -> Seated {
    let venue = app
        .gql_ok(
            Some(&organizer.token),
            CREATE_VENUE,
            json!({ "input": layout() }),
        )
        .await;
    let venue_id = venue["createVenue"]["id"].as_str().unwrap();
    let event_id = event_in_venue(app, organizer, "Seated Show", venue_id).await;
    let listed = app
        .gql_ok(None, EVENT_SEATS, json!({ "id": event_id }))
        .await;
    let seats = listed["event"]["seats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|seat| (label(seat), seat["id"].as_str().unwrap().to_owned()))
        .collect();
    Seated { event_id, seats }
}

async fn seat_states(app: &TestApp, event_id: &str) -> Vec<(String, String)> {
    let data = app
        .gql_ok(None, EVENT_SEATS, json!({ "id": event_id }))
        .await;
    states(&data["event"]["seats"])
}

fn state_of<'a>(states: &'a [(String, String)], label: &str) -> &'a str {
    &states.iter().find(|(l, _)| l == label).unwrap().1
}

const HOLD: &str = "mutation($input: HoldSeatsInput!) {
    holdSeats(input: $input) { id quantity status seats { section row number state } }
}";
const CONFIRM: &str = "mutation($id: ID!) { confirmHold(holdId: $id) { id status seats { section row number state } } }";

/// `holdSeats` for the named seats (or the best `quantity`): the whole response.
async fn hold(
    app: &TestApp,
    user: &TestUser,
    event_id: &str,
    quantity: Option<i32>,
    seat_ids: &[String],
) -> Value {
    app.gql(
        Some(&user.token),
        HOLD,
        json!({ "input": { "eventId": event_id, "quantity": quantity, "seatIds": seat_ids } }),
    )
    .await
}

/// `holdSeats` that must succeed: the hold's id.
async fn hold_ok(app: &TestApp, user: &TestUser, event_id: &str, seat_ids: &[String]) -> String {
    let body = hold(app, user, event_id, None, seat_ids).await;
    assert!(body.get("errors").is_none(), "{body}");
    body["data"]["holdSeats"]["id"].as_str().unwrap().to_owned()
}

/// `bookSeats` for the named seats: the whole response.
async fn book(app: &TestApp, user: &TestUser, event_id: &str, seat_ids: &[String]) -> Value {
    app.gql(
        Some(&user.token),
        BOOK,
        json!({ "input": { "eventId": event_id, "seatIds": seat_ids } }),
    )
    .await
}

fn message(body: &Value) -> &str {
    body["errors"][0]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_venue_layout_becomes_the_events_seats() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let venue = app
        .gql_ok(
            Some(&organizer.token),
            CREATE_VENUE,
            json!({ "input": layout() }),
        )
        .await["createVenue"]
        .clone();
    assert_eq!(venue["seatCount"], 10);
    assert_eq!(
        venue["sections"],
        json!([
            { "name": "A", "rows": [{ "label": "1", "seats": 4 }, { "label": "2", "seats": 4 }] },
            { "name": "B", "rows": [{ "label": "1", "seats": 2 }] },
        ])
    );
    let venue_id = venue["id"].as_str().unwrap();
    let read = app
        .gql_ok(
            None,
            "query($id: ID!) { venue(id: $id) { name address seatCount sections { name rows { label seats } } } }",
            json!({ "id": venue_id }),
        )
        .await;
    assert_eq!(read["venue"]["sections"], venue["sections"]);
    assert_eq!(read["venue"]["address"], "1 Main Street");
    let listed = app
        .gql_ok(
            None,
            "{ venues(first: 10) { edges { node { id seatCount } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        listed["venues"]["edges"],
        json!([{ "node": { "id": venue_id, "seatCount": 10 } }])
    );

    let mut input = event_input("Seated Show", 0);
    input["capacity"] = Value::Null;
    input["venueId"] = json!(venue_id);
    let event = app
        .gql_ok(
            Some(&organizer.token),
            CREATE_EVENT,
            json!({ "input": input.clone() }),
        )
        .await["createEvent"]
        .clone();
    assert_eq!(event["capacity"], 10);
    assert_eq!(event["seatsAvailable"], 10);
    assert_eq!(
        event["venueLayout"],
        json!({ "id": venue_id, "seatCount": 10 })
    );
    let event_id = event["id"].as_str().unwrap();
    let seats = seat_states(&app, event_id).await;
    let labels: Vec<&str> = seats.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(
        labels,
        [
            "A 1-1", "A 1-2", "A 1-3", "A 1-4", "A 2-1", "A 2-2", "A 2-3", "A 2-4", "B 1-1",
            "B 1-2"
        ]
    );
    assert!(seats.iter().all(|(_, state)| state == "AVAILABLE"));
    let only_b = app
        .gql_ok(None, EVENT_SEATS, json!({ "id": event_id, "section": "B" }))
        .await;
    assert_eq!(
        states(&only_b["event"]["seats"]),
        [
            ("B 1-1".to_owned(), "AVAILABLE".to_owned()),
            ("B 1-2".to_owned(), "AVAILABLE".to_owned())
        ]
    );

    // A capacity that is not the venue's seat count, and a venue that does not exist.
    input["capacity"] = json!(12);
    let body = app
        .gql(
            Some(&organizer.token),
            CREATE_EVENT,
            json!({ "input": input.clone() }),
        )
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    assert_eq!(body["errors"][0]["extensions"]["field"], "capacity");
    input["capacity"] = json!(10);
    let matching = app
        .gql(
            Some(&organizer.token),
            CREATE_EVENT,
            json!({ "input": input.clone() }),
        )
        .await;
    assert!(matching.get("errors").is_none(), "{matching}");
    input["venueId"] = json!(Uuid::new_v4());
    let body = app
        .gql(
            Some(&organizer.token),
            CREATE_EVENT,
            json!({ "input": input }),
        )
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    assert_eq!(body["errors"][0]["extensions"]["field"], "venueId");

    // A general-admission event has no seats and no layout.
    let ga = app.event(&organizer, 5).await;
    let data = app
        .gql_ok(
            None,
            "query($id: ID!) { event(id: $id) { venueLayout { id } seats { id } } }",
            json!({ "id": ga }),
        )
        .await;
    assert_eq!(data["event"], json!({ "venueLayout": null, "seats": [] }));
}

#[tokio::test]
async fn venue_layouts_are_checked() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let body = app
        .gql(
            Some(&buyer.token),
            CREATE_VENUE,
            json!({ "input": layout() }),
        )
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN");

    let cases = [
        (json!([]), "sections"),
        (
            json!([{ "name": "A", "rows": [{ "label": "1", "seats": 1 }] },
                   { "name": "A", "rows": [{ "label": "1", "seats": 1 }] }]),
            "sections.name",
        ),
        (
            json!([{ "name": "A", "rows": [{ "label": "1", "seats": 1 }, { "label": "1", "seats": 2 }] }]),
            "sections.rows.label",
        ),
        (
            json!([{ "name": "A", "rows": [{ "label": "1", "seats": 0 }] }]),
            "sections.rows.seats",
        ),
        (
            // 21 rows of 1,000: more than 20,000 seats.
            json!([{ "name": "A", "rows": (1..=21)
                .map(|n| json!({ "label": n.to_string(), "seats": 1000 }))
                .collect::<Vec<_>>() }]),
            "sections",
        ),
        (
            json!((0..101)
                .map(|n| json!({ "name": format!("S{n}"), "rows": [{ "label": "1", "seats": 1 }] }))
                .collect::<Vec<_>>()),
            "sections",
        ),
    ];
    for (sections, field) in cases {
        let body = app
            .gql(
                Some(&organizer.token),
                CREATE_VENUE,
                json!({ "input": { "name": "Bad", "sections": sections } }),
            )
            .await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
    }
    assert_eq!(app.count("venues").await, 0);
    assert_eq!(app.count("venue_seats").await, 0);
}

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

/// Reads the next `seatMap` payload.
async fn seat_map(client: &mut WsClient) -> Value {
    let data = client.next_data().await;
    assert!(data.get("errors").is_none(), "{data}");
    data["data"]["seatMap"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seat_map_sends_every_seat_then_the_changes() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let seated = seated_event(&app, &organizer).await;
    let mut client = WsClient::connect(&app.ws_url(), "graphql-transport-ws", json!({}))
        .await
        .unwrap();
    client
        .subscribe("1", SEAT_MAP, json!({ "id": seated.event_id }))
        .await;
    let first = seat_map(&mut client).await;
    assert_eq!(first["full"], true);
    assert_eq!(first["version"], 1);
    assert_eq!(first["eventId"], seated.event_id);
    assert_eq!(first["seats"].as_array().unwrap().len(), 10);
    assert!(
        states(&first["seats"])
            .iter()
            .all(|(_, state)| state == "AVAILABLE")
    );

    let held = hold_ok(
        &app,
        &buyer,
        &seated.event_id,
        &[seated.id("A 1-4"), seated.id("B 1-1")],
    )
    .await;
    let delta = seat_map(&mut client).await;
    assert_eq!(delta["full"], false);
    assert_eq!(delta["version"], 2);
    assert_eq!(
        states(&delta["seats"]),
        [
            ("A 1-4".to_owned(), "HELD".to_owned()),
            ("B 1-1".to_owned(), "HELD".to_owned())
        ]
    );
    assert_eq!(delta["seats"][0]["id"], seated.id("A 1-4"));

    app.gql_ok(Some(&buyer.token), CONFIRM, json!({ "id": held }))
        .await;
    let delta = seat_map(&mut client).await;
    assert_eq!(delta["full"], false);
    assert_eq!(delta["version"], 3);
    assert_eq!(
        states(&delta["seats"]),
        [
            ("A 1-4".to_owned(), "BOOKED".to_owned()),
            ("B 1-1".to_owned(), "BOOKED".to_owned())
        ]
    );

    // A change the stream never heard of (made without publishing) leaves a gap: the next
    // change brings the whole map again, with both.
    {
        let mut conn = app.state.conn().await.unwrap();
        let (_, unpublished) = holds::hold_seats(
            &mut conn,
            buyer.id,
            HoldRequest {
                event_id: seated.event_id.parse().unwrap(),
                quantity: None,
                seat_ids: vec![seated.id("A 2-1").parse().unwrap()],
            },
        )
        .await
        .unwrap();
        assert_eq!(unpublished.seats.len(), 1);
    }
    hold_ok(&app, &buyer, &seated.event_id, &[seated.id("A 2-2")]).await;
    let full = seat_map(&mut client).await;
    assert_eq!(full["full"], true);
    assert_eq!(full["version"], 5);
    let seats = states(&full["seats"]);
    assert_eq!(seats.len(), 10);
    assert_eq!(state_of(&seats, "A 2-1"), "HELD");
    assert_eq!(state_of(&seats, "A 2-2"), "HELD");
    assert_eq!(state_of(&seats, "A 1-4"), "BOOKED");

    // Cancelling the event frees every seat, in one delta.
    app.gql_ok(
        Some(&organizer.token),
        "mutation($id: ID!) { cancelEvent(id: $id) { status } }",
        json!({ "id": seated.event_id }),
    )
    .await;
    let delta = seat_map(&mut client).await;
    assert_eq!(delta["full"], false);
    let freed = states(&delta["seats"]);
    assert_eq!(freed.len(), 4, "{delta}");
    assert!(freed.iter().all(|(_, state)| state == "AVAILABLE"));
    assert!(
        seat_states(&app, &seated.event_id)
            .await
            .iter()
            .all(|(_, state)| state == "AVAILABLE")
    );
    app.assert_invariant().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_map_is_sent_whole_again_after_redis_comes_back() {
    let mut redis = OwnRedis::start().await;
    let first = TestApp::spawn_on_redis(&redis.url(), |_| {}).await;
    let second = first.spawn_peer().await;
    let organizer = first.user(Role::Organizer).await;
    let buyer = first.user(Role::User).await;
    let seated = seated_event(&first, &organizer).await;
    let mut client = WsClient::connect(&first.ws_url(), "graphql-transport-ws", json!({}))
        .await
        .unwrap();
    client
        .subscribe("1", SEAT_MAP, json!({ "id": seated.event_id }))
        .await;
    assert_eq!(seat_map(&mut client).await["version"], 1);

    // A change on another instance arrives through Redis as a delta.
    hold_ok(&second, &buyer, &seated.event_id, &[seated.id("A 1-1")]).await;
    let delta = seat_map(&mut client).await;
    assert_eq!(
        (&delta["full"], &delta["version"]),
        (&json!(false), &json!(2))
    );
    assert_eq!(
        states(&delta["seats"]),
        [("A 1-1".to_owned(), "HELD".to_owned())]
    );

    // While Redis is down, the map changes without a word on the bus (as when an instance
    // that made a change dies before Redis is back): only the database can tell the
    // subscriber, and it sends the whole map.
    redis.stop().await;
    let mut conn = second.state.conn().await.unwrap();
    let request = HoldRequest {
        event_id: seated.event_id.parse().unwrap(),
        quantity: None,
        seat_ids: vec![seated.id("B 1-1").parse().unwrap()],
    };
    holds::hold_seats(&mut conn, buyer.id, request)
        .await
        .unwrap();
    drop(conn);
    redis.restart().await;

    let full = seat_map(&mut client).await;
    assert_eq!(full["full"], true, "{full}");
    assert_eq!(full["version"], 3);
    let seats = states(&full["seats"]);
    assert_eq!(seats.len(), 10);
    assert_eq!(state_of(&seats, "A 1-1"), "HELD");
    assert_eq!(state_of(&seats, "B 1-1"), "HELD");
    first.assert_invariant().await;
}

#[tokio::test]
async fn a_general_admission_event_has_no_seat_map() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 5).await;
    let mut client = WsClient::connect(&app.ws_url(), "graphql-transport-ws", json!({}))
        .await
        .unwrap();
    client
        .subscribe("1", SEAT_MAP, json!({ "id": event_id }))
        .await;
    let message = client.next_message().await.unwrap();
    let errors = operation_errors(&message);
    assert_eq!(
        errors[0]["extensions"]["code"], "BAD_USER_INPUT",
        "{message}"
    );
    assert_eq!(
        errors[0]["extensions"]["reason"], "NO_SEAT_MAP",
        "{message}"
    );
}

#[tokio::test]
async fn a_drafts_seat_map_is_only_its_organizers() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let venue = app
        .gql_ok(
            Some(&organizer.token),
            CREATE_VENUE,
            json!({ "input": layout() }),
        )
        .await;
    let mut input = event_input("Draft Show", 0);
    input["capacity"] = Value::Null;
    input["venueId"] = venue["createVenue"]["id"].clone();
    input["status"] = json!("DRAFT");
    let event = app
        .gql_ok(
            Some(&organizer.token),
            CREATE_EVENT,
            json!({ "input": input }),
        )
        .await;
    let event_id = event["createEvent"]["id"].as_str().unwrap();

    let mut stranger = WsClient::connect(&app.ws_url(), "graphql-transport-ws", json!({}))
        .await
        .unwrap();
    stranger
        .subscribe("1", SEAT_MAP, json!({ "id": event_id }))
        .await;
    let message = stranger.next_message().await.unwrap();
    assert_eq!(
        operation_errors(&message)[0]["extensions"]["code"],
        "NOT_FOUND",
        "{message}"
    );
    let init = json!({ "Authorization": format!("Bearer {}", organizer.token) });
    let mut owner = WsClient::connect(&app.ws_url(), "graphql-transport-ws", init)
        .await
        .unwrap();
    owner
        .subscribe("1", SEAT_MAP, json!({ "id": event_id }))
        .await;
    let first = seat_map(&mut owner).await;
    assert_eq!(first["full"], true);
    assert_eq!(first["seats"].as_array().unwrap().len(), 10);
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

#[tokio::test]
async fn a_bad_section_name_is_bad_input() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let seated = seated_event(&app, &organizer).await;
    for section in ["A\u{0}", &"S".repeat(51)] {
        let body = app
            .gql(
                None,
                "query($id: ID!, $s: String) { event(id: $id) { seats(section: $s) { id } } }",
                json!({ "id": seated.event_id, "s": section }),
            )
            .await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    }
}

/// A published seated event in a venue of `rows` rows of 1,000 seats; returns its id.
async fn big_seated_event(app: &TestApp, organizer: &TestUser, rows: usize) -> String {
    let rows: Vec<Value> = (1..=rows)
        .map(|row| json!({ "label": row.to_string(), "seats": 1000 }))
        .collect();
    let venue = app
        .gql_ok(
            Some(&organizer.token),
            CREATE_VENUE,
            json!({ "input": { "name": "Arena", "address": "1 Arena Way", "sections": [{ "name": "Floor", "rows": rows }] } }),
        )
        .await;
    let venue_id = venue["createVenue"]["id"].as_str().unwrap();
    event_in_venue(app, organizer, "Arena Show", venue_id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seat_maps_of_large_venues_reach_the_reference_client_whole() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let small = seated_event(&app, &organizer).await.event_id;
    let two_thousand = big_seated_event(&app, &organizer, 2).await;
    let twenty_thousand = big_seated_event(&app, &organizer, 20).await;

    let ids = format!("{small},{two_thousand},{twenty_thousand},{small}");
    let seen = crate::support::run_node(
        "seat-map.mjs",
        &[
            ("EVENTLY_WS_URL", app.ws_url().as_str()),
            ("EVENTLY_EVENT_IDS", &ids),
        ],
    )
    .await;
    // Every map arrives whole, on the one connection the client opened.
    assert_eq!(
        seen,
        json!({
            "maps": [
                { "full": true, "seats": 10 },
                { "full": true, "seats": 2000 },
                { "full": true, "seats": 20000 },
                { "full": true, "seats": 10 },
            ],
            "connections": 1,
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_viewers_of_one_seat_map_share_one_read_per_version() {
    let (app, proxy) = crate::support::spawn_behind_database_proxy(|_| {}).await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let seated = seated_event(&app, &organizer).await;
    // The seat map's read is the one read-only repeatable-read transaction.
    proxy.count(b"REPEATABLE READ READ ONLY");

    // Viewers arriving one after another, then many at once, all at version 1.
    let mut viewers = Vec::new();
    for _ in 0..5 {
        let mut viewer = WsClient::connect(&app.ws_url(), "graphql-transport-ws", json!({}))
            .await
            .unwrap();
        viewer
            .subscribe("map", SEAT_MAP, json!({ "id": seated.event_id }))
            .await;
        assert_eq!(seat_map(&mut viewer).await["version"], 1);
        viewers.push(viewer);
    }
    let together = futures_util::future::join_all((0..15).map(|_| async {
        let mut viewer = WsClient::connect(&app.ws_url(), "graphql-transport-ws", json!({}))
            .await
            .unwrap();
        viewer
            .subscribe("map", SEAT_MAP, json!({ "id": seated.event_id }))
            .await;
        let first = seat_map(&mut viewer).await;
        assert_eq!(first["version"], 1);
        assert_eq!(first["seats"].as_array().unwrap().len(), 10);
        viewer
    }))
    .await;
    viewers.extend(together);
    assert_eq!(
        proxy.counted(),
        1,
        "twenty viewers of one version read the map this often"
    );

    // A change reaches every viewer as a delta, with no read; a viewer arriving after it gets
    // the new version, read once.
    hold_ok(&app, &buyer, &seated.event_id, &[seated.id("A 1-1")]).await;
    for viewer in &mut viewers {
        let delta = seat_map(viewer).await;
        assert_eq!(
            (delta["version"].clone(), delta["full"].clone()),
            (json!(2), json!(false))
        );
    }
    for _ in 0..3 {
        let mut late = WsClient::connect(&app.ws_url(), "graphql-transport-ws", json!({}))
            .await
            .unwrap();
        late.subscribe("map", SEAT_MAP, json!({ "id": seated.event_id }))
            .await;
        let first = seat_map(&mut late).await;
        assert_eq!(first["version"], 2);
        assert_eq!(state_of(&states(&first["seats"]), "A 1-1"), "HELD");
    }
    assert_eq!(proxy.counted(), 2, "a new version is read once");
}
