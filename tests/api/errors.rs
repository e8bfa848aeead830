//! Bad input gets a clear code and changes nothing.

use evently::db::models::Role;
use serde_json::json;

use crate::support::{BOOK, TestApp, error_code};

#[tokio::test]
async fn invalid_bookings_are_refused_with_a_code() {
    let app = TestApp::spawn_without_redis().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event_id = app.event(&organizer, 20).await;
    let book =
        |input: serde_json::Value| app.gql(Some(&buyer.token), BOOK, json!({ "input": input }));

    for quantity in [json!(0), json!(-3), json!(11)] {
        let body = book(json!({ "eventId": event_id, "quantity": quantity })).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], "quantity");
    }
    // Not an Int at all: coercion fails before any resolver runs.
    for quantity in [json!(4_294_967_296_i64), json!("two"), json!(1.5)] {
        let body = book(json!({ "eventId": event_id, "quantity": quantity })).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    }
    assert_eq!(
        error_code(&book(json!({ "eventId": "not-a-uuid" })).await),
        "BAD_USER_INPUT"
    );
    assert_eq!(
        error_code(&book(json!({ "eventId": uuid::Uuid::new_v4() })).await),
        "NOT_FOUND"
    );
    let long_key = "k".repeat(201);
    assert_eq!(
        error_code(&book(json!({ "eventId": event_id, "idempotencyKey": long_key })).await),
        "BAD_USER_INPUT"
    );
    let sold_out = book(json!({ "eventId": event_id, "quantity": 10 })).await;
    assert!(sold_out.get("errors").is_none());
    book(json!({ "eventId": event_id, "quantity": 10 })).await;
    let body = book(json!({ "eventId": event_id, "quantity": 1 })).await;
    assert_eq!(error_code(&body), "SOLD_OUT");
    assert_eq!(body["errors"][0]["extensions"]["seatsAvailable"], 0);
    assert_eq!(app.count("bookings").await, 2);

    // Past and cancelled events are not bookable, each with its reason.
    let past = app.event(&organizer, 5).await;
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(format!(
            "UPDATE events SET starts_at = now() - interval '1 hour' WHERE id = '{past}'"
        )),
        &mut app.db().await,
    )
    .await
    .unwrap();
    let body = book(json!({ "eventId": past })).await;
    assert_eq!(
        (
            error_code(&body),
            &body["errors"][0]["extensions"]["reason"]
        ),
        ("BAD_USER_INPUT", &json!("EVENT_STARTED"))
    );
    let cancelled = app.event(&organizer, 5).await;
    app.gql_ok(
        Some(&organizer.token),
        "mutation($id: ID!) { cancelEvent(id: $id) { id } }",
        json!({ "id": cancelled }),
    )
    .await;
    let body = book(json!({ "eventId": cancelled })).await;
    assert_eq!(
        body["errors"][0]["extensions"]["reason"], "EVENT_CANCELLED",
        "{body}"
    );
    app.assert_invariant().await;
}

#[tokio::test]
async fn invalid_events_and_accounts_are_refused_with_a_code() {
    let app = TestApp::spawn_without_redis().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event_id = app.event(&organizer, 10).await;
    app.book(&buyer, &event_id, 6).await;
    let update = "mutation($id: ID!, $input: UpdateEventInput!) { updateEvent(id: $id, input: $input) { capacity } }";
    let below = app
        .gql(
            Some(&organizer.token),
            update,
            json!({ "id": event_id, "input": { "capacity": 5 } }),
        )
        .await;
    assert_eq!(error_code(&below), "BAD_USER_INPUT");
    assert!(
        below["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("6 seats already booked")
    );
    let exact = app
        .gql_ok(
            Some(&organizer.token),
            update,
            json!({ "id": event_id, "input": { "capacity": 6 } }),
        )
        .await;
    assert_eq!(exact["updateEvent"]["capacity"], 6);
    for input in [
        json!({ "title": "  " }),
        json!({ "capacity": 0 }),
        json!({ "maxPerBooking": 0 }),
        json!({ "startsAt": "2001-01-01T00:00:00Z" }),
    ] {
        let body = app
            .gql(
                Some(&organizer.token),
                update,
                json!({ "id": event_id, "input": input }),
            )
            .await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    }
    let create = "mutation($input: CreateEventInput!) { createEvent(input: $input) { id } }";
    let mut backwards = crate::support::event_input("Backwards", 10);
    backwards["endsAt"] = json!("2001-01-01T00:00:00Z");
    assert_eq!(
        error_code(
            &app.gql(
                Some(&organizer.token),
                create,
                json!({ "input": backwards })
            )
            .await
        ),
        "BAD_USER_INPUT"
    );
    let mut bad_date = crate::support::event_input("Bad date", 10);
    bad_date["startsAt"] = json!("next tuesday");
    assert_eq!(
        error_code(
            &app.gql(Some(&organizer.token), create, json!({ "input": bad_date }))
                .await
        ),
        "BAD_USER_INPUT"
    );

    let register = "mutation($input: RegisterInput!) { register(input: $input) { accessToken } }";
    for input in [
        json!({ "email": "not-an-email", "password": "long-enough", "name": "A" }),
        json!({ "email": "a@b.co", "password": "short", "name": "A" }),
        json!({ "email": "a@b.co", "password": "x".repeat(129), "name": "A" }),
        json!({ "email": "a@b.co", "password": "long-enough", "name": "" }),
    ] {
        assert_eq!(
            error_code(&app.gql(None, register, json!({ "input": input })).await),
            "BAD_USER_INPUT"
        );
    }
    assert_eq!(app.count("users").await, 2);

    for (first, after) in [
        (json!(1000), json!(null)),
        (json!(-1), json!(null)),
        (json!(5), json!("garbage")),
    ] {
        let body = app
            .gql(
                None,
                "query($f: Int, $a: String) { events(first: $f, after: $a) { edges { cursor } } }",
                json!({ "f": first, "a": after }),
            )
            .await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    }
    let wrong_enum = app
        .gql(
            None,
            "{ events(filter: { status: DELETED }) { edges { cursor } } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&wrong_enum), "BAD_USER_INPUT");
    let unknown_field = app.gql(None, "{ events { nope } }", json!({})).await;
    assert_eq!(error_code(&unknown_field), "GRAPHQL_VALIDATION_FAILED");
    let parse = app.gql(None, "{ events { ", json!({})).await;
    assert_eq!(error_code(&parse), "GRAPHQL_PARSE_FAILED");
    let basic = app.gql(Some("not a jwt"), "{ me { id } }", json!({})).await;
    assert_eq!(error_code(&basic), "UNAUTHENTICATED");
}

#[tokio::test]
async fn nul_bytes_and_control_characters_are_refused_not_stored() {
    let app = TestApp::spawn_without_redis().await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 10).await;
    let search = "query($s: String) { events(filter: { search: $s }) { edges { cursor } } }";
    assert_eq!(
        error_code(&app.gql(None, search, json!({ "s": "jazz\u{0}" })).await),
        "BAD_USER_INPUT"
    );
    let mut input = crate::support::event_input("Bad\u{0}title", 10);
    let create = "mutation($input: CreateEventInput!) { createEvent(input: $input) { id } }";
    assert_eq!(
        error_code(
            &app.gql(
                Some(&organizer.token),
                create,
                json!({ "input": input.clone() })
            )
            .await
        ),
        "BAD_USER_INPUT"
    );
    input["title"] = json!("Fine");
    input["description"] = json!("line one\nline two\u{0}");
    assert_eq!(
        error_code(
            &app.gql(Some(&organizer.token), create, json!({ "input": input }))
                .await
        ),
        "BAD_USER_INPUT"
    );
    let key = json!({ "input": { "eventId": event_id, "idempotencyKey": "k\u{0}" } });
    assert_eq!(
        error_code(&app.gql(Some(&organizer.token), BOOK, key).await),
        "BAD_USER_INPUT"
    );
    let login = "mutation($i: LoginInput!) { login(input: $i) { accessToken } }";
    let body = app
        .gql(
            None,
            login,
            json!({ "i": { "email": "a\u{0}@b.co", "password": "whatever-long" } }),
        )
        .await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED");
    assert_eq!(app.count("events").await, 1);
    assert_eq!(app.count("bookings").await, 0);
}

#[tokio::test]
async fn malformed_http_requests_get_a_graphql_shaped_400() {
    let app = TestApp::spawn_without_redis().await;
    for body in ["{not json", r#"{"query": 5}"#, "\u{0}"] {
        let response = app
            .client
            .post(format!("{}/graphql", app.base_url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body:?}");
        let json: serde_json::Value = response.json().await.unwrap();
        assert_eq!(json["errors"][0]["extensions"]["code"], "BAD_REQUEST");
    }
    let huge = format!(
        "{{\"query\": \"{{ events {{ edges {{ cursor }} }} }}\", \"x\": \"{}\"}}",
        "a".repeat(2 * 1024 * 1024)
    );
    let response = app
        .client
        .post(format!("{}/graphql", app.base_url))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert!(
        response.status() == 413 || response.status() == 400,
        "{}",
        response.status()
    );
}
