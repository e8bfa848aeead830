//! Relay connections over keyset pages: each listed row's cursor, the connection built from a
//! page of rows with its `totalCount`, and what a page costs towards the complexity limit.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Object, OutputType};
use diesel_async::AsyncPgConnection;
use futures_util::future::BoxFuture;

use super::context::ContextExt;
use crate::error::AppResult;

use crate::db::commerce::Order;
use crate::db::models::{Booking, Event, Hold};
use crate::domain::pagination::{Cursor, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page, PageRequest};
use crate::domain::venues::VenueLayout;

/// A page of `first` rows (default 20, at most 100) costs that many times one row, so the
/// complexity limit bounds the rows a query can fan out to, not just its field count.
/// `totalCount` is one field of that selection, so it adds the page size (1 to 100): a count
/// reads the matching rows much as the page reads its own, and costs about as much.
pub fn page_complexity(first: Option<i32>, child_complexity: usize) -> usize {
    let rows = first.unwrap_or(DEFAULT_PAGE_SIZE).clamp(1, MAX_PAGE_SIZE);
    (rows as usize).saturating_mul(child_complexity)
}

/// A row listed a page at a time: its sort key, as the domain's list orders by it.
pub trait Listed {
    fn cursor(&self) -> Cursor;
}

/// Each listed row's sort key: a timestamp and the id that breaks ties.
macro_rules! listed_by {
    ($($row:ty => $($at:ident).+, $($id:ident).+;)+) => {$(
        impl Listed for $row {
            fn cursor(&self) -> Cursor {
                Cursor { at: self.$($at).+, id: self.$($id).+ }
            }
        }
    )+};
}

listed_by! {
    // Events are listed by start time, everything else newest or oldest first.
    Event => starts_at, id;
    Booking => created_at, id;
    Hold => created_at, id;
    Order => created_at, id;
    VenueLayout => venue.created_at, venue.id;
}

/// A row read with something joined to it (an event with its organizer) is listed as the row.
impl<T> Listed for (Event, T) {
    fn cursor(&self) -> Cursor {
        self.0.cursor()
    }
}

/// Counts the rows of a list across all its pages, under the same filters.
type CountRows =
    Box<dyn for<'c> Fn(&'c mut AsyncPgConnection) -> BoxFuture<'c, AppResult<i64>> + Send + Sync>;

/// The fields a connection has besides its page: `totalCount`, counted only when selected.
pub struct TotalCount(CountRows);

impl TotalCount {
    pub fn new<F>(count: F) -> Self
    where
        F: for<'c> Fn(&'c mut AsyncPgConnection) -> BoxFuture<'c, AppResult<i64>>
            + Send
            + Sync
            + 'static,
    {
        Self(Box::new(count))
    }
}

#[Object]
impl TotalCount {
    /// How many nodes the list has across all its pages, under the same arguments except
    /// `first` and `after`. Counted only when asked for.
    async fn total_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i32> {
        let mut conn = ctx.app().conn().await?;
        let count = (self.0)(&mut conn).await?;
        Ok(i32::try_from(count).unwrap_or(i32::MAX))
    }
}

/// A Relay connection over one page of rows, each shown as `view` makes it, with its
/// `totalCount`.
pub fn connection<R: Listed, V: OutputType>(
    page: Page<R>,
    request: &PageRequest,
    view: impl Fn(R) -> V,
    total_count: TotalCount,
) -> Connection<String, V, TotalCount> {
    let mut connection = Connection::with_additional_fields(
        request.after.is_some(),
        page.has_next_page,
        total_count,
    );
    connection.edges.extend(
        page.items
            .into_iter()
            .map(|row| Edge::new(row.cursor().encode(), view(row))),
    );
    connection
}
