//! Refunds, full or partial (by line or by amount), by the event's organizer or an admin, and a
//! buyer's cancellation under the event's refund policy (`refundUntil`: before it a full
//! refund, after it none).
//!
//! A refund goes in three steps, so that no transaction waits on the provider: [`refund_order`]
//! records it PENDING (claiming its lines, so that no line is refunded twice and the amounts
//! never pass what was paid, pending refunds included), the caller asks the provider with the
//! refund's id as the idempotency key, and [`finish_refund`] applies the answer: the amount is
//! counted, the lines' bookings are cancelled, their seats and tickets go back. A refund the
//! provider could not be reached for stays PENDING, and the sweeper tries it again.

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::orders::lock_order;
use super::{ensure_manager, event_sales};
use crate::db::commerce::{Order, OrderLine, OrderStatus, Refund, RefundStatus, TicketStatus};
use crate::db::models::{Booking, BookingStatus, HoldStatus};
use crate::db::schema::{bookings, order_lines, orders, refunds, tickets};
use crate::domain::Viewer;
use crate::domain::audit;
use crate::domain::changes::{Changes, Committed};
use crate::domain::freed_seats::{self, Ending};
use crate::domain::inventory::Inventory;
use crate::domain::seats;
use crate::domain::stock::{self, Move, demand_of, lines_of};
use crate::error::{AppError, AppResult};

pub struct RefundRequest {
    /// Lines to refund whole (their seats go back). Empty: by amount only, or everything.
    pub line_ids: Vec<Uuid>,
    /// Minor units; by default what the lines came to after the discount, or everything left.
    pub amount: Option<i64>,
    pub reason: Option<String>,
}

/// An order after a refund was asked for, and the refund to carry out (none when nothing was
/// paid for the lines: they were taken back at once).
pub struct RefundStarted {
    pub order: Order,
    pub refund: Option<Refund>,
}

fn bad(field: &'static str, reason: &'static str, message: impl Into<String>) -> AppError {
    AppError::BadUserInput {
        message: message.into(),
        field: Some(field),
        reason: Some(reason),
    }
}

pub(super) async fn record_refund(
    conn: &mut AsyncPgConnection,
    order: &Order,
    amount: i64,
    line_ids: &[Uuid],
    reason: Option<&str>,
) -> AppResult<Refund> {
    let now = Utc::now();
    let refund = Refund {
        id: Uuid::new_v4(),
        order_id: order.id,
        amount,
        reason: reason.map(str::to_owned),
        status: RefundStatus::Pending,
        line_ids: line_ids.to_vec(),
        provider_refund_id: None,
        created_at: now,
        updated_at: now,
    };
    let refund: Refund = diesel::insert_into(refunds::table)
        .values(&refund)
        .returning(Refund::as_returning())
        .get_result(conn)
        .await?;
    if !line_ids.is_empty() {
        let claimed = diesel::update(
            order_lines::table
                .filter(order_lines::id.eq_any(line_ids))
                .filter(order_lines::order_id.eq(order.id))
                .filter(order_lines::refund_id.is_null()),
        )
        .set(order_lines::refund_id.eq(refund.id))
        .execute(conn)
        .await?;
        if claimed != line_ids.len() {
            return Err(bad(
                "lines",
                "LINE_ALREADY_REFUNDED",
                "a line is not part of this order or was refunded already",
            ));
        }
    }
    Ok(refund)
}

/// Minor units the order's refunds (pending ones included) have not yet taken back.
async fn refundable(conn: &mut AsyncPgConnection, order: &Order) -> AppResult<i64> {
    use diesel::sql_types::{BigInt, Nullable};
    // SUM(bigint) is numeric in PostgreSQL: cast back, the amounts are far from overflowing.
    let pending: Option<i64> = refunds::table
        .filter(refunds::order_id.eq(order.id))
        .filter(refunds::status.eq(RefundStatus::Pending))
        .select(diesel::dsl::sql::<Nullable<BigInt>>("SUM(amount)::bigint"))
        .first(conn)
        .await?;
    Ok(order.amount_paid - order.amount_refunded - pending.unwrap_or(0))
}

/// The organizer's (or an admin's) refund of some lines, an amount, or everything left.
pub async fn refund_order(
    conn: &mut AsyncPgConnection,
    viewer: &Viewer,
    order_id: Uuid,
    request: RefundRequest,
) -> AppResult<Committed<RefundStarted>> {
    if request.amount.is_some_and(|a| a <= 0) {
        return Err(bad(
            "amount",
            "INVALID_AMOUNT",
            "a refund's amount is more than 0",
        ));
    }
    if request
        .reason
        .as_ref()
        .is_some_and(|r| r.len() > 500 || r.chars().any(char::is_control))
    {
        return Err(AppError::bad_input(
            "reason",
            "a reason is at most 500 characters",
        ));
    }
    let request = &request;
    conn.transaction(async move |conn| {
        let (event, order) = lock_order(conn, order_id).await?;
        ensure_manager(viewer, &event)?;
        let started = start(conn, event, order.clone(), request).await?;
        let (after, refund) = (&started.value.order, started.value.refund.as_ref());
        audit::record_order_action(conn, viewer, "order.refund", &order, after, refund).await?;
        Ok(started)
    })
    .await
}

async fn start(
    conn: &mut AsyncPgConnection,
    event: crate::db::models::Event,
    order: Order,
    request: &RefundRequest,
) -> AppResult<Committed<RefundStarted>> {
    if !matches!(
        order.status,
        OrderStatus::Paid | OrderStatus::PartiallyRefunded
    ) {
        return Err(AppError::not_possible(
            "NOT_PAID",
            "only a paid order can be refunded",
        ));
    }
    let lines = lines_of(conn, order.id).await?;
    let open: Vec<&OrderLine> = lines.iter().filter(|l| l.refund_id.is_none()).collect();
    let everything = request.line_ids.is_empty() && request.amount.is_none();
    let chosen: Vec<&OrderLine> = if everything {
        open.clone()
    } else {
        let mut chosen = Vec::new();
        for id in &request.line_ids {
            let line = lines
                .iter()
                .find(|l| l.id == *id)
                .ok_or(AppError::NotFound("order line"))?;
            if line.refund_id.is_some() {
                return Err(bad(
                    "lines",
                    "LINE_ALREADY_REFUNDED",
                    "this line was refunded already",
                ));
            }
            chosen.push(line);
        }
        chosen
    };
    let left = refundable(conn, &order).await?;
    let takes_every_line = chosen.len() == open.len() && !open.is_empty();
    let amount = match request.amount {
        Some(amount) => amount,
        None if everything || takes_every_line => left,
        // Each line's share of what was paid: its total less its part of the discount.
        None => chosen
            .iter()
            .map(|l| {
                if order.subtotal == 0 {
                    0
                } else {
                    l.total * order.total / order.subtotal
                }
            })
            .sum(),
    };
    if amount > left {
        return Err(bad(
            "amount",
            "REFUND_TOO_LARGE",
            format!("at most {left} can still be refunded"),
        ));
    }
    let line_ids: Vec<Uuid> = chosen.iter().map(|l| l.id).collect();
    let mut changes = Changes::default();
    if amount == 0 {
        if line_ids.is_empty() {
            return Err(bad(
                "amount",
                "NOTHING_TO_REFUND",
                "nothing is left to refund",
            ));
        }
        // Nothing was paid for these lines: take them back now, with no refund to record
        // (the lines are marked with the order's id instead of a refund's).
        let mut inventory = Inventory::new(event);
        diesel::update(order_lines::table.filter(order_lines::id.eq_any(&line_ids)))
            .set(order_lines::refund_id.eq(order.id))
            .execute(conn)
            .await?;
        release_lines(conn, &mut inventory, &line_ids, &mut changes).await?;
        inventory.save(conn, &mut changes).await?;
        let all_gone = lines_of(conn, order.id)
            .await?
            .iter()
            .all(|l| l.refund_id.is_some());
        let status = if all_gone {
            OrderStatus::Cancelled
        } else {
            order.status
        };
        let order = stock::set_status(
            conn,
            order.id,
            status,
            request.reason.as_deref(),
            &mut changes,
        )
        .await?;
        return Ok(Committed::new(
            RefundStarted {
                order,
                refund: None,
            },
            changes,
        ));
    }
    let refund = record_refund(conn, &order, amount, &line_ids, request.reason.as_deref()).await?;
    let order = stock::set_status(
        conn,
        order.id,
        order.status,
        order.reason.as_deref(),
        &mut changes,
    )
    .await?;
    Ok(Committed::new(
        RefundStarted {
            order,
            refund: Some(refund),
        },
        changes,
    ))
}

/// The buyer cancels their order: a pending one at once (its seats go back), a paid one for a
/// full refund while the event's `refundUntil` has not passed.
pub async fn cancel_order(
    conn: &mut AsyncPgConnection,
    viewer: &Viewer,
    order_id: Uuid,
) -> AppResult<Committed<RefundStarted>> {
    conn.transaction(async move |conn| {
        let (event, order) = lock_order(conn, order_id).await?;
        if order.user_id != viewer.id() && !viewer.is_admin() {
            return Err(AppError::NotFound("order"));
        }
        // An admin cancelling someone else's order is an admin action: audited.
        let before = (order.user_id != viewer.id()).then(|| order.clone());
        let cancelled = match order.status {
            OrderStatus::PendingPayment => {
                let mut changes = Changes::default();
                let mut inventory = Inventory::new(event);
                if let Some(hold_id) = order.hold_id {
                    let ended = freed_seats::end_holds(
                        conn,
                        &mut inventory,
                        Ending::One(hold_id),
                        HoldStatus::Released,
                        &mut changes,
                    )
                    .await?;
                    if !ended.is_empty() {
                        freed_seats::promote(conn, &mut inventory, &mut changes).await?;
                    }
                }
                inventory.save(conn, &mut changes).await?;
                let order = super::find_order(conn, order_id).await?;
                Ok(Committed::new(
                    RefundStarted {
                        order,
                        refund: None,
                    },
                    changes,
                ))
            }
            OrderStatus::Paid | OrderStatus::PartiallyRefunded => {
                if event.starts_at <= Utc::now() {
                    return Err(AppError::not_possible(
                        "EVENT_STARTED",
                        "orders cannot be cancelled once the event has started",
                    ));
                }
                let sales = event_sales(conn, event.id).await?;
                match sales.refund_until {
                    None => {
                        return Err(AppError::not_possible(
                            "REFUNDS_NOT_OFFERED",
                            "this event does not refund cancelled orders",
                        ));
                    }
                    Some(until) if Utc::now() >= until => {
                        return Err(AppError::not_possible(
                            "REFUND_PERIOD_OVER",
                            format!("orders could be cancelled until {}", until.to_rfc3339()),
                        ));
                    }
                    Some(_) => {}
                }
                let request = RefundRequest {
                    line_ids: Vec::new(),
                    amount: None,
                    reason: Some("cancelled by the buyer".into()),
                };
                start(conn, event, order, &request).await
            }
            _ => Ok(Committed::unchanged(RefundStarted {
                order,
                refund: None,
            })),
        }?;
        if let Some(before) = before.filter(|_| cancelled.changed()) {
            let (after, refund) = (&cancelled.value.order, cancelled.value.refund.as_ref());
            audit::record_order_action(conn, viewer, "order.cancel", &before, after, refund)
                .await?;
        }
        Ok(cancelled)
    })
    .await
}

/// Cancels the lines' bookings (those still confirmed), giving their seats back to the event
/// (its waiting list first), their tickets to their types and quotas, and marks the tickets
/// REFUNDED.
async fn release_lines(
    conn: &mut AsyncPgConnection,
    inventory: &mut Inventory,
    line_ids: &[Uuid],
    changes: &mut Changes,
) -> AppResult<()> {
    let lines: Vec<OrderLine> = order_lines::table
        .filter(order_lines::id.eq_any(line_ids))
        .select(OrderLine::as_select())
        .load(conn)
        .await?;
    let booking_ids: Vec<Uuid> = lines.iter().filter_map(|l| l.booking_id).collect();
    let cancelled: Vec<Booking> = diesel::update(
        bookings::table
            .filter(bookings::id.eq_any(&booking_ids))
            .filter(bookings::status.eq(BookingStatus::Confirmed)),
    )
    .set((
        bookings::status.eq(BookingStatus::Cancelled),
        bookings::cancelled_at.eq(diesel::dsl::now),
    ))
    .returning(Booking::as_returning())
    .get_results(conn)
    .await?;
    let cancelled_ids: Vec<Uuid> = cancelled.iter().map(|b| b.id).collect();
    let event = inventory.event.clone();
    seats::release_bookings(conn, &event, &cancelled_ids, changes).await?;
    let released: Vec<OrderLine> = lines
        .into_iter()
        .filter(|l| l.booking_id.is_some_and(|b| cancelled_ids.contains(&b)))
        .collect();
    for line in &released {
        inventory.unbook(line.quantity);
    }
    stock::apply(conn, &demand_of(&released), Move::Unsell).await?;
    diesel::update(
        tickets::table
            .filter(tickets::order_line_id.eq_any(line_ids))
            .filter(tickets::status.eq(TicketStatus::Valid)),
    )
    .set(tickets::status.eq(TicketStatus::Refunded))
    .execute(conn)
    .await?;
    changes.bookings.extend(cancelled);
    if !released.is_empty() {
        // The seats go to the waiting list first, as any freed seats do.
        freed_seats::promote(conn, inventory, changes).await?;
    }
    Ok(())
}

/// A refund waiting for the provider, with its order.
pub async fn refund_to_send(
    conn: &mut AsyncPgConnection,
    refund_id: Uuid,
) -> AppResult<Option<(Refund, Order)>> {
    let refund: Option<Refund> = refunds::table
        .find(refund_id)
        .filter(refunds::status.eq(RefundStatus::Pending))
        .select(Refund::as_select())
        .first(conn)
        .await
        .optional()?;
    let Some(refund) = refund else {
        return Ok(None);
    };
    let order = super::find_order(conn, refund.order_id).await?;
    Ok(Some((refund, order)))
}

/// Pending refunds older than `age`, oldest first: the sweeper's to retry.
pub async fn pending_refunds(
    conn: &mut AsyncPgConnection,
    age: chrono::Duration,
    limit: i64,
) -> AppResult<Vec<Uuid>> {
    Ok(refunds::table
        .filter(refunds::status.eq(RefundStatus::Pending))
        .filter(refunds::created_at.le(Utc::now() - age))
        .select(refunds::id)
        .order(refunds::created_at)
        .limit(limit)
        .load(conn)
        .await?)
}

/// What the provider answered.
pub enum RefundOutcome {
    Succeeded { provider_refund_id: String },
    Failed { message: String },
}

/// Applies the provider's answer to a pending refund, once.
pub async fn finish_refund(
    conn: &mut AsyncPgConnection,
    refund_id: Uuid,
    outcome: RefundOutcome,
) -> AppResult<Committed<Order>> {
    let refund: Refund = refunds::table
        .find(refund_id)
        .select(Refund::as_select())
        .first(conn)
        .await?;
    let outcome = &outcome;
    conn.transaction(async move |conn| {
        let (event, _) = lock_order(conn, refund.order_id).await?;
        let (status, provider_id) = match outcome {
            RefundOutcome::Succeeded { provider_refund_id } => {
                (RefundStatus::Succeeded, Some(provider_refund_id.as_str()))
            }
            RefundOutcome::Failed { .. } => (RefundStatus::Failed, None),
        };
        let moved = diesel::update(
            refunds::table
                .find(refund_id)
                .filter(refunds::status.eq(RefundStatus::Pending)),
        )
        .set((
            refunds::status.eq(status),
            refunds::provider_refund_id.eq(provider_id),
            refunds::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
        let order = super::find_order(conn, refund.order_id).await?;
        if moved == 0 {
            return Ok(Committed::unchanged(order));
        }
        let mut changes = Changes::default();
        if let RefundOutcome::Failed { message } = outcome {
            tracing::warn!(%refund_id, %message, "the payment provider refused a refund");
            diesel::update(order_lines::table.filter(order_lines::refund_id.eq(refund_id)))
                .set(order_lines::refund_id.eq(None::<Uuid>))
                .execute(conn)
                .await?;
            let order = stock::set_status(
                conn,
                order.id,
                order.status,
                Some("a refund was refused by the payment provider"),
                &mut changes,
            )
            .await?;
            return Ok(Committed::new(order, changes));
        }
        let mut inventory = Inventory::new(event);
        release_lines(conn, &mut inventory, &refund.line_ids, &mut changes).await?;
        let saved = inventory.save(conn, &mut changes).await?;
        // Money moved even when no seat did: the event's watchers (eventStatsUpdated) re-read.
        changes.event.get_or_insert(saved);
        let order: Order = diesel::update(orders::table.find(order.id))
            .set(orders::amount_refunded.eq(orders::amount_refunded + refund.amount))
            .returning(Order::as_returning())
            .get_result(conn)
            .await?;
        let status = if order.amount_refunded >= order.amount_paid {
            OrderStatus::Refunded
        } else {
            OrderStatus::PartiallyRefunded
        };
        let reason = order.reason.clone().or(refund.reason.clone());
        let order =
            stock::set_status(conn, order.id, status, reason.as_deref(), &mut changes).await?;
        Ok(Committed::new(order, changes))
    })
    .await
}

pub async fn order_refunds(conn: &mut AsyncPgConnection, order_id: Uuid) -> AppResult<Vec<Refund>> {
    Ok(refunds::table
        .filter(refunds::order_id.eq(order_id))
        .select(Refund::as_select())
        .order(refunds::created_at)
        .load(conn)
        .await?)
}
