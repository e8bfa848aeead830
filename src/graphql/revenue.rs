//! The revenue figures of `eventStats`, `salesOverTime`, `organizerStats` and `platformStats`
//! (see `domain::stats::revenue` for what counts), apart from `analytics` so each file stays
//! one that a reader can hold.
//!
//! Amounts are integer minor units of their currency (1250 EUR is 12.50 €). Unlike an order's
//! `Money`, totals across many orders may pass 2^31, so they are sent as plain JSON integers
//! of up to 2^53 (`Int` in the schema, as async-graphql types 64-bit integers).

use std::collections::{BTreeMap, HashMap};

use async_graphql::{ID, SimpleObject};
use uuid::Uuid;

use super::ids::to_id;
use crate::domain::stats::revenue;

fn count(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Money of one currency. `gross`: the subtotals (list prices × quantities) of the orders
/// that were paid (PAID, PARTIALLY_REFUNDED, REFUNDED); `discounts`: their promo-code
/// discounts; `refunded`: their refunds that succeeded (not those still pending); `net`:
/// `gross − discounts − refunded`. Orders waiting for payment, expired or cancelled count
/// nothing.
#[derive(SimpleObject, Clone, PartialEq, Eq, Debug)]
pub struct CurrencyRevenue {
    /// ISO 4217, e.g. "EUR".
    pub currency: String,
    pub gross: i64,
    pub discounts: i64,
    pub refunded: i64,
    pub net: i64,
}

impl From<&revenue::Revenue> for CurrencyRevenue {
    fn from(r: &revenue::Revenue) -> Self {
        Self {
            currency: r.currency.clone(),
            gross: r.gross,
            discounts: r.discounts,
            refunded: r.refunded,
            net: r.net(),
        }
    }
}

pub fn per_currency(all: &[revenue::Revenue]) -> Vec<CurrencyRevenue> {
    all.iter().map(CurrencyRevenue::from).collect()
}

/// One ticket type's part of the event's revenue. Each order's discount is shared among its
/// lines by their totals, each refund among the lines it took back (all of the order's for a
/// refund by amount), rounded down with the remainder on the order's first line: the types
/// add up exactly to the event's figures.
#[derive(SimpleObject, Clone, PartialEq, Eq, Debug)]
pub struct TicketTypeRevenue {
    pub ticket_type_id: ID,
    pub name: String,
    /// Tickets of this type in paid orders, refunded ones included.
    pub tickets_sold: i32,
    /// Of those, tickets whose line was refunded (its refund succeeded).
    pub tickets_refunded: i32,
    pub currency: String,
    pub gross: i64,
    pub discounts: i64,
    pub refunded: i64,
    pub net: i64,
}

impl From<revenue::TicketTypeRevenue> for TicketTypeRevenue {
    fn from(t: revenue::TicketTypeRevenue) -> Self {
        Self {
            ticket_type_id: to_id(t.ticket_type_id),
            name: t.name,
            tickets_sold: count(t.tickets_sold),
            tickets_refunded: count(t.tickets_refunded),
            currency: t.currency,
            gross: t.gross,
            discounts: t.discounts,
            refunded: t.refunded,
            net: t.gross - t.discounts - t.refunded,
        }
    }
}

/// What one promo code brought in: the paid orders that used it.
#[derive(SimpleObject, Clone, PartialEq, Eq, Debug)]
pub struct PromoCodeRevenue {
    pub promo_code_id: ID,
    pub code: String,
    /// Uses as the code counts them against `maxUses` (orders waiting for payment included).
    pub uses: i32,
    /// Paid orders (PAID, PARTIALLY_REFUNDED, REFUNDED) that used the code.
    pub orders: i32,
    /// The event's currency (null before its first ticket type).
    pub currency: Option<String>,
    /// Those orders' subtotals.
    pub gross: i64,
    /// The discount the code gave them.
    pub discounts: i64,
    pub refunded: i64,
    /// `gross − discounts − refunded`: the revenue of the orders using the code.
    pub net: i64,
}

impl From<revenue::PromoCodeRevenue> for PromoCodeRevenue {
    fn from(p: revenue::PromoCodeRevenue) -> Self {
        Self {
            promo_code_id: to_id(p.promo_code_id),
            code: p.code,
            uses: p.uses,
            orders: count(p.orders),
            currency: p.currency,
            gross: p.gross,
            discounts: p.discounts,
            refunded: p.refunded,
            net: p.gross - p.discounts - p.refunded,
        }
    }
}

/// An amount of one currency.
#[derive(SimpleObject, Clone, PartialEq, Eq, Debug)]
pub struct CurrencyAmount {
    pub currency: String,
    pub amount: i64,
}

pub fn amounts(bucket: Vec<(String, i64)>) -> Vec<CurrencyAmount> {
    bucket
        .into_iter()
        .map(|(currency, amount)| CurrencyAmount { currency, amount })
        .collect()
}

/// Revenue of a period per event: each event's figures per currency.
#[derive(Default)]
pub struct PeriodRevenue {
    pub by_event: HashMap<Uuid, Vec<revenue::Revenue>>,
    /// Every row's sum per currency: what the set of events earned in the period.
    pub totals: Vec<revenue::Revenue>,
}

impl PeriodRevenue {
    pub fn new(rows: Vec<revenue::EventPeriodRevenue>) -> Self {
        let totals =
            revenue::sum_by_currency(&rows.iter().map(|r| r.revenue()).collect::<Vec<_>>());
        let mut by_event: HashMap<Uuid, Vec<revenue::Revenue>> = HashMap::new();
        for row in rows {
            by_event
                .entry(row.event_id)
                .or_default()
                .push(row.revenue());
        }
        Self { by_event, totals }
    }

    pub fn of_event(&self, event_id: Uuid) -> Vec<CurrencyRevenue> {
        self.by_event
            .get(&event_id)
            .map(|all| per_currency(all))
            .unwrap_or_default()
    }

    /// The sums per currency of some events.
    pub fn of_events(&self, event_ids: impl IntoIterator<Item = Uuid>) -> Vec<CurrencyRevenue> {
        let rows: Vec<&revenue::Revenue> = event_ids
            .into_iter()
            .filter_map(|id| self.by_event.get(&id))
            .flatten()
            .collect();
        per_currency(&revenue::sum_by_currency(rows))
    }

    /// The `top` events by net revenue in each currency, most first (ties by `order`, the
    /// events' order as listed): currencies by code.
    pub fn top_by_net(&self, order: &[Uuid], top: usize) -> BTreeMap<String, Vec<Uuid>> {
        let position: HashMap<Uuid, usize> =
            order.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut ranked: BTreeMap<String, Vec<(i64, usize, Uuid)>> = BTreeMap::new();
        for (event_id, all) in &self.by_event {
            let Some(at) = position.get(event_id) else {
                continue;
            };
            for r in all {
                ranked
                    .entry(r.currency.clone())
                    .or_default()
                    .push((r.net(), *at, *event_id));
            }
        }
        ranked
            .into_iter()
            .map(|(currency, mut events)| {
                events.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                events.truncate(top);
                (currency, events.into_iter().map(|(_, _, id)| id).collect())
            })
            .collect()
    }
}
