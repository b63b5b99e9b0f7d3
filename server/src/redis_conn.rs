//! One Redis connection type for a single node or a cluster.
//!
//! Both are multiplexed, reconnect on their own and time out every command,
//! so a slow or dead Redis surfaces as an error within the timeout instead of
//! hanging an order. Every script keeps its keys in one hash slot, so the
//! cluster connection routes each call to one node and scripts run unchanged.

use crate::config::RedisTarget;
use anyhow::Context;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// Connects to the configured target; every command times out after
    /// `timeout`. A single node is connected lazily, so the server starts
    /// (and reports the store down) while Redis is down.
    ///
    /// # Errors
    /// A malformed URL, or (cluster) no seed node answering.
    pub async fn connect(target: &RedisTarget, timeout: Duration) -> anyhow::Result<Option<Self>> {
        match target {
            RedisTarget::None => Ok(None),
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.as_str()).context("parsing REDIS_URL")?;
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(timeout))
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_number_of_retries(2);
                let manager = ConnectionManager::new_lazy_with_config(client, config)
                    .context("creating the Redis connection manager")?;
                Ok(Some(Self::Single(manager)))
            }
            RedisTarget::Cluster(nodes) => {
                let client = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                    .response_timeout(timeout)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .retries(2)
                    .build()
                    .context("parsing REDIS_CLUSTER_NODES")?;
                let connection = client
                    .get_async_connection()
                    .await
                    .context("connecting to the Redis cluster")?;
                Ok(Some(Self::Cluster(connection)))
            }
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
