//! What a subscription's document goes through, as over HTTP: size and nesting checks before
//! parsing, automatic persisted queries and allow-list mode.

use super::*;

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
    let path = allow_list(&[allowed]);
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
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
