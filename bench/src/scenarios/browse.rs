//! `browse`: visitors paging the event list and opening events, as frontends do: anonymous,
//! then signed in (a bearer token on every request, and the viewer asked for with each page,
//! as a page header shows it), then, with `--peer postgraphile`, the same reads from
//! PostGraphile v4 on the same database, all in one run so the figures compare.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use super::{check_alive, secs};
use crate::Common;
use crate::client::Gql;
use crate::report::{Report, table};
use crate::stats::{Latency, Samples};
use crate::system::CpuMeter;

pub const EVENTS: &str = "query Browse { events(first: 20) { edges { node { id title venue category startsAt \
    capacity seatsAvailable organizer { id name } } } pageInfo { hasNextPage endCursor } } }";
pub const EVENT: &str = "query Event($id: ID!) { event(id: $id) { id title description venue startsAt endsAt \
    capacity seatsAvailable maxPerBooking status organizer { id name } } }";
/// The same reads signed in: the page also shows who is signed in.
const SIGNED_IN_EVENTS: &str = "query Browse { me { id name } events(first: 20) { edges { node { id title venue \
    category startsAt capacity seatsAvailable organizer { id name } } } pageInfo { hasNextPage endCursor } } }";
const SIGNED_IN_EVENT: &str = "query Event($id: ID!) { me { id name } event(id: $id) { id title description venue \
    startsAt endsAt capacity seatsAvailable maxPerBooking status organizer { id name } } }";
/// PostGraphile v4's names for the same reads (its default inflection of the same tables).
const PEER_EVENTS: &str = "query Browse { allEvents(first: 20, orderBy: [STARTS_AT_ASC, ID_ASC], \
    condition: { status: \"PUBLISHED\" }) { edges { node { id title venue category startsAt capacity \
    seatsAvailable userByOrganizerId { id name } } } pageInfo { hasNextPage endCursor } } }";
const PEER_EVENT: &str = "query Event($id: UUID!) { eventById(id: $id) { id title description venue \
    startsAt endsAt capacity seatsAvailable maxPerBooking status userByOrganizerId { id name } } }";

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Anonymous,
    SignedIn,
    Both,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Postgraphile,
}

#[derive(clap::Args)]
pub struct Options {
    /// Concurrent visitors (connections).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds of load per phase (anonymous, signed in, peer).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Which Evently phases to run.
    #[arg(long, value_enum, default_value = "both")]
    auth: Auth,
    /// Signed-in visitors are this many accounts (registered at the start; each visitor uses
    /// one, round robin). Default: one per visitor.
    #[arg(long)]
    users: Option<usize>,
    /// Also load a peer server on the same database with its equivalent query, in the same
    /// run (`scripts/bench.sh browse --peer postgraphile` starts it).
    #[arg(long, value_enum)]
    peer: Option<Peer>,
    /// Where the peer listens (its GraphQL endpoint is `<url>/graphql`).
    #[arg(long, default_value = "http://127.0.0.1:5099")]
    peer_url: String,
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

/// One phase: who asks, and with which documents.
struct Phase {
    name: &'static str,
    gql: Gql,
    tokens: Vec<Option<String>>,
    list: &'static str,
    detail: &'static str,
    /// The server's process, for its CPU (Evently's; none for the peer).
    pid: Option<u32>,
    /// The database the server reads, to count its transactions (`pg_stat_database`).
    database_url: Option<String>,
}

struct Measured {
    name: &'static str,
    per_sec: f64,
    total: Latency,
    list: Latency,
    detail: Latency,
    errors: u64,
    server_cores: Option<f64>,
    /// PostgreSQL transactions (commits and rollbacks, an autocommitted statement counting
    /// one) per request, from `pg_stat_database`.
    transactions_per_request: Option<f64>,
    samples: Visitor,
}

/// The database's transactions so far (`xact_commit + xact_rollback`). Backends report their
/// counts about once a second, so this waits for that first.
async fn transactions(database_url: &str) -> Option<i64> {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database \
             WHERE datname = current_database()",
            &[],
        )
        .await
        .ok()?;
    row.get::<_, Option<i64>>(0)
}

async fn run_phase(
    phase: Phase,
    ids: &Arc<Vec<String>>,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<Measured> {
    // Each visitor's first request must work: a phase of errors measures nothing.
    let token = phase.tokens.first().cloned().flatten();
    let ok = phase
        .gql
        .call_ok_as(token.as_deref(), phase.list, &json!({}))
        .await?;
    anyhow::ensure!(ok, "{}: the list query fails", phase.name);
    let transactions_before = match &phase.database_url {
        Some(url) => transactions(url).await,
        None => None,
    };
    let cpu = phase.pid.map(CpuMeter::start).transpose()?;
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let tokens = Arc::new(phase.tokens);
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (gql, ids, tokens) = (phase.gql.clone(), ids.clone(), tokens.clone());
        let (list_query, detail_query) = (phase.list, phase.detail);
        tasks.push(tokio::spawn(async move {
            let token = tokens[worker % tokens.len()].clone();
            let mut me = Visitor::default();
            let mut i = worker;
            while Instant::now() < end {
                i += 1;
                let list = i % 2 == 0;
                let (query, variables) = if list {
                    (list_query, json!({}))
                } else {
                    (detail_query, json!({ "id": ids[i % ids.len()] }))
                };
                let started = Instant::now();
                let answer = gql.call_ok_as(token.as_deref(), query, &variables).await;
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
    let transactions_after = match &phase.database_url {
        Some(url) => transactions(url).await,
        None => None,
    };
    // The tool's own two reads count too: two in thousands.
    let transactions_per_request = match (transactions_before, transactions_after) {
        (Some(before), Some(after)) if total.count > 0 => {
            Some((after - before - 1) as f64 / (total.count + all.errors) as f64)
        }
        _ => None,
    };
    Ok(Measured {
        transactions_per_request,
        name: phase.name,
        per_sec: total.count as f64 / elapsed,
        total,
        list: all.list.summary(),
        detail: all.detail.summary(),
        errors: all.errors,
        server_cores,
        samples: all,
    })
}

pub async fn run(common: &Common, options: Options) -> anyhow::Result<()> {
    check_alive(common.server_pid)?;
    let gql = Gql::new(&common.url)?;
    let ids = Arc::new(listed_event_ids(&gql).await?);
    let mut phases = Vec::new();
    if options.auth != Auth::SignedIn {
        phases.push(Phase {
            name: "evently anonymous",
            gql: gql.clone(),
            tokens: vec![None],
            list: EVENTS,
            detail: EVENT,
            pid: common.server_pid,
            database_url: Some(common.database_url.clone()),
        });
    }
    if options.auth != Auth::Anonymous {
        let users = options.users.unwrap_or(options.concurrency).max(1);
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let buyers = gql.register_buyers(&run_id[..8], users).await?;
        phases.push(Phase {
            name: "evently signed in",
            gql: gql.clone(),
            tokens: buyers.into_iter().map(|(_, token)| Some(token)).collect(),
            list: SIGNED_IN_EVENTS,
            detail: SIGNED_IN_EVENT,
            pid: common.server_pid,
            database_url: Some(common.database_url.clone()),
        });
    }
    if let Some(Peer::Postgraphile) = options.peer {
        crate::client::ensure_loopback(&options.peer_url)?;
        phases.push(Phase {
            name: "postgraphile",
            gql: Gql::new(&options.peer_url)?,
            tokens: vec![None],
            list: PEER_EVENTS,
            detail: PEER_EVENT,
            pid: None,
            database_url: Some(common.database_url.clone()),
        });
    }
    let mut measured = Vec::new();
    for phase in phases {
        check_alive(common.server_pid)?;
        eprintln!("==> browse: {}", phase.name);
        measured.push(run_phase(phase, &ids, options.concurrency, options.seconds).await?);
    }
    write(common, &options, &measured)
}

fn write(common: &Common, options: &Options, measured: &[Measured]) -> anyhow::Result<()> {
    let rate = |name: &str| measured.iter().find(|m| m.name == name).map(|m| m.per_sec);
    let (anonymous, signed_in, peer) = (
        rate("evently anonymous"),
        rate("evently signed in"),
        rate("postgraphile"),
    );
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let mut rows = vec![
        ("concurrent visitors", options.concurrency.to_string()),
        ("seconds per phase", options.seconds.to_string()),
    ];
    for m in measured {
        rows.push((
            m.name,
            format!(
                "**{:.0} req/s**, p50 {:.2} ms, **p99 {:.2} ms**, max {:.2} ms, errors {}, server CPU {}, PostgreSQL transactions per request {}",
                m.per_sec,
                m.total.p50_ms,
                m.total.p99_ms,
                m.total.max_ms,
                m.errors,
                m.server_cores
                    .map_or("n/a".into(), |c| format!("{c:.2} cores")),
                m.transactions_per_request
                    .map_or("n/a".into(), |t| format!("{t:.2}"))
            ),
        ));
    }
    let ratios = [
        ("signed in / anonymous", ratio(signed_in, anonymous)),
        ("anonymous / postgraphile", ratio(anonymous, peer)),
        ("signed in / postgraphile", ratio(signed_in, peer)),
    ];
    for (name, value) in ratios {
        if let Some(value) = value {
            rows.push((name, format!("**{value:.2}×**")));
        }
    }
    let mut markdown = format!("{}\n{}\n", table(&rows), Latency::HEADER);
    for m in measured {
        markdown.push_str(&m.list.row(&format!("{}: list of 20", m.name)));
        markdown.push('\n');
        markdown.push_str(&m.detail.row(&format!("{}: one event", m.name)));
        markdown.push('\n');
    }
    let phases: Value = measured
        .iter()
        .map(|m| {
            (
                m.name.replace(' ', "_"),
                json!({
                    "requests_per_sec": m.per_sec,
                    "all": m.total,
                    "events_list": m.list,
                    "event_by_id": m.detail,
                    "errors": m.errors,
                    "server_cores": m.server_cores,
                    "transactions_per_request": m.transactions_per_request,
                }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    let first = measured.first().context("no phase ran")?;
    let series: Vec<(&'static str, &Samples)> = measured
        .iter()
        .flat_map(|m| [(m.name, &m.samples.list)])
        .collect();
    Report {
        scenario: "browse",
        common,
        results: json!({
            "options": { "concurrency": options.concurrency, "seconds": options.seconds },
            // The first phase's figures at the top, as before the phases.
            "requests_per_sec": first.per_sec,
            "all": first.total,
            "errors": measured.iter().map(|m| m.errors).sum::<u64>(),
            "phases": phases,
            "signed_in_over_anonymous": ratio(signed_in, anonymous),
            "anonymous_over_peer": ratio(anonymous, peer),
            "signed_in_over_peer": ratio(signed_in, peer),
        }),
        markdown,
        series,
    }
    .write()?;
    Ok(())
}
