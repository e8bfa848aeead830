//! The live `seatMap` subscription: every seat then the changes, sent whole again after Redis
//! comes back, none for general admission, a draft's only for its organizer, large venues whole,
//! and one read per version however many watch.

use super::*;

/// Reads the next `seatMap` payload.
async fn seat_map(client: &mut WsClient) -> Value {
    let data = client.next_data().await;
    assert!(data.get("errors").is_none(), "{data}");
    data["data"]["seatMap"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seat_map_sends_every_seat_then_the_changes() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let seated = seated_event(&app, &organizer).await;
    let mut client = app.connect_ws(json!({})).await;
    client
        .subscribe("1", SEAT_MAP, json!({ "id": seated.event_id }))
        .await;
    let first = seat_map(&mut client).await;
    assert_eq!(first["full"], true);
    assert_eq!(first["version"], 1);
    assert_eq!(first["eventId"], seated.event_id);
    assert_eq!(first["seats"].as_array().unwrap().len(), 10);
    assert!(
        states(&first["seats"])
            .iter()
            .all(|(_, state)| state == "AVAILABLE")
    );

    let held = hold_ok(
        &app,
        &buyer,
        &seated.event_id,
        &[seated.id("A 1-4"), seated.id("B 1-1")],
    )
    .await;
    let delta = seat_map(&mut client).await;
    assert_eq!(delta["full"], false);
    assert_eq!(delta["version"], 2);
    assert_eq!(
        states(&delta["seats"]),
        [
            ("A 1-4".to_owned(), "HELD".to_owned()),
            ("B 1-1".to_owned(), "HELD".to_owned())
        ]
    );
    assert_eq!(delta["seats"][0]["id"], seated.id("A 1-4"));

    app.gql_ok(Some(&buyer.token), CONFIRM, json!({ "id": held }))
        .await;
    let delta = seat_map(&mut client).await;
    assert_eq!(delta["full"], false);
    assert_eq!(delta["version"], 3);
    assert_eq!(
        states(&delta["seats"]),
        [
            ("A 1-4".to_owned(), "BOOKED".to_owned()),
            ("B 1-1".to_owned(), "BOOKED".to_owned())
        ]
    );

    // A change the stream never heard of (made without publishing) leaves a gap: the next
    // change brings the whole map again, with both.
    {
        let mut conn = app.state.conn().await.unwrap();
        let unpublished = holds::hold_seats(
            &mut conn,
            buyer.id,
            HoldRequest {
                event_id: seated.event_id.parse().unwrap(),
                quantity: None,
                seat_ids: vec![seated.id("A 2-1").parse().unwrap()],
            },
        )
        .await
        .unwrap();
        assert_eq!(unpublished.changes.seats.len(), 1);
    }
    hold_ok(&app, &buyer, &seated.event_id, &[seated.id("A 2-2")]).await;
    let full = seat_map(&mut client).await;
    assert_eq!(full["full"], true);
    assert_eq!(full["version"], 5);
    let seats = states(&full["seats"]);
    assert_eq!(seats.len(), 10);
    assert_eq!(state_of(&seats, "A 2-1"), "HELD");
    assert_eq!(state_of(&seats, "A 2-2"), "HELD");
    assert_eq!(state_of(&seats, "A 1-4"), "BOOKED");

    // Cancelling the event frees every seat, in one delta.
    app.gql_ok(
        Some(&organizer.token),
        "mutation($id: ID!) { cancelEvent(id: $id) { status } }",
        json!({ "id": seated.event_id }),
    )
    .await;
    let delta = seat_map(&mut client).await;
    assert_eq!(delta["full"], false);
    let freed = states(&delta["seats"]);
    assert_eq!(freed.len(), 4, "{delta}");
    assert!(freed.iter().all(|(_, state)| state == "AVAILABLE"));
    assert!(
        seat_states(&app, &seated.event_id)
            .await
            .iter()
            .all(|(_, state)| state == "AVAILABLE")
    );
    app.assert_invariant().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_map_is_sent_whole_again_after_redis_comes_back() {
    let mut redis = OwnRedis::start().await;
    let first = TestApp::spawn_on_redis(&redis.url(), |_| {}).await;
    let second = first.spawn_peer().await;
    let organizer = first.user(Role::Organizer).await;
    let buyer = first.user(Role::User).await;
    let seated = seated_event(&first, &organizer).await;
    let mut client = first.connect_ws(json!({})).await;
    client
        .subscribe("1", SEAT_MAP, json!({ "id": seated.event_id }))
        .await;
    assert_eq!(seat_map(&mut client).await["version"], 1);

    // A change on another instance arrives through Redis as a delta.
    hold_ok(&second, &buyer, &seated.event_id, &[seated.id("A 1-1")]).await;
    let delta = seat_map(&mut client).await;
    assert_eq!(
        (&delta["full"], &delta["version"]),
        (&json!(false), &json!(2))
    );
    assert_eq!(
        states(&delta["seats"]),
        [("A 1-1".to_owned(), "HELD".to_owned())]
    );

    // While Redis is down, the map changes without a word on the bus (as when an instance
    // that made a change dies before Redis is back): only the database can tell the
    // subscriber, and it sends the whole map.
    redis.stop().await;
    let mut conn = second.state.conn().await.unwrap();
    let request = HoldRequest {
        event_id: seated.event_id.parse().unwrap(),
        quantity: None,
        seat_ids: vec![seated.id("B 1-1").parse().unwrap()],
    };
    holds::hold_seats(&mut conn, buyer.id, request)
        .await
        .unwrap();
    drop(conn);
    redis.restart().await;

    let full = seat_map(&mut client).await;
    assert_eq!(full["full"], true, "{full}");
    assert_eq!(full["version"], 3);
    let seats = states(&full["seats"]);
    assert_eq!(seats.len(), 10);
    assert_eq!(state_of(&seats, "A 1-1"), "HELD");
    assert_eq!(state_of(&seats, "B 1-1"), "HELD");
    first.assert_invariant().await;
}

#[tokio::test]
async fn a_general_admission_event_has_no_seat_map() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 5).await;
    let mut client = app.connect_ws(json!({})).await;
    client
        .subscribe("1", SEAT_MAP, json!({ "id": event_id }))
        .await;
    let message = client.next_message().await.unwrap();
    let errors = operation_errors(&message);
    assert_eq!(
        errors[0]["extensions"]["code"], "BAD_USER_INPUT",
        "{message}"
    );
    assert_eq!(
        errors[0]["extensions"]["reason"], "NO_SEAT_MAP",
        "{message}"
    );
}

#[tokio::test]
async fn a_drafts_seat_map_is_only_its_organizers() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let venue_id = create_venue(&app, &organizer, layout()).await;
    let input = merged(
        venue_event_input("Draft Show", &venue_id),
        json!({ "status": "DRAFT" }),
    );
    let event_id = &app.create_event(&organizer, input).await;

    let mut stranger = app.connect_ws(json!({})).await;
    stranger
        .subscribe("1", SEAT_MAP, json!({ "id": event_id }))
        .await;
    let message = stranger.next_message().await.unwrap();
    assert_eq!(
        operation_errors(&message)[0]["extensions"]["code"],
        "NOT_FOUND",
        "{message}"
    );
    let init = json!({ "Authorization": format!("Bearer {}", organizer.token) });
    let mut owner = app.connect_ws(init).await;
    owner
        .subscribe("1", SEAT_MAP, json!({ "id": event_id }))
        .await;
    let first = seat_map(&mut owner).await;
    assert_eq!(first["full"], true);
    assert_eq!(first["seats"].as_array().unwrap().len(), 10);
}

/// A published seated event in a venue of `rows` rows of 1,000 seats; returns its id.
async fn big_seated_event(app: &TestApp, organizer: &TestUser, rows: usize) -> EventId {
    let rows: Vec<Value> = (1..=rows)
        .map(|row| json!({ "label": row.to_string(), "seats": 1000 }))
        .collect();
    let arena = json!({ "name": "Arena", "address": "1 Arena Way", "sections": [{ "name": "Floor", "rows": rows }] });
    let venue_id = create_venue(app, organizer, arena).await;
    event_in_venue(app, organizer, "Arena Show", &venue_id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seat_maps_of_large_venues_reach_the_reference_client_whole() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let small = seated_event(&app, &organizer).await.event_id;
    let two_thousand = big_seated_event(&app, &organizer, 2).await;
    let twenty_thousand = big_seated_event(&app, &organizer, 20).await;

    let ids = format!("{small},{two_thousand},{twenty_thousand},{small}");
    let seen = crate::support::run_node(
        "seat-map.mjs",
        &[
            ("EVENTLY_WS_URL", app.ws_url().as_str()),
            ("EVENTLY_EVENT_IDS", &ids),
        ],
    )
    .await;
    // Every map arrives whole, on the one connection the client opened.
    assert_eq!(
        seen,
        json!({
            "maps": [
                { "full": true, "seats": 10 },
                { "full": true, "seats": 2000 },
                { "full": true, "seats": 20000 },
                { "full": true, "seats": 10 },
            ],
            "connections": 1,
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_viewers_of_one_seat_map_share_one_read_per_version() {
    let (app, proxy) = crate::support::spawn_behind_database_proxy(|_| {}).await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let seated = seated_event(&app, &organizer).await;
    // The seat map's read is the one read-only repeatable-read transaction.
    proxy.count(b"REPEATABLE READ READ ONLY");

    // Viewers arriving one after another, then many at once, all at version 1.
    let mut viewers = Vec::new();
    for _ in 0..5 {
        let mut viewer = app.connect_ws(json!({})).await;
        viewer
            .subscribe("map", SEAT_MAP, json!({ "id": seated.event_id }))
            .await;
        assert_eq!(seat_map(&mut viewer).await["version"], 1);
        viewers.push(viewer);
    }
    let together = futures_util::future::join_all((0..15).map(|_| async {
        let mut viewer = app.connect_ws(json!({})).await;
        viewer
            .subscribe("map", SEAT_MAP, json!({ "id": seated.event_id }))
            .await;
        let first = seat_map(&mut viewer).await;
        assert_eq!(first["version"], 1);
        assert_eq!(first["seats"].as_array().unwrap().len(), 10);
        viewer
    }))
    .await;
    viewers.extend(together);
    assert_eq!(
        proxy.counted(),
        1,
        "twenty viewers of one version read the map this often"
    );

    // A change reaches every viewer as a delta, with no read; a viewer arriving after it gets
    // the new version, read once.
    hold_ok(&app, &buyer, &seated.event_id, &[seated.id("A 1-1")]).await;
    for viewer in &mut viewers {
        let delta = seat_map(viewer).await;
        assert_eq!(
            (delta["version"].clone(), delta["full"].clone()),
            (json!(2), json!(false))
        );
    }
    for _ in 0..3 {
        let mut late = app.connect_ws(json!({})).await;
        late.subscribe("map", SEAT_MAP, json!({ "id": seated.event_id }))
            .await;
        let first = seat_map(&mut late).await;
        assert_eq!(first["version"], 2);
        assert_eq!(state_of(&states(&first["seats"]), "A 1-1"), "HELD");
    }
    assert_eq!(proxy.counted(), 2, "a new version is read once");
}
