//! What an organizer sets up before an onsale: ticket types with their prices, quotas shared
//! by several types, promo and access codes, and how the event is paid for (provider, payment
//! window of manual payments, until when buyers may cancel).
//!
//! The event's first ticket type fixes its currency (`events.currency`); from then on it sells
//! only through orders. Each change locks the event, so the counters a quota starts from are
//! the types' counters of that moment.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::codes::{code_types, find_code};
use super::{MAX_PRICE, check_currency, ensure_manager, event_sales, manages};
use crate::db::commerce::{EventSales, Provider, Quota, TicketType};
use crate::db::models::Event;
use crate::db::schema::{events, quota_ticket_types, quotas, ticket_types, venue_seats};
use crate::domain::Viewer;
use crate::domain::audit::{self, Action};
use crate::domain::changes::{Changes, Committed};
use crate::domain::sale_rules::lock_event;
use crate::domain::stock::Stock;
use crate::domain::text::required_text;
use crate::error::{AppError, AppResult};

pub struct Money {
    pub amount: i64,
    pub currency: String,
}

pub struct NewTicketType {
    pub name: String,
    pub description: Option<String>,
    pub price: Money,
    pub quantity: Option<i32>,
    pub sales_start_at: Option<DateTime<Utc>>,
    pub sales_end_at: Option<DateTime<Utc>>,
    pub min_per_order: Option<i32>,
    pub max_per_order: Option<i32>,
    pub hidden: bool,
    /// Seat-map sections its seats must be in; empty: any seat.
    pub sections: Vec<String>,
}

/// A change to a ticket type: `None` leaves a field as it is; for the optional fields,
/// `Some(None)` clears it.
#[derive(Default)]
pub struct TicketTypePatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub price: Option<Money>,
    pub quantity: Option<Option<i32>>,
    pub sales_start_at: Option<Option<DateTime<Utc>>>,
    pub sales_end_at: Option<Option<DateTime<Utc>>>,
    pub min_per_order: Option<i32>,
    pub max_per_order: Option<i32>,
    pub hidden: Option<bool>,
    pub sections: Option<Vec<String>>,
}

fn bad(field: &'static str, reason: &'static str, message: impl Into<String>) -> AppError {
    AppError::BadUserInput {
        message: message.into(),
        field: Some(field),
        reason: Some(reason),
    }
}

fn check_price(price: &Money, event: &Event) -> AppResult<String> {
    if price.amount < 0 {
        return Err(bad("price", "NEGATIVE_PRICE", "a price cannot be negative"));
    }
    if price.amount > MAX_PRICE {
        return Err(bad("price", "PRICE_TOO_HIGH", "this price is too high"));
    }
    let currency = check_currency(&price.currency)?;
    if let Some(current) = &event.currency
        && *current != currency
    {
        return Err(bad(
            "price",
            "MIXED_CURRENCIES",
            format!("this event sells in {current}: every price must be in {current}"),
        ));
    }
    Ok(currency)
}

fn check_type(ticket_type: &TicketType) -> AppResult<()> {
    if ticket_type.quantity.is_some_and(|q| q < 0) {
        return Err(bad(
            "quantity",
            "INVALID_QUANTITY",
            "quantity cannot be negative",
        ));
    }
    if ticket_type.min_per_order < 1 || ticket_type.max_per_order < ticket_type.min_per_order {
        return Err(bad(
            "maxPerOrder",
            "INVALID_PER_ORDER",
            "minPerOrder must be at least 1 and maxPerOrder at least minPerOrder",
        ));
    }
    if ticket_type.max_per_order > 100 {
        return Err(bad(
            "maxPerOrder",
            "INVALID_PER_ORDER",
            "maxPerOrder is at most 100",
        ));
    }
    if let (Some(start), Some(end)) = (ticket_type.sales_start_at, ticket_type.sales_end_at)
        && end <= start
    {
        return Err(bad(
            "salesEndAt",
            "INVALID_SALES_WINDOW",
            "salesEndAt must be after salesStartAt",
        ));
    }
    if ticket_type
        .quantity
        .is_some_and(|q| q < ticket_type.held + ticket_type.sold)
    {
        return Err(bad(
            "quantity",
            "QUANTITY_BELOW_SOLD",
            format!(
                "{} of this type are sold or held: quantity cannot be lower",
                ticket_type.held + ticket_type.sold
            ),
        ));
    }
    Ok(())
}

/// The sections a ticket type is tied to, each a section of the event's seat map, without
/// repeats, in the order given. None for any seat; a general-admission event has no sections.
async fn check_sections(
    conn: &mut AsyncPgConnection,
    event: &Event,
    sections: Vec<String>,
) -> AppResult<Vec<String>> {
    if sections.is_empty() {
        return Ok(sections);
    }
    let Some(venue_id) = event.venue_id else {
        return Err(bad(
            "sections",
            "NO_SEAT_MAP",
            "this event is general admission: it has no sections",
        ));
    };
    let known: Vec<String> = venue_seats::table
        .filter(venue_seats::venue_id.eq(venue_id))
        .select(venue_seats::section)
        .distinct()
        .load(conn)
        .await?;
    let mut checked: Vec<String> = Vec::with_capacity(sections.len());
    for section in sections {
        let section = section.trim().to_owned();
        if !known.contains(&section) {
            return Err(bad(
                "sections",
                "UNKNOWN_SECTION",
                format!("{section:?} is not a section of this event's seat map"),
            ));
        }
        if !checked.contains(&section) {
            checked.push(section);
        }
    }
    Ok(checked)
}

/// Fixes the event's currency with its first ticket type: from then on it sells only through
/// orders, and its watchers are told.
async fn fix_currency(
    conn: &mut AsyncPgConnection,
    event: &Event,
    currency: &str,
    changes: &mut Changes,
) -> AppResult<()> {
    if event.currency.is_some() {
        return Ok(());
    }
    if event.free {
        return Err(AppError::not_possible(
            "FREE_EVENT",
            "this event is free: it takes RSVPs, not orders",
        ));
    }
    let updated: Event = diesel::update(events::table.find(event.id))
        .set((
            events::currency.eq(currency),
            events::version.eq(events::version + 1),
            events::updated_at.eq(diesel::dsl::now),
        ))
        .returning(Event::as_returning())
        .get_result(conn)
        .await?;
    changes.previous_version = Some(event.version);
    changes.event = Some(updated);
    changes.event_details = true;
    Ok(())
}

pub async fn create_ticket_type(
    conn: &mut AsyncPgConnection,
    viewer: &Viewer,
    event_id: Uuid,
    new: NewTicketType,
) -> AppResult<Committed<TicketType>> {
    let name = required_text("name", &new.name, 200)?;
    conn.transaction(async move |conn| {
        let event = lock_event(conn, event_id).await?;
        ensure_manager(viewer, &event)?;
        let currency = check_price(&new.price, &event)?;
        let now = Utc::now();
        let ticket_type = TicketType {
            id: Uuid::new_v4(),
            event_id,
            name,
            description: new.description,
            price_amount: new.price.amount,
            currency: currency.clone(),
            quantity: new.quantity,
            held: 0,
            sold: 0,
            sales_start_at: new.sales_start_at,
            sales_end_at: new.sales_end_at,
            min_per_order: new.min_per_order.unwrap_or(1),
            max_per_order: new.max_per_order.unwrap_or(event.max_per_booking),
            hidden: new.hidden,
            created_at: now,
            updated_at: now,
            sections: check_sections(conn, &event, new.sections).await?,
        };
        check_type(&ticket_type)?;
        let mut changes = Changes::default();
        fix_currency(conn, &event, &currency, &mut changes).await?;
        let inserted: TicketType = diesel::insert_into(ticket_types::table)
            .values(&ticket_type)
            .returning(TicketType::as_returning())
            .get_result(conn)
            .await?;
        let what = Action::on_sales("ticket_type.create", "ticket_type", inserted.id, event_id);
        audit::record(
            conn,
            viewer,
            what,
            None,
            Some(audit::ticket_type_fields(&inserted)),
        )
        .await?;
        Ok(Committed::new(inserted, changes))
    })
    .await
}

pub async fn find_ticket_type(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<TicketType> {
    use crate::domain::rows::OrNotFound;
    ticket_types::table
        .find(id)
        .select(TicketType::as_select())
        .first(conn)
        .await
        .or_not_found("ticket type")
}

pub async fn update_ticket_type(
    conn: &mut AsyncPgConnection,
    viewer: &Viewer,
    id: Uuid,
    patch: TicketTypePatch,
) -> AppResult<Committed<TicketType>> {
    let current = find_ticket_type(conn, id).await?;
    conn.transaction(async move |conn| {
        let event = lock_event(conn, current.event_id).await?;
        ensure_manager(viewer, &event)?;
        // Read again under the lock: its counters may have moved.
        let mut ticket_type = find_ticket_type(conn, id).await?;
        let before = audit::ticket_type_fields(&ticket_type);
        if let Some(name) = patch.name {
            ticket_type.name = required_text("name", &name, 200)?;
        }
        if let Some(description) = patch.description {
            ticket_type.description = description;
        }
        if let Some(price) = patch.price {
            ticket_type.currency = check_price(&price, &event)?;
            ticket_type.price_amount = price.amount;
        }
        if let Some(quantity) = patch.quantity {
            ticket_type.quantity = quantity;
        }
        if let Some(at) = patch.sales_start_at {
            ticket_type.sales_start_at = at;
        }
        if let Some(at) = patch.sales_end_at {
            ticket_type.sales_end_at = at;
        }
        if let Some(min) = patch.min_per_order {
            ticket_type.min_per_order = min;
        }
        if let Some(max) = patch.max_per_order {
            ticket_type.max_per_order = max;
        }
        if let Some(hidden) = patch.hidden {
            ticket_type.hidden = hidden;
        }
        if let Some(sections) = patch.sections {
            let sections = check_sections(conn, &event, sections).await?;
            let changed = sections != ticket_type.sections;
            ticket_type.sections = sections;
            if changed && ticket_type.held > 0 {
                // Seats already held were chosen under the old sections.
                return Err(bad(
                    "sections",
                    "TICKET_TYPE_IN_USE",
                    "orders of this type wait for payment: change its sections once they end",
                ));
            }
        }
        check_type(&ticket_type)?;
        let updated = diesel::update(ticket_types::table.find(id))
            .set((
                ticket_types::name.eq(&ticket_type.name),
                ticket_types::description.eq(&ticket_type.description),
                ticket_types::price_amount.eq(ticket_type.price_amount),
                ticket_types::currency.eq(&ticket_type.currency),
                ticket_types::quantity.eq(ticket_type.quantity),
                ticket_types::sales_start_at.eq(ticket_type.sales_start_at),
                ticket_types::sales_end_at.eq(ticket_type.sales_end_at),
                ticket_types::min_per_order.eq(ticket_type.min_per_order),
                ticket_types::max_per_order.eq(ticket_type.max_per_order),
                ticket_types::hidden.eq(ticket_type.hidden),
                ticket_types::sections.eq(&ticket_type.sections),
                ticket_types::updated_at.eq(diesel::dsl::now),
            ))
            .returning(TicketType::as_returning())
            .get_result(conn)
            .await?;
        let what = Action::on_sales("ticket_type.update", "ticket_type", id, event.id);
        let after = audit::ticket_type_fields(&updated);
        audit::record(conn, viewer, what, Some(before), Some(after)).await?;
        Ok(Committed::unchanged(updated))
    })
    .await
}

/// The event's ticket types the viewer may see, in the order they were created: hidden ones
/// only to its organizer and admins, or when `access_code` is a code that unlocks them.
pub async fn visible_ticket_types(
    conn: &mut AsyncPgConnection,
    viewer: Option<&Viewer>,
    event: &Event,
    access_code: Option<&str>,
) -> AppResult<Vec<TicketType>> {
    let all: Vec<TicketType> = ticket_types::table
        .filter(ticket_types::event_id.eq(event.id))
        .select(TicketType::as_select())
        .order((ticket_types::created_at, ticket_types::id))
        .load(conn)
        .await?;
    if manages(viewer, event) || all.iter().all(|t| !t.hidden) {
        return Ok(all);
    }
    let unlocked = match access_code {
        Some(code) => match find_code(conn, event.id, code).await? {
            Some(promo)
                if promo.unlocks_hidden && super::within(promo.valid_from, promo.valid_until) =>
            {
                Some(code_types(conn, promo.id).await?)
            }
            _ => None,
        },
        None => None,
    };
    Ok(all
        .into_iter()
        .filter(|t| {
            !t.hidden
                || unlocked
                    .as_ref()
                    .is_some_and(|types| types.is_empty() || types.contains(&t.id))
        })
        .collect())
}

pub async fn ticket_types_by_id(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> AppResult<std::collections::HashMap<Uuid, TicketType>> {
    use crate::domain::rows::rows_by_id;
    Ok(rows_by_id!(conn, ticket_types, TicketType, ids))
}

pub async fn create_quota(
    conn: &mut AsyncPgConnection,
    viewer: &Viewer,
    event_id: Uuid,
    name: String,
    size: i32,
    ticket_type_ids: Vec<Uuid>,
) -> AppResult<Quota> {
    let name = required_text("name", &name, 200)?;
    if size < 0 {
        return Err(bad(
            "size",
            "INVALID_SIZE",
            "a quota's size cannot be negative",
        ));
    }
    if ticket_type_ids.is_empty() {
        return Err(bad(
            "ticketTypeIds",
            "NO_TICKET_TYPES",
            "a quota counts at least one ticket type",
        ));
    }
    let mut ids = ticket_type_ids;
    ids.sort_unstable();
    ids.dedup();
    let ids = &ids;
    conn.transaction(async move |conn| {
        let event = lock_event(conn, event_id).await?;
        ensure_manager(viewer, &event)?;
        let stock = Stock::load(conn, event_id).await?;
        let mut taken = 0;
        for id in ids {
            let Some(ticket_type) = stock.types.get(id) else {
                return Err(AppError::NotFound("ticket type"));
            };
            taken += ticket_type.held + ticket_type.sold;
        }
        let held: i32 = ids.iter().map(|id| stock.types[id].held).sum();
        if taken > size {
            return Err(bad(
                "size",
                "QUOTA_BELOW_SOLD",
                format!("{taken} tickets of these types are sold or held already"),
            ));
        }
        let quota = Quota {
            id: Uuid::new_v4(),
            event_id,
            name,
            size,
            available: size - taken,
            held,
            sold: taken - held,
            created_at: Utc::now(),
        };
        let quota: Quota = diesel::insert_into(quotas::table)
            .values(&quota)
            .returning(Quota::as_returning())
            .get_result(conn)
            .await?;
        let links: Vec<_> = ids
            .iter()
            .map(|id| {
                (
                    quota_ticket_types::quota_id.eq(quota.id),
                    quota_ticket_types::ticket_type_id.eq(*id),
                )
            })
            .collect();
        diesel::insert_into(quota_ticket_types::table)
            .values(&links)
            .execute(conn)
            .await?;
        let what = Action::on_sales("quota.create", "quota", quota.id, event_id);
        audit::record(
            conn,
            viewer,
            what,
            None,
            Some(audit::quota_fields(&quota, ids)),
        )
        .await?;
        Ok(quota)
    })
    .await
}

pub async fn event_quotas(conn: &mut AsyncPgConnection, event_id: Uuid) -> AppResult<Vec<Quota>> {
    Ok(quotas::table
        .filter(quotas::event_id.eq(event_id))
        .select(Quota::as_select())
        .order((quotas::created_at, quotas::id))
        .load(conn)
        .await?)
}

pub async fn quota_types(conn: &mut AsyncPgConnection, quota_id: Uuid) -> AppResult<Vec<Uuid>> {
    Ok(quota_ticket_types::table
        .filter(quota_ticket_types::quota_id.eq(quota_id))
        .select(quota_ticket_types::ticket_type_id)
        .load(conn)
        .await?)
}

pub struct PaymentSettings {
    pub provider: Option<Provider>,
    pub payment_window_days: Option<i32>,
    /// `Some(None)` clears it (buyers may not cancel).
    pub refund_until: Option<Option<DateTime<Utc>>>,
}

/// How the event is paid for. Stripe only when this instance is configured for it.
pub async fn update_payment_settings(
    conn: &mut AsyncPgConnection,
    viewer: &Viewer,
    event_id: Uuid,
    settings: PaymentSettings,
    stripe_configured: bool,
) -> AppResult<EventSales> {
    if settings.provider == Some(Provider::Stripe) && !stripe_configured {
        return Err(bad(
            "paymentProvider",
            "PROVIDER_NOT_CONFIGURED",
            "this server is not configured for Stripe",
        ));
    }
    if settings
        .payment_window_days
        .is_some_and(|days| !(1..=60).contains(&days))
    {
        return Err(bad(
            "paymentWindowDays",
            "INVALID_PAYMENT_WINDOW",
            "paymentWindowDays is 1 to 60",
        ));
    }
    let settings = &settings;
    conn.transaction(async move |conn| {
        let event = lock_event(conn, event_id).await?;
        ensure_manager(viewer, &event)?;
        let current = event_sales(conn, event_id).await?;
        let refund_until = settings.refund_until.unwrap_or(current.refund_until);
        let updated = diesel::update(events::table.find(event_id))
            .set((
                events::payment_provider.eq(settings.provider.unwrap_or(current.payment_provider)),
                events::payment_window_days.eq(settings
                    .payment_window_days
                    .unwrap_or(current.payment_window_days)),
                events::refund_until.eq(refund_until),
                events::updated_at.eq(diesel::dsl::now),
            ))
            .returning(EventSales::as_returning())
            .get_result(conn)
            .await?;
        let (old, new) = (
            audit::payment_settings_fields(&current),
            audit::payment_settings_fields(&updated),
        );
        audit::record(
            conn,
            viewer,
            Action::on_event("event.payment_settings", event_id),
            Some(old),
            Some(new),
        )
        .await?;
        Ok(updated)
    })
    .await
}
