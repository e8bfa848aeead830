//! `totalCount` on every connection: the rows of the list across all its pages under the same
//! arguments, counted only when the field is asked for, and paid for in the query's complexity.

use evently::db::models::Role;
use serde_json::{Value, json};

use crate::support::operations::HOLD;
use crate::support::{
    EventId, TestApp, TestUser, error_code, event_input, merged, spawn_behind_database_proxy,
};

const RELEASE: &str = "mutation($id: ID!) { releaseHold(holdId: $id) { id status } }";
const CREATE_VENUE: &str =
    "mutation($input: CreateVenueInput!) { createVenue(input: $input) { id } }";

/// Walks `field` (its arguments given in `args`, `first` and `after` added here) two rows a
/// page: the nodes seen across all pages, and the `totalCount` each page answered.
async fn walk(app: &TestApp, token: Option<&str>, field: &str, args: &str) -> (usize, Vec<i64>) {
    let args = if args.is_empty() {
        String::new()
    } else {
        format!("{args}, ")
    };
    let query = format!(
        "query($after: String) {{ {field}({args}first: 2, after: $after) {{ totalCount pageInfo {{ hasNextPage endCursor }} edges {{ node {{ id }} }} }} }}"
    );
    let (mut nodes, mut counts, mut after) = (0, Vec::new(), Value::Null);
    loop {
        let data = app.gql_ok(token, &query, json!({ "after": after })).await;
        let connection = &data[field];
        nodes += connection["edges"].as_array().unwrap().len();
        counts.push(connection["totalCount"].as_i64().unwrap());
        if connection["pageInfo"]["hasNextPage"] != true {
            return (nodes, counts);
        }
        after = connection["pageInfo"]["endCursor"].clone();
    }
}

/// Asserts that every page of `field` counts exactly the rows all the pages list, `expected`.
async fn assert_counts(
    app: &TestApp,
    token: Option<&str>,
    field: &str,
    args: &str,
    expected: usize,
) {
    let (nodes, counts) = walk(app, token, field, args).await;
    assert_eq!(nodes, expected, "{field}({args}) lists");
    assert!(
        counts.iter().all(|&count| count == expected as i64),
        "{field}({args}) counts {counts:?}, lists {expected}"
    );
}

fn venue(name: &str) -> Value {
    json!({ "name": name, "address": "1 Main St", "sections": [{ "name": "Floor", "rows": [{ "label": "A", "seats": 2 }] }] })
}

async fn hold(app: &TestApp, user: &TestUser, event: &EventId) -> String {
    let input = json!({ "input": { "eventId": event, "quantity": 1 } });
    let data = app.gql_ok(Some(&user.token), HOLD, input).await;
    data["holdSeats"]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_connection_counts_the_rows_of_all_its_pages_under_its_filter() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let other_organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let other = app.user(Role::User).await;

    let concert = app.event(&organizer, 20).await;
    let festival = app.event(&organizer, 20).await;
    let jazz = app
        .create_event(
            &organizer,
            merged(event_input("Jazz night", 20), json!({ "category": "Jazz" })),
        )
        .await;
    for organizer in [&organizer, &organizer, &other_organizer] {
        app.create_event(
            organizer,
            merged(event_input("Draft", 5), json!({ "status": "DRAFT" })),
        )
        .await;
    }
    for _ in 0..5 {
        app.book(&buyer, &concert, 1).await;
    }
    app.book(&other, &concert, 1).await;
    app.book(&other, &festival, 1).await;
    hold(&app, &buyer, &festival).await;
    let released = hold(&app, &buyer, &jazz).await;
    app.gql_ok(Some(&buyer.token), RELEASE, json!({ "id": released }))
        .await;
    for name in ["North", "South", "East"] {
        app.gql_ok(
            Some(&organizer.token),
            CREATE_VENUE,
            json!({ "input": venue(name) }),
        )
        .await;
    }

    assert_counts(&app, None, "events", "", 3).await;
    assert_counts(&app, None, "events", r#"filter: { category: "music" }"#, 2).await;
    assert_counts(
        &app,
        None,
        "events",
        r#"filter: { search: "jazz night" }"#,
        1,
    )
    .await;
    // Drafts are counted as they are listed: their organizer's own, none for anyone else.
    let drafts = "filter: { status: DRAFT }";
    assert_counts(&app, Some(&organizer.token), "events", drafts, 2).await;
    assert_counts(&app, None, "events", drafts, 0).await;
    assert_counts(&app, Some(&buyer.token), "myBookings", "", 5).await;
    assert_counts(&app, Some(&other.token), "myBookings", "", 2).await;
    let concert_bookings = format!(r#"eventId: "{concert}""#);
    assert_counts(
        &app,
        Some(&organizer.token),
        "eventBookings",
        &concert_bookings,
        6,
    )
    .await;
    assert_counts(&app, Some(&buyer.token), "myHolds", "", 1).await;
    assert_counts(&app, Some(&buyer.token), "myHolds", "all: true", 2).await;
    assert_counts(&app, None, "venues", "", 3).await;

    // The count is refused to whoever the list is refused to.
    let body = app
        .gql(
            Some(&buyer.token),
            &format!("{{ eventBookings({concert_bookings}) {{ totalCount }} }}"),
            json!({}),
        )
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
}

#[tokio::test]
async fn a_connection_is_counted_only_when_total_count_is_asked_for() {
    let (app, proxy) = spawn_behind_database_proxy(|_| {}).await;
    let organizer = app.user(Role::Organizer).await;
    for name in ["North", "South"] {
        app.gql_ok(
            Some(&organizer.token),
            CREATE_VENUE,
            json!({ "input": venue(name) }),
        )
        .await;
    }
    // Statements go to PostgreSQL as text the first time a connection prepares them.
    proxy.count(br#"COUNT(*) FROM "venues""#);

    let data = app
        .gql_ok(None, "{ venues { edges { node { id } } } }", json!({}))
        .await;
    assert_eq!(data["venues"]["edges"].as_array().unwrap().len(), 2);
    assert_eq!(
        proxy.counted(),
        0,
        "a page without totalCount runs no count"
    );

    let data = app
        .gql_ok(None, "{ venues(first: 1) { totalCount } }", json!({}))
        .await;
    assert_eq!(data["venues"]["totalCount"], 2);
    assert_eq!(proxy.counted(), 1, "totalCount is one count");
}

#[tokio::test]
async fn total_count_adds_to_the_complexity_of_the_page() {
    // Ten rows of `edges { cursor }` cost 20; with totalCount, 30.
    let app = TestApp::spawn_with(|config| config.graphql.max_complexity = 25).await;
    let body = app
        .gql(
            None,
            "{ events(first: 10) { edges { cursor } } }",
            json!({}),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let body = app
        .gql(
            None,
            "{ events(first: 10) { totalCount edges { cursor } } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&body), "QUERY_TOO_COMPLEX", "{body}");
}
