//! The GraphQL operations tests share, as methods of [`TestApp`] that return typed ids (an
//! [`EventId`] is not a [`BookingId`]) instead of JSON every test pokes at. Each `try_` form
//! returns the whole answer, for tests of refusals; the plain form insists on success.

use std::fmt;
use std::ops::Deref;

use serde_json::{Value, json};

use super::app::{TestApp, TestUser};

pub const CREATE_EVENT: &str =
    "mutation($input: CreateEventInput!) { createEvent(input: $input) { id } }";
pub const BOOK: &str =
    "mutation($input: BookSeatsInput!) { bookSeats(input: $input) { id quantity status } }";
pub const CANCEL: &str = "mutation($id: ID!) { cancelBooking(id: $id) { id status cancelledAt } }";
pub const HOLD: &str = "mutation($input: HoldSeatsInput!) { holdSeats(input: $input) { id status quantity expiresAt isOffer event { id seatsAvailable seatsHeld } } }";
pub const CONFIRM: &str = "mutation($id: ID!, $key: String) { confirmHold(holdId: $id, idempotencyKey: $key) { id status quantity } }";
pub const REGISTER: &str = "mutation($input: RegisterInput!) { register(input: $input) { accessToken refreshToken expiresIn user { id email role } } }";

// Operations the authorization tests try as every kind of caller.
pub const UPDATE_EVENT_TITLE: &str =
    "mutation($id: ID!) { updateEvent(id: $id, input: { title: \"Hijacked\" }) { title } }";
pub const CANCEL_EVENT: &str = "mutation($id: ID!) { cancelEvent(id: $id) { status } }";
pub const EVENT_BOOKINGS: &str =
    "query($id: ID!) { eventBookings(eventId: $id) { edges { node { id } } } }";
pub const SET_ROLE: &str =
    "mutation($id: ID!, $role: Role!) { setUserRole(userId: $id, role: $role) { role } }";

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id the API answered with at `pointer` (e.g. `/bookSeats/id`).
            fn from_answer(data: &Value, pointer: &str) -> Self {
                let id = data
                    .pointer(pointer)
                    .and_then(Value::as_str)
                    .unwrap_or_else(|| panic!("no {pointer} in {data}"));
                Self(id.to_owned())
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<$name> for Value {
            fn eq(&self, id: &$name) -> bool {
                self.as_str() == Some(id.as_str())
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, id: &$name) -> bool {
                *self == id.0
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

id!(
    /// An event's id.
    EventId
);
id!(
    /// A booking's id.
    BookingId
);
id!(
    /// A hold's id (an offer from the waiting list is a hold too).
    HoldId
);

/// An upcoming event's `CreateEventInput`: a week from now, two hours long.
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

/// `input` with the fields of `extra` set over its own.
pub fn merged(mut input: Value, extra: Value) -> Value {
    for (key, value) in extra.as_object().expect("an object of fields") {
        input[key] = value.clone();
    }
    input
}

/// The hex SHA-256 of a query: its id as an automatic persisted query or on the allow list.
pub fn sha256(query: &str) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(query.as_bytes()))
}

/// An allow-list file (`GRAPHQL_PERSISTED_QUERY_ALLOWLIST`) registering `operations` by hash.
pub fn allow_list(operations: &[&str]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("evently-allowlist-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("operations.json");
    let by_hash: serde_json::Map<String, Value> = operations
        .iter()
        .map(|operation| (sha256(operation), json!(operation)))
        .collect();
    std::fs::write(&path, Value::Object(by_hash).to_string()).unwrap();
    path
}

/// The `extensions.code` of the first error, or panics if there is none.
pub fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

fn quantity_of(event: &str, quantity: i64) -> Value {
    json!({ "input": { "eventId": event, "quantity": quantity } })
}

impl TestApp {
    /// Creates an upcoming event through the API and returns its id.
    pub async fn event(&self, organizer: &TestUser, capacity: i32) -> EventId {
        self.create_event(organizer, event_input("Test Event", capacity))
            .await
    }

    /// `createEvent` with this input, which must succeed.
    pub async fn create_event(&self, organizer: &TestUser, input: Value) -> EventId {
        let data = self
            .gql_ok(
                Some(&organizer.token),
                CREATE_EVENT,
                json!({ "input": input }),
            )
            .await;
        EventId::from_answer(&data, "/createEvent/id")
    }

    /// `bookSeats` of `quantity` seats: the whole answer.
    pub async fn try_book(&self, user: &TestUser, event: &str, quantity: i64) -> Value {
        self.gql(Some(&user.token), BOOK, quantity_of(event, quantity))
            .await
    }

    /// `bookSeats` of `quantity` seats, which must succeed.
    pub async fn book(&self, user: &TestUser, event: &str, quantity: i64) -> BookingId {
        let data = self
            .gql_ok(Some(&user.token), BOOK, quantity_of(event, quantity))
            .await;
        BookingId::from_answer(&data, "/bookSeats/id")
    }

    /// `holdSeats` of `quantity` seats: the whole answer.
    pub async fn try_hold(&self, user: &TestUser, event: &str, quantity: i64) -> Value {
        self.gql(Some(&user.token), HOLD, quantity_of(event, quantity))
            .await
    }

    /// `holdSeats` of `quantity` seats, which must succeed.
    pub async fn hold(&self, user: &TestUser, event: &str, quantity: i64) -> HoldId {
        let body = self.try_hold(user, event, quantity).await;
        assert!(body["errors"].is_null(), "hold refused: {body}");
        HoldId::from_answer(&body, "/data/holdSeats/id")
    }

    /// `confirmHold`, which must succeed: the booking it made.
    pub async fn confirm(&self, user: &TestUser, hold: &str) -> BookingId {
        let data = self
            .gql_ok(Some(&user.token), CONFIRM, json!({ "id": hold }))
            .await;
        BookingId::from_answer(&data, "/confirmHold/id")
    }

    /// `register`, which must succeed: the new user, signed in.
    pub async fn register(&self, email: &str, password: &str, name: &str) -> TestUser {
        let input = json!({ "input": { "email": email, "password": password, "name": name } });
        let data = self.gql_ok(None, REGISTER, input).await;
        let registered = &data["register"];
        TestUser {
            id: registered["user"]["id"].as_str().unwrap().parse().unwrap(),
            token: registered["accessToken"].as_str().unwrap().to_owned(),
            refresh_token: registered["refreshToken"].as_str().unwrap().to_owned(),
        }
    }
}
