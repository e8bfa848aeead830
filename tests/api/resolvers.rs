//! Resolver behaviour that needs no socket, through `schema.execute` on the schema the server
//! builds (see `support::schema`): input checks with their `extensions.code`, who may see and
//! do what with a viewer in context, and page bounds. The same behaviour over HTTP and
//! WebSockets is covered by the other modules; these run without a server.

use evently::db::models::Role;
use evently::graphql::context::Caller;
use serde_json::{Value, json};

use crate::support::operations::{CREATE_EVENT, EVENT_BOOKINGS};
use crate::support::{BOOK, EventId, SchemaTest, TestUser, error_code, event_input, merged};

const EVENT: &str = "query($id: ID!) { event(id: $id) { id status } }";
const EVENTS: &str = "query($first: Int, $after: String) {
    events(first: $first, after: $after) { edges { node { id } } pageInfo { hasNextPage endCursor } }
}";

async fn create_event(schema: &SchemaTest, organizer: &TestUser, extra: Value) -> EventId {
    let input = merged(event_input("Resolver tier", 20), extra);
    let data = schema
        .execute_ok(
            schema.signed_in(organizer),
            CREATE_EVENT,
            json!({ "input": input }),
        )
        .await;
    EventId(data["createEvent"]["id"].as_str().unwrap().to_owned())
}

fn event_ids(data: &Value) -> Vec<String> {
    data["events"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| edge["node"]["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn booking_input_is_checked_before_anything_is_written() {
    let schema = SchemaTest::new().await;
    let organizer = schema.user(Role::Organizer).await;
    let buyer = schema.user(Role::User).await;
    let event = create_event(&schema, &organizer, json!({})).await;
    let book =
        |caller: Caller, input: Value| schema.execute(caller, BOOK, json!({ "input": input }));

    for quantity in [0, -3, 11] {
        let body = book(
            schema.signed_in(&buyer),
            json!({ "eventId": event, "quantity": quantity }),
        )
        .await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
        assert_eq!(
            body["errors"][0]["extensions"]["field"], "quantity",
            "{body}"
        );
    }
    let body = book(schema.signed_in(&buyer), json!({ "eventId": "not-a-uuid" })).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    let body = book(
        schema.signed_in(&buyer),
        json!({ "eventId": uuid::Uuid::new_v4() }),
    )
    .await;
    assert_eq!(error_code(&body), "NOT_FOUND", "{body}");
    let body = book(Caller::Anonymous, json!({ "eventId": event })).await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED", "{body}");
    assert_eq!(schema.count("bookings").await, 0);

    // The same request, valid, books: the refusals above were about the input.
    let data = schema
        .execute_ok(
            schema.signed_in(&buyer),
            BOOK,
            json!({ "input": { "eventId": event, "quantity": 2 } }),
        )
        .await;
    assert_eq!(data["bookSeats"]["status"], "CONFIRMED", "{data}");
    assert_eq!(schema.count("bookings").await, 1);
}

#[tokio::test]
async fn a_rejected_token_is_told_apart_from_an_anonymous_caller() {
    let schema = SchemaTest::new().await;
    let user = schema.user(Role::User).await;
    const ME: &str = "{ me { id role } }";
    const MY_BOOKINGS: &str = "{ myBookings { edges { node { id } } } }";

    // Anonymous: `me` is null, and what needs a user says so.
    let data = schema.execute_ok(Caller::Anonymous, ME, json!({})).await;
    assert_eq!(data["me"], Value::Null);
    let body = schema
        .execute(Caller::Anonymous, MY_BOOKINGS, json!({}))
        .await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED", "{body}");

    // A token that was sent but is not valid is an error even where anonymous is fine.
    let rejected = || Caller::Rejected("invalid or expired access token");
    let body = schema.execute(rejected(), ME, json!({})).await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED", "{body}");
    assert_eq!(body["data"]["me"], Value::Null, "{body}");

    let data = schema
        .execute_ok(schema.signed_in(&user), ME, json!({}))
        .await;
    assert_eq!(data["me"], json!({ "id": user.id, "role": "USER" }));
    let data = schema
        .execute_ok(schema.signed_in(&user), MY_BOOKINGS, json!({}))
        .await;
    assert_eq!(data["myBookings"]["edges"], json!([]));
}

#[tokio::test]
async fn an_events_bookings_are_listed_for_its_organizer_and_admins_only() {
    let schema = SchemaTest::new().await;
    let organizer = schema.user(Role::Organizer).await;
    let rival = schema.user(Role::Organizer).await;
    let admin = schema.user(Role::Admin).await;
    let buyer = schema.user(Role::User).await;
    let event = create_event(&schema, &organizer, json!({})).await;
    let booked = schema
        .execute_ok(
            schema.signed_in(&buyer),
            BOOK,
            json!({ "input": { "eventId": event, "quantity": 1 } }),
        )
        .await;
    let booking = &booked["bookSeats"]["id"];

    let id = json!({ "id": event });
    for (who, caller) in [
        ("anonymous", Caller::Anonymous),
        ("the buyer", schema.signed_in(&buyer)),
        ("another organizer", schema.signed_in(&rival)),
    ] {
        let body = schema.execute(caller, EVENT_BOOKINGS, id.clone()).await;
        let expected = if who == "anonymous" {
            "UNAUTHENTICATED"
        } else {
            "FORBIDDEN"
        };
        assert_eq!(error_code(&body), expected, "{who}: {body}");
    }
    for user in [&organizer, &admin] {
        let data = schema
            .execute_ok(schema.signed_in(user), EVENT_BOOKINGS, id.clone())
            .await;
        assert_eq!(
            data["eventBookings"]["edges"],
            json!([{ "node": { "id": booking } }])
        );
    }
}

#[tokio::test]
async fn a_draft_is_null_to_everyone_but_its_organizer_and_admins() {
    let schema = SchemaTest::new().await;
    let organizer = schema.user(Role::Organizer).await;
    let rival = schema.user(Role::Organizer).await;
    let admin = schema.user(Role::Admin).await;
    let draft = create_event(&schema, &organizer, json!({ "status": "DRAFT" })).await;

    let id = json!({ "id": draft });
    for caller in [Caller::Anonymous, schema.signed_in(&rival)] {
        let data = schema.execute_ok(caller, EVENT, id.clone()).await;
        assert_eq!(data["event"], Value::Null);
    }
    for user in [&organizer, &admin] {
        let data = schema
            .execute_ok(schema.signed_in(user), EVENT, id.clone())
            .await;
        assert_eq!(data["event"], json!({ "id": draft, "status": "DRAFT" }));
    }
}

#[tokio::test]
async fn pages_are_bounded_and_cursors_checked() {
    let schema = SchemaTest::new().await;
    let organizer = schema.user(Role::Organizer).await;
    for _ in 0..3 {
        create_event(&schema, &organizer, json!({})).await;
    }
    let events = |first: Value, after: Value| {
        schema.execute(
            Caller::Anonymous,
            EVENTS,
            json!({ "first": first, "after": after }),
        )
    };

    for first in [101, -1] {
        let body = events(json!(first), Value::Null).await;
        assert_eq!(
            error_code(&body),
            "BAD_USER_INPUT",
            "first: {first}: {body}"
        );
        assert_eq!(body["errors"][0]["extensions"]["field"], "first", "{body}");
    }
    let body = events(json!(2), json!("not a cursor")).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "after", "{body}");

    let first = events(json!(2), Value::Null).await;
    assert!(first.get("errors").is_none(), "{first}");
    let page = &first["data"]["events"];
    assert_eq!(event_ids(&first["data"]).len(), 2);
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    let rest = events(json!(100), page["pageInfo"]["endCursor"].clone()).await;
    assert!(rest.get("errors").is_none(), "{rest}");
    assert_eq!(event_ids(&rest["data"]).len(), 1);
    assert_eq!(rest["data"]["events"]["pageInfo"]["hasNextPage"], false);
    let none = events(json!(0), Value::Null).await;
    assert_eq!(none["data"]["events"]["edges"], json!([]), "{none}");
}
