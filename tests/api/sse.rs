//! GraphQL over Server-Sent Events (graphql-sse), issue 17: the npm `graphql-sse` client in
//! both of its modes across two instances, and the WebSocket's rules applied to event streams.

use evently::db::models::Role;
use serde_json::json;

use crate::support::SEATS;
use crate::support::TestApp;
use crate::support::run_node;

fn stream_url(app: &TestApp) -> String {
    format!("{}/graphql/stream", app.base_url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graphql_sse_client_on_one_instance_sees_a_booking_made_on_another_in_both_modes() {
    let app = TestApp::spawn().await;
    let peer = app.spawn_peer().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event_id = app.event(&organizer, 10).await;

    let seen = run_node(
        "graphql-sse-client.mjs",
        &[
            ("EVENTLY_A_STREAM_URL", stream_url(&app).as_str()),
            ("EVENTLY_B_STREAM_URL", stream_url(&peer).as_str()),
            ("EVENTLY_TOKEN", &buyer.token),
            ("EVENTLY_EVENT_ID", &event_id),
        ],
    )
    .await;
    let me = json!([{ "data": { "me": { "name": "Test User" } } }]);
    assert_eq!(
        seen["distinct"]["seats"],
        json!([{ "seatsAvailable": 10, "version": 1 }, { "seatsAvailable": 9, "version": 2 }])
    );
    assert_eq!(
        seen["distinct"]["booked"],
        json!([{ "data": { "bookSeats": { "quantity": 1, "status": "CONFIRMED" } } }])
    );
    assert_eq!(seen["distinct"]["me"], me);
    assert_eq!(
        seen["single"]["seats"],
        json!([{ "seatsAvailable": 9, "version": 2 }, { "seatsAvailable": 7, "version": 3 }])
    );
    assert_eq!(seen["single"]["me"], me);
    assert_eq!(app.count("bookings").await, 2);
    app.assert_invariant().await;
}

/// Opens a distinct-connection stream for a subscription and returns the response, whose body
/// stays open while it is held.
async fn subscribe(app: &TestApp, token: Option<&str>, event_id: &str) -> reqwest::Response {
    let mut request = app
        .client
        .post(stream_url(app))
        .header("accept", "text/event-stream")
        .json(&json!({ "query": SEATS, "variables": { "id": event_id } }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn event_streams_obey_the_websocket_limits_and_authorization() {
    let app = TestApp::spawn_with(|config| {
        config.websocket.max_anonymous_per_address = 1;
        config.websocket.max_connections_per_user = 1;
    })
    .await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event_id = app.event(&organizer, 10).await;

    // A token that is not genuine is refused before any stream opens.
    let refused = subscribe(&app, Some("not-a-token"), &event_id).await;
    assert_eq!(refused.status(), 401);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");

    // One anonymous stream per address here, one per user: the next is refused.
    let anonymous = subscribe(&app, None, &event_id).await;
    assert_eq!(anonymous.status(), 200);
    assert!(
        anonymous.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(subscribe(&app, None, &event_id).await.status(), 429);
    let signed_in = subscribe(&app, Some(&buyer.token), &event_id).await;
    assert_eq!(signed_in.status(), 200);
    let reserve = app
        .client
        .put(stream_url(&app))
        .bearer_auth(&buyer.token)
        .send()
        .await
        .unwrap();
    assert_eq!(reserve.status(), 429, "the user's one connection is taken");
    drop((anonymous, signed_in));

    // A mutation may not be a GET, even as an event stream.
    let url =
        reqwest::Url::parse_with_params(&stream_url(&app), &[("query", "mutation { logout }")])
            .unwrap();
    let get = app
        .client
        .get(url)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);

    // Single connection: a reservation is its reserver's, opens once, and stops operations
    // by id.
    let mut reserved = None;
    for _ in 0..50 {
        // The slots of the streams dropped above are given back as their bodies are dropped.
        let response = app
            .client
            .put(stream_url(&app))
            .bearer_auth(&buyer.token)
            .send()
            .await
            .unwrap();
        if response.status() == 201 {
            reserved = Some(response.text().await.unwrap());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let token = reserved.expect("a reservation once the user's stream is closed");
    let operation = |user: &str, id: &str| {
        app.client
            .post(stream_url(&app))
            .header("x-graphql-event-stream-token", token.as_str())
            .bearer_auth(user)
            .json(&json!({ "query": SEATS, "variables": { "id": event_id }, "extensions": { "operationId": id } }))
            .send()
    };
    assert_eq!(
        operation(&organizer.token, "1").await.unwrap().status(),
        403
    );
    assert_eq!(operation(&buyer.token, "1").await.unwrap().status(), 202);
    assert_eq!(operation(&buyer.token, "1").await.unwrap().status(), 409);
    let open = || {
        app.client
            .get(stream_url(&app))
            .header("accept", "text/event-stream")
            .header("x-graphql-event-stream-token", token.as_str())
            .bearer_auth(&buyer.token)
            .send()
    };
    let mut stream = open().await.unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(open().await.unwrap().status(), 409, "a stream opens once");
    let mut text = String::new();
    while !text.contains("seatsAvailable") {
        let chunk = stream
            .chunk()
            .await
            .unwrap()
            .expect("the stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains(r#""id":"1""#), "{text}");
    let stop = app
        .client
        .delete(format!("{}?operationId=1", stream_url(&app)))
        .header("x-graphql-event-stream-token", token.as_str())
        .bearer_auth(&buyer.token)
        .send()
        .await
        .unwrap();
    assert_eq!(stop.status(), 200);
    assert_eq!(
        operation(&buyer.token, "1").await.unwrap().status(),
        202,
        "its id is free again"
    );
}
