//! `/metrics`: what an operator's Prometheus sees. The in-process tests read the exposition of
//! the test process, whose recorder every test's server shares, so they check for series, not
//! values. The real-Prometheus test runs the `evently` binary in a process of its own, where the
//! counts are exactly what the test caused, and lets a real Prometheus scrape it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use evently::app::App;
use evently::db::models::Role;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use crate::logs::evently_process;
use crate::support::app::{signed_in_user, test_config};
use crate::support::operations::CREATE_EVENT;
use crate::support::{BOOK, TestApp, error_code, eventually, fresh_database};

/// A cold Prometheus on a busy two-core machine: start-up, a first scrape, a query.
const PROMETHEUS_WAIT: Duration = Duration::from_secs(60);

async fn exposition(base_url: &str) -> String {
    let response = reqwest::get(format!("{base_url}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

#[tokio::test]
async fn requests_are_counted_by_matched_route_and_operations_by_root_field_and_code() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = app.event(&organizer, 1).await;
    app.book(&buyer, &event, 1).await;
    let refused = app.try_book(&buyer, &event, 1).await;
    assert_eq!(error_code(&refused), "SOLD_OUT");
    // A client's own names and paths never become labels.
    app.gql(None, "query Probe1f3a { __typename }", json!({}))
        .await;
    assert_eq!(app.get("/no-such-page-7c2e").await.status(), 404);

    let text = exposition(&app.base_url).await;
    for series in [
        r#"evently_http_requests_total{method="POST",route="/graphql",status="200"}"#,
        r#"evently_http_requests_total{method="GET",route="unmatched",status="404"}"#,
        r#"evently_graphql_operations_total{type="mutation",field="bookSeats",code="ok"}"#,
        r#"evently_graphql_operations_total{type="mutation",field="bookSeats",code="SOLD_OUT"}"#,
        r#"evently_graphql_operations_total{type="query",field="__typename",code="ok"}"#,
        r#"evently_graphql_operation_duration_seconds_bucket{type="mutation",field="bookSeats",le="#,
        r#"evently_http_request_duration_seconds_bucket{method="POST",route="/graphql",le="#,
        r#"evently_bookings_refused_total{code="SOLD_OUT"}"#,
        "evently_bookings_confirmed_total ",
        "evently_group_commit_batch_size_bucket",
        r#"evently_db_pool_connections{state="in_use"}"#,
    ] {
        assert!(text.contains(series), "no {series} in:\n{text}");
    }
    assert!(
        !text.contains("Probe1f3a") && !text.contains("7c2e"),
        "{text}"
    );
}

#[tokio::test]
async fn an_invalid_document_is_counted_as_other_with_its_code() {
    let app = TestApp::spawn().await;
    let body = app.gql(None, "{ noSuchField9d41 }", json!({})).await;
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED");
    let text = exposition(&app.base_url).await;
    let series = r#"evently_graphql_operations_total{type="unknown",field="other",code="GRAPHQL_VALIDATION_FAILED"}"#;
    assert!(text.contains(series), "no {series} in:\n{text}");
    assert!(!text.contains("noSuchField9d41"), "{text}");
}

#[tokio::test]
async fn rate_limit_refusals_are_counted_by_bucket() {
    let app = TestApp::spawn_with(|config| {
        config.rate_limits.booking = evently::config::RateLimit::per(1, 60);
    })
    .await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = app.event(&organizer, 10).await;
    app.book(&buyer, &event, 1).await;
    let refused = app.try_book(&buyer, &event, 1).await;
    assert_eq!(error_code(&refused), "RATE_LIMITED");
    let text = exposition(&app.base_url).await;
    for series in [
        r#"evently_rate_limit_refusals_total{bucket="booking"}"#,
        r#"evently_bookings_refused_total{code="RATE_LIMITED"}"#,
    ] {
        assert!(text.contains(series), "no {series} in:\n{text}");
    }
}

#[tokio::test]
async fn sweeper_rounds_are_counted() {
    let app = TestApp::spawn_with(|config| {
        config.sweep_interval = Duration::from_millis(50);
    })
    .await;
    eventually(crate::support::WAIT, || async {
        exposition(&app.base_url)
            .await
            .contains(r#"evently_sweeper_runs_total{outcome="ok"}"#)
    })
    .await;
}

/// The gauge of one process's connections, from its exposition.
fn live_connections(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix("evently_live_connections "))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test]
async fn open_websockets_are_a_gauge() {
    let app = TestApp::spawn().await;
    let _socket = app.connect_ws(json!({})).await;
    let open = eventually(crate::support::WAIT, || async {
        live_connections(&exposition(&app.base_url).await).filter(|open| *open >= 1.0)
    })
    .await;
    assert!(open >= 1.0);
}

/// Where Debian's `prometheus` package puts its binaries, if it is installed.
fn prometheus_binaries() -> Option<(PathBuf, PathBuf)> {
    let dir = std::env::var_os("PROMETHEUS_BIN_DIR")
        .map_or_else(|| PathBuf::from("/usr/bin"), PathBuf::from);
    let (server, tool) = (dir.join("prometheus"), dir.join("promtool"));
    (server.is_file() && tool.is_file()).then_some((server, tool))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn prometheus_process(binary: &Path, dir: &Path, target: &str, port: u16) -> Child {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: evently\n    scrape_interval: 1s\n    \
             static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(if std::env::var("TEST_LOG").is_ok() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus starts")
}

async fn gql(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    query: &str,
    variables: Value,
) -> Value {
    client
        .post(format!("{base}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_bookings_a_server_made() {
    let Some((prometheus, promtool)) = prometheus_binaries() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but Prometheus is not installed (scripts/test.sh installs it)"
        );
        eprintln!(
            "SKIPPED: Prometheus is not installed (apt-get install prometheus, or run scripts/test.sh)"
        );
        return;
    };
    let database = fresh_database().await;
    let (_server, base) = evently_process(&database.url, &[]).await;
    // Accounts are made through the library over the same database; the server knows the
    // tokens by the shared secret.
    let accounts = App::build(test_config(&database.url, None)).await.unwrap();
    let organizer = signed_in_user(&accounts, Role::Organizer).await;
    let client = reqwest::Client::new();
    let input = json!({ "input": crate::support::event_input("Scraped", 2) });
    let created = gql(&client, &base, &organizer.token, CREATE_EVENT, input).await;
    let event = created["data"]["createEvent"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();
    let mut codes = Vec::new();
    for _ in 0..3 {
        let buyer = signed_in_user(&accounts, Role::User).await;
        let booking = json!({ "input": { "eventId": event, "quantity": 1 } });
        let answer = gql(&client, &base, &buyer.token, BOOK, booking).await;
        codes.push(
            answer["errors"][0]["extensions"]["code"]
                .as_str()
                .unwrap_or("ok")
                .to_owned(),
        );
    }
    assert_eq!(codes, ["ok", "ok", "SOLD_OUT"]);

    // The exposition is valid as promtool reads it.
    let text = exposition(&base).await;
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .await
        .unwrap();
    let checked = check.wait_with_output().await.unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let dir = std::env::temp_dir().join(format!("evently-prometheus-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let _prometheus =
        prometheus_process(&prometheus, &dir, base.trim_start_matches("http://"), port);
    let api = format!("http://127.0.0.1:{port}/api/v1");
    eventually(PROMETHEUS_WAIT, || async {
        let targets: Value = client
            .get(format!("{api}/targets"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        match targets["data"]["activeTargets"][0]["health"].as_str() {
            Some("up") => Ok(()),
            _ => Err(format!("target not up: {targets}")),
        }
    })
    .await;
    for (query, expected) in [
        ("evently_bookings_confirmed_total", "2"),
        (r#"evently_bookings_refused_total{code="SOLD_OUT"}"#, "1"),
        (
            r#"sum(evently_graphql_operations_total{field="bookSeats"})"#,
            "3",
        ),
    ] {
        eventually(PROMETHEUS_WAIT, || async {
            let answer: Value = client
                .get(format!("{api}/query"))
                .query(&[("query", query)])
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            match answer["data"]["result"][0]["value"][1].as_str() {
                Some(value) if value == expected => Ok(()),
                _ => Err(format!("{query}: {answer}")),
            }
        })
        .await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Moves every hold's expiry into the past, as if its time had run out.
async fn expire_holds(database_url: &str) {
    use diesel_async::AsyncConnection;
    let mut conn = diesel_async::AsyncPgConnection::establish(database_url)
        .await
        .unwrap();
    let expire = diesel::sql_query("UPDATE holds SET expires_at = now() - interval '1 second'");
    diesel_async::RunQueryDsl::execute(expire, &mut conn)
        .await
        .unwrap();
}

/// The value of one series (name and labels exactly as exposed), if it is there.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// Waits until `series` in the exposition at `base` satisfies `wanted`, and returns its value.
async fn series_reaches(base: &str, series: &str, wanted: impl Fn(f64) -> bool) -> f64 {
    eventually(crate::support::WAIT, || async {
        let text = exposition(base).await;
        match value(&text, series) {
            Some(found) if wanted(found) => Ok(found),
            found => Err(format!("{series} is {found:?} in:\n{text}")),
        }
    })
    .await
}

/// Each series this test names moves when, and only as far as, what the test does: the server
/// runs in a process of its own, on Redis, with its sweeper asleep until the test expires a
/// hold in front of a sale.
#[tokio::test]
async fn live_update_queue_and_hold_series_move_with_what_the_server_does() {
    use evently::realtime::SeatUpdate;

    let database = fresh_database().await;
    let redis = crate::support::redis_url();
    let prefix = format!("evently:test:{}:", uuid::Uuid::new_v4().simple());
    let (_server, base) = evently_process(
        &database.url,
        &[
            ("REDIS_URL", redis.as_str()),
            ("REDIS_PREFIX", prefix.as_str()),
            ("SWEEP_INTERVAL_MS", "3600000"),
        ],
    )
    .await;
    // Another instance on the same Redis: it signs users in, and what it publishes the
    // server hears. Its sweeper sleeps too.
    let mut config = test_config(&database.url, Some((&redis, &prefix)));
    config.sweep_interval = Duration::from_secs(3600);
    let peer = App::build(config).await.unwrap();
    let organizer = signed_in_user(&peer, Role::Organizer).await;
    let client = reqwest::Client::new();
    let input = json!({ "input": crate::support::event_input("Watched", 1) });
    let created = gql(&client, &base, &organizer.token, CREATE_EVENT, input).await;
    let event = created["data"]["createEvent"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();

    // Subscriptions by root field: a shared one (counted per socket) and one of its own.
    let ws = format!("ws://{}/graphql/ws", base.trim_start_matches("http://"));
    let mut socket = crate::support::WsClient::connect(&ws, "graphql-transport-ws", json!({}))
        .await
        .unwrap();
    socket
        .subscribe("seats", crate::support::SEATS, json!({ "id": event }))
        .await;
    socket.next_data().await;
    let watch = "subscription($id: ID!) { eventUpdated(eventId: $id) { id status } }";
    socket
        .subscribe("event", watch, json!({ "id": event }))
        .await;
    socket.next_data().await;
    let seat_watchers = r#"evently_subscriptions{field="seatAvailability"}"#;
    let event_watchers = r#"evently_subscriptions{field="eventUpdated"}"#;
    series_reaches(&base, seat_watchers, |n| n == 1.0).await;
    series_reaches(&base, event_watchers, |n| n == 1.0).await;
    series_reaches(&base, "evently_ws_messages_sent_total", |n| n == 2.0).await;
    socket
        .send(json!({ "id": "event", "type": "complete" }))
        .await;
    series_reaches(&base, event_watchers, |n| n == 0.0).await;
    assert_eq!(
        value(&exposition(&base).await, seat_watchers),
        Some(1.0),
        "the other subscription is still counted"
    );

    // A hold that expired while the sweeper slept is ended by the sale that needs its seat:
    // the booking waits in the event's queue, then its batch ends the hold.
    let holder = signed_in_user(&peer, Role::User).await;
    let hold = json!({ "input": { "eventId": event, "quantity": 1 } });
    let held = gql(
        &client,
        &base,
        &holder.token,
        crate::support::operations::HOLD,
        hold,
    )
    .await;
    assert!(held["errors"].is_null(), "{held}");
    expire_holds(&database.url).await;
    let buyer = signed_in_user(&peer, Role::User).await;
    let booking = json!({ "input": { "eventId": event, "quantity": 1 } });
    let booked = gql(&client, &base, &buyer.token, BOOK, booking).await;
    assert!(booked["errors"].is_null(), "{booked}");
    let text = exposition(&base).await;
    assert_eq!(
        value(&text, r#"evently_holds_expired_total{by="sale"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "evently_group_commit_queue_wait_seconds_count"),
        Some(1.0),
        "{text}"
    );
    assert!(value(&text, r#"evently_holds_expired_total{by="sweeper"}"#).is_none());

    // An update another instance publishes is heard with its lag.
    assert!(value(&text, "evently_bus_delivery_lag_seconds_count").is_none());
    peer.bus.publish(SeatUpdate {
        event_id: uuid::Uuid::new_v4(),
        capacity: 1,
        seats_available: 1,
        seats_held: 0,
        version: 1,
    });
    series_reaches(&base, "evently_bus_delivery_lag_seconds_count", |n| {
        n == 1.0
    })
    .await;

    // The Redis pool carried the bus's PUBLISHes.
    let text = exposition(&base).await;
    let open = value(&text, r#"evently_redis_pool_connections{state="open"}"#);
    assert!(open.is_some_and(|n| n >= 1.0), "{text}");
    let gets = value(&text, r#"evently_redis_pool_gets_total{outcome="direct"}"#);
    assert!(gets.is_some_and(|n| n >= 1.0), "{text}");
    assert!(
        text.contains("evently_redis_pool_waited_seconds "),
        "{text}"
    );
}

#[tokio::test]
async fn the_sweeper_counts_the_holds_it_expires() {
    let series = r#"evently_holds_expired_total{by="sweeper"}"#;
    let app = TestApp::spawn_with(|config| {
        config.sweep_interval = Duration::from_millis(50);
    })
    .await;
    let organizer = app.user(Role::Organizer).await;
    let holder = app.user(Role::User).await;
    let event = app.event(&organizer, 3).await;
    app.hold(&holder, &event, 2).await;
    // Other tests' sweepers share this process's count: it has to grow by this test's two.
    let before = value(&exposition(&app.base_url).await, series).unwrap_or(0.0);
    expire_holds(&app.database.url).await;
    series_reaches(&app.base_url, series, |n| n >= before + 1.0).await;
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_counted_as_dropping_updates() {
    use evently::realtime::{SeatUpdate, Topic};
    use futures_util::StreamExt;

    let series = r#"evently_live_updates_dropped_total{stage="bus"}"#;
    let app = TestApp::spawn().await;
    let before = value(&exposition(&app.base_url).await, series).unwrap_or(0.0);
    let event_id = uuid::Uuid::new_v4();
    let mut slow = app.state.bus.subscribe(Topic::Seats(event_id));
    // Far more than a channel holds, while the subscriber is not polled.
    for version in 1..=500 {
        app.state.bus.publish(SeatUpdate {
            event_id,
            capacity: 1000,
            seats_available: 1000 - version,
            seats_held: 0,
            version,
        });
    }
    assert!(slow.next().await.is_some());
    let after = value(&exposition(&app.base_url).await, series).unwrap();
    assert!(after - before >= 400.0, "{before} -> {after}");
}
