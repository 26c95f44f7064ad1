//! One table per scenario outside the window matrix: connection set-up for `connect`,
//! throughput, latency and CPU for fan-out.

use std::fmt::Write as _;

use serde_json::Value;

use super::row::{fanout_cells, status_cell};
use crate::format::{opt, pct, thousands};
use crate::model::Scenario;
use crate::stats::Cells;

/// The table of every scenario outside the window matrix, or why it was skipped.
pub(super) fn scenario_tables(
    md: &mut String,
    meta: &Value,
    scenarios: &[Scenario],
    impls: &[String],
    cells: &Cells,
) {
    for sc in scenarios.iter().filter(|s| s.matrix.is_none()) {
        let present: Vec<&String> = impls
            .iter()
            .filter(|i| cells.contains_key(&(sc.id.clone(), (*i).clone())))
            .collect();
        let _ = writeln!(md, "## {}\n", sc.label);
        if present.is_empty() {
            let note = meta["skipped"][&sc.id].as_str().unwrap_or("not run");
            let _ = writeln!(md, "Skipped: {note}\n");
            continue;
        }
        if sc.kind == "connect" {
            let _ = writeln!(
                md,
                "| implementation | connections/s | bytes/connection (RSS) | peak RSS MiB | server CPU (set-up) | CPU 0 others | loadgen CPU | runs ok |"
            );
            let _ = writeln!(md, "|---|--:|--:|--:|--:|--:|--:|:-:|");
            for i in present {
                let c = &cells[&(sc.id.clone(), i.clone())];
                let g = |k: &str| c.median.get(k).copied();
                let _ = writeln!(
                    md,
                    "| {i} | {} | {} | {} | {} | {} | {} | {} |",
                    opt(g("conn_per_sec"), thousands),
                    opt(g("bytes_per_conn"), thousands),
                    opt(g("server_hwm_kib"), |v| format!("{:.1}", v / 1024.0)),
                    opt(g("server_cpu"), pct),
                    opt(g("cpu0_others"), pct),
                    opt(g("loadgen_cpu"), pct),
                    status_cell(c)
                );
            }
        } else {
            let _ = writeln!(
                md,
                "| implementation | deliveries/s | published/s | p50 µs | p99 µs | p99.9 µs | lost | server CPU | CPU 0 others | loadgen CPU | bottleneck | runs ok |"
            );
            let _ = writeln!(md, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|:-:|");
            for i in present {
                let c = &cells[&(sc.id.clone(), i.clone())];
                let _ = writeln!(md, "| {i} | {} |", fanout_cells(sc, c));
            }
        }
        md.push('\n');
    }
}
