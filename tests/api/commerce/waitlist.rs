//! The waiting list of an event that sells ticket types: freed seats (a refund, an order
//! cancelled or not paid in time) are offered, in order, as orders pending payment for the type
//! each entry waits for; paid, they are tickets. And `myBookingUpdates` carries every status
//! change of the user's orders.

use evently::db::models::Role;
use serde_json::{Value, json};

use super::*;
use crate::support::{WAIT, WsClient, eventually};

const JOIN: &str = "mutation($id: ID!, $q: Int!, $type: ID) {
  joinWaitlist(eventId: $id, quantity: $q, ticketTypeId: $type) {
    id status position quantity ticketType { id } } }";

const ENTRIES: &str = "{ myWaitlistEntries(all: true) {
    id status ticketType { id }
    order { id status total { amount } lines { quantity ticketType { id } } }
    hold { id status } } }";

const UPDATES: &str = "subscription { myBookingUpdates { __typename id quantity event { id }
    ... on Order { status version total { amount } tickets { status } }
    ... on WaitlistEntry { status }
    ... on Hold { status isOffer } } }";

async fn join(app: &TestApp, user: &TestUser, event: &str, quantity: i32, ty: &str) -> Value {
    app.gql(
        Some(&user.token),
        JOIN,
        json!({ "id": event, "q": quantity, "type": ty }),
    )
    .await
}

/// The user's waiting-list entries, newest first.
async fn entries(app: &TestApp, user: &TestUser) -> Vec<Value> {
    app.gql_ok(Some(&user.token), ENTRIES, json!({})).await["myWaitlistEntries"]
        .as_array()
        .unwrap()
        .clone()
}

/// Sells out a `capacity`-seat event to one paid order: (event, type, the order's id).
async fn sold_out(
    app: &TestApp,
    organizer: &TestUser,
    buyer: &TestUser,
    capacity: i32,
) -> (String, String, String) {
    let event = event(app, organizer, capacity).await;
    let regular = priced(app, organizer, &event, "Regular", 3000).await;
    let placed = order(app, buyer, &event, &regular, capacity).await;
    let id = placed["id"].as_str().unwrap().to_owned();
    assert_eq!(mark_paid(app, organizer, &id).await["status"], "PAID");
    (event, regular, id)
}

async fn subscribe(app: &TestApp, user: &TestUser) -> WsClient {
    let mut client = WsClient::connect(
        &app.ws_url(),
        "graphql-transport-ws",
        json!({ "Authorization": format!("Bearer {}", user.token) }),
    )
    .await
    .unwrap();
    client.subscribe("mine", UPDATES, json!({})).await;
    client
}

/// Reads `myBookingUpdates` until the order `id` arrives with `status` (other messages, and
/// the order's earlier states, are skipped); every state of it seen on the way is returned.
async fn until_order(client: &mut WsClient, id: &str, status: &str) -> (Value, Vec<String>) {
    let mut seen = Vec::new();
    loop {
        let message = client.next_data().await["data"]["myBookingUpdates"].clone();
        if message["__typename"] == "Order" && message["id"] == id {
            seen.push(message["status"].as_str().unwrap().to_owned());
            if message["status"] == status {
                return (message, seen);
            }
        }
    }
}

/// A first order of a probe event, seen on the subscription: it is attached from then on.
async fn attach(app: &TestApp, organizer: &TestUser, user: &TestUser, client: &mut WsClient) {
    let probe = event(app, organizer, 5).await;
    let probe_type = priced(app, organizer, &probe, "Probe", 100).await;
    let placed = order(app, user, &probe, &probe_type, 1).await;
    let id = placed["id"].as_str().unwrap();
    let (message, _) = until_order(client, id, "PENDING_PAYMENT").await;
    assert_eq!(message["quantity"], 1);
    assert_eq!(message["event"]["id"], probe.as_str());
}

#[tokio::test]
async fn a_refunded_seat_is_offered_to_the_waiting_list_as_an_order_that_pays_into_tickets() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let waiter = app.user(Role::User).await;
    let (event, regular, sold) = sold_out(&app, &organizer, &buyer, 2).await;

    // Sold out: the waiter queues for one Regular ticket (and must say which type).
    let untyped = app
        .gql(
            Some(&waiter.token),
            JOIN,
            json!({ "id": event, "q": 1, "type": null }),
        )
        .await;
    assert_eq!(reason(&untyped), "TICKET_TYPE_REQUIRED", "{untyped}");
    let joined = join(&app, &waiter, &event, 1, &regular).await;
    assert!(joined.get("errors").is_none(), "{joined}");
    let entry = joined["data"]["joinWaitlist"].clone();
    assert_eq!(entry["status"], "WAITING");
    assert_eq!(entry["position"], 1);
    assert_eq!(entry["ticketType"]["id"], regular.as_str());

    let mut client = subscribe(&app, &waiter).await;
    attach(&app, &organizer, &waiter, &mut client).await;

    // The organizer refunds the sold order: its two seats come back, one goes to the waiter.
    let refunded = app
        .gql_ok(Some(&organizer.token), REFUND, json!({ "id": sold }))
        .await;
    assert_eq!(refunded["refundOrder"]["status"], "REFUNDED", "{refunded}");
    let offered = eventually(WAIT, || async {
        let entries = entries(&app, &waiter).await;
        entries
            .into_iter()
            .find(|e| e["id"] == entry["id"] && e["status"] == "OFFERED")
    })
    .await;
    let offer = offered["order"].clone();
    assert_eq!(offer["status"], "PENDING_PAYMENT", "{offered}");
    assert_eq!(offer["total"]["amount"], 3000);
    assert_eq!(offer["lines"][0]["quantity"], 1);
    assert_eq!(offer["lines"][0]["ticketType"]["id"], regular.as_str());
    assert_eq!(offered["hold"]["status"], "HELD");
    let offer_id = offer["id"].as_str().unwrap().to_owned();
    // The waiter hears of the offered order on myBookingUpdates.
    let (pending, _) = until_order(&mut client, &offer_id, "PENDING_PAYMENT").await;
    assert_eq!(pending["event"]["id"], event.as_str());
    assert_eq!(pending["total"]["amount"], 3000);

    // One seat held for the waiter's order, the other back on sale; the type counts it held.
    assert_eq!(
        app.count(&format!(
            "events WHERE id = '{event}' AND seats_available = 1 AND seats_held = 1"
        ))
        .await,
        1
    );
    assert_eq!(
        app.count(&format!(
            "ticket_types WHERE id = '{regular}' AND held = 1 AND sold = 0"
        ))
        .await,
        1
    );
    assert_money_invariants(&app).await;

    // Paid: tickets, the entry fulfilled, and the waiter told.
    let paid = mark_paid(&app, &organizer, &offer_id).await;
    assert_eq!(paid["status"], "PAID", "{paid}");
    assert_eq!(paid["tickets"].as_array().unwrap().len(), 1);
    let (message, _) = until_order(&mut client, &offer_id, "PAID").await;
    assert_eq!(message["tickets"], json!([{ "status": "VALID" }]));
    let fulfilled = entries(&app, &waiter).await;
    let fulfilled = fulfilled.iter().find(|e| e["id"] == entry["id"]).unwrap();
    assert_eq!(fulfilled["status"], "FULFILLED");
    assert_eq!(
        app.count(&format!(
            "ticket_types WHERE id = '{regular}' AND held = 0 AND sold = 1"
        ))
        .await,
        1
    );
    assert_money_invariants(&app).await;
}

#[tokio::test]
async fn an_offered_order_not_paid_in_time_goes_to_the_next_in_line() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let first = app.user(Role::User).await;
    let second = app.user(Role::User).await;
    let (event, regular, sold) = sold_out(&app, &organizer, &buyer, 1).await;
    for waiter in [&first, &second] {
        let joined = join(&app, waiter, &event, 1, &regular).await;
        assert!(joined.get("errors").is_none(), "{joined}");
    }
    app.gql_ok(Some(&organizer.token), REFUND, json!({ "id": sold }))
        .await;
    let offer = eventually(WAIT, || async {
        entries(&app, &first)
            .await
            .into_iter()
            .find(|e| e["status"] == "OFFERED")
    })
    .await;
    let offer_id = offer["order"]["id"].as_str().unwrap().to_owned();
    // The second waits while the first has the seat.
    assert_eq!(entries(&app, &second).await[0]["status"], "WAITING");
    assert_money_invariants(&app).await;

    run_out_of_time(&app, &offer_id).await;
    let next = eventually(WAIT, || async {
        entries(&app, &second)
            .await
            .into_iter()
            .find(|e| e["status"] == "OFFERED")
    })
    .await;
    assert_eq!(
        read_order(&app, &first, &offer_id).await["status"],
        "EXPIRED"
    );
    assert_eq!(entries(&app, &first).await[0]["status"], "EXPIRED");
    assert_eq!(next["order"]["status"], "PENDING_PAYMENT");
    assert_money_invariants(&app).await;

    // The second turns it down: the seat goes back on sale, nobody else waits.
    let next_id = next["order"]["id"].as_str().unwrap();
    app.gql_ok(Some(&second.token), CANCEL_ORDER, json!({ "id": next_id }))
        .await;
    assert_eq!(
        app.count(&format!(
            "events WHERE id = '{event}' AND seats_available = 1 AND seats_held = 0"
        ))
        .await,
        1
    );
    assert_eq!(entries(&app, &second).await[0]["status"], "LEFT");
    assert_money_invariants(&app).await;
}

#[tokio::test]
async fn only_a_sold_out_priced_type_of_a_ticketed_event_has_a_waiting_list() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let waiter = app.user(Role::User).await;
    let (concert, regular, _) = sold_out(&app, &organizer, &buyer, 2).await;
    let free = ticket_type(
        &app,
        &organizer,
        &concert,
        json!({ "name": "Guest", "price": eur(0) }),
    )
    .await;
    assert_eq!(
        reason(&join(&app, &waiter, &concert, 1, &free).await),
        "FREE_TICKET_TYPE"
    );
    assert_eq!(
        reason(&join(&app, &waiter, &concert, 11, &regular).await),
        "QUANTITY_OUT_OF_RANGE"
    );
    let other = event(&app, &organizer, 5).await;
    let other_type = priced(&app, &organizer, &other, "Other", 1000).await;
    let elsewhere = join(&app, &waiter, &concert, 1, &other_type).await;
    assert_eq!(
        elsewhere["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{elsewhere}"
    );
    // Seats left: order them instead.
    assert_eq!(
        reason(&join(&app, &waiter, &other, 1, &other_type).await),
        "SEATS_AVAILABLE"
    );
    // An event without ticket types has one list, with no type.
    let untyped = app
        .create_event(&organizer, crate::support::event_input("Talk", 1))
        .await
        .0;
    assert_eq!(
        reason(&join(&app, &waiter, &untyped, 1, &regular).await),
        "NO_TICKET_TYPES"
    );
}

#[tokio::test]
async fn my_booking_updates_carries_every_status_change_of_my_orders() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = event(&app, &organizer, 10).await;
    let regular = priced(&app, &organizer, &event, "Regular", 2500).await;
    let mut client = subscribe(&app, &buyer).await;
    attach(&app, &organizer, &buyer, &mut client).await;

    // Placed, paid, refunded.
    let placed = order(&app, &buyer, &event, &regular, 2).await;
    let id = placed["id"].as_str().unwrap().to_owned();
    let (pending, _) = until_order(&mut client, &id, "PENDING_PAYMENT").await;
    assert_eq!(pending["quantity"], 2);
    assert_eq!(pending["total"]["amount"], 5000);
    mark_paid(&app, &organizer, &id).await;
    let (paid, _) = until_order(&mut client, &id, "PAID").await;
    assert_eq!(paid["tickets"].as_array().unwrap().len(), 2);
    app.gql_ok(Some(&organizer.token), REFUND, json!({ "id": id }))
        .await;
    let (refunded, _) = until_order(&mut client, &id, "REFUNDED").await;
    assert_eq!(
        refunded["tickets"],
        json!([{ "status": "REFUNDED" }, { "status": "REFUNDED" }])
    );
    assert!(refunded["version"].as_i64() > paid["version"].as_i64());

    // Cancelled by the buyer.
    let placed = order(&app, &buyer, &event, &regular, 1).await;
    let cancelled_id = placed["id"].as_str().unwrap().to_owned();
    until_order(&mut client, &cancelled_id, "PENDING_PAYMENT").await;
    app.gql_ok(
        Some(&buyer.token),
        CANCEL_ORDER,
        json!({ "id": cancelled_id }),
    )
    .await;
    until_order(&mut client, &cancelled_id, "CANCELLED").await;

    // Not paid in time: the sweeper expires it, and the buyer is told.
    let placed = order(&app, &buyer, &event, &regular, 1).await;
    let expired_id = placed["id"].as_str().unwrap().to_owned();
    until_order(&mut client, &expired_id, "PENDING_PAYMENT").await;
    run_out_of_time(&app, &expired_id).await;
    until_order(&mut client, &expired_id, "EXPIRED").await;
    assert_money_invariants(&app).await;
}
