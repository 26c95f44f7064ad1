//! The markdown report (`PREFIX.md`), section by section: the run's facts and the legend,
//! the window matrix, one table per other scenario, the ratios, the problems, the notes
//! and the exact commands.

mod command;
mod matrix;
mod problem;
mod ratio;
mod row;
mod table;

use std::fmt::Write as _;

use serde_json::Value;

use crate::model::{Run, STEAL_LIMIT, Scenario};
use crate::ratio::Ratio;
use crate::stats::Cells;

/// The whole report; `stem` is the file name of the output prefix, for the links.
pub(crate) fn markdown(
    meta: &Value,
    scenarios: &[Scenario],
    impls: &[String],
    runs: &[Run],
    cells: &Cells,
    ratios: &[Ratio],
    stem: &str,
) -> String {
    let mut md = String::new();
    header(&mut md, meta, stem);
    matrix::window_matrix(&mut md, scenarios, impls, cells);
    table::scenario_tables(&mut md, meta, scenarios, impls, cells);
    ratio::ratio_table(&mut md, scenarios, ratios);
    problem::problems(&mut md, scenarios, runs);
    notes(&mut md, meta);
    command::commands(&mut md, meta, scenarios, runs);
    md
}

/// The title, the run's facts (mode, commit, machine, placement, links) and the legend
/// of the tables.
fn header(md: &mut String, meta: &Value, stem: &str) {
    let m = &meta["machine"];
    let g = &meta["git"];
    let _ = writeln!(md, "# Broadcast benchmark {}\n", text(&meta["date"]));
    let _ = writeln!(
        md,
        "- **Mode** {} · {} repetition(s), medians · fan-out measured for {} s after {} s warm-up",
        text(&meta["mode"]),
        meta["reps"],
        meta["duration_s"],
        meta["warmup_s"]
    );
    let _ = writeln!(
        md,
        "- **Commit** `{}`{} · **backends** {}",
        text(&g["commit"]),
        if g["dirty"] == true {
            " (dirty work tree)"
        } else {
            ""
        },
        text(&meta["backends"])
    );
    let _ = writeln!(
        md,
        "- **Machine** {} · {} cores · kernel {} · `ulimit -n` {}",
        text(&m["cpu"]),
        m["cores"],
        text(&m["kernel"]),
        text(&m["nofile"])
    );
    let _ = writeln!(md, "- **Placement** {}", text(&meta["placement"]));
    let _ = writeln!(
        md,
        "- **Charts** [`{stem}-throughput.svg`]({stem}-throughput.svg), [`{stem}-latency.svg`]({stem}-latency.svg); raw runs in [`{stem}.json`]({stem}.json)\n"
    );
    let _ = writeln!(
        md,
        "*Server CPU*: its utime+stime over the measured window ÷ wall time (one core = \
         100 %), plus the time of CPU 0's softirq thread (`ksoftirqd/0`: the network work \
         of the server's own sends that the kernel deferred; nothing else sends on CPU 0); \
         *CPU 0 others*: what other processes and hypervisor steal took of the \
         server's CPU meanwhile (runs the hypervisor took more than {:.0} % of either CPU \
         from are listed under *Problems*). *Bottleneck*: `server` when it is ≥ 90 % busy (what a \
         throughput run should show); `CPU 0 shared` when it is not but others filled the \
         CPU (a noisy run); `loadgen` when loadgen is ≥ 90 % busy instead. Latency is end to \
         end (publisher send → subscriber receive), µs. *Runs ok* under n/n: a run failed \
         or an expectation (`--expect-all`: nothing lost, reordered, duplicated or closed) \
         did not hold; see *Problems*.\n",
        STEAL_LIMIT * 100.0
    );
}

/// The notes of `meta.json`, when there are any.
fn notes(md: &mut String, meta: &Value) {
    if let Some(notes) = meta["notes"].as_array().filter(|n| !n.is_empty()) {
        let _ = writeln!(md, "## Notes\n");
        for n in notes.iter().filter_map(Value::as_str) {
            let _ = writeln!(md, "- {n}");
        }
        md.push('\n');
    }
}

/// A string of the meta, or `?`.
fn text(v: &Value) -> String {
    v.as_str().unwrap_or("?").to_owned()
}
