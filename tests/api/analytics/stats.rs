//! `eventStats`, `salesOverTime`, `organizerStats` and `platformStats`: exact figures after
//! known sequences, compared with plain SQL recounts; time-zone buckets on the days clocks
//! change; events without bookings as zeros; who may read what.

use evently::db::models::Role;
use serde_json::{Value, json};

use super::{sql, sql_row};
use crate::support::{CANCEL, TestApp, TestUser, WAIT, error_code, eventually, merged};

pub const EVENT_STATS: &str = "query($id: ID!) { eventStats(eventId: $id) {
    eventId version capacity sold held available utilisation bookings tickets cancellations
    ticketsCancelled cancellationRate waitlistLength waitlistPromotions
    waitlistPromotionsFulfilled rsvp { going waitlisted maybe notGoing } checkIns readAt } }";

const SALES: &str =
    "query($id: ID!, $interval: StatsInterval!, $from: DateTime!, $to: DateTime!, $tz: String!) {
    salesOverTime(eventId: $id, interval: $interval, from: $from, to: $to, timeZone: $tz) {
        start end bookings ticketsSold cancellations ticketsCancelled netTickets } }";

const JOIN: &str =
    "mutation($id: ID!, $q: Int!) { joinWaitlist(eventId: $id, quantity: $q) { id status } }";
const OFFERS: &str = "{ myWaitlistEntries(all: true) { status hold { id } } }";

pub async fn event_stats(app: &TestApp, token: &str, event: &str) -> Value {
    app.gql_ok(Some(token), EVENT_STATS, json!({ "id": event }))
        .await["eventStats"]
        .clone()
}

/// The figures of `eventStats` recounted from the rows in plain SQL.
async fn recount(app: &TestApp, event: &str) -> Value {
    sql_row(
        app,
        &format!(
            "SELECT e.capacity,
               (SELECT coalesce(sum(quantity), 0) FROM bookings WHERE event_id = e.id AND status = 'CONFIRMED') AS sold,
               (SELECT coalesce(sum(quantity), 0) FROM holds WHERE event_id = e.id AND status = 'HELD') AS held,
               (SELECT count(*) FROM bookings WHERE event_id = e.id) AS bookings,
               (SELECT coalesce(sum(quantity), 0) FROM bookings WHERE event_id = e.id) AS tickets,
               (SELECT count(*) FROM bookings WHERE event_id = e.id AND status = 'CANCELLED') AS cancellations,
               (SELECT coalesce(sum(quantity), 0) FROM bookings WHERE event_id = e.id AND status = 'CANCELLED') AS tickets_cancelled,
               (SELECT count(*) FROM waitlist_entries WHERE event_id = e.id AND status = 'WAITING') AS waiting,
               (SELECT count(*) FROM waitlist_entries WHERE event_id = e.id AND hold_id IS NOT NULL) AS offered,
               (SELECT count(*) FROM waitlist_entries WHERE event_id = e.id AND status = 'FULFILLED') AS fulfilled
             FROM events e WHERE e.id = '{event}'"
        ),
    )
    .await
}

fn assert_matches_recount(stats: &Value, recount: &Value) {
    let pairs = [
        ("capacity", "capacity"),
        ("sold", "sold"),
        ("held", "held"),
        ("bookings", "bookings"),
        ("tickets", "tickets"),
        ("cancellations", "cancellations"),
        ("ticketsCancelled", "tickets_cancelled"),
        ("waitlistLength", "waiting"),
        ("waitlistPromotions", "offered"),
        ("waitlistPromotionsFulfilled", "fulfilled"),
    ];
    for (field, column) in pairs {
        assert_eq!(
            stats[field].as_i64(),
            recount[column].as_i64(),
            "{field}: {stats} vs {recount}"
        );
    }
    let capacity = recount["capacity"].as_i64().unwrap();
    let (sold, held) = (
        recount["sold"].as_i64().unwrap(),
        recount["held"].as_i64().unwrap(),
    );
    assert_eq!(stats["available"].as_i64().unwrap(), capacity - sold - held);
    let utilisation = sold as f64 / capacity as f64;
    assert!((stats["utilisation"].as_f64().unwrap() - utilisation).abs() < 1e-9);
}

async fn book(app: &TestApp, user: &TestUser, event: &str, quantity: i64) -> String {
    app.book(user, event, quantity).await.0
}

#[tokio::test]
async fn event_stats_match_a_sql_recount_after_booking_cancelling_expiring_and_promoting() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let event = app.event(&organizer, 10).await;
    let fresh = event_stats(&app, &organizer.token, &event).await;
    assert_eq!(fresh["sold"], 0);
    assert_eq!(fresh["cancellationRate"], 0.0);
    assert_eq!(fresh["rsvp"], Value::Null);
    assert_eq!(fresh["checkIns"], 0);

    let buyers: Vec<TestUser> =
        futures_util::future::join_all((0..5).map(|_| app.user(Role::User))).await;
    let first = book(&app, &buyers[0], &event, 4).await;
    book(&app, &buyers[1], &event, 3).await;
    book(&app, &buyers[2], &event, 2).await;
    app.hold(&buyers[3], &event, 1).await;
    let stats = event_stats(&app, &organizer.token, &event).await;
    assert_eq!(
        (
            stats["sold"].as_i64(),
            stats["held"].as_i64(),
            stats["available"].as_i64()
        ),
        (Some(9), Some(1), Some(0))
    );
    assert_matches_recount(&stats, &recount(&app, &event).await);

    // Sold out: one waits for two seats; a cancellation frees four and promotes it (an offer).
    let joined = app
        .gql_ok(Some(&buyers[4].token), JOIN, json!({ "id": event, "q": 2 }))
        .await;
    assert_eq!(joined["joinWaitlist"]["status"], "WAITING");
    assert_eq!(
        event_stats(&app, &organizer.token, &event).await["waitlistLength"],
        1
    );
    app.gql_ok(Some(&buyers[0].token), CANCEL, json!({ "id": first }))
        .await;
    let stats = event_stats(&app, &organizer.token, &event).await;
    assert_eq!(stats["waitlistLength"], 0);
    assert_eq!(stats["waitlistPromotions"], 1);
    assert_eq!(stats["cancellations"], 1);
    assert_matches_recount(&stats, &recount(&app, &event).await);

    // The checkout hold expires (its deadline moved into the past; the sweeper ends it).
    sql(&app, &format!("UPDATE holds SET expires_at = now() - interval '1 second' WHERE event_id = '{event}' AND user_id = '{}'", buyers[3].id)).await.unwrap();
    eventually(WAIT, || async {
        event_stats(&app, &organizer.token, &event).await["held"] == 2
    })
    .await;

    // The offer is taken.
    let entries = app.gql_ok(Some(&buyers[4].token), OFFERS, json!({})).await;
    let offer = entries["myWaitlistEntries"][0]["hold"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.confirm(&buyers[4], &offer).await;
    let stats = event_stats(&app, &organizer.token, &event).await;
    assert_eq!(stats["sold"], 3 + 2 + 2);
    assert_eq!(stats["held"], 0);
    assert_eq!(stats["available"], 3);
    assert_eq!(stats["bookings"], 4);
    assert_eq!(stats["tickets"], 4 + 3 + 2 + 2);
    assert_eq!(stats["ticketsCancelled"], 4);
    assert_eq!(stats["cancellationRate"], 0.25);
    assert_eq!(stats["waitlistPromotionsFulfilled"], 1);
    assert!((stats["utilisation"].as_f64().unwrap() - 0.7).abs() < 1e-9);
    assert_matches_recount(&stats, &recount(&app, &event).await);
    app.assert_invariant().await;
}

#[tokio::test]
async fn a_free_event_counts_its_answers() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let event = app
        .create_event(
            &organizer,
            merged(
                crate::support::event_input("Picnic", 1),
                json!({ "free": true }),
            ),
        )
        .await;
    const RSVP: &str =
        "mutation($id: ID!, $r: RsvpResponse!) { rsvp(eventId: $id, response: $r) { response } }";
    for response in ["GOING", "GOING", "MAYBE", "NOT_GOING"] {
        let user = app.user(Role::User).await;
        app.gql_ok(
            Some(&user.token),
            RSVP,
            json!({ "id": event, "r": response }),
        )
        .await;
    }
    let stats = event_stats(&app, &organizer.token, &event).await;
    assert_eq!(
        stats["rsvp"],
        json!({ "going": 1, "waitlisted": 1, "maybe": 1, "notGoing": 1 })
    );
    assert_eq!(stats["sold"], 1);
}

#[tokio::test]
async fn only_the_organizer_and_admins_read_an_events_analytics() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let rival = app.user(Role::Organizer).await;
    let user = app.user(Role::User).await;
    let admin = app.user(Role::Admin).await;
    let event = app.event(&organizer, 5).await;
    let draft = app
        .create_event(
            &organizer,
            merged(
                crate::support::event_input("Secret", 5),
                json!({ "status": "DRAFT" }),
            ),
        )
        .await;
    let window = json!({ "from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z", "interval": "DAY", "tz": "UTC" });
    for (query, vars) in [
        (EVENT_STATS, json!({ "id": event })),
        (SALES, merged(window.clone(), json!({ "id": event }))),
    ] {
        let code = |token: Option<String>, vars: Value| {
            let app = &app;
            async move { error_code(&app.gql(token.as_deref(), query, vars).await).to_owned() }
        };
        assert_eq!(code(None, vars.clone()).await, "UNAUTHENTICATED");
        assert_eq!(
            code(Some(user.token.clone()), vars.clone()).await,
            "FORBIDDEN"
        );
        assert_eq!(
            code(Some(rival.token.clone()), vars.clone()).await,
            "FORBIDDEN"
        );
        let on_draft = merged(vars.clone(), json!({ "id": draft }));
        assert_eq!(
            code(Some(rival.token.clone()), on_draft.clone()).await,
            "NOT_FOUND"
        );
        for token in [&organizer.token, &admin.token] {
            let body = app.gql(Some(token), query, on_draft.clone()).await;
            assert!(body.get("errors").is_none(), "{body}");
        }
    }
    let period = json!({ "from": "2026-01-01T00:00:00Z", "to": "2027-01-01T00:00:00Z" });
    const ORGANIZER: &str = "query($from: DateTime!, $to: DateTime!) { organizerStats(from: $from, to: $to) { totals { events } } }";
    const PLATFORM: &str = "query($from: DateTime!, $to: DateTime!) { platformStats(from: $from, to: $to) { totals { events } } }";
    assert_eq!(
        error_code(&app.gql(Some(&user.token), ORGANIZER, period.clone()).await),
        "FORBIDDEN"
    );
    assert_eq!(
        error_code(
            &app.gql(Some(&organizer.token), PLATFORM, period.clone())
                .await
        ),
        "FORBIDDEN"
    );
    assert_eq!(
        error_code(&app.gql(None, PLATFORM, period.clone()).await),
        "UNAUTHENTICATED"
    );
    app.gql_ok(Some(&admin.token), PLATFORM, period).await;
    let bad_zone = merged(window, json!({ "id": event, "tz": "Mars/Olympus" }));
    let body = app.gql(Some(&organizer.token), SALES, bad_zone).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    assert_eq!(
        body["errors"][0]["extensions"]["reason"],
        "UNKNOWN_TIME_ZONE"
    );
}

/// Moves a booking's creation (and cancellation) to a given instant.
async fn backdate(app: &TestApp, booking: &str, created: &str, cancelled: Option<&str>) {
    let cancelled = cancelled.map_or("cancelled_at".to_owned(), |at| format!("'{at}'"));
    sql(app, &format!("UPDATE bookings SET created_at = '{created}', cancelled_at = {cancelled} WHERE id = '{booking}'"))
        .await
        .unwrap();
}

#[tokio::test]
async fn sales_over_time_buckets_follow_the_local_clock_through_both_clock_changes() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = app.event(&organizer, 100).await;
    // Spring, London: 29 March 2026 has 23 hours. 00:30Z is 00:30 GMT on the 29th; 23:30Z
    // that day is 00:30 BST on the 30th.
    let a = book(&app, &buyer, &event, 1).await;
    backdate(&app, &a, "2026-03-29T00:30:00Z", None).await;
    let b = book(&app, &buyer, &event, 2).await;
    backdate(&app, &b, "2026-03-29T23:30:00Z", None).await;
    // Autumn: 25 October 2026 has 25 hours; 00:30Z is 01:30 BST and 01:30Z is 01:30 GMT, the
    // same local hour twice. The second is cancelled on the 26th.
    let c = book(&app, &buyer, &event, 3).await;
    backdate(&app, &c, "2026-10-25T00:30:00Z", None).await;
    let d = book(&app, &buyer, &event, 4).await;
    app.gql_ok(Some(&buyer.token), CANCEL, json!({ "id": d }))
        .await;
    backdate(
        &app,
        &d,
        "2026-10-25T01:30:00Z",
        Some("2026-10-26T09:00:00Z"),
    )
    .await;

    let sales = |interval: &'static str, from: &'static str, to: &'static str| {
        let (app, token, event) = (&app, organizer.token.clone(), event.clone());
        async move {
            let vars = json!({ "id": event, "interval": interval, "from": from, "to": to, "tz": "Europe/London" });
            app.gql_ok(Some(&token), SALES, vars).await["salesOverTime"]
                .as_array()
                .unwrap()
                .clone()
        }
    };
    let hours = |bucket: &Value| {
        let start: chrono::DateTime<chrono::Utc> =
            bucket["start"].as_str().unwrap().parse().unwrap();
        let end: chrono::DateTime<chrono::Utc> = bucket["end"].as_str().unwrap().parse().unwrap();
        (end - start).num_hours()
    };
    let spring = sales("DAY", "2026-03-28T12:00:00Z", "2026-03-30T12:00:00Z").await;
    assert_eq!(
        spring.iter().map(hours).collect::<Vec<_>>(),
        vec![24, 23, 24]
    );
    assert_eq!(spring[1]["start"], "2026-03-29T00:00:00+00:00");
    assert_eq!(
        spring
            .iter()
            .map(|b| b["ticketsSold"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        vec![0, 1, 2]
    );

    let autumn = sales("DAY", "2026-10-24T12:00:00Z", "2026-10-26T12:00:00Z").await;
    assert_eq!(
        autumn.iter().map(hours).collect::<Vec<_>>(),
        vec![24, 25, 24]
    );
    assert_eq!(autumn[1]["start"], "2026-10-24T23:00:00+00:00");
    assert_eq!(autumn[1]["ticketsSold"], 7);
    assert_eq!(autumn[1]["bookings"], 2);
    assert_eq!(autumn[2]["ticketsCancelled"], 4);
    assert_eq!(autumn[2]["netTickets"], -4);

    // By hour on the long day: 25 buckets, the repeated 01:00 twice, one booking in each.
    let by_hour = sales("HOUR", "2026-10-24T23:00:00Z", "2026-10-25T23:59:00Z").await;
    assert_eq!(by_hour.len(), 25);
    assert!(by_hour.iter().all(|b| hours(b) == 1));
    let sold: Vec<i64> = by_hour
        .iter()
        .map(|b| b["ticketsSold"].as_i64().unwrap())
        .collect();
    assert_eq!(&sold[..4], &[0, 3, 4, 0]);
    assert_eq!(sold.iter().sum::<i64>(), 7);
}

#[tokio::test]
async fn events_without_bookings_count_as_zero_not_missing() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let other = app.user(Role::Organizer).await;
    let admin = app.user(Role::Admin).await;
    let buyer = app.user(Role::User).await;
    let busy = app.event(&organizer, 50).await;
    let quiet = app
        .create_event(
            &organizer,
            merged(
                crate::support::event_input("Quiet", 50),
                json!({ "category": "Poetry" }),
            ),
        )
        .await;
    let elsewhere = app.event(&other, 50).await;
    let first = book(&app, &buyer, &busy, 3).await;
    book(&app, &buyer, &busy, 2).await;
    book(&app, &buyer, &elsewhere, 1).await;
    app.gql_ok(Some(&buyer.token), CANCEL, json!({ "id": first }))
        .await;

    let now = chrono::Utc::now();
    let period = json!({
        "from": (now - chrono::Duration::days(1)).to_rfc3339(),
        "to": (now + chrono::Duration::days(1)).to_rfc3339(),
    });
    const ORGANIZER: &str =
        "query($from: DateTime!, $to: DateTime!) { organizerStats(from: $from, to: $to) {
        totals { events bookings ticketsSold cancellations ticketsCancelled cancellationRate }
        events { eventId ticketsSold bookings cancellations soldNow } } }";
    let stats = app
        .gql_ok(Some(&organizer.token), ORGANIZER, period.clone())
        .await["organizerStats"]
        .clone();
    assert_eq!(
        stats["totals"],
        json!({ "events": 2, "bookings": 2, "ticketsSold": 5, "cancellations": 1, "ticketsCancelled": 3, "cancellationRate": 0.5 })
    );
    let quiet_row = stats["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["eventId"] == quiet)
        .cloned();
    assert_eq!(
        quiet_row,
        Some(
            json!({ "eventId": quiet.as_str(), "ticketsSold": 0, "bookings": 0, "cancellations": 0, "soldNow": 0 })
        )
    );

    const PLATFORM: &str = "query($from: DateTime!, $to: DateTime!) { platformStats(from: $from, to: $to, top: 10) {
        totals { events bookings ticketsSold cancellations cancellationRate } newUsers
        topEvents { eventId ticketsSold } categories { category totals { events ticketsSold bookings } }
        days { ticketsSold bookings cancellations } newUsersPerDay { count } } }";
    let platform = app.gql_ok(Some(&admin.token), PLATFORM, period).await["platformStats"].clone();
    assert_eq!(
        platform["totals"],
        json!({ "events": 3, "bookings": 3, "ticketsSold": 6, "cancellations": 1, "cancellationRate": 1.0 / 3.0 })
    );
    assert_eq!(
        platform["categories"],
        json!([
            { "category": "Music", "totals": { "events": 2, "ticketsSold": 6, "bookings": 3 } },
            { "category": "Poetry", "totals": { "events": 1, "ticketsSold": 0, "bookings": 0 } },
        ])
    );
    let top: Vec<(Value, i64)> = platform["topEvents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["eventId"].clone(), e["ticketsSold"].as_i64().unwrap()))
        .collect();
    assert_eq!(top.len(), 3, "the quiet event is listed too: {top:?}");
    assert_eq!(top[0], (json!(busy.as_str()), 5));
    assert_eq!(top[2], (json!(quiet.as_str()), 0));
    let days = platform["days"].as_array().unwrap();
    assert_eq!(
        days.iter()
            .map(|d| d["bookings"].as_i64().unwrap())
            .sum::<i64>(),
        3
    );
    // Recount in SQL: users created in the period.
    let users = sql_row(&app, "SELECT count(*) AS n FROM users").await["n"]
        .as_i64()
        .unwrap();
    assert_eq!(platform["newUsers"].as_i64(), Some(users));
    let per_day: i64 = platform["newUsersPerDay"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["count"].as_i64().unwrap())
        .sum();
    assert_eq!(per_day, users);
}
