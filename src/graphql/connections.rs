//! Relay connections over keyset pages: each listed row's cursor, the connection built from a
//! page of rows, and what a page costs towards the complexity limit.

use async_graphql::OutputType;
use async_graphql::connection::{Connection, Edge};

use crate::db::models::{Booking, Event, Hold};
use crate::domain::pagination::{Cursor, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page, PageRequest};
use crate::domain::venues::VenueLayout;

/// A page of `first` rows (default 20, at most 100) costs that many times one row, so the
/// complexity limit bounds the rows a query can fan out to, not just its field count.
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
    VenueLayout => venue.created_at, venue.id;
}

/// A Relay connection over one page of rows, each shown as `view` makes it.
pub fn connection<R: Listed, V: OutputType>(
    page: Page<R>,
    request: &PageRequest,
    view: impl Fn(R) -> V,
) -> Connection<String, V> {
    let mut connection = Connection::new(request.after.is_some(), page.has_next_page);
    connection.edges.extend(
        page.items
            .into_iter()
            .map(|row| Edge::new(row.cursor().encode(), view(row))),
    );
    connection
}
