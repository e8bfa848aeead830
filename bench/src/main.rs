//! The `bench` command line: one subcommand per scenario (see the library's doc).

use clap::{Parser, Subcommand};
use evently_bench::{Common, baseline, client, curve, scenarios};

#[derive(Parser)]
#[command(name = "bench", about = "Load tool for the Evently server")]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
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
    /// An onsale through nginx in front of N instances of its own while one is killed, all
    /// are restarted in turn, PostgreSQL restarts or Redis restarts and freezes.
    Chaos(scenarios::chaos::Options),
    /// B buyers placing one-line orders of one ticket type on one event paid by hand, until
    /// it is sold out; against the pgbench baseline of the same run.
    Orders(scenarios::orders::Options),
    /// N card orders paid by `payment_intent.succeeded` webhooks sent C at once (a Stripe
    /// stand-in in the tool; `scripts/bench.sh webhooks` configures the server for it).
    Webhooks(scenarios::webhooks::Options),
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
            Scenario::Chaos(options) => scenarios::chaos::run(&common, options).await,
            Scenario::Orders(options) => scenarios::orders::run(&common, options).await,
            Scenario::Webhooks(options) => scenarios::webhooks::run(&common, options).await,
            Scenario::Baseline(options) => baseline::run_alone(&common, options).await,
            Scenario::Curve(options) => curve::run(&common, options),
        }
    })
}
