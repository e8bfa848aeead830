//! One module per scenario; each sets up what it needs through the API, runs for a bounded
//! time and writes a report.

pub mod browse;
pub mod fanout;
pub mod mixed;
pub mod onsale;

use std::time::Duration;

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
