//! The load test's chart: output throughput, time to first token and
//! inter-token latency against concurrency, every endpoint on the same axes.

use std::path::Path;

use anyhow::{anyhow, Result};
use loadgen::sweep::Level;
use plotters::coord::combinators::IntoLogRange;
use plotters::prelude::*;

use super::load::LoadReport;

const COLORS: [RGBColor; 4] = [BLUE, RED, GREEN, MAGENTA];

/// What one panel plots from a level: one or two lines (P50, P99).
type Pick = fn(&Level) -> (f64, Option<f64>);

pub(crate) fn draw(path: &Path, report: &LoadReport) -> Result<()> {
    let fail = |e: &dyn std::fmt::Display| anyhow!("cannot draw {}: {e}", path.display());
    if report.endpoints.iter().all(|e| e.levels.is_empty()) {
        return Err(anyhow!(
            "cannot draw {}: the report has no levels",
            path.display()
        ));
    }
    let root = SVGBackend::new(path, (1500, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let panels = root.split_evenly((1, 3));
    let specs: [(&str, &str, Pick); 3] = [
        ("Output throughput", "tokens per second", |l| {
            (l.output_tokens_per_s, None)
        }),
        (
            "Time to first token (P50 ●, P99 ▲)",
            "milliseconds",
            |l| (l.ttft_ms.p50, Some(l.ttft_ms.p99)),
        ),
        (
            "Inter-token latency (P50 ●, P99 ▲)",
            "milliseconds",
            |l| (l.itl_ms.p50, Some(l.itl_ms.p99)),
        ),
    ];
    let levels = report.endpoints.iter().flat_map(|e| &e.levels);
    let x1 = levels.clone().map(|l| l.concurrency).max().unwrap_or(1) as f64;
    for (area, (title, unit, pick)) in panels.iter().zip(specs) {
        let top = levels
            .clone()
            .map(|l| {
                let (a, b) = pick(l);
                a.max(b.unwrap_or(0.0))
            })
            .fold(0.0, f64::max)
            * 1.15
            + 1e-9;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((0.8..x1 * 1.25).log_scale(), 0.0..top)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_desc("concurrent clients")
            .y_desc(unit)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            // A log axis's minor lines crowd the levels out.
            .max_light_lines(0)
            .draw()
            .map_err(|e| fail(&e))?;
        for (i, endpoint) in report.endpoints.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let points: Vec<(f64, f64, Option<f64>)> = endpoint
                .levels
                .iter()
                .map(|l| {
                    let (a, b) = pick(l);
                    (l.concurrency as f64, a, b)
                })
                .collect();
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|&(x, a, _)| (x, a)),
                    color.stroke_width(2),
                ))
                .map_err(|e| fail(&e))?
                .label(endpoint.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|&(x, a, _)| Circle::new((x, a), 4, color.filled())),
                )
                .map_err(|e| fail(&e))?;
            let tail: Vec<(f64, f64)> = points
                .iter()
                .filter_map(|&(x, _, b)| b.map(|b| (x, b)))
                .collect();
            if !tail.is_empty() {
                chart
                    .draw_series(LineSeries::new(tail.clone(), color.stroke_width(1)))
                    .map_err(|e| fail(&e))?;
                chart
                    .draw_series(
                        tail.iter()
                            .map(|&p| TriangleMarker::new(p, 5, color.filled())),
                    )
                    .map_err(|e| fail(&e))?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}
