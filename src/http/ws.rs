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

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::{Data, Pos, Response, ServerError};
use axum::Extension;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response as HttpResponse;
use futures_util::stream::{self, BoxStream};
use futures_util::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::StreamMap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::fanout::{Fanout, Frame};
use super::{HttpState, bearer_token, identify, init_token};
use crate::config::WebSocketConfig;
use crate::domain::{Viewer, auth};
use crate::error::{AppError, REQUEST_ID};
use crate::graphql::context::{Caller, ViewerCache};
use crate::graphql::loaders;
use crate::graphql::seats::SeatMaps;
use crate::realtime::Bus;
use crate::security::client::ClientIp;
use crate::security::document;
use crate::security::rate_limit::{Bucket, budget_key};

/// A `connection_init` token, checked against its session.
enum Checked {
    Anonymous,
    Signed(Viewer),
    Rejected(&'static str),
}

const TRANSPORT_WS: &str = "graphql-transport-ws";
const LEGACY_WS: &str = "graphql-ws";
/// Client messages are small GraphQL documents; per-connection read buffers stay small with
/// them. Server messages have no such cap: they are what the server chose to answer.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// What a refused upgrade suggests waiting before trying again.
const RETRY_AFTER_SECS: u64 = 5;
const READ_BUFFER_BYTES: usize = 2 * 1024;
const MAX_ID_BYTES: usize = 128;
/// How long a closing connection waits for the client's close frame before dropping the TCP
/// connection (dropping earlier could reset it before the client reads the close code).
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Close codes of graphql-transport-ws, and the standard ones used here.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const INVALID_MESSAGE: u16 = 4400;
    pub const UNAUTHORIZED: u16 = 4401;
    pub const FORBIDDEN: u16 = 4403;
    pub const SUBPROTOCOL_NOT_ACCEPTABLE: u16 = 4406;
    pub const INIT_TIMEOUT: u16 = 4408;
    pub const SUBSCRIBER_EXISTS: u16 = 4409;
    pub const TOO_MANY_INIT: u16 = 4429;
    pub const INTERNAL_ERROR: u16 = 4500;
}

/// What every WebSocket connection of one server shares: its limits, the shutdown signal, the
/// tracker shutdown waits on, the counts of connections (in all, per user, per address) and
/// the seat maps its viewers share.
pub struct Sockets {
    config: WebSocketConfig,
    pub(super) shutdown: CancellationToken,
    tracker: TaskTracker,
    per_user: Mutex<HashMap<Uuid, usize>>,
    open: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, AddressCount>>,
    pub(super) seat_maps: Arc<SeatMaps>,
}

/// One address's connections that are not signed in.
#[derive(Default)]
struct AddressCount {
    /// Upgraded, `connection_init` not yet received.
    waiting: usize,
    anonymous: usize,
}

#[derive(Clone, Copy)]
pub(super) enum AddressUse {
    Waiting,
    Anonymous,
}

impl AddressCount {
    fn of(&mut self, kind: AddressUse) -> &mut usize {
        match kind {
            AddressUse::Waiting => &mut self.waiting,
            AddressUse::Anonymous => &mut self.anonymous,
        }
    }
}

/// A connection's place among the instance's, given back when the connection ends.
pub(super) struct OpenSlot(Arc<Sockets>);

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection's place in its address's count, given back when it ends or signs in.
pub(super) struct AddressSlot {
    sockets: Arc<Sockets>,
    ip: IpAddr,
    kind: AddressUse,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut per_address = self.sockets.lock_addresses();
        if let Some(count) = per_address.get_mut(&self.ip) {
            *count.of(self.kind) -= 1;
            if count.waiting == 0 && count.anonymous == 0 {
                per_address.remove(&self.ip);
            }
        }
    }
}

impl Sockets {
    pub fn new(config: WebSocketConfig) -> Self {
        Self {
            config,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            per_user: Mutex::default(),
            open: AtomicUsize::new(0),
            per_address: Mutex::default(),
            seat_maps: Arc::default(),
        }
    }

    /// Takes one of the instance's connection places, if any is left.
    pub(super) fn admit(self: &Arc<Self>) -> Option<OpenSlot> {
        let max = self.config.max_connections;
        self.open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()?;
        Some(OpenSlot(self.clone()))
    }

    /// Takes one of the address's places for a waiting or an anonymous connection, if any is
    /// left.
    pub(super) fn claim_address(
        self: &Arc<Self>,
        ip: IpAddr,
        kind: AddressUse,
    ) -> Option<AddressSlot> {
        let max = self.config.max_anonymous_per_address;
        let mut per_address = self.lock_addresses();
        let count = per_address.entry(ip).or_default();
        if max > 0 && *count.of(kind) >= max {
            return None;
        }
        *count.of(kind) += 1;
        Some(AddressSlot {
            sockets: self.clone(),
            ip,
            kind,
        })
    }

    fn lock_addresses(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, AddressCount>> {
        self.per_address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks every connection to finish its operations in flight and close with 1001.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Shuts down and waits for every connection (at most the drain time and a little more).
    pub async fn shut_down(&self) {
        self.begin_shutdown();
        self.tracker.close();
        let limit = self.config.shutdown_drain + CLOSE_GRACE + Duration::from_secs(1);
        if tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("WebSocket connections still open after the shutdown drain");
        }
    }

    /// Takes one of the user's connection slots, if any is left: on this instance, and across
    /// instances when Redis can say.
    pub(super) async fn claim(self: &Arc<Self>, bus: &Bus, user: Uuid) -> Option<UserSlot> {
        {
            let mut per_user = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
            let count = per_user.entry(user).or_default();
            if *count >= self.config.max_connections_per_user {
                return None;
            }
            *count += 1;
        }
        // Made before asking Redis, so the local count is given back whatever the answer.
        let slot = UserSlot {
            sockets: self.clone(),
            bus: bus.clone(),
            user,
            connection: Uuid::new_v4(),
            held_in_redis: false,
        };
        self.claim_shared(slot).await
    }

    async fn claim_shared(&self, mut slot: UserSlot) -> Option<UserSlot> {
        let max = self.config.max_connections_per_user;
        let claimed = slot
            .bus
            .claim_connection_slot(slot.user, slot.connection, max, self.slot_lease())
            .await;
        match claimed {
            Some(false) => None,
            Some(true) => {
                slot.held_in_redis = true;
                Some(slot)
            }
            None => Some(slot),
        }
    }

    /// Renewed at every ping, and a connection silent for the idle timeout is closed, so a
    /// lease this long outlives only connections whose instance died.
    fn slot_lease(&self) -> Duration {
        self.config.idle_timeout + self.config.ping_interval * 2
    }
}

/// A signed-in connection's place in its user's count, given back when the connection ends.
pub(super) struct UserSlot {
    sockets: Arc<Sockets>,
    bus: Bus,
    user: Uuid,
    connection: Uuid,
    held_in_redis: bool,
}

impl UserSlot {
    pub(super) fn renew(&self) {
        if self.held_in_redis {
            let lease = self.sockets.slot_lease();
            self.bus
                .renew_connection_slot(self.user, self.connection, lease);
        }
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        if self.held_in_redis {
            self.bus.release_connection_slot(self.user, self.connection);
        }
        let mut per_user = self
            .sockets
            .per_user
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = per_user.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                per_user.remove(&self.user);
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    TransportWs,
    Legacy,
}

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

/// Messages a client may send, in either protocol.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    ConnectionInit {
        #[serde(default)]
        payload: Option<serde_json::Value>,
    },
    Ping {
        #[serde(default)]
        payload: Option<serde_json::Value>,
    },
    Pong {
        #[serde(default)]
        #[expect(dead_code, reason = "a pong only proves the client is there")]
        payload: Option<serde_json::Value>,
    },
    Subscribe {
        id: String,
        payload: OperationPayload,
    },
    Complete {
        id: String,
    },
    // The legacy protocol's names.
    Start {
        id: String,
        payload: OperationPayload,
    },
    Stop {
        id: String,
    },
    ConnectionTerminate,
}

/// A `subscribe` payload as the protocol defines it: `query` is required (unless a persisted
/// query's hash stands for it, as over HTTP), `variables` and `extensions` are objects when
/// present.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OperationPayload {
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    operation_name: Option<String>,
    #[serde(default)]
    variables: Option<serde_json::Map<String, serde_json::Value>>,
    /// Handed to the schema's extensions, as over HTTP (`persistedQuery`, see
    /// `security::persisted`).
    #[serde(default)]
    extensions: Option<serde_json::Map<String, serde_json::Value>>,
}

impl OperationPayload {
    fn is_valid(&self) -> bool {
        self.query.is_some()
            || self
                .extensions
                .as_ref()
                .is_some_and(|e| e.contains_key("persistedQuery"))
    }
}

impl From<OperationPayload> for async_graphql::Request {
    fn from(payload: OperationPayload) -> Self {
        let mut request = async_graphql::Request::new(payload.query.unwrap_or_default());
        for (name, value) in payload.extensions.unwrap_or_default() {
            if let Ok(value) = async_graphql::Value::from_json(value) {
                request.extensions.insert(name, value);
            }
        }
        if let Some(name) = payload.operation_name {
            request = request.operation_name(name);
        }
        if let Some(variables) = payload.variables {
            request = request.variables(async_graphql::Variables::from_json(
                serde_json::Value::Object(variables),
            ));
        }
        request
    }
}

#[derive(Serialize)]
struct ServerMessage<'a, T: Serialize> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<T>,
}

fn message<T: Serialize>(id: Option<&str>, kind: &'static str, payload: Option<T>) -> Message {
    let text = serde_json::to_string(&ServerMessage { id, kind, payload })
        .unwrap_or_else(|_| format!(r#"{{"type":"{kind}"}}"#));
    Message::text(text)
}

/// Why the loop stopped: a close frame to send, or a connection already gone.
enum Stop {
    Close(u16, String),
    Gone,
}

fn stop(code: u16, reason: impl Into<String>) -> Stop {
    Stop::Close(code, reason.into())
}

/// What an operation produces: its own results, or a shared execution's (already serialized),
/// then `End`.
enum Output {
    Own(Response),
    Shared(Frame),
    End,
}

type Operation = BoxStream<'static, Output>;

struct Connection {
    state: HttpState,
    config: WebSocketConfig,
    protocol: Protocol,
    init_received: bool,
    /// Set once acknowledged: the caller and loaders every operation of the connection shares.
    session: Option<Arc<Data>>,
    user_slot: Option<UserSlot>,
    /// This connection's place among the instance's.
    open: Option<OpenSlot>,
    /// Its place among its address's waiting, then anonymous, connections.
    address: Option<AddressSlot>,
    /// The client's address, for per-address rate limits on what it does over the socket.
    client: Option<ClientIp>,
    /// By operation id; shared ids, since the map hands out a copy of the key with every
    /// message.
    operations: StreamMap<Arc<str>, Operation>,
    /// Operations that have produced a result; on shutdown these (subscriptions, now only
    /// listening) are dropped at once, while the others (queries and mutations in flight) may
    /// finish first.
    answered: HashSet<Arc<str>>,
    draining: bool,
}

impl Connection {
    fn new(state: HttpState, protocol: Protocol) -> Self {
        Self {
            config: state.sockets.config,
            state,
            protocol,
            init_received: false,
            session: None,
            user_slot: None,
            open: None,
            address: None,
            client: None,
            operations: StreamMap::new(),
            answered: HashSet::new(),
            draining: false,
        }
    }

    async fn run(mut self, mut socket: WebSocket) {
        match self.serve(&mut socket).await {
            Stop::Close(code, reason) => close_socket(socket, code, &reason).await,
            Stop::Gone => {}
        }
    }

    async fn serve(&mut self, socket: &mut WebSocket) -> Stop {
        let shutdown = self.state.sockets.shutdown.clone();
        // Made once: a new `cancelled()` per turn of the loop would register with (and leave)
        // the token's waiters for every message sent.
        let cancelled = shutdown.cancelled();
        let init_timeout = tokio::time::sleep(self.config.init_timeout);
        let idle = tokio::time::sleep(self.config.idle_timeout);
        let drain = tokio::time::sleep(Duration::MAX / 4);
        tokio::pin!(cancelled, init_timeout, idle, drain);
        // The first ping comes at a random point of the first interval, so connections opened
        // together (after a deploy, or at an onsale) do not all ping at the same moment.
        let first = self
            .config
            .ping_interval
            .mul_f64(rand::random_range(0.5..1.0));
        let mut ping = tokio::time::interval_at(Instant::now() + first, self.config.ping_interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut cancelled, if !self.draining => {
                    if let Some(stop) = self.start_draining() {
                        return stop;
                    }
                    drain.as_mut().reset(Instant::now() + self.config.shutdown_drain);
                }
                () = &mut drain, if self.draining => {
                    return stop(close::GOING_AWAY, "server shutting down");
                }
                () = &mut init_timeout, if !self.init_received => {
                    return stop(close::INIT_TIMEOUT, "Connection initialisation timeout");
                }
                () = &mut idle => return stop(close::NORMAL, "idle timeout"),
                _ = ping.tick() => {
                    if let Some(slot) = &self.user_slot {
                        slot.renew();
                    }
                    let keep_alive = match self.protocol {
                        Protocol::TransportWs => message::<()>(None, "ping", None),
                        Protocol::Legacy => message::<()>(None, "ka", None),
                    };
                    if let Err(stop) = send(socket, self.config.idle_timeout, keep_alive).await {
                        return stop;
                    }
                    // Legacy clients never answer `ka`; a WebSocket ping gets a pong from any
                    // client library, so silence still means the client is gone.
                    if self.protocol == Protocol::Legacy
                        && let Err(stop) = send(socket, self.config.idle_timeout, Message::Ping(Default::default())).await
                    {
                        return stop;
                    }
                }
                frame = socket.recv() => {
                    idle.as_mut().reset(Instant::now() + self.config.idle_timeout);
                    let result = match frame {
                        None => return Stop::Gone,
                        Some(Err(error)) => return read_error(&error),
                        // Boxed, here and below: the task keeps room for its largest state
                        // for its whole life, and an idle connection should not pay for the
                        // token check's database query.
                        Some(Ok(Message::Text(text))) => {
                            Box::pin(self.on_text(socket, text.as_str())).await
                        }
                        Some(Ok(Message::Binary(_))) => {
                            Err(stop(close::INVALID_MESSAGE, "Invalid message received: binary frames are not part of the protocol"))
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
                        Some(Ok(Message::Close(_))) => return Stop::Gone,
                    };
                    if let Err(stop) = result {
                        return stop;
                    }
                }
                Some((id, output)) = self.operations.next(), if !self.operations.is_empty() => {
                    if let Err(stop) = Box::pin(self.on_output(socket, id, output)).await {
                        return stop;
                    }
                    if self.draining && self.operations.is_empty() {
                        return stop(close::GOING_AWAY, "server shutting down");
                    }
                }
            }
        }
    }

    /// Drops the subscriptions (clients resubscribe elsewhere) and keeps operations still
    /// waiting for their result; closes at once when there are none.
    fn start_draining(&mut self) -> Option<Stop> {
        self.draining = true;
        for id in std::mem::take(&mut self.answered) {
            self.operations.remove(&*id);
        }
        self.operations
            .is_empty()
            .then(|| stop(close::GOING_AWAY, "server shutting down"))
    }

    async fn on_text(&mut self, socket: &mut WebSocket, text: &str) -> Result<(), Stop> {
        let Ok(message) = serde_json::from_str::<ClientMessage>(text) else {
            return Err(stop(close::INVALID_MESSAGE, "Invalid message received"));
        };
        let legacy = self.protocol == Protocol::Legacy;
        match message {
            ClientMessage::ConnectionInit { payload } => self.on_init(socket, payload).await,
            ClientMessage::Ping { payload } if !legacy => {
                let payload = payload.filter(|p| !p.is_null());
                send(
                    socket,
                    self.config.idle_timeout,
                    message_with(None, "pong", payload),
                )
                .await
            }
            ClientMessage::Pong { .. } if !legacy => Ok(()),
            ClientMessage::Subscribe { id, payload } if !legacy => {
                self.on_subscribe(socket, id, payload).await
            }
            ClientMessage::Start { id, payload } if legacy => {
                self.on_subscribe(socket, id, payload).await
            }
            ClientMessage::Complete { id } if !legacy => {
                self.forget(&id);
                Ok(())
            }
            ClientMessage::Stop { id } if legacy => {
                self.forget(&id);
                Ok(())
            }
            ClientMessage::ConnectionTerminate if legacy => Err(stop(close::NORMAL, "terminated")),
            _ => Err(stop(close::INVALID_MESSAGE, "Invalid message received")),
        }
    }

    async fn on_init(
        &mut self,
        socket: &mut WebSocket,
        payload: Option<serde_json::Value>,
    ) -> Result<(), Stop> {
        if self.init_received {
            return Err(stop(
                close::TOO_MANY_INIT,
                "Too many initialisation requests",
            ));
        }
        self.init_received = true;
        let payload = payload.unwrap_or(serde_json::Value::Null);
        if !(payload.is_null() || payload.is_object()) {
            return Err(stop(close::INVALID_MESSAGE, "Invalid message received"));
        }
        let authorization = init_token(&payload);
        // A connection is refused at once if its token's session is over.
        let checked = match identify(&self.state.app, authorization.as_deref()) {
            Caller::Token(token, _) => {
                let app = &self.state.app;
                let viewer = match app.conn().await {
                    Ok(mut conn) => auth::authenticate(&mut conn, &app.tokens, &token).await,
                    Err(error) => Err(error),
                };
                match viewer {
                    Ok(viewer) => Ok(Checked::Signed(viewer)),
                    Err(AppError::Unauthenticated(why)) => Ok(Checked::Rejected(why)),
                    Err(error) => Err(error),
                }
            }
            Caller::Rejected(why) => Ok(Checked::Rejected(why)),
            _ => Ok(Checked::Anonymous),
        };
        let caller = match checked {
            Ok(Checked::Signed(viewer)) => {
                let Some(slot) = self
                    .state
                    .sockets
                    .claim(&self.state.app.bus, viewer.id())
                    .await
                else {
                    return Err(stop(
                        close::TOO_MANY_INIT,
                        "Too many connections for this user",
                    ));
                };
                self.user_slot = Some(slot);
                // Counted as its user's now, not its address's.
                self.address = None;
                let token = authorization.as_deref().and_then(bearer_token);
                Caller::Connection(token.unwrap_or_default().to_owned())
            }
            Ok(Checked::Rejected(why)) => {
                if self.protocol == Protocol::Legacy {
                    let error = serde_json::json!({ "message": why });
                    send(
                        socket,
                        self.config.idle_timeout,
                        message_with(None, "connection_error", Some(error)),
                    )
                    .await?;
                }
                return Err(stop(close::FORBIDDEN, "Forbidden"));
            }
            Ok(Checked::Anonymous) => {
                if let Some(ClientIp(ip)) = self.client {
                    let sockets = &self.state.sockets;
                    let Some(slot) = sockets.claim_address(ip, AddressUse::Anonymous) else {
                        return Err(stop(
                            close::TOO_MANY_INIT,
                            "Too many anonymous connections from this address",
                        ));
                    };
                    self.address = Some(slot);
                }
                Caller::Anonymous
            }
            Err(error) => {
                tracing::warn!(
                    code = error.code(),
                    "cannot check a WebSocket connection's token"
                );
                return Err(stop(close::INTERNAL_ERROR, "Internal server error"));
            }
        };
        let mut data = Data::default();
        data.insert(caller);
        data.insert(self.state.sockets.seat_maps.clone());
        loaders::install(&self.state.app, &mut data);
        if let Some(ip) = self.client {
            data.insert(ip);
        }
        self.session = Some(Arc::new(data));
        send(
            socket,
            self.config.idle_timeout,
            message::<()>(None, "connection_ack", None),
        )
        .await?;
        if self.protocol == Protocol::Legacy {
            send(
                socket,
                self.config.idle_timeout,
                message::<()>(None, "ka", None),
            )
            .await?;
        }
        Ok(())
    }

    async fn on_subscribe(
        &mut self,
        socket: &mut WebSocket,
        id: String,
        payload: OperationPayload,
    ) -> Result<(), Stop> {
        let Some(session) = &self.session else {
            return Err(stop(close::UNAUTHORIZED, "Unauthorized"));
        };
        // Clients use UUIDs or counters; a long id is only a way to make the server hold more.
        if id.is_empty() || id.len() > MAX_ID_BYTES || !payload.is_valid() {
            return Err(stop(close::INVALID_MESSAGE, "Invalid message received"));
        }
        if self.operations.contains_key(id.as_str()) {
            return Err(stop(
                close::SUBSCRIBER_EXISTS,
                format!("Subscriber for {id} already exists"),
            ));
        }
        let refusal = if self.draining {
            Some((
                "the server is shutting down; reconnect",
                "SERVICE_UNAVAILABLE",
            ))
        } else if self.operations.len() >= self.config.max_operations_per_connection {
            Some((
                "too many operations open on this connection",
                "RATE_LIMITED",
            ))
        } else {
            None
        };
        if let Some((text, code)) = refusal {
            let mut error = ServerError::new(text, None);
            error
                .extensions
                .get_or_insert_with(Default::default)
                .set("code", code);
            return send(
                socket,
                self.config.idle_timeout,
                self.error_message(&id, &[error]),
            )
            .await;
        }
        // The text's checks come before anything parses it, as over HTTP.
        let query = payload.query.as_deref().unwrap_or_default();
        let max_document_bytes = self.state.app.config.graphql.max_document_bytes;
        if let Err(error) = document::check_text(query, max_document_bytes) {
            let refusal = self.error_message(&id, &[error]);
            return send(socket, self.config.idle_timeout, refusal).await;
        }
        let shared = Fanout::shareable(
            query,
            payload.operation_name.as_deref(),
            payload.variables.as_ref(),
        );
        let results: Operation = match shared {
            Some(key) => {
                let user = self.user_slot.as_ref().map(|slot| slot.user);
                if let Err(error) = charge_shared(&self.state, user, self.client).await {
                    let refusal = self.error_message(&id, &[error]);
                    return send(socket, self.config.idle_timeout, refusal).await;
                }
                self.state
                    .fanout
                    .join(key, move || payload.into())
                    .map(Output::Shared)
                    .boxed()
            }
            None => {
                // A mutation makes answers cached before it untrustworthy.
                self.state.cache.note_write(query);
                // The caller is looked up at most once per operation (and again for the next).
                let request = async_graphql::Request::from(payload).data(ViewerCache::default());
                self.state
                    .schema
                    .execute_stream_with_session_data(request, session.clone())
                    .map(Output::Own)
                    .boxed()
            }
        };
        let operation = results.chain(stream::once(async { Output::End })).boxed();
        self.operations.insert(id.into(), operation);
        Ok(())
    }

    fn forget(&mut self, id: &str) {
        self.operations.remove(id);
        self.answered.remove(id);
    }

    fn error_message(&self, id: &str, errors: &[ServerError]) -> Message {
        message(Some(id), "error", Some(errors))
    }

    async fn on_output(
        &mut self,
        socket: &mut WebSocket,
        id: Arc<str>,
        output: Output,
    ) -> Result<(), Stop> {
        let patience = self.config.idle_timeout;
        let next = match self.protocol {
            Protocol::TransportWs => "next",
            Protocol::Legacy => "data",
        };
        let text = match output {
            Output::End | Output::Shared(Frame::Complete) => {
                self.forget(&id);
                return send(
                    socket,
                    patience,
                    message::<()>(Some(&*id), "complete", None),
                )
                .await;
            }
            Output::Own(response) if ends_operation(&response) => {
                self.forget(&id);
                return send(socket, patience, self.error_message(&id, &response.errors)).await;
            }
            Output::Shared(Frame::Error(errors)) => {
                self.forget(&id);
                return send(socket, patience, prebuilt(&id, "error", &errors)).await;
            }
            Output::Own(response) => message(Some(&*id), next, Some(&response)),
            Output::Shared(Frame::Next(payload)) => prebuilt(&id, next, &payload),
        };
        send(socket, patience, text).await?;
        if !self.draining {
            // Every message of a subscription comes here: only its first changes the set.
            if !self.answered.contains(&id) {
                self.answered.insert(id);
            }
            return Ok(());
        }
        // Shutting down: a query or mutation is complete now; a subscription that started
        // during shutdown has had its first message and is dropped.
        let finished = self
            .operations
            .remove(&*id)
            .is_some_and(|mut rest| matches!(rest.next().now_or_never(), Some(Some(Output::End))));
        self.forget(&id);
        if finished {
            send(
                socket,
                patience,
                message::<()>(Some(&*id), "complete", None),
            )
            .await?;
        }
        Ok(())
    }
}

/// Charges a shared subscription to the request budget as `security::rate_limit`'s
/// `WebSocketBudget` charges every other operation (shared ones do not run through the
/// schema per connection): to the user when signed in, else to the address.
async fn charge_shared(
    state: &HttpState,
    user: Option<Uuid>,
    client: Option<ClientIp>,
) -> Result<(), ServerError> {
    let app = &state.app;
    let limit = app.config.rate_limits.requests;
    if limit.is_none() {
        return Ok(());
    }
    let Some(client) = budget_key(user, client) else {
        return Ok(());
    };
    app.rate_limiter
        .check(Bucket::Requests, limit, &client)
        .await
        .map(drop)
        .map_err(|limited| {
            let error: async_graphql::Error = AppError::from(limited).into();
            error.into_server_error(Pos::default())
        })
}

/// A message around a payload serialized once for many connections.
fn prebuilt(id: &str, kind: &'static str, payload: &str) -> Message {
    let id = serde_json::to_string(id).unwrap_or_else(|_| "\"\"".to_owned());
    Message::text(format!(
        r#"{{"id":{id},"type":"{kind}","payload":{payload}}}"#
    ))
}

/// Sends one message. A client that stops reading would hold the task forever, so one that
/// takes longer than `patience` counts as gone.
async fn send(socket: &mut WebSocket, patience: Duration, message: Message) -> Result<(), Stop> {
    match tokio::time::timeout(patience, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(Stop::Gone),
    }
}

fn message_with(
    id: Option<&str>,
    kind: &'static str,
    payload: Option<serde_json::Value>,
) -> Message {
    message(id, kind, payload)
}

/// A result with no data whose errors all come before execution (the document does not parse
/// or validate: no `path`) or all refuse the caller (UNAUTHENTICATED: not signed in, token
/// expired, session ended) is sent as an `error` message, which ends the operation.
pub(super) fn ends_operation(response: &Response) -> bool {
    if response.errors.is_empty() || !matches!(response.data, async_graphql::Value::Null) {
        return false;
    }
    let before_execution = response.errors.iter().all(|e| e.path.is_empty());
    let unauthenticated = response.errors.iter().all(|e| {
        e.extensions
            .as_ref()
            .and_then(|x| x.get("code"))
            .is_some_and(|code| *code == async_graphql::Value::from("UNAUTHENTICATED"))
    });
    before_execution || unauthenticated
}

/// A frame the server could not read: too big for the limits, or not WebSocket at all.
fn read_error(error: &axum::Error) -> Stop {
    let too_big = std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<tungstenite::Error>())
        .is_some_and(|error| matches!(error, tungstenite::Error::Capacity(_)));
    if too_big {
        stop(close::MESSAGE_TOO_BIG, "message too big")
    } else {
        tracing::debug!(%error, "WebSocket read failed");
        Stop::Gone
    }
}

/// Sends a close frame and waits briefly for the client's, so the code reaches it.
async fn close_socket(mut socket: WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}
