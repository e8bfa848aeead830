//! The messages instances exchange through Redis: one JSON envelope per PUBLISH, saying which
//! instance sent it and what changed.
//!
//! These types are the wire format and nothing else, so that a row (`db::models`) or a local
//! [`Update`] can change without changing what other instances read. The JSON is the one the
//! rows themselves produced before they stopped being serializable: an externally tagged
//! update (`{"Seats": {...}}`), the rows' field names, statuses as their SQL spelling; fields
//! added after the first version are `#[serde(default)]`, so a message from an older instance
//! during a rolling deploy still reads.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::topics::{OrderUpdate, SeatMapUpdate, SeatUpdate, Update};
use crate::db::models::{Booking, Event, EventSeat, Hold, SeatState, WaitlistEntry};

/// The message on the wire between instances.
#[derive(Serialize, Deserialize)]
struct Envelope {
    /// The instance that published it, which skips it when Redis echoes it back.
    origin: Uuid,
    update: WireUpdate,
    /// When the publisher queued it, in microseconds since the Unix epoch: the listener
    /// records how long it took to arrive (`evently_bus_delivery_lag_seconds`). Absent in
    /// messages from instances older than it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sent_at_us: Option<i64>,
}

#[derive(Serialize, Deserialize)]
enum WireUpdate {
    Seats(WireSeats),
    Event(WireEvent),
    Booking(WireBooking),
    Hold(WireHold),
    Waitlist(WireWaitlistEntry),
    SeatMap(WireSeatMap),
    Order(WireOrder),
    /// An order on its owner's topic (`myBookingUpdates`).
    UserOrder(WireOrder),
}

#[derive(Serialize, Deserialize)]
struct WireOrder {
    order_id: Uuid,
    user_id: Uuid,
    event_id: Uuid,
    version: i32,
}

impl From<&OrderUpdate> for WireOrder {
    fn from(update: &OrderUpdate) -> Self {
        Self {
            order_id: update.order_id,
            user_id: update.user_id,
            event_id: update.event_id,
            version: update.version,
        }
    }
}

impl From<WireOrder> for OrderUpdate {
    fn from(update: WireOrder) -> Self {
        Self {
            order_id: update.order_id,
            user_id: update.user_id,
            event_id: update.event_id,
            version: update.version,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct WireSeats {
    event_id: Uuid,
    capacity: i32,
    seats_available: i32,
    #[serde(default)]
    seats_held: i32,
    version: i32,
}

#[derive(Serialize, Deserialize)]
struct WireEvent {
    id: Uuid,
    organizer_id: Uuid,
    title: String,
    description: Option<String>,
    category: String,
    venue: String,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    capacity: i32,
    seats_available: i32,
    max_per_booking: i32,
    status: String,
    version: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    #[serde(default)]
    seats_held: i32,
    #[serde(default)]
    venue_id: Option<Uuid>,
    #[serde(default)]
    free: bool,
    #[serde(default)]
    sales_start_at: Option<DateTime<Utc>>,
    #[serde(default)]
    sales_end_at: Option<DateTime<Utc>>,
    #[serde(default)]
    max_per_user: Option<i32>,
    #[serde(default)]
    hold_minutes: i32,
    #[serde(default)]
    offer_minutes: i32,
    #[serde(default)]
    published_at: Option<DateTime<Utc>>,
    #[serde(default)]
    currency: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct WireBooking {
    id: Uuid,
    event_id: Uuid,
    user_id: Uuid,
    quantity: i32,
    status: String,
    idempotency_key: Option<String>,
    created_at: DateTime<Utc>,
    cancelled_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize)]
struct WireHold {
    id: Uuid,
    event_id: Uuid,
    user_id: Uuid,
    quantity: i32,
    status: String,
    expires_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    booking_id: Option<Uuid>,
}

#[derive(Serialize, Deserialize)]
struct WireWaitlistEntry {
    id: Uuid,
    event_id: Uuid,
    user_id: Uuid,
    quantity: i32,
    status: String,
    rsvp: bool,
    hold_id: Option<Uuid>,
    booking_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    #[serde(default)]
    ticket_type_id: Option<Uuid>,
}

#[derive(Serialize, Deserialize)]
struct WireSeatMap {
    event_id: Uuid,
    previous_version: Option<i32>,
    version: i32,
    seats: Vec<WireSeat>,
}

#[derive(Serialize, Deserialize)]
struct WireSeat {
    seat_id: Uuid,
    section: String,
    row_label: String,
    number: i32,
    state: WireSeatState,
}

#[derive(Serialize, Deserialize)]
enum WireSeatState {
    Available,
    Held,
    Booked,
}

/// The JSON that carries `update` from the instance `origin`.
#[cfg(test)]
pub(super) fn encode(origin: Uuid, update: &Update) -> serde_json::Result<String> {
    encode_sent(origin, update, None)
}

/// The JSON that carries `update` from the instance `origin`, stamped with when it was sent
/// (microseconds since the Unix epoch).
pub(super) fn encode_sent(
    origin: Uuid,
    update: &Update,
    sent_at_us: Option<i64>,
) -> serde_json::Result<String> {
    serde_json::to_string(&Envelope {
        origin,
        update: WireUpdate::from(update),
        sent_at_us,
    })
}

/// A message heard on Redis: its sender, its update, and when it was sent if it says.
pub(super) fn decode(payload: &[u8]) -> anyhow::Result<(Uuid, Update, Option<i64>)> {
    let envelope: Envelope = serde_json::from_slice(payload)?;
    let update = Update::try_from(envelope.update).map_err(anyhow::Error::msg)?;
    Ok((envelope.origin, update, envelope.sent_at_us))
}

impl From<&Update> for WireUpdate {
    fn from(update: &Update) -> Self {
        match update {
            Update::Seats(seats) => Self::Seats(WireSeats {
                event_id: seats.event_id,
                capacity: seats.capacity,
                seats_available: seats.seats_available,
                seats_held: seats.seats_held,
                version: seats.version,
            }),
            Update::Event(event) => Self::Event(WireEvent::from(&**event)),
            Update::Booking(booking) => Self::Booking(WireBooking {
                id: booking.id,
                event_id: booking.event_id,
                user_id: booking.user_id,
                quantity: booking.quantity,
                status: booking.status.as_str().to_owned(),
                idempotency_key: booking.idempotency_key.clone(),
                created_at: booking.created_at,
                cancelled_at: booking.cancelled_at,
            }),
            Update::Hold(hold) => Self::Hold(WireHold {
                id: hold.id,
                event_id: hold.event_id,
                user_id: hold.user_id,
                quantity: hold.quantity,
                status: hold.status.as_str().to_owned(),
                expires_at: hold.expires_at,
                created_at: hold.created_at,
                ended_at: hold.ended_at,
                booking_id: hold.booking_id,
            }),
            Update::Waitlist(entry) => Self::Waitlist(WireWaitlistEntry {
                id: entry.id,
                event_id: entry.event_id,
                user_id: entry.user_id,
                quantity: entry.quantity,
                status: entry.status.as_str().to_owned(),
                rsvp: entry.rsvp,
                hold_id: entry.hold_id,
                booking_id: entry.booking_id,
                created_at: entry.created_at,
                updated_at: entry.updated_at,
                ticket_type_id: entry.ticket_type_id,
            }),
            Update::SeatMap(update) => Self::SeatMap(WireSeatMap {
                event_id: update.event_id,
                previous_version: update.previous_version,
                version: update.version,
                seats: update.seats.iter().map(WireSeat::from).collect(),
            }),
            Update::Order(update) => Self::Order(WireOrder::from(update)),
            Update::UserOrder(update) => Self::UserOrder(WireOrder::from(update)),
        }
    }
}

impl TryFrom<WireUpdate> for Update {
    type Error = String;

    fn try_from(wire: WireUpdate) -> Result<Self, String> {
        Ok(match wire {
            WireUpdate::Seats(seats) => Self::Seats(SeatUpdate {
                event_id: seats.event_id,
                capacity: seats.capacity,
                seats_available: seats.seats_available,
                seats_held: seats.seats_held,
                version: seats.version,
            }),
            WireUpdate::Event(event) => Self::Event(Arc::new(event.try_into()?)),
            WireUpdate::Booking(booking) => Self::Booking(Arc::new(Booking {
                id: booking.id,
                event_id: booking.event_id,
                user_id: booking.user_id,
                quantity: booking.quantity,
                status: booking.status.parse()?,
                idempotency_key: booking.idempotency_key,
                created_at: booking.created_at,
                cancelled_at: booking.cancelled_at,
            })),
            WireUpdate::Hold(hold) => Self::Hold(Arc::new(Hold {
                id: hold.id,
                event_id: hold.event_id,
                user_id: hold.user_id,
                quantity: hold.quantity,
                status: hold.status.parse()?,
                expires_at: hold.expires_at,
                created_at: hold.created_at,
                ended_at: hold.ended_at,
                booking_id: hold.booking_id,
            })),
            WireUpdate::Waitlist(entry) => Self::Waitlist(Arc::new(WaitlistEntry {
                id: entry.id,
                event_id: entry.event_id,
                user_id: entry.user_id,
                quantity: entry.quantity,
                status: entry.status.parse()?,
                rsvp: entry.rsvp,
                hold_id: entry.hold_id,
                booking_id: entry.booking_id,
                created_at: entry.created_at,
                updated_at: entry.updated_at,
                ticket_type_id: entry.ticket_type_id,
            })),
            WireUpdate::SeatMap(update) => Self::SeatMap(Arc::new(SeatMapUpdate {
                event_id: update.event_id,
                previous_version: update.previous_version,
                version: update.version,
                seats: update.seats.into_iter().map(EventSeat::from).collect(),
            })),
            WireUpdate::Order(update) => Self::Order(update.into()),
            WireUpdate::UserOrder(update) => Self::UserOrder(update.into()),
        })
    }
}

impl From<&Event> for WireEvent {
    fn from(event: &Event) -> Self {
        Self {
            id: event.id,
            organizer_id: event.organizer_id,
            title: event.title.clone(),
            description: event.description.clone(),
            category: event.category.clone(),
            venue: event.venue.clone(),
            starts_at: event.starts_at,
            ends_at: event.ends_at,
            capacity: event.capacity,
            seats_available: event.seats_available,
            max_per_booking: event.max_per_booking,
            status: event.status.as_str().to_owned(),
            version: event.version,
            created_at: event.created_at,
            updated_at: event.updated_at,
            seats_held: event.seats_held,
            venue_id: event.venue_id,
            free: event.free,
            sales_start_at: event.sales_start_at,
            sales_end_at: event.sales_end_at,
            max_per_user: event.max_per_user,
            hold_minutes: event.hold_minutes,
            offer_minutes: event.offer_minutes,
            published_at: event.published_at,
            currency: event.currency.clone(),
        }
    }
}

impl TryFrom<WireEvent> for Event {
    type Error = String;

    fn try_from(event: WireEvent) -> Result<Self, String> {
        Ok(Self {
            id: event.id,
            organizer_id: event.organizer_id,
            title: event.title,
            description: event.description,
            category: event.category,
            venue: event.venue,
            starts_at: event.starts_at,
            ends_at: event.ends_at,
            capacity: event.capacity,
            seats_available: event.seats_available,
            max_per_booking: event.max_per_booking,
            status: event.status.parse()?,
            version: event.version,
            created_at: event.created_at,
            updated_at: event.updated_at,
            seats_held: event.seats_held,
            venue_id: event.venue_id,
            free: event.free,
            sales_start_at: event.sales_start_at,
            sales_end_at: event.sales_end_at,
            max_per_user: event.max_per_user,
            hold_minutes: event.hold_minutes,
            offer_minutes: event.offer_minutes,
            published_at: event.published_at,
            currency: event.currency,
        })
    }
}

impl From<&EventSeat> for WireSeat {
    fn from(seat: &EventSeat) -> Self {
        Self {
            seat_id: seat.seat_id,
            section: seat.section.clone(),
            row_label: seat.row_label.clone(),
            number: seat.number,
            state: match seat.state {
                SeatState::Available => WireSeatState::Available,
                SeatState::Held => WireSeatState::Held,
                SeatState::Booked => WireSeatState::Booked,
            },
        }
    }
}

impl From<WireSeat> for EventSeat {
    fn from(seat: WireSeat) -> Self {
        Self {
            seat_id: seat.seat_id,
            section: seat.section,
            row_label: seat.row_label,
            number: seat.number,
            state: match seat.state {
                WireSeatState::Available => SeatState::Available,
                WireSeatState::Held => SeatState::Held,
                WireSeatState::Booked => SeatState::Booked,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::models::BookingStatus;

    fn round_trip(update: &Update) -> Update {
        let origin = Uuid::new_v4();
        let text = encode(origin, update).unwrap();
        let (sender, back, sent_at) = decode(text.as_bytes()).unwrap();
        assert_eq!(sender, origin);
        assert_eq!(sent_at, None);
        back
    }

    #[test]
    fn the_send_time_travels_with_the_message() {
        let update = Update::Seats(SeatUpdate {
            event_id: Uuid::nil(),
            capacity: 1,
            seats_available: 1,
            seats_held: 0,
            version: 1,
        });
        let text = encode_sent(Uuid::nil(), &update, Some(1_700_000_000_123_456)).unwrap();
        assert!(
            text.ends_with(r#","sent_at_us":1700000000123456}"#),
            "{text}"
        );
        let (_, _, sent_at) = decode(text.as_bytes()).unwrap();
        assert_eq!(sent_at, Some(1_700_000_000_123_456));
    }

    #[test]
    fn a_seat_map_update_round_trips_on_the_wire() {
        let update = SeatMapUpdate {
            event_id: Uuid::new_v4(),
            previous_version: Some(3),
            version: 4,
            seats: vec![EventSeat {
                seat_id: Uuid::new_v4(),
                section: "A".into(),
                row_label: "1".into(),
                number: 7,
                state: SeatState::Held,
            }],
        };
        let back = round_trip(&Update::SeatMap(Arc::new(update.clone())));
        assert!(matches!(back, Update::SeatMap(got) if *got == update));
    }

    #[test]
    fn the_wire_format_round_trips() {
        let update = SeatUpdate {
            event_id: Uuid::new_v4(),
            capacity: 10,
            seats_available: 4,
            seats_held: 0,
            version: 7,
        };
        let back = round_trip(&Update::Seats(update.clone()));
        assert!(matches!(back, Update::Seats(seats) if seats == update));
    }

    #[test]
    fn the_json_is_the_one_rows_produced_before_the_wire_had_its_own_types() {
        let origin = Uuid::nil();
        let booking = Booking {
            id: Uuid::nil(),
            event_id: Uuid::nil(),
            user_id: Uuid::nil(),
            quantity: 2,
            status: BookingStatus::Cancelled,
            idempotency_key: None,
            created_at: DateTime::from_timestamp(0, 0).unwrap(),
            cancelled_at: None,
        };
        let nil = "00000000-0000-0000-0000-000000000000";
        let expected = format!(
            r#"{{"origin":"{nil}","update":{{"Booking":{{"id":"{nil}","event_id":"{nil}","user_id":"{nil}","quantity":2,"status":"CANCELLED","idempotency_key":null,"created_at":"1970-01-01T00:00:00Z","cancelled_at":null}}}}}}"#
        );
        let update = Update::Booking(Arc::new(booking));
        assert_eq!(encode(origin, &update).unwrap(), expected);
        let seats = format!(
            r#"{{"origin":"{nil}","update":{{"Seats":{{"event_id":"{nil}","capacity":10,"seats_available":4,"seats_held":1,"version":7}}}}}}"#
        );
        let update = Update::Seats(SeatUpdate {
            event_id: Uuid::nil(),
            capacity: 10,
            seats_available: 4,
            seats_held: 1,
            version: 7,
        });
        assert_eq!(encode(origin, &update).unwrap(), seats);
    }

    #[test]
    fn an_unknown_status_is_a_malformed_message() {
        let nil = "00000000-0000-0000-0000-000000000000";
        let text = format!(
            r#"{{"origin":"{nil}","update":{{"Booking":{{"id":"{nil}","event_id":"{nil}","user_id":"{nil}","quantity":2,"status":"LOST","idempotency_key":null,"created_at":"1970-01-01T00:00:00Z","cancelled_at":null}}}}}}"#
        );
        assert!(decode(text.as_bytes()).is_err());
    }
}
