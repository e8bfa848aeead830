//! The waiting list of an event that sells ticket types. Each entry waits for seats of one
//! ticket type; when seats free up (a refund, a cancelled or expired order) and the type can
//! sell the entry's quantity, [`super::freed_seats::promote`] makes the entry an order
//! PENDING_PAYMENT for them at the type's price, and that order's hold is the entry's offer
//! (the entry is OFFERED with it). This is pretix's waiting-list voucher with the checkout
//! already done: the buyer only pays, with `markOrderPaid` for a manual event or the card
//! payment the order carries (its intent is created after the commit). An offer that is not
//! paid in time expires like any order's hold, and the seats go to the next in line; once paid,
//! the order's tickets are issued as for any order and the entry is FULFILLED
//! ([`super::freed_seats::fulfil_offer`]).
//!
//! The middle layer: moves counters with [`super::stock`] and seats with [`super::seats`];
//! the hold is made by the caller, [`super::freed_seats`], which alone imports this.

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::changes::Changes;
use super::seats::{self, SeatOwner};
use super::stock::{self, Demand, Move, Stock};
use crate::db::commerce::{EventSales, Order, OrderLine, OrderStatus, Provider};
use crate::db::models::{Event, Hold, WaitlistEntry};
use crate::db::schema::{events, order_lines, orders};
use crate::error::AppResult;

/// What promoting an entry of a ticketed event needs to know: the event's stock (read under its
/// lock, again after each promotion) and how it is paid for.
pub(crate) struct TicketedList {
    pub stock: Stock,
    pub sales: EventSales,
}

impl TicketedList {
    pub async fn load(conn: &mut AsyncPgConnection, event_id: Uuid) -> AppResult<Self> {
        let sales = events::table
            .find(event_id)
            .select(EventSales::as_select())
            .first(conn)
            .await?;
        Ok(Self {
            stock: Stock::load(conn, event_id).await?,
            sales,
        })
    }

    /// Whether the entry's type can sell its quantity now (on sale, priced, enough left of the
    /// type, its quotas and the event's `event_available` seats). An entry that cannot keeps
    /// its place.
    pub fn fits(&self, entry: &WaitlistEntry, event_available: i32) -> bool {
        let Some(type_id) = entry.ticket_type_id else {
            return false;
        };
        let Some(ticket_type) = self.stock.types.get(&type_id) else {
            return false;
        };
        let now = Utc::now();
        ticket_type.sales_start_at.is_none_or(|from| now >= from)
            && ticket_type.sales_end_at.is_none_or(|until| now < until)
            && ticket_type.price_amount > 0
            && self.stock.available(type_id, event_available) >= entry.quantity
    }

    /// How long the buyer has to pay the order an entry is offered, in minutes: the event's
    /// payment window for a manual payment (a bank transfer takes days), its `offerMinutes`
    /// for a card.
    pub fn offer_minutes(&self, event: &Event) -> i32 {
        match self.sales.payment_provider {
            Provider::Manual => self.sales.payment_window_days * 24 * 60,
            Provider::Stripe => event.offer_minutes,
        }
    }
}

/// Places the order pending payment that `hold` (just made for the entry, for its quantity)
/// keeps the seats of: one line of the entry's type at its price, no discount. Claims the
/// seats and moves the type's and quotas' counters; the caller moves the event's and marks the
/// entry OFFERED.
pub(crate) async fn offer_order(
    conn: &mut AsyncPgConnection,
    event: &Event,
    list: &TicketedList,
    entry: &WaitlistEntry,
    hold: &Hold,
    changes: &mut Changes,
) -> AppResult<Order> {
    let type_id = entry
        .ticket_type_id
        .ok_or_else(|| anyhow::anyhow!("a ticketed waiting-list entry without a ticket type"))?;
    let ticket_type = &list.stock.types[&type_id];
    let currency = event
        .currency
        .clone()
        .unwrap_or_else(|| ticket_type.currency.clone());
    let total = ticket_type.price_amount * i64::from(entry.quantity);
    let now = Utc::now();
    let order = Order {
        id: Uuid::new_v4(),
        event_id: event.id,
        user_id: entry.user_id,
        status: OrderStatus::PendingPayment,
        currency,
        subtotal: total,
        discount: 0,
        total,
        promo_code_id: None,
        hold_id: Some(hold.id),
        idempotency_key: None,
        expires_at: hold.expires_at,
        provider: list.sales.payment_provider,
        intent_id: None,
        client_secret: None,
        payment_status: "awaiting_buyer".into(),
        amount_paid: 0,
        amount_refunded: 0,
        payment_reference: None,
        reason: Some("offered from the waiting list".into()),
        version: 1,
        created_at: now,
        updated_at: now,
        paid_at: None,
    };
    let before = changes.seats.len();
    seats::claim_in(
        conn,
        event,
        SeatOwner::Hold(hold.id),
        entry.quantity,
        &[],
        &ticket_type.sections,
        changes,
    )
    .await?;
    let seat_ids: Vec<Uuid> = changes.seats[before..].iter().map(|s| s.seat_id).collect();
    let order: Order = diesel::insert_into(orders::table)
        .values(&order)
        .returning(Order::as_returning())
        .get_result(conn)
        .await?;
    let line = OrderLine {
        id: Uuid::new_v4(),
        order_id: order.id,
        ticket_type_id: type_id,
        position: 0,
        quantity: entry.quantity,
        unit_price: ticket_type.price_amount,
        total,
        seat_ids,
        booking_id: None,
        refund_id: None,
    };
    diesel::insert_into(order_lines::table)
        .values(&line)
        .execute(conn)
        .await?;
    let demand = Demand::from([(type_id, entry.quantity)]);
    stock::apply(conn, &demand, Move::Hold).await?;
    changes.orders.push(order.clone());
    Ok(order)
}
