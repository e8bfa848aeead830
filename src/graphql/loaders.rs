//! DataLoaders for every foreign key a query can follow, so a page of bookings costs one
//! query for their events and one for their users, not one per row.

use std::collections::HashMap;

use async_graphql::dataloader::{DataLoader, Loader};
use uuid::Uuid;

use crate::app::AppState;
use crate::db::models::{Event, User};
use crate::domain::seats::{self, EventSeat, SeatOwner};
use crate::domain::venues::{self, VenueLayout};
use crate::domain::{events, users};
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

/// Fresh seat-map loaders for one request (or one WebSocket connection), like
/// [`request_loaders`].
pub fn seat_loaders(app: &AppState) -> (DataLoader<VenueLoader>, DataLoader<OwnedSeatsLoader>) {
    (
        DataLoader::new(VenueLoader(app.clone()), tokio::spawn),
        DataLoader::new(OwnedSeatsLoader(app.clone()), tokio::spawn),
    )
}

/// Fresh loaders for one request (or one WebSocket connection), so cached rows never outlive it.
pub fn request_loaders(app: &AppState) -> (DataLoader<UserLoader>, DataLoader<EventLoader>) {
    (
        DataLoader::new(UserLoader(app.clone()), tokio::spawn),
        DataLoader::new(EventLoader(app.clone()), tokio::spawn),
    )
}
