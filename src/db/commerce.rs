//! Rows of the commerce tables: ticket types, quotas, promo codes, orders and their lines,
//! tickets, refunds. Money is integer minor units of an ISO 4217 currency (`i64`).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::models::text_enum;
use super::schema::{
    events, order_lines, orders, promo_codes, quotas, refunds, ticket_types, tickets,
};

text_enum!(OrderStatus {
    PendingPayment => "PENDING_PAYMENT",
    Paid => "PAID",
    Expired => "EXPIRED",
    Cancelled => "CANCELLED",
    PartiallyRefunded => "PARTIALLY_REFUNDED",
    Refunded => "REFUNDED",
});
text_enum!(TicketStatus { Valid => "VALID", Refunded => "REFUNDED", Cancelled => "CANCELLED" });
text_enum!(RefundStatus { Pending => "PENDING", Succeeded => "SUCCEEDED", Failed => "FAILED" });
text_enum!(DiscountKind { Percent => "PERCENT", Fixed => "FIXED" });
text_enum!(Provider { Manual => "MANUAL", Stripe => "STRIPE" });

/// How an event sells: the commerce columns of `events`, apart from the `Event` row that every
/// booking reads.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = events, check_for_backend(diesel::pg::Pg))]
pub struct EventSales {
    pub id: Uuid,
    pub currency: Option<String>,
    pub payment_provider: Provider,
    pub payment_window_days: i32,
    pub refund_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = ticket_types, check_for_backend(diesel::pg::Pg))]
pub struct TicketType {
    pub id: Uuid,
    pub event_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub price_amount: i64,
    pub currency: String,
    /// Its own limit, apart from its quotas and the event's capacity.
    pub quantity: Option<i32>,
    pub held: i32,
    pub sold: i32,
    pub sales_start_at: Option<DateTime<Utc>>,
    pub sales_end_at: Option<DateTime<Utc>>,
    pub min_per_order: i32,
    pub max_per_order: i32,
    pub hidden: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The seat-map sections its seats must be in (a theatre's tier); empty: any seat.
    pub sections: Vec<String>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = quotas, check_for_backend(diesel::pg::Pg))]
pub struct Quota {
    pub id: Uuid,
    pub event_id: Uuid,
    pub name: String,
    pub size: i32,
    pub available: i32,
    pub held: i32,
    pub sold: i32,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = promo_codes, check_for_backend(diesel::pg::Pg))]
pub struct PromoCode {
    pub id: Uuid,
    pub event_id: Uuid,
    pub code: String,
    pub discount_kind: DiscountKind,
    /// A percentage (0–100) or minor units off the order.
    pub value: i64,
    pub max_uses: Option<i32>,
    pub uses: i32,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub unlocks_hidden: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = orders, check_for_backend(diesel::pg::Pg))]
pub struct Order {
    pub id: Uuid,
    pub event_id: Uuid,
    pub user_id: Uuid,
    pub status: OrderStatus,
    pub currency: String,
    pub subtotal: i64,
    pub discount: i64,
    pub total: i64,
    pub promo_code_id: Option<Uuid>,
    pub hold_id: Option<Uuid>,
    pub idempotency_key: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub provider: Provider,
    pub intent_id: Option<String>,
    pub client_secret: Option<String>,
    pub payment_status: String,
    pub amount_paid: i64,
    pub amount_refunded: i64,
    pub payment_reference: Option<String>,
    pub reason: Option<String>,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = order_lines, check_for_backend(diesel::pg::Pg))]
pub struct OrderLine {
    pub id: Uuid,
    pub order_id: Uuid,
    pub ticket_type_id: Uuid,
    pub position: i32,
    pub quantity: i32,
    pub unit_price: i64,
    pub total: i64,
    pub seat_ids: Vec<Uuid>,
    pub booking_id: Option<Uuid>,
    pub refund_id: Option<Uuid>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = tickets, check_for_backend(diesel::pg::Pg))]
pub struct Ticket {
    pub id: Uuid,
    pub order_id: Uuid,
    pub order_line_id: Uuid,
    pub ticket_type_id: Uuid,
    pub event_id: Uuid,
    pub seat_id: Option<Uuid>,
    pub code: String,
    pub status: TicketStatus,
    pub checked_in_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = refunds, check_for_backend(diesel::pg::Pg))]
pub struct Refund {
    pub id: Uuid,
    pub order_id: Uuid,
    pub amount: i64,
    pub reason: Option<String>,
    pub status: RefundStatus,
    pub line_ids: Vec<Uuid>,
    pub provider_refund_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}
