//! graphql-transport-ws conformance (enisdenjo/graphql-ws PROTOCOL.md): every close code, ping
//! and pong both ways, `error` messages, and the limits and timers around a connection. Each
//! hostile input (bad tokens, garbage, binary and oversized frames) gets its documented close.

use std::time::Duration;

use evently::db::models::Role;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::TestApp;
use crate::support::{SEATS, WAIT, WsClient, eventually, seats};

const TRANSPORT: &str = "graphql-transport-ws";
const QUERY: &str = "query { events(first: 1) { edges { node { id } } } }";

async fn acked(app: &TestApp, init: Value) -> WsClient {
    WsClient::connect(&app.ws_url(), TRANSPORT, init)
        .await
        .unwrap()
}

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
async fn operations_per_connection_are_limited() {
    let app = TestApp::spawn_with(|config| {
        config.websocket.max_operations_per_connection = 2;
    })
    .await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 5).await;
    let mut client = acked(&app, json!({})).await;
    for id in ["1", "2"] {
        client.subscribe(id, SEATS, json!({ "id": event_id })).await;
        assert_eq!(seats(&mut client).await, (5, 1));
    }
    client
        .subscribe("3", SEATS, json!({ "id": event_id }))
        .await;
    let refused = client.next_raw().await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["id"], "3");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "RATE_LIMITED");
    // Completing one frees its place.
    client.send(json!({ "id": "1", "type": "complete" })).await;
    client
        .subscribe("3", SEATS, json!({ "id": event_id }))
        .await;
    assert_eq!(seats(&mut client).await, (5, 1));
}

#[tokio::test]
async fn connections_per_user_are_limited() {
    let app = TestApp::spawn_with(|config| {
        config.websocket.max_connections_per_user = 1;
    })
    .await;
    let user = app.user(Role::User).await;
    let init = json!({ "Authorization": format!("Bearer {}", user.token) });
    let first = acked(&app, init.clone()).await;
    let mut second = WsClient::open(&app.ws_url(), Some(TRANSPORT)).await;
    second
        .send(json!({ "type": "connection_init", "payload": init }))
        .await;
    assert_eq!(
        second.closed().await,
        (4429, "Too many connections for this user".into())
    );
    // Anonymous connections and other users are not counted against this user.
    acked(&app, json!({})).await;
    let other = app.user(Role::User).await;
    acked(&app, json!({ "authToken": other.token })).await;
    // The place is given back when the first connection ends.
    drop(first);
    eventually(WAIT, || async {
        let connected = WsClient::connect(&app.ws_url(), TRANSPORT, init.clone()).await;
        if let Err(error) = &connected {
            assert!(error.contains("4429"), "{error}");
        }
        connected.map_err(|error| format!("the slot was never given back: {error}"))
    })
    .await;
}

#[tokio::test]
async fn graceful_shutdown_closes_sockets_with_1001() {
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
    assert_eq!(
        watcher.closed().await,
        (1001, "server shutting down".into())
    );
    assert_eq!(idle.closed().await, (1001, "server shutting down".into()));
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
    assert_eq!(client.closed().await, (1001, "server shutting down".into()));
    assert_eq!(app.count("bookings").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_user_are_counted_across_instances() {
    let one = |config: &mut evently::config::Config| {
        config.websocket.max_connections_per_user = 1;
    };
    let first = TestApp::spawn_with(one).await;
    let second = first.spawn_peer_with(one).await;
    let user = first.user(Role::User).await;
    let init = json!({ "Authorization": format!("Bearer {}", user.token) });
    let held = acked(&first, init.clone()).await;
    let mut refused = WsClient::open(&second.ws_url(), Some(TRANSPORT)).await;
    refused
        .send(json!({ "type": "connection_init", "payload": init }))
        .await;
    assert_eq!(
        refused.closed().await,
        (4429, "Too many connections for this user".into())
    );
    // Closing the first frees the slot for any instance.
    drop(held);
    eventually(WAIT, || async {
        let connected = WsClient::connect(&second.ws_url(), TRANSPORT, init.clone()).await;
        if let Err(error) = &connected {
            assert!(error.contains("4429"), "{error}");
        }
        connected.map_err(|error| format!("the slot was never given back: {error}"))
    })
    .await;
}

#[tokio::test]
async fn a_dead_instances_connection_slots_expire_with_their_lease() {
    let app = TestApp::spawn().await;
    let bus = &app.state.bus;
    let user = uuid::Uuid::new_v4();
    let lease = Duration::from_millis(300);
    let (held, other) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    assert_eq!(
        bus.claim_connection_slot(user, held, 1, lease).await,
        Some(true)
    );
    assert_eq!(
        bus.claim_connection_slot(user, other, 1, lease).await,
        Some(false)
    );
    // Nobody renews the first lease (its instance is gone): time alone frees the slot.
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    assert_eq!(
        bus.claim_connection_slot(user, other, 1, lease).await,
        Some(true)
    );
    // Without Redis there is nothing shared to ask.
    let single = TestApp::spawn_without_redis().await;
    assert_eq!(
        single
            .state
            .bus
            .claim_connection_slot(user, held, 1, lease)
            .await,
        None
    );
}

/// Opens a WebSocket with the transport protocol; on refusal, the HTTP status and body.
async fn upgrade(app: &TestApp) -> Result<WsClient, (u16, Value)> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = app.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", TRANSPORT.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(WsClient::from_socket(socket, TRANSPORT)),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            let retry_after = response.headers().get("retry-after").is_some();
            assert!(retry_after, "a refusal says when to retry");
            Err((
                response.status().as_u16(),
                serde_json::from_slice(body).unwrap_or(Value::Null),
            ))
        }
        Err(other) => panic!("unexpected upgrade failure: {other}"),
    }
}

#[tokio::test]
async fn an_instance_refuses_websockets_beyond_its_connection_cap_with_503() {
    let app = TestApp::spawn_with(|c| c.websocket.max_connections = 3).await;
    let user = app.user(Role::User).await;
    let signed_in = json!({ "Authorization": format!("Bearer {}", user.token) });
    let mut open = vec![
        acked(&app, json!({})).await,
        acked(&app, signed_in.clone()).await,
        WsClient::open(&app.ws_url(), Some(TRANSPORT)).await,
    ];
    let (status, body) = upgrade(&app)
        .await
        .err()
        .expect("a fourth connection is refused");
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "SERVICE_UNAVAILABLE"
    );
    // A connection that ends gives its place back.
    open.pop();
    let mut again = eventually(WAIT, || upgrade(&app)).await;
    again.send(json!({ "type": "connection_init" })).await;
    assert_eq!(
        again.next_message().await.unwrap()["type"],
        "connection_ack"
    );
}

#[tokio::test]
async fn anonymous_websockets_per_address_are_capped_and_signed_in_ones_still_pass() {
    let app = TestApp::spawn_with(|c| c.websocket.max_anonymous_per_address = 2).await;
    let user = app.user(Role::User).await;
    // Connections that have not said who they are count: at most two wait at once.
    let waiting = [
        WsClient::open(&app.ws_url(), Some(TRANSPORT)).await,
        WsClient::open(&app.ws_url(), Some(TRANSPORT)).await,
    ];
    let (status, body) = upgrade(&app)
        .await
        .err()
        .expect("a third waiting socket is refused");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED");
    drop(waiting);

    // Once initialised, at most two anonymous ones; the third is closed with 4429.
    let initialised = |init: Value| {
        let app = &app;
        move || {
            let init = init.clone();
            async move {
                let mut client = upgrade(app).await.ok()?;
                client
                    .send(json!({ "type": "connection_init", "payload": init }))
                    .await;
                Some(client)
            }
        }
    };
    let mut anonymous = Vec::new();
    for _ in 0..2 {
        let mut client = eventually(WAIT, initialised(json!({}))).await;
        assert_eq!(
            client.next_message().await.unwrap()["type"],
            "connection_ack"
        );
        anonymous.push(client);
    }
    let mut third = eventually(WAIT, initialised(json!({}))).await;
    assert_eq!(
        third.closed().await,
        (
            4429,
            "Too many anonymous connections from this address".to_owned()
        )
    );
    // A signed-in user behind the same address (a venue's Wi-Fi) is not anonymous.
    let signed_in = json!({ "Authorization": format!("Bearer {}", user.token) });
    let mut member = eventually(WAIT, initialised(signed_in)).await;
    assert_eq!(
        member.next_message().await.unwrap()["type"],
        "connection_ack"
    );
    member.subscribe("1", QUERY, json!({})).await;
    assert_eq!(member.next_message().await.unwrap()["type"], "next");
    // An anonymous connection that ends gives its place back.
    anonymous.pop();
    // A closed connection's slot is given back when its task ends, a moment after the client
    // sees the close.
    eventually(WAIT, || async {
        let mut client = initialised(json!({}))().await?;
        (client.next_message().await.ok()?["type"] == "connection_ack").then_some(())
    })
    .await;
}

#[tokio::test]
async fn shared_subscriptions_count_against_the_addresss_request_budget() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limits.requests = evently::config::RateLimit::per(3, 60);
    })
    .await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 10).await;
    // The upgrade request is the address's first request, two subscriptions its others.
    let mut socket = acked(&app, json!({})).await;
    for id in ["1", "2", "3"] {
        socket.subscribe(id, SEATS, json!({ "id": event_id })).await;
        let message = socket.next_message().await.unwrap();
        if id == "3" {
            let errors = crate::support::operation_errors(&message);
            assert_eq!(errors[0]["extensions"]["code"], "RATE_LIMITED", "{message}");
            assert!(errors[0]["extensions"]["retryAfter"].as_u64().is_some());
        } else {
            assert_eq!(
                message["payload"]["data"]["seatAvailability"]["seatsAvailable"], 10,
                "{message}"
            );
        }
    }
}

/// The code of the first error of an operation's answer.
fn first_code(message: &Value) -> Value {
    crate::support::operation_errors(message)[0]["extensions"]["code"].clone()
}

#[tokio::test]
async fn subscription_text_gets_the_size_and_nesting_checks_before_parsing_as_over_http() {
    let app = TestApp::spawn().await;
    let mut socket = acked(&app, json!({})).await;
    let nested = |depth: usize| {
        format!(
            "subscription {{ seatAvailability(eventId: {}1{}) {{ version }} }}",
            "[".repeat(depth),
            "]".repeat(depth)
        )
    };
    let selections = |depth: usize| {
        format!(
            "subscription {{ seatAvailability(eventId: \"1\") {}{} }}",
            "{a".repeat(depth),
            "}".repeat(depth)
        )
    };
    // Too deep (within the size limit), then too large and too deep: size is checked first.
    // The largest fill a frame: parsed before the checks, they cost the parser its stack.
    for (id, query, code) in [
        ("1", nested(15_000), "QUERY_TOO_DEEP"),
        ("2", nested(20_000), "DOCUMENT_TOO_LARGE"),
        ("3", selections(10_000), "QUERY_TOO_DEEP"),
        ("4", selections(21_000), "DOCUMENT_TOO_LARGE"),
        ("5", nested(32_000), "DOCUMENT_TOO_LARGE"),
    ] {
        let (_, over_http) = app.post_json(&json!({ "query": query }), None).await;
        assert_eq!(crate::support::error_code(&over_http), code);
        socket.subscribe(id, &query, json!({})).await;
        let message = socket.next_message().await.unwrap();
        assert_eq!(message["type"], "error", "{message}");
        assert_eq!(first_code(&message), code, "{message}");
    }
    // The connection is still good.
    socket.subscribe("6", QUERY, json!({})).await;
    assert_eq!(socket.next_message().await.unwrap()["type"], "next");
}

fn sha256(query: &str) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(query.as_bytes()))
}

fn persisted(hash: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

#[tokio::test]
async fn automatic_persisted_queries_work_over_a_websocket_as_over_http() {
    let app = TestApp::spawn().await;
    let mut socket = acked(&app, json!({})).await;
    let query = "{ events(first: 4) { edges { cursor } } }";
    let hash = sha256(query);
    let by_hash = json!({ "extensions": persisted(&hash) });
    let mut with_query = by_hash.clone();
    with_query["query"] = json!(query);
    let send =
        |id: &str, payload: &Value| json!({ "id": id, "type": "subscribe", "payload": payload });

    socket.send(send("1", &by_hash)).await;
    let message = socket.next_message().await.unwrap();
    assert_eq!(
        first_code(&message),
        "PERSISTED_QUERY_NOT_FOUND",
        "{message}"
    );
    socket.send(send("2", &with_query)).await;
    let message = socket.next_message().await.unwrap();
    assert_eq!(
        message["payload"]["data"]["events"]["edges"],
        json!([]),
        "{message}"
    );
    assert_eq!(socket.next_message().await.unwrap()["type"], "complete");
    // Registered: the hash alone runs it, here and over HTTP.
    socket.send(send("3", &by_hash)).await;
    let message = socket.next_message().await.unwrap();
    assert_eq!(
        message["payload"]["data"]["events"]["edges"],
        json!([]),
        "{message}"
    );
    assert_eq!(socket.next_message().await.unwrap()["type"], "complete");
    let (_, over_http) = app.post_json(&by_hash, None).await;
    assert_eq!(
        over_http["data"]["events"]["edges"],
        json!([]),
        "{over_http}"
    );
    // A hash that is not its query's is refused as over HTTP.
    let wrong = json!({ "query": "{ __typename }", "extensions": persisted(&hash) });
    socket.send(send("4", &wrong)).await;
    let message = socket.next_message().await.unwrap();
    assert_eq!(first_code(&message), "BAD_REQUEST", "{message}");
}

#[tokio::test]
async fn allow_list_mode_runs_only_registered_operations_over_a_websocket() {
    let allowed = "query Upcoming { events(first: 2) { edges { cursor } } }";
    let dir = std::env::temp_dir().join(format!("evently-allowlist-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("operations.json");
    std::fs::write(&path, json!({ sha256(allowed): allowed }).to_string()).unwrap();
    let app =
        TestApp::spawn_with(|c| c.graphql.persisted_query_allowlist = Some(path.clone())).await;
    let mut socket = acked(&app, json!({})).await;
    let runs = [
        json!({ "extensions": persisted(&sha256(allowed)) }),
        json!({ "query": allowed }),
    ];
    for (id, payload) in runs.iter().enumerate() {
        socket
            .send(json!({ "id": id.to_string(), "type": "subscribe", "payload": payload }))
            .await;
        let message = socket.next_message().await.unwrap();
        assert!(
            message["payload"]["data"]["events"]["edges"].is_array(),
            "{message}"
        );
        assert_eq!(socket.next_message().await.unwrap()["type"], "complete");
    }
    for (id, payload) in [
        json!({ "query": "{ __typename }" }),
        json!({ "extensions": persisted(&sha256("{ __typename }")) }),
    ]
    .iter()
    .enumerate()
    {
        socket
            .send(json!({ "id": format!("x{id}"), "type": "subscribe", "payload": payload }))
            .await;
        let message = socket.next_message().await.unwrap();
        assert_eq!(
            first_code(&message),
            "PERSISTED_QUERY_NOT_ALLOWED",
            "{message}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
