//! Reading orders: one order for those who may see it, a buyer's and an event's orders a
//! page at a time, the order of a provider's intent, and the card orders due for
//! reconciliation.

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{ensure_manager, find_order, manages};
use crate::db::commerce::{Order, OrderLine, OrderStatus, Provider, Ticket};
use crate::db::schema::{orders, tickets};
use crate::domain::Viewer;
use crate::domain::pagination::{Page, PageRequest, load_page};
use crate::domain::stock;
use crate::error::{AppError, AppResult};

/// The order, for its buyer, the event's organizer and admins.
pub async fn visible_order(
    conn: &mut AsyncPgConnection,
    viewer: &Viewer,
    id: Uuid,
) -> AppResult<Order> {
    let order = find_order(conn, id).await?;
    if order.user_id == viewer.id() || viewer.is_admin() {
        return Ok(order);
    }
    let event = crate::domain::rows::find_event(conn, order.event_id)
        .await?
        .ok_or(AppError::NotFound("order"))?;
    if manages(Some(viewer), &event) {
        Ok(order)
    } else {
        Err(AppError::NotFound("order"))
    }
}

pub async fn order_lines(
    conn: &mut AsyncPgConnection,
    order_id: Uuid,
) -> AppResult<Vec<OrderLine>> {
    stock::lines_of(conn, order_id).await
}

pub async fn order_tickets(conn: &mut AsyncPgConnection, order_id: Uuid) -> AppResult<Vec<Ticket>> {
    Ok(tickets::table
        .filter(tickets::order_id.eq(order_id))
        .select(Ticket::as_select())
        .order((tickets::order_line_id, tickets::seat_id, tickets::id))
        .load(conn)
        .await?)
}

/// The user's orders, newest first.
pub async fn user_orders(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    page: PageRequest,
) -> AppResult<Page<Order>> {
    let query = orders::table
        .filter(orders::user_id.eq(user_id))
        .select(Order::as_select())
        .into_boxed();
    Ok(load_page!(
        conn,
        query,
        page,
        newest_first(orders::created_at, orders::id)
    ))
}

pub async fn count_user_orders(conn: &mut AsyncPgConnection, user_id: Uuid) -> AppResult<i64> {
    Ok(orders::table
        .filter(orders::user_id.eq(user_id))
        .count()
        .get_result(conn)
        .await?)
}

/// An event's orders, newest first: for its organizer and admins.
pub async fn event_orders(
    conn: &mut AsyncPgConnection,
    viewer: &Viewer,
    event_id: Uuid,
    page: PageRequest,
) -> AppResult<Page<Order>> {
    let event = crate::domain::rows::find_event(conn, event_id)
        .await?
        .ok_or(AppError::NotFound("event"))?;
    ensure_manager(viewer, &event)?;
    let query = orders::table
        .filter(orders::event_id.eq(event_id))
        .select(Order::as_select())
        .into_boxed();
    Ok(load_page!(
        conn,
        query,
        page,
        newest_first(orders::created_at, orders::id)
    ))
}

pub async fn count_event_orders(conn: &mut AsyncPgConnection, event_id: Uuid) -> AppResult<i64> {
    Ok(orders::table
        .filter(orders::event_id.eq(event_id))
        .count()
        .get_result(conn)
        .await?)
}

/// The order of a provider's intent.
pub async fn order_of_intent(
    conn: &mut AsyncPgConnection,
    provider: Provider,
    intent_id: &str,
) -> AppResult<Option<Order>> {
    Ok(orders::table
        .filter(orders::provider.eq(provider))
        .filter(orders::intent_id.eq(intent_id))
        .select(Order::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Card orders that have waited `age` without news: pending ones, and those that ended unpaid
/// in the last day (a payment may have succeeded without its webhook). Each is marked looked
/// at (`updated_at`), so the next round takes others. Returns (order, intent) pairs.
pub async fn due_for_reconciliation(
    conn: &mut AsyncPgConnection,
    age: chrono::Duration,
    limit: i64,
) -> AppResult<Vec<(Uuid, String)>> {
    let now = Utc::now();
    let due = orders::table
        .filter(orders::provider.eq(Provider::Stripe))
        .filter(orders::intent_id.is_not_null())
        .filter(orders::updated_at.le(now - age))
        .filter(
            orders::status
                .eq(OrderStatus::PendingPayment)
                .or(orders::status
                    .eq_any([OrderStatus::Expired, OrderStatus::Cancelled])
                    .and(orders::amount_paid.eq(0))
                    .and(orders::created_at.gt(now - chrono::Duration::days(1)))),
        )
        .select(orders::id)
        .order(orders::updated_at)
        .limit(limit)
        .load::<Uuid>(conn)
        .await?;
    // Two instances may pick the same order: each provider event still applies once.
    let rows: Vec<(Uuid, Option<String>)> = diesel::update(orders::table)
        .filter(orders::id.eq_any(due))
        .set(orders::updated_at.eq(diesel::dsl::now))
        .returning((orders::id, orders::intent_id))
        .get_results(conn)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, intent)| intent.map(|intent| (id, intent)))
        .collect())
}
