//! The graphql-sse "single connection" mode: a PUT reserves a stream and answers its token,
//! a GET opens it (once), each POST starts an operation on it (`extensions.operationId`),
//! a DELETE stops one. A reservation is one connection for the limits (see `super`); it is
//! given back when its stream ends, or when nobody opens it within the WebSocket's
//! `init_timeout`, and its operations stop with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::Data;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use uuid::Uuid;

use super::{Slots, admit, body_of, event, event_stream_response, json_error, operation, read_one};
use crate::http::graphql_over_http::{GRAPHQL_RESPONSE_JSON, JSON};
use crate::http::{HttpState, bearer_token};
use crate::security::client::ClientIp;

/// Events waiting for a slow reader of a single-connection stream, across its operations;
/// past this an operation waits (and a subscription skips to the newest state meanwhile).
const QUEUED_EVENTS: usize = 16;

/// The single-connection reservations of this instance, by token.
#[derive(Default)]
pub struct EventStreams {
    reservations: Mutex<HashMap<String, Arc<Reservation>>>,
}

impl EventStreams {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Reservation>>> {
        self.reservations.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn get(&self, token: &str) -> Option<Arc<Reservation>> {
        self.lock().get(token).cloned()
    }
}

/// A reserved single-connection stream: its operations write events into `events`, which
/// the stream's GET reads.
pub(super) struct Reservation {
    pub(super) user: Option<Uuid>,
    session: Arc<Data>,
    slots: Slots,
    events: mpsc::Sender<String>,
    reader: Mutex<Option<mpsc::Receiver<String>>>,
    operations: Arc<Mutex<HashMap<String, AbortHandle>>>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let operations = self.operations.lock().unwrap_or_else(|e| e.into_inner());
        operations.values().for_each(AbortHandle::abort);
    }
}

/// Whether a request on a reservation comes from who reserved it: the same user, or anonymous
/// both times.
pub(super) fn same_caller(state: &HttpState, headers: &HeaderMap, user: Option<Uuid>) -> bool {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let caller = token
        .and_then(|token| state.app.tokens.decode(token).ok())
        .map(|c| c.sub);
    caller == user && (token.is_some() == user.is_some())
}

/// Single connection, step one: a PUT reserves a stream; its token is the body.
pub(super) async fn reserve(
    state: &HttpState,
    client: Option<ClientIp>,
    headers: &HeaderMap,
) -> Response {
    let admitted = match admit(state, client, headers).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal,
    };
    let token = Uuid::new_v4().to_string();
    let (events, reader) = mpsc::channel(QUEUED_EVENTS);
    let reservation = Arc::new(Reservation {
        user: admitted.user,
        session: admitted.session,
        slots: admitted.slots,
        events,
        reader: Mutex::new(Some(reader)),
        operations: Arc::default(),
    });
    state
        .event_streams
        .lock()
        .insert(token.clone(), reservation.clone());
    // A reservation nobody opens in time is given back, as a WebSocket that never sends
    // `connection_init` is closed.
    let streams = state.clone();
    let expiring = token.clone();
    let reservation = Arc::downgrade(&reservation);
    let patience = state.app.config.websocket.init_timeout;
    tokio::spawn(async move {
        tokio::time::sleep(patience).await;
        let unopened = reservation.upgrade().is_some_and(|reservation| {
            reservation
                .reader
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
        });
        if unopened {
            streams.event_streams.lock().remove(&expiring);
        }
    });
    let mut response = (StatusCode::CREATED, token).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Gives the reservation back when its stream ends, whichever way.
struct OpenStream {
    state: HttpState,
    token: String,
    reservation: Arc<Reservation>,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.state.event_streams.lock().remove(&self.token);
    }
}

/// Single connection, step two: the GET that opens the reserved stream (once).
pub(super) fn open(
    state: &HttpState,
    headers: &HeaderMap,
    token: String,
    reservation: Arc<Reservation>,
) -> Response {
    if !same_caller(state, headers, reservation.user) {
        return json_error(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "this event stream was reserved by someone else",
        );
    }
    let reader = reservation
        .reader
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let Some(reader) = reader else {
        return json_error(
            StatusCode::CONFLICT,
            "CONFLICT",
            "the stream is already open",
        );
    };
    let events = tokio_stream::wrappers::ReceiverStream::new(reader).boxed();
    let open = OpenStream {
        state: state.clone(),
        token,
        reservation,
    };
    let body = body_of(
        events,
        state.app.config.websocket.ping_interval,
        state.sockets.shutdown.clone(),
        open,
        |open| open.reservation.slots.renew(),
    );
    event_stream_response(body)
}

/// Single connection, step three: a POST starts an operation on the reserved stream.
pub(super) fn start(
    state: &HttpState,
    headers: &HeaderMap,
    reservation: &Reservation,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("*/*");
    let acceptable = accept.split(',').any(|range| {
        let media = range.split(';').next().unwrap_or_default().trim();
        ["*/*", "application/*", JSON, GRAPHQL_RESPONSE_JSON].contains(&media)
    });
    if !acceptable {
        return StatusCode::NOT_ACCEPTABLE.into_response();
    }
    let mut request = match read_one(headers, body) {
        Ok(request) => request,
        Err(refusal) => return refusal,
    };
    let id = match request.extensions.remove("operationId") {
        Some(async_graphql::Value::String(id)) if !id.is_empty() && id.len() <= 128 => id,
        _ => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                "`extensions.operationId` is missing",
            );
        }
    };
    let mut operations = reservation
        .operations
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if operations.contains_key(&id) {
        return json_error(
            StatusCode::CONFLICT,
            "CONFLICT",
            "an operation with this id is running",
        );
    }
    if operations.len() >= state.app.config.websocket.max_operations_per_connection {
        return json_error(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            "too many operations open on this stream",
        );
    }
    let mut results = operation(state, reservation.session.clone(), request);
    let events = reservation.events.clone();
    let running = reservation.operations.clone();
    let task_id = id.clone();
    // Streaming into a reservation not opened yet is fine: its events wait for the GET.
    let task = tokio::spawn(async move {
        while let Some(response) = results.next().await {
            let text = event("next", &json!({ "id": task_id, "payload": response }));
            if events.send(text).await.is_err() {
                return;
            }
        }
        running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&task_id);
        let _ = events
            .send(event("complete", &json!({ "id": task_id })))
            .await;
    });
    operations.insert(id, task.abort_handle());
    (StatusCode::ACCEPTED, "").into_response()
}

/// Single connection, step four: a DELETE stops an operation (done already is fine too).
pub(super) fn stop(reservation: &Reservation, id: &str) -> Response {
    let stopped = reservation
        .operations
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(id);
    if let Some(operation) = stopped {
        operation.abort();
    }
    StatusCode::OK.into_response()
}
