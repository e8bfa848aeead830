//! The client configurations the README gives (Apollo Client, urql, graphql-ws, graphql-sse,
//! plain fetch), run from tests/js/readme-clients.mjs against a real server: the examples in
//! the README are the ones that work.

use evently::db::models::Role;
use serde_json::{Value, json};

use crate::support::TestApp;
use crate::support::run_node;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_client_configurations_work_against_evently() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event_id = app.event(&organizer, 10).await;

    let seen = run_node(
        "readme-clients.mjs",
        &[
            ("EVENTLY_URL", app.base_url.as_str()),
            ("EVENTLY_TOKEN", &buyer.token),
            ("EVENTLY_EVENT_ID", &event_id),
        ],
    )
    .await;
    let requests = seen["requests"].as_array().unwrap();
    let of = |client: &str| -> Vec<&Value> {
        requests.iter().filter(|r| r["client"] == client).collect()
    };

    // Apollo's persisted queries: an unknown hash by GET, the text by POST once, then the
    // hash alone by GET, answered public so a CDN can keep it.
    assert_eq!(seen["apolloFirst"], 1);
    assert_eq!(seen["apolloAgain"], 1);
    let apollo = of("apollo");
    let methods: Vec<_> = apollo
        .iter()
        .map(|r| (r["method"].as_str().unwrap(), r["status"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        &methods[..3],
        &[("GET", 400), ("POST", 200), ("GET", 200)],
        "{apollo:?}"
    );
    assert_eq!(apollo[2]["cacheControl"], "public, max-age=5");
    assert_eq!(seen["apolloSeats"], json!([10, 9]));
    assert_eq!(
        seen["apolloBooked"],
        json!({ "__typename": "Booking", "quantity": 1, "status": "CONFIRMED" })
    );

    // urql sends its queries by GET (signed in: private), subscriptions over graphql-sse.
    assert_eq!(seen["urqlEvents"], 1);
    let urql = of("urql");
    assert_eq!(urql[0]["method"], "GET", "{urql:?}");
    assert_eq!(urql[0]["cacheControl"], "private, no-store");
    assert_eq!(seen["urqlSeats"], 9);

    // Plain fetch.
    assert_eq!(
        seen["fetchGet"]["contentType"],
        "application/graphql-response+json"
    );
    assert_eq!(
        seen["fetchGet"]["body"]["data"]["events"]["edges"][0]["node"]["seatsAvailable"],
        9
    );
    assert_eq!(
        seen["fetchPost"],
        json!({ "data": { "me": { "name": "Test User" } } })
    );
}
