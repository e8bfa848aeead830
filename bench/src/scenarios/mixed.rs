//! `mixed`: signed-in users browsing, booking, cancelling and checking their bookings, while
//! WebSocket subscribers watch the events they book.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use uuid::Uuid;

use super::browse::{EVENT, EVENTS};
use super::{big_events, check_alive, secs};
use crate::Common;
use crate::client::{Answer, BOOK, Gql, Subscriber};
use crate::report::{Report, table};
use crate::stats::{Latency, Samples};
use crate::system::CpuMeter;

const CANCEL: &str = "mutation($id: ID!) { cancelBooking(id: $id) { id status } }";
const MY_BOOKINGS: &str =
    "{ myBookings(first: 10) { edges { node { id quantity status event { id title } } } } }";
const SEATS: &str =
    "subscription($id: ID!) { seatAvailability(eventId: $id) { seatsAvailable version } }";

/// Out of every 20 operations: 8 list, 5 detail, 4 book, 2 cancel, 1 my bookings.
const PLAN: [Op; 20] = {
    use Op::*;
    [
        List, Detail, Book, List, Detail, List, Cancel, Book, List, Detail, Mine, List, Book,
        Detail, List, Cancel, List, Book, Detail, List,
    ]
};

#[derive(Clone, Copy)]
enum Op {
    List,
    Detail,
    Book,
    Cancel,
    Mine,
}

#[derive(clap::Args)]
pub struct Options {
    /// Concurrent signed-in users.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Events they book.
    #[arg(long, default_value_t = 4)]
    events: usize,
    /// WebSocket subscribers watching those events.
    #[arg(long, default_value_t = 500)]
    subscribers: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
}

#[derive(Default)]
struct User {
    samples: [Samples; 5],
    errors: u64,
}

pub async fn run(common: &Common, options: Options) -> anyhow::Result<()> {
    check_alive(common.server_pid)?;
    let gql = Gql::new(&common.url)?;
    let events = big_events(&gql, common, "Mixed", options.events).await?;
    let events = Arc::new(events);
    let run_id = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let users = gql.register_buyers(&run_id, options.concurrency).await?;

    let received = Arc::new(AtomicU64::new(0));
    let mut watchers = Vec::new();
    for i in 0..options.subscribers {
        let mut sub = Subscriber::connect(
            &gql.ws_endpoint,
            Ipv4Addr::LOCALHOST,
            SEATS,
            json!({ "id": events[i % events.len()] }),
        )
        .await?;
        let received = received.clone();
        watchers.push(tokio::spawn(async move {
            while let Ok(Some(_)) = sub.next_data().await {
                received.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let cpu = common.server_pid.map(CpuMeter::start).transpose()?;
    let start = Instant::now();
    let end = start + Duration::from_secs(options.seconds);
    let mut tasks = Vec::new();
    for (worker, (_, token)) in users.into_iter().enumerate() {
        let (gql, events) = (gql.clone(), events.clone());
        tasks.push(tokio::spawn(async move {
            let mut me = User::default();
            let mut mine: Vec<String> = Vec::new();
            let mut i = worker;
            while Instant::now() < end {
                i += 1;
                let op = PLAN[i % PLAN.len()];
                let event = &events[i % events.len()];
                let (query, variables) = match op {
                    Op::List => (EVENTS, json!({})),
                    Op::Detail => (EVENT, json!({ "id": event })),
                    Op::Book => (
                        BOOK,
                        json!({ "input": { "eventId": event, "quantity": 1 + i % 2 } }),
                    ),
                    Op::Cancel => match mine.pop() {
                        Some(id) => (CANCEL, json!({ "id": id })),
                        None => continue,
                    },
                    Op::Mine => (MY_BOOKINGS, json!({})),
                };
                let started = Instant::now();
                let answer = gql.call(Some(&token), query, variables).await;
                let finished = Instant::now();
                match answer {
                    Ok(Answer::Data(data)) => {
                        if let Some(id) = data["bookSeats"]["id"].as_str() {
                            mine.push(id.to_owned());
                        }
                        me.samples[op as usize].record(start, started, finished);
                    }
                    _ => me.errors += 1,
                }
            }
            me
        }));
    }
    let mut all = User::default();
    for task in tasks {
        let user = task.await?;
        for (total, samples) in all.samples.iter_mut().zip(user.samples) {
            total.merge(samples);
        }
        all.errors += user.errors;
    }
    let elapsed = secs(start.elapsed());
    let server_cores = cpu.map(|c| c.cores()).transpose()?;
    for watcher in watchers {
        watcher.abort();
    }

    let names = [
        "events(first: 20)",
        "event(id)",
        "bookSeats",
        "cancelBooking",
        "myBookings",
    ];
    let summaries: Vec<Latency> = all.samples.iter().map(Samples::summary).collect();
    let requests: u64 = summaries.iter().map(|s| s.count).sum();
    let rows = [
        ("signed-in users", options.concurrency.to_string()),
        ("subscribers", options.subscribers.to_string()),
        ("duration", format!("{elapsed:.1} s")),
        (
            "**requests/s**",
            format!("**{:.0}**", requests as f64 / elapsed),
        ),
        (
            "subscription messages received",
            received.load(Ordering::Relaxed).to_string(),
        ),
        ("errors", all.errors.to_string()),
        (
            "server CPU (cores busy)",
            server_cores.map_or("n/a".into(), |c| format!("{c:.2}")),
        ),
    ];
    let mut markdown = format!("{}\n{}\n", table(&rows), Latency::HEADER);
    for (name, summary) in names.iter().zip(&summaries) {
        markdown.push_str(&summary.row(name));
        markdown.push('\n');
    }
    let series = names.iter().copied().zip(all.samples.iter()).collect();
    Report {
        scenario: "mixed",
        common,
        results: json!({
            "options": {
                "concurrency": options.concurrency, "events": options.events,
                "subscribers": options.subscribers, "seconds": options.seconds,
            },
            "requests_per_sec": requests as f64 / elapsed,
            "operations": names.iter().zip(&summaries).map(|(n, s)| json!({ "operation": n, "latency": s })).collect::<Vec<_>>(),
            "subscription_messages": received.load(Ordering::Relaxed),
            "errors": all.errors,
            "server_cores": server_cores,
        }),
        markdown,
        series,
    }
    .write()?;
    Ok(())
}
