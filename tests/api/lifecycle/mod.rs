//! The event lifecycle: drafts seen only by their organizer and admins, publishing, sales
//! windows, the per-user limit, and completing events that have ended.

use chrono::{Duration, Utc};
use diesel_async::RunQueryDsl;
use evently::db::models::Role;
use serde_json::{Value, json};

use crate::support::{BOOK, CANCEL, EventId, TestApp, TestUser, error_code, event_input};
use crate::support::{SEATS, WsClient, operation_errors};

mod completion;
mod drafts;
mod sales_terms;

const CREATE: &str = "mutation($input: CreateEventInput!) { createEvent(input: $input) { id status version onSale } }";
const UPDATE: &str = "mutation($id: ID!, $input: UpdateEventInput!) { updateEvent(id: $id, input: $input) { id salesStartAt salesEndAt onSale } }";
const PUBLISH: &str = "mutation($id: ID!) { publishEvent(id: $id) { id status version onSale } }";
const CANCEL_EVENT: &str = "mutation($id: ID!) { cancelEvent(id: $id) { id status } }";
const EVENT: &str = "query($id: ID!) { event(id: $id) { id status } }";
const DRAFTS: &str = "{ events(filter: { status: DRAFT }) { edges { node { id } } } }";
const UPDATED: &str = "subscription($id: ID!) { eventUpdated(eventId: $id) { version status } }";
const LISTED: &str = "{ events { edges { node { id } } } }";
const HOLD: &str = "mutation($input: HoldSeatsInput!) { holdSeats(input: $input) { id } }";
const CONFIRM: &str = "mutation($id: ID!) { confirmHold(holdId: $id) { id } }";
const JOIN: &str =
    "mutation($id: ID!, $q: Int!) { joinWaitlist(eventId: $id, quantity: $q) { id } }";

/// An event input with `extra` fields merged in.
fn input_with(extra: Value) -> Value {
    let mut input = event_input("Lifecycle", 10);
    for (key, value) in extra.as_object().unwrap() {
        input[key] = value.clone();
    }
    input
}

async fn create(app: &TestApp, organizer: &TestUser, extra: Value) -> EventId {
    app.create_event(organizer, input_with(extra)).await
}

fn ids(data: &Value) -> Vec<EventId> {
    data["events"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| EventId(edge["node"]["id"].as_str().unwrap().to_owned()))
        .collect()
}

fn reason(body: &Value) -> (&str, &Value) {
    (error_code(body), &body["errors"][0]["extensions"]["reason"])
}

async fn version(app: &TestApp, id: &str) -> i32 {
    let data = app
        .gql_ok(
            None,
            "query($id: ID!) { event(id: $id) { version } }",
            json!({ "id": id }),
        )
        .await;
    i32::try_from(data["event"]["version"].as_i64().unwrap()).unwrap()
}

/// The error code of operation `id`'s first answer, skipping other operations' messages.
async fn operation_code(client: &mut WsClient, id: &str) -> Value {
    loop {
        let message = client.next_message().await.unwrap();
        if message["id"] == id {
            return operation_errors(&message)[0]["extensions"]["code"].clone();
        }
    }
}

/// The data of operation `id`'s next result, skipping other operations' messages.
async fn operation_data(client: &mut WsClient, id: &str) -> Value {
    loop {
        let message = client.next_message().await.unwrap();
        if message["id"] == id {
            assert_eq!(message["type"], "next", "{message}");
            return message["payload"]["data"].clone();
        }
    }
}

async fn sql(app: &TestApp, statement: String) {
    diesel::sql_query(statement)
        .execute(&mut app.db().await)
        .await
        .unwrap();
}
