//! The sweeper's per-event transactions: ending the holds that have expired, and offering the
//! waiting list the seats freed while sales were paused, for events nobody is buying. Each
//! runs in a transaction of its own under the event's row lock, so several instances may sweep
//! at once: a hold ends, and an entry is offered, only once. (Completing events that are over
//! is [`super::events::complete_ended`].)
//!
//! Top layer: a command module over [`super::freed_seats`].

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::changes::{Changes, Committed};
use super::freed_seats::{catch_up, expire};
use super::inventory::Inventory;
use super::sale_rules::lock_event;
use crate::db::models::HoldStatus;
use crate::db::schema::holds;
use crate::error::AppResult;

/// Events with holds past their expiry, for the sweeper.
pub async fn events_with_expired_holds(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> AppResult<Vec<Uuid>> {
    Ok(holds::table
        .filter(holds::status.eq(HoldStatus::Held))
        .filter(holds::expires_at.le(diesel::dsl::now))
        .select(holds::event_id)
        .distinct()
        .limit(limit)
        .load(conn)
        .await?)
}

/// Ends one event's expired holds in a transaction of its own. Safe to run on several
/// instances at once: the event lock queues them, and a hold ends only once.
pub async fn sweep_event(conn: &mut AsyncPgConnection, event_id: Uuid) -> AppResult<Committed<()>> {
    conn.transaction(async move |conn| {
        let event = lock_event(conn, event_id).await?;
        let mut changes = Changes::default();
        let mut inventory = Inventory::new(event);
        expire(conn, &mut inventory, &mut changes).await?;
        inventory.save(conn, &mut changes).await?;
        Ok(Committed::new((), changes))
    })
    .await
}

/// Events on sale, with a sales window, whose free seats a waiting entry fits: seats freed
/// while their sales were paused (see [`catch_up`]), for the sweeper.
pub async fn events_owed_seats(conn: &mut AsyncPgConnection, limit: i64) -> AppResult<Vec<Uuid>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        id: Uuid,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT e.id FROM events e \
         WHERE e.status = 'PUBLISHED' AND e.seats_available > 0 AND e.starts_at > now() \
           AND (e.sales_start_at IS NOT NULL OR e.sales_end_at IS NOT NULL) \
           AND (e.sales_start_at IS NULL OR e.sales_start_at <= now()) \
           AND (e.sales_end_at IS NULL OR e.sales_end_at > now()) \
           AND EXISTS (SELECT 1 FROM waitlist_entries w WHERE w.event_id = e.id \
                         AND w.status = 'WAITING' AND w.quantity <= e.seats_available) \
         LIMIT $1",
    )
    .bind::<diesel::sql_types::BigInt, _>(limit)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|row| row.id).collect())
}

/// Offers one event's free seats to its waiting list, in a transaction of its own (see
/// [`catch_up`]). Safe to run on several instances at once: the event lock queues them, and
/// an entry is offered once.
pub async fn catch_up_event(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
) -> AppResult<Committed<()>> {
    conn.transaction(async move |conn| {
        let event = lock_event(conn, event_id).await?;
        let mut changes = Changes::default();
        let mut inventory = Inventory::new(event);
        catch_up(conn, &mut inventory, &mut changes).await?;
        inventory.save(conn, &mut changes).await?;
        Ok(Committed::new((), changes))
    })
    .await
}
