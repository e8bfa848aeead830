//! Catching up after messages may have been missed (the Redis subscription was lost): what
//! the bus re-reads from PostgreSQL, the truth that subscribers converge to, and how it pushes
//! that state again to the topics with subscribers on this instance.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{Inner, OrderUpdate, SeatMapUpdate, SeatUpdate, Topic, Update, lock};
use crate::db::models::{Booking, Event, Hold, WaitlistEntry};
use crate::db::schema::{bookings, events, holds, orders, waitlist_entries};
use crate::error::AppResult;

/// How far before the moment messages may have been missed a resync looks for booking
/// changes: covers clock skew between instances and the database, a transaction that began
/// (and took its timestamps) before it committed, and a loss noticed late.
pub const RESYNC_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(60);
/// Most bookings re-sent to one instance's subscribers after an outage; a longer outage than
/// this covers is rare, and those clients still have `myBookings` to read the full list.
const MAX_RESYNC_BOOKINGS: i64 = 10_000;

/// The bookings of `user_ids` created or cancelled since `since`.
async fn bookings_changed_since(
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

/// The orders of `user_ids` that moved since `since`, as the messages that announced them.
async fn orders_changed_since(
    conn: &mut AsyncPgConnection,
    user_ids: &[Uuid],
    since: DateTime<Utc>,
) -> AppResult<Vec<OrderUpdate>> {
    if user_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(Uuid, Uuid, Uuid, i32)> = orders::table
        .filter(orders::user_id.eq_any(user_ids))
        .filter(orders::updated_at.ge(since))
        .select((
            orders::id,
            orders::user_id,
            orders::event_id,
            orders::version,
        ))
        .order(orders::updated_at.asc())
        .limit(MAX_RESYNC_BOOKINGS)
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(order_id, user_id, event_id, version)| OrderUpdate {
            order_id,
            user_id,
            event_id,
            version,
        })
        .collect())
}

/// The holds of `user_ids` started or ended since `since`.
async fn holds_changed_since(
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
async fn waitlist_changed_since(
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

/// The events `ids`, as they are now.
async fn events_by_id(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> QueryResult<HashMap<Uuid, Event>> {
    let rows: Vec<Event> = events::table
        .filter(events::id.eq_any(ids))
        .select(Event::as_select())
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(|event| (event.id, event)).collect())
}

/// The bookings, holds and waiting-list entries of `user_ids` that changed since `since`, as
/// the messages that announced them: what a subscriber that may have missed some re-reads.
pub async fn reservation_changes_since(
    conn: &mut AsyncPgConnection,
    user_ids: &[Uuid],
    since: DateTime<Utc>,
) -> AppResult<Vec<Update>> {
    let bookings = bookings_changed_since(conn, user_ids, since).await?;
    let holds = holds_changed_since(conn, user_ids, since).await?;
    let entries = waitlist_changed_since(conn, user_ids, since).await?;
    let orders = orders_changed_since(conn, user_ids, since).await?;
    Ok(bookings
        .into_iter()
        .map(|b| Update::Booking(Arc::new(b)))
        .chain(holds.into_iter().map(|h| Update::Hold(Arc::new(h))))
        .chain(entries.into_iter().map(|w| Update::Waitlist(Arc::new(w))))
        .chain(orders.into_iter().map(Update::UserOrder))
        .collect())
}

/// Pushes the database's current state to every topic with local subscribers: seat counts and
/// event details as they are now, and the bookings, holds and waiting-list entries changed
/// since `since`. Subscribers drop whatever is not newer than what they sent.
pub(super) async fn resync_local(inner: Arc<Inner>, since: DateTime<Utc>) {
    let topics: Vec<Topic> = lock(&inner.channels).keys().copied().collect();
    resync_topics(inner, topics, since).await;
}

/// Like [`resync_local`], for `topics` only: on a Redis Cluster, a topic whose subscription
/// was just set up (or replaced) on its shard.
pub(super) async fn resync_topics(inner: Arc<Inner>, topics: Vec<Topic>, since: DateTime<Utc>) {
    let Some(redis) = &inner.redis else { return };
    if topics.is_empty() {
        return;
    }
    let mut event_ids = Vec::new();
    let mut user_ids = Vec::new();
    let mut order_ids = Vec::new();
    for topic in &topics {
        match topic {
            Topic::Seats(id) | Topic::Event(id) | Topic::SeatMap(id) => event_ids.push(*id),
            Topic::UserBookings(id) => user_ids.push(*id),
            Topic::Order(id) => order_ids.push(*id),
        }
    }
    event_ids.sort_unstable();
    event_ids.dedup();
    let read = async {
        let mut conn = redis.db.get().await?;
        let events = events_by_id(&mut conn, &event_ids).await?;
        let mut changes = reservation_changes_since(&mut conn, &user_ids, since)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        // An order's subscriber re-reads the order: its current version is enough.
        let orders: Vec<(Uuid, Uuid, Uuid, i32)> = orders::table
            .filter(orders::id.eq_any(&order_ids))
            .select((
                orders::id,
                orders::user_id,
                orders::event_id,
                orders::version,
            ))
            .load(&mut conn)
            .await?;
        changes.extend(
            orders
                .into_iter()
                .map(|(order_id, user_id, event_id, version)| {
                    Update::Order(OrderUpdate {
                        order_id,
                        user_id,
                        event_id,
                        version,
                    })
                }),
        );
        anyhow::Ok((events, changes))
    };
    let (events, changes) = match read.await {
        Ok(state) => state,
        Err(error) => {
            tracing::warn!(%error, "cannot re-read live state after reconnecting to Redis");
            return;
        }
    };
    for event in events.into_values() {
        inner.deliver_local(&Update::Seats(SeatUpdate::from(&event)));
        if event.venue_id.is_some() {
            // No previous version: seat-map subscribers re-read the map if it moved on.
            inner.deliver_local(&Update::SeatMap(Arc::new(SeatMapUpdate {
                event_id: event.id,
                previous_version: None,
                version: event.version,
                seats: Vec::new(),
            })));
        }
        inner.deliver_local(&Update::Event(Arc::new(event)));
    }
    for change in changes {
        inner.deliver_local(&change);
    }
    tracing::debug!(
        topics = topics.len(),
        "re-sent live state after (re)subscribing on Redis"
    );
}
