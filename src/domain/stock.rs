//! The stock of an event that sells ticket types: each type's own counters (`held`, `sold`,
//! under its optional `quantity`) and the quotas shared by several types (pretix's quotas:
//! "Early bird and Regular together at most 300"). The event's capacity is the outermost
//! quota, kept by [`super::inventory`]; a ticket counts against every quota its type belongs
//! to, so a type's availability is the least of its own, its quotas' and the event's.
//!
//! Counters move only under the event's row lock ([`super::sale_rules::lock_event`]), in the
//! transaction that moves the seats, by one of the [`Move`]s. The CHECK constraints
//! `quotas_counters_check` (available + held + sold = size) and `ticket_types_counters_check`
//! (held + sold ≤ quantity) have the last word.
//!
//! Also here, because the hold machinery below the commands calls it: what happens to an
//! order when its hold ends ([`orders_of_ended_holds`]) and to the paid orders of an event
//! that is cancelled ([`refund_cancelled_event`]).
//!
//! The middle layer, beside the inventory: imports only the bottom ([`super::changes`]).

use std::collections::HashMap;

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::changes::Changes;
use crate::db::commerce::{
    Order, OrderLine, OrderStatus, Quota, Refund, RefundStatus, TicketStatus, TicketType,
};
use crate::db::models::HoldStatus;
use crate::db::schema::{
    order_lines, orders, promo_codes, quota_ticket_types, quotas, refunds, ticket_types, tickets,
};
use crate::error::{AppError, AppResult};

/// How many tickets of each type a change is about.
pub type Demand = HashMap<Uuid, i32>;

/// The demand of some order lines.
pub fn demand_of(lines: &[OrderLine]) -> Demand {
    let mut demand = Demand::new();
    for line in lines {
        *demand.entry(line.ticket_type_id).or_default() += line.quantity;
    }
    demand
}

/// Where tickets move between a type's and its quotas' counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// Free → held (an order placed).
    Hold,
    /// Held → sold (an order paid).
    Sell,
    /// Held → free (an order's hold ended unpaid).
    Unhold,
    /// Free → sold (a payment that came after its hold expired, taking the seats again).
    SellFree,
    /// Sold → free (refunded or cancelled).
    Unsell,
}

/// An event's ticket types and quotas, as read under its lock.
#[derive(Debug, Default)]
pub struct Stock {
    pub types: HashMap<Uuid, TicketType>,
    pub quotas: HashMap<Uuid, Quota>,
    /// Quota id → the types it counts.
    pub members: HashMap<Uuid, Vec<Uuid>>,
    /// The free seats of each section of the seat map, read only when a type is tied to
    /// sections (a theatre's tiers).
    pub free_by_section: HashMap<String, i32>,
}

impl Stock {
    /// Reads the event's stock; the caller holds the event's lock.
    pub async fn load(conn: &mut AsyncPgConnection, event_id: Uuid) -> AppResult<Self> {
        let types: Vec<TicketType> = ticket_types::table
            .filter(ticket_types::event_id.eq(event_id))
            .select(TicketType::as_select())
            .load(conn)
            .await?;
        let quota_rows: Vec<Quota> = quotas::table
            .filter(quotas::event_id.eq(event_id))
            .select(Quota::as_select())
            .load(conn)
            .await?;
        let quota_ids: Vec<Uuid> = quota_rows.iter().map(|q| q.id).collect();
        let links: Vec<(Uuid, Uuid)> = quota_ticket_types::table
            .filter(quota_ticket_types::quota_id.eq_any(&quota_ids))
            .select((
                quota_ticket_types::quota_id,
                quota_ticket_types::ticket_type_id,
            ))
            .load(conn)
            .await?;
        let mut members: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        for (quota, ticket_type) in links {
            members.entry(quota).or_default().push(ticket_type);
        }
        let free_by_section = if types.iter().any(|t| !t.sections.is_empty()) {
            free_by_section(conn, event_id).await?
        } else {
            HashMap::new()
        };
        Ok(Self {
            types: types.into_iter().map(|t| (t.id, t)).collect(),
            quotas: quota_rows.into_iter().map(|q| (q.id, q)).collect(),
            members,
            free_by_section,
        })
    }

    /// The free seats of the sections a type is tied to; `None` when it takes any seat.
    pub fn section_available(&self, ticket_type: &TicketType) -> Option<i32> {
        if ticket_type.sections.is_empty() {
            return None;
        }
        Some(
            ticket_type
                .sections
                .iter()
                .filter_map(|section| self.free_by_section.get(section))
                .sum(),
        )
    }

    /// The quotas a type counts against.
    pub fn quotas_of(&self, type_id: Uuid) -> impl Iterator<Item = &Quota> {
        self.members
            .iter()
            .filter(move |(_, types)| types.contains(&type_id))
            .filter_map(|(quota, _)| self.quotas.get(quota))
    }

    /// Tickets of the type still free: the least of its own limit, its quotas and the
    /// event's free seats.
    pub fn available(&self, type_id: Uuid, event_available: i32) -> i32 {
        let Some(ticket_type) = self.types.get(&type_id) else {
            return 0;
        };
        let own = ticket_type
            .quantity
            .map_or(i32::MAX, |q| q - ticket_type.held - ticket_type.sold)
            .min(self.section_available(ticket_type).unwrap_or(i32::MAX));
        self.quotas_of(type_id)
            .map(|q| q.available)
            .fold(own.min(event_available), i32::min)
            .max(0)
    }

    /// Refuses a demand that any type or quota cannot meet: SOLD_OUT with what is left of the
    /// tightest. (The event's own seats are the inventory's to check.)
    pub fn check(&self, demand: &Demand, event_available: i32) -> AppResult<()> {
        for (type_id, wanted) in demand {
            let left = self.available(*type_id, event_available);
            if *wanted > left {
                return Err(AppError::SoldOut {
                    seats_available: left,
                });
            }
        }
        for (quota_id, members) in &self.members {
            let wanted: i32 = members.iter().filter_map(|t| demand.get(t)).sum();
            let quota = &self.quotas[quota_id];
            if wanted > quota.available {
                return Err(AppError::SoldOut {
                    seats_available: quota.available,
                });
            }
        }
        Ok(())
    }
}

/// The free (unclaimed) seats of each section of the event's seat map.
async fn free_by_section(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
) -> AppResult<HashMap<String, i32>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        section: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        free: i64,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT s.section, count(*) AS free FROM venue_seats s \
         JOIN events e ON e.venue_id = s.venue_id AND e.id = $1 \
         WHERE NOT EXISTS (SELECT 1 FROM seat_claims c WHERE c.event_id = $1 AND c.seat_id = s.id) \
         GROUP BY s.section",
    )
    .bind::<diesel::sql_types::Uuid, _>(event_id)
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.section, i32::try_from(row.free).unwrap_or(i32::MAX)))
        .collect())
}

/// The sections a ticket type's seats must be in (empty: any seat).
pub async fn sections_of(conn: &mut AsyncPgConnection, type_id: Uuid) -> AppResult<Vec<String>> {
    Ok(ticket_types::table
        .find(type_id)
        .select(ticket_types::sections)
        .first(conn)
        .await?)
}

/// Moves `demand` between the counters of its types and of every quota they belong to. The
/// caller holds the event's lock; the CHECK constraints refuse anything that would break a
/// counter (an internal error: [`Stock::check`] comes first).
pub async fn apply(conn: &mut AsyncPgConnection, demand: &Demand, step: Move) -> AppResult<()> {
    let (held, sold, available): (i32, i32, i32) = match step {
        Move::Hold => (1, 0, -1),
        Move::Sell => (-1, 1, 0),
        Move::Unhold => (-1, 0, 1),
        Move::SellFree => (0, 1, -1),
        Move::Unsell => (0, -1, 1),
    };
    let type_ids: Vec<Uuid> = demand.keys().copied().collect();
    let links: Vec<(Uuid, Uuid)> = quota_ticket_types::table
        .filter(quota_ticket_types::ticket_type_id.eq_any(&type_ids))
        .select((
            quota_ticket_types::quota_id,
            quota_ticket_types::ticket_type_id,
        ))
        .load(conn)
        .await?;
    let mut per_quota: HashMap<Uuid, i32> = HashMap::new();
    for (quota, ticket_type) in links {
        *per_quota.entry(quota).or_default() += demand[&ticket_type];
    }
    for (type_id, n) in demand {
        diesel::update(ticket_types::table.find(type_id))
            .set((
                ticket_types::held.eq(ticket_types::held + held * n),
                ticket_types::sold.eq(ticket_types::sold + sold * n),
            ))
            .execute(conn)
            .await?;
    }
    for (quota_id, n) in per_quota {
        diesel::update(quotas::table.find(quota_id))
            .set((
                quotas::held.eq(quotas::held + held * n),
                quotas::sold.eq(quotas::sold + sold * n),
                quotas::available.eq(quotas::available + available * n),
            ))
            .execute(conn)
            .await?;
    }
    Ok(())
}

pub async fn lines_of(conn: &mut AsyncPgConnection, order_id: Uuid) -> AppResult<Vec<OrderLine>> {
    Ok(order_lines::table
        .filter(order_lines::order_id.eq(order_id))
        .select(OrderLine::as_select())
        .order(order_lines::position)
        .load(conn)
        .await?)
}

/// Moves an order to `status` (bumping its version, recording why), and records it in
/// `changes` for `orderUpdated`.
pub async fn set_status(
    conn: &mut AsyncPgConnection,
    order_id: Uuid,
    status: OrderStatus,
    reason: Option<&str>,
    changes: &mut Changes,
) -> AppResult<Order> {
    let order: Order = diesel::update(orders::table.find(order_id))
        .set((
            orders::status.eq(status),
            orders::reason.eq(reason),
            orders::version.eq(orders::version + 1),
            orders::updated_at.eq(diesel::dsl::now),
        ))
        .returning(Order::as_returning())
        .get_result(conn)
        .await?;
    changes.orders.push(order.clone());
    Ok(order)
}

/// Gives back the use of a promo code that an order which was never paid took.
pub async fn release_promo_use(conn: &mut AsyncPgConnection, order: &Order) -> AppResult<()> {
    if let Some(code) = order.promo_code_id {
        diesel::update(promo_codes::table.find(code))
            .set(promo_codes::uses.eq(promo_codes::uses - 1))
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Holds ended (expired, released, or ended with their event): the orders waiting for payment
/// on them end too, EXPIRED or CANCELLED, and their tickets go back to their types and quotas.
/// Called by the hold machinery under the event's lock, in the transaction that ended them.
pub async fn orders_of_ended_holds(
    conn: &mut AsyncPgConnection,
    hold_ids: &[Uuid],
    status: HoldStatus,
    changes: &mut Changes,
) -> AppResult<()> {
    if hold_ids.is_empty() {
        return Ok(());
    }
    let pending: Vec<Order> = orders::table
        .filter(orders::hold_id.eq_any(hold_ids))
        .filter(orders::status.eq(OrderStatus::PendingPayment))
        .select(Order::as_select())
        .load(conn)
        .await?;
    let (order_status, reason) = match status {
        HoldStatus::Expired => (OrderStatus::Expired, "the order was not paid in time"),
        _ => (OrderStatus::Cancelled, "the order was cancelled"),
    };
    for order in pending {
        let lines = lines_of(conn, order.id).await?;
        apply(conn, &demand_of(&lines), Move::Unhold).await?;
        release_promo_use(conn, &order).await?;
        set_status(conn, order.id, order_status, Some(reason), changes).await?;
    }
    Ok(())
}

/// Whether a hold keeps an order's seats (then only paying the order confirms it).
pub async fn hold_has_order(conn: &mut AsyncPgConnection, hold_id: Uuid) -> AppResult<bool> {
    let count: i64 = orders::table
        .filter(orders::hold_id.eq(hold_id))
        .count()
        .get_result(conn)
        .await?;
    Ok(count > 0)
}

/// Whether a booking holds an order line's seats (then it is refunded through its order).
pub async fn booking_has_order(conn: &mut AsyncPgConnection, booking_id: Uuid) -> AppResult<bool> {
    let count: i64 = order_lines::table
        .filter(order_lines::booking_id.eq(booking_id))
        .count()
        .get_result(conn)
        .await?;
    Ok(count > 0)
}

/// An event is being cancelled (its bookings are cancelled in the same transaction): every
/// paid order's tickets are cancelled, their counters freed, and a PENDING refund of what is
/// left of the payment is recorded, for the provider to carry out after the commit. Returns
/// the refunds recorded.
pub async fn refund_cancelled_event(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    changes: &mut Changes,
) -> AppResult<Vec<Refund>> {
    let paid: Vec<Order> = orders::table
        .filter(orders::event_id.eq(event_id))
        .filter(orders::status.eq_any([OrderStatus::Paid, OrderStatus::PartiallyRefunded]))
        .select(Order::as_select())
        .load(conn)
        .await?;
    let mut recorded = Vec::new();
    for order in paid {
        let lines: Vec<OrderLine> = lines_of(conn, order.id)
            .await?
            .into_iter()
            .filter(|line| line.refund_id.is_none())
            .collect();
        apply(conn, &demand_of(&lines), Move::Unsell).await?;
        diesel::update(
            tickets::table
                .filter(tickets::order_id.eq(order.id))
                .filter(tickets::status.eq(TicketStatus::Valid)),
        )
        .set(tickets::status.eq(TicketStatus::Cancelled))
        .execute(conn)
        .await?;
        let left = order.amount_paid - order.amount_refunded;
        let line_ids: Vec<Uuid> = lines.iter().map(|l| l.id).collect();
        if left > 0 {
            let now = chrono::Utc::now();
            let refund = Refund {
                id: Uuid::new_v4(),
                order_id: order.id,
                amount: left,
                reason: Some("the event was cancelled".into()),
                status: RefundStatus::Pending,
                line_ids: line_ids.clone(),
                provider_refund_id: None,
                created_at: now,
                updated_at: now,
            };
            let refund: Refund = diesel::insert_into(refunds::table)
                .values(&refund)
                .returning(Refund::as_returning())
                .get_result(conn)
                .await?;
            diesel::update(order_lines::table.filter(order_lines::id.eq_any(&line_ids)))
                .set(order_lines::refund_id.eq(refund.id))
                .execute(conn)
                .await?;
            recorded.push(refund);
        }
        set_status(
            conn,
            order.id,
            order.status,
            Some("the event was cancelled: the order is being refunded"),
            changes,
        )
        .await?;
    }
    Ok(recorded)
}
