//! Each guarded operation tried by every kind of caller, over HTTP and over WebSocket: those
//! who may not perform it get the exact code and change nothing.

use evently::db::models::Role;
use serde_json::{Value, json};

use crate::support::WsClient;
use crate::support::operations::{
    CANCEL_EVENT, CREATE_EVENT as CREATE, EVENT_BOOKINGS, SET_ROLE, UPDATE_EVENT_TITLE as UPDATE,
};
use crate::support::{BOOK, BookingId, CANCEL, EventId, TestApp, error_code, event_input};

async fn code(app: &TestApp, token: Option<&str>, query: &str, variables: Value) -> String {
    error_code(&app.gql(token, query, variables).await).to_owned()
}

#[tokio::test]
async fn users_and_other_organizers_cannot_manage_an_event() {
    let app = TestApp::spawn_without_redis().await;
    let owner = app.user(Role::Organizer).await;
    let rival = app.user(Role::Organizer).await;
    let user = app.user(Role::User).await;
    let admin = app.user(Role::Admin).await;
    let event_id = app.event(&owner, 20).await;
    let id = json!({ "id": event_id });

    assert_eq!(
        code(&app, None, CREATE, json!({ "input": event_input("x", 1) })).await,
        "UNAUTHENTICATED"
    );
    assert_eq!(
        code(
            &app,
            Some(&user.token),
            CREATE,
            json!({ "input": event_input("x", 1) })
        )
        .await,
        "FORBIDDEN"
    );
    for token in [None, Some(user.token.as_str()), Some(rival.token.as_str())] {
        let expected = if token.is_none() {
            "UNAUTHENTICATED"
        } else {
            "FORBIDDEN"
        };
        assert_eq!(code(&app, token, UPDATE, id.clone()).await, expected);
        assert_eq!(code(&app, token, CANCEL_EVENT, id.clone()).await, expected);
        assert_eq!(
            code(&app, token, EVENT_BOOKINGS, id.clone()).await,
            expected
        );
    }
    assert_eq!(
        app.count("events WHERE title = 'Test Event' AND status = 'PUBLISHED' AND version = 1")
            .await,
        1
    );

    // The owner and an admin may.
    let owned = app
        .gql_ok(Some(&owner.token), EVENT_BOOKINGS, id.clone())
        .await;
    assert_eq!(owned["eventBookings"]["edges"], json!([]));
    let updated = app.gql_ok(Some(&admin.token), UPDATE, id.clone()).await;
    assert_eq!(updated["updateEvent"]["title"], "Hijacked");
    assert_eq!(
        app.gql_ok(Some(&owner.token), CANCEL_EVENT, id).await["cancelEvent"]["status"],
        "CANCELLED"
    );
}

#[tokio::test]
async fn users_see_and_cancel_only_their_own_bookings() {
    let app = TestApp::spawn_without_redis().await;
    let organizer = app.user(Role::Organizer).await;
    let alice = app.user(Role::User).await;
    let bob = app.user(Role::User).await;
    let admin = app.user(Role::Admin).await;
    let event_id = app.event(&organizer, 20).await;
    let booking_id = app.book(&alice, &event_id, 1).await;

    let bobs = app
        .gql_ok(
            Some(&bob.token),
            "{ myBookings { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(bobs["myBookings"]["edges"], json!([]));
    assert_eq!(
        code(
            &app,
            None,
            "{ myBookings { edges { node { id } } } }",
            json!({})
        )
        .await,
        "UNAUTHENTICATED"
    );
    assert_eq!(
        code(&app, Some(&bob.token), CANCEL, json!({ "id": booking_id })).await,
        "FORBIDDEN"
    );
    assert_eq!(
        code(
            &app,
            Some(&bob.token),
            EVENT_BOOKINGS,
            json!({ "id": event_id })
        )
        .await,
        "FORBIDDEN"
    );
    assert_eq!(app.count("bookings WHERE status = 'CONFIRMED'").await, 1);

    // The event's organizer sees the booking; an admin may cancel it.
    let listed = app
        .gql_ok(
            Some(&organizer.token),
            EVENT_BOOKINGS,
            json!({ "id": event_id }),
        )
        .await;
    assert_eq!(
        listed["eventBookings"]["edges"][0]["node"]["id"],
        booking_id.as_str()
    );
    let cancelled = app
        .gql_ok(Some(&admin.token), CANCEL, json!({ "id": booking_id }))
        .await;
    assert_eq!(cancelled["cancelBooking"]["status"], "CANCELLED");
    app.assert_invariant().await;
}

#[tokio::test]
async fn only_admins_change_roles_and_changes_apply_at_once() {
    let app = TestApp::spawn_without_redis().await;
    let user = app.user(Role::User).await;
    let organizer = app.user(Role::Organizer).await;
    let admin = app.user(Role::Admin).await;
    let promote = json!({ "id": user.id, "role": "ORGANIZER" });
    assert_eq!(
        code(&app, Some(&user.token), SET_ROLE, promote.clone()).await,
        "FORBIDDEN"
    );
    assert_eq!(
        code(
            &app,
            Some(&organizer.token),
            SET_ROLE,
            json!({ "id": organizer.id, "role": "ADMIN" })
        )
        .await,
        "FORBIDDEN"
    );
    assert_eq!(app.count("users WHERE role = 'ADMIN'").await, 1);

    let promoted = app.gql_ok(Some(&admin.token), SET_ROLE, promote).await;
    assert_eq!(promoted["setUserRole"]["role"], "ORGANIZER");
    // The user's existing token now carries the new role: authorization reads the stored role.
    app.gql_ok(
        Some(&user.token),
        CREATE,
        json!({ "input": event_input("Mine", 5) }),
    )
    .await;
    let missing = json!({ "id": uuid::Uuid::new_v4(), "role": "ADMIN" });
    assert_eq!(
        code(&app, Some(&admin.token), SET_ROLE, missing).await,
        "NOT_FOUND"
    );
}

/// The callers of the role matrix, in order: anonymous, the USER who owns the booking,
/// another USER, the ORGANIZER who owns the event, another ORGANIZER, an ADMIN.
const CALLERS: [&str; 6] = [
    "anonymous",
    "user",
    "other user",
    "organizer",
    "other organizer",
    "admin",
];

struct World {
    /// Tokens in `CALLERS` order (`None` for anonymous).
    tokens: [Option<String>; 6],
    alice: uuid::Uuid,
    bob: uuid::Uuid,
    event_id: EventId,
    booking_id: BookingId,
}

async fn world(app: &TestApp) -> World {
    let alice = app.user(Role::User).await;
    let bob = app.user(Role::User).await;
    let organizer = app.user(Role::Organizer).await;
    let rival = app.user(Role::Organizer).await;
    let admin = app.user(Role::Admin).await;
    let event_id = app.event(&organizer, 50).await;
    let booked = app
        .gql_ok(
            Some(&alice.token),
            BOOK,
            json!({ "input": { "eventId": event_id } }),
        )
        .await;
    World {
        tokens: [
            None,
            Some(alice.token),
            Some(bob.token),
            Some(organizer.token),
            Some(rival.token),
            Some(admin.token),
        ],
        alice: alice.id,
        bob: bob.id,
        booking_id: BookingId(booked["bookSeats"]["id"].as_str().unwrap().to_owned()),
        event_id,
    }
}

/// One guarded operation: its document and variables in a world, and the outcome expected
/// for each caller ("OK" or an error code).
struct Guarded {
    name: &'static str,
    request: fn(&World) -> (&'static str, Value),
    expected: [&'static str; 6],
}

const UA: &str = "UNAUTHENTICATED";
const FB: &str = "FORBIDDEN";

fn guarded_operations() -> Vec<Guarded> {
    vec![
        Guarded {
            name: "me",
            request: |_| ("{ me { id } }", json!({})),
            expected: ["OK"; 6],
        },
        Guarded {
            name: "myBookings",
            request: |_| ("{ myBookings { edges { node { id } } } }", json!({})),
            expected: [UA, "OK", "OK", "OK", "OK", "OK"],
        },
        Guarded {
            name: "eventBookings",
            request: |w| (EVENT_BOOKINGS, json!({ "id": w.event_id })),
            expected: [UA, FB, FB, "OK", FB, "OK"],
        },
        Guarded {
            name: "bookSeats",
            request: |w| (BOOK, json!({ "input": { "eventId": w.event_id } })),
            expected: [UA, "OK", "OK", "OK", "OK", "OK"],
        },
        Guarded {
            name: "cancelBooking",
            request: |w| (CANCEL, json!({ "id": w.booking_id })),
            expected: [UA, "OK", FB, FB, FB, "OK"],
        },
        Guarded {
            name: "createEvent",
            request: |_| (CREATE, json!({ "input": event_input("Matrix", 5) })),
            expected: [UA, FB, FB, "OK", "OK", "OK"],
        },
        Guarded {
            name: "updateEvent",
            request: |w| (UPDATE, json!({ "id": w.event_id })),
            expected: [UA, FB, FB, "OK", FB, "OK"],
        },
        Guarded {
            name: "cancelEvent",
            request: |w| (CANCEL_EVENT, json!({ "id": w.event_id })),
            expected: [UA, FB, FB, "OK", FB, "OK"],
        },
        Guarded {
            name: "setUserRole",
            request: |w| (SET_ROLE, json!({ "id": w.bob, "role": "USER" })),
            expected: [UA, FB, FB, FB, FB, "OK"],
        },
        Guarded {
            name: "revokeUserSessions",
            request: |w| {
                (
                    "mutation($id: ID!) { revokeUserSessions(userId: $id) }",
                    json!({ "id": w.alice }),
                )
            },
            expected: [UA, FB, FB, FB, FB, "OK"],
        },
        Guarded {
            name: "logout",
            request: |_| ("mutation { logout }", json!({})),
            expected: [UA, "OK", "OK", "OK", "OK", "OK"],
        },
    ]
}

/// "OK", or the code of the first error.
fn outcome(body: &Value) -> String {
    match body["errors"][0]["extensions"]["code"].as_str() {
        Some(code) => code.to_owned(),
        None if body["data"].is_object() => "OK".to_owned(),
        None => format!("no data and no code: {body}"),
    }
}

/// Runs one operation over an open WebSocket and returns `{data, errors}` like HTTP would.
async fn over_websocket(client: &mut WsClient, id: &str, query: &str, variables: Value) -> Value {
    client.subscribe(id, query, variables).await;
    let message = client.next_message().await.unwrap();
    match message["type"].as_str() {
        Some("next") => {
            let complete = client.next_message().await.unwrap();
            assert_eq!(complete["type"], "complete", "{complete}");
            message["payload"].clone()
        }
        Some("error") => json!({ "errors": message["payload"] }),
        _ => panic!("unexpected message {message}"),
    }
}

async fn connect(app: &TestApp, token: Option<&str>) -> WsClient {
    let init = match token {
        Some(token) => json!({ "Authorization": format!("Bearer {token}") }),
        None => json!({}),
    };
    app.connect_ws(init).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_guarded_operation_for_every_role_over_http_and_websocket() {
    let app = TestApp::spawn_without_redis().await;
    let mut mismatches = Vec::new();
    for op in guarded_operations() {
        for transport in ["http", "websocket"] {
            // A fresh world per operation and transport, so one caller's success (a cancelled
            // event, revoked sessions) cannot change what the next caller meets.
            let world = world(&app).await;
            let (query, variables) = (op.request)(&world);
            for (index, token) in world.tokens.iter().enumerate() {
                let body = if transport == "http" {
                    app.gql(token.as_deref(), query, variables.clone()).await
                } else {
                    let mut client = connect(&app, token.as_deref()).await;
                    over_websocket(&mut client, "1", query, variables.clone()).await
                };
                let got = outcome(&body);
                if got != op.expected[index] {
                    mismatches.push(format!(
                        "{} as {} over {transport}: expected {}, got {got}",
                        op.name, CALLERS[index], op.expected[index]
                    ));
                }
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    app.assert_invariant().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emails_are_shown_only_to_their_owner_and_admins() {
    let app = TestApp::spawn_without_redis().await;
    let world = world(&app).await;
    let email_of = |data: Value| data["me"]["email"].as_str().unwrap().to_owned();
    let me = "{ me { email } }";
    let organizer_email = email_of(app.gql_ok(world.tokens[3].as_deref(), me, json!({})).await);
    let alice_email = email_of(app.gql_ok(world.tokens[1].as_deref(), me, json!({})).await);
    let organizer_of = "query($id: ID!) { event(id: $id) { organizer { name email } } }";
    let expected = [
        Value::Null,
        Value::Null,
        Value::Null,
        json!(organizer_email),
        Value::Null,
        json!(organizer_email),
    ];
    for transport in ["http", "websocket"] {
        for (index, token) in world.tokens.iter().enumerate() {
            let variables = json!({ "id": world.event_id });
            let body = if transport == "http" {
                app.gql(token.as_deref(), organizer_of, variables).await
            } else {
                let mut client = connect(&app, token.as_deref()).await;
                over_websocket(&mut client, "1", organizer_of, variables).await
            };
            assert!(body.get("errors").is_none(), "{body}");
            let organizer = &body["data"]["event"]["organizer"];
            assert_eq!(organizer["name"], "Test User");
            assert_eq!(
                organizer["email"], expected[index],
                "{} over {transport}",
                CALLERS[index]
            );
        }
    }
    // The organizer sees who booked, but not their email; an admin sees both.
    let bookings =
        "query($id: ID!) { eventBookings(eventId: $id) { edges { node { user { id email } } } } }";
    let variables = json!({ "id": world.event_id });
    let seen_by_organizer = app
        .gql_ok(world.tokens[3].as_deref(), bookings, variables.clone())
        .await;
    let user = &seen_by_organizer["eventBookings"]["edges"][0]["node"]["user"];
    assert_eq!(
        (&user["id"], &user["email"]),
        (&json!(world.alice), &Value::Null)
    );
    let seen_by_admin = app
        .gql_ok(world.tokens[5].as_deref(), bookings, variables)
        .await;
    assert_eq!(
        seen_by_admin["eventBookings"]["edges"][0]["node"]["user"]["email"],
        json!(alice_email)
    );

    // A booking's idempotency key is its owner's (and admins') business too.
    let keyed = app
        .gql_ok(
            world.tokens[1].as_deref(),
            "mutation($input: BookSeatsInput!) { bookSeats(input: $input) { idempotencyKey } }",
            json!({ "input": { "eventId": world.event_id, "idempotencyKey": "alice-checkout-1" } }),
        )
        .await;
    assert_eq!(keyed["bookSeats"]["idempotencyKey"], "alice-checkout-1");
    let keys =
        "query($id: ID!) { eventBookings(eventId: $id) { edges { node { idempotencyKey } } } }";
    let variables = json!({ "id": world.event_id });
    let keys_of = |data: Value| {
        data["eventBookings"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|edge| edge["node"]["idempotencyKey"].clone())
            .collect::<Vec<_>>()
    };
    let organizer_sees = keys_of(
        app.gql_ok(world.tokens[3].as_deref(), keys, variables.clone())
            .await,
    );
    assert_eq!(organizer_sees, [Value::Null, Value::Null]);
    let admin_sees = keys_of(
        app.gql_ok(world.tokens[5].as_deref(), keys, variables)
            .await,
    );
    assert!(
        admin_sees.contains(&json!("alice-checkout-1")),
        "{admin_sees:?}"
    );
}
