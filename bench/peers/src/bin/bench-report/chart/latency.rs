//! The latency chart: p50 and p99 per implementation, one panel per fixed-rate scenario.

use std::path::Path;

use plotters::prelude::*;
use serde_json::Value;

use super::{Layout, bar_label, canvas, color, empty, fanout_ran, grouped, median, xk};
use crate::Res;
use crate::format::{thousands, us};
use crate::model::Scenario;
use crate::stats::Cells;

/// p50 and p99 latency per implementation, one panel per fixed-rate scenario, log scale.
pub(crate) fn latency(
    path: &Path,
    meta: &Value,
    scenarios: &[Scenario],
    impls: &[String],
    cells: &Cells,
) -> Res<()> {
    let panels = fanout_ran(scenarios, impls, cells, true);
    let title = "End-to-end latency at a fixed rate (µs, log scale; solid p50, pale p99)";
    if panels.is_empty() {
        return empty(path, title, "no fixed-rate scenario ran");
    }
    let get = |s: &Scenario, i: &String, k: &str| median(cells, s, i, k);
    let width = 120 + (80 + 110 * impls.len() as u32) * panels.len() as u32;
    let (root, body) = canvas(path, (width.max(700), 520), title, 20, meta)?;
    let areas = body.split_evenly((1, panels.len()));
    let label_style = bar_label(10);
    for (area, s) in areas.iter().zip(&panels) {
        let vals: Vec<f64> = impls
            .iter()
            .flat_map(|i| [get(s, i, "p50_us"), get(s, i, "p99_us")])
            .flatten()
            .filter(|v| *v > 0.0)
            .collect();
        let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = vals.iter().copied().fold(0.0f64, f64::max);
        let (lo, hi) = if vals.is_empty() {
            (1.0, 1000.0)
        } else {
            (
                10f64.powf(lo.log10().floor()),
                10f64.powf((hi * 1.15).log10().ceil()),
            )
        };
        let present: Vec<&String> = impls
            .iter()
            .filter(|i| cells.contains_key(&(s.id.clone(), (*i).clone())))
            .collect();
        let names: Vec<String> = present.iter().map(|i| (*i).clone()).collect();
        let layout = Layout {
            caption: Some((&s.label, 14)),
            margin: 10,
            x_label_area: 34,
            y_label_area: 72,
            x_label_px: 11,
            y_label_px: 11,
            y_desc: "µs",
        };
        let y_label = |y: &f64| {
            if *y >= 1.0 {
                thousands(*y)
            } else {
                format!("{y}")
            }
        };
        let mut chart = grouped(area, &layout, &names, (lo..hi).log_scale(), &y_label)?;
        for (g, imp) in present.iter().enumerate() {
            let j = impls.iter().position(|i| i == *imp).unwrap_or(g);
            let c = color(imp, j);
            let x = g as f64;
            let mut any = false;
            for (k, key, fill) in [(0.0, "p50_us", c.mix(1.0)), (1.0, "p99_us", c.mix(0.4))] {
                if let Some(v) = get(s, imp, key) {
                    any = true;
                    let (x0, x1) = (x + 0.15 + 0.35 * k, x + 0.15 + 0.35 * (k + 1.0) - 0.03);
                    chart.draw_series(std::iter::once(Rectangle::new(
                        [(xk(x0), lo), (xk(x1), v.max(lo))],
                        fill.filled(),
                    )))?;
                    chart.draw_series(std::iter::once(Text::new(
                        us(v),
                        (xk((x0 + x1) / 2.0), v.max(lo)),
                        label_style.clone(),
                    )))?;
                }
            }
            if !any {
                chart.draw_series(std::iter::once(Text::new(
                    "failed",
                    (xk(x + 0.5), lo),
                    label_style.clone(),
                )))?;
            }
        }
    }
    root.present()?;
    Ok(())
}
