//! Events and their rules of sale: creating, updating, publishing, cancelling and completing
//! them; who may see one (a draft, and a draft cancelled before it was ever published, only
//! its organizer and admins); whether one is on sale; and how many seats one user may have
//! (`max_per_user`) or hold at once ([`hold_cap`]). One file because every other domain module
//! asks these questions under the event's row lock ([`lock_event`], [`lock_event_for`]), and
//! the answers must agree.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::Viewer;
use super::inventory::{Changes, Inventory};
use super::pagination::{Page, PageRequest};
use super::{holds, rsvp, seats, venues, waitlist};
use crate::db::models::{Booking, BookingStatus, Event, EventStatus, HoldStatus};
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
    /// Required for general admission; a seated event's capacity is its venue's seat count.
    pub capacity: Option<i32>,
    pub max_per_booking: Option<i32>,
    /// Seats come from this venue's layout.
    pub venue_id: Option<Uuid>,
    /// Free events take RSVPs instead of bookings.
    pub free: bool,
    /// Created as a draft, to publish later.
    pub draft: bool,
    pub sales_start_at: Option<DateTime<Utc>>,
    pub sales_end_at: Option<DateTime<Utc>>,
    pub max_per_user: Option<i32>,
    pub hold_minutes: Option<i32>,
    pub offer_minutes: Option<i32>,
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
    pub sales_start_at: Option<Option<DateTime<Utc>>>,
    pub sales_end_at: Option<Option<DateTime<Utc>>>,
    pub max_per_user: Option<Option<i32>>,
    pub hold_minutes: Option<i32>,
    pub offer_minutes: Option<i32>,
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

/// Lists events; `viewer` matters only for drafts and cancelled drafts: it sees its own (an
/// admin sees all), an anonymous caller none.
pub async fn list_events(
    conn: &mut AsyncPgConnection,
    viewer: Option<&Viewer>,
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
    let status = filter.status.unwrap_or(EventStatus::Published);
    let mut query = events::table
        .select(Event::as_select())
        .filter(events::status.eq(status))
        .into_boxed();
    if status == EventStatus::Draft {
        match viewer {
            None => return Ok(page.finish(Vec::new())),
            Some(viewer) if viewer.is_admin() => {}
            Some(viewer) => query = query.filter(events::organizer_id.eq(viewer.id())),
        }
    }
    // A cancelled draft stays as hidden as a draft.
    if status == EventStatus::Cancelled {
        let was_published = events::published_at.is_not_null();
        match viewer {
            None => query = query.filter(was_published),
            Some(viewer) if viewer.is_admin() => {}
            Some(viewer) => {
                query = query.filter(was_published.or(events::organizer_id.eq(viewer.id())));
            }
        }
    }
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

/// Most seats one user may have for an event, at most.
pub const MAX_PER_USER: i32 = 1000;
/// How long a checkout hold may keep seats, in minutes: a day.
pub const MAX_HOLD_MINUTES: i32 = 24 * 60;
/// How long a waiting-list offer may keep seats, in minutes: a week.
pub const MAX_OFFER_MINUTES: i32 = 7 * 24 * 60;

/// The sales window must be one a buyer can use: it opens before the event starts (bookings
/// close when it starts, so a window opening later would never be open), and it closes after
/// it opens and no later than the event ends. Either end may be left open.
fn check_sales_window(
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    sales_start_at: Option<DateTime<Utc>>,
    sales_end_at: Option<DateTime<Utc>>,
) -> AppResult<()> {
    if let Some(start) = sales_start_at
        && start >= starts_at
    {
        return Err(AppError::bad_input(
            "salesStartAt",
            "salesStartAt must be before startsAt",
        ));
    }
    if let Some(end) = sales_end_at {
        if sales_start_at.is_some_and(|start| end <= start) {
            return Err(AppError::bad_input(
                "salesEndAt",
                "salesEndAt must be after salesStartAt",
            ));
        }
        if end > ends_at {
            return Err(AppError::bad_input(
                "salesEndAt",
                "salesEndAt must not be after endsAt",
            ));
        }
    }
    Ok(())
}

/// The per-event limits, in the ranges the table's CHECK constraints allow (a violation there
/// would be an internal error). `maxPerUser` may be below `maxPerBooking`: the smaller wins.
fn check_limits(max_per_user: Option<i32>, hold_minutes: i32, offer_minutes: i32) -> AppResult<()> {
    if let Some(max) = max_per_user
        && !(1..=MAX_PER_USER).contains(&max)
    {
        return Err(AppError::bad_input(
            "maxPerUser",
            format!("maxPerUser must be 1 to {MAX_PER_USER}"),
        ));
    }
    if !(1..=MAX_HOLD_MINUTES).contains(&hold_minutes) {
        return Err(AppError::bad_input(
            "holdMinutes",
            format!("holdMinutes must be 1 to {MAX_HOLD_MINUTES}"),
        ));
    }
    if !(1..=MAX_OFFER_MINUTES).contains(&offer_minutes) {
        return Err(AppError::bad_input(
            "offerMinutes",
            format!("offerMinutes must be 1 to {MAX_OFFER_MINUTES}"),
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
    let capacity = match new.venue_id {
        Some(venue_id) => venues::seated_capacity(conn, venue_id, new.capacity).await?,
        None => new
            .capacity
            .ok_or_else(|| AppError::bad_input("capacity", "capacity is required"))?,
    };
    check_capacity(capacity)?;
    let max_per_booking = new.max_per_booking.unwrap_or(DEFAULT_MAX_PER_BOOKING);
    check_max_per_booking(max_per_booking)?;
    check_schedule(new.starts_at, new.ends_at)?;
    check_sales_window(
        new.starts_at,
        new.ends_at,
        new.sales_start_at,
        new.sales_end_at,
    )?;
    let hold_minutes = new.hold_minutes.unwrap_or(Event::DEFAULT_HOLD_MINUTES);
    let offer_minutes = new.offer_minutes.unwrap_or(Event::DEFAULT_OFFER_MINUTES);
    check_limits(new.max_per_user, hold_minutes, offer_minutes)?;
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
        capacity,
        seats_available: capacity,
        max_per_booking,
        status: if new.draft {
            EventStatus::Draft
        } else {
            EventStatus::Published
        },
        version: 1,
        created_at: now,
        updated_at: now,
        seats_held: 0,
        venue_id: new.venue_id,
        free: new.free,
        sales_start_at: new.sales_start_at,
        sales_end_at: new.sales_end_at,
        max_per_user: new.max_per_user,
        hold_minutes,
        offer_minutes,
        published_at: (!new.draft).then_some(now),
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
    } else if !visible_to(event, Some(actor)) {
        // Someone else's draft does not exist as far as this caller can tell.
        Err(AppError::NotFound("event"))
    } else {
        Err(AppError::Forbidden(
            "only the event's organizer or an admin can do this",
        ))
    }
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

/// Locks the event for a sale to `user_id`: a booking, a hold, a place in line or an RSVP.
/// Someone else's draft answers exactly as an id that does not exist, so that no error tells
/// a stranger it exists; its organizer is told that it is not published. (A draft is on sale
/// to nobody, admins included, so they are answered as strangers here.)
pub(super) async fn lock_event_for(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    user_id: Uuid,
) -> AppResult<Event> {
    let event = lock_event(conn, id).await?;
    check_for_sale_to(&event, user_id)?;
    Ok(event)
}

/// The check of [`lock_event_for`], for an event already locked.
pub(super) fn check_for_sale_to(event: &Event, user_id: Uuid) -> AppResult<()> {
    if hidden(event) && event.organizer_id != user_id {
        return Err(AppError::NotFound("event"));
    }
    Ok(())
}

/// Whether the event can be booked right now: published, not started, inside its sales window.
pub fn on_sale(event: &Event) -> bool {
    unbookable_reason(event).is_none()
}

pub async fn update_event(
    conn: &mut AsyncPgConnection,
    actor: &Viewer,
    id: Uuid,
    patch: EventPatch,
) -> AppResult<Changes> {
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
        if current.status == EventStatus::Completed {
            return Err(AppError::not_possible(
                "EVENT_COMPLETED",
                "a completed event cannot be changed",
            ));
        }
        let starts_at = patch.starts_at.unwrap_or(current.starts_at);
        let ends_at = patch.ends_at.unwrap_or(current.ends_at);
        if patch.starts_at.is_some() || patch.ends_at.is_some() {
            check_schedule(starts_at, ends_at)?;
        }
        let capacity = patch.capacity.unwrap_or(current.capacity);
        check_capacity(capacity)?;
        // Seats in bookings and in holds stay theirs; only free seats can go.
        let taken = current.capacity - current.seats_available;
        if capacity < taken {
            return Err(AppError::bad_input(
                "capacity",
                format!("capacity cannot go below the {taken} seats already booked or held"),
            ));
        }
        if capacity != current.capacity && current.venue_id.is_some() {
            return Err(AppError::bad_input(
                "capacity",
                "a seated event's capacity is its venue's seat count",
            ));
        }
        let sales_start_at = patch.sales_start_at.unwrap_or(current.sales_start_at);
        let sales_end_at = patch.sales_end_at.unwrap_or(current.sales_end_at);
        let max_per_user = patch.max_per_user.unwrap_or(current.max_per_user);
        let hold_minutes = patch.hold_minutes.unwrap_or(current.hold_minutes);
        let offer_minutes = patch.offer_minutes.unwrap_or(current.offer_minutes);
        // Checked only when one of its dates changes, so an event already under way can still
        // have its details corrected.
        if patch.starts_at.is_some()
            || patch.ends_at.is_some()
            || patch.sales_start_at.is_some()
            || patch.sales_end_at.is_some()
        {
            check_sales_window(starts_at, ends_at, sales_start_at, sales_end_at)?;
        }
        check_limits(max_per_user, hold_minutes, offer_minutes)?;
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
        let updated: Event = diesel::update(events::table.find(id))
            .set((
                (
                    events::title.eq(title),
                    events::description.eq(description),
                    events::category.eq(category),
                    events::venue.eq(venue),
                    events::starts_at.eq(starts_at),
                    events::ends_at.eq(ends_at),
                    events::capacity.eq(capacity),
                    events::seats_available.eq(capacity - taken),
                    events::max_per_booking.eq(max_per_booking),
                ),
                (
                    events::sales_start_at.eq(sales_start_at),
                    events::sales_end_at.eq(sales_end_at),
                    events::max_per_user.eq(max_per_user),
                    events::hold_minutes.eq(hold_minutes),
                    events::offer_minutes.eq(offer_minutes),
                    events::version.eq(events::version + 1),
                    events::updated_at.eq(diesel::dsl::now),
                ),
            ))
            .returning(Event::as_returning())
            .get_result(conn)
            .await?;
        let mut changes = Changes {
            previous_version: Some(current.version),
            ..Changes::default()
        };
        // More seats: the waiting list gets them first, in this transaction.
        let mut inventory = Inventory::new(updated.clone());
        waitlist::promote(conn, &mut inventory, &mut changes).await?;
        let event = inventory.save(conn, &mut changes).await?;
        changes.event = Some(event);
        Ok(changes)
    })
    .await
}

/// The outcome of `cancel_event`: the event, and whether this call changed it (a repeated
/// cancellation returns the event untouched).
pub struct CancelledEvent {
    pub event: Event,
    pub changed: bool,
    /// Everything this call changed: the bookings it cancelled, the holds it released and the
    /// waiting-list entries it closed, for telling their owners.
    pub changes: Changes,
}

/// Cancels the event and, in the same transaction, every confirmed booking and live hold of
/// it, closes its waiting list, and turns its GOING answers to NOT_GOING.
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
                changes: Changes::default(),
            });
        }
        // Its bookings were used: cancelling now would only rewrite history.
        if current.status == EventStatus::Completed {
            return Err(AppError::not_possible(
                "EVENT_COMPLETED",
                "a completed event cannot be cancelled",
            ));
        }
        let mut changes = Changes {
            previous_version: Some(current.version),
            ..Changes::default()
        };
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
        let ids: Vec<Uuid> = bookings.iter().map(|b| b.id).collect();
        seats::release_bookings(conn, &current, &ids, &mut changes).await?;
        changes.bookings = bookings;
        holds::end_all(conn, &current, HoldStatus::Released, &mut changes).await?;
        waitlist::close_all(conn, id, &mut changes).await?;
        rsvp::cancel_all(conn, id).await?;
        let event = diesel::update(events::table.find(id))
            .set((
                events::status.eq(EventStatus::Cancelled),
                events::seats_available.eq(events::capacity),
                events::seats_held.eq(0),
                events::version.eq(events::version + 1),
                events::updated_at.eq(diesel::dsl::now),
            ))
            .returning(Event::as_returning())
            .get_result(conn)
            .await?;
        changes.event = Some(event.clone());
        Ok(CancelledEvent {
            event,
            changed: true,
            changes,
        })
    })
    .await
}

/// The outcome of `publish_event`: the event, and whether this call changed it (publishing a
/// published event returns it untouched).
pub struct PublishedEvent {
    pub event: Event,
    pub changed: bool,
    pub changes: Changes,
}

/// Publishes a draft: from now on everyone sees it, and it is on sale inside its sales window.
pub async fn publish_event(
    conn: &mut AsyncPgConnection,
    actor: &Viewer,
    id: Uuid,
) -> AppResult<PublishedEvent> {
    conn.transaction(async move |conn| {
        let current = lock_event(conn, id).await?;
        ensure_can_manage(actor, &current)?;
        match current.status {
            EventStatus::Draft => {}
            EventStatus::Published => {
                return Ok(PublishedEvent {
                    event: current,
                    changed: false,
                    changes: Changes::default(),
                });
            }
            EventStatus::Cancelled => {
                return Err(AppError::not_possible(
                    "EVENT_CANCELLED",
                    "a cancelled event cannot be published",
                ));
            }
            EventStatus::Completed => {
                return Err(AppError::not_possible(
                    "EVENT_COMPLETED",
                    "a completed event cannot be published",
                ));
            }
        }
        // It could never be booked, and the sweeper would complete it at once.
        if current.starts_at <= Utc::now() {
            return Err(AppError::not_possible(
                "EVENT_STARTED",
                "this draft's start has passed: move its dates with updateEvent first",
            ));
        }
        let event = diesel::update(
            events::table
                .find(id)
                .filter(events::status.eq(EventStatus::Draft)),
        )
        .set((
            events::status.eq(EventStatus::Published),
            events::published_at.eq(Some(Utc::now())),
            events::version.eq(events::version + 1),
            events::updated_at.eq(diesel::dsl::now),
        ))
        .returning(Event::as_returning())
        .get_result(conn)
        .await?;
        let changes = Changes {
            event: Some(event.clone()),
            previous_version: Some(current.version),
            ..Changes::default()
        };
        Ok(PublishedEvent {
            event,
            changed: true,
            changes,
        })
    })
    .await
}

/// Completes up to `limit` published events that have ended, each in a transaction of its
/// own: the event becomes COMPLETED, its live holds expire (their seats go back to the free
/// pool, for the record) and its waiting list closes; confirmed bookings stay as they are.
/// Returns what changed, for publishing. Safe to run on several instances at once: the row
/// lock queues them and the status is checked again under it, so an event completes once.
/// Drafts and cancelled events are left alone. One event's failure is logged and does not
/// stop the others, whose changes are committed and must still be announced.
pub async fn complete_ended(conn: &mut AsyncPgConnection, limit: i64) -> AppResult<Vec<Changes>> {
    let ended: Vec<Uuid> = events::table
        .filter(events::status.eq(EventStatus::Published))
        .filter(events::ends_at.le(diesel::dsl::now))
        .order(events::ends_at.asc())
        .select(events::id)
        .limit(limit)
        .load(conn)
        .await?;
    let mut all = Vec::with_capacity(ended.len());
    for id in ended {
        match complete_event(conn, id).await {
            Ok(Some(changes)) => all.push(changes),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(event_id = %id, code = error.code(), message = %error.message(), "cannot complete an ended event");
            }
        }
    }
    Ok(all)
}

/// Completes one ended event, unless another instance got there first (`None`).
async fn complete_event(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<Option<Changes>> {
    conn.transaction(async move |conn| {
        let current = lock_event(conn, id).await?;
        let event: Option<Event> = diesel::update(
            events::table
                .find(id)
                .filter(events::status.eq(EventStatus::Published))
                .filter(events::ends_at.le(diesel::dsl::now)),
        )
        .set((
            events::status.eq(EventStatus::Completed),
            events::seats_available.eq(events::seats_available + events::seats_held),
            events::seats_held.eq(0),
            events::version.eq(events::version + 1),
            events::updated_at.eq(diesel::dsl::now),
        ))
        .returning(Event::as_returning())
        .get_result(conn)
        .await
        .optional()?;
        let Some(event) = event else {
            return Ok(None);
        };
        let mut changes = Changes {
            previous_version: Some(current.version),
            ..Changes::default()
        };
        holds::end_all(conn, &current, HoldStatus::Expired, &mut changes).await?;
        waitlist::close_all(conn, id, &mut changes).await?;
        changes.event = Some(event);
        Ok(Some(changes))
    })
    .await
}

/// Why an event cannot be booked (or held, or joined on its waiting list) right now, if it
/// cannot.
pub(super) fn unbookable_reason(event: &Event) -> Option<AppError> {
    let now = Utc::now();
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

/// Refuses a request that would give the user more than the event's `max_per_user` seats,
/// counting their confirmed bookings, live holds and the seats their place on the waiting list
/// waits for. Run under the event's lock, so two requests of one user cannot both pass.
pub(super) async fn check_user_limit(
    conn: &mut AsyncPgConnection,
    event: &Event,
    user_id: Uuid,
    quantity: i32,
) -> AppResult<()> {
    let Some(max) = event.max_per_user else {
        return Ok(());
    };
    let have = seats_of_user(conn, event.id, &[user_id])
        .await?
        .get(&user_id)
        .copied()
        .unwrap_or(0);
    if i64::from(quantity) + have > i64::from(max) {
        return Err(AppError::BadUserInput {
            message: format!(
                "at most {max} seats per person for this event; you already have {have}"
            ),
            field: Some("quantity"),
            reason: Some("LIMIT_PER_USER"),
        });
    }
    Ok(())
}

/// Seats each of `users` has or waits for at the event: in confirmed bookings, in live holds
/// (an offer is one) and in a place on the waiting list. Counting the place keeps an offer
/// within `max_per_user`: the seats were counted when the user joined, and no booking or hold
/// since could use them twice.
pub(super) async fn seats_of_user(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    users: &[Uuid],
) -> AppResult<std::collections::HashMap<Uuid, i64>> {
    use crate::db::models::WaitlistStatus;
    use crate::db::schema::{holds, waitlist_entries};
    let booked: Vec<(Uuid, Option<i64>)> = bookings::table
        .filter(bookings::event_id.eq(event_id))
        .filter(bookings::user_id.eq_any(users))
        .filter(bookings::status.eq(BookingStatus::Confirmed))
        .group_by(bookings::user_id)
        .select((bookings::user_id, diesel::dsl::sum(bookings::quantity)))
        .load(conn)
        .await?;
    let held: Vec<(Uuid, Option<i64>)> = holds::table
        .filter(holds::event_id.eq(event_id))
        .filter(holds::user_id.eq_any(users))
        .filter(holds::status.eq(HoldStatus::Held))
        .filter(holds::expires_at.gt(diesel::dsl::now))
        .group_by(holds::user_id)
        .select((holds::user_id, diesel::dsl::sum(holds::quantity)))
        .load(conn)
        .await?;
    let waiting: Vec<(Uuid, Option<i64>)> = waitlist_entries::table
        .filter(waitlist_entries::event_id.eq(event_id))
        .filter(waitlist_entries::user_id.eq_any(users))
        .filter(waitlist_entries::status.eq(WaitlistStatus::Waiting))
        .group_by(waitlist_entries::user_id)
        .select((
            waitlist_entries::user_id,
            diesel::dsl::sum(waitlist_entries::quantity),
        ))
        .load(conn)
        .await?;
    let mut totals = std::collections::HashMap::new();
    for (user, seats) in booked.into_iter().chain(held).chain(waiting) {
        *totals.entry(user).or_insert(0) += seats.unwrap_or(0);
    }
    Ok(totals)
}

/// Most seats one user may keep in live holds of the event at once (checkout holds and
/// waiting-list offers together), so that one account cannot take an event off sale by holding
/// it: its `max_per_user` when set, else one booking's worth (`max_per_booking`).
pub(super) fn hold_cap(event: &Event) -> i32 {
    event.max_per_user.unwrap_or(event.max_per_booking)
}

/// Seats the user keeps in live holds of the event.
pub(super) async fn seats_held_by(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    user_id: Uuid,
) -> AppResult<i64> {
    use crate::db::schema::holds;
    let held: Option<i64> = holds::table
        .filter(holds::event_id.eq(event_id))
        .filter(holds::user_id.eq(user_id))
        .filter(holds::status.eq(HoldStatus::Held))
        .filter(holds::expires_at.gt(diesel::dsl::now))
        .select(diesel::dsl::sum(holds::quantity))
        .first(conn)
        .await?;
    Ok(held.unwrap_or(0))
}

/// Refuses a hold that would take the user past [`hold_cap`] (and, with `max_per_user`, past
/// that limit for bookings and holds together).
pub(super) async fn check_hold_limit(
    conn: &mut AsyncPgConnection,
    event: &Event,
    user_id: Uuid,
    quantity: i32,
) -> AppResult<()> {
    if event.max_per_user.is_some() {
        // Holds are among the seats this counts, so the cap follows.
        return check_user_limit(conn, event, user_id, quantity).await;
    }
    let cap = hold_cap(event);
    let held = seats_held_by(conn, event.id, user_id).await?;
    if i64::from(quantity) + held > i64::from(cap) {
        return Err(AppError::BadUserInput {
            message: format!(
                "at most {cap} seats held at once per person for this event; you hold {held}"
            ),
            field: Some("quantity"),
            reason: Some("LIMIT_PER_USER"),
        });
    }
    Ok(())
}
