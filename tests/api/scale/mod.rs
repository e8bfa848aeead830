//! Growing past one machine: the bus on a real three-master Redis Cluster (sharded pub/sub,
//! a shard failing over under a watched event, rate limits on hash-tagged keys), and browse
//! reads on a real PostgreSQL streaming replica (served by it, falling back to the primary when
//! it lags or is down). The cluster and the replica are started by `scripts/services.sh`
//! (`start_redis_cluster`, `start_pg_replica`), as an operator would, on free loopback ports
//! and in temporary directories, and stopped when the test process ends.

mod redis_cluster;
mod replica;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

/// A temporary directory for one cluster or replica.
fn scratch_dir(kind: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("evently-{kind}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The first of `count` consecutive free ports in `range` (each with `port + also` free too,
/// for the cluster bus ports), starting from a random place so parallel runs rarely collide.
fn free_ports(range: std::ops::Range<u16>, count: u16, also: Option<u16>) -> u16 {
    let span = range.end - range.start - count;
    let offset = (uuid::Uuid::new_v4().as_u128() % u128::from(span)) as u16;
    for step in 0..span {
        let base = range.start + (offset + step) % span;
        if (base..base + count)
            .all(|port| port_is_free(port) && also.is_none_or(|extra| port_is_free(port + extra)))
        {
            return base;
        }
    }
    panic!("no {count} free ports in {range:?}");
}

/// Runs a function of `scripts/services.sh` with `args`; the test process's id goes last, so
/// whatever it starts is stopped when this process ends.
fn services(function: &str, args: &[String]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services.sh");
    let status = Command::new("bash")
        .env("EVENTLY_SERVICES_FUNCTIONS_ONLY", "1")
        .arg("-c")
        .arg(format!(
            "source '{script}' && {function} \"$@\" {}",
            std::process::id()
        ))
        .arg("services")
        .args(args)
        .status()
        .expect("bash runs");
    assert!(status.success(), "{function} {args:?} failed");
}
