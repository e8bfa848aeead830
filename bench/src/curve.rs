//! `curve`: one scenario's figure against the size it ran at, from the runs a sweep wrote
//! (`scripts/bench.sh sweep <scenario> <sizes>` runs `<scenario>-sweep-<size>` for each size,
//! then this). Writes `<scenario>-curve[-label].png`, `.md` and `.json`.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde_json::{Value, json};

use crate::Common;

#[derive(clap::Args)]
pub struct Options {
    /// `onsale` (confirmed bookings/s against buyers), `browse` (requests/s against
    /// connections, one line per phase) or `fanout` (send-to-receive p99 against subscribers).
    scenario: String,
    /// The sizes the sweep ran, comma-separated (e.g. 16,64,256,1024).
    #[arg(long, value_delimiter = ',', required = true)]
    sizes: Vec<u64>,
    /// The runs are `<scenario>-<prefix>-<size>.json` in the results directory.
    #[arg(long, default_value = "sweep")]
    prefix: String,
}

/// What a scenario's curve plots: its axis names, and each line's name and figure in a run's
/// results.
type Line = (&'static str, fn(&Value) -> Option<f64>);

fn describe(scenario: &str) -> anyhow::Result<(&'static str, &'static str, Vec<Line>)> {
    Ok(match scenario {
        "onsale" => (
            "buyers (concurrent connections)",
            "confirmed bookings/s",
            vec![("bookings/s", |r| r["confirmed_per_sec"].as_f64())],
        ),
        "browse" => (
            "connections",
            "requests/s",
            vec![
                ("anonymous", |r| {
                    r["phases"]["evently_anonymous"]["requests_per_sec"].as_f64()
                }),
                ("signed in", |r| {
                    r["phases"]["evently_signed_in"]["requests_per_sec"].as_f64()
                }),
                ("postgraphile", |r| {
                    r["phases"]["postgraphile"]["requests_per_sec"].as_f64()
                }),
            ],
        ),
        "fanout" => (
            "subscribers on one event",
            "send-to-receive p99 (ms)",
            vec![("p99", |r| r["latency"]["p99_ms"].as_f64())],
        ),
        other => anyhow::bail!("no curve for `{other}`: onsale, browse or fanout"),
    })
}

pub fn run(common: &Common, options: Options) -> anyhow::Result<()> {
    let (x_name, y_name, lines) = describe(&options.scenario)?;
    let mut runs = Vec::new();
    for size in &options.sizes {
        let path = common.out.join(format!(
            "{}-{}-{size}.json",
            options.scenario, options.prefix
        ));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (run the sweep first)", path.display()))?;
        let document: Value = serde_json::from_str(&text)?;
        runs.push((*size, document["results"].clone()));
    }
    let curves: Vec<(&str, Vec<(f64, f64)>)> = lines
        .iter()
        .map(|(name, figure)| {
            let points = runs
                .iter()
                .filter_map(|(size, results)| figure(results).map(|y| (*size as f64, y)))
                .collect();
            (*name, points)
        })
        .filter(|(_, points): &(&str, Vec<(f64, f64)>)| !points.is_empty())
        .collect();
    anyhow::ensure!(!curves.is_empty(), "the runs hold no figure to plot");
    let name = match &common.label {
        Some(label) => format!("{}-curve-{label}", options.scenario),
        None => format!("{}-curve", options.scenario),
    };
    let base = common.out.join(&name);
    draw(&base.with_extension("png"), &name, x_name, y_name, &curves)?;
    let mut markdown = format!(
        "# {name}\n\nFrom `{}-{}-<size>.json`; chart in `{name}.png`.\n\n| {x_name} |",
        options.scenario, options.prefix
    );
    for (line, _) in &curves {
        markdown.push_str(&format!(" {line} ({y_name}) |"));
    }
    markdown.push_str("\n|---:|");
    markdown.push_str(&"---:|".repeat(curves.len()));
    markdown.push('\n');
    for size in &options.sizes {
        markdown.push_str(&format!("| {size} |"));
        for (_, points) in &curves {
            match points.iter().find(|(x, _)| *x == *size as f64) {
                Some((_, y)) => markdown.push_str(&format!(" {y:.1} |")),
                None => markdown.push_str(" – |"),
            }
        }
        markdown.push('\n');
    }
    std::fs::write(base.with_extension("md"), &markdown)?;
    let document = json!({
        "scenario": options.scenario,
        "x": x_name,
        "y": y_name,
        "lines": curves.iter().map(|(n, p)| json!({ "name": n, "points": p })).collect::<Vec<_>>(),
    });
    std::fs::write(
        base.with_extension("json"),
        serde_json::to_string_pretty(&document)?,
    )?;
    println!("{markdown}");
    Ok(())
}

fn draw(
    path: &Path,
    title: &str,
    x_name: &str,
    y_name: &str,
    curves: &[(&str, Vec<(f64, f64)>)],
) -> anyhow::Result<()> {
    crate::report::register_font()?;
    let points = curves.iter().flat_map(|(_, p)| p.iter());
    let (x_max, y_max) = points.fold((1.0_f64, 1.0_f64), |(x, y), p| (x.max(p.0), y.max(p.1)));
    let x_min = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.0))
        .fold(x_max, f64::min)
        .max(1.0);
    let root = BitMapBackend::new(path, (1000, 650)).into_drawing_area();
    root.fill(&WHITE)?;
    // Sizes grow by factors (16, 64, 256, 1,024): a logarithmic x axis spaces them evenly.
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 26))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d((x_min * 0.8..x_max * 1.25).log_scale(), 0.0..y_max * 1.15)?;
    chart
        .configure_mesh()
        .x_desc(x_name)
        .y_desc(y_name)
        .draw()?;
    for (i, (name, line)) in curves.iter().enumerate() {
        let color = crate::report::COLORS[i % crate::report::COLORS.len()];
        chart
            .draw_series(LineSeries::new(line.iter().copied(), color.stroke_width(3)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(line.iter().map(|p| Circle::new(*p, 5, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
