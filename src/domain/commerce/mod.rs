//! Selling tickets for money: what an organizer sets up ([`catalog`]: ticket types, quotas,
//! promo codes, how the event is paid for), the buyer's orders ([`orders`]), what a payment
//! does to an order ([`payments`]), and refunds ([`refunds`]).
//!
//! Every write locks the event first ([`super::sale_rules::lock_event`]) and moves seats with
//! the hold machinery and the [`super::inventory`], tickets with the [`super::stock`]: an
//! order's seats are one hold until it is paid, then one booking per line. Nothing here calls
//! a payment provider: the caller (`crate::checkout`) creates the intent or the refund between
//! two of these transactions, never inside one.
//!
//! A command module (the top layer): imports the layers below, never another command.

pub mod catalog;
pub mod codes;
pub mod listing;
pub mod orders;
pub mod payments;
pub mod refunds;

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use rand::Rng;
use uuid::Uuid;

use super::Viewer;
use super::rows::OrNotFound;
use super::sale_rules::visible_to;
use crate::db::commerce::{EventSales, Order};
use crate::db::models::Event;
use crate::db::schema::{events, orders as order_rows};
use crate::error::{AppError, AppResult};

/// Most minor units one price or fixed discount may be: what GraphQL's `Int` carries.
pub(crate) const MAX_PRICE: i64 = i32::MAX as i64;

/// Only the event's organizer and admins set up its sales and manage its orders.
pub(crate) fn ensure_manager(viewer: &Viewer, event: &Event) -> AppResult<()> {
    if viewer.is_admin() || (viewer.can_organize() && event.organizer_id == viewer.id()) {
        Ok(())
    } else if !visible_to(event, Some(viewer)) {
        Err(AppError::NotFound("event"))
    } else {
        Err(AppError::Forbidden(
            "only the event's organizer or an admin can do this",
        ))
    }
}

/// Whether the viewer manages the event (sees hidden types, every order).
pub fn manages(viewer: Option<&Viewer>, event: &Event) -> bool {
    viewer.is_some_and(|v| v.is_admin() || v.id() == event.organizer_id)
}

pub async fn event_sales(conn: &mut AsyncPgConnection, event_id: Uuid) -> AppResult<EventSales> {
    events::table
        .find(event_id)
        .select(EventSales::as_select())
        .first(conn)
        .await
        .or_not_found("event")
}

pub async fn find_order(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<Order> {
    order_rows::table
        .find(id)
        .select(Order::as_select())
        .first(conn)
        .await
        .or_not_found("order")
}

/// A well-formed ISO 4217 code of a currency in use, upper-cased.
pub fn check_currency(code: &str) -> AppResult<String> {
    let upper = code.trim().to_ascii_uppercase();
    if upper.len() == 3 && iso_currency::Currency::from_code(&upper).is_some() {
        Ok(upper)
    } else {
        Err(AppError::BadUserInput {
            message: format!("{code:?} is not an ISO 4217 currency code"),
            field: Some("currency"),
            reason: Some("UNKNOWN_CURRENCY"),
        })
    }
}

/// A ticket's code: 20 characters of an alphabet without look-alikes, about 100 bits from the
/// OS's generator, so that nobody can guess another's; unique by `tickets_code_key`.
pub(crate) fn ticket_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..20)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Whether a ticket type or promo code window `[from, until)` contains now.
pub(crate) fn within(
    from: Option<chrono::DateTime<Utc>>,
    until: Option<chrono::DateTime<Utc>>,
) -> bool {
    let now = Utc::now();
    from.is_none_or(|from| now >= from) && until.is_none_or(|until| now < until)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_are_iso_4217_codes_in_any_case() {
        assert_eq!(check_currency("eur").unwrap(), "EUR");
        assert_eq!(check_currency("JPY").unwrap(), "JPY");
        for bad in ["", "EU", "EURO", "XYZ", "€"] {
            let error = check_currency(bad).unwrap_err();
            assert_eq!(error.code(), "BAD_USER_INPUT", "{bad}");
        }
    }

    #[test]
    fn ticket_codes_are_long_and_different() {
        let a = ticket_code();
        let b = ticket_code();
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
