//! Numbered seats as the API shows them.

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Enum, ID, Object};

use super::loaders::OwnedSeatsLoader;
use crate::domain::seats::{EventSeat, SeatOwner};

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "crate::domain::seats::SeatState")]
pub enum SeatState {
    Available,
    /// Kept by a hold (a checkout in progress or a waiting-list offer).
    Held,
    Booked,
}

/// One numbered seat of a seated event and its state.
pub struct SeatNode(pub EventSeat);

#[Object(name = "Seat")]
impl SeatNode {
    /// The venue seat's id: what `seatIds` take.
    async fn id(&self) -> ID {
        ID(self.0.seat_id.to_string())
    }
    async fn section(&self) -> &str {
        &self.0.section
    }
    async fn row(&self) -> &str {
        &self.0.row_label
    }
    async fn number(&self) -> i32 {
        self.0.number
    }
    async fn state(&self) -> SeatState {
        self.0.state.into()
    }
}

/// The seats a hold or a booking has, in venue order (none for general admission, or once it
/// has ended). Batched: a page of bookings costs one query.
pub async fn seats_of(ctx: &Context<'_>, owner: SeatOwner) -> async_graphql::Result<Vec<SeatNode>> {
    Ok(ctx
        .data_unchecked::<DataLoader<OwnedSeatsLoader>>()
        .load_one(owner)
        .await?
        .unwrap_or_default()
        .into_iter()
        .map(SeatNode)
        .collect())
}
