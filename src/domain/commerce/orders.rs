//! Orders: placing one (its lines priced, its promo code used, its seats held), recording the
//! payment intent created for it, issuing its tickets once paid, and reading orders.
//!
//! Placing an order is one transaction under the event's lock: the ticket types' and quotas'
//! counters ([`crate::domain::stock`]) and the event's ([`crate::domain::inventory`]) move
//! together, the promo code's use is counted by a guarded `UPDATE` (`uses < max_uses`), and
//! the seats are one hold ([`freed_seats::insert_hold`]) that lasts the event's `holdMinutes`
//! (its `paymentWindowDays` for manual payments). The intent is created after the commit and
//! recorded by [`record_intent`]; a free order is PAID at once.

use chrono::Utc;
use diesel::prelude::*;
use diesel::upsert::on_constraint;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::codes::{code_types, find_code};
use super::{event_sales, find_order, manages, ticket_code, within};
use crate::db::commerce::{
    DiscountKind, Order, OrderLine, OrderStatus, PromoCode, Provider, Ticket, TicketStatus,
};
use crate::db::models::{Hold, HoldStatus};
use crate::db::schema::{holds, order_lines, orders, promo_codes, tickets};
use crate::domain::Viewer;
use crate::domain::changes::{Changes, Committed};
use crate::domain::freed_seats;
use crate::domain::inventory::Inventory;
use crate::domain::rows::insert_unkeyed_booking;
use crate::domain::sale_rules::{
    check_idempotency_key, lock_event, lock_event_for, requested_quantity, unbookable_reason,
};
use crate::domain::seats::{self, SeatOwner};
use crate::domain::stock::{self, Demand, Move, Stock};
use crate::domain::user_limits::check_hold_limit;
use crate::error::{AppError, AppResult};

/// Most lines one order may have.
pub const MAX_LINES: usize = 20;

pub struct LineRequest {
    pub ticket_type_id: Uuid,
    pub quantity: Option<i32>,
    pub seat_ids: Vec<Uuid>,
}

pub struct OrderRequest {
    pub event_id: Uuid,
    pub lines: Vec<LineRequest>,
    pub promo_code: Option<String>,
    pub idempotency_key: Option<String>,
}

pub(crate) fn bad(
    field: &'static str,
    reason: &'static str,
    message: impl Into<String>,
) -> AppError {
    AppError::BadUserInput {
        message: message.into(),
        field: Some(field),
        reason: Some(reason),
    }
}

pub(crate) fn invalid_code() -> AppError {
    bad(
        "promoCode",
        "INVALID_PROMO_CODE",
        "this promo code is not valid for this event",
    )
}

/// What an order's lines come to before and after its promo code: a percentage of the lines it
/// applies to (rounded down), or a fixed amount up to their sum.
pub fn discount(promo: &PromoCode, applicable: i64) -> i64 {
    match promo.discount_kind {
        DiscountKind::Percent => applicable * promo.value / 100,
        DiscountKind::Fixed => promo.value.min(applicable),
    }
}

/// What can be said of an order request before any database is read: its idempotency key,
/// how many lines it has, and each line's quantity (returned, in order).
pub fn validate(request: &OrderRequest) -> AppResult<Vec<i32>> {
    check_idempotency_key(request.idempotency_key.as_deref())?;
    if request.lines.is_empty() || request.lines.len() > MAX_LINES {
        return Err(bad(
            "lines",
            "INVALID_LINES",
            format!("an order has 1 to {MAX_LINES} lines"),
        ));
    }
    request
        .lines
        .iter()
        .map(|line| requested_quantity(line.quantity, &line.seat_ids))
        .collect()
}

/// Places an order (see the module documentation). With an idempotency key the same key
/// returns the same order. `stripe_configured` says whether an event paid through Stripe can
/// take orders on this instance.
pub async fn place_order(
    conn: &mut AsyncPgConnection,
    viewer: &Viewer,
    request: OrderRequest,
    stripe_configured: bool,
) -> AppResult<Committed<Order>> {
    let quantities = validate(&request)?;
    let user_id = viewer.id();
    let request = &request;
    let quantities = &quantities;
    conn.transaction(async move |conn| {
        let event = lock_event_for(conn, request.event_id, user_id).await?;
        if let Some(key) = &request.idempotency_key {
            let existing: Option<Order> = orders::table
                .filter(orders::user_id.eq(user_id))
                .filter(orders::idempotency_key.eq(key))
                .select(Order::as_select())
                .first(conn)
                .await
                .optional()?;
            if let Some(existing) = existing {
                if existing.event_id != request.event_id {
                    return Err(AppError::Conflict(
                        "this idempotencyKey was already used for an order of another event".into(),
                    ));
                }
                return Ok(Committed::unchanged(existing));
            }
        }
        let Some(currency) = event.currency.clone() else {
            return Err(AppError::not_possible(
                "NO_TICKET_TYPES",
                "this event sells no ticket types: book it with bookSeats",
            ));
        };
        if let Some(reason) = unbookable_reason(&event) {
            return Err(reason);
        }
        let sales = event_sales(conn, event.id).await?;
        if sales.payment_provider == Provider::Stripe && !stripe_configured {
            return Err(AppError::not_possible(
                "PAYMENTS_UNAVAILABLE",
                "card payments are not available right now",
            ));
        }
        let total_quantity: i32 = quantities.iter().sum();
        let all_seats: Vec<Uuid> = request
            .lines
            .iter()
            .flat_map(|l| l.seat_ids.iter().copied())
            .collect();
        check_hold_limit(conn, &event, user_id, total_quantity).await?;
        let mut changes = Changes::default();
        let mut inventory = Inventory::new(event.clone());
        freed_seats::take_from_expired_seats(
            conn,
            &mut inventory,
            total_quantity,
            &all_seats,
            &mut changes,
        )
        .await?;
        // Read after ending expired holds: their orders gave their tickets back.
        let stock = Stock::load(conn, event.id).await?;
        let promo = match &request.promo_code {
            Some(code) => {
                let promo = find_code(conn, event.id, code)
                    .await?
                    .filter(|p| within(p.valid_from, p.valid_until))
                    .ok_or_else(invalid_code)?;
                let types = code_types(conn, promo.id).await?;
                Some((promo, types))
            }
            None => None,
        };
        let unlocked = |type_id: Uuid| {
            manages(Some(viewer), &event)
                || promo.as_ref().is_some_and(|(p, types)| {
                    p.unlocks_hidden && (types.is_empty() || types.contains(&type_id))
                })
        };
        let mut demand = Demand::new();
        let mut subtotal: i64 = 0;
        let mut applicable: i64 = 0;
        let mut lines = Vec::with_capacity(request.lines.len());
        for (position, (line, quantity)) in request.lines.iter().zip(quantities).enumerate() {
            let ticket_type = stock
                .types
                .get(&line.ticket_type_id)
                .filter(|t| !t.hidden || unlocked(t.id))
                .ok_or(AppError::NotFound("ticket type"))?;
            if !within(ticket_type.sales_start_at, ticket_type.sales_end_at) {
                return Err(bad(
                    "lines",
                    "TICKET_TYPE_NOT_ON_SALE",
                    format!("{} is not on sale now", ticket_type.name),
                ));
            }
            *demand.entry(ticket_type.id).or_default() += quantity;
            let total = ticket_type.price_amount * i64::from(*quantity);
            subtotal += total;
            if let Some((_, types)) = &promo
                && (types.is_empty() || types.contains(&ticket_type.id))
            {
                applicable += total;
            }
            lines.push(OrderLine {
                id: Uuid::new_v4(),
                order_id: Uuid::nil(),
                ticket_type_id: ticket_type.id,
                position: position as i32,
                quantity: *quantity,
                unit_price: ticket_type.price_amount,
                total,
                seat_ids: line.seat_ids.clone(),
                booking_id: None,
                refund_id: None,
            });
        }
        for (type_id, quantity) in &demand {
            let ticket_type = &stock.types[type_id];
            if *quantity < ticket_type.min_per_order || *quantity > ticket_type.max_per_order {
                return Err(bad(
                    "lines",
                    "QUANTITY_OUT_OF_RANGE",
                    format!(
                        "{} is sold {} to {} per order",
                        ticket_type.name, ticket_type.min_per_order, ticket_type.max_per_order
                    ),
                ));
            }
        }
        if subtotal > super::MAX_PRICE {
            return Err(bad(
                "lines",
                "ORDER_TOO_LARGE",
                "an order comes to at most 2147483647 minor units",
            ));
        }
        if inventory.available < total_quantity {
            return Err(AppError::SoldOut {
                seats_available: inventory.available,
            });
        }
        stock.check(&demand, inventory.available)?;
        let discount = promo
            .as_ref()
            .map_or(0, |(promo, _)| discount(promo, applicable));
        if let Some((promo, _)) = &promo {
            take_promo_use(conn, promo).await?;
        }
        let total = subtotal - discount;
        let order_id = Uuid::new_v4();
        for line in &mut lines {
            line.order_id = order_id;
        }
        let now = Utc::now();
        let mut order = Order {
            id: order_id,
            event_id: event.id,
            user_id,
            status: OrderStatus::PendingPayment,
            currency,
            subtotal,
            discount,
            total,
            promo_code_id: promo.as_ref().map(|(p, _)| p.id),
            hold_id: None,
            idempotency_key: request.idempotency_key.clone(),
            expires_at: now,
            provider: sales.payment_provider,
            intent_id: None,
            client_secret: None,
            payment_status: "awaiting_buyer".into(),
            amount_paid: 0,
            amount_refunded: 0,
            payment_reference: None,
            reason: None,
            version: 1,
            created_at: now,
            updated_at: now,
            paid_at: None,
        };
        if total > 0 {
            let minutes = match sales.payment_provider {
                Provider::Manual => sales.payment_window_days * 24 * 60,
                Provider::Stripe => event.hold_minutes,
            };
            let hold =
                freed_seats::insert_hold(conn, &event, user_id, total_quantity, minutes).await?;
            for line in &mut lines {
                line.seat_ids =
                    claim_line(conn, &event, SeatOwner::Hold(hold.id), line, &mut changes).await?;
            }
            inventory.hold(total_quantity);
            stock::apply(conn, &demand, Move::Hold).await?;
            order.hold_id = Some(hold.id);
            order.expires_at = hold.expires_at;
            changes.holds.push(hold);
        }
        let inserted = diesel::insert_into(orders::table)
            .values(&order)
            .on_conflict(on_constraint("orders_user_idempotency_key"))
            .do_nothing()
            .returning(Order::as_returning())
            .get_result(conn)
            .await
            .optional()?;
        let Some(order) = inserted else {
            return Err(AppError::Conflict(
                "this idempotencyKey was used by an order placed at the same time".into(),
            ));
        };
        diesel::insert_into(order_lines::table)
            .values(&lines)
            .execute(conn)
            .await?;
        let order = if total == 0 {
            issue(conn, &mut inventory, &order, &mut lines, None, &mut changes).await?;
            stock::apply(conn, &demand, Move::SellFree).await?;
            mark_paid(conn, order.id, 0, None, &mut changes).await?
        } else {
            changes.orders.push(order.clone());
            order
        };
        inventory.save(conn, &mut changes).await?;
        Ok(Committed::new(order, changes))
    })
    .await
}

/// Counts one use of a promo code, exactly: the guarded `UPDATE` and `promo_codes_uses_check`
/// refuse the use past `max_uses` however many orders try at once.
pub(super) async fn take_promo_use(
    conn: &mut AsyncPgConnection,
    promo: &PromoCode,
) -> AppResult<()> {
    let taken = diesel::update(
        promo_codes::table.find(promo.id).filter(
            promo_codes::max_uses
                .is_null()
                .or(promo_codes::uses.lt(promo_codes::max_uses.assume_not_null())),
        ),
    )
    .set(promo_codes::uses.eq(promo_codes::uses + 1))
    .execute(conn)
    .await?;
    if taken == 0 {
        return Err(used_up());
    }
    Ok(())
}

/// A promo code past its `max_uses`.
pub(crate) fn used_up() -> AppError {
    bad(
        "promoCode",
        "PROMO_CODE_USED_UP",
        "this promo code has been used as many times as it may be",
    )
}

/// Claims a line's seats (its named ones, or the best free) and returns which they are. No
/// seats for general admission.
pub(super) async fn claim_line(
    conn: &mut AsyncPgConnection,
    event: &crate::db::models::Event,
    owner: SeatOwner,
    line: &OrderLine,
    changes: &mut Changes,
) -> AppResult<Vec<Uuid>> {
    let before = changes.seats.len();
    // A theatre's tier: the type sells seats of its sections only.
    let sections = stock::sections_of(conn, line.ticket_type_id).await?;
    seats::claim_in(
        conn,
        event,
        owner,
        line.quantity,
        &line.seat_ids,
        &sections,
        changes,
    )
    .await?;
    Ok(changes.seats[before..].iter().map(|s| s.seat_id).collect())
}

/// Issues a paid order's tickets: one booking per line, taking the seats from the order's
/// `hold` (its seats move to the line's booking) or, with no hold, claiming them again (a
/// free order, or a payment that came after its hold ended), and one ticket per seat. The
/// caller moves the counters.
pub(crate) async fn issue(
    conn: &mut AsyncPgConnection,
    inventory: &mut Inventory,
    order: &Order,
    lines: &mut [OrderLine],
    hold: Option<&Hold>,
    changes: &mut Changes,
) -> AppResult<()> {
    let event = inventory.event.clone();
    let mut quantity = 0;
    let mut first_booking = None;
    for line in lines.iter_mut() {
        let booking = insert_unkeyed_booking(conn, event.id, order.user_id, line.quantity).await?;
        first_booking.get_or_insert(booking.id);
        match hold {
            Some(hold) => {
                seats::transfer_seats(conn, &event, hold.id, booking.id, &line.seat_ids, changes)
                    .await?;
            }
            None => {
                line.seat_ids =
                    claim_line(conn, &event, SeatOwner::Booking(booking.id), line, changes).await?;
            }
        }
        diesel::update(order_lines::table.find(line.id))
            .set((
                order_lines::booking_id.eq(booking.id),
                order_lines::seat_ids.eq(&line.seat_ids),
            ))
            .execute(conn)
            .await?;
        line.booking_id = Some(booking.id);
        let now = Utc::now();
        let issued: Vec<Ticket> = (0..line.quantity as usize)
            .map(|i| Ticket {
                id: Uuid::new_v4(),
                order_id: order.id,
                order_line_id: line.id,
                ticket_type_id: line.ticket_type_id,
                event_id: event.id,
                seat_id: line.seat_ids.get(i).copied(),
                code: ticket_code(),
                status: TicketStatus::Valid,
                checked_in_at: None,
                created_at: now,
            })
            .collect();
        diesel::insert_into(tickets::table)
            .values(&issued)
            .execute(conn)
            .await?;
        quantity += line.quantity;
        changes.bookings.push(booking);
    }
    match hold {
        Some(hold) => {
            let confirmed: Hold = diesel::update(holds::table.find(hold.id))
                .set((
                    holds::status.eq(HoldStatus::Confirmed),
                    holds::booking_id.eq(first_booking),
                    holds::ended_at.eq(diesel::dsl::now),
                ))
                .returning(Hold::as_returning())
                .get_result(conn)
                .await?;
            // A waiting-list entry offered this order has its seats now.
            freed_seats::fulfil_offer(conn, hold.id, first_booking, changes).await?;
            changes.holds.push(confirmed);
            inventory.confirm(quantity);
        }
        None => inventory.book(quantity),
    }
    Ok(())
}

/// The order is PAID with `amount` captured.
pub(crate) async fn mark_paid(
    conn: &mut AsyncPgConnection,
    order_id: Uuid,
    amount: i64,
    reason: Option<&str>,
    changes: &mut Changes,
) -> AppResult<Order> {
    let order: Order = diesel::update(orders::table.find(order_id))
        .set((
            orders::status.eq(OrderStatus::Paid),
            orders::amount_paid.eq(amount),
            orders::payment_status.eq("succeeded"),
            orders::paid_at.eq(diesel::dsl::now),
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

/// Records the intent created for an order (once: a retry that created the same intent
/// changes nothing).
pub async fn record_intent(
    conn: &mut AsyncPgConnection,
    order_id: Uuid,
    intent_id: &str,
    client_secret: Option<&str>,
) -> AppResult<Committed<Order>> {
    let updated: Option<Order> = diesel::update(
        orders::table
            .find(order_id)
            .filter(orders::intent_id.is_null()),
    )
    .set((
        orders::intent_id.eq(intent_id),
        orders::client_secret.eq(client_secret),
        orders::version.eq(orders::version + 1),
        orders::updated_at.eq(diesel::dsl::now),
    ))
    .returning(Order::as_returning())
    .get_result(conn)
    .await
    .optional()?;
    match updated {
        Some(order) => {
            let changes = Changes {
                orders: vec![order.clone()],
                ..Changes::default()
            };
            Ok(Committed::new(order, changes))
        }
        None => Ok(Committed::unchanged(find_order(conn, order_id).await?)),
    }
}

/// Locks the order's event and reads the order again under that lock: every change of an
/// order happens under it.
pub(super) async fn lock_order(
    conn: &mut AsyncPgConnection,
    order_id: Uuid,
) -> AppResult<(crate::db::models::Event, Order)> {
    let order = find_order(conn, order_id).await?;
    let event = lock_event(conn, order.event_id).await?;
    let order = find_order(conn, order_id).await?;
    Ok((event, order))
}
