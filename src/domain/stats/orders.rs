//! The orders of an event, a page at a time, for the CSV export: every order (whatever its
//! status) oldest first, with its buyer, its lines summed up in one cell, and its money.
//!
//! One row per order rather than per line: the amounts (subtotal, discount, total, refunded)
//! belong to the order, so a spreadsheet's SUM of a column is the event's figure; per line,
//! they would have to be repeated (and sum wrong) or shared out (and no longer match what
//! the buyer was charged). The lines are one cell, `2 × Regular; 1 × VIP`.
//!
//! Keyset pages on `(created_at, id)` (the `orders_event_idx` order, read backwards), so
//! memory stays that of one page however many orders there are, and a pooled connection is
//! held only while a page is read.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::error::AppResult;

/// Orders read per page.
pub const PAGE_SIZE: i64 = 1_000;

#[derive(Debug, Clone, QueryableByName)]
pub struct OrderRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub order_id: Uuid,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub email: String,
    /// `quantity × type name` of each line, `; `-separated, in the order's order.
    #[diesel(sql_type = Nullable<Text>)]
    pub lines: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub tickets: i64,
    /// Minor units of `currency`.
    #[diesel(sql_type = BigInt)]
    pub subtotal: i64,
    #[diesel(sql_type = BigInt)]
    pub discount: i64,
    #[diesel(sql_type = BigInt)]
    pub total: i64,
    /// Refunds that succeeded.
    #[diesel(sql_type = BigInt)]
    pub refunded: i64,
    #[diesel(sql_type = Text)]
    pub currency: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub promo_code: Option<String>,
    #[diesel(sql_type = Text)]
    pub provider: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub payment_reference: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub paid_at: Option<DateTime<Utc>>,
}

/// The page of orders after `after` (the last one of the previous page).
pub async fn order_page(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    after: Option<(DateTime<Utc>, Uuid)>,
) -> AppResult<Vec<OrderRow>> {
    let (after_at, after_id) = match after {
        Some((at, id)) => (Some(at), Some(id)),
        None => (None, None),
    };
    Ok(diesel::sql_query(
        "SELECT o.id AS order_id, o.created_at, o.status, u.name, u.email, l.lines,
                coalesce(l.tickets, 0)::bigint AS tickets, o.subtotal, o.discount, o.total,
                o.amount_refunded AS refunded, o.currency, p.code AS promo_code, o.provider,
                o.payment_reference, o.paid_at
         FROM orders o
         JOIN users u ON u.id = o.user_id
         LEFT JOIN promo_codes p ON p.id = o.promo_code_id
         LEFT JOIN LATERAL (
             SELECT string_agg(ol.quantity || ' × ' || t.name, '; ' ORDER BY ol.position)
                        AS lines,
                    sum(ol.quantity) AS tickets
             FROM order_lines ol JOIN ticket_types t ON t.id = ol.ticket_type_id
             WHERE ol.order_id = o.id) l ON true
         WHERE o.event_id = $1
           AND ($2::timestamptz IS NULL OR (o.created_at, o.id) > ($2, $3::uuid))
         ORDER BY o.created_at, o.id
         LIMIT $4",
    )
    .bind::<diesel::sql_types::Uuid, _>(event_id)
    .bind::<Nullable<Timestamptz>, _>(after_at)
    .bind::<Nullable<diesel::sql_types::Uuid>, _>(after_id)
    .bind::<BigInt, _>(PAGE_SIZE)
    .load(conn)
    .await?)
}

/// An amount of minor units as a decimal in the currency's major unit (`1250` EUR is
/// `12.50`, `1250` JPY is `1250`), exact: no floating point on the way.
pub fn major_units(minor: i64, currency: &str) -> String {
    let exponent = iso_currency::Currency::from_code(currency)
        .and_then(|c| c.exponent())
        .unwrap_or(2) as u32;
    if exponent == 0 {
        return minor.to_string();
    }
    let scale = 10_u64.pow(exponent);
    let sign = if minor < 0 { "-" } else { "" };
    let minor = minor.unsigned_abs();
    format!(
        "{sign}{}.{:0width$}",
        minor / scale,
        minor % scale,
        width = exponent as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_written_in_the_currency_s_major_unit() {
        assert_eq!(major_units(1250, "EUR"), "12.50");
        assert_eq!(major_units(5, "EUR"), "0.05");
        assert_eq!(major_units(0, "USD"), "0.00");
        assert_eq!(major_units(1250, "JPY"), "1250");
        assert_eq!(major_units(1250, "KWD"), "1.250");
        assert_eq!(major_units(-1250, "EUR"), "-12.50");
    }
}
