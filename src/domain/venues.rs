//! Venues with a seat layout: sections of rows of numbered seats. A layout is fixed once
//! created, since events at the venue refer to its seats.
//!
//! Top layer: a command module.

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::Viewer;
use super::pagination::{Page, PageRequest, load_page};
use super::text::required_text;
use crate::db::models::{Venue, VenueSeat};
use crate::db::schema::{venue_seats, venues};
use crate::error::{AppError, AppResult};

pub const MAX_SEATS: usize = 20_000;
pub const MAX_SECTIONS: usize = 100;
pub const MAX_ROWS_PER_SECTION: usize = 500;
pub const MAX_SEATS_PER_ROW: i32 = 1_000;
/// Rows per INSERT: six parameters each stay well under PostgreSQL's 65,535.
const INSERT_CHUNK: usize = 5_000;

#[derive(Debug, Clone)]
pub struct NewVenue {
    pub name: String,
    pub address: Option<String>,
    pub sections: Vec<SectionLayout>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionLayout {
    pub name: String,
    pub rows: Vec<RowLayout>,
}

/// A row of seats numbered 1 to `seats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowLayout {
    pub label: String,
    pub seats: i32,
}

/// A venue and its layout.
#[derive(Debug, Clone)]
pub struct VenueLayout {
    pub venue: Venue,
    pub sections: Vec<SectionLayout>,
}

impl VenueLayout {
    pub fn seat_count(&self) -> i32 {
        self.sections
            .iter()
            .flat_map(|section| &section.rows)
            .map(|row| row.seats)
            .sum()
    }
}

/// Checks a layout against the limits and returns it with names trimmed.
fn validate_layout(sections: Vec<SectionLayout>) -> AppResult<Vec<SectionLayout>> {
    if sections.is_empty() || sections.len() > MAX_SECTIONS {
        return Err(AppError::bad_input(
            "sections",
            format!("a venue has 1 to {MAX_SECTIONS} sections"),
        ));
    }
    let mut total: usize = 0;
    let mut section_names = HashSet::new();
    let mut checked = Vec::with_capacity(sections.len());
    for section in sections {
        let name = required_text("sections.name", &section.name, 50)?;
        if !section_names.insert(name.clone()) {
            return Err(AppError::bad_input(
                "sections.name",
                format!("section {name:?} is named twice"),
            ));
        }
        if section.rows.is_empty() || section.rows.len() > MAX_ROWS_PER_SECTION {
            return Err(AppError::bad_input(
                "sections.rows",
                format!("section {name:?} must have 1 to {MAX_ROWS_PER_SECTION} rows"),
            ));
        }
        let mut labels = HashSet::new();
        let mut rows = Vec::with_capacity(section.rows.len());
        for row in section.rows {
            let label = required_text("sections.rows.label", &row.label, 20)?;
            if !labels.insert(label.clone()) {
                return Err(AppError::bad_input(
                    "sections.rows.label",
                    format!("row {label:?} appears twice in section {name:?}"),
                ));
            }
            if !(1..=MAX_SEATS_PER_ROW).contains(&row.seats) {
                return Err(AppError::bad_input(
                    "sections.rows.seats",
                    format!(
                        "row {label:?} of section {name:?} must have 1 to {MAX_SEATS_PER_ROW} seats"
                    ),
                ));
            }
            total += row.seats as usize;
            rows.push(RowLayout {
                label,
                seats: row.seats,
            });
        }
        checked.push(SectionLayout { name, rows });
    }
    if total > MAX_SEATS {
        return Err(AppError::bad_input(
            "sections",
            format!("a venue has at most {MAX_SEATS} seats; this layout has {total}"),
        ));
    }
    Ok(checked)
}

pub async fn create_venue(
    conn: &mut AsyncPgConnection,
    actor: &Viewer,
    new: NewVenue,
) -> AppResult<VenueLayout> {
    if !actor.can_organize() {
        return Err(AppError::Forbidden(
            "only organizers and admins can create venues",
        ));
    }
    let venue = Venue {
        id: Uuid::new_v4(),
        owner_id: actor.id(),
        name: required_text("name", &new.name, 200)?,
        address: match new.address.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(address) => Some(required_text("address", address, 500)?),
        },
        created_at: Utc::now(),
    };
    let sections = validate_layout(new.sections)?;
    let mut seats = Vec::new();
    for section in &sections {
        for row in &section.rows {
            for number in 1..=row.seats {
                seats.push(VenueSeat {
                    id: Uuid::new_v4(),
                    venue_id: venue.id,
                    section: section.name.clone(),
                    row_label: row.label.clone(),
                    number,
                    position: seats.len() as i32,
                });
            }
        }
    }
    let venue = conn
        .transaction(async |conn| {
            let venue: Venue = diesel::insert_into(venues::table)
                .values(&venue)
                .returning(Venue::as_returning())
                .get_result(conn)
                .await?;
            for chunk in seats.chunks(INSERT_CHUNK) {
                diesel::insert_into(venue_seats::table)
                    .values(chunk)
                    .execute(conn)
                    .await?;
            }
            AppResult::Ok(venue)
        })
        .await?;
    Ok(VenueLayout { venue, sections })
}

/// Venues with their layouts, read in two queries however many are asked for.
pub async fn venues_by_id(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> AppResult<HashMap<Uuid, VenueLayout>> {
    let rows: Vec<Venue> = venues::table
        .filter(venues::id.eq_any(ids))
        .select(Venue::as_select())
        .load(conn)
        .await?;
    with_layouts(conn, rows).await
}

async fn with_layouts(
    conn: &mut AsyncPgConnection,
    venues: Vec<Venue>,
) -> AppResult<HashMap<Uuid, VenueLayout>> {
    let ids: Vec<Uuid> = venues.iter().map(|venue| venue.id).collect();
    // One row per (venue, section, row), in the layout's order.
    let rows: Vec<(Uuid, String, String, i64, Option<i32>)> = venue_seats::table
        .filter(venue_seats::venue_id.eq_any(&ids))
        .group_by((
            venue_seats::venue_id,
            venue_seats::section,
            venue_seats::row_label,
        ))
        .select((
            venue_seats::venue_id,
            venue_seats::section,
            venue_seats::row_label,
            diesel::dsl::count_star(),
            diesel::dsl::min(venue_seats::position),
        ))
        .order(diesel::dsl::min(venue_seats::position).asc())
        .load(conn)
        .await?;
    let mut layouts: HashMap<Uuid, VenueLayout> = venues
        .into_iter()
        .map(|venue| {
            (
                venue.id,
                VenueLayout {
                    venue,
                    sections: Vec::new(),
                },
            )
        })
        .collect();
    for (venue_id, section, label, seats, _) in rows {
        let Some(layout) = layouts.get_mut(&venue_id) else {
            continue;
        };
        let row = RowLayout {
            label,
            seats: seats as i32,
        };
        match layout.sections.last_mut() {
            Some(last) if last.name == section => last.rows.push(row),
            _ => layout.sections.push(SectionLayout {
                name: section,
                rows: vec![row],
            }),
        }
    }
    Ok(layouts)
}

pub async fn find_venue(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<Option<VenueLayout>> {
    Ok(venues_by_id(conn, &[id]).await?.remove(&id))
}

/// Venues in the order they were created.
pub async fn list_venues(
    conn: &mut AsyncPgConnection,
    page: PageRequest,
) -> AppResult<Page<VenueLayout>> {
    let query = venues::table.select(Venue::as_select()).into_boxed();
    let page: Page<Venue> = load_page!(
        conn,
        query,
        page,
        oldest_first(venues::created_at, venues::id)
    );
    let order: Vec<Uuid> = page.items.iter().map(|venue| venue.id).collect();
    let mut layouts = with_layouts(conn, page.items).await?;
    Ok(Page {
        items: order.iter().filter_map(|id| layouts.remove(id)).collect(),
        has_next_page: page.has_next_page,
    })
}

/// How many venues [`list_venues`] lists across all its pages.
pub async fn count_venues(conn: &mut AsyncPgConnection) -> AppResult<i64> {
    Ok(venues::table.count().get_result(conn).await?)
}
