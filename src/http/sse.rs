//! GraphQL over Server-Sent Events on `/graphql/stream`: the graphql-sse protocol
//! (enisdenjo/graphql-sse PROTOCOL.md), for clients and proxies where WebSocket is not an
//! option. Both of its modes:
//!
//! - **Distinct connections**: a POST (or, for queries, a GET) with `Accept: text/event-stream`
//!   is one operation; its results come as `next` events, then `complete`, then the stream ends.
//! - **Single connection**: a PUT reserves a stream and answers its token; a GET with the token
//!   (header `X-GraphQL-Event-Stream-Token`, or `?token=`) and `Accept: text/event-stream` opens
//!   it; each POST with the token starts an operation whose events carry its
//!   `extensions.operationId`, answered 202; a DELETE with `?operationId=` stops one. The
//!   reservation lives in this instance's memory: a load balancer must send one client's
//!   requests to one instance (the WebSocket has the same need for its connection).
//!
//! An event stream is a connection like a WebSocket and obeys the same rules, through the
//! WebSocket's own counters (`ws::Sockets`): the instance's cap, one user's cap (shared with
//! their sockets, across instances when Redis can say), one address's cap on anonymous ones.
//! The `Authorization: Bearer` header is checked against its session when the stream is
//! admitted, and again by every operation (`Caller::Connection`); each operation is charged
//! to the request budget and bounded by the operation deadline as on a WebSocket. A
//! subscription's updates, and its resync after a gap, come from the same schema streams.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::{Data, Response as GraphqlResponse};
use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::graphql_over_http::{self, GRAPHQL_RESPONSE_JSON, JSON};
use super::ws::{AddressSlot, AddressUse, OpenSlot, UserSlot, ends_operation};
use super::{HttpState, bearer_token, error_response, identify};
use crate::domain::auth;
use crate::error::AppError;
use crate::graphql::context::{Caller, ViewerCache};
use crate::graphql::loaders;
use crate::security::client::ClientIp;
use crate::security::document;

pub const TOKEN_HEADER: HeaderName = HeaderName::from_static("x-graphql-event-stream-token");
const EVENT_STREAM: &str = "text/event-stream";
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

    fn get(&self, token: &str) -> Option<Arc<Reservation>> {
        self.lock().get(token).cloned()
    }
}

/// The places an event stream holds among the instance's connections; given back when dropped.
struct Slots {
    _open: OpenSlot,
    _address: Option<AddressSlot>,
    user: Option<UserSlot>,
}

impl Slots {
    fn renew(&self) {
        if let Some(user) = &self.user {
            user.renew();
        }
    }
}

/// Who an event stream serves, checked once when it is admitted.
struct Admitted {
    user: Option<Uuid>,
    session: Arc<Data>,
    slots: Slots,
}

/// A reserved single-connection stream: its operations write events into `events`, which
/// the stream's GET reads.
struct Reservation {
    user: Option<Uuid>,
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

fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    error_response(status, code, message)
}

fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept
                .split(',')
                .any(|range| range.trim().starts_with(EVENT_STREAM))
        })
}

/// The reservation token a request names, in its header or its URL.
fn stream_token(headers: &HeaderMap, raw_query: Option<&str>) -> Option<String> {
    let header = headers
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    match header {
        Some(token) => Some(token.to_owned()),
        None => url_parameter(raw_query, "token"),
    }
}

fn url_parameter(raw_query: Option<&str>, name: &str) -> Option<String> {
    raw_query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name && !value.is_empty()).then(|| value.to_owned())
    })
}

/// Every method of `/graphql/stream`, dispatched as graphql-sse's reference server does.
pub(super) async fn graphql_stream(
    State(state): State<HttpState>,
    method: Method,
    client: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    RawQuery(raw_query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let client = client.map(|Extension(ip)| ip);
    let token = stream_token(&headers, raw_query.as_deref());
    let reservation = token.as_deref().and_then(|t| state.event_streams.get(t));
    if wants_event_stream(&headers) && (method == Method::GET || method == Method::POST) {
        return match (reservation, token) {
            (Some(reservation), Some(token)) if method == Method::GET => {
                open_reserved(&state, &headers, token, reservation)
            }
            _ => {
                distinct(
                    &state,
                    client,
                    &method,
                    &headers,
                    raw_query.as_deref(),
                    body,
                )
                .await
            }
        };
    }
    if method == Method::PUT {
        return reserve(&state, client, &headers).await;
    }
    let Some(reservation) = reservation else {
        return json_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such event stream");
    };
    if !same_caller(&state, &headers, reservation.user) {
        return json_error(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "this event stream was reserved by someone else",
        );
    }
    match method {
        Method::DELETE => {
            let Some(id) = url_parameter(raw_query.as_deref(), "operationId") else {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "BAD_REQUEST",
                    "`operationId` is missing",
                );
            };
            let stopped = reservation
                .operations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            if let Some(operation) = stopped {
                operation.abort();
            }
            StatusCode::OK.into_response()
        }
        Method::POST => start_reserved(&state, &headers, &reservation, body),
        _ => {
            let mut response = StatusCode::METHOD_NOT_ALLOWED.into_response();
            response.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, POST, PUT, DELETE"),
            );
            response
        }
    }
}

/// Whether a request on a reservation comes from who reserved it: the same user, or anonymous
/// both times.
fn same_caller(state: &HttpState, headers: &HeaderMap, user: Option<Uuid>) -> bool {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let caller = token
        .and_then(|token| state.app.tokens.decode(token).ok())
        .map(|c| c.sub);
    caller == user && (token.is_some() == user.is_some())
}

/// Checks the caller's token against its session and takes the stream's places, as a
/// WebSocket's `connection_init` does.
async fn admit(
    state: &HttpState,
    client: Option<ClientIp>,
    headers: &HeaderMap,
) -> Result<Admitted, Response> {
    let sockets = &state.sockets;
    let Some(open) = sockets.admit() else {
        return Err(json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            "this server holds all the streaming connections it can; retry shortly",
        ));
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    let unauthenticated = |why: &str| json_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", why);
    let (caller, user, address, user_slot) = match identify(&state.app, authorization) {
        Caller::Token(token, _) => {
            let app = &state.app;
            let viewer = match app.conn().await {
                Ok(mut conn) => auth::authenticate(&mut conn, &app.tokens, &token).await,
                Err(error) => Err(error),
            };
            let viewer = match viewer {
                Ok(viewer) => viewer,
                Err(AppError::Unauthenticated(why)) => return Err(unauthenticated(why)),
                Err(error) => {
                    tracing::warn!(code = error.code(), "cannot check an event stream's token");
                    return Err(super::internal_error_response());
                }
            };
            let Some(slot) = sockets.claim(&app.bus, viewer.id()).await else {
                return Err(json_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "RATE_LIMITED",
                    "too many connections for this user",
                ));
            };
            (
                Caller::Connection(token),
                Some(viewer.id()),
                None,
                Some(slot),
            )
        }
        Caller::Rejected(why) => return Err(unauthenticated(why)),
        _ => {
            let address = match client {
                Some(ClientIp(ip)) => match sockets.claim_address(ip, AddressUse::Anonymous) {
                    Some(slot) => Some(slot),
                    None => {
                        return Err(json_error(
                            StatusCode::TOO_MANY_REQUESTS,
                            "RATE_LIMITED",
                            "too many anonymous connections from this address",
                        ));
                    }
                },
                None => None,
            };
            (Caller::Anonymous, None, address, None)
        }
    };
    let mut data = Data::default();
    data.insert(caller);
    data.insert(sockets.seat_maps.clone());
    loaders::install(&state.app, &mut data);
    if let Some(ip) = client {
        data.insert(ip);
    }
    Ok(Admitted {
        user,
        session: Arc::new(data),
        slots: Slots {
            _open: open,
            _address: address,
            user: user_slot,
        },
    })
}

/// One operation's results, as a WebSocket runs them: the text's checks first, then the
/// schema's stream with the connection's session; it ends after a result that ends the
/// operation (a request that never ran, or a caller no longer signed in).
fn operation(
    state: &HttpState,
    session: Arc<Data>,
    request: async_graphql::Request,
) -> BoxStream<'static, GraphqlResponse> {
    let max_document_bytes = state.app.config.graphql.max_document_bytes;
    if let Err(error) = document::check_text(&request.query, max_document_bytes) {
        return stream::once(async move { GraphqlResponse::from_errors(vec![error]) }).boxed();
    }
    // A mutation makes answers cached before it untrustworthy.
    state.cache.note_write(&request.query);
    let results = state
        .schema
        .execute_stream_with_session_data(request.data(ViewerCache::default()), session);
    results
        .scan(false, |done, response| {
            if *done {
                return std::future::ready(None);
            }
            *done = ends_operation(&response);
            std::future::ready(Some(response))
        })
        .boxed()
}

fn event(kind: &str, data: &Value) -> String {
    format!("event: {kind}\ndata: {data}\n\n")
}

fn event_stream_response(body: Body) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Tells nginx-like proxies not to hold events back in a buffer.
    headers.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    response
}

/// Frames `events` as a response body with a comment every ping interval (keeping proxies
/// from timing the stream out, and the user's connection slot leased), ending with the
/// events, when the server shuts down, or when the client goes (the body is dropped, and
/// `keep` with it).
fn body_of<K: Send + 'static>(
    events: BoxStream<'static, String>,
    ping_interval: Duration,
    shutdown: CancellationToken,
    keep: K,
    renew: fn(&K),
) -> Body {
    let mut ping = tokio::time::interval(ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Some browsers show nothing until the first bytes arrive.
    let first = stream::once(async { Ok::<_, Infallible>(":\n\n".to_owned()) });
    let rest = stream::unfold(
        (events, ping, shutdown, keep),
        move |(mut events, mut ping, shutdown, keep)| async move {
            let text = tokio::select! {
                next = events.next() => next?,
                _ = ping.tick() => {
                    renew(&keep);
                    ":\n\n".to_owned()
                }
                () = shutdown.cancelled() => return None,
            };
            Some((Ok::<_, Infallible>(text), (events, ping, shutdown, keep)))
        },
    );
    Body::from_stream(first.chain(rest))
}

/// Distinct connections: this request is the operation, and its response the stream.
async fn distinct(
    state: &HttpState,
    client: Option<ClientIp>,
    method: &Method,
    headers: &HeaderMap,
    raw_query: Option<&str>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request = if *method == Method::GET {
        match graphql_over_http::read_get(raw_query) {
            // A subscription may be a GET here (it reads); a mutation may not.
            Ok(request)
                if !graphql_over_http::is_mutation(
                    &request.query,
                    request.operation_name.as_deref(),
                ) =>
            {
                request
            }
            Ok(_) => return graphql_over_http::method_not_allowed(),
            Err(refusal) => return refusal,
        }
    } else {
        match read_one(headers, body) {
            Ok(request) => request,
            Err(refusal) => return refusal,
        }
    };
    let admitted = match admit(state, client, headers).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal,
    };
    let events = operation(state, admitted.session.clone(), request)
        .map(|response| event("next", &json!(response)))
        .chain(stream::once(async {
            "event: complete\ndata:\n\n".to_owned()
        }))
        .boxed();
    let body = body_of(
        events,
        state.app.config.websocket.ping_interval,
        state.sockets.shutdown.clone(),
        admitted.slots,
        Slots::renew,
    );
    event_stream_response(body)
}

/// A POST body holding one request (a batch has no place in an event stream).
#[allow(clippy::result_large_err)]
fn read_one(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<async_graphql::Request, Response> {
    let body = body.map_err(|rejection| {
        json_error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            &rejection.to_string(),
        )
    })?;
    match graphql_over_http::read_post(headers, &body)? {
        async_graphql::BatchRequest::Single(request) => Ok(request),
        async_graphql::BatchRequest::Batch(_) => Err(json_error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "an event stream runs one operation per request, not a batch",
        )),
    }
}

/// Single connection, step one: a PUT reserves a stream; its token is the body.
async fn reserve(state: &HttpState, client: Option<ClientIp>, headers: &HeaderMap) -> Response {
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
fn open_reserved(
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
fn start_reserved(
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
