//! Venues: a layout becomes an event's seats, layouts and section names are checked.

use super::*;

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
