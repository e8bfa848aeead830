//! Keyset pagination for Relay connections. A cursor is the opaque encoding of the sort key
//! of the last row seen, so pages stay stable while rows are inserted.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::{AppError, AppResult};

pub const DEFAULT_PAGE_SIZE: i32 = 20;
pub const MAX_PAGE_SIZE: i32 = 100;

#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub first: i64,
    pub after: Option<Cursor>,
}

/// The sort key of a row: a timestamp and the id that breaks ties.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cursor {
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_next_page: bool,
}

impl PageRequest {
    pub fn new(first: Option<i32>, after: Option<&str>) -> AppResult<Self> {
        let first = first.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(0..=MAX_PAGE_SIZE).contains(&first) {
            return Err(AppError::bad_input(
                "first",
                format!("`first` must be between 0 and {MAX_PAGE_SIZE}"),
            ));
        }
        let after = after.map(Cursor::decode).transpose()?;
        Ok(Self {
            first: i64::from(first),
            after,
        })
    }

    /// Rows to fetch: one more than asked, to learn whether another page follows.
    pub fn limit(&self) -> i64 {
        self.first + 1
    }

    pub fn finish<T>(&self, mut rows: Vec<T>) -> Page<T> {
        let has_next_page = rows.len() as i64 > self.first;
        rows.truncate(self.first as usize);
        Page {
            items: rows,
            has_next_page,
        }
    }
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.at.timestamp_micros(), self.id))
    }

    pub fn decode(cursor: &str) -> AppResult<Self> {
        let invalid = || AppError::bad_input("after", "`after` is not a valid cursor");
        let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let (micros, id) = text.split_once(':').ok_or_else(invalid)?;
        let at: DateTime<Utc> = micros
            .parse()
            .ok()
            .and_then(DateTime::from_timestamp_micros)
            .ok_or_else(invalid)?;
        // Only ever issued for real rows; anything outside PostgreSQL's range is forged.
        if !(1..=9999).contains(&chrono::Datelike::year(&at)) {
            return Err(invalid());
        }
        let id = id.parse().map_err(|_| invalid())?;
        Ok(Self { at, id })
    }
}

/// Loads one page of `$query` (a boxed diesel query, filtered and selected) in keyset order by
/// (`$at`, `$id`), `newest_first` or `oldest_first`: the rows after `$page.after` in that
/// order, one more than asked to learn whether another page follows. Evaluates to the
/// [`Page`]; a database error returns from the enclosing function. A macro because each
/// table's columns are types of their own.
macro_rules! load_page {
    ($conn:expr, $query:expr, $page:expr, newest_first($at:expr, $id:expr)) => {{
        let page: $crate::domain::pagination::PageRequest = $page;
        let mut query = $query;
        if let Some(cursor) = page.after {
            query = query.filter(
                $at.lt(cursor.at)
                    .or($at.eq(cursor.at).and($id.lt(cursor.id))),
            );
        }
        let rows = query
            .order(($at.desc(), $id.desc()))
            .limit(page.limit())
            .load($conn)
            .await?;
        page.finish(rows)
    }};
    ($conn:expr, $query:expr, $page:expr, oldest_first($at:expr, $id:expr)) => {{
        let page: $crate::domain::pagination::PageRequest = $page;
        let mut query = $query;
        if let Some(cursor) = page.after {
            query = query.filter(
                $at.gt(cursor.at)
                    .or($at.eq(cursor.at).and($id.gt(cursor.id))),
            );
        }
        let rows = query
            .order(($at.asc(), $id.asc()))
            .limit(page.limit())
            .load($conn)
            .await?;
        page.finish(rows)
    }};
}
pub(crate) use load_page;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = Cursor {
            at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: Uuid::new_v4(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        let forged = URL_SAFE_NO_PAD.encode(format!("-200000000000000000:{}", Uuid::nil()));
        for bad in [
            "",
            "!!",
            "bm9wZQ",
            &URL_SAFE_NO_PAD.encode("12:not-a-uuid"),
            &forged,
        ] {
            let err = Cursor::decode(bad).unwrap_err();
            assert_eq!(err.code(), "BAD_USER_INPUT", "{bad}");
        }
    }

    #[test]
    fn page_size_is_bounded() {
        assert_eq!(PageRequest::new(None, None).unwrap().first, 20);
        assert!(PageRequest::new(Some(-1), None).is_err());
        assert!(PageRequest::new(Some(101), None).is_err());
        let page = PageRequest::new(Some(2), None)
            .unwrap()
            .finish(vec![1, 2, 3]);
        assert_eq!((page.items, page.has_next_page), (vec![1, 2], true));
    }
}
