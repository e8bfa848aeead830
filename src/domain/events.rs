use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::Viewer;
use super::pagination::{Page, PageRequest};
use crate::db::models::{Booking, BookingStatus, Event, EventStatus};
use crate::db::schema::{bookings, events};
use crate::error::{AppError, AppResult};

pub const DEFAULT_MAX_PER_BOOKING: i32 = 10;
pub const MAX_CAPACITY: i32 = 1_000_000;

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text);

#[derive(Debug, Default, Clone)]
pub struct EventFilter {
    pub category: Option<String>,
    pub search: Option<String>,
    pub starts_after: Option<DateTime<Utc>>,
    pub starts_before: Option<DateTime<Utc>>,
    /// `None` lists published events only: cancelled ones are reached by id or asked for.
    pub status: Option<EventStatus>,
}

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub title: String,
    pub description: Option<String>,
    pub category: String,
    pub venue: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub capacity: i32,
    pub max_per_booking: Option<i32>,
}

/// A partial update: `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct EventPatch {
    pub title: Option<String>,
    pub description: Option<Option<String>>,
    pub category: Option<String>,
    pub venue: Option<String>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub capacity: Option<i32>,
    pub max_per_booking: Option<i32>,
}

/// Escapes LIKE wildcards so a search for "100%" means the text "100%".
fn like_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

const MAX_FILTER_LEN: usize = 200;

pub async fn list_events(
    conn: &mut AsyncPgConnection,
    filter: &EventFilter,
    page: PageRequest,
) -> AppResult<Page<Event>> {
    for (field, value) in [("category", &filter.category), ("search", &filter.search)] {
        if let Some(value) = value {
            // Longer than any title, venue or category: a huge pattern only makes the scan slow.
            if value.chars().count() > MAX_FILTER_LEN {
                return Err(AppError::bad_input(
                    field,
                    format!("{field} must be at most {MAX_FILTER_LEN} characters"),
                ));
            }
            reject_control_chars(field, value, false)?;
        }
    }
    let mut query = events::table
        .select(Event::as_select())
        .filter(events::status.eq(filter.status.unwrap_or(EventStatus::Published)))
        .into_boxed();
    if let Some(category) = filter.category.as_deref().map(str::trim) {
        query = query.filter(lower(events::category).eq(category.to_lowercase()));
    }
    if let Some(search) = filter
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let pattern = like_pattern(search);
        query = query.filter(
            events::title
                .ilike(pattern.clone())
                .or(events::venue.ilike(pattern.clone()))
                .or(events::description.ilike(pattern)),
        );
    }
    if let Some(after) = filter.starts_after {
        query = query.filter(events::starts_at.gt(after));
    }
    if let Some(before) = filter.starts_before {
        query = query.filter(events::starts_at.lt(before));
    }
    if let Some(cursor) = page.after {
        query = query.filter(
            events::starts_at.gt(cursor.at).or(events::starts_at
                .eq(cursor.at)
                .and(events::id.gt(cursor.id))),
        );
    }
    let rows = query
        .order((events::starts_at.asc(), events::id.asc()))
        .limit(page.limit())
        .load(conn)
        .await?;
    Ok(page.finish(rows))
}

pub async fn find_event(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<Option<Event>> {
    Ok(events::table
        .find(id)
        .select(Event::as_select())
        .first(conn)
        .await
        .optional()?)
}

pub async fn events_by_id(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> QueryResult<std::collections::HashMap<Uuid, Event>> {
    let rows: Vec<Event> = events::table
        .filter(events::id.eq_any(ids))
        .select(Event::as_select())
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(|event| (event.id, event)).collect())
}

/// Control characters have no place in a title or a filter, and PostgreSQL refuses NUL outright.
pub(super) fn reject_control_chars(
    field: &'static str,
    value: &str,
    allow_newlines: bool,
) -> AppResult<()> {
    let bad = |c: char| c.is_control() && !(allow_newlines && matches!(c, '\n' | '\r' | '\t'));
    if value.chars().any(bad) {
        return Err(AppError::bad_input(
            field,
            format!("{field} contains control characters"),
        ));
    }
    Ok(())
}

fn required_text(field: &'static str, value: &str, max: usize) -> AppResult<String> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > max {
        return Err(AppError::bad_input(
            field,
            format!("{field} must be 1 to {max} characters"),
        ));
    }
    reject_control_chars(field, value, false)?;
    Ok(value.to_owned())
}

fn optional_text(value: Option<String>) -> AppResult<Option<String>> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) if text.chars().count() > 5000 => Err(AppError::bad_input(
            "description",
            "description must be at most 5000 characters",
        )),
        Some(text) => {
            reject_control_chars("description", text, true)?;
            Ok(Some(text.to_owned()))
        }
    }
}

fn check_capacity(capacity: i32) -> AppResult<()> {
    if !(1..=MAX_CAPACITY).contains(&capacity) {
        return Err(AppError::bad_input(
            "capacity",
            format!("capacity must be 1 to {MAX_CAPACITY}"),
        ));
    }
    Ok(())
}

fn check_max_per_booking(max: i32) -> AppResult<()> {
    if !(1..=100).contains(&max) {
        return Err(AppError::bad_input(
            "maxPerBooking",
            "maxPerBooking must be 1 to 100",
        ));
    }
    Ok(())
}

fn check_schedule(starts_at: DateTime<Utc>, ends_at: DateTime<Utc>) -> AppResult<()> {
    if starts_at <= Utc::now() {
        return Err(AppError::bad_input(
            "startsAt",
            "startsAt must be in the future",
        ));
    }
    if ends_at < starts_at {
        return Err(AppError::bad_input(
            "endsAt",
            "endsAt must not be before startsAt",
        ));
    }
    Ok(())
}

pub async fn create_event(
    conn: &mut AsyncPgConnection,
    actor: &Viewer,
    new: NewEvent,
) -> AppResult<Event> {
    if !actor.can_organize() {
        return Err(AppError::Forbidden(
            "only organizers and admins can create events",
        ));
    }
    check_capacity(new.capacity)?;
    let max_per_booking = new.max_per_booking.unwrap_or(DEFAULT_MAX_PER_BOOKING);
    check_max_per_booking(max_per_booking)?;
    check_schedule(new.starts_at, new.ends_at)?;
    let now = Utc::now();
    let event = Event {
        id: Uuid::new_v4(),
        organizer_id: actor.id(),
        title: required_text("title", &new.title, 200)?,
        description: optional_text(new.description)?,
        category: required_text("category", &new.category, 50)?,
        venue: required_text("venue", &new.venue, 200)?,
        starts_at: new.starts_at,
        ends_at: new.ends_at,
        capacity: new.capacity,
        seats_available: new.capacity,
        max_per_booking,
        status: EventStatus::Published,
        version: 1,
        created_at: now,
        updated_at: now,
    };
    Ok(diesel::insert_into(events::table)
        .values(&event)
        .returning(Event::as_returning())
        .get_result(conn)
        .await?)
}

/// Locks the event row for a change of its inventory. Every transaction that touches both an
/// event and its bookings takes this lock first, so they always lock in the same order.
/// `FOR NO KEY UPDATE` still lets concurrent booking inserts check their foreign key.
pub(super) async fn lock_event(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<Event> {
    events::table
        .find(id)
        .select(Event::as_select())
        .for_no_key_update()
        .first(conn)
        .await
        .optional()?
        .ok_or(AppError::NotFound("event"))
}

fn ensure_can_manage(actor: &Viewer, event: &Event) -> AppResult<()> {
    if actor.is_admin() || (actor.can_organize() && event.organizer_id == actor.id()) {
        Ok(())
    } else {
        Err(AppError::Forbidden(
            "only the event's organizer or an admin can do this",
        ))
    }
}

pub async fn update_event(
    conn: &mut AsyncPgConnection,
    actor: &Viewer,
    id: Uuid,
    patch: EventPatch,
) -> AppResult<Event> {
    if !actor.can_organize() {
        return Err(AppError::Forbidden(
            "only organizers and admins can update events",
        ));
    }
    conn.transaction(async move |conn| {
        let current = lock_event(conn, id).await?;
        ensure_can_manage(actor, &current)?;
        if current.status == EventStatus::Cancelled {
            return Err(AppError::not_possible(
                "EVENT_CANCELLED",
                "a cancelled event cannot be changed",
            ));
        }
        let starts_at = patch.starts_at.unwrap_or(current.starts_at);
        let ends_at = patch.ends_at.unwrap_or(current.ends_at);
        if patch.starts_at.is_some() || patch.ends_at.is_some() {
            check_schedule(starts_at, ends_at)?;
        }
        let capacity = patch.capacity.unwrap_or(current.capacity);
        check_capacity(capacity)?;
        let booked = current.capacity - current.seats_available;
        if capacity < booked {
            return Err(AppError::bad_input(
                "capacity",
                format!("capacity cannot go below the {booked} seats already booked"),
            ));
        }
        let max_per_booking = patch.max_per_booking.unwrap_or(current.max_per_booking);
        check_max_per_booking(max_per_booking)?;
        let title = match &patch.title {
            Some(title) => required_text("title", title, 200)?,
            None => current.title.clone(),
        };
        let category = match &patch.category {
            Some(category) => required_text("category", category, 50)?,
            None => current.category.clone(),
        };
        let venue = match &patch.venue {
            Some(venue) => required_text("venue", venue, 200)?,
            None => current.venue.clone(),
        };
        let description = match patch.description {
            Some(description) => optional_text(description)?,
            None => current.description.clone(),
        };
        Ok(diesel::update(events::table.find(id))
            .set((
                events::title.eq(title),
                events::description.eq(description),
                events::category.eq(category),
                events::venue.eq(venue),
                events::starts_at.eq(starts_at),
                events::ends_at.eq(ends_at),
                events::capacity.eq(capacity),
                events::seats_available.eq(capacity - booked),
                events::max_per_booking.eq(max_per_booking),
                events::version.eq(events::version + 1),
                events::updated_at.eq(diesel::dsl::now),
            ))
            .returning(Event::as_returning())
            .get_result(conn)
            .await?)
    })
    .await
}

/// The outcome of `cancel_event`: the event, and whether this call changed it (a repeated
/// cancellation returns the event untouched).
pub struct CancelledEvent {
    pub event: Event,
    pub changed: bool,
    /// The bookings this call cancelled, for telling their owners.
    pub bookings: Vec<Booking>,
}

/// Cancels the event and, in the same transaction, every confirmed booking of it.
pub async fn cancel_event(
    conn: &mut AsyncPgConnection,
    actor: &Viewer,
    id: Uuid,
) -> AppResult<CancelledEvent> {
    conn.transaction(async move |conn| {
        let current = lock_event(conn, id).await?;
        ensure_can_manage(actor, &current)?;
        if current.status == EventStatus::Cancelled {
            return Ok(CancelledEvent {
                event: current,
                changed: false,
                bookings: Vec::new(),
            });
        }
        let bookings: Vec<Booking> = diesel::update(
            bookings::table
                .filter(bookings::event_id.eq(id))
                .filter(bookings::status.eq(BookingStatus::Confirmed)),
        )
        .set((
            bookings::status.eq(BookingStatus::Cancelled),
            bookings::cancelled_at.eq(diesel::dsl::now),
        ))
        .returning(Booking::as_returning())
        .get_results(conn)
        .await?;
        let event = diesel::update(events::table.find(id))
            .set((
                events::status.eq(EventStatus::Cancelled),
                events::seats_available.eq(events::capacity),
                events::version.eq(events::version + 1),
                events::updated_at.eq(diesel::dsl::now),
            ))
            .returning(Event::as_returning())
            .get_result(conn)
            .await?;
        Ok(CancelledEvent {
            event,
            changed: true,
            bookings,
        })
    })
    .await
}

/// Why an event cannot be booked right now, if it cannot.
pub(super) fn unbookable_reason(event: &Event) -> Option<AppError> {
    if event.status == EventStatus::Cancelled {
        Some(AppError::not_possible(
            "EVENT_CANCELLED",
            "this event has been cancelled",
        ))
    } else if event.starts_at <= Utc::now() {
        Some(AppError::not_possible(
            "EVENT_STARTED",
            "this event has already started",
        ))
    } else {
        None
    }
}
