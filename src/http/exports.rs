//! CSV exports for the event's organizer and admins: `GET /exports/events/{id}/attendees.csv`
//! (one row per confirmed booking) and `GET /exports/events/{id}/orders.csv` (one row per
//! order, whatever its status: see `domain::stats::orders` for why not one per line).
//!
//! The body is streamed: the rows are read a page at a time (`domain::stats::attendees` and
//! `orders`, a pooled connection held only while a page is read) and each page is written as
//! CSV and sent before the next is read, so memory stays that of one page whatever the size
//! of the event. Pages are consecutive keyset pages, not one snapshot: a row added during the
//! export appears once or not at all, never twice (an order's later changes may show or not).
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
use crate::domain::stats::{self, attendees, orders};
use crate::error::AppError;

pub fn router<S>(app: AppState) -> Router<S> {
    Router::new()
        .route(
            "/exports/events/{id}/attendees.csv",
            axum::routing::get(attendees_csv),
        )
        .route(
            "/exports/events/{id}/orders.csv",
            axum::routing::get(orders_csv),
        )
        .with_state(app)
}

const ATTENDEES_HEADER: [&str; 6] = [
    "booking_id",
    "booked_at",
    "name",
    "email",
    "quantity",
    "seats",
];

/// Amounts in the currency's major unit (`12.50`), exact; `refunded` counts the refunds that
/// succeeded.
const ORDERS_HEADER: [&str; 16] = [
    "order_id",
    "created_at",
    "status",
    "buyer_name",
    "buyer_email",
    "lines",
    "tickets",
    "subtotal",
    "discount",
    "total",
    "refunded",
    "currency",
    "promo_code",
    "provider",
    "payment_reference",
    "paid_at",
];

fn plain(status: StatusCode, message: &'static str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "private, no-store")],
        message,
    )
        .into_response()
}

/// The event the export is of, when the Bearer token's owner may export it; otherwise the
/// response to send (401, 404, 503 or 500).
async fn authorized_event(app: &AppState, id: &str, headers: &HeaderMap) -> Result<Uuid, Response> {
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
        return Err(unauthorized());
    };
    let Ok(event_id) = Uuid::parse_str(id) else {
        return Err(plain(StatusCode::NOT_FOUND, "no such event\n"));
    };
    let allowed = async {
        let mut conn = app.conn().await?;
        let viewer = auth::authenticate(&mut conn, &app.tokens, token).await?;
        stats::event_for_analytics(&mut conn, &viewer, event_id).await
    };
    match allowed.await {
        Ok(_) => Ok(event_id),
        Err(AppError::Unauthenticated(_)) => Err(unauthorized()),
        Err(AppError::NotFound(_) | AppError::Forbidden(_)) => {
            Err(plain(StatusCode::NOT_FOUND, "no such event\n"))
        }
        Err(AppError::Unavailable) => Err(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy: try again shortly\n",
        )),
        Err(error) => {
            tracing::error!(code = error.code(), error = ?error, "export refused");
            Err(plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal server error\n",
            ))
        }
    }
}

/// Where the next page starts: after the last row of this one.
type Cursor = (chrono::DateTime<chrono::Utc>, Uuid);

/// The CSV file `filename`: the header row, then page after page as `read` returns them (a
/// pooled connection taken for each page only), each written and sent before the next is
/// read.
fn paged_csv<Row, Read, Fut, const N: usize>(
    app: AppState,
    filename: &'static str,
    header: [&'static str; N],
    page_size: i64,
    read: Read,
    cursor: fn(&Row) -> Cursor,
    record: fn(Row) -> [String; N],
) -> Response
where
    Row: Send + 'static,
    Read: Fn(AppState, Option<Cursor>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = crate::error::AppResult<Vec<Row>>> + Send + 'static,
{
    let first = Some(Ok::<_, std::io::Error>(Bytes::from(csv_rows(&[
        header.map(str::to_owned)
    ]))));
    let pages = stream::unfold(Some(None), move |after: Option<Option<Cursor>>| {
        let app = app.clone();
        let read = read.clone();
        async move {
            let after = after?;
            match read(app, after).await {
                Ok(rows) if rows.is_empty() => None,
                Ok(rows) => {
                    let next = (rows.len() as i64 == page_size)
                        .then(|| rows.last().map(cursor))
                        .flatten();
                    let records: Vec<[String; N]> = rows.into_iter().map(record).collect();
                    Some((Ok(Bytes::from(csv_rows(&records))), next.map(Some)))
                }
                Err(error) => {
                    // The status line is gone: cutting the body short is all that is left,
                    // and the client sees an incomplete transfer, not a short file.
                    tracing::error!(code = error.code(), error = ?error, filename, "export failed");
                    Some((Err(std::io::Error::other("export failed")), None))
                }
            }
        }
    });
    let body = stream::iter(first).chain(pages);
    let disposition = format!("attachment; filename=\"{filename}\"");
    (
        [
            (
                header::CONTENT_TYPE,
                "text/csv; charset=utf-8; header=present".to_owned(),
            ),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, "private, no-store".to_owned()),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

async fn attendees_csv(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let event_id = match authorized_event(&app, &id, &headers).await {
        Ok(event_id) => event_id,
        Err(response) => return response,
    };
    paged_csv(
        app,
        "attendees.csv",
        ATTENDEES_HEADER,
        attendees::PAGE_SIZE,
        move |app: AppState, after| async move {
            let mut conn = app.conn().await?;
            attendees::attendee_page(&mut conn, event_id, after).await
        },
        |a: &attendees::Attendee| (a.booked_at, a.booking_id),
        attendee_record,
    )
}

async fn orders_csv(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let event_id = match authorized_event(&app, &id, &headers).await {
        Ok(event_id) => event_id,
        Err(response) => return response,
    };
    paged_csv(
        app,
        "orders.csv",
        ORDERS_HEADER,
        orders::PAGE_SIZE,
        move |app: AppState, after| async move {
            let mut conn = app.conn().await?;
            orders::order_page(&mut conn, event_id, after).await
        },
        |o: &orders::OrderRow| (o.created_at, o.order_id),
        order_record,
    )
}

fn timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn attendee_record(a: attendees::Attendee) -> [String; 6] {
    [
        a.booking_id.to_string(),
        timestamp(a.booked_at),
        a.name,
        a.email,
        a.quantity.to_string(),
        a.seats.unwrap_or_default(),
    ]
}

fn order_record(o: orders::OrderRow) -> [String; 16] {
    let money = |minor: i64| orders::major_units(minor, &o.currency);
    [
        o.order_id.to_string(),
        timestamp(o.created_at),
        o.status.clone(),
        o.name.clone(),
        o.email.clone(),
        o.lines.clone().unwrap_or_default(),
        o.tickets.to_string(),
        money(o.subtotal),
        money(o.discount),
        money(o.total),
        money(o.refunded),
        o.currency.clone(),
        o.promo_code.clone().unwrap_or_default(),
        o.provider.clone(),
        o.payment_reference.clone().unwrap_or_default(),
        o.paid_at.map(timestamp).unwrap_or_default(),
    ]
}

/// The records as RFC 4180 CSV, each cell neutralised against formula injection.
fn csv_rows<const N: usize>(records: &[[String; N]]) -> Vec<u8> {
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
