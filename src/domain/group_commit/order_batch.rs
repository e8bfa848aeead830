//! The order batch: many one-line, general-admission orders of one event placed in one
//! transaction, as [`place_order`] would place them one after the other. Under one lock of the
//! event it reads the buyers' earlier orders under their idempotency keys, their holds, the
//! event's stock and each promo code once; decides every request in memory, in arrival order,
//! with the same checks in the same order as the single path (so each caller gets the answer
//! it would have got alone); then writes the batch with a fixed number of statements: one
//! guarded `UPDATE` per promo code used (`uses + n <= max_uses`), one insert each for the
//! holds, the orders (`ON CONFLICT` on their idempotency key) and their lines, one move of the
//! stock counters and one of the event's. A free order also gets its booking and tickets
//! ([`issue`]), one at a time: free orders are not the onsale's hot path.
//!
//! Anything the memory could not foresee (a promo code or an idempotency key used meanwhile by
//! another event's transaction, a constraint) fails the batch, which the queue then replays one
//! by one through [`place_order`].
//!
//! [`place_order`]: crate::domain::commerce::orders::place_order

use std::collections::HashMap;

use chrono::{Duration, Utc};
use diesel::prelude::*;
use diesel::upsert::on_constraint;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::batch::SeatedEvent;
use crate::db::commerce::{Order, OrderLine, OrderStatus, PromoCode, Provider};
use crate::db::models::{Event, Hold, HoldStatus};
use crate::db::schema::{holds, order_lines, orders, promo_codes};
use crate::db::{self, DbPool, Uncommitted};
use crate::domain::Viewer;
use crate::domain::changes::{Changes, Committed};
use crate::domain::commerce::codes::{code_types, find_code};
use crate::domain::commerce::orders::{
    OrderRequest, bad, discount, invalid_code, issue, mark_paid, used_up,
};
use crate::domain::commerce::{MAX_PRICE, event_sales, manages, within};
use crate::domain::freed_seats;
use crate::domain::inventory::Inventory;
use crate::domain::sale_rules::{check_for_sale_to, lock_event, unbookable_reason};
use crate::domain::stock::{self, Demand, Move, Stock};
use crate::domain::user_limits::{check_held, check_per_user, hold_cap, seats_of_user};
use crate::error::{AppError, AppResult};

/// One order of a batch.
pub struct OrderEntry<'a> {
    pub viewer: &'a Viewer,
    pub request: &'a OrderRequest,
    /// The line's quantity, validated.
    pub quantity: i32,
    pub stripe_configured: bool,
}

/// Whether a request may be batched: one line, no particular seats.
pub fn batchable(request: &OrderRequest) -> bool {
    request.lines.len() == 1 && request.lines[0].seat_ids.is_empty()
}

/// Each request's result, and what else the batch changed (holds it found expired).
pub type OrderBatchResult = (Vec<AppResult<Committed<Order>>>, Changes);

/// Places a batch of orders of one event in one transaction. `abandoned(i)` says whether
/// request `i`'s caller has gone; such requests are left out. [`Uncommitted::Failed`] and
/// [`Uncommitted::RolledBack`] mean nothing was written and the batch may be replayed one by
/// one; [`Uncommitted::Unknown`] means it must not be.
pub async fn place_batch(
    conn: &mut AsyncPgConnection,
    pool: &DbPool,
    event_id: Uuid,
    batch: &[OrderEntry<'_>],
    abandoned: impl Fn(usize) -> bool + Send,
) -> Result<OrderBatchResult, Uncommitted<AppError>> {
    let txid = db::begin(conn)
        .await
        .map_err(|e| Uncommitted::Failed(e.into()))?;
    let written = write_batch(conn, event_id, batch, abandoned).await;
    db::finish(conn, pool, txid, written).await
}

/// What one request comes to, before anything is written.
enum Outcome {
    New {
        // Boxed: the largest variant by far, and few requests of a batch are refused.
        order: Box<Order>,
        line: OrderLine,
        hold: Option<Hold>,
    },
    /// An order placed earlier under the request's idempotency key.
    Replay(Order),
    /// The same idempotency key as the new order of request `i` of this batch.
    Twin(usize),
    Refused(AppError),
}

/// What the batch has counted so far, read under the event's lock and moved in memory as
/// each request is accepted.
struct Tally {
    event: Event,
    provider: Provider,
    payment_window_days: i32,
    /// The event's free seats.
    available: i32,
    stock: Stock,
    /// Per user: seats counted against `max_per_user` (when set), else seats held.
    have: HashMap<Uuid, i64>,
    /// Promo codes by their spelling in lower case; `None`: no valid code spelled so.
    codes: HashMap<String, Option<(PromoCode, Vec<Uuid>)>>,
    /// Uses this batch takes, per promo code.
    uses: HashMap<Uuid, i32>,
    known: HashMap<(Uuid, String), Order>,
    keyed_new: HashMap<(Uuid, String), usize>,
}

/// The writes of [`place_batch`], inside its transaction.
async fn write_batch(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    batch: &[OrderEntry<'_>],
    abandoned: impl Fn(usize) -> bool + Send,
) -> AppResult<OrderBatchResult> {
    let event = lock_event(conn, event_id).await?;
    if event.venue_id.is_some() {
        return Err(anyhow::Error::new(SeatedEvent).into());
    }
    let known = previous_orders(conn, batch).await?;
    let sales = event_sales(conn, event_id).await?;
    let users: Vec<Uuid> = batch.iter().map(|e| e.viewer.id()).collect();
    let have = match event.max_per_user {
        Some(_) => seats_of_user(conn, event_id, &users).await?,
        None => seats_held(conn, event_id, &users).await?,
    };
    let mut also = Changes::default();
    // Summed wide: a batch of absurd quantities must not overflow.
    let wanted: i64 = batch.iter().map(|e| i64::from(e.quantity)).sum();
    let mut inventory = Inventory::new(event.clone());
    let wanted = i32::try_from(wanted).unwrap_or(i32::MAX);
    freed_seats::take_from_expired(conn, &mut inventory, wanted, &mut also).await?;
    // Read after ending expired holds: their orders gave their tickets back.
    let stock = Stock::load(conn, event_id).await?;
    let mut codes = HashMap::new();
    for entry in batch {
        let Some(code) = &entry.request.promo_code else {
            continue;
        };
        let spelling = code.trim().to_lowercase();
        if codes.contains_key(&spelling) {
            continue;
        }
        let found = match find_code(conn, event_id, code).await? {
            Some(promo) if within(promo.valid_from, promo.valid_until) => {
                let types = code_types(conn, promo.id).await?;
                Some((promo, types))
            }
            _ => None,
        };
        codes.insert(spelling, found);
    }
    let mut tally = Tally {
        available: inventory.available,
        event,
        provider: sales.payment_provider,
        payment_window_days: sales.payment_window_days,
        stock,
        have,
        codes,
        uses: HashMap::new(),
        known,
        keyed_new: HashMap::new(),
    };
    let outcomes: Vec<Outcome> = batch
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            if abandoned(i) {
                Outcome::Refused(AppError::Unavailable)
            } else {
                tally.decide(i, entry)
            }
        })
        .collect();
    write_outcomes(conn, tally, inventory, outcomes, also).await
}

impl Tally {
    /// Request `i`'s outcome: the single path's checks, in its order, against the batch's
    /// counts so far. An accepted request is counted.
    fn decide(&mut self, i: usize, entry: &OrderEntry<'_>) -> Outcome {
        match self.try_decide(i, entry) {
            Ok(outcome) => outcome,
            Err(error) => Outcome::Refused(error),
        }
    }

    fn try_decide(&mut self, i: usize, entry: &OrderEntry<'_>) -> AppResult<Outcome> {
        let (viewer, request, quantity) = (entry.viewer, entry.request, entry.quantity);
        let user_id = viewer.id();
        check_for_sale_to(&self.event, user_id)?;
        let key = request.idempotency_key.clone().map(|k| (user_id, k));
        if let Some(key) = &key {
            if let Some(existing) = self.known.get(key) {
                if existing.event_id != request.event_id {
                    return Err(AppError::Conflict(
                        "this idempotencyKey was already used for an order of another event".into(),
                    ));
                }
                return Ok(Outcome::Replay(existing.clone()));
            }
            if let Some(&first) = self.keyed_new.get(key) {
                return Ok(Outcome::Twin(first));
            }
        }
        let Some(currency) = self.event.currency.clone() else {
            return Err(AppError::not_possible(
                "NO_TICKET_TYPES",
                "this event sells no ticket types: book it with bookSeats",
            ));
        };
        if let Some(reason) = unbookable_reason(&self.event) {
            return Err(reason);
        }
        if self.provider == Provider::Stripe && !entry.stripe_configured {
            return Err(AppError::not_possible(
                "PAYMENTS_UNAVAILABLE",
                "card payments are not available right now",
            ));
        }
        let have = self.have.get(&user_id).copied().unwrap_or(0);
        match self.event.max_per_user {
            Some(max) => check_per_user(max, have, quantity)?,
            None => check_held(hold_cap(&self.event), have, quantity)?,
        }
        let promo = match &request.promo_code {
            Some(code) => match self.codes.get(&code.trim().to_lowercase()) {
                Some(Some(found)) => Some(found),
                _ => return Err(invalid_code()),
            },
            None => None,
        };
        let line = &request.lines[0];
        let unlocked = |type_id: Uuid| {
            manages(Some(viewer), &self.event)
                || promo.is_some_and(|(p, types)| {
                    p.unlocks_hidden && (types.is_empty() || types.contains(&type_id))
                })
        };
        let ticket_type = self
            .stock
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
        let subtotal = ticket_type.price_amount * i64::from(quantity);
        let applicable = match promo {
            Some((_, types)) if types.is_empty() || types.contains(&ticket_type.id) => subtotal,
            _ => 0,
        };
        if quantity < ticket_type.min_per_order || quantity > ticket_type.max_per_order {
            return Err(bad(
                "lines",
                "QUANTITY_OUT_OF_RANGE",
                format!(
                    "{} is sold {} to {} per order",
                    ticket_type.name, ticket_type.min_per_order, ticket_type.max_per_order
                ),
            ));
        }
        if subtotal > MAX_PRICE {
            return Err(bad(
                "lines",
                "ORDER_TOO_LARGE",
                "an order comes to at most 2147483647 minor units",
            ));
        }
        if self.available < quantity {
            return Err(AppError::SoldOut {
                seats_available: self.available,
            });
        }
        let type_id = ticket_type.id;
        let unit_price = ticket_type.price_amount;
        let demand = Demand::from([(type_id, quantity)]);
        self.stock.check(&demand, self.available)?;
        let discount = promo.map_or(0, |(promo, _)| discount(promo, applicable));
        if let Some((promo, _)) = promo {
            let taken = self.uses.entry(promo.id).or_default();
            if promo.max_uses.is_some_and(|max| promo.uses + *taken >= max) {
                return Err(used_up());
            }
            *taken += 1;
        }
        let promo_code_id = promo.map(|(p, _)| p.id);
        let total = subtotal - discount;

        // Accepted: count it.
        self.available -= quantity;
        if let Some(counted) = self.stock.types.get_mut(&type_id) {
            counted.held += quantity;
        }
        let quota_ids: Vec<Uuid> = self.stock.quotas_of(type_id).map(|q| q.id).collect();
        for id in quota_ids {
            if let Some(quota) = self.stock.quotas.get_mut(&id) {
                quota.available -= quantity;
            }
        }
        if self.event.max_per_user.is_some() || total > 0 {
            *self.have.entry(user_id).or_insert(0) += i64::from(quantity);
        }
        if let Some(key) = key {
            self.keyed_new.insert(key, i);
        }
        let now = Utc::now();
        let order_id = Uuid::new_v4();
        let hold = (total > 0).then(|| {
            let minutes = match self.provider {
                Provider::Manual => self.payment_window_days * 24 * 60,
                Provider::Stripe => self.event.hold_minutes,
            };
            new_hold(&self.event, user_id, quantity, minutes)
        });
        let order = Order {
            id: order_id,
            event_id: self.event.id,
            user_id,
            status: OrderStatus::PendingPayment,
            currency,
            subtotal,
            discount,
            total,
            promo_code_id,
            hold_id: hold.as_ref().map(|h| h.id),
            idempotency_key: request.idempotency_key.clone(),
            expires_at: hold.as_ref().map_or(now, |h| h.expires_at),
            provider: self.provider,
            // A manual payment's intent is only a name (`payments::manual`): recorded with
            // the order rather than in a transaction of its own after it.
            intent_id: (self.provider == Provider::Manual && total > 0)
                .then(|| crate::payments::manual::intent_id(order_id)),
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
        let line = OrderLine {
            id: Uuid::new_v4(),
            order_id,
            ticket_type_id: type_id,
            position: 0,
            quantity,
            unit_price,
            total: subtotal,
            seat_ids: Vec::new(),
            booking_id: None,
            refund_id: None,
        };
        Ok(Outcome::New {
            order: Box::new(order),
            line,
            hold,
        })
    }
}

/// A checkout hold as `freed_seats::insert_hold` makes it, to be inserted with the batch's.
fn new_hold(event: &Event, user_id: Uuid, quantity: i32, minutes: i32) -> Hold {
    let now = Utc::now();
    // Nobody can confirm once sales close or the event starts, so no hold outlasts that.
    let expires_at = [
        Some(now + Duration::minutes(minutes.into())),
        event.sales_end_at,
        Some(event.starts_at),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(now);
    Hold {
        id: Uuid::new_v4(),
        event_id: event.id,
        user_id,
        quantity,
        status: HoldStatus::Held,
        expires_at,
        created_at: now,
        ended_at: None,
        booking_id: None,
    }
}

/// Writes what the batch decided and tells each request its answer.
async fn write_outcomes(
    conn: &mut AsyncPgConnection,
    tally: Tally,
    mut inventory: Inventory,
    outcomes: Vec<Outcome>,
    mut also: Changes,
) -> AppResult<OrderBatchResult> {
    for (promo_id, n) in &tally.uses {
        let taken = diesel::update(
            promo_codes::table.find(promo_id).filter(
                promo_codes::max_uses
                    .is_null()
                    .or((promo_codes::uses + *n).le(promo_codes::max_uses.assume_not_null())),
            ),
        )
        .set(promo_codes::uses.eq(promo_codes::uses + *n))
        .execute(conn)
        .await?;
        if taken == 0 {
            return Err(anyhow::anyhow!("a promo code was used outside the batch's count").into());
        }
    }
    let mut new_holds = Vec::new();
    let mut new_orders = Vec::new();
    let mut new_lines = Vec::new();
    let mut held = Demand::new();
    let mut free = Demand::new();
    for outcome in &outcomes {
        if let Outcome::New { order, line, hold } = outcome {
            new_orders.push(order.as_ref());
            new_lines.push(line);
            let demand = match hold {
                Some(hold) => {
                    new_holds.push(hold);
                    inventory.hold(line.quantity);
                    &mut held
                }
                None => &mut free,
            };
            *demand.entry(line.ticket_type_id).or_default() += line.quantity;
        }
    }
    let mut results: Vec<Option<AppResult<Committed<Order>>>> = Vec::with_capacity(outcomes.len());
    if !new_orders.is_empty() {
        if !new_holds.is_empty() {
            diesel::insert_into(holds::table)
                .values(new_holds)
                .execute(conn)
                .await?;
            stock::apply(conn, &held, Move::Hold).await?;
        }
        let inserted = diesel::insert_into(orders::table)
            .values(new_orders)
            .on_conflict(on_constraint("orders_user_idempotency_key"))
            .do_nothing()
            .execute(conn)
            .await?;
        if inserted != new_lines.len() {
            return Err(anyhow::anyhow!("an idempotency key was used outside the batch").into());
        }
        diesel::insert_into(order_lines::table)
            .values(new_lines)
            .execute(conn)
            .await?;
        if !free.is_empty() {
            stock::apply(conn, &free, Move::SellFree).await?;
        }
    }
    for outcome in outcomes {
        let result = match outcome {
            Outcome::New {
                order,
                line: _,
                hold: Some(hold),
            } => {
                let changes = Changes {
                    orders: vec![(*order).clone()],
                    holds: vec![hold],
                    ..Changes::default()
                };
                Ok(Committed::new(*order, changes))
            }
            Outcome::New {
                order,
                mut line,
                hold: None,
            } => {
                let mut changes = Changes::default();
                let lines = std::slice::from_mut(&mut line);
                issue(conn, &mut inventory, &order, lines, None, &mut changes).await?;
                let order = mark_paid(conn, order.id, 0, None, &mut changes).await?;
                Ok(Committed::new(order, changes))
            }
            Outcome::Replay(order) => Ok(Committed::unchanged(order)),
            Outcome::Twin(first) => match &results[first] {
                Some(Ok(committed)) => Ok(Committed::unchanged(committed.value.clone())),
                _ => return Err(anyhow::anyhow!("a twin of an order not placed").into()),
            },
            Outcome::Refused(error) => Err(error),
        };
        results.push(Some(result));
    }
    let mut saved = Changes::default();
    inventory.save(conn, &mut saved).await?;
    // One seat count per commit: the event as the batch left it goes with its last new order
    // (or, with none, with what else the batch changed).
    also.event = None;
    let last_new = results
        .iter()
        .rposition(|r| matches!(r, Some(Ok(c)) if c.changed()));
    match last_new.and_then(|i| results[i].as_mut()) {
        Some(Ok(committed)) => {
            committed.changes.event = saved.event;
            committed.changes.previous_version = saved.previous_version;
        }
        _ => {
            also.event = saved.event;
            also.previous_version = saved.previous_version;
        }
    }
    let results = results.into_iter().map(|r| r.expect("answered")).collect();
    Ok((results, also))
}

/// Orders already placed under the idempotency keys in this batch.
async fn previous_orders(
    conn: &mut AsyncPgConnection,
    batch: &[OrderEntry<'_>],
) -> AppResult<HashMap<(Uuid, String), Order>> {
    let (users, keys): (Vec<Uuid>, Vec<&str>) = batch
        .iter()
        .filter_map(|e| {
            let key = e.request.idempotency_key.as_deref()?;
            Some((e.viewer.id(), key))
        })
        .unzip();
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    // Both filters use the unique index (user_id, idempotency_key); a pair that is not in
    // the batch may come back too, and is never looked up.
    let rows: Vec<Order> = orders::table
        .filter(orders::user_id.eq_any(&users))
        .filter(orders::idempotency_key.eq_any(&keys))
        .select(Order::as_select())
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|o| Some(((o.user_id, o.idempotency_key.clone()?), o)))
        .collect())
}

/// Seats each of `users` keeps in live holds of the event (`seats_held_by` for a batch).
async fn seats_held(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    users: &[Uuid],
) -> AppResult<HashMap<Uuid, i64>> {
    let held: Vec<(Uuid, Option<i64>)> = holds::table
        .filter(holds::event_id.eq(event_id))
        .filter(holds::user_id.eq_any(users))
        .filter(holds::status.eq(HoldStatus::Held))
        .filter(holds::expires_at.gt(diesel::dsl::now))
        .group_by(holds::user_id)
        .select((holds::user_id, diesel::dsl::sum(holds::quantity)))
        .load(conn)
        .await?;
    Ok(held
        .into_iter()
        .map(|(user, seats)| (user, seats.unwrap_or(0)))
        .collect())
}
