//! What a chaos scenario prints and writes: its report (`bench/results/chaos-<name>.md` and
//! `.json`), a one-line summary as it ends, and a table of every scenario when the suite ends.

use std::fmt::Write as _;

use super::Outcome;
use crate::Common;
use crate::report::{Report, table};

pub(super) fn write_report(common: &Common, outcome: &Outcome) -> anyhow::Result<()> {
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

/// How many answers had this code, bookings and reads together.
fn coded(outcome: &Outcome, code: &str) -> u64 {
    outcome.errors.get(code).copied().unwrap_or(0)
        + outcome.read_errors.get(code).copied().unwrap_or(0)
}

/// The figures that matter, on one line, as a scenario ends.
pub(super) fn summary_line(outcome: &Outcome, took_secs: f64) -> String {
    format!(
        "chaos {}: {} confirmed ({} during the fault), lost {}, duplicates {}, \
         subscribers converged {} of {} in {:.1} s, 5xx {:?}, SERVICE_UNAVAILABLE {}, \
         recovered after {:.1} s; {} in {:.0} s",
        outcome.scenario,
        outcome.confirmed,
        outcome.confirmed_during_fault,
        outcome.missing,
        outcome.duplicate_keys_in_database,
        outcome.subscribers_converged,
        outcome.subscribers,
        outcome.convergence_secs,
        outcome.http_5xx,
        coded(outcome, "SERVICE_UNAVAILABLE"),
        outcome.recovered_after_secs,
        if outcome.failures().is_empty() {
            "passed"
        } else {
            "FAILED"
        },
        took_secs,
    )
}

/// Every scenario of the suite, a row each (markdown, for bench/README.md).
pub(super) fn summary_table(outcomes: &[(Outcome, f64)]) -> String {
    let mut text = String::from(
        "| scenario | confirmed (during fault) | lost | duplicates | subscribers on final count \
         | time to converge | 5xx seen | SERVICE_UNAVAILABLE | time to recover | passed | took |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for (outcome, took) in outcomes {
        let _ = writeln!(
            text,
            "| {} | {} ({}) | {} | {} | {} of {} | {:.1} s | {} | {} | {:.1} s | {} | {:.0} s |",
            outcome.scenario,
            outcome.confirmed,
            outcome.confirmed_during_fault,
            outcome.missing,
            outcome.duplicate_keys_in_database,
            outcome.subscribers_converged,
            outcome.subscribers,
            outcome.convergence_secs,
            outcome.http_5xx.values().sum::<u64>(),
            coded(outcome, "SERVICE_UNAVAILABLE"),
            outcome.recovered_after_secs,
            if outcome.failures().is_empty() {
                "yes"
            } else {
                "**no**"
            },
            took,
        );
    }
    text
}
