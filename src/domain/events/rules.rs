//! What a new or changed event must be: text lengths, capacity, limits, a schedule in the
//! future and a sales window a buyer can use. Pure checks, no database.

use chrono::{DateTime, Utc};

use crate::domain::text::reject_control_chars;
use crate::error::{AppError, AppResult};

pub const DEFAULT_MAX_PER_BOOKING: i32 = 10;

pub const MAX_CAPACITY: i32 = 1_000_000;

pub(super) fn optional_text(value: Option<String>) -> AppResult<Option<String>> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) if text.chars().count() > 5000 => Err(AppError::bad_input(
            "description",
            "description must be at most 5000 characters",
        )),
        Some(text) => {
            reject_control_chars("description", text, true)?;
            Ok(Some(text.to_owned()))
        }
    }
}

pub(super) fn check_capacity(capacity: i32) -> AppResult<()> {
    if !(1..=MAX_CAPACITY).contains(&capacity) {
        return Err(AppError::bad_input(
            "capacity",
            format!("capacity must be 1 to {MAX_CAPACITY}"),
        ));
    }
    Ok(())
}

pub(super) fn check_max_per_booking(max: i32) -> AppResult<()> {
    if !(1..=100).contains(&max) {
        return Err(AppError::bad_input(
            "maxPerBooking",
            "maxPerBooking must be 1 to 100",
        ));
    }
    Ok(())
}

pub(super) fn check_schedule(starts_at: DateTime<Utc>, ends_at: DateTime<Utc>) -> AppResult<()> {
    if starts_at <= Utc::now() {
        return Err(AppError::bad_input(
            "startsAt",
            "startsAt must be in the future",
        ));
    }
    if ends_at < starts_at {
        return Err(AppError::bad_input(
            "endsAt",
            "endsAt must not be before startsAt",
        ));
    }
    Ok(())
}

/// Most seats one user may have for an event, at most.
pub const MAX_PER_USER: i32 = 1000;

/// How long a checkout hold may keep seats, in minutes: a day.
pub const MAX_HOLD_MINUTES: i32 = 24 * 60;

/// How long a waiting-list offer may keep seats, in minutes: a week.
pub const MAX_OFFER_MINUTES: i32 = 7 * 24 * 60;

/// The sales window must be one a buyer can use: it opens before the event starts (bookings
/// close when it starts, so a window opening later would never be open), and it closes after
/// it opens and no later than the event ends. Either end may be left open.
pub(super) fn check_sales_window(
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    sales_start_at: Option<DateTime<Utc>>,
    sales_end_at: Option<DateTime<Utc>>,
) -> AppResult<()> {
    if let Some(start) = sales_start_at
        && start >= starts_at
    {
        return Err(AppError::bad_input(
            "salesStartAt",
            "salesStartAt must be before startsAt",
        ));
    }
    if let Some(end) = sales_end_at {
        if sales_start_at.is_some_and(|start| end <= start) {
            return Err(AppError::bad_input(
                "salesEndAt",
                "salesEndAt must be after salesStartAt",
            ));
        }
        if end > ends_at {
            return Err(AppError::bad_input(
                "salesEndAt",
                "salesEndAt must not be after endsAt",
            ));
        }
    }
    Ok(())
}

/// The per-event limits, in the ranges the table's CHECK constraints allow (a violation there
/// would be an internal error). `maxPerUser` may be below `maxPerBooking`: the smaller wins.
pub(super) fn check_limits(
    max_per_user: Option<i32>,
    hold_minutes: i32,
    offer_minutes: i32,
) -> AppResult<()> {
    if let Some(max) = max_per_user
        && !(1..=MAX_PER_USER).contains(&max)
    {
        return Err(AppError::bad_input(
            "maxPerUser",
            format!("maxPerUser must be 1 to {MAX_PER_USER}"),
        ));
    }
    if !(1..=MAX_HOLD_MINUTES).contains(&hold_minutes) {
        return Err(AppError::bad_input(
            "holdMinutes",
            format!("holdMinutes must be 1 to {MAX_HOLD_MINUTES}"),
        ));
    }
    if !(1..=MAX_OFFER_MINUTES).contains(&offer_minutes) {
        return Err(AppError::bad_input(
            "offerMinutes",
            format!("offerMinutes must be 1 to {MAX_OFFER_MINUTES}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn field(result: AppResult<()>) -> Option<&'static str> {
        match result {
            Ok(()) => None,
            Err(AppError::BadUserInput { field, .. }) => field,
            Err(other) => Some(other.code()),
        }
    }

    #[test]
    fn a_sales_window_may_be_open_at_either_end() {
        let starts = Utc::now() + Duration::days(7);
        let ends = starts + Duration::hours(3);
        assert_eq!(field(check_sales_window(starts, ends, None, None)), None);
        let open = Some(starts - Duration::days(1));
        assert_eq!(field(check_sales_window(starts, ends, open, None)), None);
        assert_eq!(
            field(check_sales_window(starts, ends, None, Some(ends))),
            None
        );
    }

    #[test]
    fn sales_open_before_the_event_starts() {
        let starts = Utc::now() + Duration::days(7);
        let ends = starts + Duration::hours(3);
        let at_start = check_sales_window(starts, ends, Some(starts), None);
        assert_eq!(field(at_start), Some("salesStartAt"));
    }

    #[test]
    fn sales_close_after_they_open_and_no_later_than_the_event_ends() {
        let starts = Utc::now() + Duration::days(7);
        let ends = starts + Duration::hours(3);
        let open = starts - Duration::days(2);
        let same = check_sales_window(starts, ends, Some(open), Some(open));
        assert_eq!(field(same), Some("salesEndAt"));
        let late = check_sales_window(starts, ends, None, Some(ends + Duration::seconds(1)));
        assert_eq!(field(late), Some("salesEndAt"));
        // Closing after the event started (but before it ends) is allowed.
        let during =
            check_sales_window(starts, ends, Some(open), Some(starts + Duration::hours(1)));
        assert_eq!(field(during), None);
    }

    #[test]
    fn limits_stay_within_what_the_table_allows() {
        assert_eq!(field(check_limits(None, 1, 1)), None);
        assert_eq!(
            field(check_limits(
                Some(MAX_PER_USER),
                MAX_HOLD_MINUTES,
                MAX_OFFER_MINUTES
            )),
            None
        );
        assert_eq!(field(check_limits(Some(0), 15, 15)), Some("maxPerUser"));
        assert_eq!(field(check_limits(None, 0, 15)), Some("holdMinutes"));
        assert_eq!(
            field(check_limits(None, 15, MAX_OFFER_MINUTES + 1)),
            Some("offerMinutes")
        );
        assert_eq!(field(check_capacity(0)), Some("capacity"));
        assert_eq!(field(check_capacity(MAX_CAPACITY)), None);
        assert_eq!(field(check_max_per_booking(101)), Some("maxPerBooking"));
    }

    #[test]
    fn an_event_starts_in_the_future_and_ends_no_earlier() {
        let starts = Utc::now() + Duration::days(1);
        assert_eq!(field(check_schedule(starts, starts)), None);
        assert_eq!(
            field(check_schedule(starts, starts - Duration::seconds(1))),
            Some("endsAt")
        );
        let past = Utc::now() - Duration::seconds(1);
        assert_eq!(field(check_schedule(past, starts)), Some("startsAt"));
    }
}
