//! The rules of sale every command asks under the event's row lock, so that their answers
//! agree: locking the event ([`lock_event`], the first lock of every transaction that moves its
//! seats), who may see it and buy from it ([`visible_to`], [`check_for_sale_to`]), why it
//! cannot be sold right now ([`unbookable_reason`]: its status, its start, its sales window),
//! and what a request for seats may ask ([`check_sellable`], [`requested_quantity`],
//! [`check_idempotency_key`]).
//!
//! The bottom layer of the domain, with [`super::user_limits`] and [`super::text`]: it imports
//! no other domain module.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::Viewer;
use super::rows::OrNotFound;
use crate::db::models::{Event, EventStatus};
use crate::db::schema::events;
use crate::error::{AppError, AppResult};

/// Locks the event row for a change of its inventory. Every transaction that touches both an
/// event and its bookings takes this lock first, so they always lock in the same order.
/// `FOR NO KEY UPDATE` still lets concurrent booking inserts check their foreign key.
pub(crate) async fn lock_event(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<Event> {
    events::table
        .find(id)
        .select(Event::as_select())
        .for_no_key_update()
        .first(conn)
        .await
        .or_not_found("event")
}

/// Locks the event for a sale to `user_id`: a booking, a hold, a place in line or an RSVP.
/// Someone else's draft answers exactly as an id that does not exist, so that no error tells
/// a stranger it exists; its organizer is told that it is not published. (A draft is on sale
/// to nobody, admins included, so they are answered as strangers here.)
pub(crate) async fn lock_event_for(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    user_id: Uuid,
) -> AppResult<Event> {
    let event = lock_event(conn, id).await?;
    check_for_sale_to(&event, user_id)?;
    Ok(event)
}

/// The check of [`lock_event_for`], for an event already locked.
pub(crate) fn check_for_sale_to(event: &Event, user_id: Uuid) -> AppResult<()> {
    if hidden(event) && event.organizer_id != user_id {
        return Err(AppError::NotFound("event"));
    }
    Ok(())
}

/// Whether the event may be shown to `viewer` (`None`: anonymous): a draft, and a draft that
/// was cancelled before it was ever published, only to its organizer and to admins; anything
/// else to everyone.
pub fn visible_to(event: &Event, viewer: Option<&Viewer>) -> bool {
    !hidden(event)
        || viewer.is_some_and(|viewer| viewer.is_admin() || viewer.id() == event.organizer_id)
}

fn hidden(event: &Event) -> bool {
    match event.status {
        EventStatus::Draft => true,
        EventStatus::Cancelled => event.published_at.is_none(),
        EventStatus::Published | EventStatus::Completed => false,
    }
}

/// Whether the event can be booked right now: published, not started, inside its sales window.
pub fn on_sale(event: &Event) -> bool {
    unbookable_reason(event).is_none()
}

/// Why an event cannot be booked (or held, or joined on its waiting list) right now, if it
/// cannot.
pub(crate) fn unbookable_reason(event: &Event) -> Option<AppError> {
    unbookable_reason_at(event, Utc::now())
}

/// [`unbookable_reason`] as of `now`.
fn unbookable_reason_at(event: &Event, now: DateTime<Utc>) -> Option<AppError> {
    match event.status {
        EventStatus::Cancelled => {
            return Some(AppError::not_possible(
                "EVENT_CANCELLED",
                "this event has been cancelled",
            ));
        }
        EventStatus::Draft => {
            return Some(AppError::not_possible(
                "EVENT_NOT_PUBLISHED",
                "this event is not published yet",
            ));
        }
        EventStatus::Completed => {
            return Some(AppError::not_possible(
                "EVENT_STARTED",
                "this event is over",
            ));
        }
        EventStatus::Published => {}
    }
    if event.starts_at <= now {
        return Some(AppError::not_possible(
            "EVENT_STARTED",
            "this event has already started",
        ));
    }
    if let Some(start) = event.sales_start_at
        && now < start
    {
        return Some(AppError::not_possible(
            "SALES_NOT_STARTED",
            format!("sales open at {}", start.to_rfc3339()),
        ));
    }
    if let Some(end) = event.sales_end_at
        && now >= end
    {
        return Some(AppError::not_possible(
            "SALES_ENDED",
            format!("sales closed at {}", end.to_rfc3339()),
        ));
    }
    None
}

/// Most seats one request may name.
pub const MAX_SEAT_IDS: usize = 100;

/// The quantity a request for seats comes to: the seats named, or `quantity` (default 1).
pub fn requested_quantity(quantity: Option<i32>, seat_ids: &[Uuid]) -> AppResult<i32> {
    if seat_ids.is_empty() {
        let quantity = quantity.unwrap_or(1);
        if quantity < 1 {
            return Err(AppError::bad_input(
                "quantity",
                "quantity must be at least 1",
            ));
        }
        return Ok(quantity);
    }
    if seat_ids.len() > MAX_SEAT_IDS {
        return Err(AppError::bad_input(
            "seatIds",
            format!("at most {MAX_SEAT_IDS} seats per request"),
        ));
    }
    let mut unique = seat_ids.to_vec();
    unique.sort_unstable();
    unique.dedup();
    if unique.len() != seat_ids.len() {
        return Err(AppError::bad_input("seatIds", "a seat is named twice"));
    }
    let count = seat_ids.len() as i32;
    match quantity {
        Some(quantity) if quantity != count => Err(AppError::bad_input(
            "quantity",
            "quantity must match the number of seatIds",
        )),
        _ => Ok(count),
    }
}

/// Why a request for seats of this event cannot go on: the event is not on sale, or it is a
/// free event (which takes RSVPs), or the request is larger than one booking may be.
pub(crate) fn check_sellable(event: &Event, quantity: i32) -> AppResult<()> {
    if let Some(reason) = unbookable_reason(event) {
        return Err(reason);
    }
    if event.free {
        return Err(AppError::not_possible(
            "FREE_EVENT",
            "this event is free: answer with rsvp instead",
        ));
    }
    if event.currency.is_some() {
        return Err(AppError::not_possible(
            "ORDERS_ONLY",
            "this event sells ticket types: order them with placeOrder",
        ));
    }
    if quantity > event.max_per_booking {
        return Err(AppError::bad_input(
            "quantity",
            format!("at most {} seats per booking", event.max_per_booking),
        ));
    }
    Ok(())
}

pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;

/// An idempotency key is 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] bytes of printable text.
pub(crate) fn check_idempotency_key(key: Option<&str>) -> AppResult<()> {
    if let Some(key) = key
        && (key.is_empty()
            || key.len() > MAX_IDEMPOTENCY_KEY_LEN
            || key.chars().any(char::is_control))
    {
        return Err(AppError::bad_input(
            "idempotencyKey",
            format!("idempotencyKey must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes"),
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::Duration;

    use super::*;

    /// A published, paid event starting in a week, with no sales window.
    pub(crate) fn event() -> Event {
        let now = Utc::now();
        Event {
            id: Uuid::new_v4(),
            organizer_id: Uuid::new_v4(),
            title: "Test".into(),
            description: None,
            category: "Music".into(),
            venue: "Hall".into(),
            starts_at: now + Duration::days(7),
            ends_at: now + Duration::days(7) + Duration::hours(3),
            capacity: 100,
            seats_available: 100,
            max_per_booking: 10,
            status: EventStatus::Published,
            version: 1,
            created_at: now,
            updated_at: now,
            seats_held: 0,
            venue_id: None,
            free: false,
            sales_start_at: None,
            sales_end_at: None,
            max_per_user: None,
            hold_minutes: Event::DEFAULT_HOLD_MINUTES,
            offer_minutes: Event::DEFAULT_OFFER_MINUTES,
            published_at: Some(now),
            currency: None,
        }
    }

    fn reason(event: &Event, now: DateTime<Utc>) -> Option<&'static str> {
        unbookable_reason_at(event, now).map(|error| match error {
            AppError::BadUserInput { reason, .. } => reason.unwrap_or("BAD_USER_INPUT"),
            other => other.code(),
        })
    }

    #[test]
    fn a_published_event_inside_its_window_is_on_sale() {
        let mut event = event();
        let now = Utc::now();
        assert_eq!(reason(&event, now), None);
        event.sales_start_at = Some(now - Duration::hours(1));
        event.sales_end_at = Some(now + Duration::hours(1));
        assert_eq!(reason(&event, now), None);
    }

    #[test]
    fn each_status_but_published_says_why_it_cannot_be_sold() {
        let now = Utc::now();
        for (status, why) in [
            (EventStatus::Cancelled, "EVENT_CANCELLED"),
            (EventStatus::Draft, "EVENT_NOT_PUBLISHED"),
            (EventStatus::Completed, "EVENT_STARTED"),
        ] {
            let event = Event { status, ..event() };
            assert_eq!(reason(&event, now), Some(why), "{status:?}");
        }
    }

    #[test]
    fn sales_close_when_the_event_starts() {
        let event = event();
        assert_eq!(reason(&event, event.starts_at), Some("EVENT_STARTED"));
        let just_before = event.starts_at - Duration::seconds(1);
        assert_eq!(reason(&event, just_before), None);
    }

    #[test]
    fn the_sales_window_opens_at_its_start_and_closes_at_its_end() {
        let now = Utc::now();
        let start = now + Duration::hours(1);
        let end = now + Duration::hours(2);
        let event = Event {
            sales_start_at: Some(start),
            sales_end_at: Some(end),
            ..event()
        };
        let before = start - Duration::seconds(1);
        assert_eq!(reason(&event, before), Some("SALES_NOT_STARTED"));
        assert_eq!(reason(&event, start), None);
        assert_eq!(reason(&event, end - Duration::seconds(1)), None);
        assert_eq!(reason(&event, end), Some("SALES_ENDED"));
    }

    #[test]
    fn a_draft_is_hidden_from_everyone_but_its_organizer() {
        let draft = Event {
            status: EventStatus::Draft,
            published_at: None,
            ..event()
        };
        assert!(check_for_sale_to(&draft, draft.organizer_id).is_ok());
        let stranger = check_for_sale_to(&draft, Uuid::new_v4()).unwrap_err();
        assert_eq!(stranger.code(), "NOT_FOUND");
        assert!(!visible_to(&draft, None));
        // Cancelled before it was ever published: as hidden as a draft.
        let cancelled_draft = Event {
            status: EventStatus::Cancelled,
            ..draft.clone()
        };
        assert!(!visible_to(&cancelled_draft, None));
        let cancelled = Event {
            status: EventStatus::Cancelled,
            ..event()
        };
        assert!(visible_to(&cancelled, None));
    }

    #[test]
    fn a_request_is_sellable_up_to_one_bookings_worth_of_a_paid_event() {
        let event = event();
        assert!(check_sellable(&event, 10).is_ok());
        assert_eq!(
            check_sellable(&event, 11).unwrap_err().code(),
            "BAD_USER_INPUT"
        );
        let free = Event {
            free: true,
            ..event.clone()
        };
        assert!(check_sellable(&free, 1).is_err());
    }

    #[test]
    fn a_quantity_comes_from_the_seats_named_or_defaults_to_one() {
        assert_eq!(requested_quantity(None, &[]).unwrap(), 1);
        assert_eq!(requested_quantity(Some(3), &[]).unwrap(), 3);
        assert!(requested_quantity(Some(0), &[]).is_err());
        let seats = [Uuid::new_v4(), Uuid::new_v4()];
        assert_eq!(requested_quantity(None, &seats).unwrap(), 2);
        assert!(requested_quantity(Some(3), &seats).is_err());
        assert!(requested_quantity(None, &[seats[0], seats[0]]).is_err());
    }

    #[test]
    fn an_idempotency_key_is_short_printable_text() {
        assert!(check_idempotency_key(None).is_ok());
        assert!(check_idempotency_key(Some("key-1")).is_ok());
        assert!(check_idempotency_key(Some("")).is_err());
        assert!(check_idempotency_key(Some("a\u{0}b")).is_err());
        let long = "k".repeat(MAX_IDEMPOTENCY_KEY_LEN + 1);
        assert!(check_idempotency_key(Some(&long)).is_err());
    }
}
