//! The SVG charts: bars per implementation, side by side in groups. Both charts share one
//! setup: which scenarios they show, a titled canvas over the run's subtitle, the grouped
//! x axis and its mesh, the implementations' colours and the labels on the bars.

mod latency;
mod throughput;

pub(crate) use latency::latency;
pub(crate) use throughput::throughput;

use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::combinators::WithKeyPoints;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordi32;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

use crate::Res;
use crate::model::Scenario;
use crate::stats::Cells;

/// A drawing area of an SVG chart.
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// A chart of bar groups: groups along an integer x axis (see [`X`]), values up `Y`.
type Grouped<'a, Y> =
    ChartContext<'a, SVGBackend<'a>, Cartesian2d<WithKeyPoints<RangedCoordi32>, Y>>;

/// Chart x units per scenario group (integer coordinates: plotters formats their labels).
const X: i32 = 1000;

/// A fractional group position in chart x units.
fn xk(v: f64) -> i32 {
    (v * f64::from(X)).round() as i32
}

/// The fan-out scenarios at `--rate max` (or, with `fixed_rate`, at a fixed rate) that at
/// least one implementation ran.
fn fanout_ran<'s>(
    scenarios: &'s [Scenario],
    impls: &[String],
    cells: &Cells,
    fixed_rate: bool,
) -> Vec<&'s Scenario> {
    scenarios
        .iter()
        .filter(|s| s.kind == "fanout" && s.rate.is_some() == fixed_rate)
        .filter(|s| {
            impls
                .iter()
                .any(|i| cells.contains_key(&(s.id.clone(), i.clone())))
        })
        .collect()
}

/// The median of `metric` of `imp` in `s`, if it measured one.
fn median(cells: &Cells, s: &Scenario, imp: &str, metric: &str) -> Option<f64> {
    cells
        .get(&(s.id.clone(), imp.to_owned()))
        .and_then(|c| c.median.get(metric).copied())
}

/// The fixed colour of an implementation (fallback palette for others).
fn color(name: &str, idx: usize) -> RGBColor {
    match name {
        "ringcast-epoll" => RGBColor(0x1f, 0x77, 0xb4),
        "ringcast-uring" => RGBColor(0x17, 0xbe, 0xcf),
        "raw-batch" => RGBColor(0x33, 0x33, 0x33),
        "raw-batch-uring" => RGBColor(0x66, 0x66, 0x66),
        "raw-writev" => RGBColor(0xaa, 0xaa, 0xaa),
        "peer-tungstenite" => RGBColor(0xff, 0x7f, 0x0e),
        "peer-fastws" => RGBColor(0x2c, 0xa0, 0x2c),
        _ => [
            RGBColor(0xd6, 0x27, 0x28),
            RGBColor(0x94, 0x67, 0xbd),
            RGBColor(0x8c, 0x56, 0x4b),
        ][idx % 3],
    }
}

/// The run under the title: machine, commit, mode and repetitions.
fn subtitle(meta: &Value) -> String {
    format!(
        "{} · {} cores · kernel {} · commit {}{} · {} mode, median of {}",
        meta["machine"]["cpu"].as_str().unwrap_or("?"),
        meta["machine"]["cores"],
        meta["machine"]["kernel"].as_str().unwrap_or("?"),
        meta["git"]["commit"].as_str().unwrap_or("?"),
        if meta["git"]["dirty"] == true {
            "+dirty"
        } else {
            ""
        },
        meta["mode"].as_str().unwrap_or("?"),
        meta["reps"]
    )
}

/// An empty chart that says why it is empty.
fn empty(path: &Path, title: &str, why: &str) -> Res<()> {
    let root = SVGBackend::new(path, (900, 200)).into_drawing_area();
    root.fill(&WHITE)?;
    root.draw(&Text::new(title, (20, 30), ("sans-serif", 22)))?;
    root.draw(&Text::new(why, (20, 80), ("sans-serif", 16)))?;
    root.present()?;
    Ok(())
}

/// A white canvas of `size` pixels at `path`, titled in `title_px` type over the run's
/// subtitle: the whole canvas (to present once drawn) and the body below the subtitle.
fn canvas<'a>(
    path: &'a Path,
    size: (u32, u32),
    title: &str,
    title_px: i32,
    meta: &Value,
) -> Res<(Area<'a>, Area<'a>)> {
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", title_px))?;
    let (top, body) = root.split_vertically(24);
    top.draw(&Text::new(subtitle(meta), (10, 4), ("sans-serif", 12)))?;
    Ok((root, body))
}

/// Sizes (pixels) and texts of a chart of bar groups.
struct Layout<'t> {
    /// A caption above the plot, in its type size.
    caption: Option<(&'t str, i32)>,
    margin: i32,
    /// Height of the group names' area, width of the y ticks' area.
    x_label_area: i32,
    y_label_area: i32,
    /// Type sizes of the group names and the y ticks.
    x_label_px: i32,
    y_label_px: i32,
    /// The y axis title.
    y_desc: &'t str,
}

/// A chart on `area` with one group per name, each labelled at its centre, over the value
/// range `y` with ticks written by `y_label`; its mesh (no vertical lines) drawn.
fn grouped<'a, Y>(
    area: &Area<'a>,
    layout: &Layout<'_>,
    names: &[String],
    y: Y,
    y_label: &dyn Fn(&f64) -> String,
) -> Res<Grouped<'a, Y::CoordDescType>>
where
    Y: AsRangedCoord,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let n = names.len();
    let centers: Vec<i32> = (0..n as i32).map(|g| g * X + X / 2).collect();
    let mut builder = ChartBuilder::on(area);
    if let Some((text, px)) = layout.caption {
        builder.caption(text, ("sans-serif", px));
    }
    let mut chart = builder
        .margin(layout.margin)
        .x_label_area_size(layout.x_label_area)
        .y_label_area_size(layout.y_label_area)
        .build_cartesian_2d((0..X * n as i32).with_key_points(centers), y)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|x| names.get((*x / X) as usize).cloned().unwrap_or_default())
        .x_label_style(("sans-serif", layout.x_label_px))
        .y_desc(layout.y_desc)
        .y_label_style(("sans-serif", layout.y_label_px))
        .y_label_formatter(y_label)
        .draw()?;
    Ok(chart)
}

/// The style of the value written on top of a bar (and of `failed` at its foot).
fn bar_label(px: i32) -> TextStyle<'static> {
    TextStyle::from(("sans-serif", px).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom))
}
