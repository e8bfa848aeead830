//! One socket's life: a single task reads its frames, runs its operations (each a stream from
//! `Schema::execute_stream`, or a shared execution from `fanout`), keeps it alive with pings
//! and ends it on timeouts, errors or shutdown, with the close code the protocol asks for.
//! `connection_init` checks the token and takes the connection's place (its user's, or its
//! address's when anonymous) before anything runs.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::{Data, Pos, Response, ServerError};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{self, BoxStream};
use futures_util::{FutureExt, StreamExt};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::StreamMap;
use uuid::Uuid;

use super::protocol::{
    ClientMessage, OperationPayload, Protocol, close, ends_operation, message, message_with,
    prebuilt, prebuilt_text,
};
use super::sockets::{AddressSlot, AddressUse, OpenSlot, UserSlot};
use crate::config::WebSocketConfig;
use crate::domain::{Viewer, auth};
use crate::error::AppError;
use crate::graphql::context::{Caller, ViewerCache};
use crate::graphql::loaders;
use crate::http::fanout::{Fanout, Frame};
use crate::http::{HttpState, bearer_token, identify, init_token};
use crate::security::client::ClientIp;
use crate::security::document;
use crate::security::rate_limit::{Bucket, budget_key};

const MAX_ID_BYTES: usize = 128;
/// How long a closing connection waits for the client's close frame before dropping the TCP
/// connection (dropping earlier could reset it before the client reads the close code).
pub(super) const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A `connection_init` token, checked against its session.
enum Checked {
    Anonymous,
    Signed(Viewer),
    Rejected(&'static str),
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

pub(super) struct Connection {
    state: HttpState,
    config: WebSocketConfig,
    protocol: Protocol,
    init_received: bool,
    /// Set once acknowledged: the caller and loaders every operation of the connection shares.
    session: Option<Arc<Data>>,
    user_slot: Option<UserSlot>,
    /// This connection's place among the instance's.
    pub(super) open: Option<OpenSlot>,
    /// Its place among its address's waiting, then anonymous, connections.
    pub(super) address: Option<AddressSlot>,
    /// The client's address, for per-address rate limits on what it does over the socket.
    pub(super) client: Option<ClientIp>,
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
    pub(super) fn new(state: HttpState, protocol: Protocol) -> Self {
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

    pub(super) async fn run(mut self, mut socket: WebSocket) {
        match self.serve(&mut socket).await {
            Stop::Close(code, reason) => close_socket(socket, code, &reason).await,
            Stop::Gone => {}
        }
    }

    async fn serve(&mut self, socket: &mut WebSocket) -> Stop {
        // A token of its own: waiting on the server's token itself would take that token's
        // lock, shared by every connection, each time this task wakes (for every message).
        let shutdown = self.state.sockets.shutdown.child_token();
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
                    return stop(close::SERVICE_RESTART, "server restarting");
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
                        return stop(close::SERVICE_RESTART, "server restarting");
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
            .then(|| stop(close::SERVICE_RESTART, "server restarting"))
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
        // The shutdown token is read here too: `select!` may take this message before the
        // branch that notices the token, and an operation must not start once it is cancelled.
        let refusal = if self.draining || self.state.sockets.shutdown.is_cancelled() {
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
                // Counted here, once per socket, rather than once per shared execution.
                use crate::telemetry::metrics::{SharedExecution, Subscribed};
                let watching = Subscribed::new("seatAvailability");
                let request = move || async_graphql::Request::from(payload).data(SharedExecution);
                self.state
                    .fanout
                    .join(key, request)
                    .map(move |frame| {
                        let _counted = &watching;
                        Output::Shared(frame)
                    })
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
            Output::Shared(Frame::Next(payload)) => {
                Message::Text(payload.message(&id, next, prebuilt_text))
            }
        };
        send(socket, patience, text).await?;
        self.state.sockets.messages_sent.increment(1);
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

/// Sends one message. A client that stops reading would hold the task forever, so one that
/// takes longer than `patience` counts as gone.
async fn send(socket: &mut WebSocket, patience: Duration, message: Message) -> Result<(), Stop> {
    match tokio::time::timeout(patience, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(Stop::Gone),
    }
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
pub(super) async fn close_socket(mut socket: WebSocket, code: u16, reason: &str) {
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
