//! Hostile input: forged tokens, escalation, IDOR, query bombs, malformed bodies. Every case
//! gets its documented status and `extensions.code`, none a 5xx, and nothing is written.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use evently::db::models::Role;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::operations::{
    CANCEL_EVENT, CREATE_EVENT as CREATE, EVENT_BOOKINGS, SET_ROLE, UPDATE_EVENT_TITLE as UPDATE,
};
use crate::support::{BOOK, CANCEL, TEST_JWT_SECRET, TestApp, claims, event_input, sign};

/// What a case sends.
enum Send {
    /// A GraphQL request as JSON, with this bearer token.
    Gql(Option<String>, String, Value),
    /// Any JSON body.
    Json(Value),
    /// Raw bytes with a content type.
    Raw(&'static str, Vec<u8>),
    /// A header `Authorization` of exactly this value.
    Authorization(String, &'static str),
}

/// What it must get: HTTP status and the first error's code, or success (`None`).
struct Case {
    name: &'static str,
    send: Send,
    status: u16,
    code: Option<&'static str>,
}

fn case(name: &'static str, send: Send, status: u16, code: Option<&'static str>) -> Case {
    Case {
        name,
        send,
        status,
        code,
    }
}

fn gql(token: Option<&str>, query: impl Into<String>, variables: Value) -> Send {
    Send::Gql(token.map(str::to_owned), query.into(), variables)
}

/// The session id inside one of our access tokens.
fn session_of(token: &str) -> Uuid {
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["sid"].as_str().unwrap().parse().unwrap()
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

const ME: &str = "{ me { id role } }";
const REVOKE: &str = "mutation($id: ID!) { revokeUserSessions(userId: $id) }";
const REGISTER: &str =
    "mutation($input: RegisterInput!) { register(input: $input) { accessToken } }";
const LOGIN: &str = "mutation($input: LoginInput!) { login(input: $input) { accessToken } }";
const REFRESH: &str = "mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken } }";
const EVENTS: &str = "query($f: Int, $a: String, $s: String) { events(first: $f, after: $a, filter: { search: $s }) { edges { node { id } } } }";
/// Every field of an event, and its organizer's: a wide page multiplies it.
const EVENT_FIELDS: &str = "id title description category venue startsAt endsAt capacity seatsAvailable soldOut maxPerBooking status version createdAt updatedAt organizer { id name role createdAt email }";

async fn send(app: &TestApp, send: &Send) -> (u16, Value) {
    match send {
        Send::Gql(token, query, variables) => {
            app.post_json(
                &json!({ "query": query, "variables": variables }),
                token.as_deref(),
            )
            .await
        }
        Send::Json(body) => app.post_json(body, None).await,
        Send::Raw(content_type, bytes) => {
            let (status, _, body) = app.post_raw(content_type, bytes.clone(), None).await;
            (status, body)
        }
        Send::Authorization(value, query) => {
            let response = app
                .client
                .post(format!("{}/graphql", app.base_url))
                .header("authorization", value.as_str())
                .json(&json!({ "query": query }))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_their_documented_error_and_change_nothing() {
    let app = TestApp::spawn_with(|config| config.graphql.max_depth = 5).await;
    let organizer = app.user(Role::Organizer).await;
    let rival = app.user(Role::Organizer).await;
    let alice = app.user(Role::User).await;
    let bob = app.user(Role::User).await;
    let admin = app.user(Role::Admin).await;
    let event_id = app.event(&organizer, 20).await;
    let booking_id = app.book(&alice, &event_id, 1).await;
    app.gql_ok(
        None,
        REGISTER,
        json!({ "input": { "email": "taken@x.co", "password": "long-enough", "name": "Taken" } }),
    )
    .await;
    let before = app.fingerprint().await;

    let valid = claims(alice.id, session_of(&alice.token));
    let now = chrono::Utc::now().timestamp();
    let forged =
        |claims: &Value, kid: Option<&str>, secret: &str, alg| Some(sign(claims, kid, secret, alg));
    let none_token = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#),
        URL_SAFE_NO_PAD.encode(valid.to_string())
    );
    let hs = Algorithm::HS256;
    let id = json!({ "id": event_id });
    let book = |input: Value| json!({ "input": input });
    let register = |email: &str, password: &str, name: &str| json!({ "input": { "email": email, "password": password, "name": name } });
    let aliases = |n: usize| {
        let fields: Vec<_> = (0..n).map(|i| format!("a{i}: __typename")).collect();
        format!("{{ {} }}", fields.join(" "))
    };
    let persisted = |hash: &str, version: i64| json!({ "extensions": { "persistedQuery": { "version": version, "sha256Hash": hash } } });
    let u = |t: &crate::support::TestUser| Some(t.token.clone());
    let ok = None;

    let cases = vec![
        // Forged, expired and otherwise wrong tokens.
        case("alg none", gql(Some(&none_token), ME, json!({})), 200, Some("UNAUTHENTICATED")),
        case("HS512 with the right secret", Send::Gql(forged(&valid, Some("k1"), TEST_JWT_SECRET, Algorithm::HS512), ME.into(), json!({})), 200, Some("UNAUTHENTICATED")),
        case("HS384 with the right secret", Send::Gql(forged(&valid, Some("k1"), TEST_JWT_SECRET, Algorithm::HS384), ME.into(), json!({})), 200, Some("UNAUTHENTICATED")),
        case("wrong secret", Send::Gql(forged(&valid, Some("k1"), "another-secret-another-secret-0123456", hs), ME.into(), json!({})), 200, Some("UNAUTHENTICATED")),
        case("unknown kid", Send::Gql(forged(&valid, Some("k0"), TEST_JWT_SECRET, hs), ME.into(), json!({})), 200, Some("UNAUTHENTICATED")),
        case("no kid", Send::Gql(forged(&valid, None, TEST_JWT_SECRET, hs), ME.into(), json!({})), 200, Some("UNAUTHENTICATED")),
        case("expired", Send::Gql(forged(&with(valid.clone(), "exp", json!(now - 120)), Some("k1"), TEST_JWT_SECRET, hs), ME.into(), json!({})), 200, Some("UNAUTHENTICATED")),
        case("not yet valid (nbf)", Send::Gql(forged(&with(valid.clone(), "nbf", json!(now + 600)), Some("k1"), TEST_JWT_SECRET, hs), ME.into(), json!({})), 200, Some("UNAUTHENTICATED")),
        case("issued in the future (iat)", Send::Gql(forged(&with(valid.clone(), "iat", json!(now + 600)), Some("k1"), TEST_JWT_SECRET, hs), ME.into(), json!({})), 200, Some("UNAUTHENTICATED")),
        case("no nbf", Send::Gql(forged(&with(valid.clone(), "nbf", Value::Null), Some("k1"), TEST_JWT_SECRET, hs), ME.into(), json!({})), 200, Some("UNAUTHENTICATED")),
        case("wrong issuer", Send::Gql(forged(&with(valid.clone(), "iss", json!("someone-else")), Some("k1"), TEST_JWT_SECRET, hs), ME.into(), json!({})), 200, Some("UNAUTHENTICATED")),
        case("wrong audience", Send::Gql(forged(&with(valid.clone(), "aud", json!("other-api")), Some("k1"), TEST_JWT_SECRET, hs), ME.into(), json!({})), 200, Some("UNAUTHENTICATED")),
        case("another user's id in a real session", Send::Gql(forged(&with(valid.clone(), "sub", json!(bob.id)), Some("k1"), TEST_JWT_SECRET, hs), ME.into(), json!({})), 200, Some("UNAUTHENTICATED")),
        case("a session that does not exist", Send::Gql(forged(&with(valid.clone(), "sid", json!(Uuid::new_v4())), Some("k1"), TEST_JWT_SECRET, hs), ME.into(), json!({})), 200, Some("UNAUTHENTICATED")),
        case("a signed ADMIN role claim does not make an admin", Send::Gql(forged(&with(valid.clone(), "role", json!("ADMIN")), Some("k1"), TEST_JWT_SECRET, hs), SET_ROLE.into(), json!({ "id": alice.id, "role": "ADMIN" })), 200, Some("FORBIDDEN")),
        case("truncated signature", gql(Some(&alice.token[..alice.token.len() - 4]), ME, json!({})), 200, Some("UNAUTHENTICATED")),
        case("garbage token", gql(Some("abc.def.ghi"), ME, json!({})), 200, Some("UNAUTHENTICATED")),
        case("Basic credentials", Send::Authorization("Basic dXNlcjpwYXNz".into(), ME), 200, Some("UNAUTHENTICATED")),
        case("empty bearer", Send::Authorization("Bearer ".into(), ME), 200, Some("UNAUTHENTICATED")),
        case("8 KiB bearer token", Send::Authorization(format!("Bearer {}", "x".repeat(8192)), ME), 200, Some("UNAUTHENTICATED")),
        // Role escalation and other people's things.
        case("USER makes itself ADMIN", gql(u(&alice).as_deref(), SET_ROLE, json!({ "id": alice.id, "role": "ADMIN" })), 200, Some("FORBIDDEN")),
        case("ORGANIZER makes itself ADMIN", gql(u(&organizer).as_deref(), SET_ROLE, json!({ "id": organizer.id, "role": "ADMIN" })), 200, Some("FORBIDDEN")),
        case("anonymous setUserRole", gql(None, SET_ROLE, json!({ "id": alice.id, "role": "ADMIN" })), 200, Some("UNAUTHENTICATED")),
        case("USER revokes an admin's sessions", gql(u(&alice).as_deref(), REVOKE, json!({ "id": admin.id })), 200, Some("FORBIDDEN")),
        case("anonymous revokeUserSessions", gql(None, REVOKE, json!({ "id": alice.id })), 200, Some("UNAUTHENTICATED")),
        case("IDOR: cancel another user's booking", gql(u(&bob).as_deref(), CANCEL, json!({ "id": booking_id })), 200, Some("FORBIDDEN")),
        case("IDOR: list another organizer's bookings", gql(u(&rival).as_deref(), EVENT_BOOKINGS, id.clone()), 200, Some("FORBIDDEN")),
        case("IDOR: USER lists an event's bookings", gql(u(&bob).as_deref(), EVENT_BOOKINGS, id.clone()), 200, Some("FORBIDDEN")),
        case("rival organizer updates the event", gql(u(&rival).as_deref(), UPDATE, id.clone()), 200, Some("FORBIDDEN")),
        case("rival organizer cancels the event", gql(u(&rival).as_deref(), CANCEL_EVENT, id.clone()), 200, Some("FORBIDDEN")),
        case("USER creates an event", gql(u(&bob).as_deref(), CREATE, json!({ "input": event_input("Mine", 5) })), 200, Some("FORBIDDEN")),
        case("anonymous books", gql(None, BOOK, book(json!({ "eventId": event_id }))), 200, Some("UNAUTHENTICATED")),
        case("cancel a booking that does not exist", gql(u(&bob).as_deref(), CANCEL, json!({ "id": Uuid::new_v4() })), 200, Some("NOT_FOUND")),
        case("createEvent names its own organizer", gql(u(&rival).as_deref(), CREATE, json!({ "input": with(event_input("x", 5), "organizerId", json!(organizer.id)) })), 200, Some("BAD_USER_INPUT")),
        case("register picks its own role", gql(None, REGISTER, json!({ "input": { "email": "r@x.co", "password": "long-enough", "name": "R", "role": "ADMIN" } })), 200, Some("BAD_USER_INPUT")),
        // Query bombs.
        case("deeper than the depth limit", gql(u(&alice).as_deref(), "{ myBookings { edges { node { event { organizer { name } } } } } }", json!({})), 200, Some("QUERY_TOO_DEEP")),
        case("10,000 nested brackets", gql(None, "{".repeat(10_000), json!({})), 200, Some("QUERY_TOO_DEEP")),
        case("deeply nested list argument", gql(None, format!("{{ events(first: {}1{}) {{ edges {{ cursor }} }} }}", "[".repeat(500), "]".repeat(500)), json!({})), 200, Some("QUERY_TOO_DEEP")),
        case("wide page of every field, twice", gql(None, format!("{{ events(first: 100) {{ edges {{ node {{ {EVENT_FIELDS} ... on Event {{ {EVENT_FIELDS} }} ... on Event {{ {EVENT_FIELDS} }} }} }} }} }}"), json!({})), 200, Some("QUERY_TOO_COMPLEX")),
        case("16 aliases", gql(None, aliases(16), json!({})), 200, Some("TOO_MANY_ALIASES")),
        case("alias bomb: 5,000 aliases", gql(None, aliases(5_000), json!({})), 200, Some("DOCUMENT_TOO_LARGE")),
        case("1,500 aliases under the size limit", gql(None, aliases(1_500), json!({})), 200, Some("TOO_MANY_ALIASES")),
        case("51 directives", gql(None, format!("{{ {} }}", "__typename @include(if: true) ".repeat(51)), json!({})), 200, Some("TOO_MANY_DIRECTIVES")),
        case("document over 32 KiB", gql(None, format!("{{ __typename }} #{}", "x".repeat(40_000)), json!({})), 200, Some("DOCUMENT_TOO_LARGE")),
        case("fragment cycle", gql(None, "{ events { ...A } } fragment A on EventConnection { ...B } fragment B on EventConnection { ...A }", json!({})), 200, Some("QUERY_TOO_DEEP")),
        case("unknown field", gql(None, "{ events { edges { node { passwordHash } } } }", json!({})), 200, Some("GRAPHQL_VALIDATION_FAILED")),
        case("batch of 11", Send::Json(Value::Array(vec![json!({ "query": "{ __typename }" }); 11])), 400, Some("BATCH_TOO_LARGE")),
        // Huge, malformed and wrongly typed input.
        case("1 MiB search string", gql(None, EVENTS, json!({ "s": "a".repeat(1_100_000) })), 413, Some("PAYLOAD_TOO_LARGE")),
        case("100 KB search string", gql(None, EVENTS, json!({ "s": "a".repeat(100_000) })), 200, Some("BAD_USER_INPUT")),
        case("100 KB title", gql(u(&organizer).as_deref(), CREATE, json!({ "input": with(event_input("x", 5), "title", json!("t".repeat(100_000))) })), 200, Some("BAD_USER_INPUT")),
        case("2 MiB body", Send::Raw("application/json", format!("{{\"query\": \"{{ __typename }}\", \"x\": \"{}\"}}", "a".repeat(2 << 20)).into_bytes()), 413, Some("PAYLOAD_TOO_LARGE")),
        case("invalid UTF-8", Send::Raw("application/json", b"{\"query\": \"{ me { id } }\xff\xfe\"}".to_vec()), 400, Some("BAD_REQUEST")),
        case("lone UTF-16 surrogate", Send::Raw("application/json", br#"{"query": "{ events { edges { cursor } } }", "variables": {"s": "\ud800"}}"#.to_vec()), 400, Some("BAD_REQUEST")),
        case("malformed JSON", Send::Raw("application/json", b"{\"query\": ".to_vec()), 400, Some("BAD_REQUEST")),
        case("JSON nested 10,000 deep", Send::Raw("application/json", format!("{{\"query\": \"{{ __typename }}\", \"variables\": {{\"v\": {}{}}}}}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes()), 400, Some("BAD_REQUEST")),
        case("number beyond f64", Send::Raw("application/json", br#"{"query": "query($f: Int) { events(first: $f) { edges { cursor } } }", "variables": {"f": 1e400}}"#.to_vec()), 400, Some("BAD_REQUEST")),
        case("query is not a string", Send::Json(json!({ "query": 5 })), 400, Some("BAD_REQUEST")),
        case("variables are not an object", Send::Json(json!({ "query": "{ __typename }", "variables": [1, 2] })), 400, Some("BAD_REQUEST")),
        case("empty body", Send::Raw("application/json", Vec::new()), 400, Some("BAD_REQUEST")),
        case("NUL byte", Send::Raw("application/json", b"\0".to_vec()), 400, Some("BAD_REQUEST")),
        case("negative quantity", gql(u(&bob).as_deref(), BOOK, book(json!({ "eventId": event_id, "quantity": -1 }))), 200, Some("BAD_USER_INPUT")),
        case("zero quantity", gql(u(&bob).as_deref(), BOOK, book(json!({ "eventId": event_id, "quantity": 0 }))), 200, Some("BAD_USER_INPUT")),
        case("quantity i32::MAX", gql(u(&bob).as_deref(), BOOK, book(json!({ "eventId": event_id, "quantity": i32::MAX }))), 200, Some("BAD_USER_INPUT")),
        case("quantity beyond i32", gql(u(&bob).as_deref(), BOOK, book(json!({ "eventId": event_id, "quantity": 1_u64 << 40 }))), 200, Some("BAD_USER_INPUT")),
        case("quantity as a float", gql(u(&bob).as_deref(), BOOK, book(json!({ "eventId": event_id, "quantity": 2.5 }))), 200, Some("BAD_USER_INPUT")),
        case("unknown enum value in variables", gql(u(&admin).as_deref(), SET_ROLE, json!({ "id": bob.id, "role": "SUPERADMIN" })), 200, Some("BAD_USER_INPUT")),
        case("unknown enum value inline", gql(None, "{ events(filter: { status: DELETED }) { edges { cursor } } }", json!({})), 200, Some("BAD_USER_INPUT")),
        case("lower-case enum value", gql(u(&admin).as_deref(), SET_ROLE, json!({ "id": bob.id, "role": "admin" })), 200, Some("BAD_USER_INPUT")),
        case("id that is not a UUID", gql(u(&bob).as_deref(), BOOK, book(json!({ "eventId": "42" }))), 200, Some("BAD_USER_INPUT")),
        case("SQL in an id", gql(u(&bob).as_deref(), CANCEL, json!({ "id": "' OR 1=1 --" })), 200, Some("BAD_USER_INPUT")),
        case("SQL in a search is only text", gql(None, EVENTS, json!({ "s": "%' OR '1'='1'; DROP TABLE events; --" })), 200, ok),
        case("forged cursor", gql(None, EVENTS, json!({ "a": "Zm9yZ2Vk" })), 200, Some("BAD_USER_INPUT")),
        case("first beyond 100", gql(None, EVENTS, json!({ "f": 101 })), 200, Some("BAD_USER_INPUT")),
        case("negative capacity", gql(u(&organizer).as_deref(), CREATE, json!({ "input": with(event_input("x", 5), "capacity", json!(-5)) })), 200, Some("BAD_USER_INPUT")),
        case("idempotency key of 201 bytes", gql(u(&bob).as_deref(), BOOK, book(json!({ "eventId": event_id, "idempotencyKey": "k".repeat(201) }))), 200, Some("BAD_USER_INPUT")),
        case("register with a NUL in the email", gql(None, REGISTER, register("a\u{0}@x.co", "long-enough", "A")), 200, Some("BAD_USER_INPUT")),
        case("register with a 7-character password", gql(None, REGISTER, register("a@x.co", "1234567", "A")), 200, Some("BAD_USER_INPUT")),
        case("register with a 129-character password", gql(None, REGISTER, register("a@x.co", &"p".repeat(129), "A")), 200, Some("BAD_USER_INPUT")),
        case("register an existing email", gql(None, REGISTER, json!({ "input": { "email": "taken@x.co", "password": "long-enough", "name": "A" } })), 200, Some("CONFLICT")),
        case("login with a 10 KB password", gql(None, LOGIN, json!({ "input": { "email": "a@x.co", "password": "p".repeat(10_000) } })), 200, Some("UNAUTHENTICATED")),
        case("login with an unknown email", gql(None, LOGIN, json!({ "input": { "email": "nobody@x.co", "password": "long-enough" } })), 200, Some("UNAUTHENTICATED")),
        case("refresh with garbage", gql(None, REFRESH, json!({ "t": "garbage" })), 200, Some("UNAUTHENTICATED")),
        case("refresh with an access token", gql(None, REFRESH, json!({ "t": alice.token })), 200, Some("UNAUTHENTICATED")),
        // Persisted queries.
        case("unknown persisted query", Send::Json(persisted(&"0".repeat(64), 1)), 200, Some("PERSISTED_QUERY_NOT_FOUND")),
        case("persisted query hash that is not hex", Send::Json(persisted("not-a-hash", 1)), 200, Some("BAD_REQUEST")),
        case("persisted query version 2", Send::Json(persisted(&"0".repeat(64), 2)), 200, Some("PERSISTED_QUERY_NOT_SUPPORTED")),
        case("persisted query hash of another query", Send::Json(with(persisted(&"0".repeat(64), 1), "query", json!("{ __typename }"))), 200, Some("BAD_REQUEST")),
    ];
    assert!(cases.len() >= 60, "{} cases", cases.len());

    let mut failures = Vec::new();
    for case in &cases {
        let (status, body) = send(&app, &case.send).await;
        let code = body["errors"][0]["extensions"]["code"].as_str();
        let text = body.to_string();
        let leaks = [
            "panicked",
            "diesel",
            "SQL",
            "sqlx",
            "stack backtrace",
            "postgres",
        ]
        .iter()
        .any(|word| text.contains(word));
        if status >= 500 || status != case.status || code != case.code || leaks {
            let shown: String = text.chars().take(300).collect();
            failures.push(format!(
                "{}: expected {} {:?}, got {status} {code:?}: {shown}",
                case.name, case.status, case.code
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        app.fingerprint().await,
        before,
        "a hostile request changed the database"
    );
    let healthy = app.gql_ok(Some(&alice.token), ME, json!({})).await;
    assert_eq!(healthy["me"]["role"], "USER");
}

#[tokio::test]
async fn a_brute_force_login_is_cut_off_and_changes_nothing() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limits.login = evently::config::RateLimit::per(5, 60);
    })
    .await;
    app.gql_ok(
        None,
        REGISTER,
        json!({ "input": { "email": "target@x.co", "password": "the-real-password", "name": "T" } }),
    )
    .await;
    let before = app.fingerprint().await;
    let mut codes = Vec::new();
    for n in 0..20 {
        let input =
            json!({ "input": { "email": "target@x.co", "password": format!("guess-{n:04}") } });
        let body = app.gql(None, LOGIN, input).await;
        codes.push(crate::support::error_code(&body).to_owned());
    }
    let expected: Vec<_> = (0..20)
        .map(|n| {
            if n < 5 {
                "UNAUTHENTICATED"
            } else {
                "RATE_LIMITED"
            }
        })
        .collect();
    assert_eq!(codes, expected);
    // Even the right password waits out the window: guessing it later gains nothing now.
    let right = json!({ "input": { "email": "target@x.co", "password": "the-real-password" } });
    let body = app.gql(None, LOGIN, right).await;
    assert_eq!(crate::support::error_code(&body), "RATE_LIMITED");
    assert_eq!(app.fingerprint().await, before);
}
