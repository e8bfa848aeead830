//! The bus and the shared security state on a real Redis Cluster: three masters with a replica
//! each, on loopback. Instances hear each other through sharded pub/sub, each event's channel
//! on the shard that owns its slot; a shard that fails over under a watched event loses
//! nothing its subscribers end up seeing; rate limits count across instances on the cluster.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use evently::config::{Config, RateLimit};
use evently::db::models::Role;
use redis::Value;
use serde_json::json;

use super::{free_ports, scratch_dir, services};
use crate::support::{SEATS, TestApp, WAIT, converge, error_code, eventually, seats};

const LOGIN: &str = "mutation($input: LoginInput!) { login(input: $input) { accessToken } }";

/// Three masters and three replicas started by `start_redis_cluster`.
struct RedisCluster {
    dir: PathBuf,
    base: u16,
}

impl RedisCluster {
    fn start() -> Self {
        let dir = scratch_dir("redis-cluster");
        // Cluster bus ports are 10000 above; keep both below 65536 and away from 6379.
        let base = free_ports(20_000..30_000, 6, Some(10_000));
        services(
            "start_redis_cluster",
            &[dir.display().to_string(), base.to_string()],
        );
        Self { dir, base }
    }

    async fn start_own() -> Self {
        tokio::task::spawn_blocking(Self::start).await.unwrap()
    }

    fn urls(&self) -> Vec<String> {
        (self.base..self.base + 6)
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    async fn node(port: u16) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// A node to ask about the cluster (none of them has failed yet when it is asked).
    async fn any_node(&self) -> redis::aio::MultiplexedConnection {
        Self::node(self.base).await
    }

    /// The port of the master owning `key`'s slot, as the cluster says.
    async fn shard_of(&self, key: &str) -> u16 {
        let mut conn = self.any_node().await;
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let ranges: Vec<Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn)
            .await
            .unwrap();
        for range in &ranges {
            let Value::Array(fields) = range else {
                panic!("{range:?}")
            };
            let (Value::Int(start), Value::Int(end), Value::Array(master)) =
                (&fields[0], &fields[1], &fields[2])
            else {
                panic!("{range:?}")
            };
            if (*start..=*end).contains(&slot) {
                let Value::Int(port) = master[1] else {
                    panic!("{master:?}")
                };
                return port as u16;
            }
        }
        panic!("slot {slot} is served by no one: {ranges:?}");
    }

    /// The ports of the replicas of the master at `master`, from `CLUSTER NODES` (which,
    /// unlike `CLUSTER SLOTS`, lists a replica before it has replicated anything).
    async fn replicas_of(&self, master: u16) -> Vec<u16> {
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut Self::node(master).await)
            .await
            .unwrap();
        let port = |address: &str| -> u16 {
            let host_port = address.split('@').next().unwrap();
            host_port.rsplit(':').next().unwrap().parse().unwrap()
        };
        let lines: Vec<Vec<&str>> = nodes
            .lines()
            .map(|line| line.split_whitespace().collect())
            .collect();
        let master_id = lines
            .iter()
            .find(|fields| port(fields[1]) == master)
            .map(|fields| fields[0])
            .unwrap();
        lines
            .iter()
            .filter(|fields| fields[2].contains("slave") && fields[3] == master_id)
            .map(|fields| port(fields[1]))
            .collect()
    }

    /// The shard channels with subscribers on the node at `port`.
    async fn shard_channels(port: u16) -> Vec<String> {
        redis::cmd("PUBSUB")
            .arg("SHARDCHANNELS")
            .query_async(&mut Self::node(port).await)
            .await
            .unwrap()
    }

    async fn role(port: u16) -> String {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut Self::node(port).await)
            .await
            .unwrap();
        info.lines()
            .find_map(|line| line.strip_prefix("role:"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// SIGKILLs the node at `port` (a process `start_redis_cluster` started for this test).
    fn kill(&self, port: u16) {
        let pid =
            std::fs::read_to_string(self.dir.join(format!("redis-{port}/redis.pid"))).unwrap();
        let status = std::process::Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// The cluster tests share, started once per test process; each test has its own key prefix.
async fn shared_cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    tokio::task::spawn_blocking(|| CLUSTER.get_or_init(RedisCluster::start))
        .await
        .unwrap()
}

/// A server whose Redis is `cluster` (`REDIS_CLUSTER_URLS`), with its own key prefix.
async fn on_cluster(cluster: &RedisCluster, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let urls = cluster.urls();
    TestApp::spawn_with(move |config| {
        config.redis_url = None;
        config.redis_cluster_urls = urls;
        tweak(config);
    })
    .await
}

fn seats_channel(app: &TestApp, event: &str) -> String {
    format!("{}seats:{event}", app.redis.as_ref().unwrap().1)
}

fn init(token: &str) -> serde_json::Value {
    json!({ "Authorization": format!("Bearer {token}") })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_on_one_instance_reach_subscribers_on_another_through_each_events_own_shard() {
    let cluster = shared_cluster().await;
    let a = on_cluster(cluster, |_| {}).await;
    let b = a.spawn_peer().await;
    let organizer = a.user(Role::Organizer).await;
    let buyer = a.user(Role::User).await;
    // Two events whose seat channels live on different shards.
    let first = a.event(&organizer, 100).await;
    let first_shard = cluster.shard_of(&seats_channel(&a, &first)).await;
    let (second, second_shard) = loop {
        let event = a.event(&organizer, 100).await;
        let shard = cluster.shard_of(&seats_channel(&a, &event)).await;
        if shard != first_shard {
            break (event, shard);
        }
    };

    let mut watchers = Vec::new();
    for event in [&first, &second] {
        let mut client = b.connect_ws(init(&buyer.token)).await;
        client.subscribe("s", SEATS, json!({ "id": event })).await;
        let initial = seats(&mut client).await;
        watchers.push((client, initial));
    }
    // Instance B subscribed each channel on the shard that owns it, and only there.
    for (event, shard) in [(&first, first_shard), (&second, second_shard)] {
        let channel = seats_channel(&b, event);
        eventually(WAIT, || async {
            RedisCluster::shard_channels(shard).await.contains(&channel)
        })
        .await;
        for other in [first_shard, second_shard] {
            if other != shard {
                assert!(!RedisCluster::shard_channels(other).await.contains(&channel));
            }
        }
    }

    for ((client, (available, version)), event) in watchers.iter_mut().zip([&first, &second]) {
        a.book(&buyer, event, 3).await;
        converge(client, (*available - 3, *version + 1)).await;
    }

    // Its last subscriber gone, a channel is given up on its shard.
    drop(watchers);
    let channel = seats_channel(&b, &first);
    eventually(WAIT, || async {
        !RedisCluster::shard_channels(first_shard)
            .await
            .contains(&channel)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_converges_after_the_shard_of_its_event_fails_over() {
    // A cluster of its own: this one loses a master.
    let cluster = RedisCluster::start_own().await;
    let heartbeat = |config: &mut Config| {
        config.redis_ping_interval = Duration::from_millis(200);
        config.redis_ping_timeout = Duration::from_millis(1000);
    };
    let a = on_cluster(&cluster, heartbeat).await;
    let b = a.spawn_peer().await;
    let organizer = a.user(Role::Organizer).await;
    let buyer = a.user(Role::User).await;
    let event = a.event(&organizer, 100).await;
    let channel = seats_channel(&b, &event);
    let master = cluster.shard_of(&channel).await;
    let replicas = cluster.replicas_of(master).await;
    assert!(!replicas.is_empty(), "the shard of {master} has no replica");
    let mut watcher = b.connect_ws(init(&buyer.token)).await;
    watcher.subscribe("s", SEATS, json!({ "id": event })).await;
    let (available, version) = seats(&mut watcher).await;
    eventually(WAIT, || async {
        RedisCluster::shard_channels(master)
            .await
            .contains(&channel)
    })
    .await;

    cluster.kill(master);
    // Bookings go on while the shard is down: PostgreSQL has the last word on seats.
    for _ in 0..5 {
        a.book(&buyer, &event, 1).await;
    }
    let promoted = eventually(Duration::from_secs(30), || async {
        for replica in &replicas {
            let role = RedisCluster::role(*replica).await;
            if role == "master" {
                return Ok(*replica);
            }
        }
        Err(format!("no replica of {master} in {replicas:?} took over"))
    })
    .await;
    converge(&mut watcher, (available - 5, version + 5)).await;
    // B subscribed again, on the new master, and says it hears the others again.
    eventually(WAIT, || async {
        RedisCluster::shard_channels(promoted)
            .await
            .contains(&channel)
    })
    .await;
    let (_, ready) = b.wait_for_readiness("ready").await;
    assert_eq!(ready["redis"], "up", "{ready}");

    // And the shard carries new changes live again.
    a.book(&buyer, &event, 2).await;
    converge(&mut watcher, (available - 7, version + 6)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_attempts_are_counted_across_instances_on_the_cluster() {
    let cluster = shared_cluster().await;
    let a = on_cluster(cluster, |c| c.rate_limits.login = RateLimit::per(3, 60)).await;
    let b = a.spawn_peer().await;
    let attempt = json!({ "input": { "email": "victim@x.co", "password": "guess-guess" } });
    for app in [&a, &b, &a] {
        let body = app.gql(None, LOGIN, attempt.clone()).await;
        assert_eq!(error_code(&body), "UNAUTHENTICATED", "{body}");
    }
    // Each instance alone has seen at most two: the fourth is refused from the shared window.
    let body = b.gql(None, LOGIN, attempt).await;
    assert_eq!(error_code(&body), "RATE_LIMITED", "{body}");

    // The window is one hash-tagged key on the cluster.
    let prefix = &a.redis.as_ref().unwrap().1;
    let key = format!("{prefix}{{ratelimit:login:ip:127.0.0.1}}");
    let mut conn = redis::cluster::ClusterClient::new(cluster.urls())
        .unwrap()
        .get_async_connection()
        .await
        .unwrap();
    let counted: u64 = redis::cmd("ZCARD")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(counted, 3);
}
