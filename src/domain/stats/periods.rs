//! Figures over a period: sales of one event in hours or days of a time zone, an organizer's
//! events, and the platform's.
//!
//! Buckets follow the wall clock of the time zone given (an IANA name): a day runs from local
//! midnight to the next, so a day when clocks change lasts 23 or 25 hours, and hours are the
//! local clock's (the hour repeated when clocks go back is two buckets). Their bounds are
//! computed here with `chrono-tz` and PostgreSQL counts rows into them (`width_bucket`).
//!
//! A ticket counts as sold when its booking is made, and as cancelled when it is cancelled, in
//! the bucket of each moment (so a bucket's net is sold − cancelled). An event is in a period's
//! figures when it was created before the period ends and ends after it starts: every booking
//! of the period belongs to such an event, and such an event without bookings counts as zero.

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::event::ratio;
use crate::error::{AppError, AppResult};

/// Most buckets one request may ask for: a leap year of hours.
pub const MAX_BUCKETS: usize = 366 * 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Hour,
    Day,
}

/// A time zone by its IANA name (`Europe/London`), or `BAD_USER_INPUT` with reason
/// `UNKNOWN_TIME_ZONE`.
pub fn time_zone(name: &str) -> AppResult<Tz> {
    name.parse::<Tz>().map_err(|_| AppError::BadUserInput {
        message: format!("unknown time zone {name:?}: use an IANA name such as Europe/London"),
        field: Some("timeZone"),
        reason: Some("UNKNOWN_TIME_ZONE"),
    })
}

/// Checks a period: `from` before `to`.
fn check_period(from: DateTime<Utc>, to: DateTime<Utc>) -> AppResult<()> {
    if from >= to {
        return Err(AppError::bad_input("to", "`to` must be after `from`"));
    }
    Ok(())
}

/// The start of the local day of `at` in `tz`: its midnight, or the first instant of the day
/// when midnight itself was skipped by a clock change.
fn start_of_day(at: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
    let date = at.with_timezone(&tz).date_naive();
    let mut time = NaiveTime::MIN;
    loop {
        if let Some(start) = tz.from_local_datetime(&date.and_time(time)).earliest() {
            return start.with_timezone(&Utc);
        }
        // Midnight did not happen that day (clocks jumped over it): try a little later.
        time += Duration::minutes(15);
    }
}

/// The bounds of the buckets covering `from..to`: `n + 1` instants for `n` buckets, the first
/// at the start of the local hour or day holding `from`, the last at or after `to`.
pub fn buckets(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    interval: Interval,
    tz: Tz,
) -> AppResult<Vec<DateTime<Utc>>> {
    check_period(from, to)?;
    let too_many = || AppError::BadUserInput {
        message: format!("at most {MAX_BUCKETS} buckets: ask for a shorter period or by DAY"),
        field: Some("to"),
        reason: Some("TOO_MANY_BUCKETS"),
    };
    // Cheap upper bound first, so a period of centuries is refused before any work.
    let hours = (to - from).num_hours() as usize;
    let limit = match interval {
        Interval::Hour => hours,
        Interval::Day => hours / 24,
    };
    if limit > MAX_BUCKETS + 2 {
        return Err(too_many());
    }
    let mut bounds = Vec::new();
    match interval {
        Interval::Day => {
            let mut start = start_of_day(from, tz);
            bounds.push(start);
            while start < to {
                // Noon of the next local day is inside that day whatever its clock changes.
                let next_noon = start
                    .with_timezone(&tz)
                    .date_naive()
                    .succ_opt()
                    .ok_or_else(too_many)?;
                let next = tz
                    .from_local_datetime(&next_noon.and_hms_opt(12, 0, 0).unwrap_or_default())
                    .earliest()
                    .map(|noon| start_of_day(noon.with_timezone(&Utc), tz))
                    .ok_or_else(too_many)?;
                start = next;
                bounds.push(start);
            }
        }
        Interval::Hour => {
            // Local hours start at whole hours of the offset in force, so step from the start
            // of the local hour holding `from`; a zone whose offset changes by part of an hour
            // (Lord Howe) gets its buckets re-aligned at each change.
            let local = from.with_timezone(&tz);
            let into_hour = Duration::seconds(i64::from(chrono::Timelike::minute(&local)) * 60)
                + Duration::seconds(i64::from(chrono::Timelike::second(&local)))
                + Duration::nanoseconds(i64::from(chrono::Timelike::nanosecond(&local)));
            let mut start = from - into_hour;
            bounds.push(start);
            while start < to {
                start += Duration::hours(1);
                let local = start.with_timezone(&tz);
                let off = i64::from(chrono::Timelike::minute(&local)) * 60
                    + i64::from(chrono::Timelike::second(&local));
                start -= Duration::seconds(off);
                bounds.push(start);
            }
        }
    }
    if bounds.len() > MAX_BUCKETS + 1 {
        return Err(too_many());
    }
    Ok(bounds)
}

/// One bucket's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bucket {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub bookings: i64,
    pub tickets_sold: i64,
    pub cancellations: i64,
    pub tickets_cancelled: i64,
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

/// Bookings made and cancelled in each bucket, of one event or (`None`) of all.
async fn booking_buckets(
    conn: &mut AsyncPgConnection,
    event_id: Option<Uuid>,
    bounds: &[DateTime<Utc>],
) -> AppResult<Vec<Bucket>> {
    // Two fixed statements rather than `$1 IS NULL OR …`, so each keeps its index.
    let of_event = if event_id.is_some() {
        "event_id = $2 AND"
    } else {
        "$2::uuid IS NULL AND"
    };
    let sql = format!(
        "SELECT bucket, sum(bookings)::bigint AS bookings, sum(tickets_sold)::bigint AS tickets_sold,
                sum(cancellations)::bigint AS cancellations,
                sum(tickets_cancelled)::bigint AS tickets_cancelled
         FROM (SELECT width_bucket(created_at, $1) AS bucket, count(*) AS bookings,
                      sum(quantity) AS tickets_sold, 0 AS cancellations, 0 AS tickets_cancelled
               FROM bookings
               WHERE {of_event} created_at >= $1[1] AND created_at < $1[array_length($1, 1)]
               GROUP BY 1
               UNION ALL
               SELECT width_bucket(cancelled_at, $1), 0, 0, count(*), sum(quantity)
               FROM bookings
               WHERE {of_event} cancelled_at >= $1[1] AND cancelled_at < $1[array_length($1, 1)]
               GROUP BY 1) counted
         GROUP BY bucket"
    );
    let rows: Vec<BucketRow> = diesel::sql_query(sql)
        .bind::<Array<Timestamptz>, _>(bounds)
        .bind::<Nullable<diesel::sql_types::Uuid>, _>(event_id)
        .load(conn)
        .await?;
    let mut buckets = empty_buckets(bounds);
    for row in rows {
        if let Some(bucket) = buckets.get_mut((row.bucket as usize).wrapping_sub(1)) {
            bucket.bookings = row.bookings;
            bucket.tickets_sold = row.tickets_sold;
            bucket.cancellations = row.cancellations;
            bucket.tickets_cancelled = row.tickets_cancelled;
        }
    }
    Ok(buckets)
}

fn empty_buckets(bounds: &[DateTime<Utc>]) -> Vec<Bucket> {
    bounds
        .windows(2)
        .map(|pair| Bucket {
            start: pair[0],
            end: pair[1],
            ..Bucket::default()
        })
        .collect()
}

/// Tickets sold and cancelled of one event, per bucket of `bounds` (from [`buckets`]).
pub async fn sales_over_time(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    bounds: &[DateTime<Utc>],
) -> AppResult<Vec<Bucket>> {
    booking_buckets(conn, Some(event_id), bounds).await
}

/// Totals of a set of events over a period.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Totals {
    pub events: i64,
    pub bookings: i64,
    pub tickets_sold: i64,
    pub cancellations: i64,
    pub tickets_cancelled: i64,
}

impl Totals {
    pub fn cancellation_rate(&self) -> f64 {
        ratio(self.cancellations, self.bookings)
    }

    fn add(&mut self, event: &EventFigures) {
        self.events += 1;
        self.bookings += event.bookings;
        self.tickets_sold += event.tickets_sold;
        self.cancellations += event.cancellations;
        self.tickets_cancelled += event.tickets_cancelled;
    }
}

/// One event's figures over a period, with its seat counts now.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct EventFigures {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub event_id: Uuid,
    #[diesel(sql_type = Text)]
    pub title: String,
    #[diesel(sql_type = Text)]
    pub category: String,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Timestamptz)]
    pub starts_at: DateTime<Utc>,
    #[diesel(sql_type = Integer)]
    pub capacity: i32,
    /// Seats in confirmed bookings now.
    #[diesel(sql_type = Integer)]
    pub sold_now: i32,
    #[diesel(sql_type = BigInt)]
    pub bookings: i64,
    #[diesel(sql_type = BigInt)]
    pub tickets_sold: i64,
    #[diesel(sql_type = BigInt)]
    pub cancellations: i64,
    #[diesel(sql_type = BigInt)]
    pub tickets_cancelled: i64,
}

/// The figures of every event in the period (see the module doc), the organizer's own when
/// `organizer` is given, else every event ever published. Events without bookings are there,
/// with zeros: the period's conditions are in the joins, never in a WHERE that would drop them.
async fn event_figures(
    conn: &mut AsyncPgConnection,
    organizer: Option<Uuid>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> AppResult<Vec<EventFigures>> {
    let whose = if organizer.is_some() {
        "e.organizer_id = $3"
    } else {
        "$3::uuid IS NULL AND e.published_at IS NOT NULL"
    };
    let sql = format!(
        "WITH sold AS (
             SELECT event_id, count(*) AS bookings, sum(quantity) AS tickets
             FROM bookings WHERE created_at >= $1 AND created_at < $2 GROUP BY event_id),
         cancelled AS (
             SELECT event_id, count(*) AS cancellations, sum(quantity) AS tickets
             FROM bookings WHERE cancelled_at >= $1 AND cancelled_at < $2 GROUP BY event_id)
         SELECT e.id AS event_id, e.title, e.category, e.status, e.starts_at, e.capacity,
                e.capacity - e.seats_available - e.seats_held AS sold_now,
                coalesce(s.bookings, 0)::bigint AS bookings,
                coalesce(s.tickets, 0)::bigint AS tickets_sold,
                coalesce(c.cancellations, 0)::bigint AS cancellations,
                coalesce(c.tickets, 0)::bigint AS tickets_cancelled
         FROM events e
         LEFT JOIN sold s ON s.event_id = e.id
         LEFT JOIN cancelled c ON c.event_id = e.id
         WHERE {whose} AND e.created_at < $2 AND e.ends_at >= $1
         ORDER BY e.starts_at, e.id"
    );
    Ok(diesel::sql_query(sql)
        .bind::<Timestamptz, _>(from)
        .bind::<Timestamptz, _>(to)
        .bind::<Nullable<diesel::sql_types::Uuid>, _>(organizer)
        .load(conn)
        .await?)
}

/// An organizer's events over `from..to`: the totals and each event (see the module doc for
/// which events).
pub async fn organizer_stats(
    conn: &mut AsyncPgConnection,
    organizer: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> AppResult<(Totals, Vec<EventFigures>)> {
    check_period(from, to)?;
    let events = event_figures(conn, Some(organizer), from, to).await?;
    let mut totals = Totals::default();
    events.iter().for_each(|event| totals.add(event));
    Ok((totals, events))
}

/// One category's figures over a period.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryFigures {
    pub category: String,
    pub totals: Totals,
}

/// The platform over a period.
#[derive(Debug, Clone)]
pub struct PlatformStats {
    pub totals: Totals,
    /// Every event in the period, by start (what the totals count).
    pub events: Vec<EventFigures>,
    pub new_users: i64,
    /// The events with the most tickets sold in the period, most first (ties by start).
    pub top_events: Vec<EventFigures>,
    /// Every category of an event in the period, by name (letter case as stored).
    pub categories: Vec<CategoryFigures>,
    /// Bookings of the platform per day of the time zone.
    pub days: Vec<Bucket>,
    /// New accounts per day of the time zone.
    pub new_users_per_day: Vec<(DateTime<Utc>, i64)>,
}

/// The platform's figures over the days `bounds` (from [`buckets`] by day), with the `top`
/// events by tickets.
pub async fn platform_stats(
    conn: &mut AsyncPgConnection,
    bounds: &[DateTime<Utc>],
    top: usize,
) -> AppResult<PlatformStats> {
    let (from, to) = match (bounds.first(), bounds.last()) {
        (Some(from), Some(to)) if bounds.len() >= 2 => (*from, *to),
        _ => return Err(AppError::bad_input("to", "`to` must be after `from`")),
    };
    let events = event_figures(conn, None, from, to).await?;
    let mut totals = Totals::default();
    let mut categories: std::collections::BTreeMap<String, Totals> = Default::default();
    for event in &events {
        totals.add(event);
        categories
            .entry(event.category.clone())
            .or_default()
            .add(event);
    }
    let mut top_events = events.clone();
    top_events.sort_by(|a, b| {
        b.tickets_sold
            .cmp(&a.tickets_sold)
            .then(a.starts_at.cmp(&b.starts_at))
            .then(a.event_id.cmp(&b.event_id))
    });
    top_events.truncate(top);
    let days = booking_buckets(conn, None, bounds).await?;
    #[derive(QueryableByName)]
    struct UserRow {
        #[diesel(sql_type = Integer)]
        bucket: i32,
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let users: Vec<UserRow> = diesel::sql_query(
        "SELECT width_bucket(created_at, $1) AS bucket, count(*) AS n FROM users
         WHERE created_at >= $1[1] AND created_at < $1[array_length($1, 1)] GROUP BY 1",
    )
    .bind::<Array<Timestamptz>, _>(bounds)
    .load(conn)
    .await?;
    let mut new_users_per_day: Vec<(DateTime<Utc>, i64)> = bounds[..bounds.len() - 1]
        .iter()
        .map(|start| (*start, 0))
        .collect();
    for row in users {
        if let Some(day) = new_users_per_day.get_mut((row.bucket as usize).wrapping_sub(1)) {
            day.1 = row.n;
        }
    }
    Ok(PlatformStats {
        totals,
        events,
        new_users: new_users_per_day.iter().map(|(_, n)| n).sum(),
        top_events,
        categories: categories
            .into_iter()
            .map(|(category, totals)| CategoryFigures { category, totals })
            .collect(),
        days,
        new_users_per_day,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn hours(bounds: &[DateTime<Utc>]) -> Vec<i64> {
        bounds
            .windows(2)
            .map(|w| (w[1] - w[0]).num_hours())
            .collect()
    }

    #[test]
    fn a_spring_forward_day_lasts_23_hours_and_a_fall_back_day_25() {
        let london = time_zone("Europe/London").unwrap();
        // 2026: clocks go forward on 29 March and back on 25 October.
        let spring = buckets(
            at("2026-03-28T12:00:00Z"),
            at("2026-03-30T12:00:00Z"),
            Interval::Day,
            london,
        )
        .unwrap();
        assert_eq!(spring[0], at("2026-03-28T00:00:00Z"));
        assert_eq!(hours(&spring), vec![24, 23, 24]);
        let autumn = buckets(
            at("2026-10-24T12:00:00Z"),
            at("2026-10-26T12:00:00Z"),
            Interval::Day,
            london,
        )
        .unwrap();
        assert_eq!(autumn[1], at("2026-10-24T23:00:00Z"));
        assert_eq!(hours(&autumn), vec![24, 25, 24]);
    }

    #[test]
    fn hours_follow_the_local_clock_with_its_offset() {
        let kolkata = time_zone("Asia/Kolkata").unwrap();
        let bounds = buckets(
            at("2026-01-01T00:10:00Z"),
            at("2026-01-01T02:00:00Z"),
            Interval::Hour,
            kolkata,
        )
        .unwrap();
        // 00:10Z is 05:40 local; its hour started at 05:00 local, 23:30Z.
        assert_eq!(bounds[0], at("2025-12-31T23:30:00Z"));
        assert_eq!(bounds.len(), 4);
        let london = time_zone("Europe/London").unwrap();
        // The local day of 25 October 2026, when clocks went back: 25 local hours.
        let day = buckets(
            at("2026-10-24T23:00:00Z"),
            at("2026-10-26T00:00:00Z"),
            Interval::Hour,
            london,
        )
        .unwrap();
        assert_eq!(day.len() - 1, 25);
    }

    #[test]
    fn unknown_zones_and_huge_periods_are_refused() {
        assert_eq!(
            time_zone("Mars/Olympus").unwrap_err().code(),
            "BAD_USER_INPUT"
        );
        let utc = time_zone("UTC").unwrap();
        let err = buckets(
            at("2000-01-01T00:00:00Z"),
            at("2026-01-01T00:00:00Z"),
            Interval::Hour,
            utc,
        )
        .unwrap_err();
        assert_eq!(err.code(), "BAD_USER_INPUT");
        assert!(
            buckets(
                at("2026-01-02T00:00:00Z"),
                at("2026-01-01T00:00:00Z"),
                Interval::Day,
                utc
            )
            .is_err()
        );
    }
}
