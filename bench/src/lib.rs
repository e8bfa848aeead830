//! `bench`: drives a running Evently server over real HTTP and WebSocket and writes what it
//! measured under `bench/results/` (JSON, a markdown summary and a PNG chart per run).
//!
//! It talks to loopback addresses only, and every scenario is bounded in requests and time.
//! `scripts/bench.sh` builds everything, starts a server on a fresh database and runs it.
//! A library as well as the `bench` binary: the chaos scenarios (`scenarios::chaos`, with the
//! processes they start in `cluster`) also run in the test suite (`tests/chaos.rs`).

pub mod baseline;
pub mod client;
pub mod cluster;
pub mod curve;
pub mod report;
pub mod scenarios;
pub mod stats;
pub mod system;

use std::path::PathBuf;

use clap::Args;

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
