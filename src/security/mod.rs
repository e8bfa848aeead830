//! Defences in front of the API: per-client rate limits, the client's address, persisted
//! queries and limits on GraphQL documents. README, "Security model", describes them all.

pub mod client;
pub mod deadline;
pub mod document;
pub mod persisted;
pub mod rate_limit;
mod shared_redis;

pub use shared_redis::SharedRedis;
