//! Signing keys and sessions: tokens of a previous key until it is retired, and revoking a
//! user's sessions on every instance.

use super::*;

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
    let mut socket = second.connect_ws(init).await;

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
    let errors = operation_errors(&refused);
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
