use evently::db::models::Role;
use serde_json::json;

use crate::support::{TestApp, event_input};

/// GraphiQL works with no internet: its assets come from our binary. A real headless Chromium
/// loads the page, runs a query and must see the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphiql_runs_a_query_in_a_real_browser_without_a_cdn() {
    let app = TestApp::spawn_without_redis().await;
    let organizer = app.user(Role::Organizer).await;
    app.gql_ok(
        Some(&organizer.token),
        "mutation($input: CreateEventInput!) { createEvent(input: $input) { id } }",
        json!({ "input": event_input("Offline Jazz Night", 40) }),
    )
    .await;

    let page = app.get("/graphql").await.text().await.unwrap();
    assert!(
        !page.contains("https://") && !page.contains("http://"),
        "the page must not load anything from elsewhere"
    );

    let text = crate::support::run_query_in_graphiql(
        &app.base_url,
        "{ events { edges { node { title seatsAvailable } } } }",
        "Offline Jazz Night",
    )
    .await
    .expect("GraphiQL ran the query in Chromium");
    assert!(text.contains("\"seatsAvailable\": 40"), "{text}");
}
