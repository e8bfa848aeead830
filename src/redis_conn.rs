//! Sending Redis commands, whether Redis is one server or a cluster: one server is reached
//! through a bb8 pool of multiplexed connections; a cluster through the `redis` crate's cluster
//! connection, which routes each command to the shard that owns its key's slot, follows
//! `MOVED`/`ASK` after a failover or a resharding, and is multiplexed itself (cloning it is
//! cheap, and no pool is needed). Callers get a [`RedisConn`] either way and send commands,
//! scripts and single-slot pipelines through it unchanged: keys that one script or pipeline
//! touches together share a hash tag (`{…}`), so they live on one slot.

use std::time::Duration;

use bb8_redis::RedisConnectionManager;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// Where commands go.
#[derive(Clone)]
pub enum RedisCommands {
    Single(bb8::Pool<RedisConnectionManager>),
    Cluster(ClusterConnection),
}

/// A connection to send commands on: a pooled one, or the cluster connection.
#[derive(Clone)]
pub enum RedisConn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl RedisCommands {
    /// A pool of at most `size` connections to the one server at `url`; taking one (connecting
    /// included) waits at most `timeout`. Nothing is connected yet.
    pub fn single(url: &str, size: u32, timeout: Duration) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let pool = bb8::Pool::builder()
            .max_size(size)
            .connection_timeout(timeout)
            .build_unchecked(RedisConnectionManager::new(
                client.get_connection_info().clone(),
            )?);
        Ok(Self::Single(pool))
    }

    /// A connection to the cluster that the seed nodes `urls` belong to. Connecting fails when
    /// none of them answers within `timeout`.
    pub async fn cluster(urls: &[String], timeout: Duration) -> redis::RedisResult<Self> {
        let client = redis::cluster::ClusterClientBuilder::new(urls.to_vec())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .build()?;
        Ok(Self::Cluster(client.get_async_connection().await?))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// A connection to send commands on.
    pub async fn get(&self) -> anyhow::Result<RedisConn> {
        match self {
            Self::Single(pool) => Ok(RedisConn::Single(pool.get().await?.clone())),
            Self::Cluster(conn) => Ok(RedisConn::Cluster(conn.clone())),
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}
