//! `chaos`: an onsale through nginx in front of N instances while something breaks, and what
//! that cost. Each run starts a deployment of its own (`crate::cluster`: its own PostgreSQL,
//! Redis, instances and nginx), so it may kill anything. Buyers book one seat at a time, each
//! booking with a fresh idempotency key that they retry (after a transport error, a 5xx or a
//! retryable code) until they hear a definite answer; subscribers watch the event's seat count
//! over graphql-transport-ws and reconnect through nginx whenever their socket ends. Faults:
//!
//! - `kill`: SIGKILL one instance mid-onsale (it stays down);
//! - `rolling`: the restart procedure of `scripts/cluster.sh restart`: for each instance in
//!   turn, take it out of nginx (`down`, reload), SIGTERM it, wait for it to exit, start it
//!   again, wait until it is ready, put it back;
//! - `rolling-unannounced`: the same without telling nginx: SIGTERM alone, with only the
//!   instance's drain and nginx's passive checks to move the traffic;
//! - `postgres`: stop PostgreSQL (`-m fast`, as a restart does; `--postgres-stop immediate`
//!   for a crash), keep it down a while, start it;
//!   the instances are not restarted;
//! - `redis`: kill Redis and start an empty one; then freeze it (SIGSTOP) for a while and
//!   thaw it, watching every instance's `/readyz` say `degraded` meanwhile.
//!
//! Afterwards the checks, in PostgreSQL: every booking a buyer heard confirmed is there, no key
//! got two bookings, `capacity − available − held = confirmed seats`, and every subscriber ends
//! on the event's final version. The same code runs in `scripts/chaos.sh` (the `bench chaos`
//! command) and, smaller, in the test suite (`tests/chaos.rs`); `Outcome::failures` is the one
//! list of what must hold.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use uuid::Uuid;

use crate::Common;
use crate::client::{BOOK, Gql, Subscriber};
use crate::cluster::{Cluster, ClusterOptions, PostgresStop};
use crate::report::{Report, table};
use crate::stats::Samples;

const SUBSCRIPTION: &str =
    "subscription Seats($id: ID!) { seatAvailability(eventId: $id) { seatsAvailable version } }";
/// Codes after which the same key may be sent again: the booking may or may not have happened,
/// or did not happen for a passing reason.
const RETRYABLE: [&str; 5] = [
    "SERVICE_UNAVAILABLE",
    "OUTCOME_UNKNOWN",
    "TIMEOUT",
    "INTERNAL_SERVER_ERROR",
    "RATE_LIMITED",
];

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Kill,
    Rolling,
    RollingUnannounced,
    Postgres,
    Redis,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Rolling => "rolling",
            Self::RollingUnannounced => "rolling-unannounced",
            Self::Postgres => "postgres",
            Self::Redis => "redis",
        }
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct Options {
    /// The scenarios to run, in order (all when none is named).
    #[arg(value_enum)]
    pub faults: Vec<Fault>,
    /// The CI size: 32 buyers, 50 subscribers, a second of load before and after the fault.
    #[arg(long)]
    pub small: bool,
    /// Buyers, each with their own account (default 256; 32 with --small).
    #[arg(long)]
    pub buyers: Option<usize>,
    /// WebSocket subscribers on the event (default 1,000; 50 with --small).
    #[arg(long)]
    pub subscribers: Option<usize>,
    #[arg(long, default_value_t = 3)]
    pub instances: usize,
    /// Seats on sale: enough that the sale is still on when the fault comes.
    #[arg(long, default_value_t = 1_000_000)]
    pub capacity: i64,
    /// How long PostgreSQL stays down, and Redis frozen (6 s).
    #[arg(long)]
    pub outage_secs: Option<f64>,
    /// How PostgreSQL goes down in `postgres`: `fast` (a restart) or `immediate` (a crash).
    #[arg(long, value_enum, default_value = "fast")]
    pub postgres_stop: PostgresStop,
    /// The Evently binary the instances run.
    #[arg(long, env = "EVENTLY_BIN", default_value = "target/release/evently")]
    pub evently_bin: PathBuf,
    #[arg(long, default_value = "/usr/lib/postgresql/15/bin")]
    pub pg_bin_dir: PathBuf,
}

impl Options {
    /// The CI size of one scenario.
    pub fn small(fault: Fault, evently_bin: PathBuf) -> Self {
        Self {
            faults: vec![fault],
            small: true,
            buyers: None,
            subscribers: None,
            instances: 3,
            capacity: 1_000_000,
            outage_secs: None,
            postgres_stop: PostgresStop::Fast,
            evently_bin,
            pg_bin_dir: PathBuf::from("/usr/lib/postgresql/15/bin"),
        }
    }

    fn buyers(&self) -> usize {
        self.buyers.unwrap_or(if self.small { 32 } else { 256 })
    }

    fn subscribers(&self) -> usize {
        self.subscribers
            .unwrap_or(if self.small { 50 } else { 1_000 })
    }

    /// Load before the fault, and after it.
    fn calm(&self) -> Duration {
        Duration::from_secs(if self.small { 1 } else { 3 })
    }

    fn outage(&self) -> Duration {
        // Longer than a request waits for a pooled connection (5 s), so some are told
        // SERVICE_UNAVAILABLE rather than just waiting it out.
        Duration::from_secs_f64(self.outage_secs.unwrap_or(6.0))
    }
}

/// What one scenario came to: the figures it prints and the properties the tests assert.
#[derive(Debug, Default, Serialize)]
pub struct Outcome {
    pub scenario: &'static str,
    pub instances: usize,
    pub buyers: usize,
    pub subscribers: usize,
    /// Bookings a buyer heard confirmed.
    pub confirmed: u64,
    pub confirmed_during_fault: u64,
    pub attempts: u64,
    /// Requests sent again with the same key.
    pub retries: u64,
    /// Every answer that was not a booking, by `extensions.code` (`HTTP <status>` for an answer
    /// without JSON, `transport` for no answer).
    pub errors: BTreeMap<String, u64>,
    /// Signed-in `myBookings` reads during the run, and the codes of those that failed.
    pub reads: u64,
    pub read_errors: BTreeMap<String, u64>,
    /// 5xx answers by status; every one was on a booking with a key, so it could be retried.
    pub http_5xx: BTreeMap<u16, u64>,
    /// Keys given up on: still no definite answer 60 s after the first try.
    pub unresolved_keys: u64,
    /// (user, key) pairs with more than one booking row.
    pub duplicate_keys_in_database: i64,
    /// Heard confirmed, but PostgreSQL has no confirmed booking with that id and that key.
    pub missing: i64,
    pub capacity: i64,
    pub seats_available: i64,
    pub seats_held: i64,
    pub confirmed_seats: i64,
    pub invariant_holds: bool,
    pub final_version: i64,
    pub subscribers_converged: usize,
    pub subscriber_reconnects: u64,
    pub convergence_secs: f64,
    /// From the fault's start to the last failed attempt (0: none failed).
    pub recovered_after_secs: f64,
    pub fault_secs: f64,
    /// What the fault itself measured (drain times, `/readyz` answers, restarts...).
    pub fault: Value,
    pub booking_p99_ms: f64,
}

impl Outcome {
    /// What must hold after this scenario; empty when it passed.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        let mut check = |ok: bool, what: String| {
            if !ok {
                failures.push(what);
            }
        };
        check(self.confirmed > 0, "no booking was confirmed".into());
        check(
            self.missing == 0,
            format!(
                "{} confirmed bookings missing from PostgreSQL",
                self.missing
            ),
        );
        check(
            self.duplicate_keys_in_database == 0,
            format!(
                "{} keys with two bookings in PostgreSQL",
                self.duplicate_keys_in_database
            ),
        );
        check(
            self.invariant_holds,
            format!(
                "capacity {} − available {} − held {} ≠ confirmed seats {}",
                self.capacity, self.seats_available, self.seats_held, self.confirmed_seats
            ),
        );
        check(
            self.subscribers_converged == self.subscribers,
            format!(
                "{} of {} subscribers on the final version {}",
                self.subscribers_converged, self.subscribers, self.final_version
            ),
        );
        check(
            self.unresolved_keys == 0,
            format!("{} keys never got a definite answer", self.unresolved_keys),
        );
        let uncoded = |errors: &BTreeMap<String, u64>| {
            errors.get("NO_CODE").copied().unwrap_or(0)
                + errors.get("INTERNAL_SERVER_ERROR").copied().unwrap_or(0)
        };
        check(
            uncoded(&self.errors) + uncoded(&self.read_errors) == 0,
            format!(
                "answers without a useful code: bookings {:?}, reads {:?}",
                self.errors, self.read_errors
            ),
        );
        match self.scenario {
            "rolling" => check(
                self.http_5xx.is_empty(),
                format!("a rolling restart showed clients 5xx {:?}", self.http_5xx),
            ),
            "rolling-unannounced" => check(
                self.http_5xx.keys().all(|status| *status == 502),
                format!("5xx other than 502: {:?}", self.http_5xx),
            ),
            "postgres" => {
                check(
                    self.fault["instances_restarted"] == json!(0),
                    format!("instances restarted: {}", self.fault["instances_restarted"]),
                );
                check(
                    self.fault["instances_ready_again"] == json!(self.instances),
                    format!(
                        "instances ready again without a restart: {}",
                        self.fault["instances_ready_again"]
                    ),
                );
            }
            "redis" => {
                check(
                    self.fault["degraded_seen_while_frozen"] == json!(self.instances),
                    format!(
                        "instances whose /readyz said degraded while Redis was frozen: {}",
                        self.fault["degraded_seen_while_frozen"]
                    ),
                );
                check(
                    self.fault["confirmed_while_frozen"].as_u64() > Some(0),
                    "no booking confirmed while Redis was frozen".into(),
                );
            }
            _ => {}
        }
        failures
    }
}

/// `bench chaos`: runs the scenarios named (all by default), writes a report for each, and
/// fails if any property did not hold.
pub async fn run(common: &Common, options: Options) -> anyhow::Result<()> {
    let faults = if options.faults.is_empty() {
        vec![
            Fault::Kill,
            Fault::Rolling,
            Fault::RollingUnannounced,
            Fault::Postgres,
            Fault::Redis,
        ]
    } else {
        options.faults.clone()
    };
    let mut failed = Vec::new();
    for fault in faults {
        println!("==> chaos: {}", fault.name());
        let outcome = run_one(fault, &options).await?;
        write_report(common, &outcome)?;
        let failures = outcome.failures();
        for failure in &failures {
            eprintln!("FAILED ({}): {failure}", fault.name());
        }
        if !failures.is_empty() {
            failed.push(fault.name());
        }
    }
    anyhow::ensure!(failed.is_empty(), "chaos scenarios failed: {failed:?}");
    Ok(())
}

/// One scenario on a deployment of its own, from start to checks.
pub async fn run_one(fault: Fault, options: &Options) -> anyhow::Result<Outcome> {
    let mut cluster = Cluster::start(ClusterOptions {
        evently_bin: options.evently_bin.clone(),
        instances: options.instances,
        pg_bin_dir: options.pg_bin_dir.clone(),
        env: Vec::new(),
    })
    .await?;
    let result = drive(fault, options, &mut cluster).await;
    if result.is_err() {
        eprintln!(
            "chaos {}: failed; set CHAOS_KEEP_DIR=1 to keep the logs in {}",
            fault.name(),
            cluster.dir().display()
        );
    }
    result
}

struct Load {
    stop: Arc<AtomicBool>,
    buyers: Vec<tokio::task::JoinHandle<BuyerLog>>,
    readers: Vec<tokio::task::JoinHandle<(u64, BTreeMap<String, u64>)>>,
    watchers: Vec<tokio::task::JoinHandle<()>>,
    latest: Arc<Vec<AtomicI64>>,
    reconnects: Arc<AtomicU64>,
    done: watch::Sender<bool>,
}

async fn drive(fault: Fault, options: &Options, cluster: &mut Cluster) -> anyhow::Result<Outcome> {
    let gql = Gql::with_timeout(&cluster.url, Duration::from_secs(30))?;
    let organizer = gql
        .login("organizer@evently.test", "organizer-demo-pass")
        .await?;
    let event_id = gql
        .create_event(&organizer, "Chaos onsale", options.capacity, 10)
        .await?;
    let run_id = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let buyers = gql.register_buyers(&run_id, options.buyers()).await?;
    let load = start_load(&gql, &event_id, buyers, options.subscribers()).await?;
    let run_start = Instant::now();

    tokio::time::sleep(options.calm()).await;
    let fault_start = Instant::now();
    let fault_report = match fault {
        Fault::Kill => kill_one(cluster).await?,
        Fault::Rolling => rolling_restart(cluster, true).await?,
        Fault::RollingUnannounced => rolling_restart(cluster, false).await?,
        Fault::Postgres => {
            postgres_restart(cluster, options.outage(), options.postgres_stop).await?
        }
        Fault::Redis => redis_restart_and_freeze(cluster, options.outage(), run_start).await?,
    };
    let fault_end = Instant::now();
    tokio::time::sleep(options.calm()).await;

    // Stop buying; buyers finish the key they are on.
    load.stop.store(true, Ordering::Relaxed);
    let mut all = BuyerLog::default();
    for buyer in load.buyers {
        all.merge(buyer.await?);
    }
    let (mut reads, mut read_errors) = (0, BTreeMap::<String, u64>::new());
    for reader in load.readers {
        let (n, errors) = reader.await?;
        reads += n;
        for (code, n) in errors {
            *read_errors.entry(code).or_default() += n;
        }
    }
    let check = verify(&cluster.database_url(), &event_id, &all).await?;

    // Every subscriber must reach the final version, through whatever reconnects it takes.
    let converge_start = Instant::now();
    let deadline = converge_start + Duration::from_secs(30);
    let converged = || {
        load.latest
            .iter()
            .filter(|v| v.load(Ordering::Relaxed) >= check.final_version)
            .count()
    };
    while converged() < load.latest.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let convergence_secs = converge_start.elapsed().as_secs_f64();
    let subscribers_converged = converged();
    let _ = load.done.send(true);
    for watcher in load.watchers {
        let _ = tokio::time::timeout(Duration::from_secs(5), watcher).await;
    }

    let confirmed_during_fault = all
        .confirmed_at
        .iter()
        .filter(|at| **at >= fault_start && **at <= fault_end)
        .count() as u64;
    let recovered_after_secs = all
        .last_failure
        .filter(|at| *at >= fault_start)
        .map_or(0.0, |at| (at - fault_start).as_secs_f64());
    let mut fault_report = fault_report;
    if fault == Fault::Redis {
        let (from, to) = (
            fault_report["frozen_from_secs"].as_f64().unwrap_or(0.0),
            fault_report["frozen_to_secs"].as_f64().unwrap_or(0.0),
        );
        let frozen = all
            .confirmed_at
            .iter()
            .map(|at| (*at - run_start).as_secs_f64())
            .filter(|t| *t >= from && *t <= to)
            .count();
        fault_report["confirmed_while_frozen"] = json!(frozen);
    }
    Ok(Outcome {
        scenario: fault.name(),
        instances: options.instances,
        buyers: options.buyers(),
        subscribers: options.subscribers(),
        confirmed: all.heard.len() as u64,
        confirmed_during_fault,
        attempts: all.attempts,
        retries: all.retries,
        errors: all.errors,
        reads,
        read_errors,
        http_5xx: all.http_5xx,
        unresolved_keys: all.unresolved,
        duplicate_keys_in_database: check.duplicate_keys,
        missing: check.missing,
        capacity: check.capacity,
        seats_available: check.seats_available,
        seats_held: check.seats_held,
        confirmed_seats: check.confirmed_seats,
        invariant_holds: check.capacity - check.seats_available - check.seats_held
            == check.confirmed_seats
            && check.seats_available >= 0,
        final_version: check.final_version,
        subscribers_converged,
        subscriber_reconnects: load.reconnects.load(Ordering::Relaxed),
        convergence_secs,
        recovered_after_secs,
        fault_secs: (fault_end - fault_start).as_secs_f64(),
        fault: fault_report,
        booking_p99_ms: all.latency.summary().p99_ms,
    })
}

#[derive(Default)]
struct BuyerLog {
    /// (key, booking id) heard confirmed.
    heard: Vec<(String, String)>,
    confirmed_at: Vec<Instant>,
    latency: Samples,
    attempts: u64,
    retries: u64,
    errors: BTreeMap<String, u64>,
    http_5xx: BTreeMap<u16, u64>,
    unresolved: u64,
    last_failure: Option<Instant>,
}

impl BuyerLog {
    fn merge(&mut self, other: BuyerLog) {
        self.heard.extend(other.heard);
        self.confirmed_at.extend(other.confirmed_at);
        self.latency.merge(other.latency);
        self.attempts += other.attempts;
        self.retries += other.retries;
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
        for (status, n) in other.http_5xx {
            *self.http_5xx.entry(status).or_default() += n;
        }
        self.unresolved += other.unresolved;
        self.last_failure = self.last_failure.max(other.last_failure);
    }
}

async fn start_load(
    gql: &Gql,
    event_id: &str,
    buyers: Vec<(String, String)>,
    subscribers: usize,
) -> anyhow::Result<Load> {
    let stop = Arc::new(AtomicBool::new(false));
    let latest: Arc<Vec<AtomicI64>> =
        Arc::new((0..subscribers).map(|_| AtomicI64::new(-1)).collect());
    let reconnects = Arc::new(AtomicU64::new(0));
    let (done, done_rx) = watch::channel(false);
    let mut watchers = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        let source = Ipv4Addr::new(127, 0, 0, 2 + u8::try_from(i / 4_000)?);
        let (endpoint, event_id) = (gql.ws_endpoint.clone(), event_id.to_owned());
        let (latest, reconnects, done) = (latest.clone(), reconnects.clone(), done_rx.clone());
        watchers.push(tokio::spawn(watch_seats(
            endpoint, source, event_id, i, latest, reconnects, done,
        )));
    }
    // Everyone watching before the first booking.
    let deadline = Instant::now() + Duration::from_secs(60);
    while latest.iter().any(|v| v.load(Ordering::Relaxed) < 0) {
        anyhow::ensure!(Instant::now() < deadline, "subscribers did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let start = Instant::now();
    // Two signed-in visitors reading their bookings meanwhile: reads must fail as coded as
    // bookings do.
    let readers = buyers
        .iter()
        .take(2)
        .map(|(_, token)| tokio::spawn(read(gql.clone(), token.clone(), stop.clone())))
        .collect();
    let buyers = buyers
        .into_iter()
        .map(|(_, token)| {
            let (gql, event_id, stop) = (gql.clone(), event_id.to_owned(), stop.clone());
            tokio::spawn(buy(gql, token, event_id, stop, start))
        })
        .collect();
    Ok(Load {
        stop,
        buyers,
        readers,
        watchers,
        latest,
        reconnects,
        done,
    })
}

/// One buyer: a fresh key per booking, retried until a definite answer.
async fn buy(
    gql: Gql,
    token: String,
    event_id: String,
    stop: Arc<AtomicBool>,
    start: Instant,
) -> BuyerLog {
    let mut me = BuyerLog::default();
    'keys: while !stop.load(Ordering::Relaxed) {
        let key = Uuid::new_v4().to_string();
        let first_try = Instant::now();
        let mut backoff = Duration::from_millis(20);
        loop {
            me.attempts += 1;
            let sent = Instant::now();
            let variables =
                json!({ "input": { "eventId": event_id, "quantity": 1, "idempotencyKey": key } });
            let answer = gql.call_raw(Some(&token), BOOK, variables).await;
            match answer {
                Ok((status, body)) => {
                    if status >= 500 {
                        *me.http_5xx.entry(status).or_default() += 1;
                    }
                    match body {
                        Some(body) => {
                            if let Some(id) = body["data"]["bookSeats"]["id"].as_str() {
                                me.latency.record(start, sent, Instant::now());
                                me.confirmed_at.push(Instant::now());
                                me.heard.push((key.clone(), id.to_owned()));
                                break;
                            }
                            let code = body["errors"][0]["extensions"]["code"]
                                .as_str()
                                .unwrap_or("NO_CODE")
                                .to_owned();
                            *me.errors.entry(code.clone()).or_default() += 1;
                            if code == "SOLD_OUT" {
                                break 'keys;
                            }
                            if !RETRYABLE.contains(&code.as_str()) {
                                // A definite refusal: nothing was booked.
                                me.last_failure = Some(Instant::now());
                                break;
                            }
                        }
                        None => *me.errors.entry(format!("HTTP {status}")).or_default() += 1,
                    }
                }
                Err(_) => *me.errors.entry("transport".into()).or_default() += 1,
            }
            me.last_failure = Some(Instant::now());
            if first_try.elapsed() > Duration::from_secs(60) {
                me.unresolved += 1;
                break;
            }
            me.retries += 1;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }
    me
}

/// A signed-in `myBookings` read, back to back with a pause, until `stop`: how many, and the
/// codes of those that failed.
async fn read(gql: Gql, token: String, stop: Arc<AtomicBool>) -> (u64, BTreeMap<String, u64>) {
    const MY_BOOKINGS: &str = "query { myBookings(first: 1) { totalCount } }";
    let (mut reads, mut errors) = (0, BTreeMap::<String, u64>::new());
    while !stop.load(Ordering::Relaxed) {
        reads += 1;
        let code = match gql.call_raw(Some(&token), MY_BOOKINGS, json!({})).await {
            Ok((_, Some(body))) if body["errors"].is_null() => None,
            Ok((_, Some(body))) => Some(
                body["errors"][0]["extensions"]["code"]
                    .as_str()
                    .unwrap_or("NO_CODE")
                    .to_owned(),
            ),
            Ok((status, None)) => Some(format!("HTTP {status}")),
            Err(_) => Some("transport".to_owned()),
        };
        if let Some(code) = code {
            *errors.entry(code).or_default() += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (reads, errors)
}

/// One subscriber: subscribes through nginx, records the newest version it got, and
/// reconnects whenever its socket ends, until `done`.
async fn watch_seats(
    endpoint: String,
    source: Ipv4Addr,
    event_id: String,
    i: usize,
    latest: Arc<Vec<AtomicI64>>,
    reconnects: Arc<AtomicU64>,
    mut done: watch::Receiver<bool>,
) {
    let mut first = true;
    while !*done.borrow() {
        if !first {
            reconnects.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        first = false;
        let connect =
            Subscriber::connect(&endpoint, source, SUBSCRIPTION, json!({ "id": event_id }));
        let Ok(Ok(mut subscriber)) = tokio::time::timeout(Duration::from_secs(10), connect).await
        else {
            continue;
        };
        loop {
            tokio::select! {
                version = subscriber.next_version() => match version {
                    Ok(Some(version)) => {
                        latest[i].fetch_max(version, Ordering::Relaxed);
                    }
                    _ => break,
                },
                _ = done.changed() => {
                    subscriber.close().await;
                    return;
                }
            }
        }
    }
}

async fn kill_one(cluster: &mut Cluster) -> anyhow::Result<Value> {
    let pid = cluster.pid(0);
    cluster.kill(0).await?;
    Ok(json!({ "killed": { "instance": 0, "pid": pid, "signal": "SIGKILL" } }))
}

async fn rolling_restart(cluster: &mut Cluster, tell_nginx: bool) -> anyhow::Result<Value> {
    let mut steps = Vec::new();
    for i in 0..cluster.instances.len() {
        if tell_nginx {
            cluster.set_in_balancer(i, false).await?;
        }
        let stopped = cluster.terminate(i).await?;
        let started = cluster.restart_instance(i).await?;
        if tell_nginx {
            cluster.set_in_balancer(i, true).await?;
        }
        steps.push(json!({
            "instance": i,
            "sigterm_to_exit_secs": stopped.as_secs_f64(),
            "start_to_ready_secs": started.as_secs_f64(),
        }));
    }
    Ok(json!({ "restarts": steps }))
}

async fn postgres_restart(
    cluster: &mut Cluster,
    outage: Duration,
    mode: PostgresStop,
) -> anyhow::Result<Value> {
    let pids: Vec<_> = (0..cluster.instances.len())
        .map(|i| cluster.pid(i))
        .collect();
    cluster.postgres.stop(mode).await?;
    let down = Instant::now();
    // While it is down, each instance says so.
    tokio::time::sleep(outage / 2).await;
    let readyz_while_down: Vec<u16> = cluster
        .readyz_all()
        .await
        .into_iter()
        .map(|answer| answer.map_or(0, |(status, _)| status))
        .collect();
    tokio::time::sleep(outage.saturating_sub(down.elapsed())).await;
    cluster.postgres.start_again().await?;
    let up = Instant::now();
    let outage_secs = (up - down).as_secs_f64();
    // The instances come back by themselves: same processes, /readyz 200 again.
    let deadline = up + Duration::from_secs(30);
    let mut ready_again = vec![None; cluster.instances.len()];
    while ready_again.iter().any(Option::is_none) && Instant::now() < deadline {
        for (ready, answer) in ready_again.iter_mut().zip(cluster.readyz_all().await) {
            if ready.is_none() && answer.is_some_and(|(status, _)| status == 200) {
                *ready = Some(up.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut restarted = 0;
    for (i, pid) in pids.iter().enumerate() {
        if !cluster.running(i) || cluster.pid(i) != *pid {
            restarted += 1;
        }
    }
    Ok(json!({
        "outage_secs": outage_secs,
        "readyz_while_down": readyz_while_down,
        "ready_again_after_secs": ready_again,
        "instances_ready_again": ready_again.iter().filter(|r| r.is_some()).count(),
        "instances_restarted": restarted,
    }))
}

async fn redis_restart_and_freeze(
    cluster: &mut Cluster,
    frozen_for: Duration,
    run_start: Instant,
) -> anyhow::Result<Value> {
    let t0 = Instant::now();
    cluster.redis.kill().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.redis.start_again().await?;
    let restarted_after = t0.elapsed().as_secs_f64();
    let ok_again = wait_redis_ok(cluster, Duration::from_secs(30)).await;

    // Frozen: connections stay open and nothing answers.
    cluster.redis.freeze()?;
    let frozen_at = Instant::now();
    let mut degraded = vec![false; cluster.instances.len()];
    let mut reasons = Vec::new();
    let until = frozen_at + frozen_for.max(Duration::from_secs(1));
    let deadline = frozen_at + frozen_for + Duration::from_secs(10);
    while Instant::now() < until || (degraded.contains(&false) && Instant::now() < deadline) {
        for (seen, answer) in degraded.iter_mut().zip(cluster.readyz_all().await) {
            if !*seen
                && let Some((200, body)) = answer
                && body["status"] == "degraded"
            {
                *seen = true;
                reasons.push(body["reason"].clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let thawed_at = Instant::now();
    cluster.redis.thaw()?;
    let ok_after_thaw = wait_redis_ok(cluster, Duration::from_secs(30)).await;
    Ok(json!({
        "restarted_after_secs": restarted_after,
        "redis_ok_after_restart_secs": ok_again,
        "frozen_secs": (thawed_at - frozen_at).as_secs_f64(),
        "frozen_from_secs": (frozen_at - run_start).as_secs_f64(),
        "frozen_to_secs": (thawed_at - run_start).as_secs_f64(),
        "degraded_seen_while_frozen": degraded.iter().filter(|d| **d).count(),
        "degraded_reasons": reasons,
        "redis_ok_after_thaw_secs": ok_after_thaw,
    }))
}

/// Seconds until every instance's `/readyz` says Redis is up again (None: not within).
async fn wait_redis_ok(cluster: &Cluster, within: Duration) -> Option<f64> {
    let start = Instant::now();
    while start.elapsed() < within {
        let all = cluster.readyz_all().await.into_iter().all(|answer| {
            answer.is_some_and(|(status, body)| status == 200 && body["redis"] == "up")
        });
        if all {
            return Some(start.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

struct Check {
    capacity: i64,
    seats_available: i64,
    seats_held: i64,
    confirmed_seats: i64,
    final_version: i64,
    missing: i64,
    duplicate_keys: i64,
}

async fn verify(database_url: &str, event_id: &str, log: &BuyerLog) -> anyhow::Result<Check> {
    let (client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .context("connecting to the chaos cluster's PostgreSQL")?;
    tokio::spawn(connection);
    let event = client
        .query_one(
            "SELECT capacity::bigint, seats_available::bigint, seats_held::bigint, version::bigint
             FROM events WHERE id = $1::text::uuid",
            &[&event_id],
        )
        .await?;
    let confirmed_seats: i64 = client
        .query_one(
            "SELECT coalesce(sum(quantity), 0)::bigint FROM bookings
             WHERE event_id = $1::text::uuid AND status = 'CONFIRMED'",
            &[&event_id],
        )
        .await?
        .get(0);
    let keys: Vec<&str> = log.heard.iter().map(|(key, _)| key.as_str()).collect();
    let ids: Vec<&str> = log.heard.iter().map(|(_, id)| id.as_str()).collect();
    // The booking the buyer heard, under the key it sent: a retry answered with another
    // booking than the first answer's would show here.
    let missing: i64 = client
        .query_one(
            "SELECT count(*) FROM unnest($1::text[], $2::text[]) AS heard(key, id)
             WHERE NOT EXISTS (SELECT 1 FROM bookings b
                 WHERE b.id = heard.id::uuid AND b.idempotency_key = heard.key
                   AND b.status = 'CONFIRMED')",
            &[&keys, &ids],
        )
        .await?
        .get(0);
    let duplicate_keys: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT 1 FROM bookings
               WHERE event_id = $1::text::uuid AND idempotency_key IS NOT NULL
               GROUP BY user_id, idempotency_key HAVING count(*) > 1) AS twice",
            &[&event_id],
        )
        .await?
        .get(0);
    Ok(Check {
        capacity: event.get(0),
        seats_available: event.get(1),
        seats_held: event.get(2),
        final_version: event.get(3),
        confirmed_seats,
        missing,
        duplicate_keys,
    })
}

fn write_report(common: &Common, outcome: &Outcome) -> anyhow::Result<()> {
    let failures = outcome.failures();
    let rows = [
        ("instances behind nginx", outcome.instances.to_string()),
        (
            "buyers / subscribers",
            format!("{} / {}", outcome.buyers, outcome.subscribers),
        ),
        (
            "**bookings confirmed** (during the fault)",
            format!(
                "**{}** ({})",
                outcome.confirmed, outcome.confirmed_during_fault
            ),
        ),
        (
            "attempts / retries with the same key",
            format!("{} / {}", outcome.attempts, outcome.retries),
        ),
        ("errors by code", format!("{:?}", outcome.errors)),
        (
            "signed-in reads meanwhile / their errors by code",
            format!("{} / {:?}", outcome.reads, outcome.read_errors),
        ),
        (
            "**5xx seen by clients**",
            format!("**{:?}**", outcome.http_5xx),
        ),
        ("keys never answered", outcome.unresolved_keys.to_string()),
        (
            "**confirmed but missing from PostgreSQL**",
            format!("**{}**", outcome.missing),
        ),
        (
            "keys with two bookings in PostgreSQL",
            outcome.duplicate_keys_in_database.to_string(),
        ),
        (
            "invariant capacity − available − held = confirmed seats",
            format!(
                "{} ({} − {} − {} = {})",
                outcome.invariant_holds,
                outcome.capacity,
                outcome.seats_available,
                outcome.seats_held,
                outcome.confirmed_seats
            ),
        ),
        (
            "**subscribers on the final count**",
            format!(
                "**{} of {}** (version {}, after {:.1} s; {} reconnects)",
                outcome.subscribers_converged,
                outcome.subscribers,
                outcome.final_version,
                outcome.convergence_secs,
                outcome.subscriber_reconnects
            ),
        ),
        (
            "fault lasted / **time to recover** (fault start to last failed attempt)",
            format!(
                "{:.1} s / **{:.1} s**",
                outcome.fault_secs, outcome.recovered_after_secs
            ),
        ),
        ("booking p99", format!("{:.1} ms", outcome.booking_p99_ms)),
        ("fault details", outcome.fault.to_string()),
        (
            "**passed**",
            if failures.is_empty() {
                "**yes**".to_owned()
            } else {
                format!("**no**: {failures:?}")
            },
        ),
    ];
    Report {
        scenario: match outcome.scenario {
            "kill" => "chaos-kill",
            "rolling" => "chaos-rolling",
            "rolling-unannounced" => "chaos-rolling-unannounced",
            "postgres" => "chaos-postgres",
            _ => "chaos-redis",
        },
        common,
        results: serde_json::to_value(outcome)?,
        markdown: table(&rows),
        series: Vec::new(),
    }
    .write()?;
    Ok(())
}
