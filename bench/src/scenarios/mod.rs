//! One module per scenario; each sets up what it needs through the API, runs for a bounded
//! time and writes a report.

pub mod analytics;
pub mod browse;
pub mod chaos;
pub mod fanout;
pub mod mixed;
pub mod onsale;
pub mod orders;
pub mod webhooks;

use std::time::Duration;

use crate::Common;
use crate::client::Gql;

/// Fails the scenario if the server's process is gone (it would only measure errors).
pub fn check_alive(pid: Option<u32>) -> anyhow::Result<()> {
    if let Some(pid) = pid {
        anyhow::ensure!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "the server (pid {pid}) is not running"
        );
    }
    Ok(())
}

pub fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// `count` events too big to sell out (`<name> 0`, `<name> 1`, ...), created as the organizer.
pub async fn big_events(
    gql: &Gql,
    common: &Common,
    name: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let organizer = gql
        .login(&common.organizer_email, &common.organizer_password)
        .await?;
    let mut events = Vec::with_capacity(count);
    for i in 0..count {
        events.push(
            gql.create_event(&organizer, &format!("{name} {i}"), 1_000_000, 10)
                .await?,
        );
    }
    Ok(events)
}
