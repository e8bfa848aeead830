//! An event's life: created (as a draft or published), updated, published, cancelled (with
//! every booking, hold, waiting-list entry and GOING answer of it, in one transaction), and
//! completed by the sweeper once it is over. Each change returns the event and what it changed,
//! its details included, for `App::commit` to announce.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::rules::{
    DEFAULT_MAX_PER_BOOKING, check_capacity, check_limits, check_max_per_booking,
    check_sales_window, check_schedule, optional_text,
};
use crate::db::models::{Booking, BookingStatus, Event, EventStatus, HoldStatus};
use crate::db::schema::{bookings, events};
use crate::domain::Viewer;
use crate::domain::audit;
use crate::domain::changes::{Changes, Committed};
use crate::domain::freed_seats;
use crate::domain::inventory::Inventory;
use crate::domain::sale_rules::{lock_event, visible_to};
use crate::domain::seats;
use crate::domain::stock;
use crate::domain::text::required_text;
use crate::error::{AppError, AppResult};

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
        Some(venue_id) => seats::seated_capacity(conn, venue_id, new.capacity).await?,
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
        currency: None,
    };
    conn.transaction(async move |conn| {
        let event = diesel::insert_into(events::table)
            .values(&event)
            .returning(Event::as_returning())
            .get_result(conn)
            .await?;
        let action = audit::Action::on_event("event.create", event.id);
        audit::record(conn, actor, action, None, Some(audit::event_fields(&event))).await?;
        Ok(event)
    })
    .await
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

pub async fn update_event(
    conn: &mut AsyncPgConnection,
    actor: &Viewer,
    id: Uuid,
    patch: EventPatch,
) -> AppResult<Committed<Event>> {
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
            event_details: true,
            ..Changes::default()
        };
        // More seats: the waiting list gets them first, in this transaction.
        let mut inventory = Inventory::new(updated.clone());
        freed_seats::promote(conn, &mut inventory, &mut changes).await?;
        let event = inventory.save(conn, &mut changes).await?;
        audit::record_event_change(conn, actor, "event.update", &current, &event).await?;
        changes.event = Some(event.clone());
        Ok(Committed::new(event, changes))
    })
    .await
}

/// Cancels the event and, in the same transaction, every confirmed booking and live hold of
/// it, closes its waiting list, and turns its GOING answers to NOT_GOING.
pub async fn cancel_event(
    conn: &mut AsyncPgConnection,
    actor: &Viewer,
    id: Uuid,
) -> AppResult<Committed<Event>> {
    conn.transaction(async move |conn| {
        let current = lock_event(conn, id).await?;
        ensure_can_manage(actor, &current)?;
        if current.status == EventStatus::Cancelled {
            return Ok(Committed::unchanged(current));
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
            event_details: true,
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
        freed_seats::end_all(conn, &current, HoldStatus::Released, &mut changes).await?;
        // Paid orders get a PENDING refund each, carried out once this commits.
        let refunds = stock::refund_cancelled_event(conn, id, &mut changes).await?;
        audit::record_event_refunds(conn, actor, id, &refunds).await?;
        freed_seats::close_all(conn, id, &mut changes).await?;
        freed_seats::cancel_all(conn, id).await?;
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
        audit::record_event_change(conn, actor, "event.cancel", &current, &event).await?;
        changes.event = Some(event.clone());
        Ok(Committed::new(event, changes))
    })
    .await
}

/// Publishes a draft: from now on everyone sees it, and it is on sale inside its sales window.
pub async fn publish_event(
    conn: &mut AsyncPgConnection,
    actor: &Viewer,
    id: Uuid,
) -> AppResult<Committed<Event>> {
    conn.transaction(async move |conn| {
        let current = lock_event(conn, id).await?;
        ensure_can_manage(actor, &current)?;
        match current.status {
            EventStatus::Draft => {}
            EventStatus::Published => {
                return Ok(Committed::unchanged(current));
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
        audit::record_event_change(conn, actor, "event.publish", &current, &event).await?;
        let changes = Changes {
            event: Some(event.clone()),
            previous_version: Some(current.version),
            event_details: true,
            ..Changes::default()
        };
        Ok(Committed::new(event, changes))
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
pub async fn complete_ended(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> AppResult<Vec<Committed<Event>>> {
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
            Ok(Some(completed)) => all.push(completed),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(event_id = %id, code = error.code(), message = %error.message(), "cannot complete an ended event");
            }
        }
    }
    Ok(all)
}

/// Completes one ended event, unless another instance got there first (`None`).
async fn complete_event(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> AppResult<Option<Committed<Event>>> {
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
            event_details: true,
            ..Changes::default()
        };
        freed_seats::end_all(conn, &current, HoldStatus::Expired, &mut changes).await?;
        freed_seats::close_all(conn, id, &mut changes).await?;
        changes.event = Some(event.clone());
        Ok(Some(Committed::new(event, changes)))
    })
    .await
}
