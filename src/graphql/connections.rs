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

/// Events are listed by start time.
impl Listed for Event {
    fn cursor(&self) -> Cursor {
        Cursor {
            at: self.starts_at,
            id: self.id,
        }
    }
}

impl Listed for Booking {
    fn cursor(&self) -> Cursor {
        Cursor {
            at: self.created_at,
            id: self.id,
        }
    }
}

impl Listed for Hold {
    fn cursor(&self) -> Cursor {
        Cursor {
            at: self.created_at,
            id: self.id,
        }
    }
}

impl Listed for VenueLayout {
    fn cursor(&self) -> Cursor {
        Cursor {
            at: self.venue.created_at,
            id: self.venue.id,
        }
    }
}

/// A Relay connection over one page of rows, each shown as its view `V`.
pub fn connection<R: Listed, V: OutputType + From<R>>(
    page: Page<R>,
    request: &PageRequest,
) -> Connection<String, V> {
    let mut connection = Connection::new(request.after.is_some(), page.has_next_page);
    connection.edges.extend(
        page.items
            .into_iter()
            .map(|row| Edge::new(row.cursor().encode(), V::from(row))),
    );
    connection
}
