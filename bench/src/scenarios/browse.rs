//! `browse`: anonymous visitors paging the event list and opening events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use super::{check_alive, secs};
use crate::Common;
use crate::client::Gql;
use crate::report::{Report, table};
use crate::stats::Samples;
use crate::system::CpuMeter;

pub const EVENTS: &str = "query Browse { events(first: 20) { edges { node { id title venue category startsAt \
    capacity seatsAvailable organizer { id name } } } pageInfo { hasNextPage endCursor } } }";
pub const EVENT: &str = "query Event($id: ID!) { event(id: $id) { id title description venue startsAt endsAt \
    capacity seatsAvailable maxPerBooking status organizer { id name } } }";

#[derive(clap::Args)]
pub struct Options {
    /// Concurrent visitors.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

/// The ids of the listed events, for `event(id)`.
pub async fn listed_event_ids(gql: &Gql) -> anyhow::Result<Vec<String>> {
    let data = gql.expect(None, EVENTS, json!({})).await?;
    let ids: Vec<String> = data["events"]["edges"]
        .as_array()
        .context("no edges")?
        .iter()
        .filter_map(|e| e["node"]["id"].as_str().map(str::to_owned))
        .collect();
    anyhow::ensure!(
        !ids.is_empty(),
        "no events to browse: seed the demo data first"
    );
    Ok(ids)
}

#[derive(Default)]
struct Visitor {
    list: Samples,
    detail: Samples,
    errors: u64,
}

pub async fn run(common: &Common, options: Options) -> anyhow::Result<()> {
    check_alive(common.server_pid)?;
    let gql = Gql::new(&common.url)?;
    let ids = Arc::new(listed_event_ids(&gql).await?);
    let cpu = common.server_pid.map(CpuMeter::start).transpose()?;
    let start = Instant::now();
    let end = start + Duration::from_secs(options.seconds);
    let mut tasks = Vec::new();
    for worker in 0..options.concurrency {
        let (gql, ids) = (gql.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            let mut me = Visitor::default();
            let mut i = worker;
            while Instant::now() < end {
                i += 1;
                let list = i % 2 == 0;
                let (query, variables) = if list {
                    (EVENTS, json!({}))
                } else {
                    (EVENT, json!({ "id": ids[i % ids.len()] }))
                };
                let started = Instant::now();
                let answer = gql.call_ok(query, &variables).await;
                let finished = Instant::now();
                match answer {
                    Ok(true) => {
                        let samples = if list { &mut me.list } else { &mut me.detail };
                        samples.record(start, started, finished);
                    }
                    _ => me.errors += 1,
                }
            }
            me
        }));
    }
    let mut all = Visitor::default();
    for task in tasks {
        let visitor = task.await?;
        all.list.merge(visitor.list);
        all.detail.merge(visitor.detail);
        all.errors += visitor.errors;
    }
    let elapsed = secs(start.elapsed());
    let server_cores = cpu.map(|c| c.cores()).transpose()?;
    let mut both = Samples::default();
    both.histogram.add(&all.list.histogram)?;
    both.histogram.add(&all.detail.histogram)?;
    let total = both.summary();
    let per_sec = total.count as f64 / elapsed;
    let (list, detail) = (all.list.summary(), all.detail.summary());
    let rows = [
        ("concurrent visitors", options.concurrency.to_string()),
        ("duration", format!("{elapsed:.1} s")),
        ("**requests/s**", format!("**{per_sec:.0}**")),
        (
            "**p99 (all requests)**",
            format!("**{:.2} ms**", total.p99_ms),
        ),
        (
            "p50 / max (all requests)",
            format!("{:.2} / {:.2} ms", total.p50_ms, total.max_ms),
        ),
        ("errors", all.errors.to_string()),
        (
            "server CPU (cores busy)",
            server_cores.map_or("n/a".into(), |c| format!("{c:.2}")),
        ),
    ];
    let markdown = format!(
        "{}\n{}\n{}\n{}\n",
        table(&rows),
        crate::stats::Latency::HEADER,
        list.row("events(first: 20) + organizer + availability"),
        detail.row("event(id)")
    );
    Report {
        scenario: "browse",
        common,
        results: json!({
            "options": { "concurrency": options.concurrency, "seconds": options.seconds },
            "requests_per_sec": per_sec,
            "all": total,
            "events_list": list,
            "event_by_id": detail,
            "errors": all.errors,
            "server_cores": server_cores,
        }),
        markdown,
        series: vec![("events(first: 20)", &all.list), ("event(id)", &all.detail)],
    }
    .write()?;
    Ok(())
}
