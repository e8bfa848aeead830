//! Signing in under pressure: logins that wait for a hashing slot without starving the pool,
//! limits per account and per IPv6 /64 beside the per-address ones, and refresh-token retries.

use std::time::{Duration, Instant};

use evently::config::{Config, PasswordHashing, RateLimit};
use evently::db::models::Role;
use serde_json::{Value, json};

use crate::support::{TestApp, error_code};

const LOGIN: &str = "mutation($input: LoginInput!) { login(input: $input) { accessToken } }";
const REGISTER: &str =
    "mutation($input: RegisterInput!) { register(input: $input) { accessToken } }";
const REFRESH: &str =
    "mutation($token: String!) { refreshToken(refreshToken: $token) { accessToken refreshToken } }";
const ME: &str = "{ me { id } }";

fn login(email: &str, password: &str) -> Value {
    json!({ "input": { "email": email, "password": password } })
}

/// A login attempt arriving through the trusted proxy on 127.0.0.1 for `forwarded_for`.
async fn login_from(app: &TestApp, forwarded_for: &str, email: &str, password: &str) -> Value {
    app.client
        .post(format!("{}/graphql", app.base_url))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({ "query": LOGIN, "variables": login(email, password) }))
        .send()
        .await
        .expect("request reaches the server")
        .json()
        .await
        .expect("a JSON body")
}

fn behind_proxy(config: &mut Config) {
    config.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
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
    app.register("crowd@x.co", "the-real-password", "C").await;
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

#[tokio::test]
async fn an_attacker_rotating_addresses_is_refused_by_the_per_account_limit() {
    let app = TestApp::spawn_with(|c| {
        behind_proxy(c);
        c.rate_limits.login = RateLimit::per(2, 60);
        c.rate_limits.account = RateLimit::per(3, 60);
    })
    .await;
    // Every attempt from a new address, each spelling of the email the same account.
    let emails = ["victim@x.co", " Victim@X.co", "VICTIM@x.co ", "victim@x.co"];
    let mut codes = Vec::new();
    for (n, email) in emails.iter().enumerate() {
        let body = login_from(&app, &format!("203.0.113.{n}"), email, "guess-guess").await;
        codes.push(error_code(&body).to_owned());
    }
    assert_eq!(
        codes,
        [
            "UNAUTHENTICATED",
            "UNAUTHENTICATED",
            "UNAUTHENTICATED",
            "RATE_LIMITED"
        ]
    );
    // Another account is not affected, from an address used before or a new one.
    for forwarded in ["203.0.113.0", "203.0.113.99"] {
        let body = login_from(&app, forwarded, "other@x.co", "guess-guess").await;
        assert_eq!(error_code(&body), "UNAUTHENTICATED", "{forwarded}: {body}");
    }
    // Registration probes count against the account too.
    let input =
        json!({ "input": { "email": "VICTIM@x.co", "password": "long-enough", "name": "V" } });
    let body = app
        .client
        .post(format!("{}/graphql", app.base_url))
        .header("x-forwarded-for", "198.51.100.1")
        .json(&json!({ "query": REGISTER, "variables": input }))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(error_code(&body), "RATE_LIMITED", "{body}");
    assert_eq!(app.count("users").await, 0);
}

#[tokio::test]
async fn ipv6_addresses_in_one_64_share_a_bucket() {
    let app = TestApp::spawn_with(|c| {
        behind_proxy(c);
        c.rate_limits.login = RateLimit::per(2, 60);
    })
    .await;
    // Two attempts from one /64 (different accounts, so only the address limit counts).
    for (address, email) in [
        ("2001:db8:1:2::1", "a@x.co"),
        ("2001:db8:1:2:ffff::9", "b@x.co"),
    ] {
        let body = login_from(&app, address, email, "guess-guess").await;
        assert_eq!(error_code(&body), "UNAUTHENTICATED", "{address}: {body}");
    }
    let body = login_from(&app, "2001:db8:1:2:abcd::1", "c@x.co", "guess-guess").await;
    assert_eq!(error_code(&body), "RATE_LIMITED", "same /64: {body}");
    // The next /64 is another client; an IPv4-mapped address is its IPv4 address.
    let body = login_from(&app, "2001:db8:1:3::1", "d@x.co", "guess-guess").await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED", "next /64: {body}");
    for address in ["192.0.2.7", "::ffff:192.0.2.7"] {
        let body = login_from(&app, address, "e@x.co", "guess-guess").await;
        assert_eq!(error_code(&body), "UNAUTHENTICATED", "{address}: {body}");
    }
    let body = login_from(&app, "192.0.2.7", "f@x.co", "guess-guess").await;
    assert_eq!(error_code(&body), "RATE_LIMITED", "mapped IPv4: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_looks_and_takes_the_same_for_known_and_unknown_accounts() {
    // Production's argon2 cost, so checking a password would show in the timing.
    let app = TestApp::spawn_with(|c| {
        behind_proxy(c);
        c.password_hashing = PasswordHashing::default();
        c.rate_limits.account = RateLimit::per(2, 60);
    })
    .await;
    app.register("real@x.co", "the-real-password", "Real").await;

    let mut failed = Vec::new();
    let mut refusals: Vec<(Duration, Value)> = Vec::new();
    let mut address = 0;
    let mut attempt = async |email: &str| {
        address += 1;
        let started = Instant::now();
        let body = login_from(
            &app,
            &format!("203.0.113.{address}"),
            email,
            "wrong-password",
        )
        .await;
        (started.elapsed(), body)
    };
    let mut refusal_times = [Vec::new(), Vec::new()];
    for (account, email) in ["real@x.co", "nobody@x.co"].into_iter().enumerate() {
        // The account (registration counted once for real@x.co) uses up its two attempts...
        loop {
            let (took, body) = attempt(email).await;
            if error_code(&body) == "RATE_LIMITED" {
                refusal_times[account].push(took);
                refusals.push((took, body));
                break;
            }
            assert_eq!(error_code(&body), "UNAUTHENTICATED", "{body}");
            failed.push(took);
            assert!(failed.len() <= 4, "{email} was never refused");
        }
        // ...and is refused from then on, from any address.
        for _ in 0..4 {
            let (took, body) = attempt(email).await;
            refusal_times[account].push(took);
            refusals.push((took, body));
        }
    }
    // Every refusal says the same, apart from when to retry (in the message too).
    let shape = |body: &Value| {
        let mut body = body.clone();
        let retry = body["errors"][0]["extensions"]
            .as_object_mut()
            .and_then(|extensions| extensions.remove("retryAfter"))
            .and_then(|retry| retry.as_u64());
        let retry = retry.filter(|secs| (1..=60).contains(secs));
        let retry = retry.unwrap_or_else(|| panic!("no retryAfter of 1 to 60 s: {body}"));
        let message = &mut body["errors"][0]["message"];
        assert_eq!(*message, format!("too many requests: retry in {retry} s"));
        *message = json!("too many requests: retry in N s");
        body
    };
    let first = shape(&refusals[0].1);
    assert_eq!(error_code(&first), "RATE_LIMITED", "{first}");
    for (_, body) in &refusals {
        assert_eq!(shape(body), first);
    }
    // Neither kind of refusal looks the account up or checks a password: both are far
    // quicker than an attempt that hashes (medians; the CPU is shared).
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let hashing = median(&mut failed);
    let [known, unknown] = &mut refusal_times;
    let (known, unknown) = (median(known), median(unknown));
    assert!(
        known < hashing / 2 && unknown < hashing / 2,
        "refusals took {known:?} (known) and {unknown:?} (unknown); a hashed attempt {hashing:?}"
    );
}

/// Refreshes with `token`; the data or the error.
async fn refresh(app: &TestApp, token: &str) -> Value {
    app.gql(None, REFRESH, json!({ "token": token })).await
}

#[tokio::test]
async fn a_refresh_retried_within_the_grace_window_gets_the_same_refresh_token() {
    let app = TestApp::spawn().await;
    let user = app.user(Role::User).await;
    // The first answer is lost on its way to the client, which retries.
    let lost = refresh(&app, &user.refresh_token).await;
    let lost = &lost["data"]["refreshToken"];
    assert!(lost["refreshToken"].is_string(), "{lost}");
    let retried = refresh(&app, &user.refresh_token).await;
    assert!(
        retried.get("errors").is_none(),
        "the retry was refused: {retried}"
    );
    let retried = &retried["data"]["refreshToken"];
    assert_eq!(retried["refreshToken"], lost["refreshToken"]);
    // The session lives on: both access tokens work, and the one refresh token moves on.
    for access in [&lost["accessToken"], &retried["accessToken"]] {
        let me = app.gql_ok(access.as_str(), ME, json!({})).await;
        assert_eq!(me["me"]["id"], json!(user.id));
    }
    let next = refresh(&app, retried["refreshToken"].as_str().unwrap()).await;
    assert!(next.get("errors").is_none(), "{next}");
    assert_eq!(app.count("sessions WHERE revoked_at IS NULL").await, 1);
}

#[tokio::test]
async fn reusing_a_refresh_token_after_the_grace_window_or_its_successor_revokes_the_session() {
    let app = TestApp::spawn().await;

    // Presented again after the window: revoked.
    let user = app.user(Role::User).await;
    let first = refresh(&app, &user.refresh_token).await["data"]["refreshToken"].clone();
    let moved = diesel_async::RunQueryDsl::execute(
        diesel::sql_query(
            "UPDATE refresh_tokens SET used_at = used_at - interval '1 hour' WHERE used_at IS NOT NULL",
        ),
        &mut app.db().await,
    )
    .await
    .unwrap();
    assert_eq!(moved, 1);
    let reused = refresh(&app, &user.refresh_token).await;
    assert_eq!(error_code(&reused), "UNAUTHENTICATED", "{reused}");
    let me = app.gql(first["accessToken"].as_str(), ME, json!({})).await;
    assert_eq!(error_code(&me), "UNAUTHENTICATED", "{me}");
    let next = refresh(&app, first["refreshToken"].as_str().unwrap()).await;
    assert_eq!(error_code(&next), "UNAUTHENTICATED", "{next}");

    // Within the window, once its successor was used the old token is a copy: revoked.
    let other = app.user(Role::User).await;
    let first = refresh(&app, &other.refresh_token).await["data"]["refreshToken"].clone();
    let second = refresh(&app, first["refreshToken"].as_str().unwrap()).await;
    let second = second["data"]["refreshToken"].clone();
    assert!(second["accessToken"].is_string(), "{second}");
    let reused = refresh(&app, &other.refresh_token).await;
    assert_eq!(error_code(&reused), "UNAUTHENTICATED", "{reused}");
    let me = app.gql(second["accessToken"].as_str(), ME, json!({})).await;
    assert_eq!(error_code(&me), "UNAUTHENTICATED", "{me}");
    assert_eq!(app.count("sessions WHERE revoked_at IS NULL").await, 0);
}
