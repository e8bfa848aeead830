//! `onsale`: C buyers book one event (or `--events` N, spread over them) until it is sold out,
//! then keep trying for a while. With `--probes` (always with `--events` above 1), one visitor
//! browses and one signs in meanwhile, back to back, to show what the onsale leaves for everyone
//! else: off by default, since each sign-in is a full argon2 hash that takes a core from the
//! server, PostgreSQL and this tool on a 2-core machine, and the headline booking rate would
//! measure the prober as much as the booking path. Afterwards the server is killed (as a
//! crash would) and every booking a client was told is confirmed is looked up in PostgreSQL,
//! along with the capacity invariant.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use uuid::Uuid;

use super::{check_alive, secs};
use crate::Common;
use crate::baseline;
use crate::client::{Answer, BOOK, Gql};
use crate::report::{Report, table};
use crate::stats::Samples;
use crate::system::{CpuMeter, kill_hard};

#[derive(clap::Args)]
pub struct Options {
    /// Seats on sale, per event.
    #[arg(long, default_value_t = 20_000)]
    capacity: i64,
    /// Hot events on sale at once; buyer i books event i mod N.
    #[arg(long, default_value_t = 1)]
    events: usize,
    /// Concurrent buyers, each with their own account and connection.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Seats per booking.
    #[arg(long, default_value_t = 1)]
    quantity: i64,
    /// How long buyers keep trying once the event is sold out.
    #[arg(long, default_value_t = 5)]
    after_sellout_secs: u64,
    /// Upper bound on the whole run.
    #[arg(long, default_value_t = 120)]
    max_secs: u64,
    /// Send bookings without an idempotency key.
    #[arg(long)]
    no_idempotency_keys: bool,
    /// Time a signed-in browse and a login, back to back, during the onsale (always on with
    /// `--events` above 1).
    #[arg(long)]
    probes: bool,
    /// Do not kill the server at the end (the durability check then runs on a live server).
    #[arg(long)]
    no_crash: bool,
    #[command(flatten)]
    baseline: baseline::Options,
}

/// A signed-in `events(first: 20)`: signed in, so that no cached answer hides the database.
const BROWSE: &str = "query { events(first: 20) { edges { node { id title seatsAvailable } } } }";
const LOGIN: &str = "mutation($input: LoginInput!) { login(input: $input) { accessToken } }";

#[derive(Default)]
struct Buyer {
    event: usize,
    confirmed: Samples,
    rejected: Samples,
    booking_ids: Vec<String>,
    errors: BTreeMap<String, u64>,
    last_confirmed: Option<Instant>,
    last_finished: Option<Instant>,
}

pub async fn run(common: &Common, options: Options) -> anyhow::Result<()> {
    check_alive(common.server_pid)?;
    let gql = Gql::new(&common.url)?;
    let pgbench = if common.no_baseline {
        Vec::new()
    } else {
        baseline::run_all(common, &gql, &options.baseline).await?
    };

    let organizer = gql
        .login(&common.organizer_email, &common.organizer_password)
        .await?;
    anyhow::ensure!(options.events >= 1, "--events must be at least 1");
    let mut event_ids = Vec::new();
    for _ in 0..options.events {
        let event_id = gql
            .create_event(
                &organizer,
                "Onsale",
                options.capacity,
                options.quantity.max(10),
            )
            .await?;
        event_ids.push(event_id);
    }
    let run_id = Uuid::new_v4().simple().to_string()[..8].to_owned();
    println!("registering {} buyers", options.concurrency);
    let buyers = gql.register_buyers(&run_id, options.concurrency).await?;

    println!(
        "onsale: {} event(s) of {} seats, {} buyers",
        options.events, options.capacity, options.concurrency
    );
    let cpu = common.server_pid.map(CpuMeter::start).transpose()?;
    let start = Instant::now();
    let sold_out: Vec<Arc<OnceLock<Instant>>> =
        (0..options.events).map(|_| Arc::default()).collect();
    let after = Duration::from_secs(options.after_sellout_secs);
    let deadline = start + Duration::from_secs(options.max_secs);
    let done = Arc::new(AtomicBool::new(false));
    let probing = options.probes || options.events > 1;
    let probes = spawn_probes(
        &gql,
        &organizer,
        common,
        start,
        deadline,
        done.clone(),
        probing,
    );
    let mut tasks = Vec::new();
    for (i, (_, token)) in buyers.into_iter().enumerate() {
        let event = i % options.events;
        let (gql, sold_out_at, event_id) = (
            gql.clone(),
            sold_out[event].clone(),
            event_ids[event].clone(),
        );
        let (quantity, keys) = (options.quantity, !options.no_idempotency_keys);
        tasks.push(tokio::spawn(async move {
            let mut me = Buyer {
                event,
                ..Buyer::default()
            };
            loop {
                let now = Instant::now();
                if now > deadline || sold_out_at.get().is_some_and(|t| now > *t + after) {
                    return me;
                }
                let key = keys.then(|| Uuid::new_v4().to_string());
                let variables = json!({ "input": {
                    "eventId": event_id, "quantity": quantity, "idempotencyKey": key,
                } });
                let started = Instant::now();
                let answer = gql.call(Some(&token), BOOK, variables).await;
                let finished = Instant::now();
                me.last_finished = Some(finished);
                match answer {
                    Ok(Answer::Data(data)) => {
                        me.confirmed.record(start, started, finished);
                        me.last_confirmed = Some(finished);
                        if let Some(id) = data["bookSeats"]["id"].as_str() {
                            me.booking_ids.push(id.to_owned());
                        }
                    }
                    Ok(Answer::Error(code)) if code == "SOLD_OUT" => {
                        sold_out_at.get_or_init(|| finished);
                        me.rejected.record(start, started, finished);
                    }
                    Ok(Answer::Error(code)) => *me.errors.entry(code).or_default() += 1,
                    Err(error) => *me.errors.entry(format!("transport: {error}")).or_default() += 1,
                }
            }
        }));
    }
    let mut all = Buyer::default();
    let mut booked: Vec<Vec<String>> = vec![Vec::new(); options.events];
    for task in tasks {
        let buyer = task.await?;
        all.confirmed.merge(buyer.confirmed);
        all.rejected.merge(buyer.rejected);
        booked[buyer.event].extend(buyer.booking_ids);
        for (code, n) in buyer.errors {
            *all.errors.entry(code).or_default() += n;
        }
        all.last_confirmed = all.last_confirmed.max(buyer.last_confirmed);
        all.last_finished = all.last_finished.max(buyer.last_finished);
    }
    done.store(true, Ordering::Relaxed);
    let (browse, login, probe_errors) = probes.await?;
    let server_cores = cpu.map(|c| c.cores()).transpose()?;

    let crashed = match common.server_pid {
        Some(pid) if !options.no_crash => {
            kill_hard(pid)?;
            true
        }
        _ => false,
    };
    let mut checks = Vec::new();
    for (event_id, reported) in event_ids.iter().zip(&booked) {
        checks.push(verify(common, event_id, reported).await?);
    }
    let check = checks
        .into_iter()
        .reduce(Check::add)
        .expect("at least one event");

    let selling = all.last_confirmed.map_or(0.0, |t| secs(t - start));
    let confirmed_per_sec = all.confirmed.count() as f64 / selling.max(f64::EPSILON);
    let first_sold_out = sold_out.iter().filter_map(|at| at.get().copied()).min();
    let rejecting = match (first_sold_out, all.last_finished) {
        (Some(from), Some(to)) if to > from => secs(to - from),
        _ => 0.0,
    };
    let rejections_per_sec = all.rejected.count() as f64 / rejecting.max(f64::EPSILON);
    let confirmed = all.confirmed.summary();
    let rejected = all.rejected.summary();
    let (browse_latency, login_latency) = (browse.summary(), login.summary());

    let mut rows: Vec<(String, String)> = vec![
        (
            "buyers (concurrent)".into(),
            options.concurrency.to_string(),
        ),
        ("events".into(), options.events.to_string()),
        ("capacity (per event)".into(), options.capacity.to_string()),
        (
            "idempotency keys".into(),
            (!options.no_idempotency_keys).to_string(),
        ),
        (
            "confirmed bookings".into(),
            all.confirmed.count().to_string(),
        ),
        ("sold out after".into(), format!("{selling:.2} s")),
        (
            "**confirmed bookings/s**".into(),
            format!("**{confirmed_per_sec:.0}**"),
        ),
        (
            "booking latency p50 / p99 / max".into(),
            format!(
                "{:.1} / {:.1} / {:.1} ms",
                confirmed.p50_ms, confirmed.p99_ms, confirmed.max_ms
            ),
        ),
        (
            "**SOLD_OUT rejections/s after sell-out**".into(),
            format!("**{rejections_per_sec:.0}**"),
        ),
        (
            "rejection latency p50 / p99 / max".into(),
            format!(
                "{:.1} / {:.1} / {:.1} ms",
                rejected.p50_ms, rejected.p99_ms, rejected.max_ms
            ),
        ),
        ("other errors".into(), format!("{:?}", all.errors)),
        (
            "server CPU (cores busy)".into(),
            server_cores.map_or("n/a".into(), |c| format!("{c:.2}")),
        ),
        (
            "server killed with SIGKILL before the check".into(),
            crashed.to_string(),
        ),
        ("**oversold**".into(), format!("**{}**", check.oversold)),
        (
            "invariant capacity − available − held = confirmed seats".into(),
            check.invariant_holds.to_string(),
        ),
        (
            "confirmed to a client but missing from the database".into(),
            check.missing.to_string(),
        ),
        (
            "confirmed in the database but not to any client".into(),
            check.unreported.to_string(),
        ),
    ];
    if probing {
        rows.extend([
            (
                "**browse `events(first: 20)` during the onsale: p50 / p99 / max**".into(),
                format!(
                    "{:.1} / **{:.1}** / {:.1} ms ({} requests)",
                    browse_latency.p50_ms,
                    browse_latency.p99_ms,
                    browse_latency.max_ms,
                    browse.count()
                ),
            ),
            (
                "**login during the onsale: p50 / p99 / max**".into(),
                format!(
                    "{:.1} / **{:.1}** / {:.1} ms ({} requests)",
                    login_latency.p50_ms,
                    login_latency.p99_ms,
                    login_latency.max_ms,
                    login.count()
                ),
            ),
            (
                "browse and login errors".into(),
                format!("{probe_errors:?}"),
            ),
        ]);
    }
    rows.extend(baseline::rows(&pgbench));
    for run in &pgbench {
        rows.push((
            format!("ratio ours / pgbench at {} clients", run.clients),
            format!("**{:.1}×**", confirmed_per_sec / run.bookings_per_sec),
        ));
    }
    let rows: Vec<(&str, String)> = rows.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    Report {
        scenario: "onsale",
        common,
        results: json!({
            "options": {
                "capacity": options.capacity, "concurrency": options.concurrency,
                "events": options.events,
                "quantity": options.quantity, "after_sellout_secs": options.after_sellout_secs,
                "idempotency_keys": !options.no_idempotency_keys,
            },
            "confirmed": all.confirmed.count(),
            "sold_out_after_secs": selling,
            "confirmed_per_sec": confirmed_per_sec,
            "booking_latency": confirmed,
            "rejections": all.rejected.count(),
            "rejections_per_sec": rejections_per_sec,
            "rejection_latency": rejected,
            "errors": all.errors,
            "browse_latency": browse_latency,
            "login_latency": login_latency,
            "probe_errors": probe_errors,
            "server_cores": server_cores,
            "crashed_before_check": crashed,
            "check": check,
            "pgbench": pgbench,
        }),
        markdown: table(&rows),
        series: vec![
            ("booking", &all.confirmed),
            ("SOLD_OUT", &all.rejected),
            ("browse", &browse),
            ("login", &login),
        ],
    }
    .write()?;
    anyhow::ensure!(
        check.oversold == 0 && check.invariant_holds && check.missing == 0,
        "the onsale check failed"
    );
    Ok(())
}

type ProbeResults = (Samples, Samples, BTreeMap<String, u64>);

/// One visitor browsing and one signing in (as the organizer), each back to back, until
/// `done` or `deadline`.
fn spawn_probes(
    gql: &Gql,
    organizer: &str,
    common: &Common,
    start: Instant,
    deadline: Instant,
    done: Arc<AtomicBool>,
    probing: bool,
) -> tokio::task::JoinHandle<ProbeResults> {
    let (gql, organizer) = (gql.clone(), organizer.to_owned());
    let credentials = json!({ "input": {
        "email": common.organizer_email, "password": common.organizer_password,
    } });
    tokio::spawn(async move {
        let errors = std::sync::Mutex::new(BTreeMap::<String, u64>::new());
        let probe = async |token: Option<&str>, query: &str, variables: &serde_json::Value| {
            let mut samples = Samples::default();
            while probing && !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                let started = Instant::now();
                let answer = gql.call(token, query, variables.clone()).await;
                match answer {
                    Ok(Answer::Data(_)) => samples.record(start, started, Instant::now()),
                    Ok(Answer::Error(code)) => {
                        *errors.lock().unwrap().entry(code).or_default() += 1;
                    }
                    Err(error) => {
                        let key = format!("transport: {error}");
                        *errors.lock().unwrap().entry(key).or_default() += 1;
                    }
                }
            }
            samples
        };
        let no_variables = json!({});
        let (browse, login) = tokio::join!(
            probe(Some(&organizer), BROWSE, &no_variables),
            probe(None, LOGIN, &credentials),
        );
        (browse, login, errors.into_inner().unwrap())
    })
}

#[derive(Debug, serde::Serialize)]
struct Check {
    capacity: i64,
    seats_available: i64,
    seats_held: i64,
    confirmed_seats: i64,
    oversold: i64,
    invariant_holds: bool,
    missing: i64,
    unreported: i64,
}

impl Check {
    /// Adds up two events' checks.
    fn add(mut self, other: Check) -> Check {
        self.capacity += other.capacity;
        self.seats_available += other.seats_available;
        self.seats_held += other.seats_held;
        self.confirmed_seats += other.confirmed_seats;
        self.oversold += other.oversold;
        self.invariant_holds &= other.invariant_holds;
        self.missing += other.missing;
        self.unreported += other.unreported;
        self
    }
}

/// What PostgreSQL says after the run.
async fn verify(common: &Common, event_id: &str, reported: &[String]) -> anyhow::Result<Check> {
    let (client, connection) = tokio_postgres::connect(&common.database_url, tokio_postgres::NoTls)
        .await
        .context("connecting to the database to check the result")?;
    tokio::spawn(connection);
    let event = client
        .query_one(
            "SELECT capacity::bigint, seats_available::bigint, seats_held::bigint
             FROM events WHERE id = $1::text::uuid",
            &[&event_id],
        )
        .await?;
    let (capacity, seats_available, seats_held): (i64, i64, i64) =
        (event.get(0), event.get(1), event.get(2));
    let confirmed = client
        .query_one(
            "SELECT coalesce(sum(quantity), 0)::bigint, count(*)
             FROM bookings WHERE event_id = $1::text::uuid AND status = 'CONFIRMED'",
            &[&event_id],
        )
        .await?;
    let (confirmed_seats, confirmed_rows): (i64, i64) = (confirmed.get(0), confirmed.get(1));
    let found: i64 = client
        .query_one(
            "SELECT count(*) FROM bookings
             WHERE id = ANY($1::text[]::uuid[]) AND status = 'CONFIRMED'",
            &[&reported],
        )
        .await?
        .get(0);
    let reported = i64::try_from(reported.len())?;
    Ok(Check {
        capacity,
        seats_available,
        seats_held,
        confirmed_seats,
        oversold: (confirmed_seats + seats_held - capacity).max(0),
        invariant_holds: capacity - seats_available - seats_held == confirmed_seats
            && seats_available >= 0,
        missing: reported - found,
        unreported: confirmed_rows - found,
    })
}
