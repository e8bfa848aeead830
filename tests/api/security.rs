//! The defences that need a server configured for them: rate limits (shared through Redis,
//! per instance without it), persisted queries, production GraphQL settings, CORS, headers,
//! timeouts, key rotation and session revocation.

use std::time::Duration;

use evently::config::RateLimit;
use evently::db::models::Role;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{BOOK, OwnRedis, TEST_JWT_SECRET, TestApp, claims, error_code, sign};
use crate::support::{WsClient, operation_errors};

const LOGIN: &str = "mutation($input: LoginInput!) { login(input: $input) { accessToken } }";
const REGISTER: &str =
    "mutation($input: RegisterInput!) { register(input: $input) { accessToken } }";

fn login(email: &str, password: &str) -> Value {
    json!({ "input": { "email": email, "password": password } })
}

/// The `extensions.retryAfter` of a RATE_LIMITED error, checked to be a whole number of seconds.
fn retry_after(body: &Value, window_secs: u64) -> u64 {
    assert_eq!(error_code(body), "RATE_LIMITED", "{body}");
    let secs = body["errors"][0]["extensions"]["retryAfter"]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer retryAfter in {body}"));
    assert!((1..=window_secs).contains(&secs), "{secs}");
    secs
}

#[tokio::test]
async fn login_attempts_are_limited_per_ip_and_the_window_lives_in_redis() {
    let app = TestApp::spawn_with(|c| c.rate_limits.login = RateLimit::per(3, 60)).await;
    let before = app.fingerprint().await;
    for _ in 0..3 {
        let body = app
            .gql(None, LOGIN, login("victim@x.co", "guess-guess"))
            .await;
        assert_eq!(error_code(&body), "UNAUTHENTICATED", "{body}");
    }
    // The fourth attempt is refused before any password is checked, right or wrong.
    let body = app
        .gql(None, LOGIN, login("victim@x.co", "guess-again"))
        .await;
    retry_after(&body, 60);
    assert_eq!(app.fingerprint().await, before);

    let key = format!(
        "{}ratelimit:login:ip:127.0.0.1",
        app.redis.as_ref().unwrap().1
    );
    let mut redis = redis::Client::open(crate::support::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let counted: u64 = redis::cmd("ZCARD")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(counted, 3, "the window is kept in Redis under the prefix");
}

#[tokio::test]
async fn registrations_are_limited_per_ip() {
    let app = TestApp::spawn_with(|c| c.rate_limits.register = RateLimit::per(2, 3600)).await;
    for n in 0..2 {
        let input = json!({ "input": { "email": format!("new{n}@x.co"), "password": "long-enough", "name": "N" } });
        app.gql_ok(None, REGISTER, input).await;
    }
    let input =
        json!({ "input": { "email": "new2@x.co", "password": "long-enough", "name": "N" } });
    retry_after(&app.gql(None, REGISTER, input).await, 3600);
    assert_eq!(app.count("users").await, 2);
}

#[tokio::test]
async fn booking_is_limited_per_user() {
    let app = TestApp::spawn_with(|c| c.rate_limits.booking = RateLimit::per(2, 60)).await;
    let organizer = app.user(Role::Organizer).await;
    let scalper = app.user(Role::User).await;
    let fan = app.user(Role::User).await;
    let event_id = app.event(&organizer, 100).await;
    let book = json!({ "input": { "eventId": event_id } });
    for _ in 0..2 {
        app.gql_ok(Some(&scalper.token), BOOK, book.clone()).await;
    }
    retry_after(&app.gql(Some(&scalper.token), BOOK, book.clone()).await, 60);
    // Another user from the same address is not affected.
    app.gql_ok(Some(&fan.token), BOOK, book).await;
    assert_eq!(app.count("bookings").await, 3);
    app.assert_invariant().await;
}

#[tokio::test]
async fn the_request_budget_refuses_whole_requests_with_429() {
    let app = TestApp::spawn_with(|c| c.rate_limits.requests = RateLimit::per(5, 60)).await;
    let user = app.user(Role::User).await;
    for _ in 0..5 {
        app.gql_ok(None, "{ __typename }", json!({})).await;
    }
    let (status, headers, body) = app
        .post_raw(
            "application/json",
            json!({ "query": "{ __typename }" }).to_string(),
            None,
        )
        .await;
    assert_eq!(status, 429);
    let secs = retry_after(&body, 60);
    assert_eq!(headers["retry-after"], secs.to_string().as_str());
    // A signed-in user has a budget of their own; the probes have none.
    app.gql_ok(Some(&user.token), "{ me { id } }", json!({}))
        .await;
    let health = app
        .client
        .get(format!("{}/healthz", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn limits_hold_across_instances() {
    let first = TestApp::spawn_with(|c| c.rate_limits.login = RateLimit::per(4, 60)).await;
    let second = first.spawn_peer().await;
    for app in [&first, &second, &first, &second] {
        let body = app
            .gql(None, LOGIN, login("victim@x.co", "guess-guess"))
            .await;
        assert_eq!(error_code(&body), "UNAUTHENTICATED");
    }
    for app in [&first, &second] {
        retry_after(
            &app.gql(None, LOGIN, login("victim@x.co", "guess")).await,
            60,
        );
    }
}

#[tokio::test]
async fn limits_fall_back_to_each_instance_when_redis_is_down() {
    // Nothing listens on port 1: every Redis call fails, and the limits still hold.
    let app = TestApp::spawn_with(|c| {
        c.redis_url = Some("redis://127.0.0.1:1".into());
        c.rate_limits.login = RateLimit::per(2, 60);
    })
    .await;
    exhaust_a_login_limit_of_two(&app).await;
}

#[tokio::test]
async fn forwarded_for_counts_only_behind_a_trusted_proxy() {
    let limited = |trusted: bool| {
        move |c: &mut evently::config::Config| {
            c.rate_limits.login = RateLimit::per(1, 60);
            if trusted {
                c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
            }
        }
    };
    let attempt = |app: &TestApp, forwarded: &'static str| {
        app.client
            .post(format!("{}/graphql", app.base_url))
            .header("x-forwarded-for", forwarded)
            .json(&json!({ "query": LOGIN, "variables": login("v@x.co", "guess-guess") }))
            .send()
    };
    let behind_proxy = TestApp::spawn_with(limited(true)).await;
    for client in ["203.0.113.1", "203.0.113.2"] {
        let body: Value = attempt(&behind_proxy, client)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(error_code(&body), "UNAUTHENTICATED", "{client}: {body}");
    }
    let body: Value = attempt(&behind_proxy, "203.0.113.1")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    retry_after(&body, 60);

    // Without a trusted proxy the header is the client's to forge, so it is ignored.
    let direct = TestApp::spawn_with(limited(false)).await;
    attempt(&direct, "203.0.113.1").await.unwrap();
    let body: Value = attempt(&direct, "203.0.113.2")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    retry_after(&body, 60);
}

fn sha256(query: &str) -> String {
    format!("{:x}", Sha256::digest(query.as_bytes()))
}

#[tokio::test]
async fn automatic_persisted_queries_follow_apollos_protocol_across_instances() {
    let first = TestApp::spawn().await;
    let second = first.spawn_peer().await;
    let query = "{ events(first: 3) { edges { cursor } } }";
    let by_hash = json!({ "extensions": { "persistedQuery": { "version": 1, "sha256Hash": sha256(query) } } });
    let (status, body) = first.post_json(&by_hash, None).await;
    assert_eq!(
        (status, error_code(&body)),
        (200, "PERSISTED_QUERY_NOT_FOUND")
    );
    assert_eq!(body["errors"][0]["message"], "PersistedQueryNotFound");

    let mut with_query = by_hash.clone();
    with_query["query"] = json!(query);
    let (_, registered) = first.post_json(&with_query, None).await;
    assert_eq!(
        registered["data"]["events"]["edges"],
        json!([]),
        "{registered}"
    );
    // Registered through Redis, so the other instance knows it too.
    let (_, replayed) = second.post_json(&by_hash, None).await;
    assert_eq!(replayed, registered);

    // Only queries that parse and validate are kept.
    let invalid = "{ nope }";
    let persisted = json!({ "version": 1, "sha256Hash": sha256(invalid) });
    let (_, body) = first
        .post_json(
            &json!({ "query": invalid, "extensions": { "persistedQuery": persisted } }),
            None,
        )
        .await;
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED");
    let (_, body) = first
        .post_json(
            &json!({ "extensions": { "persistedQuery": persisted } }),
            None,
        )
        .await;
    assert_eq!(error_code(&body), "PERSISTED_QUERY_NOT_FOUND");
}

#[tokio::test]
async fn allow_list_mode_runs_only_registered_operations() {
    let allowed = "query Upcoming { events(first: 2) { edges { cursor } } }";
    let dir = std::env::temp_dir().join(format!("evently-allowlist-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("operations.json");
    std::fs::write(&path, json!({ sha256(allowed): allowed }).to_string()).unwrap();
    let app =
        TestApp::spawn_with(|c| c.graphql.persisted_query_allowlist = Some(path.clone())).await;

    let hash_only = json!({ "extensions": { "persistedQuery": { "version": 1, "sha256Hash": sha256(allowed) } } });
    let (_, body) = app.post_json(&hash_only, None).await;
    assert!(body["data"]["events"]["edges"].is_array(), "{body}");
    let (_, body) = app.post_json(&json!({ "query": allowed }), None).await;
    assert!(body["data"]["events"]["edges"].is_array(), "{body}");
    for refused in [
        json!({ "query": "{ __typename }" }),
        json!({ "extensions": { "persistedQuery": { "version": 1, "sha256Hash": sha256("{ __typename }") } } }),
        json!({ "query": "{ __typename }", "extensions": { "persistedQuery": { "version": 1, "sha256Hash": sha256("{ __typename }") } } }),
    ] {
        let (status, body) = app.post_json(&refused, None).await;
        assert_eq!(
            (status, error_code(&body)),
            (200, "PERSISTED_QUERY_NOT_ALLOWED"),
            "{refused}"
        );
    }

    // A file whose hash does not match its query is refused at start-up.
    std::fs::write(&path, json!({ sha256("{ a }"): "{ b }" }).to_string()).unwrap();
    let error = evently::security::persisted::load_allowlist(&path).unwrap_err();
    assert!(error.to_string().contains("not the SHA-256"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn production_settings_hide_the_schema() {
    let production = TestApp::spawn_with(|c| {
        c.graphql.introspection = false;
        c.graphql.suggestions = false;
    })
    .await;
    for query in [
        "{ __schema { types { name } } }",
        "{ __type(name: \"User\") { fields { name } } }",
    ] {
        let body = production.gql(None, query, json!({})).await;
        assert_eq!(error_code(&body), "INTROSPECTION_DISABLED", "{body}");
    }
    let typo = production
        .gql(None, "{ evnts { edges { cursor } } }", json!({}))
        .await;
    assert_eq!(error_code(&typo), "GRAPHQL_VALIDATION_FAILED");
    assert!(!typo.to_string().contains("Did you mean"), "{typo}");
    // __typename is not introspection and keeps working (clients rely on it).
    production.gql_ok(None, "{ __typename }", json!({})).await;

    let development = TestApp::spawn_without_redis().await;
    let schema = development
        .gql_ok(None, "{ __schema { queryType { name } } }", json!({}))
        .await;
    assert_eq!(schema["__schema"]["queryType"]["name"], "Query");
    let typo = development
        .gql(None, "{ evnts { edges { cursor } } }", json!({}))
        .await;
    assert!(typo.to_string().contains("Did you mean"), "{typo}");
}

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
    let health = app
        .client
        .get(format!("{}/healthz", app.base_url))
        .send()
        .await
        .unwrap();
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
    let graphiql = app
        .client
        .get(format!("{}/graphql", app.base_url))
        .send()
        .await
        .unwrap();
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
async fn tokens_of_a_previous_key_work_until_the_key_is_retired() {
    let new_secret = "rotated-secret-rotated-secret-rotated-01";
    let app = TestApp::spawn_with(|c| {
        c.jwt_kid = "k2".into();
        c.jwt_secret = evently::config::Secret::new(new_secret);
        c.jwt_previous_secrets = vec![("k1".into(), evently::config::Secret::new(TEST_JWT_SECRET))];
    })
    .await;
    let user = app.user(Role::User).await;
    // New tokens carry the new key id.
    let header = jsonwebtoken::decode_header(&user.token).unwrap();
    assert_eq!(header.kid.as_deref(), Some("k2"));
    let payload: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            user.token.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let session = payload["sid"].as_str().unwrap().parse().unwrap();
    let old = sign(
        &claims(user.id, session),
        Some("k1"),
        TEST_JWT_SECRET,
        Algorithm::HS256,
    );
    let me = "{ me { id } }";
    assert_eq!(
        app.gql_ok(Some(&old), me, json!({})).await["me"]["id"],
        json!(user.id)
    );

    let retired = app
        .spawn_peer_with(|c| c.jwt_previous_secrets.clear())
        .await;
    assert_eq!(
        error_code(&retired.gql(Some(&old), me, json!({})).await),
        "UNAUTHENTICATED"
    );
    retired.gql_ok(Some(&user.token), me, json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_users_sessions_ends_them_on_every_instance() {
    let first = TestApp::spawn().await;
    let second = first.spawn_peer().await;
    let admin = first.user(Role::Admin).await;
    let organizer = first.user(Role::Organizer).await;
    let victim = first.user(Role::User).await;
    let other_session = first.user(Role::User).await;
    let event_id = first.event(&organizer, 10).await;
    let init = json!({ "Authorization": format!("Bearer {}", victim.token) });
    let mut socket = WsClient::connect(&second.ws_url(), "graphql-transport-ws", init)
        .await
        .unwrap();

    let revoke = "mutation($id: ID!) { revokeUserSessions(userId: $id) }";
    let revoked = first
        .gql_ok(Some(&admin.token), revoke, json!({ "id": victim.id }))
        .await;
    assert_eq!(revoked["revokeUserSessions"], 1);
    // At once, on the other instance too: the access token, the refresh token, the open socket.
    let me = second
        .gql(Some(&victim.token), "{ me { id } }", json!({}))
        .await;
    assert_eq!(error_code(&me), "UNAUTHENTICATED");
    let refresh = "mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken } }";
    let body = second
        .gql(None, refresh, json!({ "t": victim.refresh_token }))
        .await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED");
    socket
        .subscribe("1", BOOK, json!({ "input": { "eventId": event_id } }))
        .await;
    let refused = socket.next_message().await.unwrap();
    let errors = if refused["type"] == "next" {
        &refused["payload"]["errors"]
    } else {
        &refused["payload"]
    };
    assert_eq!(
        errors[0]["extensions"]["code"], "UNAUTHENTICATED",
        "{refused}"
    );
    assert_eq!(first.count("bookings").await, 0);
    // Other users keep their sessions; revoking again finds none live; unknown users are named.
    second
        .gql_ok(Some(&other_session.token), "{ me { id } }", json!({}))
        .await;
    let again = first
        .gql_ok(Some(&admin.token), revoke, json!({ "id": victim.id }))
        .await;
    assert_eq!(again["revokeUserSessions"], 0);
    let unknown = first
        .gql(
            Some(&admin.token),
            revoke,
            json!({ "id": uuid::Uuid::new_v4() }),
        )
        .await;
    assert_eq!(error_code(&unknown), "NOT_FOUND");
}

/// graphql-js's `getIntrospectionQuery()`, which GraphiQL sends to draw its docs: deep (its
/// `TypeRef` fragment nests `ofType` eight times) but harmless, so depth is not counted inside
/// introspection, as in GraphQL Armor.
const INTROSPECTION_QUERY: &str = r#"
query IntrospectionQuery {
  __schema {
    description
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description isRepeatable locations args(includeDeprecated: true) { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description specifiedByURL
  fields(includeDeprecated: true) {
    name description args(includeDeprecated: true) { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason
  }
  inputFields(includeDeprecated: true) { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue {
  name description type { ...TypeRef } defaultValue isDeprecated deprecationReason
}
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name
    ofType { kind name ofType { kind name ofType { kind name } } } } } } } }
}
"#;

#[tokio::test]
async fn graphiqls_introspection_passes_the_default_limits_but_deep_queries_do_not() {
    let app = TestApp::spawn_without_redis().await;
    let schema = app.gql_ok(None, INTROSPECTION_QUERY, json!({})).await;
    let types = schema["__schema"]["types"].as_array().unwrap();
    assert!(types.iter().any(|t| t["name"] == "Booking"));

    // Depth still counts everywhere else, through fragments and inline fragments too.
    let deep = TestApp::spawn_with(|c| c.graphql.max_depth = 4).await;
    let user = deep.user(Role::User).await;
    for query in [
        "{ myBookings { edges { node { event { title } } } } }",
        "{ myBookings { edges { ...E } } } fragment E on BookingEdge { node { event { title } } }",
        "{ myBookings { edges { ... on BookingEdge { node { event { title } } } } } }",
    ] {
        let body = deep.gql(Some(&user.token), query, json!({})).await;
        assert_eq!(error_code(&body), "QUERY_TOO_DEEP", "{query}: {body}");
    }
    deep.gql_ok(
        Some(&user.token),
        "{ myBookings { edges { node { id } } } }",
        json!({}),
    )
    .await;
}

#[tokio::test]
async fn limits_keep_working_when_redis_goes_away() {
    let mut redis = OwnRedis::start().await;
    let url = redis.url();
    let app = TestApp::spawn_with(|c| {
        c.redis_url = Some(url);
        c.rate_limits.login = RateLimit::per(2, 60);
    })
    .await;
    exhaust_a_login_limit_of_two(&app).await;

    redis.stop().await;
    // This instance now counts on its own, from zero: every answer is still a clear one.
    for _ in 0..2 {
        let body = app
            .gql(None, LOGIN, login("victim@x.co", "guess-guess"))
            .await;
        assert_eq!(error_code(&body), "UNAUTHENTICATED", "{body}");
    }
    retry_after(
        &app.gql(None, LOGIN, login("victim@x.co", "guess")).await,
        60,
    );
    let ready = app
        .client
        .get(format!("{}/readyz", app.base_url))
        .send()
        .await
        .unwrap();
    // Bookings and limits carry on without Redis, so the instance stays in the load balancer.
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(
        ready["status"], "degraded",
        "readiness reports Redis down: {ready}"
    );
    assert_eq!(ready["redis"], "down");
}

#[tokio::test]
async fn over_websocket_logins_and_registrations_are_counted_per_address() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limits.login = RateLimit::per(2, 60);
        c.rate_limits.register = RateLimit::per(2, 3600);
    })
    .await;
    let mut socket = WsClient::connect(&app.ws_url(), "graphql-transport-ws", json!({}))
        .await
        .unwrap();
    let mut codes = Vec::new();
    for (n, email) in ["victim@x.co", "VICTIM@x.co", "victim@x.co", "other@x.co"]
        .iter()
        .enumerate()
    {
        socket
            .subscribe(&n.to_string(), LOGIN, login(email, "guess-guess"))
            .await;
        // A refused sign-in ends the operation with an `error` message; a limit is a
        // resolver error, sent as `next` and then `complete`.
        let message = socket.next_message().await.unwrap();
        match message["type"].as_str() {
            Some("error") => codes.push(message["payload"][0]["extensions"]["code"].clone()),
            Some("next") => {
                codes.push(message["payload"]["errors"][0]["extensions"]["code"].clone());
                assert_eq!(socket.next_message().await.unwrap()["type"], "complete");
            }
            _ => panic!("unexpected {message}"),
        }
    }
    // The socket's address is the client, as over HTTP: any account, one budget.
    assert_eq!(
        codes,
        [
            "UNAUTHENTICATED",
            "UNAUTHENTICATED",
            "RATE_LIMITED",
            "RATE_LIMITED"
        ]
    );

    // Registrations from one address share one budget: a new socket does not reset it.
    let mut outcomes = Vec::new();
    for n in 0..3 {
        let mut socket = WsClient::connect(&app.ws_url(), "graphql-transport-ws", json!({}))
            .await
            .unwrap();
        let input = json!({ "input": { "email": format!("ws{n}@x.co"), "password": "long-enough", "name": "W" } });
        socket.subscribe("r", REGISTER, input).await;
        let message = socket.next_message().await.unwrap();
        outcomes.push(message["payload"]["errors"][0]["extensions"]["code"].clone());
    }
    assert_eq!(outcomes, [Value::Null, Value::Null, json!("RATE_LIMITED")]);
    assert_eq!(app.count("users").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_login_costs_the_same_whether_or_not_the_account_exists() {
    // OWASP's argon2id parameters, as in production, so hashing dominates each attempt.
    let app = TestApp::spawn_with(|c| {
        c.password_hashing = evently::config::PasswordHashing::default();
    })
    .await;
    let register = json!({ "input": { "email": "real@x.co", "password": "the-real-password", "name": "Real" } });
    app.gql_ok(None, REGISTER, register).await;
    #[derive(diesel::QueryableByName)]
    struct Hash {
        #[diesel(sql_type = diesel::sql_types::Text)]
        password_hash: String,
    }
    let stored: Hash = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query("SELECT password_hash FROM users"),
        &mut app.db().await,
    )
    .await
    .unwrap();
    assert!(
        stored
            .password_hash
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{}",
        stored.password_hash
    );

    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..5 {
        for (email, times) in [("real@x.co", &mut known), ("nobody@x.co", &mut unknown)] {
            let started = std::time::Instant::now();
            let body = app.gql(None, LOGIN, login(email, "a-wrong-password")).await;
            times.push(started.elapsed());
            assert_eq!(error_code(&body), "UNAUTHENTICATED");
            assert_eq!(body["errors"][0]["message"], "invalid email or password");
        }
    }
    known.sort();
    unknown.sort();
    let (known, unknown) = (known[2].as_secs_f64(), unknown[2].as_secs_f64());
    // Skipping the hash for unknown emails would make them tens of times faster.
    let ratio = unknown / known;
    assert!(
        (0.5..2.0).contains(&ratio),
        "median {unknown:.4} s for an unknown email, {known:.4} s for a wrong password"
    );
}

#[tokio::test]
async fn websocket_operations_count_against_the_users_request_budget() {
    let app = TestApp::spawn_with(|c| c.rate_limits.requests = RateLimit::per(3, 60)).await;
    let user = app.user(Role::User).await;
    let init = json!({ "Authorization": format!("Bearer {}", user.token) });
    let mut socket = WsClient::connect(&app.ws_url(), "graphql-transport-ws", init)
        .await
        .unwrap();
    // One HTTP request and two operations on the socket use up the user's three.
    app.gql_ok(Some(&user.token), "{ me { id } }", json!({}))
        .await;
    for id in ["1", "2", "3"] {
        socket.subscribe(id, "{ me { id } }", json!({})).await;
        let message = socket.next_message().await.unwrap();
        if id == "3" {
            let errors = operation_errors(&message);
            assert_eq!(errors[0]["extensions"]["code"], "RATE_LIMITED", "{message}");
            assert!(errors[0]["extensions"]["retryAfter"].as_u64().is_some());
        } else {
            assert_eq!(message["payload"]["data"]["me"]["id"], json!(user.id));
            assert_eq!(socket.next_message().await.unwrap()["type"], "complete");
        }
    }
}

#[tokio::test]
async fn anonymous_websocket_operations_count_against_the_addresss_request_budget() {
    let app = TestApp::spawn_with(|c| c.rate_limits.requests = RateLimit::per(3, 60)).await;
    // The upgrade request is the address's first request, the two operations its others.
    let mut socket = WsClient::connect(&app.ws_url(), "graphql-transport-ws", json!({}))
        .await
        .unwrap();
    let query = "{ events(first: 1) { edges { node { id } } } }";
    for id in ["1", "2", "3"] {
        socket.subscribe(id, query, json!({})).await;
        let message = socket.next_message().await.unwrap();
        if id == "3" {
            let errors = operation_errors(&message);
            assert_eq!(errors[0]["extensions"]["code"], "RATE_LIMITED", "{message}");
        } else {
            assert!(
                message["payload"]["data"]["events"].is_object(),
                "{message}"
            );
            assert_eq!(socket.next_message().await.unwrap()["type"], "complete");
        }
    }
}

#[tokio::test]
async fn a_websocket_operation_past_its_deadline_gets_a_timeout_code_and_changes_nothing() {
    let app = TestApp::spawn_with(|c| c.graphql.timeout = Some(Duration::from_millis(300))).await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event_id = app.event(&organizer, 10).await;
    let init = json!({ "Authorization": format!("Bearer {}", buyer.token) });
    let mut socket = WsClient::connect(&app.ws_url(), "graphql-transport-ws", init)
        .await
        .unwrap();
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

/// Two failed logins, then a third refused for the limit (`RATE_LIMIT_LOGIN` of 2 a minute).
async fn exhaust_a_login_limit_of_two(app: &TestApp) {
    for _ in 0..2 {
        let body = app
            .gql(None, LOGIN, login("victim@x.co", "guess-guess"))
            .await;
        assert_eq!(error_code(&body), "UNAUTHENTICATED");
    }
    retry_after(
        &app.gql(None, LOGIN, login("victim@x.co", "guess")).await,
        60,
    );
}
