//! The two protocols' messages: `graphql-transport-ws` as enisdenjo/graphql-ws PROTOCOL.md
//! specifies it (close codes, `ping`/`pong` both ways, `error` messages) and the legacy
//! `graphql-ws` (subscriptions-transport-ws) for older Apollo clients. What a client may send,
//! how the server's messages are written, and which results end an operation; what a
//! connection does with them is `connection`'s.

use async_graphql::Response;
use axum::extract::ws::{Message, Utf8Bytes};
use serde::{Deserialize, Serialize};

pub(super) const TRANSPORT_WS: &str = "graphql-transport-ws";
pub(super) const LEGACY_WS: &str = "graphql-ws";

/// Close codes of graphql-transport-ws, and the standard ones used here.
pub mod close {
    pub const NORMAL: u16 = 1000;
    /// Sent on shutdown: "service restart", i.e. try again shortly. graphql-ws clients do, and
    /// the load balancer sends them to another instance.
    pub const SERVICE_RESTART: u16 = 1012;
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

/// The protocol a connection speaks, as chosen at the upgrade.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    TransportWs,
    Legacy,
}

/// Messages a client may send, in either protocol.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ClientMessage {
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
pub(super) struct OperationPayload {
    #[serde(default)]
    pub(super) query: Option<String>,
    #[serde(default)]
    pub(super) operation_name: Option<String>,
    #[serde(default)]
    pub(super) variables: Option<serde_json::Map<String, serde_json::Value>>,
    /// Handed to the schema's extensions, as over HTTP (`persistedQuery`, see
    /// `security::persisted`).
    #[serde(default)]
    extensions: Option<serde_json::Map<String, serde_json::Value>>,
}

impl OperationPayload {
    pub(super) fn is_valid(&self) -> bool {
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

pub(super) fn message<T: Serialize>(
    id: Option<&str>,
    kind: &'static str,
    payload: Option<T>,
) -> Message {
    let text = serde_json::to_string(&ServerMessage { id, kind, payload })
        .unwrap_or_else(|_| format!(r#"{{"type":"{kind}"}}"#));
    Message::text(text)
}

pub(super) fn message_with(
    id: Option<&str>,
    kind: &'static str,
    payload: Option<serde_json::Value>,
) -> Message {
    message(id, kind, payload)
}

/// A message around a payload serialized once for many connections.
pub(super) fn prebuilt(id: &str, kind: &'static str, payload: &str) -> Message {
    Message::Text(prebuilt_text(id, kind, payload))
}

/// The text of a message around a payload serialized once for many connections.
pub(super) fn prebuilt_text(id: &str, kind: &'static str, payload: &str) -> Utf8Bytes {
    let id = serde_json::to_string(id).unwrap_or_else(|_| "\"\"".to_owned());
    format!(r#"{{"id":{id},"type":"{kind}","payload":{payload}}}"#).into()
}

/// A result with no data whose errors all come before execution (the document does not parse
/// or validate: no `path`) or all refuse the caller (UNAUTHENTICATED: not signed in, token
/// expired, session ended) is sent as an `error` message, which ends the operation.
pub(in crate::http) fn ends_operation(response: &Response) -> bool {
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
