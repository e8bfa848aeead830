//! Results on disk: `<name>.json` (everything measured), `<name>.md` (the summary) and
//! `<name>.png` (latency over time and the latency histogram).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

use anyhow::Context;
use plotters::prelude::*;
use serde_json::{Value, json};

use crate::Common;
use crate::stats::Samples;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
pub const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
];
/// More points than this per series are thinned for the chart (not for the figures).
const MAX_POINTS: usize = 40_000;

pub struct Report<'a> {
    pub scenario: &'static str,
    pub common: &'a Common,
    pub results: Value,
    pub markdown: String,
    pub series: Vec<(&'static str, &'a Samples)>,
}

impl Report<'_> {
    /// Writes the three files and prints the summary.
    pub fn write(self) -> anyhow::Result<PathBuf> {
        let name = match &self.common.label {
            Some(label) => format!("{}-{label}", self.scenario),
            None => self.scenario.to_owned(),
        };
        std::fs::create_dir_all(&self.common.out)?;
        let base = self.common.out.join(&name);
        let document = json!({
            "scenario": self.scenario,
            "finished_at": chrono::Utc::now().to_rfc3339(),
            "git_commit": git_commit(),
            "machine": { "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
            "results": self.results,
        });
        std::fs::write(
            base.with_extension("json"),
            serde_json::to_string_pretty(&document)?,
        )?;
        let chart = base.with_extension("png");
        let markdown = format!(
            "# {name}\n\nRun at {} on commit `{}`; raw figures in `{name}.json`, chart in `{name}.png`.\n\n{}\n",
            document["finished_at"].as_str().unwrap_or_default(),
            document["git_commit"].as_str().unwrap_or("unknown"),
            self.markdown
        );
        std::fs::write(base.with_extension("md"), &markdown)?;
        if !self.series.is_empty()
            && let Err(error) = draw(&chart, &name, &self.series)
        {
            eprintln!("warning: no chart: {error:#}");
        }
        println!("{markdown}");
        Ok(base)
    }
}

fn git_commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".into(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        )
}

pub fn register_font() -> anyhow::Result<()> {
    static REGISTER: Once = Once::new();
    let bytes = std::fs::read(FONT)
        .with_context(|| format!("reading {FONT} (apt-get install fonts-dejavu-core)"))?;
    REGISTER.call_once(|| {
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_err() {
            eprintln!("warning: {FONT} is not a usable font");
        }
    });
    Ok(())
}

fn draw(path: &Path, title: &str, series: &[(&str, &Samples)]) -> anyhow::Result<()> {
    register_font()?;
    let root = BitMapBackend::new(path, (1600, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 28))?;
    let (left, right) = root.split_horizontally(900);

    let points = |s: &Samples| -> Vec<(f64, f64)> {
        let step = s.points.len().div_ceil(MAX_POINTS).max(1);
        s.points.iter().step_by(step).copied().collect()
    };
    let max_t = series
        .iter()
        .flat_map(|(_, s)| s.points.iter().map(|p| p.0))
        .fold(1.0_f64, f64::max);
    // The y axis stops at the 99.9th percentile so one outlier does not flatten the chart.
    let top = series
        .iter()
        .filter(|(_, s)| !s.histogram.is_empty())
        .map(|(_, s)| s.histogram.value_at_quantile(0.999) as f64 / 1000.0)
        .fold(1.0_f64, f64::max)
        * 1.1;

    let mut chart = ChartBuilder::on(&left)
        .caption("latency over time", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_t, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds into the run")
        .y_desc("latency (ms)")
        .draw()?;
    for (i, (name, samples)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(
                points(samples)
                    .into_iter()
                    .filter(|p| p.1 <= top)
                    .map(|p| Circle::new(p, 1, color.filled())),
            )?
            .label(*name)
            .legend(move |(x, y)| Circle::new((x + 5, y), 4, color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    const BUCKETS: usize = 60;
    let width = top / BUCKETS as f64;
    let counts: Vec<Vec<u64>> = series
        .iter()
        .map(|(_, s)| {
            let mut counts = vec![0_u64; BUCKETS];
            for v in s.histogram.iter_recorded() {
                let ms = v.value_iterated_to() as f64 / 1000.0;
                let bucket = ((ms / width) as usize).min(BUCKETS - 1);
                counts[bucket] += v.count_at_value();
            }
            counts
        })
        .collect();
    let max_count = counts.iter().flatten().copied().max().unwrap_or(1).max(1);
    let mut histogram = ChartBuilder::on(&right)
        .caption("latency histogram", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..top, 0_u64..max_count + max_count / 10)?;
    histogram
        .configure_mesh()
        .x_desc("latency (ms)")
        .y_desc("operations")
        .draw()?;
    for (i, counts) in counts.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        histogram.draw_series(counts.iter().enumerate().map(|(b, &count)| {
            let x0 = b as f64 * width;
            Rectangle::new([(x0, 0), (x0 + width, count)], color.mix(0.5).filled())
        }))?;
    }
    root.present()?;
    Ok(())
}

/// A markdown table row of `key | value` pairs.
pub fn table(rows: &[(&str, String)]) -> String {
    let mut out = String::from("| figure | value |\n|---|---:|\n");
    for (key, value) in rows {
        out.push_str(&format!("| {key} | {value} |\n"));
    }
    out
}
