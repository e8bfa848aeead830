//! Signing in under pressure: logins that wait for a hashing slot without starving the pool.

use std::time::{Duration, Instant};

use evently::config::PasswordHashing;
use evently::db::models::Role;
use serde_json::{Value, json};

use crate::helpers::TestApp;

const LOGIN: &str = "mutation($input: LoginInput!) { login(input: $input) { accessToken } }";
const REGISTER: &str =
    "mutation($input: RegisterInput!) { register(input: $input) { accessToken } }";
const ME: &str = "{ me { id } }";

fn login(email: &str, password: &str) -> Value {
    json!({ "input": { "email": email, "password": password } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_queued_for_a_hashing_slot_leave_the_pool_to_other_requests() {
    // A pool of 4 and one hash at a time, with a realistic argon2 cost: 48 logins queue for
    // several seconds in all. A login must not hold a connection while it queues.
    let app = TestApp::spawn_with(|c| {
        c.database_pool_size = 4;
        c.password_hashing = PasswordHashing {
            max_concurrent: 1,
            ..PasswordHashing::default()
        };
    })
    .await;
    let reader = app.user(Role::User).await;
    let register =
        json!({ "input": { "email": "crowd@x.co", "password": "the-real-password", "name": "C" } });
    app.gql_ok(None, REGISTER, register).await;
    let sessions_before = app.count("sessions").await;

    let logins = tokio::spawn({
        let client = app.client.clone();
        let url = format!("{}/graphql", app.base_url);
        async move {
            let attempts = (0..48).map(|_| {
                let request = client.post(&url).json(
                    &json!({ "query": LOGIN, "variables": login("crowd@x.co", "the-real-password") }),
                );
                async move { request.send().await?.json::<Value>().await }
            });
            futures_util::future::join_all(attempts).await
        }
    });
    // Signed-in reads while the logins are in flight; each needs a pooled connection.
    let mut reads = Vec::new();
    while !logins.is_finished() {
        let started = Instant::now();
        let body = app.gql(Some(&reader.token), ME, json!({})).await;
        reads.push(started.elapsed());
        assert_eq!(
            body["data"]["me"]["id"],
            json!(reader.id),
            "a read during the login flood failed after {:?}: {body}",
            started.elapsed()
        );
    }
    for body in logins.await.unwrap() {
        let body = body.expect("login answered");
        assert!(body["data"]["login"]["accessToken"].is_string(), "{body}");
    }
    assert_eq!(app.count("sessions").await, sessions_before + 48);
    // Typically a few milliseconds; the bound is generous because the CPU is shared. Holding
    // connections in the hashing queue makes a read wait for the whole queue (seconds).
    let slowest = reads.iter().max().copied().unwrap_or_default();
    assert!(
        reads.len() >= 2 && slowest < Duration::from_secs(1),
        "{} reads during the logins, the slowest took {slowest:?}: {reads:?}",
        reads.len()
    );
}
