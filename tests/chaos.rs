//! The chaos suite at CI size: each scenario of `scripts/chaos.sh` (the bench tool's `chaos`
//! command, whose code this runs) with 32 buyers and 50 subscribers, through nginx in front of
//! three instances of this build, on a PostgreSQL and a Redis of the test's own (never the
//! shared ones: the scenarios kill, stop and freeze them). The properties are
//! `Outcome::failures`; the tests name the ones each scenario is about. The scenarios run one
//! at a time: each is a dozen processes on a 2-core machine.
//!
//! Needs nginx, redis-server and PostgreSQL's server binaries (the newest
//! `/usr/lib/postgresql/*/bin`, or `CHAOS_PG_BIN_DIR`); `scripts/test.sh` installs nginx. `CHAOS_KEEP_DIR=1` keeps each
//! run's logs.

use std::path::PathBuf;

use evently_bench::scenarios::chaos::{Fault, Options, Outcome, run_one};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn run(fault: Fault) -> Outcome {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut options = Options::small(fault, PathBuf::from(env!("CARGO_BIN_EXE_evently")));
    options.pg_bin_dir = std::env::var_os("CHAOS_PG_BIN_DIR").map(Into::into);
    let outcome = run_one(fault, &options)
        .await
        .unwrap_or_else(|error| panic!("chaos {}: {error:#}", fault.name()));
    eprintln!(
        "chaos {}: {}",
        fault.name(),
        serde_json::to_string_pretty(&outcome).unwrap()
    );
    outcome
}

fn assert_passed(outcome: &Outcome) {
    let failures = outcome.failures();
    assert!(failures.is_empty(), "{}: {failures:#?}", outcome.scenario);
}

/// The properties every scenario keeps: nothing a client heard confirmed is lost, no key
/// books twice, the seat counts add up and every subscriber ends on the final count.
fn assert_nothing_lost(outcome: &Outcome) {
    assert!(outcome.confirmed > 0, "nothing was booked");
    assert_eq!(outcome.missing, 0, "confirmed bookings missing");
    assert_eq!(outcome.duplicate_keys_in_database, 0);
    assert!(
        outcome.invariant_holds,
        "available + held + sold ≠ capacity"
    );
    assert_eq!(outcome.unresolved_keys, 0, "a buyer never got an answer");
    assert_eq!(
        outcome.subscribers_converged, outcome.subscribers,
        "subscribers not on the final count {}",
        outcome.final_version
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_mid_onsale_loses_no_confirmed_booking() {
    let outcome = run(Fault::Kill).await;
    assert_nothing_lost(&outcome);
    assert!(
        outcome.subscriber_reconnects > 0,
        "the killed instance's subscribers had to reconnect elsewhere"
    );
    assert_passed(&outcome);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_taking_each_instance_out_of_nginx_first_shows_clients_no_5xx() {
    let outcome = run(Fault::Rolling).await;
    assert_nothing_lost(&outcome);
    // Out of nginx before SIGTERM: nothing was sent to an instance on its way out, so no
    // client saw a 502 or any other 5xx, bookings and reads alike. (A request may still meet
    // a reload's old nginx worker closing an idle keep-alive connection at that instant: a
    // transport error before any answer, which the buyer resent with its key.)
    assert!(outcome.http_5xx.is_empty(), "5xx: {:?}", outcome.http_5xx);
    assert!(
        !outcome
            .read_errors
            .keys()
            .any(|code| code.starts_with("HTTP 5")),
        "reads failed: {:?}",
        outcome.read_errors
    );
    assert!(
        outcome.confirmed_during_fault > 0,
        "the sale stopped during the restart"
    );
    assert!(
        outcome.subscriber_reconnects > 0,
        "each instance's WebSockets closed (1012) and reconnected elsewhere"
    );
    assert_passed(&outcome);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_nginx_is_not_told_of_costs_only_retries_with_the_same_key() {
    let outcome = run(Fault::RollingUnannounced).await;
    assert_nothing_lost(&outcome);
    // nginx learns of each instance only when its listener closes: a POST it had just sent
    // there may come back 502 (nginx never resends a POST). Each was a booking with an
    // idempotency key, sent again until answered (`unresolved_keys` is 0 above), and no
    // other 5xx reached a client.
    assert!(
        outcome.http_5xx.keys().all(|status| *status == 502),
        "{:?}",
        outcome.http_5xx
    );
    assert!(
        outcome.confirmed_during_fault > 0,
        "the sale stopped during the restart"
    );
    assert_passed(&outcome);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_is_survived_by_the_instances_without_restarting() {
    let outcome = run(Fault::Postgres).await;
    assert_nothing_lost(&outcome);
    assert_eq!(outcome.fault["instances_restarted"], 0);
    assert_eq!(outcome.fault["instances_ready_again"], outcome.instances);
    // While it was down, /readyz said so, and failed bookings were coded, never internal.
    assert!(
        outcome.fault["readyz_while_down"]
            .as_array()
            .unwrap()
            .iter()
            .all(|status| status == 503),
        "{}",
        outcome.fault
    );
    // Down longer than a request waits for a connection: some were told so, with a code.
    let unavailable = |errors: &std::collections::BTreeMap<String, u64>| {
        errors.get("SERVICE_UNAVAILABLE").copied().unwrap_or(0)
    };
    assert!(
        unavailable(&outcome.errors) + unavailable(&outcome.read_errors) > 0,
        "nobody was told SERVICE_UNAVAILABLE: {:?} {:?}",
        outcome.errors,
        outcome.read_errors
    );
    assert_eq!(outcome.errors.get("INTERNAL_SERVER_ERROR"), None);
    assert_eq!(outcome.errors.get("NO_CODE"), None);
    assert_eq!(outcome.read_errors.get("INTERNAL_SERVER_ERROR"), None);
    assert_eq!(outcome.read_errors.get("NO_CODE"), None);
    assert_passed(&outcome);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_then_frozen_redis_leaves_bookings_going_and_readyz_degraded() {
    let outcome = run(Fault::Redis).await;
    assert_nothing_lost(&outcome);
    assert_eq!(
        outcome.fault["degraded_seen_while_frozen"], outcome.instances,
        "{}",
        outcome.fault
    );
    assert!(
        outcome.fault["confirmed_while_frozen"].as_u64().unwrap() > 0,
        "{}",
        outcome.fault
    );
    assert_passed(&outcome);
}
