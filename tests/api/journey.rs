use evently::db::models::Role;
use serde_json::json;

use crate::support::{BOOK, CANCEL, TestApp, error_code, event_input};

const REGISTER: &str = "mutation($input: RegisterInput!) { register(input: $input) { accessToken refreshToken expiresIn user { id email role } } }";
const LOGIN: &str = "mutation($input: LoginInput!) { login(input: $input) { accessToken refreshToken user { email } } }";
const REFRESH: &str =
    "mutation($token: String!) { refreshToken(refreshToken: $token) { accessToken refreshToken } }";
const EVENTS: &str = "query($filter: EventFilter, $first: Int, $after: String) {
  events(filter: $filter, first: $first, after: $after) {
    edges { cursor node { id title category seatsAvailable soldOut organizer { name } } }
    pageInfo { hasNextPage endCursor }
  }
}";

#[tokio::test]
async fn a_user_registers_browses_books_cancels_refreshes_and_logs_out() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    for (title, category) in [
        ("Jazz Night", "Music"),
        ("Derby", "Sports"),
        ("Rock Fest", "Music"),
        ("Blues Cellar", "music"),
    ] {
        let mut input = event_input(title, 100);
        input["category"] = json!(category);
        app.gql_ok(
            Some(&organizer.token),
            "mutation($i: CreateEventInput!) { createEvent(input: $i) { id } }",
            json!({ "i": input }),
        )
        .await;
    }

    // Register, then log in with the same credentials (emails are case-insensitive).
    let registered = app
        .gql_ok(None, REGISTER, json!({ "input": { "email": "Fan@Example.com", "password": "s3cret-pass", "name": "Fan" } }))
        .await;
    assert_eq!(registered["register"]["user"]["email"], "fan@example.com");
    assert_eq!(registered["register"]["user"]["role"], "USER");
    assert_eq!(registered["register"]["expiresIn"], 900);
    let duplicate = app
        .gql(None, REGISTER, json!({ "input": { "email": "fan@example.com", "password": "another-pass", "name": "Fan" } }))
        .await;
    assert_eq!(error_code(&duplicate), "CONFLICT");
    let wrong = app
        .gql(
            None,
            LOGIN,
            json!({ "input": { "email": "fan@example.com", "password": "wrong-pass" } }),
        )
        .await;
    assert_eq!(error_code(&wrong), "UNAUTHENTICATED");
    let login = app
        .gql_ok(
            None,
            LOGIN,
            json!({ "input": { "email": "FAN@example.com", "password": "s3cret-pass" } }),
        )
        .await;
    let token = login["login"]["accessToken"].as_str().unwrap().to_owned();
    let refresh = login["login"]["refreshToken"].as_str().unwrap().to_owned();
    let me = app
        .gql_ok(Some(&token), "{ me { email name } }", json!({}))
        .await;
    assert_eq!(me["me"]["email"], "fan@example.com");
    assert_eq!(
        app.gql_ok(None, "{ me { id } }", json!({})).await["me"],
        json!(null)
    );

    // Browse: a category filter (any case), then page through everything two at a time.
    let music = app
        .gql_ok(None, EVENTS, json!({ "filter": { "category": "MUSIC" } }))
        .await;
    let titles: Vec<_> = music["events"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["title"].clone())
        .collect();
    assert_eq!(titles.len(), 3, "{music}");
    let search = app
        .gql_ok(None, EVENTS, json!({ "filter": { "search": "derb" } }))
        .await;
    assert_eq!(search["events"]["edges"][0]["node"]["title"], "Derby");
    let mut seen = Vec::new();
    let mut after = json!(null);
    loop {
        let page = app
            .gql_ok(None, EVENTS, json!({ "first": 2, "after": after }))
            .await;
        for edge in page["events"]["edges"].as_array().unwrap() {
            seen.push(edge["node"]["id"].as_str().unwrap().to_owned());
        }
        if !page["events"]["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            break;
        }
        after = page["events"]["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(seen.len(), 4);
    seen.dedup();
    assert_eq!(seen.len(), 4, "pages overlap");

    // Book, see it in myBookings with its event, cancel it.
    let event_id = seen[0].clone();
    let booked = app
        .gql_ok(
            Some(&token),
            BOOK,
            json!({ "input": { "eventId": event_id, "quantity": 3 } }),
        )
        .await;
    let booking_id = booked["bookSeats"]["id"].as_str().unwrap().to_owned();
    assert_eq!(booked["bookSeats"]["status"], "CONFIRMED");
    let mine = app
        .gql_ok(Some(&token), "{ myBookings { edges { node { id quantity event { id seatsAvailable } user { email } } } } }", json!({}))
        .await;
    let node = &mine["myBookings"]["edges"][0]["node"];
    assert_eq!(node["id"], booking_id.as_str());
    assert_eq!(node["event"]["seatsAvailable"], 97);
    assert_eq!(node["user"]["email"], "fan@example.com");
    let cancelled = app
        .gql_ok(Some(&token), CANCEL, json!({ "id": booking_id }))
        .await;
    assert_eq!(cancelled["cancelBooking"]["status"], "CANCELLED");
    let event = app
        .gql_ok(
            None,
            "query($id: ID!) { event(id: $id) { seatsAvailable } }",
            json!({ "id": event_id }),
        )
        .await;
    assert_eq!(event["event"]["seatsAvailable"], 100);

    // Refresh rotates: the new pair works, the old refresh token does not.
    let rotated = app.gql_ok(None, REFRESH, json!({ "token": refresh })).await;
    let new_token = rotated["refreshToken"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(rotated["refreshToken"]["refreshToken"], refresh.as_str());
    assert!(
        app.gql_ok(Some(&new_token), "{ me { email } }", json!({}))
            .await["me"]
            .is_object()
    );

    // Logout revokes the session: its access token now fails.
    assert_eq!(
        app.gql_ok(Some(&new_token), "mutation { logout }", json!({}))
            .await["logout"],
        true
    );
    let after_logout = app
        .gql(Some(&new_token), "{ me { email } }", json!({}))
        .await;
    assert_eq!(error_code(&after_logout), "UNAUTHENTICATED");
    let book_after_logout = app
        .gql(
            Some(&new_token),
            BOOK,
            json!({ "input": { "eventId": event_id } }),
        )
        .await;
    assert_eq!(error_code(&book_after_logout), "UNAUTHENTICATED");
    app.assert_invariant().await;
}

#[tokio::test]
async fn a_reused_refresh_token_ends_the_session() {
    let app = TestApp::spawn_without_redis().await;
    let user = app.user(Role::User).await;
    let first = app
        .gql_ok(None, REFRESH, json!({ "token": user.refresh_token }))
        .await;
    // The copy comes back after the grace window for retries (see login.rs for within it).
    let backdated = diesel_async::RunQueryDsl::execute(
        diesel::sql_query(
            "UPDATE refresh_tokens SET used_at = used_at - interval '1 hour' WHERE used_at IS NOT NULL",
        ),
        &mut app.db().await,
    )
    .await
    .unwrap();
    assert_eq!(backdated, 1);
    let stolen_copy = app
        .gql(None, REFRESH, json!({ "token": user.refresh_token }))
        .await;
    assert_eq!(error_code(&stolen_copy), "UNAUTHENTICATED");
    // The legitimate holder's newer tokens are revoked with the session.
    let newer = first["refreshToken"]["refreshToken"].as_str().unwrap();
    assert_eq!(
        error_code(&app.gql(None, REFRESH, json!({ "token": newer })).await),
        "UNAUTHENTICATED"
    );
    let access = first["refreshToken"]["accessToken"].as_str().unwrap();
    assert_eq!(
        error_code(&app.gql(Some(access), "{ me { id } }", json!({})).await),
        "UNAUTHENTICATED"
    );
}

#[tokio::test]
async fn probes_report_health_and_readiness() {
    let app = TestApp::spawn().await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    let mut ready: serde_json::Value = app.get("/readyz").await.json().await.unwrap();
    // Each dependency's check reports how long it took.
    let latency = ready
        .as_object_mut()
        .unwrap()
        .remove("latency_ms")
        .expect("latency_ms");
    for dependency in ["postgres", "redis"] {
        let ms = latency[dependency].as_f64().unwrap_or(-1.0);
        assert!((0.0..2000.0).contains(&ms), "{dependency}: {latency}");
    }
    assert_eq!(
        ready,
        json!({ "status": "ready", "postgres": "up", "redis": "up" })
    );
    let single = TestApp::spawn_without_redis().await;
    let ready: serde_json::Value = single.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["redis"], "not_configured");
    assert!(ready["latency_ms"]["postgres"].is_number(), "{ready}");
    assert!(ready["latency_ms"].get("redis").is_none(), "{ready}");
}
