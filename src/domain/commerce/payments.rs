//! What a payment does to an order: a provider's event (a verified webhook, a reconciliation,
//! an organizer marking a manual payment received) applied exactly once, under the event's
//! lock. Each event id is a row of `provider_events`: a duplicate or concurrent delivery finds
//! it and changes nothing.
//!
//! A payment for an order still waiting makes it PAID (its hold becomes one booking per line,
//! its tickets are issued). **A payment that arrives after the hold ended** takes the seats
//! again when they are still free, so the order is PAID all the same; when they are gone (or
//! the promo code is used up, or the event cannot be sold any more) the money is refunded at
//! once: a PENDING refund is recorded here and carried out by the caller after the commit, and
//! the order says why. Never oversold, never money kept without a ticket. A failure or a
//! cancellation only moves an order that is still waiting, so an event that comes late (a
//! `payment_failed` after the success) changes nothing.

use diesel::prelude::*;
use diesel::upsert::on_constraint;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::ensure_manager;
use super::orders::{issue, lock_order, mark_paid, take_promo_use};
use super::refunds::record_refund;
use crate::db::commerce::{Order, OrderLine, OrderStatus, Provider, Refund};
use crate::db::models::{Event, Hold, HoldStatus};
use crate::db::schema::{holds, orders, provider_events};
use crate::domain::Viewer;
use crate::domain::audit;
use crate::domain::changes::{Changes, Committed};
use crate::domain::freed_seats::{self, Ending};
use crate::domain::inventory::Inventory;
use crate::domain::sale_rules::unbookable_reason;
use crate::domain::stock::{self, Move, Stock, demand_of, lines_of};
use crate::error::{AppError, AppResult};

/// One provider event, to apply once.
pub struct EventKey<'a> {
    pub provider: Provider,
    pub id: &'a str,
    /// When the provider created it (Unix seconds).
    pub created: i64,
    pub kind: &'a str,
}

/// An order after a payment, and the refund to carry out when the payment could not be kept.
pub struct PaymentOutcome {
    pub order: Order,
    pub refund: Option<Refund>,
}

/// Records the provider event; `false` when it was applied before (or is being applied by a
/// concurrent delivery, which this one then waits for).
async fn first_delivery(
    conn: &mut AsyncPgConnection,
    key: &EventKey<'_>,
    order_id: Option<Uuid>,
) -> AppResult<bool> {
    let inserted = diesel::insert_into(provider_events::table)
        .values((
            provider_events::provider.eq(key.provider.as_str()),
            provider_events::event_id.eq(key.id),
            provider_events::order_id.eq(order_id),
            provider_events::kind.eq(key.kind),
            provider_events::created.eq(key.created),
        ))
        .on_conflict(on_constraint("provider_events_pkey"))
        .do_nothing()
        .execute(conn)
        .await?;
    Ok(inserted == 1)
}

/// Records a provider event that moves nothing (a type we do not act on), once.
pub async fn record_event(conn: &mut AsyncPgConnection, key: &EventKey<'_>) -> AppResult<()> {
    first_delivery(conn, key, None).await?;
    Ok(())
}

/// A payment of `amount` succeeded for the order.
pub async fn payment_succeeded(
    conn: &mut AsyncPgConnection,
    key: &EventKey<'_>,
    order_id: Uuid,
    amount: i64,
    reference: Option<&str>,
) -> AppResult<Committed<PaymentOutcome>> {
    conn.transaction(async move |conn| {
        let (event, order) = lock_order(conn, order_id).await?;
        if !first_delivery(conn, key, Some(order_id)).await? {
            return Ok(Committed::unchanged(PaymentOutcome {
                order,
                refund: None,
            }));
        }
        apply_payment(conn, event, order, amount, reference).await
    })
    .await
}

/// The event's organizer (or an admin) received a manual payment for the order.
pub async fn mark_order_paid(
    conn: &mut AsyncPgConnection,
    viewer: &Viewer,
    order_id: Uuid,
    reference: Option<&str>,
) -> AppResult<Committed<PaymentOutcome>> {
    if reference.is_some_and(|r| r.len() > 200 || r.chars().any(char::is_control)) {
        return Err(AppError::bad_input(
            "reference",
            "a reference is at most 200 characters",
        ));
    }
    conn.transaction(async move |conn| {
        let (event, order) = lock_order(conn, order_id).await?;
        ensure_manager(viewer, &event)?;
        if order.provider != Provider::Manual {
            return Err(AppError::not_possible(
                "NOT_MANUAL",
                "this order is paid through its payment provider, not by hand",
            ));
        }
        let id = format!("manual:{order_id}");
        let key = EventKey {
            provider: Provider::Manual,
            id: &id,
            created: chrono::Utc::now().timestamp(),
            kind: "payment.received",
        };
        if !first_delivery(conn, &key, Some(order_id)).await? {
            return Ok(Committed::unchanged(PaymentOutcome {
                order,
                refund: None,
            }));
        }
        let (total, before) = (order.total, order.clone());
        let paid = apply_payment(conn, event, order, total, reference).await?;
        let (after, refund) = (&paid.value.order, paid.value.refund.as_ref());
        audit::record_order_action(conn, viewer, "order.mark_paid", &before, after, refund).await?;
        Ok(paid)
    })
    .await
}

async fn apply_payment(
    conn: &mut AsyncPgConnection,
    event: Event,
    order: Order,
    amount: i64,
    reference: Option<&str>,
) -> AppResult<Committed<PaymentOutcome>> {
    if reference.is_some() {
        diesel::update(orders::table.find(order.id))
            .set(orders::payment_reference.eq(reference))
            .execute(conn)
            .await?;
    }
    let mut changes = Changes::default();
    let mut lines = lines_of(conn, order.id).await?;
    match order.status {
        OrderStatus::PendingPayment => {
            let hold = match order.hold_id {
                Some(id) => Some(
                    holds::table
                        .find(id)
                        .select(Hold::as_select())
                        .first(conn)
                        .await?,
                ),
                None => None,
            };
            // Still HELD, even past its expiry: nobody took the seats, they are the order's.
            if let Some(hold) = hold.filter(|h| h.status == HoldStatus::Held) {
                let mut inventory = Inventory::new(event);
                issue(
                    conn,
                    &mut inventory,
                    &order,
                    &mut lines,
                    Some(&hold),
                    &mut changes,
                )
                .await?;
                stock::apply(conn, &demand_of(&lines), Move::Sell).await?;
                let order = mark_paid(conn, order.id, amount, None, &mut changes).await?;
                inventory.save(conn, &mut changes).await?;
                return Ok(Committed::new(
                    PaymentOutcome {
                        order,
                        refund: None,
                    },
                    changes,
                ));
            }
            // The hold ended without the order noticing (it cannot: they end together).
            Err(anyhow::anyhow!("order {} pending on an ended hold", order.id).into())
        }
        OrderStatus::Expired | OrderStatus::Cancelled => {
            late_payment(conn, event, order, lines, amount, changes).await
        }
        // Paid already (a second delivery under another event id): nothing to do.
        OrderStatus::Paid | OrderStatus::PartiallyRefunded | OrderStatus::Refunded => {
            Ok(Committed::unchanged(PaymentOutcome {
                order,
                refund: None,
            }))
        }
    }
}

/// A payment for an order whose hold has ended: the seats are taken again if they are still
/// free (in a savepoint, so that a refusal leaves nothing behind), otherwise the payment is
/// refunded.
async fn late_payment(
    conn: &mut AsyncPgConnection,
    event: Event,
    order: Order,
    lines: Vec<OrderLine>,
    amount: i64,
    mut changes: Changes,
) -> AppResult<Committed<PaymentOutcome>> {
    let retaken = conn
        .transaction(async |conn| {
            let mut lines = lines.clone();
            let mut changes = Changes::default();
            if let Some(reason) = unbookable_reason(&event) {
                return Err(reason);
            }
            let quantity: i32 = lines.iter().map(|l| l.quantity).sum();
            let mut inventory = Inventory::new(event.clone());
            freed_seats::take_from_expired(conn, &mut inventory, quantity, &mut changes).await?;
            let stock = Stock::load(conn, event.id).await?;
            let demand = demand_of(&lines);
            if inventory.available < quantity {
                return Err(AppError::SoldOut {
                    seats_available: inventory.available,
                });
            }
            stock.check(&demand, inventory.available)?;
            if let Some(promo) = order.promo_code_id {
                let promo = super::codes::find_promo(conn, promo).await?;
                take_promo_use(conn, &promo).await?;
            }
            issue(conn, &mut inventory, &order, &mut lines, None, &mut changes).await?;
            stock::apply(conn, &demand, Move::SellFree).await?;
            let paid = mark_paid(
                conn,
                order.id,
                amount,
                Some("paid after the hold expired; the seats were still free"),
                &mut changes,
            )
            .await?;
            inventory.save(conn, &mut changes).await?;
            Ok((paid, changes))
        })
        .await;
    match retaken {
        Ok((order, changes)) => Ok(Committed::new(
            PaymentOutcome {
                order,
                refund: None,
            },
            changes,
        )),
        Err(AppError::Internal(error)) => Err(AppError::Internal(error)),
        Err(why) => {
            tracing::info!(order_id = %order.id, why = %why.message(), "a late payment is refunded");
            let order: Order = diesel::update(orders::table.find(order.id))
                .set((
                    orders::amount_paid.eq(amount),
                    orders::payment_status.eq("succeeded"),
                    orders::reason.eq(
                        "paid after the hold expired, when the seats were no longer free: \
                         the payment is refunded in full",
                    ),
                    orders::version.eq(orders::version + 1),
                    orders::updated_at.eq(diesel::dsl::now),
                ))
                .returning(Order::as_returning())
                .get_result(conn)
                .await?;
            let refund = record_refund(
                conn,
                &order,
                amount,
                &[],
                Some("paid after the hold expired: seats no longer free"),
            )
            .await?;
            changes.orders.push(order.clone());
            Ok(Committed::new(
                PaymentOutcome {
                    order,
                    refund: Some(refund),
                },
                changes,
            ))
        }
    }
}

/// A payment attempt failed (the buyer may try again on the same intent): recorded on an
/// order still waiting, ignored otherwise.
pub async fn payment_failed(
    conn: &mut AsyncPgConnection,
    key: &EventKey<'_>,
    order_id: Uuid,
    message: Option<&str>,
) -> AppResult<Committed<Order>> {
    conn.transaction(async move |conn| {
        let (_, order) = lock_order(conn, order_id).await?;
        if !first_delivery(conn, key, Some(order_id)).await?
            || order.status != OrderStatus::PendingPayment
        {
            return Ok(Committed::unchanged(order));
        }
        let order: Order = diesel::update(orders::table.find(order_id))
            .set((
                orders::payment_status.eq("failed"),
                orders::reason.eq(message.unwrap_or("the payment failed: try again")),
                orders::version.eq(orders::version + 1),
                orders::updated_at.eq(diesel::dsl::now),
            ))
            .returning(Order::as_returning())
            .get_result(conn)
            .await?;
        let changes = Changes {
            orders: vec![order.clone()],
            ..Changes::default()
        };
        Ok(Committed::new(order, changes))
    })
    .await
}

/// The payment was cancelled at the provider: an order still waiting is cancelled and its
/// seats go back.
pub async fn payment_canceled(
    conn: &mut AsyncPgConnection,
    key: &EventKey<'_>,
    order_id: Uuid,
) -> AppResult<Committed<Order>> {
    conn.transaction(async move |conn| {
        let (event, order) = lock_order(conn, order_id).await?;
        if !first_delivery(conn, key, Some(order_id)).await?
            || order.status != OrderStatus::PendingPayment
        {
            return Ok(Committed::unchanged(order));
        }
        let mut changes = Changes::default();
        let mut inventory = Inventory::new(event);
        if let Some(hold_id) = order.hold_id {
            freed_seats::end_holds(
                conn,
                &mut inventory,
                Ending::One(hold_id),
                HoldStatus::Released,
                &mut changes,
            )
            .await?;
        }
        inventory.save(conn, &mut changes).await?;
        let order = super::find_order(conn, order_id).await?;
        Ok(Committed::new(order, changes))
    })
    .await
}
