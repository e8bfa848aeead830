//! The HTTP edge: CORS, security headers, oversized bodies and request deadlines (over HTTP
//! and over a WebSocket).

use super::*;

#[tokio::test]
async fn cors_answers_only_allowed_origins() {
    let app = TestApp::spawn_with(|c| {
        c.cors_allowed_origins = Some(vec!["https://tickets.example".into()])
    })
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/graphql", app.base_url),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let allowed = preflight("https://tickets.example").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://tickets.example"
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(
        other.headers().get("access-control-allow-origin").is_none(),
        "{:?}",
        other.headers()
    );
}

#[tokio::test]
async fn responses_carry_security_headers() {
    let app = TestApp::spawn_without_redis().await;
    let api = app
        .client
        .post(format!("{}/graphql", app.base_url))
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    let health = app.get("/healthz").await;
    for response in [&api, &health] {
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert_eq!(
            headers["content-security-policy"],
            "default-src 'none'; frame-ancestors 'none'"
        );
    }
    assert_eq!(api.headers()["cache-control"], "no-store");
    assert!(api.headers().get("strict-transport-security").is_none());
    let graphiql = app.get("/graphql").await;
    let csp = graphiql.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(
        csp.contains("script-src 'self';") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert!(
        !graphiql.text().await.unwrap().contains("<script>"),
        "no inline scripts"
    );
}

#[tokio::test]
async fn an_oversized_chunked_body_gets_a_graphql_shaped_413() {
    // No Content-Length: the limit is only found while reading the body.
    let app = TestApp::spawn_without_redis().await;
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        app.addr
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "a".repeat(64 * 1024));
    for _ in 0..40 {
        // The server may answer and stop reading before the body ends.
        if socket.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = socket.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("\"PAYLOAD_TOO_LARGE\""), "{response}");
}

#[tokio::test]
async fn a_request_past_its_deadline_gets_a_timeout_code_and_changes_nothing() {
    let app = TestApp::spawn_with(|c| c.graphql.timeout = Some(Duration::from_millis(300))).await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event_id = app.event(&organizer, 10).await;
    let before = app.fingerprint().await;
    // Hold the event's row lock, so the booking waits past its deadline.
    let mut blocker = app.hold_event_row(&event_id).await;
    let (status, body) = app
        .post_json(
            &json!({ "query": BOOK, "variables": { "input": { "eventId": event_id } } }),
            Some(&buyer.token),
        )
        .await;
    assert_eq!((status, error_code(&body)), (504, "TIMEOUT"), "{body}");
    diesel_async::SimpleAsyncConnection::batch_execute(&mut blocker, "ROLLBACK")
        .await
        .unwrap();
    assert_eq!(app.fingerprint().await, before);
    // The server is fine afterwards.
    app.gql_ok(
        Some(&buyer.token),
        BOOK,
        json!({ "input": { "eventId": event_id } }),
    )
    .await;
    app.assert_invariant().await;
}

#[tokio::test]
async fn a_websocket_operation_past_its_deadline_gets_a_timeout_code_and_changes_nothing() {
    let app = TestApp::spawn_with(|c| c.graphql.timeout = Some(Duration::from_millis(1000))).await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event_id = app.event(&organizer, 10).await;
    let init = json!({ "Authorization": format!("Bearer {}", buyer.token) });
    let mut socket = app.connect_ws(init).await;
    let before = app.fingerprint().await;
    let mut blocker = app.hold_event_row(&event_id).await;
    let book = json!({ "input": { "eventId": event_id } });
    socket.subscribe("1", BOOK, book.clone()).await;
    // The deadline stops the operation before it produced anything: an `error` message.
    let message = socket.next_message().await.unwrap();
    assert_eq!(message["type"], "error", "{message}");
    assert_eq!(message["payload"][0]["extensions"]["code"], "TIMEOUT");
    diesel_async::SimpleAsyncConnection::batch_execute(&mut blocker, "ROLLBACK")
        .await
        .unwrap();
    assert_eq!(app.fingerprint().await, before);
    // The socket keeps working afterwards.
    socket.subscribe("2", BOOK, book).await;
    let booked = socket.next_data().await;
    assert_eq!(
        booked["data"]["bookSeats"]["status"], "CONFIRMED",
        "{booked}"
    );
    app.assert_invariant().await;
}
