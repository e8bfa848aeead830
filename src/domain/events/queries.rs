//! Reading events: one by id, several by id (for DataLoaders), and the filtered, paginated
//! list, which shows drafts and cancelled drafts only to their organizer and admins.
//!
//! The page and the one event are read with their organizers joined in: every listing shows
//! the organizer's name, and reading it with the events is one round trip instead of two
//! (the organizers' DataLoader would ask again once the page is known).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::db::models::{Event, EventStatus, User};
use crate::db::schema::{events, users};
use crate::domain::Viewer;
use crate::domain::pagination::{Page, PageRequest, load_page};
use crate::domain::rows::rows_by_id;
use crate::domain::text::reject_control_chars;
use crate::error::{AppError, AppResult};

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text);

#[derive(Debug, Default, Clone)]
pub struct EventFilter {
    pub category: Option<String>,
    pub search: Option<String>,
    pub starts_after: Option<DateTime<Utc>>,
    pub starts_before: Option<DateTime<Utc>>,
    /// `None` lists published events only: cancelled ones are reached by id or asked for.
    pub status: Option<EventStatus>,
}

/// Escapes LIKE wildcards so a search for "100%" means the text "100%".
fn like_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

const MAX_FILTER_LEN: usize = 200;

/// Lists events; `viewer` matters only for drafts and cancelled drafts: it sees its own (an
/// admin sees all), an anonymous caller none.
pub async fn list_events(
    conn: &mut AsyncPgConnection,
    viewer: Option<&Viewer>,
    filter: &EventFilter,
    page: PageRequest,
) -> AppResult<Page<(Event, User)>> {
    let Some(query) = matching_events(viewer, filter)? else {
        return Ok(page.finish(Vec::new()));
    };
    let query = query.select((Event::as_select(), User::as_select()));
    Ok(load_page!(
        conn,
        query,
        page,
        oldest_first(events::starts_at, events::id)
    ))
}

/// How many events [`list_events`] lists across all its pages.
pub async fn count_events(
    conn: &mut AsyncPgConnection,
    viewer: Option<&Viewer>,
    filter: &EventFilter,
) -> AppResult<i64> {
    let Some(query) = matching_events(viewer, filter)? else {
        return Ok(0);
    };
    Ok(query.count().get_result(conn).await?)
}

/// Events joined with their organizers.
type WithOrganizers = diesel::dsl::InnerJoin<events::table, users::table>;

/// The events a listing shows, with their organizers, in no order; `None` when it can show
/// none (drafts to an anonymous caller).
fn matching_events<'a>(
    viewer: Option<&Viewer>,
    filter: &EventFilter,
) -> AppResult<Option<diesel::dsl::IntoBoxed<'a, WithOrganizers, diesel::pg::Pg>>> {
    for (field, value) in [("category", &filter.category), ("search", &filter.search)] {
        if let Some(value) = value {
            // Longer than any title, venue or category: a huge pattern only makes the scan slow.
            if value.chars().count() > MAX_FILTER_LEN {
                return Err(AppError::bad_input(
                    field,
                    format!("{field} must be at most {MAX_FILTER_LEN} characters"),
                ));
            }
            reject_control_chars(field, value, false)?;
        }
    }
    let status = filter.status.unwrap_or(EventStatus::Published);
    let mut query = events::table
        .inner_join(users::table)
        .filter(events::status.eq(status))
        .into_boxed();
    if status == EventStatus::Draft {
        match viewer {
            None => return Ok(None),
            Some(viewer) if viewer.is_admin() => {}
            Some(viewer) => query = query.filter(events::organizer_id.eq(viewer.id())),
        }
    }
    // A cancelled draft stays as hidden as a draft.
    if status == EventStatus::Cancelled {
        let was_published = events::published_at.is_not_null();
        match viewer {
            None => query = query.filter(was_published),
            Some(viewer) if viewer.is_admin() => {}
            Some(viewer) => {
                query = query.filter(was_published.or(events::organizer_id.eq(viewer.id())));
            }
        }
    }
    if let Some(category) = filter.category.as_deref().map(str::trim) {
        query = query.filter(lower(events::category).eq(category.to_lowercase()));
    }
    if let Some(search) = filter
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let pattern = like_pattern(search);
        query = query.filter(
            events::title
                .ilike(pattern.clone())
                .or(events::venue.ilike(pattern.clone()))
                .or(events::description.ilike(pattern)),
        );
    }
    if let Some(after) = filter.starts_after {
        query = query.filter(events::starts_at.gt(after));
    }
    if let Some(before) = filter.starts_before {
        query = query.filter(events::starts_at.lt(before));
    }
    Ok(Some(query))
}

/// The event with this id and its organizer.
pub async fn find_event_with_organizer(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> AppResult<Option<(Event, User)>> {
    Ok(events::table
        .inner_join(users::table)
        .filter(events::id.eq(id))
        .select((Event::as_select(), User::as_select()))
        .first(conn)
        .await
        .optional()?)
}

pub async fn events_by_id(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> QueryResult<std::collections::HashMap<Uuid, Event>> {
    Ok(rows_by_id!(conn, events, Event, ids))
}
