//! Redis for tests: a unique key prefix on the shared Redis
//! ([`TestRedis`], never flushed), a private `redis-server` on a free port
//! for tests that flush, stall or kill it ([`PrivateRedis`]), and a private
//! three-master Redis Cluster ([`RedisCluster`]).
//!
//! The shared Redis comes from `TEST_REDIS_URL` (`redis://127.0.0.1:6379`).

use super::{TestApp, env_or, eventually, unique};
use app::model::Item;
use std::time::Duration;

pub fn redis_url() -> String {
    env_or("TEST_REDIS_URL", "redis://127.0.0.1:6379")
}

/// A Redis key prefix that exists for one test.
pub struct TestRedis {
    pub url: String,
    pub prefix: String,
}

impl TestRedis {
    pub fn new() -> Self {
        Self {
            url: redis_url(),
            prefix: unique("t"),
        }
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis reachable")
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let (url, pattern) = (self.url.clone(), format!("{}*", self.prefix));
        let _ = std::thread::spawn(move || -> Option<()> {
            let client = redis::Client::open(url).ok()?;
            let mut conn = client.get_connection().ok()?;
            let keys: Vec<String> = redis::Commands::scan_match(&mut conn, &pattern)
                .ok()?
                .filter_map(Result::ok)
                .collect();
            if !keys.is_empty() {
                redis::cmd("DEL").arg(keys).query::<i64>(&mut conn).ok()?;
            }
            Some(())
        })
        .join();
    }
}

/// A redis-server of this test's own, on a free port, for tests that flush
/// or kill it (never done to the shared one). Killed when dropped.
pub struct PrivateRedis {
    pub port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        Self::start_on(port).await
    }

    /// Starts (or restarts, after a kill) a private Redis on `port`, empty.
    pub async fn start_on(port: u16) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                // DEBUG SLEEP stands in for a stalled Redis.
                "--enable-debug-command",
                "yes",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let redis = Self {
            port,
            child,
            _dir: dir,
        };
        for _ in 0..100 {
            if let Ok(mut conn) = redis.client().get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return redis;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("private redis-server did not start on port {port}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("redis url")
    }

    /// Kills the server, as a crash would: nothing is kept.
    pub fn kill(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }

    /// FLUSHALL, waiting as long as a busy server needs: in the middle of a
    /// burst on a loaded machine it can take longer than the client's
    /// default 500 ms response timeout.
    pub async fn flushall(&self) {
        let patient =
            redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
        let mut conn = self
            .client()
            .get_multiplexed_async_connection_with_config(&patient)
            .await
            .expect("connect");
        redis::cmd("FLUSHALL")
            .query_async::<()>(&mut conn)
            .await
            .expect("flushall");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A three-master Redis Cluster of this test's own: `redis-server
/// --cluster-enabled yes` on free ports, joined by `redis-cli --cluster
/// create`, killed when dropped.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<std::process::Child>,
    _dir: tempfile::TempDir,
}

fn free_cluster_port() -> u16 {
    // A cluster node also listens on its port + 10000 (the cluster bus).
    loop {
        let Ok(listener) = std::net::TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = listener.local_addr().map(|a| a.port()) else {
            continue;
        };
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl RedisCluster {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut ports = Vec::new();
        while ports.len() < 3 {
            let port = free_cluster_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let children = ports
            .iter()
            .map(|port| {
                let node_dir = dir.path().join(port.to_string());
                std::fs::create_dir_all(&node_dir).expect("node dir");
                std::process::Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args([
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                    ])
                    .args(["--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(&node_dir)
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .expect("redis-server is installed")
            })
            .collect();
        let cluster = Self {
            ports,
            children,
            _dir: dir,
        };
        for port in &cluster.ports {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url");
            let up = eventually(Duration::from_secs(10), || {
                let client = client.clone();
                async move {
                    match client.get_multiplexed_async_connection().await {
                        Ok(mut conn) => redis::cmd("PING")
                            .query_async::<String>(&mut conn)
                            .await
                            .is_ok(),
                        Err(_) => false,
                    }
                }
            })
            .await;
            assert!(up, "cluster node {port} did not start");
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed");
        assert!(
            created.status.success(),
            "{}",
            String::from_utf8_lossy(&created.stdout)
        );
        for port in &cluster.ports {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url");
            let ok = eventually(Duration::from_secs(20), || {
                let client = client.clone();
                async move {
                    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                        return false;
                    };
                    redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async::<String>(&mut conn)
                        .await
                        .is_ok_and(|info| info.contains("cluster_state:ok"))
                }
            })
            .await;
            assert!(ok, "the cluster did not settle");
        }
        cluster
    }

    pub fn nodes(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl TestApp {
    /// The reservation counter and live holds of an item, as the store has them.
    pub async fn reservation_state(&self, item: &Item) -> (Option<i64>, u64) {
        let store = self
            .state
            .reservation
            .as_ref()
            .expect("a reservation store");
        (
            store.counter(item.id).await.expect("counter"),
            store.live_holds(item.id).await.expect("holds"),
        )
    }
}
