//! Rows as Rust types. Enumerations are stored as text guarded by CHECK constraints, which keeps
//! migrations simple when a later issue adds a state (an ALTER of the check, not of a type).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::schema::{
    bookings, events, holds, rsvps, seat_claims, sessions, users, venue_seats, venues,
    waitlist_entries,
};

/// Declares a fieldless enum stored in a `text` column under the given SQL spellings.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $sql:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, diesel::expression::AsExpression, diesel::deserialize::FromSqlRow)]
        #[diesel(sql_type = diesel::sql_types::Text)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $sql),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($sql => Ok(Self::$variant),)+
                    other => Err(format!("unknown {} {other:?}", stringify!($name))),
                }
            }
        }

        impl diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg> for $name {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
            ) -> diesel::serialize::Result {
                <str as diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg>>::to_sql(
                    self.as_str(),
                    out,
                )
            }
        }

        impl diesel::deserialize::FromSql<diesel::sql_types::Text, diesel::pg::Pg> for $name {
            fn from_sql(bytes: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
                let text = <String as diesel::deserialize::FromSql<
                    diesel::sql_types::Text,
                    diesel::pg::Pg,
                >>::from_sql(bytes)?;
                Ok(text.parse()?)
            }
        }
    };
}

pub(crate) use text_enum;

text_enum!(Role { User => "USER", Organizer => "ORGANIZER", Admin => "ADMIN" });
text_enum!(EventStatus {
    Draft => "DRAFT",
    Published => "PUBLISHED",
    Cancelled => "CANCELLED",
    Completed => "COMPLETED",
});
text_enum!(HoldStatus {
    Held => "HELD",
    Confirmed => "CONFIRMED",
    Released => "RELEASED",
    Expired => "EXPIRED",
});
text_enum!(WaitlistStatus {
    Waiting => "WAITING",
    Offered => "OFFERED",
    Fulfilled => "FULFILLED",
    Left => "LEFT",
    Expired => "EXPIRED",
    Closed => "CLOSED",
});
text_enum!(RsvpResponse { Going => "GOING", Maybe => "MAYBE", NotGoing => "NOT_GOING" });
text_enum!(BookingStatus { Confirmed => "CONFIRMED", Cancelled => "CANCELLED" });

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = sessions, check_for_backend(diesel::pg::Pg))]
pub struct Session {
    pub id: Uuid,
    pub user_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = events, check_for_backend(diesel::pg::Pg))]
pub struct Event {
    pub id: Uuid,
    pub organizer_id: Uuid,
    pub title: String,
    pub description: Option<String>,
    pub category: String,
    pub venue: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub capacity: i32,
    pub seats_available: i32,
    pub max_per_booking: i32,
    pub status: EventStatus,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Seats kept by holds (checkouts in progress and waiting-list offers).
    pub seats_held: i32,
    /// Set for a seated event: its seats are the venue's.
    pub venue_id: Option<Uuid>,
    /// A free event takes RSVPs instead of bookings.
    pub free: bool,
    pub sales_start_at: Option<DateTime<Utc>>,
    pub sales_end_at: Option<DateTime<Utc>>,
    /// Most seats one user may hold and book for the event, all bookings together.
    pub max_per_user: Option<i32>,
    /// How long a checkout hold lasts.
    pub hold_minutes: i32,
    /// How long a waiting-list offer lasts.
    pub offer_minutes: i32,
    /// When it was first published; none for a draft, or a draft that was cancelled (which
    /// stays hidden like a draft).
    pub published_at: Option<DateTime<Utc>>,
    /// Set once the event sells ticket types (by its first one): it then sells through
    /// orders in this ISO 4217 currency, and `bookSeats`/`holdSeats` refuse it.
    pub currency: Option<String>,
}

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = bookings, check_for_backend(diesel::pg::Pg))]
pub struct Booking {
    pub id: Uuid,
    pub event_id: Uuid,
    pub user_id: Uuid,
    pub quantity: i32,
    pub status: BookingStatus,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub cancelled_at: Option<DateTime<Utc>>,
}

impl Event {
    pub const DEFAULT_HOLD_MINUTES: i32 = 10;
    pub const DEFAULT_OFFER_MINUTES: i32 = 24 * 60;
}

impl Booking {
    /// A new confirmed booking, not yet stored.
    pub fn confirmed(
        event_id: Uuid,
        user_id: Uuid,
        quantity: i32,
        idempotency_key: Option<String>,
        created_at: DateTime<Utc>,
    ) -> Self {
        Self {
            id: Uuid::new_v4(),
            event_id,
            user_id,
            quantity,
            status: BookingStatus::Confirmed,
            idempotency_key,
            created_at,
            cancelled_at: None,
        }
    }
}

/// Seats kept for one user for a while: a checkout in progress, or a waiting-list offer.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = holds, check_for_backend(diesel::pg::Pg))]
pub struct Hold {
    pub id: Uuid,
    pub event_id: Uuid,
    pub user_id: Uuid,
    pub quantity: i32,
    pub status: HoldStatus,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub booking_id: Option<Uuid>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = venues, check_for_backend(diesel::pg::Pg))]
pub struct Venue {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub name: String,
    pub address: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = venue_seats, check_for_backend(diesel::pg::Pg))]
pub struct VenueSeat {
    pub id: Uuid,
    pub venue_id: Uuid,
    pub section: String,
    pub row_label: String,
    pub number: i32,
    pub position: i32,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = seat_claims, check_for_backend(diesel::pg::Pg))]
pub struct SeatClaim {
    pub event_id: Uuid,
    pub seat_id: Uuid,
    pub hold_id: Option<Uuid>,
    pub booking_id: Option<Uuid>,
}

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = waitlist_entries, check_for_backend(diesel::pg::Pg))]
pub struct WaitlistEntry {
    pub id: Uuid,
    pub event_id: Uuid,
    pub user_id: Uuid,
    pub quantity: i32,
    pub status: WaitlistStatus,
    pub rsvp: bool,
    pub hold_id: Option<Uuid>,
    pub booking_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The ticket type an entry of an event that sells them waits for.
    pub ticket_type_id: Option<Uuid>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = rsvps, check_for_backend(diesel::pg::Pg))]
pub struct Rsvp {
    pub event_id: Uuid,
    pub user_id: Uuid,
    pub response: RsvpResponse,
    pub booking_id: Option<Uuid>,
    pub updated_at: DateTime<Utc>,
}

/// Whether a seat of a seated event is taken, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeatState {
    Available,
    Held,
    Booked,
}

/// One seat of an event, where it is and whether it is taken: a venue seat read with its claim
/// (`seat_claims`), not a table of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSeat {
    pub seat_id: Uuid,
    pub section: String,
    pub row_label: String,
    pub number: i32,
    pub state: SeatState,
}

impl EventSeat {
    pub fn new(seat: VenueSeat, state: SeatState) -> Self {
        Self {
            seat_id: seat.id,
            section: seat.section,
            row_label: seat.row_label,
            number: seat.number,
            state,
        }
    }

    /// "A 3-12": how a buyer reads a seat.
    pub fn label(&self) -> String {
        format!("{} {}-{}", self.section, self.row_label, self.number)
    }
}
