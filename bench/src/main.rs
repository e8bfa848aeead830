//! `bench`: drives a running Evently server over real HTTP and WebSocket and writes what it
//! measured under `bench/results/` (JSON, a markdown summary and a PNG chart per run).
//!
//! It talks to loopback addresses only, and every scenario is bounded in requests and time.
//! `scripts/bench.sh` builds everything, starts a server on a fresh database and runs it.

mod baseline;
mod client;
mod curve;
mod report;
mod scenarios;
mod stats;
mod system;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "bench", about = "Load tool for the Evently server")]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Args, Clone)]
pub struct Common {
    /// The server's base URL (loopback only).
    #[arg(
        long,
        env = "BENCH_URL",
        default_value = "http://127.0.0.1:8099",
        global = true
    )]
    pub url: String,
    /// The server's database, for set-up checks, the invariant and the pgbench baseline.
    #[arg(
        long,
        env = "BENCH_DATABASE_URL",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/evently_bench",
        global = true
    )]
    pub database_url: String,
    /// Where results go.
    #[arg(long, default_value = "bench/results", global = true)]
    pub out: PathBuf,
    /// The server's process id, to read its memory and CPU use (and, for `onsale`, to kill it).
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// An organizer account on the server (the demo data has this one).
    #[arg(long, default_value = "organizer@evently.test", global = true)]
    pub organizer_email: String,
    #[arg(long, default_value = "organizer-demo-pass", global = true)]
    pub organizer_password: String,
    /// Skip the pgbench baseline.
    #[arg(long, global = true)]
    pub no_baseline: bool,
    /// Appended to result file names, to keep several runs of one scenario.
    #[arg(long, global = true)]
    pub label: Option<String>,
}

#[derive(Subcommand)]
enum Scenario {
    /// One event with capacity K, C concurrent buyers booking until it is sold out, then
    /// hammering it for a while to measure sold-out rejections.
    Onsale(scenarios::onsale::Options),
    /// `events(first: 20)` with nested organizer and availability, and `event(id)`: anonymous,
    /// signed in, and a peer server (`--peer postgraphile`) in one run.
    Browse(scenarios::browse::Options),
    /// S WebSocket subscribers on E events, bookings at a steady rate; commit-to-receive latency.
    Fanout(scenarios::fanout::Options),
    /// A blend of browsing, booking, cancelling and subscribing.
    Mixed(scenarios::mixed::Options),
    /// Analytics over a generated history: eventStats, salesOverTime, platformStats, the CSV export.
    Analytics(scenarios::analytics::Options),
    /// Only the pgbench baseline: one booking per transaction on one hot event row.
    Baseline(baseline::Options),
    /// A scaling curve (PNG) from the runs of a sweep: `scripts/bench.sh sweep` runs them.
    Curve(curve::Options),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    client::ensure_loopback(&cli.common.url)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let common = cli.common;
        match cli.scenario {
            Scenario::Onsale(options) => scenarios::onsale::run(&common, options).await,
            Scenario::Browse(options) => scenarios::browse::run(&common, options).await,
            Scenario::Fanout(options) => scenarios::fanout::run(&common, options).await,
            Scenario::Mixed(options) => scenarios::mixed::run(&common, options).await,
            Scenario::Analytics(options) => scenarios::analytics::run(&common, options).await,
            Scenario::Baseline(options) => baseline::run_alone(&common, options).await,
            Scenario::Curve(options) => curve::run(&common, options),
        }
    })
}
