//! Each guarded operation tried by callers who may not perform it; nothing changes.

use evently::db::models::Role;
use serde_json::{Value, json};

use crate::helpers::{BOOK, CANCEL, TestApp, error_code, event_input};

const UPDATE: &str =
    "mutation($id: ID!) { updateEvent(id: $id, input: { title: \"Hijacked\" }) { title } }";
const CANCEL_EVENT: &str = "mutation($id: ID!) { cancelEvent(id: $id) { status } }";
const EVENT_BOOKINGS: &str =
    "query($id: ID!) { eventBookings(eventId: $id) { edges { node { id } } } }";
const CREATE: &str = "mutation($input: CreateEventInput!) { createEvent(input: $input) { id } }";
const SET_ROLE: &str =
    "mutation($id: ID!, $role: Role!) { setUserRole(userId: $id, role: $role) { role } }";

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
    let booked = app
        .gql_ok(
            Some(&alice.token),
            BOOK,
            json!({ "input": { "eventId": event_id } }),
        )
        .await;
    let booking_id = booked["bookSeats"]["id"].as_str().unwrap().to_owned();

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
