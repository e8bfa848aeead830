//! Revenue: what orders brought in, per currency, per ticket type and per promo code, read
//! from the committed orders, lines and refunds (exact when read, like every figure here).
//!
//! What counts, in integer minor units of the order's currency:
//! - an order **counts** once it was paid: status PAID, PARTIALLY_REFUNDED or REFUNDED. Orders
//!   waiting for payment, expired or cancelled count nothing (a payment that came after the
//!   hold ended, when the seats were gone, is refunded in full: its order ends REFUNDED, so
//!   it counts in gross and in refunded alike, net 0);
//! - **gross** is the sum of the counted orders' subtotals (list prices × quantities);
//! - **discounts** the sum of their promo-code discounts;
//! - **refunded** the sum of their SUCCEEDED refunds (`orders.amount_refunded`; a refund still
//!   PENDING at the provider is not money back yet);
//! - **net** = gross − discounts − refunded: what the organizer keeps.
//!
//! Per ticket type, each order's discount is shared among its lines in proportion to their
//! totals, and each refund among the lines it took back (all the order's lines for a refund by
//! amount), rounded down with the remainder on the first line, so the types of an event add
//! up exactly to its totals. Over a period (`salesOverTime`, `organizerStats`,
//! `platformStats`) an order counts at the moment it was paid (`paid_at`) and a refund when it
//! succeeded (`refunds.updated_at`, the moment its status last moved).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::event::{EventStats, event_stats};
use crate::error::AppResult;

/// The order statuses whose money counts (see the module doc).
const COUNTED: &str = "('PAID', 'PARTIALLY_REFUNDED', 'REFUNDED')";

/// Money of one currency: gross, discounts and refunded; net follows.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Revenue {
    #[diesel(sql_type = Text)]
    pub currency: String,
    #[diesel(sql_type = BigInt)]
    pub gross: i64,
    #[diesel(sql_type = BigInt)]
    pub discounts: i64,
    #[diesel(sql_type = BigInt)]
    pub refunded: i64,
}

impl Revenue {
    pub fn zero(currency: &str) -> Self {
        Self {
            currency: currency.to_owned(),
            gross: 0,
            discounts: 0,
            refunded: 0,
        }
    }

    /// `gross − discounts − refunded`.
    pub fn net(&self) -> i64 {
        self.gross - self.discounts - self.refunded
    }

    fn add(&mut self, other: &Revenue) {
        self.gross += other.gross;
        self.discounts += other.discounts;
        self.refunded += other.refunded;
    }
}

/// Adds up amounts of several currencies: one [`Revenue`] per currency, by code.
pub fn sum_by_currency<'a>(all: impl IntoIterator<Item = &'a Revenue>) -> Vec<Revenue> {
    let mut by_currency: BTreeMap<&str, Revenue> = BTreeMap::new();
    for revenue in all {
        by_currency
            .entry(&revenue.currency)
            .or_insert_with(|| Revenue::zero(&revenue.currency))
            .add(revenue);
    }
    by_currency.into_values().collect()
}

/// One ticket type's share of the event's revenue.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct TicketTypeRevenue {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub ticket_type_id: Uuid,
    #[diesel(sql_type = Text)]
    pub name: String,
    /// Tickets issued in the lines of counted orders, refunded ones included (a payment that
    /// came too late and was refunded at once issued none).
    #[diesel(sql_type = BigInt)]
    pub tickets_sold: i64,
    /// Of those, tickets whose line was taken back (its refund succeeded).
    #[diesel(sql_type = BigInt)]
    pub tickets_refunded: i64,
    #[diesel(sql_type = Text)]
    pub currency: String,
    #[diesel(sql_type = BigInt)]
    pub gross: i64,
    #[diesel(sql_type = BigInt)]
    pub discounts: i64,
    #[diesel(sql_type = BigInt)]
    pub refunded: i64,
}

/// What one promo code brought in: the counted orders that used it.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct PromoCodeRevenue {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub promo_code_id: Uuid,
    #[diesel(sql_type = Text)]
    pub code: String,
    /// Uses as the code counts them (orders waiting for payment included).
    #[diesel(sql_type = Integer)]
    pub uses: i32,
    /// Counted (paid) orders that used it.
    #[diesel(sql_type = BigInt)]
    pub orders: i64,
    /// The event's currency; none before its first ticket type.
    #[diesel(sql_type = Nullable<Text>)]
    pub currency: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub gross: i64,
    #[diesel(sql_type = BigInt)]
    pub discounts: i64,
    #[diesel(sql_type = BigInt)]
    pub refunded: i64,
}

/// An event's revenue: per currency (one for an event that sells, zeros before any sale;
/// none for one that never had a ticket type), per ticket type and per promo code.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventRevenue {
    pub currencies: Vec<Revenue>,
    pub ticket_types: Vec<TicketTypeRevenue>,
    pub promo_codes: Vec<PromoCodeRevenue>,
}

/// The event's seat and booking figures and its revenue, read in one REPEATABLE READ
/// snapshot so they agree with each other. `None` when there is no such event.
pub async fn event_figures(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
) -> AppResult<Option<(EventStats, EventRevenue)>> {
    conn.build_transaction()
        .read_only()
        .repeatable_read()
        .run(async |conn| {
            let Some(stats) = event_stats(conn, event_id).await? else {
                return Ok(None);
            };
            let revenue = event_revenue(conn, event_id).await?;
            Ok(Some((stats, revenue)))
        })
        .await
}

/// The revenue of the event `event_id` (see the module doc for what counts).
pub async fn event_revenue(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
) -> AppResult<EventRevenue> {
    let mut currencies: Vec<Revenue> = diesel::sql_query(format!(
        "SELECT currency, sum(subtotal)::bigint AS gross, sum(discount)::bigint AS discounts,
                sum(amount_refunded)::bigint AS refunded
         FROM orders WHERE event_id = $1 AND status IN {COUNTED}
         GROUP BY currency ORDER BY currency"
    ))
    .bind::<diesel::sql_types::Uuid, _>(event_id)
    .load(conn)
    .await?;
    if currencies.is_empty() {
        #[derive(QueryableByName)]
        struct Currency {
            #[diesel(sql_type = Nullable<Text>)]
            currency: Option<String>,
        }
        let event: Vec<Currency> = diesel::sql_query("SELECT currency FROM events WHERE id = $1")
            .bind::<diesel::sql_types::Uuid, _>(event_id)
            .load(conn)
            .await?;
        if let Some(currency) = event.into_iter().find_map(|e| e.currency) {
            currencies.push(Revenue::zero(&currency));
        }
    }
    let ticket_types = diesel::sql_query(format!(
        "WITH counted AS (
             SELECT id, subtotal, discount FROM orders
             WHERE event_id = $1 AND status IN {COUNTED}),
         -- Each line's share of its order's discount, the rounding remainder on its first line.
         line_discounts AS (
             SELECT id, ticket_type_id, quantity, total, refund_id, order_id, booking_id,
                    share + CASE WHEN first THEN discount - sum(share) OVER (PARTITION BY order_id)
                                 ELSE 0 END AS discount
             FROM (SELECT l.id, l.ticket_type_id, l.quantity, l.total, l.refund_id, l.order_id,
                          l.booking_id, o.discount,
                          CASE WHEN o.subtotal = 0 THEN 0
                               ELSE l.total * o.discount / o.subtotal END AS share,
                          row_number() OVER (PARTITION BY l.order_id ORDER BY l.position) = 1
                              AS first
                   FROM order_lines l JOIN counted o ON o.id = l.order_id) l),
         -- Each succeeded refund shared among the lines it took back (all the order's lines
         -- for a refund by amount) by their totals, the remainder on the first.
         refund_lines AS (
             SELECT r.id AS refund_id, r.amount, l.id AS line_id, l.total,
                    sum(l.total) OVER (PARTITION BY r.id) AS of_total,
                    row_number() OVER (PARTITION BY r.id ORDER BY l.position) = 1 AS first
             FROM refunds r
             JOIN counted o ON o.id = r.order_id
             JOIN order_lines l ON l.order_id = r.order_id
                 AND (cardinality(r.line_ids) = 0 OR l.id = ANY (r.line_ids))
             WHERE r.status = 'SUCCEEDED'),
         refund_shares AS (
             SELECT line_id,
                    share + CASE WHEN first THEN amount - sum(share) OVER (PARTITION BY refund_id)
                                 ELSE 0 END AS refunded
             FROM (SELECT refund_id, amount, line_id, first,
                          CASE WHEN of_total = 0 THEN 0
                               ELSE div(amount * total, of_total)::bigint END AS share
                   FROM refund_lines) s),
         per_line AS (
             SELECT d.ticket_type_id, d.quantity, d.booking_id IS NOT NULL AS issued, d.total,
                    d.discount,
                    coalesce((SELECT sum(refunded) FROM refund_shares s WHERE s.line_id = d.id),
                             0) AS refunded,
                    d.refund_id IS NOT NULL
                        AND (d.refund_id = d.order_id
                             OR EXISTS (SELECT 1 FROM refunds r
                                        WHERE r.id = d.refund_id AND r.status = 'SUCCEEDED'))
                        AS line_refunded
             FROM line_discounts d)
         SELECT t.id AS ticket_type_id, t.name, t.currency,
                coalesce(sum(p.quantity) FILTER (WHERE p.issued), 0)::bigint AS tickets_sold,
                coalesce(sum(p.quantity) FILTER (WHERE p.issued AND p.line_refunded), 0)::bigint
                    AS tickets_refunded,
                coalesce(sum(p.total), 0)::bigint AS gross,
                coalesce(sum(p.discount), 0)::bigint AS discounts,
                coalesce(sum(p.refunded), 0)::bigint AS refunded
         FROM ticket_types t LEFT JOIN per_line p ON p.ticket_type_id = t.id
         WHERE t.event_id = $1
         GROUP BY t.id
         ORDER BY t.created_at, t.id"
    ))
    .bind::<diesel::sql_types::Uuid, _>(event_id)
    .load(conn)
    .await?;
    let promo_codes = diesel::sql_query(format!(
        "SELECT c.id AS promo_code_id, c.code, c.uses, count(o.id) AS orders, e.currency,
                coalesce(sum(o.subtotal), 0)::bigint AS gross,
                coalesce(sum(o.discount), 0)::bigint AS discounts,
                coalesce(sum(o.amount_refunded), 0)::bigint AS refunded
         FROM promo_codes c
         JOIN events e ON e.id = c.event_id
         LEFT JOIN orders o ON o.promo_code_id = c.id AND o.status IN {COUNTED}
         WHERE c.event_id = $1
         GROUP BY c.id, e.currency
         ORDER BY c.created_at, c.id"
    ))
    .bind::<diesel::sql_types::Uuid, _>(event_id)
    .load(conn)
    .await?;
    Ok(EventRevenue {
        currencies,
        ticket_types,
        promo_codes,
    })
}

#[derive(QueryableByName)]
struct BucketAmount {
    #[diesel(sql_type = Integer)]
    bucket: i32,
    #[diesel(sql_type = Text)]
    currency: String,
    #[diesel(sql_type = BigInt)]
    amount: i64,
}

/// Net revenue per bucket of `bounds` (from `periods::buckets`), per currency, of one event or
/// (`None`) of all: the totals of the orders paid in the bucket less the refunds that
/// succeeded in it. One entry per bucket, each with the currencies that moved in it.
pub async fn net_revenue_buckets(
    conn: &mut AsyncPgConnection,
    event_id: Option<Uuid>,
    bounds: &[DateTime<Utc>],
) -> AppResult<Vec<Vec<(String, i64)>>> {
    // Two fixed statements rather than `$1 IS NULL OR …`, so each keeps its index.
    let of_event = if event_id.is_some() {
        "o.event_id = $2 AND"
    } else {
        "$2::uuid IS NULL AND"
    };
    let rows: Vec<BucketAmount> = diesel::sql_query(format!(
        "SELECT bucket, currency, sum(amount)::bigint AS amount
         FROM (SELECT width_bucket(o.paid_at, $1) AS bucket, o.currency, o.total AS amount
               FROM orders o
               WHERE {of_event} o.status IN {COUNTED}
                 AND o.paid_at >= $1[1] AND o.paid_at < $1[array_length($1, 1)]
               UNION ALL
               SELECT width_bucket(r.updated_at, $1), o.currency, -r.amount
               FROM refunds r JOIN orders o ON o.id = r.order_id
               WHERE {of_event} o.status IN {COUNTED} AND r.status = 'SUCCEEDED'
                 AND r.updated_at >= $1[1] AND r.updated_at < $1[array_length($1, 1)]) moved
         GROUP BY bucket, currency
         ORDER BY bucket, currency"
    ))
    .bind::<Array<Timestamptz>, _>(bounds)
    .bind::<Nullable<diesel::sql_types::Uuid>, _>(event_id)
    .load(conn)
    .await?;
    let mut buckets = vec![Vec::new(); bounds.len().saturating_sub(1)];
    for row in rows {
        if let Some(bucket) = buckets.get_mut((row.bucket as usize).wrapping_sub(1)) {
            bucket.push((row.currency, row.amount));
        }
    }
    Ok(buckets)
}

/// One event's revenue over a period, in one currency.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct EventPeriodRevenue {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub event_id: Uuid,
    #[diesel(sql_type = Text)]
    pub currency: String,
    #[diesel(sql_type = BigInt)]
    pub gross: i64,
    #[diesel(sql_type = BigInt)]
    pub discounts: i64,
    #[diesel(sql_type = BigInt)]
    pub refunded: i64,
}

impl EventPeriodRevenue {
    pub fn revenue(&self) -> Revenue {
        Revenue {
            currency: self.currency.clone(),
            gross: self.gross,
            discounts: self.discounts,
            refunded: self.refunded,
        }
    }
}

/// Revenue over `from..to` per event and currency: orders paid in the period and refunds that
/// succeeded in it, of the organizer's events when `organizer` is given, else of every event.
/// Each of `listed` that sells in a currency has a row, zeros when nothing moved (so a ranking
/// counts it as zero rather than missing it); other events only when money moved.
pub async fn period_revenue(
    conn: &mut AsyncPgConnection,
    organizer: Option<Uuid>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    listed: &[Uuid],
) -> AppResult<Vec<EventPeriodRevenue>> {
    let whose = if organizer.is_some() {
        "e.organizer_id = $4"
    } else {
        "$4::uuid IS NULL"
    };
    Ok(diesel::sql_query(format!(
        "WITH moved AS (
             SELECT o.event_id, o.currency, o.subtotal AS gross, o.discount AS discounts,
                    0::bigint AS refunded
             FROM orders o
             WHERE o.status IN {COUNTED} AND o.paid_at >= $1 AND o.paid_at < $2
             UNION ALL
             SELECT o.event_id, o.currency, 0, 0, r.amount
             FROM refunds r JOIN orders o ON o.id = r.order_id
             WHERE r.status = 'SUCCEEDED' AND o.status IN {COUNTED}
               AND r.updated_at >= $1 AND r.updated_at < $2
             UNION ALL
             SELECT e.id, e.currency, 0, 0, 0
             FROM events e WHERE e.id = ANY ($3) AND e.currency IS NOT NULL)
         SELECT m.event_id, m.currency, sum(m.gross)::bigint AS gross,
                sum(m.discounts)::bigint AS discounts, sum(m.refunded)::bigint AS refunded
         FROM moved m JOIN events e ON e.id = m.event_id
         WHERE {whose}
         GROUP BY m.event_id, m.currency
         ORDER BY m.event_id, m.currency"
    ))
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .bind::<Array<diesel::sql_types::Uuid>, _>(listed)
    .bind::<Nullable<diesel::sql_types::Uuid>, _>(organizer)
    .load(conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(currency: &str, gross: i64, discounts: i64, refunded: i64) -> Revenue {
        Revenue {
            currency: currency.into(),
            gross,
            discounts,
            refunded,
        }
    }

    #[test]
    fn currencies_are_added_up_apart_and_net_is_what_is_kept() {
        let all = [
            money("EUR", 10_000, 1_000, 2_000),
            money("USD", 500, 0, 0),
            money("EUR", 3_000, 0, 3_000),
        ];
        let sums = sum_by_currency(&all);
        assert_eq!(
            sums,
            vec![money("EUR", 13_000, 1_000, 5_000), money("USD", 500, 0, 0)]
        );
        assert_eq!(sums[0].net(), 7_000);
    }
}
