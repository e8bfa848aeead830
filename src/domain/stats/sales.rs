//! Sales counted into buckets and per event over a period, read from the roll-ups that a
//! trigger on `bookings` keeps in the transaction of every change (migration
//! `2026-12-05-040000_analytics_rollups`): `event_sales` (each event, all time),
//! `event_sales_15m` (each event per 15 minutes) and `platform_sales_15m` (the platform per 15
//! minutes, in a few shards). They are exact: they commit with the bookings they count, and
//! one statement reads them in one snapshot.
//!
//! A roll-up row covers a quarter hour of UTC, and every bound that a whole set of such rows
//! fills is on a quarter hour (the start of any real zone's hour or day is, offsets being
//! multiples of 15 minutes). Whatever of a period is not (its ragged ends, or the bounds of a
//! zone's historical local mean time) is counted from the bookings themselves.

use chrono::{DateTime, Duration, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::periods::{Bucket, EventFigures};
use crate::error::AppResult;

const QUARTER_HOUR_SECONDS: i64 = 15 * 60;

fn on_quarter_hour(at: DateTime<Utc>) -> bool {
    at.timestamp().rem_euclid(QUARTER_HOUR_SECONDS) == 0 && at.timestamp_subsec_nanos() == 0
}

/// The last quarter hour at or before `at`.
fn floor_quarter_hour(at: DateTime<Utc>) -> DateTime<Utc> {
    let seconds = at.timestamp();
    DateTime::from_timestamp(seconds - seconds.rem_euclid(QUARTER_HOUR_SECONDS), 0).unwrap_or(at)
}

/// The first quarter hour at or after `at`.
fn ceil_quarter_hour(at: DateTime<Utc>) -> DateTime<Utc> {
    if on_quarter_hour(at) {
        at
    } else {
        floor_quarter_hour(at) + Duration::seconds(QUARTER_HOUR_SECONDS)
    }
}

#[derive(QueryableByName)]
struct BucketRow {
    #[diesel(sql_type = Integer)]
    bucket: i32,
    #[diesel(sql_type = BigInt)]
    bookings: i64,
    #[diesel(sql_type = BigInt)]
    tickets_sold: i64,
    #[diesel(sql_type = BigInt)]
    cancellations: i64,
    #[diesel(sql_type = BigInt)]
    tickets_cancelled: i64,
}

/// Bookings made and cancelled in each bucket of `bounds`, of one event or (`None`) of all.
pub(super) async fn buckets(
    conn: &mut AsyncPgConnection,
    event_id: Option<Uuid>,
    bounds: &[DateTime<Utc>],
) -> AppResult<Vec<Bucket>> {
    let sql = match (bounds.iter().all(|b| on_quarter_hour(*b)), event_id) {
        (true, Some(_)) => {
            "SELECT width_bucket(bucket, $1) AS bucket, sum(bookings)::bigint AS bookings,
                    sum(tickets_sold)::bigint AS tickets_sold,
                    sum(cancellations)::bigint AS cancellations,
                    sum(tickets_cancelled)::bigint AS tickets_cancelled
             FROM event_sales_15m
             WHERE event_id = $2 AND bucket >= $1[1] AND bucket < $1[array_length($1, 1)]
             GROUP BY 1"
        }
        (true, None) => {
            "SELECT width_bucket(bucket, $1) AS bucket, sum(bookings)::bigint AS bookings,
                    sum(tickets_sold)::bigint AS tickets_sold,
                    sum(cancellations)::bigint AS cancellations,
                    sum(tickets_cancelled)::bigint AS tickets_cancelled
             FROM platform_sales_15m
             WHERE $2::uuid IS NULL AND bucket >= $1[1] AND bucket < $1[array_length($1, 1)]
             GROUP BY 1"
        }
        (false, Some(_)) => BOOKING_BUCKETS_OF_EVENT,
        (false, None) => BOOKING_BUCKETS_OF_PLATFORM,
    };
    let rows: Vec<BucketRow> = diesel::sql_query(sql)
        .bind::<Array<Timestamptz>, _>(bounds)
        .bind::<Nullable<diesel::sql_types::Uuid>, _>(event_id)
        .load(conn)
        .await?;
    let mut buckets: Vec<Bucket> = bounds
        .windows(2)
        .map(|pair| Bucket {
            start: pair[0],
            end: pair[1],
            ..Bucket::default()
        })
        .collect();
    for row in rows {
        if let Some(bucket) = buckets.get_mut((row.bucket as usize).wrapping_sub(1)) {
            bucket.bookings += row.bookings;
            bucket.tickets_sold += row.tickets_sold;
            bucket.cancellations += row.cancellations;
            bucket.tickets_cancelled += row.tickets_cancelled;
        }
    }
    Ok(buckets)
}

/// Counting the bookings themselves, for bounds off the quarter hours (two fixed statements
/// rather than `$2 IS NULL OR …`, so each keeps its index).
macro_rules! booking_buckets {
    ($of:literal) => {
        concat!(
            "SELECT bucket, sum(bookings)::bigint AS bookings,
                    sum(tickets_sold)::bigint AS tickets_sold,
                    sum(cancellations)::bigint AS cancellations,
                    sum(tickets_cancelled)::bigint AS tickets_cancelled
             FROM (SELECT width_bucket(created_at, $1) AS bucket, count(*) AS bookings,
                          sum(quantity) AS tickets_sold, 0 AS cancellations,
                          0 AS tickets_cancelled
                   FROM bookings
                   WHERE ",
            $of,
            " AND created_at >= $1[1] AND created_at < $1[array_length($1, 1)]
                   GROUP BY 1
                   UNION ALL
                   SELECT width_bucket(cancelled_at, $1), 0, 0, count(*), sum(quantity)
                   FROM bookings
                   WHERE ",
            $of,
            " AND cancelled_at >= $1[1] AND cancelled_at < $1[array_length($1, 1)]
                   GROUP BY 1) counted
             GROUP BY bucket"
        )
    };
}
const BOOKING_BUCKETS_OF_EVENT: &str = booking_buckets!("event_id = $2");
const BOOKING_BUCKETS_OF_PLATFORM: &str = booking_buckets!("$2::uuid IS NULL");

/// Whether an event's figures over the quarter hours `from..to` are cheaper as its total less
/// the quarter hours outside the period (a period covering most of the history, such as "the
/// last year") than as the sum of those inside. Both are exact; this only picks the one that
/// reads fewer rows, judging by the span of the platform's history.
async fn cheaper_as_complement(
    conn: &mut AsyncPgConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> AppResult<bool> {
    #[derive(QueryableByName)]
    struct Span {
        #[diesel(sql_type = Nullable<Timestamptz>)]
        first: Option<DateTime<Utc>>,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        last: Option<DateTime<Utc>>,
    }
    let span: Span = diesel::sql_query(
        "SELECT (SELECT min(bucket) FROM platform_sales_15m) AS first,
                (SELECT max(bucket) FROM platform_sales_15m) AS last",
    )
    .get_result(conn)
    .await?;
    let (Some(first), Some(last)) = (span.first, span.last) else {
        return Ok(false);
    };
    let last = last + Duration::seconds(QUARTER_HOUR_SECONDS);
    let inside = to.min(last) - from.max(first);
    Ok(inside * 2 > last - first)
}

/// The figures of every event in `from..to` (see the module doc of `periods`), the
/// organizer's own when `organizer` is given, else every event ever published. Events without
/// bookings are there, with zeros: the period's conditions are in the joins, never in a WHERE
/// that would drop them.
pub(super) async fn event_figures(
    conn: &mut AsyncPgConnection,
    organizer: Option<Uuid>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> AppResult<Vec<EventFigures>> {
    // The quarter hours wholly inside the period come from the roll-up, the ragged ends
    // (`from..inner_from` and `inner_to..to`) from the bookings.
    let (mut inner_from, mut inner_to) = (ceil_quarter_hour(from), floor_quarter_hour(to));
    if inner_from >= inner_to {
        (inner_from, inner_to) = (to, to);
    }
    let rolled = if inner_from == inner_to {
        "SELECT NULL::uuid AS event_id, 0::bigint AS bookings, 0::bigint AS tickets_sold,
                0::bigint AS cancellations, 0::bigint AS tickets_cancelled WHERE false"
    } else if cheaper_as_complement(conn, inner_from, inner_to).await? {
        "SELECT event_id, bookings, tickets AS tickets_sold, cancellations, tickets_cancelled
         FROM event_sales WHERE event_id IN (SELECT id FROM period_events)
         UNION ALL
         SELECT event_id, -bookings, -tickets_sold, -cancellations, -tickets_cancelled
         FROM event_sales_15m
         WHERE event_id IN (SELECT id FROM period_events) AND (bucket < $4 OR bucket >= $5)"
    } else {
        "SELECT event_id, bookings, tickets_sold, cancellations, tickets_cancelled
         FROM event_sales_15m
         WHERE event_id IN (SELECT id FROM period_events) AND bucket >= $4 AND bucket < $5"
    };
    let whose = if organizer.is_some() {
        "e.organizer_id = $3"
    } else {
        "$3::uuid IS NULL AND e.published_at IS NOT NULL"
    };
    let sql = format!(
        "WITH period_events AS (
             SELECT id FROM events e WHERE {whose} AND e.created_at < $2 AND e.ends_at >= $1),
         counted AS (
             {rolled}
             UNION ALL
             SELECT event_id, count(*), sum(quantity), 0, 0 FROM bookings
             WHERE (created_at >= $1 AND created_at < $4) OR (created_at >= $5 AND created_at < $2)
             GROUP BY event_id
             UNION ALL
             SELECT event_id, 0, 0, count(*), sum(quantity) FROM bookings
             WHERE (cancelled_at >= $1 AND cancelled_at < $4)
                OR (cancelled_at >= $5 AND cancelled_at < $2)
             GROUP BY event_id),
         figures AS (
             SELECT event_id, sum(bookings) AS bookings, sum(tickets_sold) AS tickets_sold,
                    sum(cancellations) AS cancellations,
                    sum(tickets_cancelled) AS tickets_cancelled
             FROM counted GROUP BY event_id)
         SELECT e.id AS event_id, e.title, e.category, e.status, e.starts_at, e.capacity,
                e.capacity - e.seats_available - e.seats_held AS sold_now,
                coalesce(f.bookings, 0)::bigint AS bookings,
                coalesce(f.tickets_sold, 0)::bigint AS tickets_sold,
                coalesce(f.cancellations, 0)::bigint AS cancellations,
                coalesce(f.tickets_cancelled, 0)::bigint AS tickets_cancelled
         FROM events e
         LEFT JOIN figures f ON f.event_id = e.id
         WHERE {whose} AND e.created_at < $2 AND e.ends_at >= $1
         ORDER BY e.starts_at, e.id"
    );
    Ok(diesel::sql_query(sql)
        .bind::<Timestamptz, _>(from)
        .bind::<Timestamptz, _>(to)
        .bind::<Nullable<diesel::sql_types::Uuid>, _>(organizer)
        .bind::<Timestamptz, _>(inner_from)
        .bind::<Timestamptz, _>(inner_to)
        .load(conn)
        .await?)
}

/// Folds the platform roll-up's shards of quarter hours over a day old into shard 0, so that
/// `platformStats` reads one row per quarter hour of its period. The shards only spare
/// concurrent onsales of different events from queueing on one row: once a quarter hour is
/// past, nothing but a rare correction writes it. One statement moves each row, so the sum
/// over the shards, which is all a reader sees, never changes. Returns the rows folded.
pub async fn fold_settled_sales(conn: &mut AsyncPgConnection) -> AppResult<usize> {
    Ok(diesel::sql_query(
        "WITH folded AS (
             DELETE FROM platform_sales_15m
             WHERE shard <> 0 AND bucket < now() - interval '1 day'
             RETURNING bucket, bookings, tickets_sold, cancellations, tickets_cancelled)
         INSERT INTO platform_sales_15m AS p
                (bucket, shard, bookings, tickets_sold, cancellations, tickets_cancelled)
         SELECT bucket, 0, sum(bookings), sum(tickets_sold), sum(cancellations),
                sum(tickets_cancelled)
         FROM folded GROUP BY bucket ORDER BY bucket
         ON CONFLICT (bucket, shard) DO UPDATE
            SET bookings = p.bookings + excluded.bookings,
                tickets_sold = p.tickets_sold + excluded.tickets_sold,
                cancellations = p.cancellations + excluded.cancellations,
                tickets_cancelled = p.tickets_cancelled + excluded.tickets_cancelled",
    )
    .execute(conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn quarter_hours_round_inwards() {
        assert!(on_quarter_hour(at("2026-03-29T00:45:00Z")));
        assert!(!on_quarter_hour(at("2026-03-29T00:45:00.5Z")));
        assert_eq!(
            ceil_quarter_hour(at("2026-03-29T00:45:01Z")),
            at("2026-03-29T01:00:00Z")
        );
        assert_eq!(
            floor_quarter_hour(at("2026-03-29T00:59:59.9Z")),
            at("2026-03-29T00:45:00Z")
        );
        assert_eq!(
            ceil_quarter_hour(at("1969-12-31T23:50:00Z")),
            at("1970-01-01T00:00:00Z")
        );
    }
}
