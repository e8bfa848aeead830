//! The faults: what each scenario breaks, and what it measured while doing it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::{Cluster, PostgresStop};

pub(super) async fn kill_one(cluster: &mut Cluster) -> anyhow::Result<Value> {
    let pid = cluster.pid(0);
    cluster.kill(0).await?;
    Ok(json!({ "killed": { "instance": 0, "pid": pid, "signal": "SIGKILL" } }))
}

pub(super) async fn rolling_restart(
    cluster: &mut Cluster,
    tell_nginx: bool,
) -> anyhow::Result<Value> {
    let mut steps = Vec::new();
    for i in 0..cluster.instances.len() {
        if tell_nginx {
            cluster.set_in_balancer(i, false).await?;
        }
        let stopped = cluster.terminate(i).await?;
        let started = cluster.restart_instance(i).await?;
        if tell_nginx {
            cluster.set_in_balancer(i, true).await?;
        }
        steps.push(json!({
            "instance": i,
            "sigterm_to_exit_secs": stopped.as_secs_f64(),
            "start_to_ready_secs": started.as_secs_f64(),
        }));
    }
    Ok(json!({ "restarts": steps }))
}

pub(super) async fn postgres_restart(
    cluster: &mut Cluster,
    outage: Duration,
    mode: PostgresStop,
) -> anyhow::Result<Value> {
    let pids: Vec<_> = (0..cluster.instances.len())
        .map(|i| cluster.pid(i))
        .collect();
    cluster.postgres.stop(mode).await?;
    let down = Instant::now();
    // While it is down, each instance says so.
    tokio::time::sleep(outage / 2).await;
    let readyz_while_down: Vec<u16> = cluster
        .readyz_all()
        .await
        .into_iter()
        .map(|answer| answer.map_or(0, |(status, _)| status))
        .collect();
    tokio::time::sleep(outage.saturating_sub(down.elapsed())).await;
    cluster.postgres.start_again().await?;
    let up = Instant::now();
    let outage_secs = (up - down).as_secs_f64();
    // The instances come back by themselves: same processes, /readyz 200 again.
    let deadline = up + Duration::from_secs(30);
    let mut ready_again = vec![None; cluster.instances.len()];
    while ready_again.iter().any(Option::is_none) && Instant::now() < deadline {
        for (ready, answer) in ready_again.iter_mut().zip(cluster.readyz_all().await) {
            if ready.is_none() && answer.is_some_and(|(status, _)| status == 200) {
                *ready = Some(up.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut restarted = 0;
    for (i, pid) in pids.iter().enumerate() {
        if !cluster.running(i) || cluster.pid(i) != *pid {
            restarted += 1;
        }
    }
    Ok(json!({
        "outage_secs": outage_secs,
        "readyz_while_down": readyz_while_down,
        "ready_again_after_secs": ready_again,
        "instances_ready_again": ready_again.iter().filter(|r| r.is_some()).count(),
        "instances_restarted": restarted,
    }))
}

pub(super) async fn redis_restart_and_freeze(
    cluster: &mut Cluster,
    frozen_for: Duration,
    run_start: Instant,
) -> anyhow::Result<Value> {
    let t0 = Instant::now();
    cluster.redis.kill().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.redis.start_again().await?;
    let restarted_after = t0.elapsed().as_secs_f64();
    let ok_again = wait_redis_ok(cluster, Duration::from_secs(30)).await;

    // Frozen: connections stay open and nothing answers.
    cluster.redis.freeze()?;
    let frozen_at = Instant::now();
    let mut degraded = vec![false; cluster.instances.len()];
    let mut reasons = Vec::new();
    let until = frozen_at + frozen_for.max(Duration::from_secs(1));
    let deadline = frozen_at + frozen_for + Duration::from_secs(10);
    while Instant::now() < until || (degraded.contains(&false) && Instant::now() < deadline) {
        for (seen, answer) in degraded.iter_mut().zip(cluster.readyz_all().await) {
            if !*seen
                && let Some((200, body)) = answer
                && body["status"] == "degraded"
            {
                *seen = true;
                reasons.push(body["reason"].clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let thawed_at = Instant::now();
    cluster.redis.thaw()?;
    let ok_after_thaw = wait_redis_ok(cluster, Duration::from_secs(30)).await;
    Ok(json!({
        "restarted_after_secs": restarted_after,
        "redis_ok_after_restart_secs": ok_again,
        "frozen_secs": (thawed_at - frozen_at).as_secs_f64(),
        "frozen_from_secs": (frozen_at - run_start).as_secs_f64(),
        "frozen_to_secs": (thawed_at - run_start).as_secs_f64(),
        "degraded_seen_while_frozen": degraded.iter().filter(|d| **d).count(),
        "degraded_reasons": reasons,
        "redis_ok_after_thaw_secs": ok_after_thaw,
    }))
}

/// Seconds until every instance's `/readyz` says Redis is up again (None: not within).
async fn wait_redis_ok(cluster: &Cluster, within: Duration) -> Option<f64> {
    let start = Instant::now();
    while start.elapsed() < within {
        let all = cluster.readyz_all().await.into_iter().all(|answer| {
            answer.is_some_and(|(status, body)| status == 200 && body["redis"] == "up")
        });
        if all {
            return Some(start.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}
