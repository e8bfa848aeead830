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
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

mod check;
mod faults;
mod load;
mod report;

use crate::Common;
use crate::client::Gql;
use crate::cluster::{Cluster, ClusterOptions, PostgresStop};
use check::verify;
use faults::{kill_one, postgres_restart, redis_restart_and_freeze, rolling_restart};
use load::{BuyerLog, start_load};
use report::{summary_line, summary_table, write_report};

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
    /// PostgreSQL's server binaries (default: the newest `/usr/lib/postgresql/*/bin`).
    #[arg(long)]
    pub pg_bin_dir: Option<PathBuf>,
    /// A scenario still running after this many seconds fails, and the suite goes on with
    /// the next (each is bounded already; this bounds the whole suite whatever happens).
    #[arg(long, default_value_t = 600)]
    pub scenario_timeout_secs: u64,
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
            pg_bin_dir: None,
            scenario_timeout_secs: 600,
        }
    }

    fn scenario_timeout(&self) -> Duration {
        Duration::from_secs(self.scenario_timeout_secs)
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
    let suite_start = Instant::now();
    let scenarios = faults.len();
    let mut failed = Vec::new();
    let mut outcomes = Vec::new();
    for fault in faults {
        println!("==> chaos: {}", fault.name());
        let started = Instant::now();
        let outcome = match tokio::time::timeout(
            options.scenario_timeout(),
            run_one(fault, &options),
        )
        .await
        {
            Ok(outcome) => outcome?,
            // The deployment is dropped with the future: every process it started is
            // killed, so the next scenario starts clean.
            Err(_) => {
                eprintln!(
                    "FAILED ({}): still running after {:?}",
                    fault.name(),
                    options.scenario_timeout()
                );
                failed.push(fault.name());
                continue;
            }
        };
        write_report(common, &outcome)?;
        println!(
            "{}",
            summary_line(&outcome, started.elapsed().as_secs_f64())
        );
        let failures = outcome.failures();
        for failure in &failures {
            eprintln!("FAILED ({}): {failure}", fault.name());
        }
        if !failures.is_empty() {
            failed.push(fault.name());
        }
        outcomes.push((outcome, started.elapsed().as_secs_f64()));
    }
    println!(
        "==> chaos suite: {} scenario(s) in {:.0} s\n\n{}",
        scenarios,
        suite_start.elapsed().as_secs_f64(),
        summary_table(&outcomes)
    );
    anyhow::ensure!(failed.is_empty(), "chaos scenarios failed: {failed:?}");
    Ok(())
}

/// One scenario on a deployment of its own, from start to checks.
pub async fn run_one(fault: Fault, options: &Options) -> anyhow::Result<Outcome> {
    let mut cluster = Cluster::start(ClusterOptions {
        evently_bin: options.evently_bin.clone(),
        instances: options.instances,
        pg_bin_dir: options
            .pg_bin_dir
            .clone()
            .map_or_else(newest_postgres_bin_dir, Ok)?,
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

/// Debian installs each PostgreSQL major version under `/usr/lib/postgresql/<version>/bin`.
fn newest_postgres_bin_dir() -> anyhow::Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("no /usr/lib/postgresql: install postgresql, or pass --pg-bin-dir")?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .context("no PostgreSQL server binaries under /usr/lib/postgresql")
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
