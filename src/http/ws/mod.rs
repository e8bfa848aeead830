//! GraphQL over WebSocket: `graphql-transport-ws` as enisdenjo/graphql-ws PROTOCOL.md specifies
//! it (close codes, `ping`/`pong` both ways, `error` messages), and the legacy `graphql-ws`
//! (subscriptions-transport-ws) for older Apollo clients.
//!
//! One task per connection runs everything: reading frames, running its operations (each a
//! stream from `Schema::execute_stream`), keep-alive and timeouts. Nothing is buffered per
//! connection beyond the one message being written, whatever its size (a whole arena's seat
//! map is megabytes): a client too slow to read stalls only its own task, and its
//! subscriptions skip to the newest state meanwhile (see `realtime::Updates`).
//!
//! Admission: an instance holds at most `max_connections` sockets (more is refused with 503
//! before the upgrade), and one address at most `max_anonymous_per_address` anonymous ones
//! (close 4429 at `connection_init`) and as many waiting for their `connection_init` (429).
//! Signed-in connections are counted per user instead.
//!
//! Here: the upgrade and what is refused before it. The messages of both protocols are in
//! `protocol`, one socket's loop in `connection`, the counts of sockets in `sockets`.

mod connection;
mod protocol;
mod sockets;

use axum::Extension;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response as HttpResponse;
use uuid::Uuid;

pub use protocol::close;
pub(super) use protocol::ends_operation;
pub use sockets::Sockets;

use super::HttpState;
use crate::error::REQUEST_ID;
use crate::security::client::ClientIp;
use connection::{Connection, close_socket};
use protocol::{LEGACY_WS, Protocol, TRANSPORT_WS};
pub(super) use sockets::{AddressSlot, AddressUse, OpenSlot, UserSlot};

/// Client messages are small GraphQL documents; per-connection read buffers stay small with
/// them. Server messages have no such cap: they are what the server chose to answer.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// What a refused upgrade suggests waiting before trying again.
const RETRY_AFTER_SECS: u64 = 5;
const READ_BUFFER_BYTES: usize = 2 * 1024;

pub(super) async fn graphql_ws(
    State(state): State<HttpState>,
    client: Option<Extension<ClientIp>>,
    upgrade: WebSocketUpgrade,
) -> HttpResponse {
    // Refused before upgrading: an HTTP answer costs less than a socket, and says why.
    let Some(open) = state.sockets.admit() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            "this server holds all the WebSocket connections it can; retry shortly",
        );
    };
    let client = client.map(|Extension(ip)| ip);
    let waiting = match client {
        Some(ClientIp(ip)) => match state.sockets.claim_address(ip, AddressUse::Waiting) {
            Some(slot) => Some(slot),
            None => {
                return refuse(
                    StatusCode::TOO_MANY_REQUESTS,
                    "RATE_LIMITED",
                    "too many connections from this address are waiting to initialise",
                );
            }
        },
        None => None,
    };
    let upgrade = upgrade
        .protocols([TRANSPORT_WS, LEGACY_WS])
        .read_buffer_size(READ_BUFFER_BYTES)
        // Written as soon as sent: nothing waits in a buffer, so nothing needs one. The write
        // buffer keeps tungstenite's unlimited maximum: capped, any message larger than the
        // cap failed to send and dropped the connection without a close frame. What bounds
        // the queue is that a connection sends one message at a time (see `send`).
        .write_buffer_size(0)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES);
    let protocol = match upgrade.selected_protocol().and_then(|p| p.to_str().ok()) {
        Some(TRANSPORT_WS) => Some(Protocol::TransportWs),
        Some(LEGACY_WS) => Some(Protocol::Legacy),
        _ => None,
    };
    let tracker = state.sockets.tracker.clone();
    upgrade.on_upgrade(move |socket| {
        tracker.track_future(async move {
            let Some(protocol) = protocol else {
                let reason = "Subprotocol not acceptable";
                close_socket(socket, close::SUBPROTOCOL_NOT_ACCEPTABLE, reason).await;
                return;
            };
            let connection_id = Uuid::new_v4().to_string();
            let mut connection = Connection::new(state, protocol);
            connection.client = client;
            connection.open = Some(open);
            connection.address = waiting;
            REQUEST_ID
                .scope(connection_id, connection.run(socket))
                .await;
        })
    })
}

/// An upgrade refused with a GraphQL-shaped error and `Retry-After`.
fn refuse(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    let mut response = super::error_response(status, code, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    response
}
