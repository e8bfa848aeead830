//! CSV exports: `GET /exports/events/{id}/attendees.csv` for the event's organizer and admins.
//!
//! The body is streamed: the attendees are read a page at a time (`domain::stats::attendees`,
//! a pooled connection held only while a page is read) and each page is written as CSV and
//! sent before the next is read, so memory stays that of one page whatever the size of the
//! event. Pages are consecutive keyset pages, not one snapshot: a booking made during the
//! export appears once or not at all, never twice.
//!
//! RFC 4180 (the `csv` crate: CRLF line ends, quotes doubled, fields with commas, quotes or
//! line breaks quoted), UTF-8, a header row. A cell a spreadsheet would run as a formula
//! (beginning with `=`, `+`, `-`, `@`, a tab or a carriage return) is prefixed with `'`
//! (OWASP, CSV injection).
//!
//! Bearer token (as for `/graphql`): none or a bad one is 401; an event the caller may not
//! export (someone else's, or no such event) is 404, so the route does not tell which exist.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt as _, stream};
use uuid::Uuid;

use crate::app::AppState;
use crate::domain::auth;
use crate::domain::stats::{self, attendees};
use crate::error::AppError;

pub fn router<S>(app: AppState) -> Router<S> {
    Router::new()
        .route(
            "/exports/events/{id}/attendees.csv",
            axum::routing::get(attendees_csv),
        )
        .with_state(app)
}

const HEADER: [&str; 6] = [
    "booking_id",
    "booked_at",
    "name",
    "email",
    "quantity",
    "seats",
];

fn plain(status: StatusCode, message: &'static str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "private, no-store")],
        message,
    )
        .into_response()
}

async fn attendees_csv(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let unauthorized = || {
        let mut response = plain(
            StatusCode::UNAUTHORIZED,
            "a valid Bearer token is required\n",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        response
    };
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
    else {
        return unauthorized();
    };
    let Ok(event_id) = Uuid::parse_str(&id) else {
        return plain(StatusCode::NOT_FOUND, "no such event\n");
    };
    let allowed = async {
        let mut conn = app.conn().await?;
        let viewer = auth::authenticate(&mut conn, &app.tokens, token).await?;
        stats::event_for_analytics(&mut conn, &viewer, event_id).await
    };
    match allowed.await {
        Ok(_) => {}
        Err(AppError::Unauthenticated(_)) => return unauthorized(),
        Err(AppError::NotFound(_) | AppError::Forbidden(_)) => {
            return plain(StatusCode::NOT_FOUND, "no such event\n");
        }
        Err(AppError::Unavailable) => {
            return plain(StatusCode::SERVICE_UNAVAILABLE, "busy: try again shortly\n");
        }
        Err(error) => {
            tracing::error!(code = error.code(), error = ?error, "attendee export refused");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n");
        }
    }
    let first = Some(Ok::<_, std::io::Error>(Bytes::from(csv_rows(&[
        HEADER.map(str::to_owned)
    ]))));
    let pages = stream::unfold(Some(None), move |after| {
        let app = app.clone();
        async move {
            let after = after?;
            let page = async {
                let mut conn = app.conn().await?;
                attendees::attendee_page(&mut conn, event_id, after).await
            };
            match page.await {
                Ok(rows) if rows.is_empty() => None,
                Ok(rows) => {
                    let next = (rows.len() as i64 == attendees::PAGE_SIZE)
                        .then(|| rows.last().map(|last| (last.booked_at, last.booking_id)));
                    let records: Vec<[String; 6]> = rows.into_iter().map(record).collect();
                    Some((
                        Ok(Bytes::from(csv_rows(&records))),
                        next.flatten().map(Some),
                    ))
                }
                Err(error) => {
                    // The status line is gone: cutting the body short is all that is left,
                    // and the client sees an incomplete transfer, not a short file.
                    tracing::error!(code = error.code(), error = ?error, "attendee export failed");
                    Some((Err(std::io::Error::other("export failed")), None))
                }
            }
        }
    });
    let body = stream::iter(first).chain(pages);
    (
        [
            (
                header::CONTENT_TYPE,
                "text/csv; charset=utf-8; header=present",
            ),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"attendees.csv\"",
            ),
            (header::CACHE_CONTROL, "private, no-store"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

fn record(a: attendees::Attendee) -> [String; 6] {
    [
        a.booking_id.to_string(),
        a.booked_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        a.name,
        a.email,
        a.quantity.to_string(),
        a.seats.unwrap_or_default(),
    ]
}

/// The records as RFC 4180 CSV, each cell neutralised against formula injection.
fn csv_rows(records: &[[String; 6]]) -> Vec<u8> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::with_capacity(records.len() * 128));
    for record in records {
        // Writing to a Vec cannot fail.
        let _ = writer.write_record(record.iter().map(|cell| neutralise(cell).into_owned()));
    }
    writer.into_inner().unwrap_or_default()
}

/// A cell a spreadsheet would evaluate, prefixed with `'` so it shows as text (OWASP).
pub fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_neutralised_and_other_text_kept() {
        for cell in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(neutralise(cell), format!("'{cell}"));
        }
        for cell in ["", "Zoë", "a=b", "1-2", " =x"] {
            assert_eq!(neutralise(cell), cell);
        }
    }
}
