//! Latency recording: an HDR histogram for the percentiles and the raw points for the chart.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies of one kind of operation, recorded by one task and merged at the end.
pub struct Samples {
    pub histogram: Histogram<u64>,
    /// (seconds since the run started, latency in milliseconds).
    pub points: Vec<(f64, f64)>,
}

impl Default for Samples {
    fn default() -> Self {
        Self {
            // Microseconds, up to an hour, three significant digits.
            histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
            points: Vec::new(),
        }
    }
}

impl Samples {
    /// Records an operation that started at `started` and finished at `finished`.
    pub fn record(&mut self, run_start: Instant, started: Instant, finished: Instant) {
        self.record_latency(
            run_start,
            finished,
            finished.saturating_duration_since(started),
        );
    }

    pub fn record_latency(&mut self, run_start: Instant, at: Instant, latency: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.histogram.saturating_record(micros);
        self.points.push((
            at.saturating_duration_since(run_start).as_secs_f64(),
            micros as f64 / 1000.0,
        ));
    }

    pub fn merge(&mut self, other: Samples) {
        self.histogram.add(&other.histogram).expect("same bounds");
        self.points.extend(other.points);
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    pub fn summary(&self) -> Latency {
        let ms = |micros: u64| micros as f64 / 1000.0;
        if self.histogram.is_empty() {
            return Latency::default();
        }
        Latency {
            count: self.histogram.len(),
            mean_ms: self.histogram.mean() / 1000.0,
            p50_ms: ms(self.histogram.value_at_quantile(0.50)),
            p90_ms: ms(self.histogram.value_at_quantile(0.90)),
            p99_ms: ms(self.histogram.value_at_quantile(0.99)),
            max_ms: ms(self.histogram.max()),
        }
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn row(&self, name: &str) -> String {
        format!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            self.count, self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms
        )
    }

    pub const HEADER: &str =
        "| operation | count | p50 ms | p90 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|";
}
