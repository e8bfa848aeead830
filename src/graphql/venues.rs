//! Venues with seat layouts: the `Venue` object and its sections and rows, the venue queries,
//! and `createVenue`.

use async_graphql::connection::Connection;
use async_graphql::{Context, ID, InputObject, Object};
use chrono::{DateTime, Utc};

use super::connections::{TotalCount, connection, page_complexity};
use super::context::{ContextExt, browse_conn, require_viewer};
use super::ids::{parse_id, to_id};
use crate::domain::pagination::PageRequest;
use crate::domain::venues::{self, NewVenue, RowLayout, SectionLayout, VenueLayout};

#[derive(InputObject)]
#[graphql(name = "VenueRowInput")]
pub struct RowInput {
    pub label: String,
    /// Seats in the row, numbered 1 to `seats`.
    pub seats: i32,
}

#[derive(InputObject)]
#[graphql(name = "VenueSectionInput")]
pub struct SectionInput {
    pub name: String,
    pub rows: Vec<RowInput>,
}

#[derive(InputObject)]
pub struct CreateVenueInput {
    pub name: String,
    pub address: Option<String>,
    /// At most 100 sections and 20,000 seats in all. Seats are listed (and the best
    /// available picked) in this order.
    pub sections: Vec<SectionInput>,
}

/// A venue and its seat layout.
pub struct VenueView(pub VenueLayout);

#[Object(name = "Venue")]
impl VenueView {
    async fn id(&self) -> ID {
        to_id(self.0.venue.id)
    }
    async fn name(&self) -> &str {
        &self.0.venue.name
    }
    async fn address(&self) -> Option<&str> {
        self.0.venue.address.as_deref()
    }
    async fn seat_count(&self) -> i32 {
        self.0.seat_count()
    }
    async fn sections(&self) -> &[SectionLayout] {
        &self.0.sections
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.venue.created_at
    }
}

#[Object(name = "VenueSection")]
impl SectionLayout {
    async fn name(&self) -> &str {
        &self.name
    }
    async fn rows(&self) -> &[RowLayout] {
        &self.rows
    }
}

#[Object(name = "VenueRow")]
impl RowLayout {
    async fn label(&self) -> &str {
        &self.label
    }
    /// Seats in the row, numbered 1 to this.
    async fn seats(&self) -> i32 {
        self.seats
    }
}

#[derive(Default)]
pub struct VenueQuery;

#[Object]
impl VenueQuery {
    async fn venue(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<VenueView>> {
        let id = parse_id(&id, "id")?;
        let mut conn = browse_conn(ctx).await?;
        Ok(venues::find_venue(&mut conn, id).await?.map(VenueView))
    }

    /// Venues in the order they were created.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn venues(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, VenueView, TotalCount>> {
        let page = PageRequest::new(first, after.as_deref())?;
        let mut conn = browse_conn(ctx).await?;
        let rows = venues::list_venues(&mut conn, page).await?;
        let total_count = TotalCount::new(|conn| Box::pin(venues::count_venues(conn)));
        Ok(connection(rows, &page, VenueView, total_count))
    }
}

#[derive(Default)]
pub struct VenueMutation;

#[Object]
impl VenueMutation {
    /// ORGANIZER or ADMIN. A venue's layout cannot be changed once created; events at it
    /// (`createEvent(input: {venueId})`) have its seats.
    async fn create_venue(
        &self,
        ctx: &Context<'_>,
        input: CreateVenueInput,
    ) -> async_graphql::Result<VenueView> {
        let viewer = &require_viewer(ctx).await?;
        let new = NewVenue {
            name: input.name,
            address: input.address,
            sections: input
                .sections
                .into_iter()
                .map(|section| SectionLayout {
                    name: section.name,
                    rows: section
                        .rows
                        .into_iter()
                        .map(|row| RowLayout {
                            label: row.label,
                            seats: row.seats,
                        })
                        .collect(),
                })
                .collect(),
        };
        let mut conn = ctx.app().conn().await?;
        Ok(VenueView(
            venues::create_venue(&mut conn, viewer, new).await?,
        ))
    }
}
