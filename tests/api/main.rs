//! Integration tests: a real server on a real socket, real PostgreSQL and Redis.

mod authorization;
mod browser;
mod bus;
mod cache;
mod concurrency;
mod errors;
mod fault_proxy;
mod graphiql;
mod graphql_over_http;
mod helpers;
mod hostile;
mod journey;
mod lifecycle;
mod live;
mod login;
mod onsale;
mod readme_clients;
mod reference_client;
mod sale_rules;
mod schema;
mod seats;
mod security;
mod sse;
mod ticketing;
mod websocket;
mod ws_protocol;
