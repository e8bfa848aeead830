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

use std::convert::Infallible;
use std::sync::Arc;
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
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::graphql_over_http;
use super::ws::{AddressSlot, AddressUse, OpenSlot, UserSlot, ends_operation};
use super::{HttpState, error_response, identify};
use crate::domain::auth;
use crate::error::AppError;
use crate::graphql::context::{Caller, ViewerCache};
use crate::graphql::loaders;
use crate::security::client::ClientIp;
use crate::security::document;

mod single_connection;

pub use single_connection::EventStreams;

pub const TOKEN_HEADER: HeaderName = HeaderName::from_static("x-graphql-event-stream-token");
const EVENT_STREAM: &str = "text/event-stream";
/// The places an event stream holds among the instance's connections; given back when dropped.
pub(super) struct Slots {
    _open: OpenSlot,
    _address: Option<AddressSlot>,
    user: Option<UserSlot>,
}

impl Slots {
    pub(super) fn renew(&self) {
        if let Some(user) = &self.user {
            user.renew();
        }
    }
}

/// Who an event stream serves, checked once when it is admitted.
pub(super) struct Admitted {
    pub(super) user: Option<Uuid>,
    pub(super) session: Arc<Data>,
    pub(super) slots: Slots,
}

pub(super) fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
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
                single_connection::open(&state, &headers, token, reservation)
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
        return single_connection::reserve(&state, client, &headers).await;
    }
    let Some(reservation) = reservation else {
        return json_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such event stream");
    };
    if !single_connection::same_caller(&state, &headers, reservation.user) {
        return json_error(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "this event stream was reserved by someone else",
        );
    }
    match method {
        Method::DELETE => match url_parameter(raw_query.as_deref(), "operationId") {
            Some(id) => single_connection::stop(&reservation, &id),
            None => json_error(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                "`operationId` is missing",
            ),
        },
        Method::POST => single_connection::start(&state, &headers, &reservation, body),
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

/// Checks the caller's token against its session and takes the stream's places, as a
/// WebSocket's `connection_init` does.
pub(super) async fn admit(
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
pub(super) fn operation(
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

pub(super) fn event(kind: &str, data: &Value) -> String {
    format!("event: {kind}\ndata: {data}\n\n")
}

pub(super) fn event_stream_response(body: Body) -> Response {
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
pub(super) fn body_of<K: Send + 'static>(
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
pub(super) fn read_one(
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
