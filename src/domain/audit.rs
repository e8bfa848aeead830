//! The audit log: every organizer and admin action, recorded by the command that does it, in
//! that command's transaction, so the entry commits or rolls back with the action. Each entry
//! says who, when, what (an action and the thing it was done to) and the fields that changed,
//! before and after.
//!
//! Append-only: nothing here updates or deletes an entry, and a trigger refuses UPDATE, DELETE
//! and TRUNCATE of `audit_log` to every role (see the migration `2026-12-04-000001_analytics`).
//!
//! Bottom layer (beside `sale_rules`): the commands above record through [`record`]; it
//! imports only `pagination`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::db::commerce::{EventSales, Order, PromoCode, Quota, Refund, TicketType};
use crate::db::models::{Event, User};
use crate::db::schema::audit_log;
use crate::domain::Viewer;
use crate::domain::pagination::{Page, PageRequest};
use crate::error::AppResult;

/// One entry as stored.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_log, check_for_backend(diesel::pg::Pg))]
pub struct AuditEntry {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor_id: Uuid,
    pub action: String,
    pub subject_type: String,
    pub subject_id: Uuid,
    pub event_id: Option<Uuid>,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// What was done to what: `action` is a stable dotted word (`event.update`), `subject` the
/// kind and id of the thing.
pub struct Action {
    pub action: &'static str,
    pub subject_type: &'static str,
    pub subject_id: Uuid,
    pub event_id: Option<Uuid>,
}

impl Action {
    pub fn on_event(action: &'static str, event_id: Uuid) -> Self {
        Self {
            action,
            subject_type: "event",
            subject_id: event_id,
            event_id: Some(event_id),
        }
    }

    /// An action on a thing of an event's sales (`ticket_type`, `quota`, `promo_code`,
    /// `order`): the event's organizer reads it with the event's entries.
    pub fn on_sales(
        action: &'static str,
        subject_type: &'static str,
        subject_id: Uuid,
        event_id: Uuid,
    ) -> Self {
        Self {
            action,
            subject_type,
            subject_id,
            event_id: Some(event_id),
        }
    }

    pub fn on_user(action: &'static str, user_id: Uuid) -> Self {
        Self {
            action,
            subject_type: "user",
            subject_id: user_id,
            event_id: None,
        }
    }
}

/// Records `action` by `actor` with the fields of `before` and `after` that differ (all of
/// them when one side is absent). Call it inside the action's transaction.
pub async fn record(
    conn: &mut AsyncPgConnection,
    actor: &Viewer,
    what: Action,
    before: Option<Value>,
    after: Option<Value>,
) -> AppResult<()> {
    let (before, after) = changed_fields(before, after);
    let entry = AuditEntry {
        id: Uuid::new_v4(),
        at: Utc::now(),
        actor_id: actor.id(),
        action: what.action.to_owned(),
        subject_type: what.subject_type.to_owned(),
        subject_id: what.subject_id,
        event_id: what.event_id,
        before,
        after,
    };
    diesel::insert_into(audit_log::table)
        .values(&entry)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records a change of an event by `actor`: the managed fields that differ between
/// `before` and `after`.
pub async fn record_event_change(
    conn: &mut AsyncPgConnection,
    actor: &Viewer,
    action: &'static str,
    before: &Event,
    after: &Event,
) -> AppResult<()> {
    let what = Action::on_event(action, after.id);
    let (before, after) = (event_fields(before), event_fields(after));
    record(conn, actor, what, Some(before), Some(after)).await
}

/// Keeps only the keys whose values differ between two JSON objects; other values as given.
fn changed_fields(before: Option<Value>, after: Option<Value>) -> (Option<Value>, Option<Value>) {
    match (before, after) {
        (Some(Value::Object(before)), Some(Value::Object(after))) => {
            let mut old = Map::new();
            let mut new = Map::new();
            for (key, value) in &after {
                if before.get(key) != Some(value) {
                    old.insert(key.clone(), before.get(key).cloned().unwrap_or(Value::Null));
                    new.insert(key.clone(), value.clone());
                }
            }
            for (key, value) in &before {
                if !after.contains_key(key) {
                    old.insert(key.clone(), value.clone());
                    new.insert(key.clone(), Value::Null);
                }
            }
            (Some(Value::Object(old)), Some(Value::Object(new)))
        }
        other => other,
    }
}

/// The fields of an event an organizer manages (and its status), as the audit log keeps them.
pub fn event_fields(event: &Event) -> Value {
    json!({
        "title": event.title,
        "description": event.description,
        "category": event.category,
        "venue": event.venue,
        "startsAt": event.starts_at,
        "endsAt": event.ends_at,
        "capacity": event.capacity,
        "maxPerBooking": event.max_per_booking,
        "status": event.status.as_str(),
        "free": event.free,
        "salesStartAt": event.sales_start_at,
        "salesEndAt": event.sales_end_at,
        "maxPerUser": event.max_per_user,
        "holdMinutes": event.hold_minutes,
        "offerMinutes": event.offer_minutes,
    })
}

/// The fields of a ticket type an organizer sets (and the currency its price fixed).
pub fn ticket_type_fields(t: &TicketType) -> Value {
    json!({
        "name": t.name,
        "description": t.description,
        "priceAmount": t.price_amount,
        "currency": t.currency,
        "quantity": t.quantity,
        "salesStartAt": t.sales_start_at,
        "salesEndAt": t.sales_end_at,
        "minPerOrder": t.min_per_order,
        "maxPerOrder": t.max_per_order,
        "hidden": t.hidden,
    })
}

pub fn quota_fields(q: &Quota, ticket_type_ids: &[Uuid]) -> Value {
    json!({ "name": q.name, "size": q.size, "ticketTypeIds": ticket_type_ids })
}

pub fn promo_code_fields(p: &PromoCode, ticket_type_ids: &[Uuid]) -> Value {
    json!({
        "code": p.code,
        "discountKind": p.discount_kind.as_str(),
        "value": p.value,
        "maxUses": p.max_uses,
        "validFrom": p.valid_from,
        "validUntil": p.valid_until,
        "unlocksHidden": p.unlocks_hidden,
        "ticketTypeIds": ticket_type_ids,
    })
}

pub fn payment_settings_fields(s: &EventSales) -> Value {
    json!({
        "paymentProvider": s.payment_provider.as_str(),
        "paymentWindowDays": s.payment_window_days,
        "refundUntil": s.refund_until,
    })
}

/// The money and state of an order, as an organizer's action on it moves them.
pub fn order_fields(o: &Order) -> Value {
    json!({
        "status": o.status.as_str(),
        "total": o.total,
        "currency": o.currency,
        "amountPaid": o.amount_paid,
        "amountRefunded": o.amount_refunded,
        "paymentReference": o.payment_reference,
    })
}

/// Records an action on an order (`order.refund`, `order.mark_paid`, `order.cancel`) with
/// the order's fields before and after, and the refund it started when there is one (the
/// provider carries it out after the commit: `amountRefunded` moves then).
pub async fn record_order_action(
    conn: &mut AsyncPgConnection,
    actor: &Viewer,
    action: &'static str,
    before: &Order,
    after: &Order,
    refund: Option<&Refund>,
) -> AppResult<()> {
    let what = Action::on_sales(action, "order", after.id, after.event_id);
    let mut new = order_fields(after);
    if let Some(refund) = refund {
        new["refund"] = json!({
            "id": refund.id,
            "amount": refund.amount,
            "lineIds": refund.line_ids,
            "reason": refund.reason,
            "status": refund.status.as_str(),
        });
    }
    record(conn, actor, what, Some(order_fields(before)), Some(new)).await
}

/// Records the refunds a cancelled event's paid orders were given, one entry per order.
pub async fn record_event_refunds(
    conn: &mut AsyncPgConnection,
    actor: &Viewer,
    event_id: Uuid,
    refunds: &[Refund],
) -> AppResult<()> {
    for refund in refunds {
        let what = Action::on_sales("order.refund", "order", refund.order_id, event_id);
        let after = json!({ "refund": {
            "id": refund.id,
            "amount": refund.amount,
            "lineIds": refund.line_ids,
            "reason": refund.reason,
            "status": refund.status.as_str(),
        }});
        record(conn, actor, what, None, Some(after)).await?;
    }
    Ok(())
}

/// The fields of a user an admin changes.
pub fn user_fields(user: &User) -> Value {
    json!({ "role": user.role.as_str() })
}

/// A page of entries, newest first: one event's when `event_id` is given, else the platform's.
/// Who may read which is the caller's business (the resolver checks it).
pub async fn list_entries(
    conn: &mut AsyncPgConnection,
    event_id: Option<Uuid>,
    page: PageRequest,
) -> AppResult<Page<AuditEntry>> {
    let mut query = audit_log::table
        .select(AuditEntry::as_select())
        .order((audit_log::at.desc(), audit_log::id.desc()))
        .limit(page.limit())
        .into_boxed();
    if let Some(event_id) = event_id {
        query = query.filter(audit_log::event_id.eq(event_id));
    }
    if let Some(after) = page.after {
        query = query.filter(
            audit_log::at
                .lt(after.at)
                .or(audit_log::at.eq(after.at).and(audit_log::id.lt(after.id))),
        );
    }
    Ok(page.finish(query.load(conn).await?))
}

/// How many entries [`list_entries`] lists across all its pages.
pub async fn count_entries(conn: &mut AsyncPgConnection, event_id: Option<Uuid>) -> AppResult<i64> {
    let mut query = audit_log::table.count().into_boxed();
    if let Some(event_id) = event_id {
        query = query.filter(audit_log::event_id.eq(event_id));
    }
    Ok(query.get_result(conn).await?)
}
