//! How many seats one user may have of an event: `max_per_user` over their bookings, holds and
//! places on the waiting list together, and the cap on seats held at once ([`hold_cap`]), so
//! that one account cannot take an event off sale by holding it. Counted under the event's
//! row lock, so two requests of one user cannot both pass.
//!
//! Bottom layer: imports no other domain module.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::db::models::{BookingStatus, Event, HoldStatus, WaitlistStatus};
use crate::db::schema::{bookings, holds, waitlist_entries};
use crate::error::{AppError, AppResult};

/// Refuses a request that would give the user more than the event's `max_per_user` seats,
/// counting their confirmed bookings, live holds and the seats their place on the waiting list
/// waits for. Run under the event's lock, so two requests of one user cannot both pass.
pub(crate) async fn check_user_limit(
    conn: &mut AsyncPgConnection,
    event: &Event,
    user_id: Uuid,
    quantity: i32,
) -> AppResult<()> {
    let Some(max) = event.max_per_user else {
        return Ok(());
    };
    let have = seats_of_user(conn, event.id, &[user_id])
        .await?
        .get(&user_id)
        .copied()
        .unwrap_or(0);
    check_per_user(max, have, quantity)
}

/// Refuses `quantity` more seats for a user who has `have` of an event's `max` per person.
pub(crate) fn check_per_user(max: i32, have: i64, quantity: i32) -> AppResult<()> {
    if i64::from(quantity) + have > i64::from(max) {
        return Err(AppError::BadUserInput {
            message: format!(
                "at most {max} seats per person for this event; you already have {have}"
            ),
            field: Some("quantity"),
            reason: Some("LIMIT_PER_USER"),
        });
    }
    Ok(())
}

/// Seats each of `users` has or waits for at the event: in confirmed bookings, in live holds
/// (an offer is one) and in a place on the waiting list. Counting the place keeps an offer
/// within `max_per_user`: the seats were counted when the user joined, and no booking or hold
/// since could use them twice.
pub(crate) async fn seats_of_user(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    users: &[Uuid],
) -> AppResult<HashMap<Uuid, i64>> {
    let booked: Vec<(Uuid, Option<i64>)> = bookings::table
        .filter(bookings::event_id.eq(event_id))
        .filter(bookings::user_id.eq_any(users))
        .filter(bookings::status.eq(BookingStatus::Confirmed))
        .group_by(bookings::user_id)
        .select((bookings::user_id, diesel::dsl::sum(bookings::quantity)))
        .load(conn)
        .await?;
    let held: Vec<(Uuid, Option<i64>)> = holds::table
        .filter(holds::event_id.eq(event_id))
        .filter(holds::user_id.eq_any(users))
        .filter(holds::status.eq(HoldStatus::Held))
        .filter(holds::expires_at.gt(diesel::dsl::now))
        .group_by(holds::user_id)
        .select((holds::user_id, diesel::dsl::sum(holds::quantity)))
        .load(conn)
        .await?;
    let waiting: Vec<(Uuid, Option<i64>)> = waitlist_entries::table
        .filter(waitlist_entries::event_id.eq(event_id))
        .filter(waitlist_entries::user_id.eq_any(users))
        .filter(waitlist_entries::status.eq(WaitlistStatus::Waiting))
        .group_by(waitlist_entries::user_id)
        .select((
            waitlist_entries::user_id,
            diesel::dsl::sum(waitlist_entries::quantity),
        ))
        .load(conn)
        .await?;
    let mut totals = HashMap::new();
    for (user, seats) in booked.into_iter().chain(held).chain(waiting) {
        *totals.entry(user).or_insert(0) += seats.unwrap_or(0);
    }
    Ok(totals)
}

/// Most seats one user may keep in live holds of the event at once (checkout holds and
/// waiting-list offers together), so that one account cannot take an event off sale by holding
/// it: its `max_per_user` when set, else one booking's worth (`max_per_booking`).
pub(crate) fn hold_cap(event: &Event) -> i32 {
    event.max_per_user.unwrap_or(event.max_per_booking)
}

/// Seats the user keeps in live holds of the event.
pub(crate) async fn seats_held_by(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    user_id: Uuid,
) -> AppResult<i64> {
    let held: Option<i64> = holds::table
        .filter(holds::event_id.eq(event_id))
        .filter(holds::user_id.eq(user_id))
        .filter(holds::status.eq(HoldStatus::Held))
        .filter(holds::expires_at.gt(diesel::dsl::now))
        .select(diesel::dsl::sum(holds::quantity))
        .first(conn)
        .await?;
    Ok(held.unwrap_or(0))
}

/// Refuses a hold that would take the user past [`hold_cap`] (and, with `max_per_user`, past
/// that limit for bookings and holds together).
pub(crate) async fn check_hold_limit(
    conn: &mut AsyncPgConnection,
    event: &Event,
    user_id: Uuid,
    quantity: i32,
) -> AppResult<()> {
    if event.max_per_user.is_some() {
        // Holds are among the seats this counts, so the cap follows.
        return check_user_limit(conn, event, user_id, quantity).await;
    }
    let held = seats_held_by(conn, event.id, user_id).await?;
    check_held(hold_cap(event), held, quantity)
}

/// Refuses `quantity` more held seats for a user who holds `held` of an event whose cap is
/// `cap`.
pub(crate) fn check_held(cap: i32, held: i64, quantity: i32) -> AppResult<()> {
    if i64::from(quantity) + held > i64::from(cap) {
        return Err(AppError::BadUserInput {
            message: format!(
                "at most {cap} seats held at once per person for this event; you hold {held}"
            ),
            field: Some("quantity"),
            reason: Some("LIMIT_PER_USER"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::sale_rules::tests::event;

    fn reason(result: AppResult<()>) -> Option<&'static str> {
        match result {
            Ok(()) => None,
            Err(AppError::BadUserInput { reason, .. }) => reason,
            Err(other) => Some(other.code()),
        }
    }

    #[test]
    fn a_user_may_reach_the_limit_but_not_pass_it() {
        assert_eq!(reason(check_per_user(4, 0, 4)), None);
        assert_eq!(reason(check_per_user(4, 3, 1)), None);
        assert_eq!(reason(check_per_user(4, 3, 2)), Some("LIMIT_PER_USER"));
        assert_eq!(reason(check_per_user(4, 4, 1)), Some("LIMIT_PER_USER"));
    }

    #[test]
    fn the_limit_arithmetic_does_not_overflow() {
        assert_eq!(
            reason(check_per_user(i32::MAX, i64::from(i32::MAX), i32::MAX)),
            Some("LIMIT_PER_USER")
        );
        assert_eq!(reason(check_held(10, 0, i32::MAX)), Some("LIMIT_PER_USER"));
    }

    #[test]
    fn the_message_says_how_many_the_user_has() {
        let error = check_per_user(4, 3, 2).unwrap_err();
        assert_eq!(
            error.message(),
            "at most 4 seats per person for this event; you already have 3"
        );
        let error = check_held(6, 5, 2).unwrap_err();
        assert_eq!(
            error.message(),
            "at most 6 seats held at once per person for this event; you hold 5"
        );
    }

    #[test]
    fn holds_are_capped_at_the_per_user_limit_else_one_bookings_worth() {
        let event = event();
        assert_eq!(hold_cap(&event), event.max_per_booking);
        let limited = Event {
            max_per_user: Some(3),
            ..event
        };
        assert_eq!(hold_cap(&limited), 3);
    }
}
