//! GraphQL over HTTP as the specification and the clients expect (issue 17): the spec's own
//! audit suite (npm `graphql-http`, pinned in tests/js), status codes per media type, GET
//! queries and who may cache their answers.

use evently::db::models::Role;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::run_node;
use crate::support::{BOOK, TestApp};

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
const EVENTS: &str = "{ events(first: 5) { edges { node { title seatsAvailable } } } }";

/// Audits the suite may report as not ok, each with why it does not apply to Evently. Every
/// other audit, MUST, SHOULD and MAY alike, must be ok.
const NOT_APPLICABLE: &[(&str, &str)] = &[];

#[tokio::test]
async fn the_graphql_over_http_audit_suite_finds_every_requirement_and_recommendation_met() {
    let app = TestApp::spawn_without_redis().await;
    let url = format!("{}/graphql", app.base_url);
    let report = run_node("graphql-http-audits.mjs", &[("EVENTLY_HTTP_URL", &url)]).await;
    let audits = report["audits"].as_array().unwrap();
    assert!(audits.len() >= 50, "{report}");
    let mut unexpected = Vec::new();
    for audit in audits {
        let (id, name, status) = (
            audit["id"].as_str().unwrap(),
            audit["name"].as_str().unwrap(),
            audit["status"].as_str().unwrap(),
        );
        let exempt = NOT_APPLICABLE.iter().find(|(exempt, _)| *exempt == id);
        match (status, exempt) {
            ("ok", _) => eprintln!("ok    {id} {name}"),
            (_, Some((_, why))) => eprintln!("{status:5} {id} {name} (does not apply: {why})"),
            _ => {
                eprintln!("{status:5} {id} {name}: {audit}");
                unexpected.push(audit.clone());
            }
        }
    }
    assert!(unexpected.is_empty(), "audits not ok: {unexpected:#?}");
}

async fn post(
    app: &TestApp,
    content_type: Option<&str>,
    accept: &str,
    body: &str,
) -> (u16, HeaderMap, Value) {
    let mut request = app
        .client
        .post(format!("{}/graphql", app.base_url))
        .header("accept", accept)
        .body(body.to_owned());
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn each_media_type_gets_its_own_status_codes_and_content_type() {
    let app = TestApp::spawn_without_redis().await;
    let json_type = Some("application/json");
    for (accept, expected) in [
        ("application/json", "application/json"),
        ("*/*", "application/json"),
        (GRAPHQL_RESPONSE_JSON, GRAPHQL_RESPONSE_JSON),
        (
            "application/graphql-response+json, application/json;q=0.9",
            GRAPHQL_RESPONSE_JSON,
        ),
    ] {
        let (status, headers, body) =
            post(&app, json_type, accept, r#"{"query":"{ __typename }"}"#).await;
        assert_eq!(status, 200, "{accept}");
        assert_eq!(headers["content-type"], expected, "{accept}");
        assert_eq!(body, json!({ "data": { "__typename": "Query" } }));
    }

    // A document that does not parse or validate, or variables that do not fit, never ran:
    // the new media type says so with 400 and no `data`; plain JSON keeps 200.
    let never_ran = [
        json!({ "query": "{" }),
        json!({ "query": "{ noSuchField }" }),
        json!({ "query": "query($id: ID!) { event(id: $id) { id } }", "variables": { "id": null } }),
    ];
    for request in &never_ran {
        let (status, _, body) =
            post(&app, json_type, GRAPHQL_RESPONSE_JSON, &request.to_string()).await;
        assert_eq!(status, 400, "{request}: {body}");
        assert!(body.get("data").is_none(), "{body}");
        assert!(
            body["errors"][0]["extensions"]["code"].is_string(),
            "{body}"
        );
        let (status, _, body) =
            post(&app, json_type, "application/json", &request.to_string()).await;
        assert_eq!(status, 200, "{request}: {body}");
        assert!(body["errors"].is_array(), "{body}");
    }

    // A field's error is an answer: 200 in both media types, with `data`.
    let (status, _, body) = post(
        &app,
        json_type,
        GRAPHQL_RESPONSE_JSON,
        r#"{"query":"{ me { id } }"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("data").is_some(), "{body}");

    // A POST must say it is JSON.
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let (status, _, body) = post(
            &app,
            content_type,
            "application/json",
            r#"{"query":"{ __typename }"}"#,
        )
        .await;
        assert_eq!(status, 415, "{content_type:?}: {body}");
        assert_eq!(
            body["errors"][0]["extensions"]["code"],
            "UNSUPPORTED_MEDIA_TYPE"
        );
    }
}

/// A GET of `/graphql` with these URL parameters.
async fn get(
    app: &TestApp,
    params: &[(&str, &str)],
    token: Option<&str>,
    if_none_match: Option<&str>,
) -> (u16, HeaderMap, Value) {
    let url =
        reqwest::Url::parse_with_params(&format!("{}/graphql", app.base_url), params).unwrap();
    let mut request = app.client.get(url).header(
        "accept",
        "application/graphql-response+json, application/json;q=0.9",
    );
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(tag) = if_none_match {
        request = request.header("if-none-match", tag);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn cache_control(headers: &HeaderMap) -> &str {
    headers["cache-control"].to_str().unwrap()
}

#[tokio::test]
async fn an_anonymous_get_of_the_catalogue_is_public_and_revalidates_with_its_etag() {
    let app = TestApp::spawn_with(|config| {
        config.graphql.http_cache_max_age = std::time::Duration::from_secs(7)
    })
    .await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 10).await;

    let (status, headers, body) = get(&app, &[("query", EVENTS)], None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(cache_control(&headers), "public, max-age=7");
    assert_eq!(
        body["data"]["events"]["edges"][0]["node"]["seatsAvailable"],
        10
    );
    let tag = headers["etag"].to_str().unwrap().to_owned();
    let (status, headers, body) = get(&app, &[("query", EVENTS)], None, Some(&tag)).await;
    assert_eq!(status, 304, "{body}");
    assert_eq!(headers["etag"], tag.as_str());
    assert_eq!(body, json!(""));

    // With variables and an operation name, URL-encoded.
    let query =
        "query One($id: ID!) { event(id: $id) { seatsAvailable } } query Other { __typename }";
    let variables = json!({ "id": event_id }).to_string();
    let (status, headers, body) = get(
        &app,
        &[
            ("query", query),
            ("operationName", "One"),
            ("variables", &variables),
        ],
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({ "data": { "event": { "seatsAvailable": 10 } } })
    );
    assert_eq!(cache_control(&headers), "public, max-age=7");

    // An answer with an error is nobody's to keep.
    let missing = json!({ "id": "no-such-event" }).to_string();
    let (_, headers, body) = get(
        &app,
        &[
            ("query", query),
            ("operationName", "One"),
            ("variables", &missing),
        ],
        None,
        None,
    )
    .await;
    assert!(body["errors"].is_array(), "{body}");
    assert_eq!(cache_control(&headers), "private, no-store");
}

#[tokio::test]
async fn no_signed_in_or_per_user_answer_is_ever_marked_public() {
    let app = TestApp::spawn_without_redis().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event_id = app.event(&organizer, 10).await;
    app.gql_ok(
        Some(&buyer.token),
        BOOK,
        json!({ "input": { "eventId": event_id } }),
    )
    .await;

    let per_user = [
        "{ me { id email } }",
        "{ myBookings { edges { node { id } } } }",
        "{ events { edges { cursor } } me { id } }",
        "query { ...Mine } fragment Mine on Query { myBookings { edges { cursor } } }",
    ];
    for query in per_user.iter().copied().chain([EVENTS]) {
        for token in [
            Some(buyer.token.as_str()),
            Some(organizer.token.as_str()),
            None,
        ] {
            let (status, headers, body) = get(&app, &[("query", query)], token, None).await;
            let signed_in = token.is_some();
            if signed_in || query != EVENTS {
                assert_eq!(
                    cache_control(&headers),
                    "private, no-store",
                    "{query} signed in: {signed_in}: {body}"
                );
            }
            if token == Some(buyer.token.as_str()) && query.contains("myBookings") {
                assert_eq!(status, 200);
                assert!(body["data"]["myBookings"]["edges"][0].is_object(), "{body}");
            }
        }
    }
    // A POST is never kept by anyone, whoever sends it.
    let (_, headers, _) = post(
        &app,
        Some("application/json"),
        "application/json",
        &json!({ "query": EVENTS }).to_string(),
    )
    .await;
    assert_eq!(cache_control(&headers), "no-store");
}

#[tokio::test]
async fn get_runs_queries_only() {
    let app = TestApp::spawn_without_redis().await;
    for query in [
        "mutation { logout }",
        "subscription { myBookingUpdates { id } }",
        "query A { __typename } mutation B { logout }",
    ] {
        let operation = if query.contains("B {") { "B" } else { "" };
        let (status, headers, body) = get(
            &app,
            &[("query", query), ("operationName", operation)],
            None,
            None,
        )
        .await;
        assert_eq!(status, 405, "{query}: {body}");
        assert_eq!(headers["allow"], "POST");
        assert_eq!(
            body["errors"][0]["extensions"]["code"],
            "METHOD_NOT_ALLOWED"
        );
        assert_eq!(cache_control(&headers), "private, no-store");
    }
    let (status, _, body) = get(
        &app,
        &[
            ("query", "query A { __typename } mutation B { logout }"),
            ("operationName", "A"),
        ],
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = get(&app, &[("variables", "{}")], None, None).await;
    assert_eq!(status, 400, "no query");
}

fn sha256(query: &str) -> String {
    format!("{:x}", Sha256::digest(query.as_bytes()))
}

#[tokio::test]
async fn automatic_persisted_queries_work_over_get_as_apollo_sends_them() {
    let app = TestApp::spawn().await;
    let by_hash = |query: &str| {
        json!({ "persistedQuery": { "version": 1, "sha256Hash": sha256(query) } }).to_string()
    };

    // Unknown hash: the client is told to send the text, and nobody caches that.
    let extensions = by_hash(EVENTS);
    let (status, headers, body) = get(&app, &[("extensions", &extensions)], None, None).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_FOUND"
    );
    assert_eq!(cache_control(&headers), "private, no-store");

    // Sent with its text (Apollo retries so), it registers; then the hash alone is enough,
    // and the answer is public.
    let (status, _, body) = get(
        &app,
        &[("query", EVENTS), ("extensions", &extensions)],
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, headers, body) = get(&app, &[("extensions", &extensions)], None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["events"]["edges"], json!([]));
    assert!(cache_control(&headers).starts_with("public, max-age="));

    // A mutation registered by POST still may not run by GET under its hash.
    let logout = "mutation { logout }";
    let (_, body) = app
        .post_json(&json!({ "query": logout, "extensions": { "persistedQuery": { "version": 1, "sha256Hash": sha256(logout) } } }), None)
        .await;
    assert!(
        body.get("errors").is_some() || body.get("data").is_some(),
        "{body}"
    );
    let (status, headers, _) = get(&app, &[("extensions", &by_hash(logout))], None, None).await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "POST");
}
