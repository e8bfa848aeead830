//! Logging, set up once at start-up from [`TelemetryConfig`], and Prometheus metrics ([`metrics`]).

pub mod metrics;

use tracing_subscriber::EnvFilter;

use crate::config::TelemetryConfig;

/// Logs go to stderr, filtered by `RUST_LOG` (default: info for this crate, warn otherwise).
/// JSON lines when `EVENTLY_LOG_FORMAT=json`, for log shippers.
pub fn init(config: &TelemetryConfig) {
    let filter = config
        .filter
        .as_deref()
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new("evently=info,tower_http=info,warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.json {
        builder.json().init();
    } else {
        builder.init();
    }
}
