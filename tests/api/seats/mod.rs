//! Seat maps: venues with numbered seats, claims that two buyers can never share, and the live
//! `seatMap` subscription.

use diesel_async::RunQueryDsl;
use evently::db::models::Role;
use evently::domain::holds::{self, HoldRequest};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::OwnRedis;
use crate::support::{BOOK, CANCEL, EventId, TestApp, TestUser, error_code, event_input, merged};
use crate::support::{WsClient, operation_errors};

mod claims;
mod seat_map;
mod venues;

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
    event_id: EventId,
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

/// `createVenue` with this input, which must succeed: the venue's id.
async fn create_venue(app: &TestApp, organizer: &TestUser, input: Value) -> String {
    let data = app
        .gql_ok(
            Some(&organizer.token),
            CREATE_VENUE,
            json!({ "input": input }),
        )
        .await;
    data["createVenue"]["id"].as_str().unwrap().to_owned()
}

/// A published event in the venue, its capacity the venue's seats; returns its id.
async fn event_in_venue(
    app: &TestApp,
    organizer: &TestUser,
    title: &str,
    venue_id: &str,
) -> EventId {
    app.create_event(organizer, venue_event_input(title, venue_id))
        .await
}

/// A `CreateEventInput` for an event in the venue: no capacity of its own.
fn venue_event_input(title: &str, venue_id: &str) -> Value {
    merged(
        event_input(title, 0),
        json!({ "capacity": null, "venueId": venue_id }),
    )
}

async fn seated_event(app: &TestApp, organizer: &TestUser) -> Seated {
    let venue_id = create_venue(app, organizer, layout()).await;
    let event_id = event_in_venue(app, organizer, "Seated Show", &venue_id).await;
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
