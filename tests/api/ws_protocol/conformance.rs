//! The protocol itself: every close code a client can cause, ping and pong both ways, the idle
//! timeout, `error` messages, and how a graceful shutdown closes sockets.

use super::*;

/// Opens a connection, sends `init` (unless `None`) and then `frames`, and returns how the
/// server closed it.
async fn close_after(app: &TestApp, init: Option<Value>, frames: Vec<Message>) -> (u16, String) {
    let mut client = WsClient::open(&app.ws_url(), Some(TRANSPORT)).await;
    if let Some(payload) = init {
        client
            .send(json!({ "type": "connection_init", "payload": payload }))
            .await;
        assert_eq!(client.next_raw().await["type"], "connection_ack");
    }
    for frame in frames {
        client.send_frame(frame).await;
    }
    client.closed().await
}

fn text(value: Value) -> Message {
    Message::text(value.to_string())
}

/// A token signed with the right key, for a real session, that expired a minute ago.
fn expired_token(user_id: uuid::Uuid) -> String {
    let mut claims = crate::support::claims(user_id, uuid::Uuid::new_v4());
    let now = chrono::Utc::now().timestamp();
    claims["iat"] = json!(now - 3600);
    claims["nbf"] = json!(now - 3600);
    claims["exp"] = json!(now - 60);
    crate::support::sign(
        &claims,
        Some("k1"),
        crate::support::TEST_JWT_SECRET,
        jsonwebtoken::Algorithm::HS256,
    )
}

#[tokio::test]
async fn a_rejected_connection_init_closes_with_4403() {
    let app = TestApp::spawn_without_redis().await;
    let user = app.user(Role::User).await;
    let revoked = app.user(Role::User).await;
    app.gql_ok(Some(&revoked.token), "mutation { logout }", json!({}))
        .await;
    let forged = {
        // The right shape, signed with another key.
        let (head, rest) = user.token.split_once('.').unwrap();
        let (body, _) = rest.split_once('.').unwrap();
        format!("{head}.{body}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    };
    let refused = [
        json!({ "Authorization": "Bearer forged" }),
        json!({ "Authorization": format!("Bearer {forged}") }),
        json!({ "Authorization": format!("Basic {}", user.token) }),
        json!({ "Authorization": "Bearer " }),
        json!({ "authToken": expired_token(user.id) }),
        json!({ "Authorization": format!("Bearer {}", revoked.token) }),
    ];
    for payload in refused {
        let mut client = WsClient::open(&app.ws_url(), Some(TRANSPORT)).await;
        client
            .send(json!({ "type": "connection_init", "payload": payload }))
            .await;
        assert_eq!(
            client.closed().await,
            (4403, "Forbidden".into()),
            "{payload}"
        );
    }
    // No token at all is an anonymous connection, not a refusal.
    let mut anonymous = acked(&app, json!({})).await;
    anonymous.subscribe("q", QUERY, json!({})).await;
    assert!(anonymous.next_data().await["data"]["events"].is_object());
}

#[tokio::test]
async fn subscribe_before_connection_ack_closes_with_4401() {
    let app = TestApp::spawn_without_redis().await;
    let subscribe = text(json!({ "id": "1", "type": "subscribe", "payload": { "query": QUERY } }));
    assert_eq!(
        close_after(&app, None, vec![subscribe]).await,
        (4401, "Unauthorized".into())
    );
}

#[tokio::test]
async fn invalid_messages_close_with_4400() {
    let app = TestApp::spawn_without_redis().await;
    let before_init = [
        Message::text("not json"),
        Message::text("[]"),
        text(json!({ "payload": {} })),
        text(json!({ "type": "connection_init", "payload": "a string" })),
        text(json!({ "type": "no_such_type" })),
        Message::binary(b"{\"type\":\"connection_init\"}".to_vec()),
    ];
    for frame in before_init {
        let described = format!("{frame:?}");
        let (code, _) = close_after(&app, None, vec![frame]).await;
        assert_eq!(code, 4400, "{described}");
    }
    let after_init = [
        text(json!({ "type": "subscribe", "payload": { "query": QUERY } })),
        text(json!({ "id": "", "type": "subscribe", "payload": { "query": QUERY } })),
        text(json!({ "id": "x".repeat(129), "type": "subscribe", "payload": { "query": QUERY } })),
        text(
            json!({ "id": "1", "type": "subscribe", "payload": { "query": QUERY, "variables": [] } }),
        ),
        text(json!({ "id": "1", "type": "subscribe", "payload": { "variables": {} } })),
        text(json!({ "id": "1", "type": "subscribe", "payload": { "query": 7 } })),
        text(json!({ "id": "1", "type": "next", "payload": {} })),
        text(json!({ "type": "connection_ack" })),
        text(json!({ "id": "1", "type": "start", "payload": { "query": QUERY } })),
        Message::binary(vec![0xff, 0x00]),
    ];
    for frame in after_init {
        let described = format!("{frame:?}");
        let (code, _) = close_after(&app, Some(json!({})), vec![frame]).await;
        assert_eq!(code, 4400, "{described}");
    }
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009() {
    let app = TestApp::spawn_without_redis().await;
    let huge = format!(
        r#"{{"id":"1","type":"subscribe","payload":{{"query":"{}"}}}}"#,
        "a".repeat(200 * 1024)
    );
    let (code, _) = close_after(&app, Some(json!({})), vec![Message::text(huge)]).await;
    assert_eq!(code, 1009);
}

#[tokio::test]
async fn no_connection_init_in_time_closes_with_4408() {
    let app = TestApp::spawn_with(|config| {
        config.websocket.init_timeout = Duration::from_millis(300);
    })
    .await;
    assert_eq!(
        close_after(&app, None, vec![]).await,
        (4408, "Connection initialisation timeout".into())
    );
}

#[tokio::test]
async fn a_duplicate_operation_id_closes_with_4409() {
    let app = TestApp::spawn_without_redis().await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 5).await;
    let mut client = acked(&app, json!({})).await;
    client
        .subscribe("same", SEATS, json!({ "id": event_id }))
        .await;
    assert_eq!(seats(&mut client).await, (5, 1));
    client
        .subscribe("same", SEATS, json!({ "id": event_id }))
        .await;
    assert_eq!(
        client.closed().await,
        (4409, "Subscriber for same already exists".into())
    );
}

#[tokio::test]
async fn a_second_connection_init_closes_with_4429() {
    let app = TestApp::spawn_without_redis().await;
    let init = text(json!({ "type": "connection_init" }));
    assert_eq!(
        close_after(&app, Some(json!({})), vec![init]).await,
        (4429, "Too many initialisation requests".into())
    );
}

#[tokio::test]
async fn a_client_without_a_known_subprotocol_is_closed_with_4406() {
    let app = TestApp::spawn_without_redis().await;
    let mut client = WsClient::open(&app.ws_url(), None).await;
    assert_eq!(client.closed().await.0, 4406);
}

#[tokio::test]
async fn ping_and_pong_work_both_ways_and_keep_the_connection_open() {
    let idle = Duration::from_millis(1500);
    let app = TestApp::spawn_with(|config| {
        config.websocket.ping_interval = Duration::from_millis(200);
        config.websocket.idle_timeout = idle;
    })
    .await;
    let mut client = WsClient::open(&app.ws_url(), Some(TRANSPORT)).await;
    // Ping is allowed before connection_init, and the pong carries the ping's payload.
    client
        .send(json!({ "type": "ping", "payload": { "sent": 1 } }))
        .await;
    assert_eq!(
        client.next_raw().await,
        json!({ "type": "pong", "payload": { "sent": 1 } })
    );
    client.send(json!({ "type": "connection_init" })).await;
    assert_eq!(client.next_raw().await["type"], "connection_ack");
    // The server pings; answering keeps the connection alive past the idle timeout.
    let started = tokio::time::Instant::now();
    let mut pings = 0;
    while started.elapsed() < idle * 2 {
        let message = client.next_raw().await;
        assert_eq!(message, json!({ "type": "ping" }));
        pings += 1;
        client.send(json!({ "type": "pong" })).await;
    }
    assert!(pings >= 4, "{pings} pings");
    client.subscribe("q", QUERY, json!({})).await;
    assert!(client.next_data().await["data"]["events"].is_object());
}

#[tokio::test]
async fn a_silent_connection_is_closed_when_idle() {
    let app = TestApp::spawn_with(|config| {
        config.websocket.ping_interval = Duration::from_millis(100);
        config.websocket.idle_timeout = Duration::from_millis(400);
    })
    .await;
    let mut client = WsClient::open(&app.ws_url(), Some(TRANSPORT)).await;
    client.send(json!({ "type": "connection_init" })).await;
    assert_eq!(client.next_raw().await["type"], "connection_ack");
    // Pings arrive but are not answered.
    loop {
        let frame = tokio::time::timeout(WAIT, client.next_frame())
            .await
            .unwrap();
        match frame {
            Message::Text(text) => assert!(text.contains("\"ping\""), "{text}"),
            Message::Close(Some(frame)) => {
                assert_eq!(
                    (u16::from(frame.code), frame.reason.as_str()),
                    (1000, "idle timeout")
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_document_that_fails_validation_gets_an_error_message() {
    let app = TestApp::spawn_without_redis().await;
    let mut client = acked(&app, json!({})).await;
    client
        .subscribe("bad", "subscription { noSuchField }", json!({}))
        .await;
    let message = client.next_raw().await;
    assert_eq!(message["type"], "error", "{message}");
    assert_eq!(message["id"], "bad");
    assert_eq!(
        message["payload"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED",
        "{message}"
    );
    client.subscribe("parse", "subscription {", json!({})).await;
    let message = client.next_raw().await;
    assert_eq!(message["type"], "error", "{message}");
    assert_eq!(
        message["payload"][0]["extensions"]["code"],
        "GRAPHQL_PARSE_FAILED"
    );
    // The connection carries on, and the failed ids are free again.
    client.subscribe("bad", QUERY, json!({})).await;
    assert!(client.next_data().await["data"]["events"].is_object());
}

#[tokio::test]
async fn graceful_shutdown_closes_sockets_with_1012() {
    let app = TestApp::spawn_without_redis().await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 5).await;
    let mut watcher = acked(&app, json!({})).await;
    watcher
        .subscribe("1", SEATS, json!({ "id": event_id }))
        .await;
    assert_eq!(seats(&mut watcher).await, (5, 1));
    let mut idle = acked(&app, json!({})).await;

    app.shutdown.cancel();
    assert_eq!(watcher.closed().await, (1012, "server restarting".into()));
    assert_eq!(idle.closed().await, (1012, "server restarting".into()));
    let server = app.server.lock().unwrap().take().unwrap();
    tokio::time::timeout(WAIT, server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
    assert!(
        tokio_tungstenite::connect_async(app.ws_url())
            .await
            .is_err(),
        "no new connections after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_operation_in_flight_finish_before_closing() {
    use diesel_async::SimpleAsyncConnection;

    let app = TestApp::spawn_without_redis().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event_id = app.event(&organizer, 5).await;
    let mut client = acked(&app, json!({ "authToken": buyer.token })).await;
    client
        .subscribe("s", SEATS, json!({ "id": event_id }))
        .await;
    assert_eq!(seats(&mut client).await, (5, 1));

    // Hold the event row, so the booking below waits in the database.
    let mut blocker = app.hold_event_row(&event_id).await;
    client
        .subscribe(
            "book",
            "mutation($id: ID!) { bookSeats(input: { eventId: $id, quantity: 2 }) { status } }",
            json!({ "id": event_id }),
        )
        .await;
    let waiting =
        "pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'";
    eventually(WAIT, || async {
        (app.count(waiting).await > 0)
            .then_some(())
            .ok_or("the booking never reached the lock")
    })
    .await;

    app.shutdown.cancel();
    // With no drain delay the listener closes once the sockets have been told to drain.
    eventually(WAIT, || async {
        tokio::net::TcpStream::connect(app.addr)
            .await
            .is_err()
            .then_some(())
            .ok_or("still accepting connections")
    })
    .await;
    // Draining: the subscription is gone, new operations are refused, the booking is awaited.
    client.subscribe("late", QUERY, json!({})).await;
    let refused = client.next_raw().await;
    assert_eq!(refused["id"], "late", "{refused}");
    assert_eq!(
        refused["payload"][0]["extensions"]["code"],
        "SERVICE_UNAVAILABLE"
    );
    blocker.batch_execute("COMMIT").await.unwrap();
    let booked = client.next_raw().await;
    assert_eq!(
        booked,
        json!({ "id": "book", "type": "next", "payload": { "data": { "bookSeats": { "status": "CONFIRMED" } } } })
    );
    assert_eq!(
        client.next_raw().await,
        json!({ "id": "book", "type": "complete" })
    );
    assert_eq!(client.closed().await, (1012, "server restarting".into()));
    assert_eq!(app.count("bookings").await, 1);
}
