//! What the live-update bus reads back from the database after it may have missed messages
//! (a Redis outage): the truth that subscribers converge to.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::db::models::{Booking, Hold, WaitlistEntry};
use crate::db::schema::{bookings, holds, waitlist_entries};
use crate::error::AppResult;

/// Most bookings re-sent to one instance's subscribers after an outage; a longer outage than
/// this covers is rare, and those clients still have `myBookings` to read the full list.
const MAX_RESYNC_BOOKINGS: i64 = 10_000;

/// The bookings of `user_ids` created or cancelled since `since`.
pub async fn bookings_changed_since(
    conn: &mut AsyncPgConnection,
    user_ids: &[Uuid],
    since: DateTime<Utc>,
) -> AppResult<Vec<Booking>> {
    if user_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(bookings::table
        .filter(bookings::user_id.eq_any(user_ids))
        .filter(
            bookings::created_at
                .ge(since)
                .or(bookings::cancelled_at.ge(since)),
        )
        .select(Booking::as_select())
        .order(bookings::created_at.asc())
        .limit(MAX_RESYNC_BOOKINGS)
        .load(conn)
        .await?)
}

/// The holds of `user_ids` started or ended since `since`.
pub async fn holds_changed_since(
    conn: &mut AsyncPgConnection,
    user_ids: &[Uuid],
    since: DateTime<Utc>,
) -> AppResult<Vec<Hold>> {
    if user_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(holds::table
        .filter(holds::user_id.eq_any(user_ids))
        .filter(holds::created_at.ge(since).or(holds::ended_at.ge(since)))
        .select(Hold::as_select())
        .order(holds::created_at.asc())
        .limit(MAX_RESYNC_BOOKINGS)
        .load(conn)
        .await?)
}

/// The waiting-list entries of `user_ids` that moved since `since`.
pub async fn waitlist_changed_since(
    conn: &mut AsyncPgConnection,
    user_ids: &[Uuid],
    since: DateTime<Utc>,
) -> AppResult<Vec<WaitlistEntry>> {
    if user_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(waitlist_entries::table
        .filter(waitlist_entries::user_id.eq_any(user_ids))
        .filter(waitlist_entries::updated_at.ge(since))
        .select(WaitlistEntry::as_select())
        .order(waitlist_entries::updated_at.asc())
        .limit(MAX_RESYNC_BOOKINGS)
        .load(conn)
        .await?)
}
