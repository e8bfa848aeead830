//! Theatre tiers: ticket types tied to sections of the seat map sell seats there only, and
//! count only those seats as available.

use evently::db::models::Role;
use serde_json::{Value, json};

use super::*;
use crate::support::{error_code, event_input, merged};

const CREATE_VENUE: &str =
    "mutation($input: CreateVenueInput!) { createVenue(input: $input) { id } }";
const EVENT_SEATS: &str =
    "query($id: ID!) { event(id: $id) { seats { id section row number state } } }";
const TYPES: &str = "query($id: ID!) { event(id: $id) {
    seatsAvailable ticketTypes { id name sections available } } }";
const PLACE: &str = "mutation($input: PlaceOrderInput!) {
  placeOrder(input: $input) { id status lines { quantity seats { section } } } }";
const UPDATE_TYPE: &str = "mutation($id: ID!, $input: UpdateTicketTypeInput!) {
  updateTicketType(id: $id, input: $input) { id sections available } }";

/// A theatre of two sections, Stalls (A: 8 seats) and Balcony (B: 2 seats), with an event in
/// it: (event id, seat ids of section A, of section B).
async fn theatre(app: &TestApp, organizer: &TestUser) -> (String, Vec<String>, Vec<String>) {
    let venue = app
        .gql_ok(
            Some(&organizer.token),
            CREATE_VENUE,
            json!({ "input": {
                "name": "Little Theatre",
                "sections": [
                    { "name": "A", "rows": [{ "label": "1", "seats": 4 }, { "label": "2", "seats": 4 }] },
                    { "name": "B", "rows": [{ "label": "1", "seats": 2 }] },
                ],
            } }),
        )
        .await["createVenue"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let input = merged(
        event_input("Hamlet", 0),
        json!({ "capacity": null, "venueId": venue }),
    );
    let event = app.create_event(organizer, input).await.0;
    let seats =
        app.gql_ok(None, EVENT_SEATS, json!({ "id": event })).await["event"]["seats"].clone();
    let in_section = |name: &str| -> Vec<String> {
        seats
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["section"] == name)
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (a, b) = (in_section("A"), in_section("B"));
    (event, a, b)
}

/// `available` of each ticket type, by name.
async fn availability(app: &TestApp, event: &str) -> Vec<(String, i64)> {
    let data = app.gql_ok(None, TYPES, json!({ "id": event })).await;
    data["event"]["ticketTypes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["available"].as_i64().unwrap(),
            )
        })
        .collect()
}

async fn place(app: &TestApp, buyer: &TestUser, event: &str, line: Value) -> Value {
    app.gql(
        Some(&buyer.token),
        PLACE,
        json!({ "input": { "eventId": event, "lines": [line] } }),
    )
    .await
}

fn tier(name: &str, cents: i64, sections: &[&str]) -> Value {
    json!({ "name": name, "price": eur(cents), "sections": sections })
}

#[tokio::test]
async fn a_tier_sells_only_the_seats_of_its_sections() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let (event, stalls_seats, balcony_seats) = theatre(&app, &organizer).await;
    let stalls = ticket_type(&app, &organizer, &event, tier("Stalls", 4000, &["A"])).await;
    let balcony = ticket_type(&app, &organizer, &event, tier("Balcony", 2500, &["B"])).await;
    assert_eq!(
        availability(&app, &event).await,
        vec![("Stalls".into(), 8), ("Balcony".into(), 2)]
    );

    // A stalls seat on a balcony ticket: refused, nothing held.
    let wrong = place(
        &app,
        &buyer,
        &event,
        json!({ "ticketTypeId": balcony, "seatIds": [stalls_seats[0]] }),
    )
    .await;
    assert_eq!(reason(&wrong), "SEAT_NOT_IN_TICKET_TYPE", "{wrong}");
    assert_eq!(wrong["errors"][0]["extensions"]["field"], "seatIds");
    assert_eq!(app.count("holds").await, 0);

    // Best available for the balcony: the balcony's seats, whatever is free elsewhere.
    let placed = place(
        &app,
        &buyer,
        &event,
        json!({ "ticketTypeId": balcony, "quantity": 2 }),
    )
    .await;
    assert!(placed.get("errors").is_none(), "{placed}");
    let order = placed["data"]["placeOrder"].clone();
    let id = order["id"].as_str().unwrap().to_owned();
    // The order's hold keeps two seats, both in B (a line shows its seats once paid).
    assert_eq!(
        app.count(&format!(
            "seat_claims c JOIN venue_seats s ON s.id = c.seat_id
               JOIN orders o ON o.hold_id = c.hold_id
             WHERE o.id = '{id}' AND s.section = 'B'"
        ))
        .await,
        2
    );
    assert_eq!(
        availability(&app, &event).await,
        vec![("Stalls".into(), 8), ("Balcony".into(), 0)]
    );
    let sold_out = place(
        &app,
        &buyer,
        &event,
        json!({ "ticketTypeId": balcony, "quantity": 1 }),
    )
    .await;
    assert_eq!(error_code(&sold_out), "SOLD_OUT", "{sold_out}");
    // The stalls still sell their own seats, named or not.
    let named = place(
        &app,
        &buyer,
        &event,
        json!({ "ticketTypeId": stalls, "seatIds": [stalls_seats[7]] }),
    )
    .await;
    assert!(named.get("errors").is_none(), "{named}");
    assert_eq!(balcony_seats.len(), 2);

    // Moving a tier while its orders wait for payment is refused; once paid it may widen.
    let busy = app
        .gql(
            Some(&organizer.token),
            UPDATE_TYPE,
            json!({ "id": balcony, "input": { "sections": ["A", "B"] } }),
        )
        .await;
    assert_eq!(reason(&busy), "TICKET_TYPE_IN_USE", "{busy}");
    mark_paid(&app, &organizer, &id).await;
    let paid = app
        .gql_ok(
            Some(&buyer.token),
            "query($id: ID!) { order(id: $id) { lines { seats { section } } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        paid["order"]["lines"][0]["seats"],
        json!([{ "section": "B" }, { "section": "B" }])
    );
    let widened = app
        .gql_ok(
            Some(&organizer.token),
            UPDATE_TYPE,
            json!({ "id": balcony, "input": { "sections": ["A", "B"] } }),
        )
        .await;
    assert_eq!(widened["updateTicketType"]["sections"], json!(["A", "B"]));
    assert_eq!(widened["updateTicketType"]["available"], 7);
    assert_money_invariants(&app).await;
}

#[tokio::test]
async fn sections_must_be_of_the_events_seat_map() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let (event, _, _) = theatre(&app, &organizer).await;
    let unknown = app
        .gql(
            Some(&organizer.token),
            CREATE_TICKET_TYPE,
            json!({ "eventId": event, "input": tier("Gods", 1000, &["Z"]) }),
        )
        .await;
    assert_eq!(reason(&unknown), "UNKNOWN_SECTION", "{unknown}");
    let standing = super::event(&app, &organizer, 50).await;
    let general = app
        .gql(
            Some(&organizer.token),
            CREATE_TICKET_TYPE,
            json!({ "eventId": standing, "input": tier("Front", 1000, &["A"]) }),
        )
        .await;
    assert_eq!(reason(&general), "NO_SEAT_MAP", "{general}");
}
