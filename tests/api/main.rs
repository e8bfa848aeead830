//! Integration tests: a real server on a real socket, real PostgreSQL and Redis.

mod authorization;
mod bus;
mod cache;
mod concurrency;
mod errors;
mod graphiql;
mod graphql_over_http;
mod hostile;
mod journey;
mod lifecycle;
mod live;
mod login;
mod metrics;
mod onsale;
mod readme_clients;
mod reference_client;
mod resolvers;
mod sale_rules;
mod schema;
mod seats;
mod security;
mod sse;
mod support;
mod ticketing;
mod websocket;
mod ws_protocol;
