//! The GraphQL operations tests share, and what their answers come to.

use serde_json::{Value, json};

pub fn event_input(title: &str, capacity: i32) -> Value {
    let starts = chrono::Utc::now() + chrono::Duration::days(7);
    json!({
        "title": title,
        "category": "Music",
        "venue": "Test Hall",
        "startsAt": starts.to_rfc3339(),
        "endsAt": (starts + chrono::Duration::hours(2)).to_rfc3339(),
        "capacity": capacity,
    })
}

/// The `extensions.code` of the first error, or panics if there is none.
pub fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

pub const BOOK: &str =
    "mutation($input: BookSeatsInput!) { bookSeats(input: $input) { id quantity status } }";
pub const CANCEL: &str = "mutation($id: ID!) { cancelBooking(id: $id) { id status cancelledAt } }";
