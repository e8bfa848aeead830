//! DataLoaders for every foreign key a query can follow, so a page of bookings costs one
//! query for their events and one for their users, not one per row.

use std::collections::HashMap;

use async_graphql::Data;
use async_graphql::dataloader::{DataLoader, Loader};
use uuid::Uuid;

use crate::app::AppState;
use crate::db::commerce::TicketType;
use crate::db::models::{Booking, Event, Hold, RsvpResponse, User};
use crate::domain::commerce::catalog;
use crate::domain::seats::{self, EventSeat, SeatOwner};
use crate::domain::venues::{self, VenueLayout};
use crate::domain::{bookings, events, holds, rsvp, users, waitlist};
use crate::error::AppError;

pub struct UserLoader(AppState);
pub struct EventLoader(AppState);

impl Loader<Uuid> for UserLoader {
    type Value = User;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, User>, Self::Error> {
        let mut conn = self.0.conn().await?;
        users::users_by_id(&mut conn, keys)
            .await
            .map_err(|e| AppError::from(e).into())
    }
}

impl Loader<Uuid> for EventLoader {
    type Value = Event;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Event>, Self::Error> {
        let mut conn = self.0.conn().await?;
        events::events_by_id(&mut conn, keys)
            .await
            .map_err(|e| AppError::from(e).into())
    }
}

/// Venues with their layouts (an event's `venueLayout`).
pub struct VenueLoader(AppState);
/// The seats of holds and bookings.
pub struct OwnedSeatsLoader(AppState);

impl Loader<Uuid> for VenueLoader {
    type Value = VenueLayout;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, VenueLayout>, Self::Error> {
        let mut conn = self.0.conn().await?;
        Ok(venues::venues_by_id(&mut conn, keys).await?)
    }
}

impl Loader<SeatOwner> for OwnedSeatsLoader {
    type Value = Vec<EventSeat>;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[SeatOwner],
    ) -> Result<HashMap<SeatOwner, Vec<EventSeat>>, Self::Error> {
        let mut conn = self.0.conn().await?;
        Ok(seats::seats_of_owners(&mut conn, keys).await?)
    }
}

pub struct BookingLoader(AppState);
pub struct HoldLoader(AppState);
/// Whether a hold is a waiting-list offer.
pub struct OfferLoader(AppState);
/// How many wait on each event's waiting list.
pub struct WaitlistLengthLoader(AppState);
/// Each free event's RSVP counts.
pub struct RsvpCountsLoader(AppState);
/// A user's RSVP to each event, keyed by (event, user).
pub struct RsvpLoader(AppState);

impl Loader<Uuid> for BookingLoader {
    type Value = Booking;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Booking>, Self::Error> {
        let mut conn = self.0.conn().await?;
        Ok(bookings::bookings_by_id(&mut conn, keys).await?)
    }
}

impl Loader<Uuid> for HoldLoader {
    type Value = Hold;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Hold>, Self::Error> {
        let mut conn = self.0.conn().await?;
        Ok(holds::holds_by_id(&mut conn, keys).await?)
    }
}

impl Loader<Uuid> for OfferLoader {
    type Value = bool;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, bool>, Self::Error> {
        let mut conn = self.0.conn().await?;
        let offers = waitlist::offers_among(&mut conn, keys).await?;
        Ok(keys.iter().map(|k| (*k, offers.contains(k))).collect())
    }
}

impl Loader<Uuid> for WaitlistLengthLoader {
    type Value = i64;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, i64>, Self::Error> {
        let mut conn = self.0.conn().await?;
        Ok(waitlist::waiting_counts(&mut conn, keys).await?)
    }
}

impl Loader<Uuid> for RsvpCountsLoader {
    type Value = rsvp::RsvpCounts;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, rsvp::RsvpCounts>, Self::Error> {
        let mut conn = self.0.conn().await?;
        Ok(rsvp::counts(&mut conn, keys).await?)
    }
}

impl Loader<(Uuid, Uuid)> for RsvpLoader {
    type Value = RsvpResponse;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[(Uuid, Uuid)],
    ) -> Result<HashMap<(Uuid, Uuid), RsvpResponse>, Self::Error> {
        let mut conn = self.0.conn().await?;
        let mut by_user: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        for (event, user) in keys {
            by_user.entry(*user).or_default().push(*event);
        }
        let mut found = HashMap::new();
        // One query per user asking: in practice one, the viewer.
        for (user, events) in by_user {
            for (event, response) in rsvp::responses(&mut conn, user, &events).await? {
                found.insert((event, user), response);
            }
        }
        Ok(found)
    }
}

/// Ticket types of order lines and tickets.
pub struct TicketTypeLoader(AppState);
/// The seats of tickets (booked seats, by seat id).
pub struct TicketSeatLoader(AppState);

impl Loader<Uuid> for TicketTypeLoader {
    type Value = TicketType;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, TicketType>, Self::Error> {
        let mut conn = self.0.conn().await?;
        Ok(catalog::ticket_types_by_id(&mut conn, keys).await?)
    }
}

impl Loader<Uuid> for TicketSeatLoader {
    type Value = EventSeat;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, EventSeat>, Self::Error> {
        let mut conn = self.0.conn().await?;
        let seats = seats::describe(&mut conn, keys, seats::SeatState::Booked).await?;
        Ok(seats.into_iter().map(|seat| (seat.seat_id, seat)).collect())
    }
}

/// Puts fresh loaders for one request (or one WebSocket connection) into its data, so cached
/// rows never outlive it.
pub fn install(app: &AppState, data: &mut Data) {
    data.insert(DataLoader::new(UserLoader(app.clone()), tokio::spawn));
    data.insert(DataLoader::new(EventLoader(app.clone()), tokio::spawn));
    data.insert(DataLoader::new(VenueLoader(app.clone()), tokio::spawn));
    data.insert(DataLoader::new(OwnedSeatsLoader(app.clone()), tokio::spawn));
    data.insert(DataLoader::new(BookingLoader(app.clone()), tokio::spawn));
    data.insert(DataLoader::new(HoldLoader(app.clone()), tokio::spawn));
    data.insert(DataLoader::new(OfferLoader(app.clone()), tokio::spawn));
    data.insert(DataLoader::new(
        WaitlistLengthLoader(app.clone()),
        tokio::spawn,
    ));
    data.insert(DataLoader::new(RsvpCountsLoader(app.clone()), tokio::spawn));
    data.insert(DataLoader::new(RsvpLoader(app.clone()), tokio::spawn));
    data.insert(DataLoader::new(TicketTypeLoader(app.clone()), tokio::spawn));
    data.insert(DataLoader::new(TicketSeatLoader(app.clone()), tokio::spawn));
}
