//! `fanout`: S WebSocket subscribers watching E events while bookings arrive at a steady rate.
//!
//! Latency is measured from the moment the booking request is sent to the moment a subscriber
//! receives the version it produced: an upper bound on commit-to-receive, since the commit
//! happens after the request is sent. Bookings are sent one at a time, so the k-th booking of
//! an event produces that event's k-th version after the one subscribers first saw.
//!
//! Subscribers are split over as many processes as the open-files limit requires (see
//! `watchers`). Through a cluster (`scripts/bench.sh fanout --via-cluster N [--redis-cluster
//! M]`) the report also shows how connections and messages spread over the instances and how
//! event channels and publishes spread over the Redis Cluster's shards (`distribution`).

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use uuid::Uuid;

use super::{big_events, check_alive, secs};
use crate::Common;
use crate::client::{Answer, BOOK, Gql};
use crate::report::{Report, table};
use crate::stats::Samples;
use crate::system::{CpuMeter, rss_kib};

mod distribution;
mod watchers;

use distribution::{describe, figure};
use watchers::{ChildGroup, Clock, Finals, Group, Plan, Tally};

/// Descriptors a subscriber process keeps for itself (its HTTP client, stdio, the runtime).
const SPARE_FILES: usize = 512;

#[derive(clap::Args, Clone)]
pub struct Options {
    /// WebSocket subscribers.
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: usize,
    /// Events they are spread over.
    #[arg(long, default_value_t = 1)]
    pub events: usize,
    /// Bookings per second, across all events.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Seconds of bookings.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// More subscribers, all on one more event (the hot one), e.g. `--subscribers 15000
    /// --events 100 --hot-subscribers 5000`. Bookings go round every event, the hot one
    /// included.
    #[arg(long, default_value_t = 0)]
    pub hot_subscribers: usize,
    /// Connections being opened at once (across processes).
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Processes holding the subscribers (0: as many as this process's open-files limit
    /// requires, one socket per subscriber; the first group runs in this process).
    #[arg(long, default_value_t = 0)]
    pub processes: usize,
    /// Each instance behind the load balancer, to show how connections and messages spread
    /// (`scripts/cluster.sh` writes them to its topology.env).
    #[arg(long, env = "EVENTLY_INSTANCE_URLS", value_delimiter = ',')]
    pub instance_urls: Vec<String>,
    /// The Redis Cluster's nodes, to show how event channels and publishes spread.
    #[arg(long, env = "REDIS_CLUSTER_URLS", value_delimiter = ',')]
    pub redis_cluster_urls: Vec<String>,
    /// Run one group of subscribers for a parent `bench fanout` (see `watchers`).
    #[arg(long, hide = true)]
    pub part: bool,
}

/// How many processes `subscribers` sockets need under this process's open-files limit.
fn processes_needed(subscribers: usize) -> usize {
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|line| line.starts_with("Max open files"))?
                .split_whitespace()
                .nth(3)?
                .parse::<usize>()
                .ok()
        })
        .unwrap_or(1024);
    let per_process = limit.saturating_sub(SPARE_FILES).max(1);
    subscribers.div_ceil(per_process).max(1)
}

pub async fn run(common: &Common, options: Options) -> anyhow::Result<()> {
    if options.part {
        return watchers::run_part().await;
    }
    check_alive(common.server_pid)?;
    let clock = Clock::now();
    let gql = Gql::new(&common.url)?;
    let hot = usize::from(options.hot_subscribers > 0);
    let event_count = options.events + hot;
    let subscribers = options.subscribers + options.hot_subscribers;
    let events = big_events(&gql, common, "Fanout", event_count).await?;
    let run_id = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let (_, booker) = gql.register_buyers(&run_id, 1).await?.remove(0);

    let rss_before = common.server_pid.map(rss_kib).transpose()?;
    let parts = match options.processes {
        0 => processes_needed(subscribers),
        n => n,
    };
    println!("connecting {subscribers} subscribers from {parts} process(es)");
    let connect_start = Instant::now();
    let plan = |part| Plan {
        ws_endpoint: gql.ws_endpoint.clone(),
        events: events.clone(),
        spread: options.subscribers,
        spread_events: options.events,
        total: subscribers,
        part,
        parts,
        connect_concurrency: options.connect_concurrency.div_ceil(parts),
    };
    let mut children = Vec::new();
    for part in 1..parts {
        children.push(ChildGroup::spawn(&plan(part)).await?);
    }
    let (group, mut connected) = Group::connect(&plan(0)).await?;
    for child in &mut children {
        let theirs = child.connected().await?;
        connected.connected += theirs.connected;
        connected.failed += theirs.failed;
        connected.first_error = connected.first_error.or(theirs.first_error);
    }
    if let Some(error) = &connected.first_error {
        eprintln!(
            "{} subscribers failed to connect; first error: {error}",
            connected.failed
        );
    }
    let connected = connected.connected;
    let connect_secs = secs(connect_start.elapsed());
    println!("{connected} subscribers connected in {connect_secs:.1} s");
    let rss_after = common.server_pid.map(rss_kib).transpose()?;
    let per_connection_kib = match (rss_before, rss_after) {
        (Some(before), Some(after)) if connected > 0 => {
            Some(after.saturating_sub(before) as f64 / connected as f64)
        }
        _ => None,
    };
    let instances_before = distribution::instances(&options.instance_urls).await;
    let shards_before = distribution::shards(&options.redis_cluster_urls);

    // Bookings at a steady rate, one at a time.
    let cpu = common.server_pid.map(CpuMeter::start).transpose()?;
    let start = Instant::now();
    let total = (options.rate * options.seconds as f64).round() as usize;
    let mut sent: Vec<Vec<Instant>> = vec![Vec::new(); event_count];
    let mut booking_latency = Samples::default();
    let mut booking_errors = 0_u64;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / options.rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for k in 0..total {
        ticker.tick().await;
        let event = k % event_count;
        let variables = json!({ "input": { "eventId": events[event], "quantity": 1 } });
        let started = Instant::now();
        let answer = gql.call(Some(&booker), BOOK, variables).await;
        booking_latency.record(start, started, Instant::now());
        match answer {
            Ok(Answer::Data(_)) => sent[event].push(started),
            other => {
                booking_errors += 1;
                eprintln!("booking failed: {other:?}");
            }
        }
    }
    let booking_secs = secs(start.elapsed());
    let server_cores = cpu.map(|c| c.cores()).transpose()?;

    // Tell subscribers which version is the last, and give them a bounded time to get it.
    let mut finals = Vec::new();
    for event_id in &events {
        let data = gql
            .expect(
                None,
                "query($id: ID!) { event(id: $id) { version } }",
                json!({ "id": event_id }),
            )
            .await?;
        finals.push(data["event"]["version"].as_i64().context("no version")?);
    }
    let instances_after = distribution::instances(&options.instance_urls).await;
    let shards_after = distribution::shards(&options.redis_cluster_urls);
    let finals = Finals {
        versions: finals,
        sent_us: sent
            .iter()
            .map(|times| times.iter().map(|at| clock.us(*at)).collect())
            .collect(),
    };
    let (own, theirs) = tokio::join!(
        group.finish(&finals, clock),
        futures_util::future::join_all(children.into_iter().map(|child| child.finish(&finals)))
    );
    let mut tally = own?;
    for their in theirs {
        tally.add(their?);
    }
    let Tally {
        latencies_us,
        skipped: lost,
        out_of_order,
        stale_final,
        extra,
    } = tally;
    let mut latency = Samples::default();
    for (at_us, latency_us) in latencies_us {
        latency.record_latency(
            start,
            clock.instant(at_us),
            Duration::from_micros(latency_us as u64),
        );
    }
    // Per instance: WebSockets while everyone is connected, messages sent while booking.
    let per_instance = describe(&instances_before, |before| {
        let after = instances_after.iter().find(|a| a.url == before.url);
        let sent = match (before.messages_sent, after.and_then(|a| a.messages_sent)) {
            (Some(b), Some(a)) => Some(a - b),
            _ => None,
        };
        format!(
            "{}: {} WebSockets, {} messages sent",
            before.url.trim_start_matches("http://"),
            figure(before.live_connections),
            figure(sent)
        )
    });
    // Per shard: event channels and the SPUBLISHes the bookings caused.
    let per_shard = describe(&shards_before, |before| {
        let after = shards_after.iter().find(|a| a.address == before.address);
        let published = match (before.spublish_calls, after.and_then(|a| a.spublish_calls)) {
            (Some(b), Some(a)) => Some((a - b) as f64),
            _ => None,
        };
        format!(
            "{}: {} event channels, {} SPUBLISH",
            before.address,
            figure(before.channels.map(|c| c as f64)),
            figure(published)
        )
    });

    let summary = latency.summary();
    let bookings = booking_latency.summary();
    let rows = [
        (
            "subscribers connected",
            format!("{connected} of {subscribers}"),
        ),
        (
            "events",
            match options.hot_subscribers {
                0 => options.events.to_string(),
                hot => format!("{} (+1 hot event with {hot} subscribers)", options.events),
            },
        ),
        ("connect time", format!("{connect_secs:.1} s")),
        (
            "bookings",
            format!(
                "{} at {:.1}/s ({} failed)",
                bookings.count, options.rate, booking_errors
            ),
        ),
        ("messages received", summary.count.to_string()),
        (
            "**send-to-receive p50 / p99 / max**",
            format!(
                "**{:.1} / {:.1} / {:.1} ms**",
                summary.p50_ms, summary.p99_ms, summary.max_ms
            ),
        ),
        (
            "**lost: subscribers that never got the final count**",
            format!("**{stale_final}**"),
        ),
        ("**messages out of order**", format!("**{out_of_order}**")),
        (
            "versions skipped by lagging subscribers (they jump to the newest, by design)",
            lost.to_string(),
        ),
        (
            "messages for versions not booked by the tool",
            extra.to_string(),
        ),
        (
            "**server RSS per idle connection**",
            per_connection_kib.map_or("n/a".into(), |k| format!("**{k:.1} KiB**")),
        ),
        (
            "server RSS before / after connecting",
            format!("{rss_before:?} / {rss_after:?} KiB"),
        ),
        (
            "server CPU while booking (cores busy)",
            server_cores.map_or("n/a".into(), |c| format!("{c:.2}")),
        ),
        (
            "booking latency p50 / p99",
            format!("{:.1} / {:.1} ms", bookings.p50_ms, bookings.p99_ms),
        ),
        ("subscriber processes", parts.to_string()),
        (
            "per instance",
            if per_instance.is_empty() {
                "n/a".into()
            } else {
                per_instance
            },
        ),
        (
            "per Redis Cluster shard",
            if per_shard.is_empty() {
                "n/a".into()
            } else {
                per_shard
            },
        ),
    ];
    Report {
        scenario: "fanout",
        common,
        results: json!({
            "options": {
                "subscribers": options.subscribers, "events": options.events,
                "hot_subscribers": options.hot_subscribers,
                "rate": options.rate, "seconds": options.seconds,
            },
            "connected": connected,
            "connect_secs": connect_secs,
            "booking_secs": booking_secs,
            "latency": summary,
            "skipped_versions": lost,
            "out_of_order": out_of_order,
            "lost_final_version": stale_final,
            "unexpected_versions": extra,
            "rss_before_kib": rss_before,
            "rss_after_kib": rss_after,
            "rss_per_connection_kib": per_connection_kib,
            "server_cores": server_cores,
            "booking_latency": bookings,
            "booking_errors": booking_errors,
            "subscriber_processes": parts,
            "instances": { "before_bookings": instances_before, "after_bookings": instances_after },
            "shards": { "before_bookings": shards_before, "after_bookings": shards_after },
        }),
        markdown: table(&rows),
        series: vec![("send-to-receive", &latency)],
    }
    .write()?;
    Ok(())
}
