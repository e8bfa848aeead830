//! The sales roll-ups that analytics read (`event_sales`, `event_sales_15m`,
//! `platform_sales_15m`) against plain SQL recounts of the bookings: after a storm of
//! concurrent bookings (written by the group-commit batch, many in one statement),
//! cancellations one by one and of a whole event, and corrections made straight in SQL; and
//! through the sweeper's folding of the platform's shards.

use evently::db::models::Role;
use futures_util::future::join_all;
use serde_json::json;

use super::{sql, sql_row};
use crate::support::{CANCEL, TestApp};

const CANCEL_EVENT: &str = "mutation($id: ID!) { cancelEvent(id: $id) { status } }";

/// Rows in one query's answer and not the other's, both ways: 0 when they are equal.
async fn differences(app: &TestApp, a: &str, b: &str) -> i64 {
    sql_row(
        app,
        &format!(
            "SELECT count(*) AS n FROM (({a} EXCEPT ALL {b}) UNION ALL ({b} EXCEPT ALL {a})) d"
        ),
    )
    .await["n"]
        .as_i64()
        .unwrap()
}

/// Sold by `created_at` and cancelled by `cancelled_at`, per event and quarter hour.
const QUARTERS: &str = "SELECT event_id, bucket, sum(b)::bigint AS b, sum(t)::bigint AS t,
           sum(c)::bigint AS c, sum(tc)::bigint AS tc
    FROM (SELECT event_id, date_bin('15 minutes', created_at, '2000-01-01Z') AS bucket,
                 1 AS b, quantity AS t, 0 AS c, 0 AS tc FROM bookings
          UNION ALL
          SELECT event_id, date_bin('15 minutes', cancelled_at, '2000-01-01Z'), 0, 0, 1, quantity
          FROM bookings WHERE cancelled_at IS NOT NULL) m
    GROUP BY 1, 2";

async fn assert_rollups_match_a_recount(app: &TestApp) {
    let totals = differences(
        app,
        "SELECT event_id, count(*), sum(quantity)::bigint,
                count(*) FILTER (WHERE status = 'CANCELLED'),
                coalesce(sum(quantity) FILTER (WHERE status = 'CANCELLED'), 0)::bigint
         FROM bookings GROUP BY event_id",
        "SELECT event_id, bookings, tickets, cancellations, tickets_cancelled FROM event_sales
         WHERE bookings <> 0",
    )
    .await;
    assert_eq!(totals, 0, "event_sales differs from a recount");
    let quarters = differences(
        app,
        QUARTERS,
        "SELECT event_id, bucket, bookings, tickets_sold, cancellations, tickets_cancelled
         FROM event_sales_15m
         WHERE (bookings, tickets_sold, cancellations, tickets_cancelled) <> (0, 0, 0, 0)",
    )
    .await;
    assert_eq!(quarters, 0, "event_sales_15m differs from a recount");
    let platform = differences(
        app,
        &format!(
            "SELECT bucket, sum(b)::bigint, sum(t)::bigint, sum(c)::bigint, sum(tc)::bigint
             FROM ({QUARTERS}) q GROUP BY bucket"
        ),
        "SELECT bucket, sum(bookings)::bigint, sum(tickets_sold)::bigint,
                sum(cancellations)::bigint, sum(tickets_cancelled)::bigint
         FROM platform_sales_15m GROUP BY bucket
         HAVING (sum(bookings), sum(tickets_sold), sum(cancellations), sum(tickets_cancelled))
                <> (0, 0, 0, 0)",
    )
    .await;
    assert_eq!(platform, 0, "platform_sales_15m differs from a recount");
}

#[tokio::test]
async fn the_rollups_equal_a_recount_after_a_storm_cancellations_and_corrections() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let admin = app.user(Role::Admin).await;
    let onsale = app.event(&organizer, 60).await;
    let other = app.event(&organizer, 60).await;
    let buyers = join_all((0..30).map(|_| app.user(Role::User))).await;
    // Everyone at once, on two events: the batches insert many bookings per statement.
    let booked = join_all(buyers.iter().enumerate().map(|(i, buyer)| {
        let event = if i % 3 == 0 { &other } else { &onsale };
        let app = &app;
        async move { (i, app.book(buyer, event, 1 + (i as i64 % 3)).await.0) }
    }))
    .await;
    assert_eq!(app.count("bookings").await, 30, "every buyer booked");
    assert_rollups_match_a_recount(&app).await;

    // Cancellations one at a time, then a whole event at once.
    for (i, booking) in booked.iter().filter(|(i, _)| i % 3 == 1).take(4) {
        app.gql_ok(Some(&buyers[*i].token), CANCEL, json!({ "id": booking }))
            .await;
    }
    app.gql_ok(Some(&organizer.token), CANCEL_EVENT, json!({ "id": other }))
        .await;
    assert_rollups_match_a_recount(&app).await;

    // Corrections straight in SQL: moved into another quarter hour, into the past, deleted.
    let (_, moved) = &booked[1];
    let (_, old) = &booked[2];
    sql(
        &app,
        &format!(
            "UPDATE bookings SET created_at = created_at - interval '3 days 7 minutes' WHERE id = '{moved}';
             UPDATE bookings SET created_at = now() - interval '40 days' WHERE id = '{old}';
             DELETE FROM bookings WHERE id = '{}'",
            booked[5].1
        ),
    )
    .await
    .unwrap();
    assert_rollups_match_a_recount(&app).await;

    // The sweeper folds the platform's shards of past days into one row per quarter hour:
    // nothing a reader sees changes.
    const PLATFORM: &str = "query($from: DateTime!, $to: DateTime!) {
        platformStats(from: $from, to: $to, timeZone: \"Asia/Kolkata\") {
        totals { bookings ticketsSold cancellations ticketsCancelled }
        days { bookings ticketsSold cancellations ticketsCancelled } } }";
    let now = chrono::Utc::now();
    let period = json!({
        "from": (now - chrono::Duration::days(45)).to_rfc3339(),
        "to": (now + chrono::Duration::days(1)).to_rfc3339(),
    });
    let before = app
        .gql_ok(Some(&admin.token), PLATFORM, period.clone())
        .await;
    let folded = evently::domain::stats::fold_settled_sales(&mut app.db().await)
        .await
        .unwrap();
    assert!(
        folded <= 2,
        "at most the two corrected quarter hours: {folded}"
    );
    assert_eq!(
        app.count("platform_sales_15m WHERE shard <> 0 AND bucket < now() - interval '1 day'")
            .await,
        0
    );
    assert_rollups_match_a_recount(&app).await;
    let after = app.gql_ok(Some(&admin.token), PLATFORM, period).await;
    assert_eq!(before, after);
    assert_eq!(
        after["platformStats"]["totals"]["bookings"], 29,
        "the deleted booking is gone from the figures"
    );
}
