//! The yardstick: pgbench running the booking transaction straight against the same database,
//! one booking per transaction, on one hot event row.

use std::process::Command;

use anyhow::{Context, ensure};
use serde::Serialize;
use serde_json::json;

use crate::Common;
use crate::client::Gql;
use crate::report::{Report, table};

#[derive(clap::Args)]
pub struct Options {
    /// Client counts to run pgbench with.
    #[arg(long, value_delimiter = ',', default_values_t = [8, 64])]
    pub clients: Vec<u32>,
    /// Seconds per pgbench run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct PgbenchRun {
    pub clients: u32,
    pub seconds: u32,
    pub bookings_per_sec: f64,
    pub latency_avg_ms: f64,
}

/// What the server's single-booking path does, minus everything but SQL: insert the booking
/// (idempotency key, as a client would send) and take the seat with the guarded UPDATE.
fn script(event_id: &str, user_id: &str) -> String {
    format!(
        "BEGIN;
INSERT INTO bookings (id, event_id, user_id, quantity, status, idempotency_key, created_at)
  VALUES (gen_random_uuid(), '{event_id}', '{user_id}', 1, 'CONFIRMED', md5(random()::text), now())
  ON CONFLICT ON CONSTRAINT bookings_user_idempotency_key DO NOTHING;
UPDATE events SET seats_available = seats_available - 1, version = version + 1, updated_at = now()
  WHERE id = '{event_id}' AND status = 'PUBLISHED' AND starts_at > now() AND seats_available >= 1;
COMMIT;
"
    )
}

/// An event big enough not to sell out under pgbench, and a user to book as.
pub async fn prepare(common: &Common, gql: &Gql) -> anyhow::Result<(String, String)> {
    let token = gql
        .login(&common.organizer_email, &common.organizer_password)
        .await?;
    let event = gql
        .create_event(&token, "pgbench baseline", 1_000_000, 10)
        .await?;
    let me = gql.expect(Some(&token), "{ me { id } }", json!({})).await?;
    let user = me["me"]["id"].as_str().context("no id")?.to_owned();
    Ok((event, user))
}

pub fn run(
    common: &Common,
    event_id: &str,
    user_id: &str,
    clients: u32,
    seconds: u32,
) -> anyhow::Result<PgbenchRun> {
    let file = std::env::temp_dir().join(format!("evently-pgbench-{}.sql", std::process::id()));
    std::fs::write(&file, script(event_id, user_id))?;
    let output = Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-j", "2"])
        .args(["-c", &clients.to_string(), "-T", &seconds.to_string()])
        .arg("-f")
        .arg(&file)
        .arg(&common.database_url)
        .output()
        .context("running pgbench (apt-get install postgresql-contrib)")?;
    let _ = std::fs::remove_file(&file);
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "pgbench failed: {}{}",
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    let figure = |prefix: &str| -> anyhow::Result<f64> {
        stdout
            .lines()
            .find_map(|line| line.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no `{prefix}` in pgbench output: {stdout}"))
    };
    Ok(PgbenchRun {
        clients,
        seconds,
        bookings_per_sec: figure("tps = ")?,
        latency_avg_ms: figure("latency average = ")?,
    })
}

/// Runs pgbench at each client count; the baseline each scenario compares itself with.
pub async fn run_all(
    common: &Common,
    gql: &Gql,
    options: &Options,
) -> anyhow::Result<Vec<PgbenchRun>> {
    let (event, user) = prepare(common, gql).await?;
    let mut runs = Vec::new();
    for &clients in &options.clients {
        let (common, event, user, seconds) =
            (common.clone(), event.clone(), user.clone(), options.seconds);
        let result =
            tokio::task::spawn_blocking(move || run(&common, &event, &user, clients, seconds))
                .await??;
        println!(
            "pgbench, {clients} clients: {:.0} bookings/s, {:.2} ms average",
            result.bookings_per_sec, result.latency_avg_ms
        );
        runs.push(result);
    }
    Ok(runs)
}

pub fn rows(runs: &[PgbenchRun]) -> Vec<(String, String)> {
    runs.iter()
        .map(|r| {
            (
                format!(
                    "pgbench, one booking per transaction, {} clients",
                    r.clients
                ),
                format!(
                    "{:.0} bookings/s ({:.2} ms avg)",
                    r.bookings_per_sec, r.latency_avg_ms
                ),
            )
        })
        .collect()
}

pub async fn run_alone(common: &Common, options: Options) -> anyhow::Result<()> {
    let gql = Gql::new(&common.url)?;
    let runs = run_all(common, &gql, &options).await?;
    let rows = rows(&runs);
    let rows: Vec<(&str, String)> = rows.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    Report {
        scenario: "baseline",
        common,
        results: json!({ "pgbench": runs }),
        markdown: table(&rows),
        series: Vec::new(),
    }
    .write()?;
    Ok(())
}
