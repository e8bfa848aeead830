//! Integration tests: a real server on a real socket, real PostgreSQL and Redis.

mod authorization;
mod browser;
mod concurrency;
mod errors;
mod graphiql;
mod helpers;
mod journey;
mod live;
mod reference_client;
mod schema;
mod websocket;
mod ws_protocol;
