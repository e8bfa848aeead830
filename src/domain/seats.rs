//! Numbered seats of seated events: which seat a hold or booking has. General-admission events
//! (no venue) have no seats, and every function here does nothing for them.
//!
//! Callers hold the event's row lock (see `sale_rules::lock_event`), and `seat_claims`' primary
//! key (event, seat) makes a second claim on a seat a unique violation in any case.
//!
//! The middle layer, beside the inventory: imports only the bottom ([`super::changes`],
//! [`super::text`]).

use std::collections::HashMap;

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::changes::Changes;
use super::rows::OrNotFound;
use super::text::reject_control_chars;
use crate::db::models::{Event, SeatClaim, VenueSeat};

use crate::db::schema::{events, seat_claims, venue_seats, venues};
use crate::error::{AppError, AppResult};

pub use crate::db::models::{EventSeat, SeatState};

/// One seat of an event whose state changed. It carries its place so that a seat picker can
/// apply it without looking the seat up.
pub type SeatChange = EventSeat;

/// Who takes a seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeatOwner {
    Hold(Uuid),
    Booking(Uuid),
}

impl SeatOwner {
    fn state(self) -> SeatState {
        match self {
            Self::Hold(_) => SeatState::Held,
            Self::Booking(_) => SeatState::Booked,
        }
    }
}

fn state_of(booking_id: Option<Uuid>) -> SeatState {
    // A confirmed hold's claims move to its booking (`transfer`), so a claim with a booking is
    // booked and one without is held.
    if booking_id.is_some() {
        SeatState::Booked
    } else {
        SeatState::Held
    }
}

fn taken_error(seats: &[EventSeat]) -> AppError {
    match seats {
        [seat] => AppError::Conflict(format!("seat {} is already taken", seat.label())),
        _ => AppError::Conflict(format!(
            "one of seats {} is already taken",
            seats
                .iter()
                .map(EventSeat::label)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Claims seats of `event` for a hold or a booking: exactly `seat_ids` when given (all or
/// nothing), else the best `quantity` available. Nothing for general admission.
pub async fn claim(
    conn: &mut AsyncPgConnection,
    event: &Event,
    owner: SeatOwner,
    quantity: i32,
    seat_ids: &[Uuid],
    changes: &mut Changes,
) -> AppResult<()> {
    claim_in(conn, event, owner, quantity, seat_ids, &[], changes).await
}

/// [`claim`], within `sections` of the seat map when there are any (a ticket type's tier): a
/// named seat elsewhere is refused with SEAT_NOT_IN_TICKET_TYPE, the best seats are chosen
/// there.
pub async fn claim_in(
    conn: &mut AsyncPgConnection,
    event: &Event,
    owner: SeatOwner,
    quantity: i32,
    seat_ids: &[Uuid],
    sections: &[String],
    changes: &mut Changes,
) -> AppResult<()> {
    let Some(venue_id) = event.venue_id else {
        if !seat_ids.is_empty() {
            return Err(AppError::bad_input(
                "seatIds",
                "this event is general admission: it has no numbered seats",
            ));
        }
        return Ok(());
    };
    let seats: Vec<VenueSeat> = if seat_ids.is_empty() {
        best_available(conn, event.id, venue_id, quantity, sections).await?
    } else {
        let seats = named_seats(conn, event.id, venue_id, seat_ids).await?;
        if !sections.is_empty()
            && let Some(seat) = seats.iter().find(|seat| !sections.contains(&seat.section))
        {
            return Err(AppError::BadUserInput {
                message: format!(
                    "seat {} is in section {}, which this ticket type does not sell ({})",
                    EventSeat::new(seat.clone(), SeatState::Available).label(),
                    seat.section,
                    sections.join(", ")
                ),
                field: Some("seatIds"),
                reason: Some("SEAT_NOT_IN_TICKET_TYPE"),
            });
        }
        seats
    };
    if seats.len() < quantity as usize {
        return Err(AppError::SoldOut {
            seats_available: seats.len() as i32,
        });
    }
    let (hold_id, booking_id) = match owner {
        SeatOwner::Hold(id) => (Some(id), None),
        SeatOwner::Booking(id) => (None, Some(id)),
    };
    let claims: Vec<SeatClaim> = seats
        .iter()
        .map(|seat| SeatClaim {
            event_id: event.id,
            seat_id: seat.id,
            hold_id,
            booking_id,
        })
        .collect();
    let changed: Vec<EventSeat> = seats
        .into_iter()
        .map(|seat| EventSeat::new(seat, owner.state()))
        .collect();
    // The check above runs under the event's lock, so this only fails if some path claimed a
    // seat without that lock: the primary key still refuses it. A savepoint keeps the
    // caller's transaction usable for its own error handling.
    let inserted = conn
        .transaction(async |conn| {
            diesel::insert_into(seat_claims::table)
                .values(&claims)
                .execute(conn)
                .await
        })
        .await;
    match inserted {
        Ok(_) => {}
        Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info))
            if info.constraint_name() == Some("seat_claims_pkey") =>
        {
            return Err(taken_error(&changed));
        }
        Err(other) => return Err(other.into()),
    }
    changes.seats.extend(changed);
    Ok(())
}

/// The `quantity` free seats that come first in the venue's order (in `sections`, if any).
async fn best_available(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    venue_id: Uuid,
    quantity: i32,
    sections: &[String],
) -> AppResult<Vec<VenueSeat>> {
    let claimed = seat_claims::table
        .filter(seat_claims::event_id.eq(event_id))
        .filter(seat_claims::seat_id.eq(venue_seats::id));
    let mut query = venue_seats::table
        .filter(venue_seats::venue_id.eq(venue_id))
        .filter(diesel::dsl::not(diesel::dsl::exists(claimed)))
        .into_boxed();
    if !sections.is_empty() {
        query = query.filter(venue_seats::section.eq_any(sections));
    }
    Ok(query
        .order(venue_seats::position.asc())
        .limit(quantity.into())
        .select(VenueSeat::as_select())
        .load(conn)
        .await?)
}

/// Exactly the seats asked for, all of the event's venue and none taken.
async fn named_seats(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    venue_id: Uuid,
    seat_ids: &[Uuid],
) -> AppResult<Vec<VenueSeat>> {
    let mut wanted = seat_ids.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    if wanted.len() != seat_ids.len() {
        return Err(AppError::bad_input("seatIds", "a seat is named twice"));
    }
    let seats: Vec<VenueSeat> = venue_seats::table
        .filter(venue_seats::venue_id.eq(venue_id))
        .filter(venue_seats::id.eq_any(&wanted))
        .order(venue_seats::position.asc())
        .select(VenueSeat::as_select())
        .load(conn)
        .await?;
    if seats.len() != wanted.len() {
        let unknown = wanted
            .iter()
            .find(|id| !seats.iter().any(|seat| seat.id == **id))
            .copied()
            .unwrap_or_default();
        return Err(AppError::bad_input(
            "seatIds",
            format!("seat {unknown} is not a seat of this event's venue"),
        ));
    }
    let taken: Vec<VenueSeat> = venue_seats::table
        .inner_join(seat_claims::table)
        .filter(seat_claims::event_id.eq(event_id))
        .filter(seat_claims::seat_id.eq_any(&wanted))
        .order(venue_seats::position.asc())
        .select(VenueSeat::as_select())
        .load(conn)
        .await?;
    if let Some(seat) = taken.into_iter().next() {
        return Err(taken_error(&[EventSeat::new(seat, SeatState::Held)]));
    }
    Ok(seats)
}

/// The places of `seat_ids`, in venue order, with the state they now have.
async fn changed_seats(
    conn: &mut AsyncPgConnection,
    seat_ids: &[Uuid],
    state: SeatState,
) -> AppResult<Vec<EventSeat>> {
    if seat_ids.is_empty() {
        return Ok(Vec::new());
    }
    let seats: Vec<VenueSeat> = venue_seats::table
        .filter(venue_seats::id.eq_any(seat_ids))
        .order(venue_seats::position.asc())
        .select(VenueSeat::as_select())
        .load(conn)
        .await?;
    Ok(seats
        .into_iter()
        .map(|seat| EventSeat::new(seat, state))
        .collect())
}

/// Gives back the seats of holds that ended without a booking.
pub async fn release_holds(
    conn: &mut AsyncPgConnection,
    event: &Event,
    hold_ids: &[Uuid],
    changes: &mut Changes,
) -> AppResult<()> {
    release(conn, event, hold_ids, &[], changes).await
}

/// Gives back the seats of cancelled bookings.
pub async fn release_bookings(
    conn: &mut AsyncPgConnection,
    event: &Event,
    booking_ids: &[Uuid],
    changes: &mut Changes,
) -> AppResult<()> {
    release(conn, event, &[], booking_ids, changes).await
}

async fn release(
    conn: &mut AsyncPgConnection,
    event: &Event,
    hold_ids: &[Uuid],
    booking_ids: &[Uuid],
    changes: &mut Changes,
) -> AppResult<()> {
    if event.venue_id.is_none() || (hold_ids.is_empty() && booking_ids.is_empty()) {
        return Ok(());
    }
    let freed: Vec<Uuid> = diesel::delete(
        seat_claims::table
            .filter(seat_claims::event_id.eq(event.id))
            .filter(
                seat_claims::hold_id
                    .eq_any(hold_ids)
                    .or(seat_claims::booking_id.eq_any(booking_ids)),
            ),
    )
    .returning(seat_claims::seat_id)
    .get_results(conn)
    .await?;
    changes
        .seats
        .extend(changed_seats(conn, &freed, SeatState::Available).await?);
    Ok(())
}

/// A confirmed hold's seats now belong to its booking.
pub async fn transfer(
    conn: &mut AsyncPgConnection,
    event: &Event,
    hold_id: Uuid,
    booking_id: Uuid,
    changes: &mut Changes,
) -> AppResult<()> {
    if event.venue_id.is_none() {
        return Ok(());
    }
    // The hold id is cleared so that releasing the (now confirmed) hold cannot free them.
    let moved: Vec<Uuid> = diesel::update(
        seat_claims::table
            .filter(seat_claims::event_id.eq(event.id))
            .filter(seat_claims::hold_id.eq(hold_id)),
    )
    .set((
        seat_claims::booking_id.eq(booking_id),
        seat_claims::hold_id.eq(None::<Uuid>),
    ))
    .returning(seat_claims::seat_id)
    .get_results(conn)
    .await?;
    changes
        .seats
        .extend(changed_seats(conn, &moved, SeatState::Booked).await?);
    Ok(())
}

/// The seats with these ids, in the given state (a ticket's seat).
pub async fn describe(
    conn: &mut AsyncPgConnection,
    seat_ids: &[Uuid],
    state: SeatState,
) -> AppResult<Vec<EventSeat>> {
    changed_seats(conn, seat_ids, state).await
}

/// Some of a hold's seats now belong to a booking: an order line's seats, when the order that
/// held them all is paid.
pub async fn transfer_seats(
    conn: &mut AsyncPgConnection,
    event: &Event,
    hold_id: Uuid,
    booking_id: Uuid,
    seat_ids: &[Uuid],
    changes: &mut Changes,
) -> AppResult<()> {
    if event.venue_id.is_none() || seat_ids.is_empty() {
        return Ok(());
    }
    let moved: Vec<Uuid> = diesel::update(
        seat_claims::table
            .filter(seat_claims::event_id.eq(event.id))
            .filter(seat_claims::hold_id.eq(hold_id))
            .filter(seat_claims::seat_id.eq_any(seat_ids)),
    )
    .set((
        seat_claims::booking_id.eq(booking_id),
        seat_claims::hold_id.eq(None::<Uuid>),
    ))
    .returning(seat_claims::seat_id)
    .get_results(conn)
    .await?;
    changes
        .seats
        .extend(changed_seats(conn, &moved, SeatState::Booked).await?);
    Ok(())
}

/// The event's seats in venue order, optionally of one section, each with its state.
/// Empty for general admission.
pub async fn event_seats(
    conn: &mut AsyncPgConnection,
    event: &Event,
    section: Option<&str>,
) -> AppResult<Vec<EventSeat>> {
    if let Some(section) = section {
        if section.chars().count() > 50 {
            return Err(crate::error::AppError::bad_input(
                "section",
                "section must be at most 50 characters",
            ));
        }
        reject_control_chars("section", section, false)?;
    }
    let Some(venue_id) = event.venue_id else {
        return Ok(Vec::new());
    };
    let mut query = venue_seats::table
        .left_join(
            seat_claims::table.on(seat_claims::seat_id
                .eq(venue_seats::id)
                .and(seat_claims::event_id.eq(event.id))),
        )
        .filter(venue_seats::venue_id.eq(venue_id))
        .select((
            VenueSeat::as_select(),
            seat_claims::seat_id.nullable(),
            seat_claims::booking_id.nullable(),
        ))
        .order(venue_seats::position.asc())
        .into_boxed();
    if let Some(section) = section {
        query = query.filter(venue_seats::section.eq(section.to_owned()));
    }
    let rows: Vec<(VenueSeat, Option<Uuid>, Option<Uuid>)> = query.load(conn).await?;
    Ok(rows
        .into_iter()
        .map(|(seat, claimed, booking_id)| {
            let state = match claimed {
                None => SeatState::Available,
                Some(_) => state_of(booking_id),
            };
            EventSeat::new(seat, state)
        })
        .collect())
}

/// The event and all its seats as of one moment: the seats are read in the same snapshot as
/// the event's version, so a subscriber can apply later changes on top of them.
pub async fn seat_map(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
) -> AppResult<(Event, Vec<EventSeat>)> {
    conn.build_transaction()
        .read_only()
        .repeatable_read()
        .run(async |conn| {
            let event: Event = events::table
                .find(event_id)
                .select(Event::as_select())
                .first(conn)
                .await
                .or_not_found("event")?;
            check_seat_map(&event)?;
            let seats = event_seats(conn, &event, None).await?;
            Ok((event, seats))
        })
        .await
}

/// Refuses an event without a seat map: a general-admission one.
pub fn check_seat_map(event: &Event) -> AppResult<()> {
    if event.venue_id.is_none() {
        return Err(AppError::BadUserInput {
            message: "this event is general admission: it has no seat map".into(),
            field: Some("eventId"),
            reason: Some("NO_SEAT_MAP"),
        });
    }
    Ok(())
}

/// The seats each owner (a hold or a booking) has, in venue order.
pub async fn seats_of_owners(
    conn: &mut AsyncPgConnection,
    owners: &[SeatOwner],
) -> AppResult<HashMap<SeatOwner, Vec<EventSeat>>> {
    let (mut hold_ids, mut booking_ids) = (Vec::new(), Vec::new());
    for owner in owners {
        match owner {
            SeatOwner::Hold(id) => hold_ids.push(*id),
            SeatOwner::Booking(id) => booking_ids.push(*id),
        }
    }
    let rows: Vec<(VenueSeat, Option<Uuid>, Option<Uuid>)> = venue_seats::table
        .inner_join(seat_claims::table)
        .filter(
            seat_claims::hold_id
                .eq_any(&hold_ids)
                .or(seat_claims::booking_id.eq_any(&booking_ids)),
        )
        .order(venue_seats::position.asc())
        .select((
            VenueSeat::as_select(),
            seat_claims::hold_id,
            seat_claims::booking_id,
        ))
        .load(conn)
        .await?;
    let mut by_owner: HashMap<SeatOwner, Vec<EventSeat>> = HashMap::new();
    for (seat, hold_id, booking_id) in rows {
        let state = state_of(booking_id);
        let owner = match (booking_id, hold_id) {
            (Some(id), _) => SeatOwner::Booking(id),
            (None, Some(id)) => SeatOwner::Hold(id),
            (None, None) => continue,
        };
        by_owner
            .entry(owner)
            .or_default()
            .push(EventSeat::new(seat, state));
    }
    Ok(by_owner)
}

/// The capacity of an event at `venue_id`: its seat count, which a given capacity must match.
pub(crate) async fn seated_capacity(
    conn: &mut AsyncPgConnection,
    venue_id: Uuid,
    given: Option<i32>,
) -> AppResult<i32> {
    let exists: bool = diesel::select(diesel::dsl::exists(venues::table.find(venue_id)))
        .get_result(conn)
        .await?;
    if !exists {
        return Err(AppError::bad_input("venueId", "no venue has this id"));
    }
    let seats: i64 = venue_seats::table
        .filter(venue_seats::venue_id.eq(venue_id))
        .count()
        .get_result(conn)
        .await?;
    let seats = seats as i32;
    match given {
        Some(capacity) if capacity != seats => Err(AppError::bad_input(
            "capacity",
            format!(
                "a seated event's capacity is its venue's seat count ({seats}); leave capacity out"
            ),
        )),
        _ => Ok(seats),
    }
}
