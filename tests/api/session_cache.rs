//! Signed-in sessions are cached per instance (`domain::session_cache`), yet a logout, a
//! revocation or a role change answered by one instance holds on every other at once, with
//! Redis up or down: each instance caches only under a lease on PostgreSQL's session epoch,
//! and the change waits the lease out before it answers.

use evently::db::models::Role;
use serde_json::json;

use crate::support::{FaultProxy, TestApp, TestUser, error_code, redis_url};

const ME: &str = "query { me { id role } }";

/// Signs `user` in on `instance` a few times, so its session is in that instance's cache.
async fn warm(instance: &TestApp, user: &TestUser) {
    for _ in 0..3 {
        let data = instance.gql_ok(Some(&user.token), ME, json!({})).await;
        assert_eq!(data["me"]["id"], user.id.to_string());
    }
}

/// Logs each of several users out on `a` and checks that `b`, whose cache held their
/// sessions, refuses their tokens in the very next request.
async fn logouts_hold_across(a: &TestApp, b: &TestApp, users: &[TestUser]) {
    for user in users {
        warm(b, user).await;
    }
    for user in users {
        let data = a
            .gql_ok(Some(&user.token), "mutation { logout }", json!({}))
            .await;
        assert_eq!(data["logout"], true);
        let answer = b.gql(Some(&user.token), ME, json!({})).await;
        assert_eq!(
            error_code(&answer),
            "UNAUTHENTICATED",
            "the other instance still served a logged-out session: {answer}"
        );
    }
}

#[tokio::test]
async fn a_logout_on_one_instance_is_refused_by_another_at_once() {
    let a = TestApp::spawn().await;
    let b = a.spawn_peer().await;
    let mut users = Vec::new();
    for _ in 0..4 {
        users.push(a.user(Role::User).await);
    }
    logouts_hold_across(&a, &b, &users).await;
}

#[tokio::test]
async fn a_logout_holds_on_every_instance_with_redis_down() {
    let (redis, url) = FaultProxy::in_front_of(&redis_url()).await;
    let a = TestApp::spawn_on_redis(&url, |_| {}).await;
    let b = a.spawn_peer().await;
    let mut users = Vec::new();
    for _ in 0..4 {
        users.push(a.user(Role::User).await);
    }
    for user in &users {
        warm(&b, user).await;
    }
    redis.refuse(true);
    redis.cut_all();
    logouts_hold_across(&a, &b, &users).await;
}

#[tokio::test]
async fn a_role_change_and_a_revocation_on_one_instance_hold_on_another_at_once() {
    let a = TestApp::spawn().await;
    let b = a.spawn_peer().await;
    let admin = a.user(Role::Admin).await;
    let organizer = a.user(Role::Organizer).await;
    warm(&b, &organizer).await;

    let demote = "mutation($id: ID!) { setUserRole(userId: $id, role: USER) { role } }";
    let data = a
        .gql_ok(Some(&admin.token), demote, json!({ "id": organizer.id }))
        .await;
    assert_eq!(data["setUserRole"]["role"], "USER");
    let data = b.gql_ok(Some(&organizer.token), ME, json!({})).await;
    assert_eq!(
        data["me"]["role"], "USER",
        "the other instance kept the old role"
    );

    warm(&b, &organizer).await;
    let revoke = "mutation($id: ID!) { revokeUserSessions(userId: $id) }";
    let data = a
        .gql_ok(Some(&admin.token), revoke, json!({ "id": organizer.id }))
        .await;
    assert_eq!(data["revokeUserSessions"], 1);
    let answer = b.gql(Some(&organizer.token), ME, json!({})).await;
    assert_eq!(error_code(&answer), "UNAUTHENTICATED", "{answer}");
}
