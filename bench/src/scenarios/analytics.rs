//! `analytics`: the organizer's and admin's figures over a large history. A generator fills
//! the database in SQL (`INSERT … SELECT generate_series`): E events of the demo organizer
//! in eight categories, B bookings spread over the past year (one in twenty cancelled a day
//! later), and one more event with R attendees for the CSV export. Then it measures, one
//! request at a time, `eventStats` of random events, `salesOverTime` for a year by day,
//! `platformStats` for a year, and the attendee export of the big event (time, and the
//! server's RSS before and after when `--server-pid` is given).

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use super::{check_alive, secs};
use crate::Common;
use crate::client::Gql;
use crate::report::{Report, table};
use crate::stats::Samples;

const EVENT_STATS: &str = "query($id: ID!) { eventStats(eventId: $id) { sold held available \
    utilisation bookings tickets cancellations cancellationRate waitlistLength readAt } }";
const SALES: &str = "query($id: ID!, $from: DateTime!, $to: DateTime!) { salesOverTime(eventId: $id, \
    interval: DAY, from: $from, to: $to, timeZone: \"Europe/London\") { start ticketsSold ticketsCancelled } }";
const PLATFORM: &str = "query($from: DateTime!, $to: DateTime!) { platformStats(from: $from, to: $to, \
    timeZone: \"Europe/London\") { totals { events bookings ticketsSold cancellationRate } newUsers \
    topEvents { eventId ticketsSold } categories { category totals { ticketsSold } } \
    days { bookings } newUsersPerDay { count } } }";

#[derive(clap::Args)]
pub struct Options {
    /// Events to generate.
    #[arg(long, default_value_t = 1_000)]
    events: usize,
    /// Bookings to generate across them.
    #[arg(long, default_value_t = 1_000_000)]
    bookings: usize,
    /// Attendees of the event the export downloads.
    #[arg(long, default_value_t = 100_000)]
    export_rows: usize,
    /// Requests per measured query.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// Measure the data already generated (by an earlier run) instead of generating more.
    #[arg(long)]
    no_generate: bool,
    /// An admin account, for `platformStats` (the demo data has this one).
    #[arg(long, default_value = "admin@evently.test")]
    admin_email: String,
    #[arg(long, default_value = "admin-demo-pass")]
    admin_password: String,
}

/// Fills the database; returns the generated events and the export's event.
async fn generate(common: &Common, options: &Options) -> anyhow::Result<(Vec<String>, String)> {
    let (db, connection) =
        tokio_postgres::connect(&common.database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let organizer: String = db
        .query_one(
            "SELECT id::text FROM users WHERE email = $1",
            &[&common.organizer_email],
        )
        .await
        .context("the organizer account (seed the demo data first)")?
        .get(0);
    let started = Instant::now();
    let buyers = (options.bookings / 100).clamp(100, 10_000) as i64;
    db.execute(
        "INSERT INTO users (id, email, name, password_hash, role, created_at, updated_at)
         SELECT gen_random_uuid(), 'gen-' || $1 || '-' || i || '@bench.test', 'Buyer ' || i,
                'not a hash', 'USER', now() - random() * interval '365 days', now()
         FROM generate_series(1, $2::bigint) i",
        &[&run, &buyers],
    )
    .await?;
    let events = options.events as i64;
    db.execute(
        "INSERT INTO events (id, organizer_id, title, category, venue, starts_at, ends_at, capacity,
                             seats_available, created_at, updated_at, published_at)
         SELECT gen_random_uuid(), $1::text::uuid, 'gen-' || $2 || ' ' || i,
                (ARRAY['Music','Theatre','Comedy','Sport','Film','Talks','Family','Food'])[1 + i % 8],
                'Bench Hall', now() + interval '30 days' + i * interval '1 hour',
                now() + interval '30 days' + i * interval '1 hour' + interval '2 hours',
                1000000, 1000000, now() - interval '366 days', now(), now() - interval '366 days'
         FROM generate_series(0, $3::bigint) i",
        &[&organizer, &run, &events],
    )
    .await?;
    // The last one (number `events`) is the export's.
    let bookings = options.bookings as i64;
    db.execute(
        "WITH ev AS (SELECT array_agg(id ORDER BY title) AS a FROM events
                     WHERE title LIKE 'gen-' || $1 || ' %' AND title <> 'gen-' || $1 || ' ' || $3::bigint),
              us AS (SELECT array_agg(id) AS a FROM users WHERE email LIKE 'gen-' || $1 || '-%')
         INSERT INTO bookings (id, event_id, user_id, quantity, status, created_at, cancelled_at)
         SELECT gen_random_uuid(), ev.a[1 + i % array_length(ev.a, 1)],
                us.a[1 + (i * 7919) % array_length(us.a, 1)], 1 + i % 4,
                CASE WHEN i % 20 = 0 THEN 'CANCELLED' ELSE 'CONFIRMED' END, t.at,
                CASE WHEN i % 20 = 0 THEN t.at + interval '1 day' END
         FROM ev, us, generate_series(1, $2::bigint) i,
              LATERAL (SELECT now() - interval '365 days' + random() * interval '364 days' + i * interval '0 s' AS at) t",
        &[&run, &bookings, &events],
    )
    .await?;
    let export_rows = options.export_rows as i64;
    db.execute(
        "WITH us AS (SELECT array_agg(id) AS a FROM users WHERE email LIKE 'gen-' || $1 || '-%')
         INSERT INTO bookings (id, event_id, user_id, quantity, status, created_at)
         SELECT gen_random_uuid(), (SELECT id FROM events WHERE title = 'gen-' || $1 || ' ' || $3::bigint),
                us.a[1 + i % array_length(us.a, 1)], 1, 'CONFIRMED',
                now() - interval '10 days' + i * interval '1 ms'
         FROM us, generate_series(1, $2::bigint) i",
        &[&run, &export_rows, &events],
    )
    .await?;
    db.execute(
        "UPDATE events e SET seats_available = e.capacity - coalesce(
             (SELECT sum(quantity) FROM bookings b WHERE b.event_id = e.id AND b.status = 'CONFIRMED'), 0)
         WHERE title LIKE 'gen-' || $1 || ' %'",
        &[&run],
    )
    .await?;
    db.batch_execute("ANALYZE users; ANALYZE events; ANALYZE bookings")
        .await?;
    println!(
        "generated {events} events, {bookings} bookings, {export_rows} attendees and {buyers} buyers in {:.1} s",
        secs(started.elapsed())
    );
    let rows = db
        .query(
            "SELECT id::text, title = 'gen-' || $1 || ' ' || $2::bigint FROM events WHERE title LIKE 'gen-' || $1 || ' %'",
            &[&run, &events],
        )
        .await?;
    let mut generated = Vec::new();
    let mut export = String::new();
    for row in rows {
        if row.get::<_, bool>(1) {
            export = row.get(0);
        } else {
            generated.push(row.get(0));
        }
    }
    Ok((generated, export))
}

/// The events an earlier run generated, and its export event (the one with most bookings).
async fn generated(common: &Common) -> anyhow::Result<(Vec<String>, String)> {
    let (db, connection) =
        tokio_postgres::connect(&common.database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let events: Vec<String> = db
        .query("SELECT id::text FROM events WHERE title LIKE 'gen-%'", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let export: String = db
        .query_one(
            "SELECT event_id::text FROM bookings GROUP BY event_id ORDER BY count(*) DESC LIMIT 1",
            &[],
        )
        .await?
        .get(0);
    anyhow::ensure!(
        !events.is_empty(),
        "no generated events: run without --no-generate"
    );
    Ok((events, export))
}

async fn measure(
    samples: &mut Samples,
    start: Instant,
    count: usize,
    mut call: impl AsyncFnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for i in 0..count {
        let started = Instant::now();
        call(i).await?;
        samples.record(start, started, Instant::now());
    }
    Ok(())
}

pub async fn run(common: &Common, options: Options) -> anyhow::Result<()> {
    check_alive(common.server_pid)?;
    let (events, export_event) = if options.no_generate {
        generated(common).await?
    } else {
        generate(common, &options).await?
    };
    let gql = Gql::new(&common.url)?;
    let organizer = gql
        .login(&common.organizer_email, &common.organizer_password)
        .await?;
    let admin = gql
        .login(&options.admin_email, &options.admin_password)
        .await?;
    let now = chrono::Utc::now();
    let year = json!({
        "from": (now - chrono::Duration::days(365)).to_rfc3339(),
        "to": now.to_rfc3339(),
    });
    let start = Instant::now();
    let (mut stats, mut sales, mut platform) =
        (Samples::default(), Samples::default(), Samples::default());
    let pick = |i: usize| events[(i * 7919) % events.len()].clone();
    measure(&mut stats, start, options.samples, async |i| {
        gql.expect(Some(&organizer), EVENT_STATS, json!({ "id": pick(i) }))
            .await
            .map(drop)
    })
    .await?;
    measure(&mut sales, start, options.samples, async |i| {
        let mut vars = year.clone();
        vars["id"] = json!(pick(i));
        gql.expect(Some(&organizer), SALES, vars).await.map(drop)
    })
    .await?;
    measure(&mut platform, start, options.samples.min(50), async |_| {
        gql.expect(Some(&admin), PLATFORM, year.clone())
            .await
            .map(drop)
    })
    .await?;

    // The export: its time, its size, and the server's memory around it.
    let rss_before = common.server_pid.map(crate::system::rss_kib).transpose()?;
    let url = format!(
        "{}/exports/events/{export_event}/attendees.csv",
        common.url.trim_end_matches('/')
    );
    let started = Instant::now();
    let mut response = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&organizer)
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "export: HTTP {}",
        response.status()
    );
    let (mut bytes, mut lines, mut rss_peak) = (0usize, 0usize, rss_before.unwrap_or(0));
    while let Some(chunk) = response.chunk().await? {
        bytes += chunk.len();
        lines += chunk.iter().filter(|b| **b == b'\n').count();
        if let Some(pid) = common.server_pid {
            rss_peak = rss_peak.max(crate::system::rss_kib(pid)?);
        }
    }
    let export_time = started.elapsed();
    let rows_exported = lines.saturating_sub(1);

    let (s, t, p) = (stats.summary(), sales.summary(), platform.summary());
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    let rows = [
        (
            "data",
            if options.no_generate {
                format!("generated earlier: {} events", events.len())
            } else {
                format!(
                    "generated now: {} events, {} bookings",
                    options.events, options.bookings
                )
            },
        ),
        (
            "**eventStats p99** (target 20 ms)",
            format!("**{:.2} ms**", s.p99_ms),
        ),
        (
            "**salesOverTime, a year by day, p99** (target 50 ms)",
            format!("**{:.2} ms**", t.p99_ms),
        ),
        (
            "**platformStats, a year, p99** (target 200 ms)",
            format!("**{:.2} ms**", p.p99_ms),
        ),
        (
            "**attendees.csv**",
            format!(
                "**{rows_exported} rows, {bytes} bytes in {}** (target 5 s for 100,000)",
                ms(export_time)
            ),
        ),
        (
            "server RSS before / peak during the export",
            match rss_before {
                Some(before) => format!(
                    "{before} / {rss_peak} KiB (+{} KiB)",
                    rss_peak.saturating_sub(before)
                ),
                None => "n/a (pass --server-pid)".into(),
            },
        ),
    ];
    let markdown = format!(
        "{}\n{}\n{}\n{}\n{}\n",
        table(&rows),
        crate::stats::Latency::HEADER,
        s.row("eventStats"),
        t.row("salesOverTime (year, DAY)"),
        p.row("platformStats (year)")
    );
    Report {
        scenario: "analytics",
        common,
        results: json!({
            "options": { "events": options.events, "bookings": options.bookings,
                         "export_rows": options.export_rows, "samples": options.samples },
            "event_stats": s,
            "sales_over_time": t,
            "platform_stats": p,
            "export": { "rows": rows_exported, "bytes": bytes, "seconds": secs(export_time),
                        "rss_before_kib": rss_before, "rss_peak_kib": rss_peak },
        }),
        markdown,
        series: vec![
            ("eventStats", &stats),
            ("salesOverTime", &sales),
            ("platformStats", &platform),
        ],
    }
    .write()?;
    Ok(())
}
