//! Background work every instance does: ending holds that have expired (their seats go to the
//! waiting list or back on sale), completing events that are over, offering the waiting list
//! seats freed while sales were paused once they reopen, and announcing all of it. Several
//! instances may sweep at once: each event is swept in a transaction that holds its row lock,
//! and a hold ends (or an entry is offered) only once, so the only cost of company is a little
//! duplicated looking.

use std::sync::Weak;

use crate::app::{App, AppState};
use crate::domain::{events, sweeps, waitlist};

/// Events swept per round; more wait for the next round.
const EVENTS_PER_ROUND: i64 = 100;

/// Sweeps every `config.sweep_interval` for as long as the app exists.
pub fn spawn(app: &AppState) {
    let app = std::sync::Arc::downgrade(&app.0);
    tokio::spawn(run(app));
}

async fn run(app: Weak<App>) {
    let interval = match app.upgrade() {
        Some(app) => app.config.sweep_interval,
        None => return,
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(app) = app.upgrade() else { return };
        match crate::telemetry::metrics::sweeping(sweep(&app)).await {
            Ok(swept) => {
                metrics::counter!("evently_sweeper_runs_total", "outcome" => "ok").increment(1);
                metrics::counter!("evently_sweeper_events_swept_total").increment(swept as u64);
            }
            Err(error) => {
                metrics::counter!("evently_sweeper_runs_total", "outcome" => "error").increment(1);
                tracing::warn!(error = %error.message(), "sweeping expired holds failed");
            }
        }
    }
}

/// One round: every event with an expired hold, every event that has ended, and every event
/// whose reopened sales owe its waiting list seats, each in its own transaction. Returns how
/// many events changed.
pub async fn sweep(app: &App) -> crate::error::AppResult<usize> {
    let mut conn = app.conn().await?;
    let mut swept = 0;
    for completed in events::complete_ended(&mut conn, EVENTS_PER_ROUND).await? {
        swept += 1;
        app.commit(completed);
    }
    let expired = sweeps::events_with_expired_holds(&mut conn, EVENTS_PER_ROUND).await?;
    for event_id in expired {
        // One event that cannot be swept must not hold up the others.
        match sweeps::sweep_event(&mut conn, event_id).await {
            Ok(swept_event) if swept_event.changed() => {
                swept += 1;
                app.commit(swept_event);
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%event_id, error = %error.message(), "sweeping an event failed");
            }
        }
    }
    // Seats freed while sales were paused go to the waiting list once they reopen, even when
    // nobody comes to buy.
    let owed = sweeps::events_owed_seats(&mut conn, EVENTS_PER_ROUND).await?;
    for event_id in owed {
        match sweeps::catch_up_event(&mut conn, event_id).await {
            Ok(caught_up) if caught_up.changed() => {
                swept += 1;
                app.commit(caught_up);
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%event_id, error = %error.message(), "offering freed seats failed");
            }
        }
    }
    // Refunds the provider could not take at once, or that a cancelled event recorded, and
    // card orders whose webhook may never have come. These take connections of their own
    // between provider calls: give this one back first, or a round holds two.
    // Orders offered to a waiting list get their payment intent now, out of the transaction
    // that offered them.
    let offers = waitlist::offers_awaiting_intent(&mut conn, EVENTS_PER_ROUND).await?;
    drop(conn);
    for order in offers {
        crate::checkout::ensure_intent(app, order).await?;
    }
    swept += crate::checkout::send_pending_refunds(app, REFUND_RETRY_AGE, EVENTS_PER_ROUND).await?;
    crate::checkout::reconcile(app, app.config.reconcile_after, EVENTS_PER_ROUND).await?;
    Ok(swept)
}

/// How long a refund stays PENDING before the sweeper sends it (again): its own request
/// usually sends it first.
const REFUND_RETRY_AGE: std::time::Duration = std::time::Duration::from_secs(5);
