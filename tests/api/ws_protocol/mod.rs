//! graphql-transport-ws conformance (enisdenjo/graphql-ws PROTOCOL.md): every close code, ping
//! and pong both ways, `error` messages, and the limits and timers around a connection. Each
//! hostile input (bad tokens, garbage, binary and oversized frames) gets its documented close.

use std::time::Duration;

use evently::db::models::Role;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::TestApp;
use crate::support::operations::{allow_list, sha256};
use crate::support::{SEATS, WAIT, WsClient, eventually, seats};

mod conformance;
mod documents;
mod limits;

const TRANSPORT: &str = "graphql-transport-ws";
const QUERY: &str = "query { events(first: 1) { edges { node { id } } } }";

async fn acked(app: &TestApp, init: Value) -> WsClient {
    app.connect_ws(init).await
}
