//! Aggregation: a run's CPU share over its measured window, and per scenario and
//! implementation the medians of every metric over the repetitions.

use std::collections::BTreeMap;

use crate::model::{Run, Scenario};

/// Metrics whose median the summary reports; `true` when higher is better.
pub(crate) const METRICS: &[(&str, bool)] = &[
    ("deliveries_per_sec", true),
    ("published_per_sec", true),
    ("lost", false),
    ("out_of_order", false),
    ("duplicates", false),
    ("closed_by_server", false),
    ("p50_us", false),
    ("p90_us", false),
    ("p99_us", false),
    ("p999_us", false),
    ("max_us", false),
    ("server_cpu", false),
    ("server_softirq", false),
    ("loadgen_cpu", false),
    ("cpu0_others", false),
    ("cpu1_others", false),
    ("steal", false),
    ("conn_per_sec", true),
    ("bytes_per_conn", false),
    ("connected", true),
    ("connect_errors", false),
    ("server_hwm_kib", false),
];

/// Medians of one implementation in one scenario.
#[derive(Debug, Default)]
pub(crate) struct Cell {
    /// Runs of the pair.
    pub(crate) runs: usize,
    /// Runs whose status is `ok`.
    pub(crate) ok: usize,
    /// Runs with metrics (loadgen wrote a report).
    pub(crate) measured: usize,
    /// Runs whose drain timed out.
    pub(crate) undrained: usize,
    /// Each metric's median over the measured runs.
    pub(crate) median: BTreeMap<String, f64>,
    /// Deliveries/s of each measured repetition, by repetition number (to pair runs of
    /// two implementations that ran side by side).
    pub(crate) dps_by_rep: BTreeMap<u64, f64>,
    /// The hypervisor's steal (share of the more robbed CPU) of each measured repetition
    /// that sampled it.
    pub(crate) steal_by_rep: BTreeMap<u64, f64>,
    /// `rep N: status` of every run that was not ok.
    pub(crate) problems: Vec<String>,
}

/// The cells of a report, by (scenario id, implementation); only pairs that ran.
pub(crate) type Cells = BTreeMap<(String, String), Cell>;

/// CPU seconds per wall second over `[from, to]`, from cumulative (time, cpu-seconds)
/// samples, linearly interpolated; the window is clipped to the samples.
pub(crate) fn cpu_share(pts: &[(f64, f64)], from: f64, to: f64) -> Option<f64> {
    let (first, last) = (pts.first()?, pts.last()?);
    let (a, b) = (from.max(first.0), to.min(last.0));
    if b - a < 0.05 {
        return None;
    }
    let at = |t: f64| -> f64 {
        let i = pts.partition_point(|p| p.0 <= t);
        match (i.checked_sub(1).and_then(|j| pts.get(j)), pts.get(i)) {
            (Some(p), Some(q)) if q.0 > p.0 => p.1 + (q.1 - p.1) * (t - p.0) / (q.0 - p.0),
            (Some(p), _) => p.1,
            (None, Some(q)) => q.1,
            (None, None) => 0.0,
        }
    };
    Some((at(b) - at(a)) / (b - a))
}

/// The median (the mean of the middle two for an even count); `None` when `v` is empty.
pub(crate) fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The cell of every (scenario, implementation) pair that has runs.
pub(crate) fn summarize(scenarios: &[Scenario], impls: &[String], runs: &[Run]) -> Cells {
    let mut cells = BTreeMap::new();
    for s in scenarios {
        for i in impls {
            let mine: Vec<&Run> = runs
                .iter()
                .filter(|r| r.scenario == s.id && &r.imp == i)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let measured: Vec<&&Run> = mine.iter().filter(|r| !r.metrics.is_empty()).collect();
            let mut cell = Cell {
                runs: mine.len(),
                ok: mine.iter().filter(|r| r.status == "ok").count(),
                measured: measured.len(),
                undrained: mine.iter().filter(|r| r.undrained).count(),
                ..Cell::default()
            };
            for (k, _) in METRICS {
                let vals: Vec<f64> = measured
                    .iter()
                    .filter_map(|r| r.metrics.get(*k).copied())
                    .collect();
                if let Some(v) = median(vals) {
                    cell.median.insert((*k).to_owned(), v);
                }
            }
            cell.dps_by_rep = measured
                .iter()
                .filter_map(|r| Some((r.rep, *r.metrics.get("deliveries_per_sec")?)))
                .collect();
            cell.steal_by_rep = measured
                .iter()
                .filter_map(|r| Some((r.rep, *r.metrics.get("steal")?)))
                .collect();
            for r in mine.iter().filter(|r| r.status != "ok") {
                cell.problems.push(format!("rep {}: {}", r.rep, r.status));
            }
            cells.insert((s.id.clone(), i.clone()), cell);
        }
    }
    cells
}
