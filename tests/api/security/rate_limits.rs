//! Rate limits: per address, per account and per user, shared through Redis and per instance
//! without it, counted the same over HTTP and WebSockets, and costing the same whether or not
//! the account exists.

use super::*;

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
        "{}{{ratelimit:login:ip:127.0.0.1}}",
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
    let health = app.get("/healthz").await;
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
    let ready = app.get("/readyz").await;
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
    let mut socket = app.connect_ws(json!({})).await;
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
        let mut socket = app.connect_ws(json!({})).await;
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
    for _ in 0..7 {
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
    let (known, unknown) = (known[3].as_secs_f64(), unknown[3].as_secs_f64());
    // Skipping the hash for unknown emails would make them tens of times faster (a ratio under
    // 0.1); the band is wide because a loaded 2-core machine makes single hashes vary twofold.
    let ratio = unknown / known;
    assert!(
        (0.25..4.0).contains(&ratio),
        "median {unknown:.4} s for an unknown email, {known:.4} s for a wrong password"
    );
}

#[tokio::test]
async fn websocket_operations_count_against_the_users_request_budget() {
    let app = TestApp::spawn_with(|c| c.rate_limits.requests = RateLimit::per(3, 60)).await;
    let user = app.user(Role::User).await;
    let init = json!({ "Authorization": format!("Bearer {}", user.token) });
    let mut socket = app.connect_ws(init).await;
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
    let mut socket = app.connect_ws(json!({})).await;
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
