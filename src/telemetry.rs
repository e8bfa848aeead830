//! Logging and traces, set up once at start-up from [`TelemetryConfig`] ([`init`]), and
//! Prometheus metrics ([`metrics`]). Traces: see [`traces`].

pub mod metrics;
pub mod traces;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::TelemetryConfig;

/// What must live as long as the process logs and traces: dropping it flushes the traces.
pub struct Telemetry {
    _traces: Option<traces::Tracing>,
}

/// Logs go to stderr, filtered by `RUST_LOG` (default: info for this crate, warn otherwise),
/// as JSON lines when `config.json`, for log shippers: each line carries the spans it was
/// written in, so a line written during a request has the HTTP span's `request_id` and
/// `trace_id`. Traces go out over OTLP when `config.traces`; their spans are filtered apart
/// from the logs (see `traces::layer`).
pub fn init(config: &TelemetryConfig) -> Telemetry {
    let filter = config
        .filter
        .as_deref()
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new("evently=info,tower_http=info,warn"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = if config.json {
        logs.json().with_filter(filter).boxed()
    } else {
        logs.with_filter(filter).boxed()
    };
    let registry = tracing_subscriber::registry().with(logs);
    let mut failed = None;
    let tracing = if config.traces {
        match traces::install() {
            Ok((layer, tracing)) => {
                registry.with(layer).init();
                Some(tracing)
            }
            Err(error) => {
                registry.init();
                failed = Some(error);
                None
            }
        }
    } else {
        registry.init();
        None
    };
    if let Some(format) = &config.unknown_format {
        tracing::warn!(format, "LOG_FORMAT is neither `json` nor `text`: ignored");
    }
    match (&failed, &tracing) {
        (Some(error), _) => tracing::error!(%error, "cannot export traces over OTLP"),
        (None, Some(_)) => tracing::info!("exporting traces over OTLP"),
        (None, None) => {}
    }
    Telemetry { _traces: tracing }
}
