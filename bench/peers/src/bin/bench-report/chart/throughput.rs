//! The throughput chart: deliveries/s per implementation, one group per `--rate max`
//! scenario.

use std::path::Path;

use plotters::prelude::*;
use serde_json::Value;

use super::{Layout, bar_label, canvas, color, empty, fanout_ran, grouped, median, xk};
use crate::Res;
use crate::model::Scenario;
use crate::stats::Cells;

/// Deliveries/s per implementation, grouped by `--rate max` scenario.
pub(crate) fn throughput(
    path: &Path,
    meta: &Value,
    scenarios: &[Scenario],
    impls: &[String],
    cells: &Cells,
) -> Res<()> {
    let groups = fanout_ran(scenarios, impls, cells, false);
    let title = "Fan-out throughput (deliveries/s, --rate max)";
    if groups.is_empty() {
        return empty(path, title, "no --rate max scenario ran");
    }
    let value = |s: &Scenario, i: &String| median(cells, s, i, "deliveries_per_sec");
    let ymax = groups
        .iter()
        .flat_map(|s| impls.iter().filter_map(|i| value(s, i)))
        .fold(0.0f64, f64::max)
        .max(1.0)
        / 1e6
        * 1.4;
    let size = (200 + 260 * groups.len() as u32, 520);
    let (root, body) = canvas(path, size, title, 22, meta)?;
    let names: Vec<String> = groups.iter().map(|s| short_label(s)).collect();
    let layout = Layout {
        caption: None,
        margin: 12,
        x_label_area: 36,
        y_label_area: 64,
        x_label_px: 14,
        y_label_px: 12,
        y_desc: "million deliveries / s",
    };
    let mut chart = grouped(&body, &layout, &names, 0f64..ymax, &|y| format!("{y:.1}"))?;
    let k = impls.len() as f64;
    let w = 0.8 / k;
    let label_style = bar_label(11);
    for (j, imp) in impls.iter().enumerate() {
        let c = color(imp, j);
        let bars: Vec<(f64, f64, f64)> = groups
            .iter()
            .enumerate()
            .filter_map(|(g, s)| {
                value(s, imp).map(|v| {
                    (
                        g as f64 + 0.1 + w * j as f64,
                        g as f64 + 0.1 + w * (j as f64 + 1.0),
                        v / 1e6,
                    )
                })
            })
            .collect();
        chart
            .draw_series(bars.iter().map(|&(x0, x1, y)| {
                Rectangle::new([(xk(x0), 0.0), (xk(x1 - w * 0.08), y)], c.filled())
            }))?
            .label(imp.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
        chart.draw_series(bars.iter().map(|&(x0, x1, y)| {
            Text::new(
                format!("{y:.2}"),
                (xk((x0 + x1) / 2.0), y),
                label_style.clone(),
            )
        }))?;
        // Implementations that ran a scenario but measured nothing.
        chart.draw_series(groups.iter().enumerate().filter_map(|(g, s)| {
            let ran = cells.contains_key(&(s.id.clone(), imp.clone()));
            (ran && value(s, imp).is_none()).then(|| {
                let x = g as f64 + 0.1 + w * (j as f64 + 0.5);
                Text::new("failed", (xk(x), 0.0), label_style.clone())
            })
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    root.present()?;
    Ok(())
}

/// A chart axis label: the scenario's subscriber count and payload size (for a window
/// matrix cell, its subscribers and window).
fn short_label(s: &Scenario) -> String {
    if let Some((n, w)) = s.matrix {
        let n = if n % 1000 == 0 {
            format!("{}k", n / 1000)
        } else {
            n.to_string()
        };
        return format!("{n} × window {w}");
    }
    s.label
        .split(',')
        .next()
        .unwrap_or(&s.label)
        .trim()
        .to_owned()
}
