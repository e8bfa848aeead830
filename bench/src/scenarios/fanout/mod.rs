//! `fanout`: S WebSocket subscribers watching E events while bookings arrive at a steady rate.
//!
//! Latency is measured from the moment the booking request is sent to the moment a subscriber
//! receives the version it produced: an upper bound on commit-to-receive, since the commit
//! happens after the request is sent. Bookings are sent one at a time, so the k-th booking of
//! an event produces that event's k-th version after the one subscribers first saw.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc, watch};
use uuid::Uuid;

use super::{big_events, check_alive, secs};
use crate::Common;
use crate::client::{Answer, BOOK, Gql, Subscriber};
use crate::report::{Report, table};
use crate::stats::Samples;
use crate::system::{CpuMeter, rss_kib};

const SUBSCRIPTION: &str =
    "subscription Seats($id: ID!) { seatAvailability(eventId: $id) { seatsAvailable version } }";
/// Connections per source address. One address has about 28,000 ephemeral ports, fewer while
/// the last run's connections sit in TIME_WAIT, so the tool spreads over 127.0.0.2 and up.
const PER_SOURCE: usize = 4_000;

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
    /// Connections being opened at once.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
}

/// What one subscriber saw: the version of its first message, then (version, arrival).
struct Seen {
    event: usize,
    first: i64,
    updates: Vec<(i64, Instant)>,
}

pub async fn run(common: &Common, options: Options) -> anyhow::Result<()> {
    check_alive(common.server_pid)?;
    let gql = Gql::new(&common.url)?;
    let hot = usize::from(options.hot_subscribers > 0);
    let event_count = options.events + hot;
    let subscribers = options.subscribers + options.hot_subscribers;
    let events = big_events(&gql, common, "Fanout", event_count).await?;
    let run_id = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let (_, booker) = gql.register_buyers(&run_id, 1).await?.remove(0);

    let rss_before = common.server_pid.map(rss_kib).transpose()?;
    println!("connecting {subscribers} subscribers");
    let connect_start = Instant::now();
    let (final_tx, final_rx) = watch::channel::<Option<Vec<i64>>>(None);
    let (ready_tx, mut ready_rx) = mpsc::channel::<anyhow::Result<()>>(1024);
    let gate = Arc::new(Semaphore::new(options.connect_concurrency));
    let mut tasks = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        // The hot event is the last one.
        let event = if i < options.subscribers {
            i % options.events
        } else {
            options.events
        };
        let (endpoint, event_id) = (gql.ws_endpoint.clone(), events[event].clone());
        let (gate, ready, mut finals) = (gate.clone(), ready_tx.clone(), final_rx.clone());
        let source = Ipv4Addr::new(127, 0, 0, 2 + u8::try_from(i / PER_SOURCE)?);
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.expect("never closed");
            let connected = async {
                let mut sub =
                    Subscriber::connect(&endpoint, source, SUBSCRIPTION, json!({ "id": event_id }))
                        .await?;
                let version = sub.next_version().await?.context("no first message")?;
                anyhow::Ok((sub, version))
            }
            .await;
            drop(permit);
            let (mut sub, first) = match connected {
                Ok(ok) => {
                    let _ = ready.send(Ok(())).await;
                    ok
                }
                Err(error) => {
                    let _ = ready.send(Err(error)).await;
                    return None;
                }
            };
            drop(ready);
            let mut seen = Seen {
                event,
                first,
                updates: Vec::new(),
            };
            let mut last = first;
            loop {
                if let Some(finals) = &*finals.borrow_and_update()
                    && last >= finals[event]
                {
                    break;
                }
                tokio::select! {
                    version = sub.next_version() => {
                        let Ok(Some(version)) = version else { break };
                        seen.updates.push((version, Instant::now()));
                        last = last.max(version);
                    }
                    changed = finals.changed() => if changed.is_err() { break },
                }
            }
            sub.close().await;
            Some(seen)
        }));
    }
    drop(ready_tx);
    let mut failed = 0_usize;
    let mut first_error = None;
    for _ in 0..subscribers {
        match ready_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(error)) => {
                failed += 1;
                first_error.get_or_insert(error);
            }
            None => break,
        }
    }
    if let Some(error) = &first_error {
        eprintln!("{failed} subscribers failed to connect; first error: {error:#}");
    }
    let connected = subscribers - failed;
    let connect_secs = secs(connect_start.elapsed());
    println!("{connected} subscribers connected in {connect_secs:.1} s");
    let rss_after = common.server_pid.map(rss_kib).transpose()?;
    let per_connection_kib = match (rss_before, rss_after) {
        (Some(before), Some(after)) if connected > 0 => {
            Some(after.saturating_sub(before) as f64 / connected as f64)
        }
        _ => None,
    };

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
    final_tx.send(Some(finals.clone()))?;
    let mut latency = Samples::default();
    let (mut lost, mut out_of_order, mut stale_final, mut extra) = (0_u64, 0_u64, 0_u64, 0_u64);
    let grace = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(grace);
    for task in tasks {
        let seen = tokio::select! {
            seen = task => seen?,
            () = &mut grace => {
                stale_final += 1;
                continue;
            }
        };
        let Some(seen) = seen else { continue };
        let mut previous = seen.first;
        let mut received = std::collections::HashSet::new();
        for &(version, at) in &seen.updates {
            if version <= previous {
                out_of_order += 1;
            }
            previous = previous.max(version);
            let k = version - seen.first - 1;
            match usize::try_from(k)
                .ok()
                .and_then(|k| sent[seen.event].get(k))
            {
                Some(&sent_at) => {
                    received.insert(version);
                    latency.record_latency(start, at, at.saturating_duration_since(sent_at));
                }
                None => extra += 1,
            }
        }
        let expected = (finals[seen.event] - seen.first).max(0) as u64;
        lost += expected.saturating_sub(received.len() as u64);
        if previous < finals[seen.event] {
            stale_final += 1;
        }
    }

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
        }),
        markdown: table(&rows),
        series: vec![("send-to-receive", &latency)],
    }
    .write()?;
    Ok(())
}
