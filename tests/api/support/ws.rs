//! A graphql-transport-ws / graphql-ws client over a real WebSocket, and reading what the
//! `seatAvailability` subscription sends.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::app::TestApp;
use super::eventually::WAIT;

pub const SEATS: &str = "subscription($id: ID!) { seatAvailability(eventId: $id) { eventId capacity seatsAvailable soldOut version } }";

/// A small graphql-transport-ws / graphql-ws client, enough to drive the server like Apollo or urql would.
pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    legacy: bool,
}

impl WsClient {
    pub async fn connect(url: &str, protocol: &str, init: Value) -> Result<Self, String> {
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
        let (socket, response) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| e.to_string())?;
        assert_eq!(response.headers()["sec-websocket-protocol"], protocol);
        let mut client = Self {
            socket,
            legacy: protocol == "graphql-ws",
        };
        client
            .send(json!({ "type": "connection_init", "payload": init }))
            .await;
        let ack = client.next_message().await?;
        if ack["type"] != "connection_ack" {
            return Err(format!("expected connection_ack, got {ack}"));
        }
        Ok(client)
    }

    /// A client over a connection already upgraded with `protocol`.
    pub fn from_socket(socket: WebSocketStream<MaybeTlsStream<TcpStream>>, protocol: &str) -> Self {
        Self {
            socket,
            legacy: protocol == "graphql-ws",
        }
    }

    /// Opens a connection without sending `connection_init`.
    pub async fn open(url: &str, protocol: Option<&str>) -> Self {
        let mut request = url.into_client_request().unwrap();
        if let Some(protocol) = protocol {
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
        }
        let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        Self {
            socket,
            legacy: protocol == Some("graphql-ws"),
        }
    }

    pub async fn send(&mut self, message: Value) {
        self.send_frame(Message::text(message.to_string())).await;
    }

    pub async fn send_frame(&mut self, frame: Message) {
        self.socket.send(frame).await.unwrap();
    }

    /// The next frame, whatever it is.
    pub async fn next_frame(&mut self) -> Message {
        self.socket
            .next()
            .await
            .expect("a frame")
            .expect("a readable frame")
    }

    /// The next protocol message as it comes, pings included.
    pub async fn next_raw(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a message within 10 s");
            match frame {
                Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }

    /// Waits for the server to close the connection, answering pings meanwhile, and returns
    /// the close code and reason. Fails on any other message.
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            let frame = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("the server closes within 10 s");
            match frame {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (u16::from(frame.code), frame.reason.to_string());
                }
                Some(Ok(Message::Text(text))) => {
                    let message: Value = serde_json::from_str(&text).unwrap();
                    match message["type"].as_str() {
                        Some("ping") => self.send(json!({ "type": "pong" })).await,
                        Some("ka") => {}
                        _ => panic!("expected the connection to close, got {message}"),
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    /// The next protocol message, skipping keep-alives; `Err` when the server closes.
    pub async fn next_message(&mut self) -> Result<Value, String> {
        loop {
            let frame = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .map_err(|_| "no message within 10 s".to_owned())?;
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let message: Value = serde_json::from_str(&text).unwrap();
                    match message["type"].as_str() {
                        Some("ka") => continue,
                        Some("ping") => self.send(json!({ "type": "pong" })).await,
                        _ => return Ok(message),
                    }
                }
                Some(Ok(Message::Close(frame))) => return Err(format!("closed: {frame:?}")),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("stream ended".into()),
            }
        }
    }

    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        let kind = if self.legacy { "start" } else { "subscribe" };
        self.send(json!({ "id": id, "type": kind, "payload": { "query": query, "variables": variables } })).await;
    }

    /// The payload of the next result for any operation.
    pub async fn next_data(&mut self) -> Value {
        let message = self.next_message().await.unwrap();
        let kind = if self.legacy { "data" } else { "next" };
        assert_eq!(message["type"], kind, "{message}");
        message["payload"].clone()
    }
}

impl TestApp {
    /// A graphql-transport-ws connection to this server, initialised with `init` and
    /// acknowledged.
    pub async fn connect_ws(&self, init: Value) -> WsClient {
        WsClient::connect(&self.ws_url(), "graphql-transport-ws", init)
            .await
            .unwrap()
    }
}

/// An operation's errors, sent either as an `error` message or as `next` with `errors`.
pub fn operation_errors(message: &Value) -> &Value {
    if message["type"] == "next" {
        &message["payload"]["errors"]
    } else {
        &message["payload"]
    }
}

pub async fn seats(client: &mut WsClient) -> (i64, i64) {
    let data = client.next_data().await;
    let seats = &data["data"]["seatAvailability"];
    (
        seats["seatsAvailable"].as_i64().unwrap(),
        seats["version"].as_i64().unwrap(),
    )
}

/// Reads seat messages until the subscriber shows `expected`, checking that versions only grow.
pub async fn converge(client: &mut WsClient, expected: (i64, i64)) {
    let mut last_version = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached {expected:?}"
        );
        let (available, version) = seats(client).await;
        assert!(
            version > last_version,
            "version went from {last_version} to {version}"
        );
        last_version = version;
        if (available, version) == expected {
            return;
        }
        assert!(version < expected.1, "went past {expected:?} to {version}");
    }
}
