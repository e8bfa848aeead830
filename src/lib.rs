//! Evently: an event-ticketing GraphQL server.
//!
//! The data path reads straight through: HTTP ([`http`]) → GraphQL resolver ([`graphql`]) →
//! domain function in a transaction ([`domain`]) → commit → publish on the bus ([`realtime`]).

pub mod app;
pub mod checkout;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod graphql;
pub mod http;
pub mod payments;
pub mod realtime;
pub mod redis_conn;
pub mod security;
pub mod sweeper;
pub mod telemetry;
