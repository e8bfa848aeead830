//! The test harness, out of the tests: every test gets its own database ([`database`]), copied
//! from a migrated template, its own Redis key prefix ([`redis`]), and a real server on
//! 127.0.0.1:0 ([`app`]); clients to drive it ([`ws`], [`browser`], [`node`]), the operations
//! tests share ([`operations`]), a Stripe stand-in ([`stripe`]), tokens made by hand ([`tokens`]), the schema called without a server ([`schema`]), a proxy that breaks
//! connections on cue ([`fault_proxy`]), and one way to wait for a condition ([`eventually`]).

pub mod app;
pub mod browser;
pub mod database;
pub mod eventually;
pub mod fault_proxy;
pub mod node;
pub mod operations;
pub mod redis;
pub mod schema;
pub mod stripe;
pub mod tokens;
pub mod ws;

pub use app::{TestApp, TestUser, spawn_behind_database_proxy};
pub use browser::run_query_in_graphiql;
pub use database::fresh_database;
pub use eventually::{WAIT, eventually};
pub use fault_proxy::FaultProxy;
pub use node::run_node;
pub use operations::{BOOK, BookingId, CANCEL, EventId, error_code, event_input, merged};
pub use redis::{OwnRedis, redis_url};
pub use schema::SchemaTest;
pub use stripe::StripeStandIn;
pub use tokens::{TEST_JWT_SECRET, claims, sign};
pub use ws::{SEATS, WsClient, converge, operation_errors, seats};
