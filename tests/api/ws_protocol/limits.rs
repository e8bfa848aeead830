//! The limits around connections: operations per connection, connections per user (on one
//! instance and across instances, with leases), the instance's cap, anonymous sockets per
//! address, and the request budget.

use super::*;

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
