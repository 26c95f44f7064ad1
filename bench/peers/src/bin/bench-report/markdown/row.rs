//! The cells of a table row that the window matrix and the scenario tables share: who
//! limited the runs, how many ran ok, and the fan-out columns.

use std::collections::BTreeMap;

use crate::format::{opt, pct, thousands, us};
use crate::model::Scenario;
use crate::stats::Cell;

/// Who limited a run: the server (≥ 90 % CPU); CPU 0, shared (server plus other
/// processes or hypervisor steal ≥ 90 %); loadgen (≥ 90 %); or none of them (a paced run
/// that kept its rate, or one bound by the publisher window).
pub(super) fn bottleneck(s: &Scenario, m: &BTreeMap<String, f64>) -> String {
    let Some(srv) = m.get("server_cpu").copied() else {
        return "?".to_owned();
    };
    let others = m.get("cpu0_others").copied().unwrap_or(0.0);
    let lg = m.get("loadgen_cpu").copied().unwrap_or(0.0);
    let kept_rate = match (s.rate, m.get("published_per_sec")) {
        (Some(r), Some(p)) => *p >= 0.95 * r,
        _ => false,
    };
    if srv >= 0.9 {
        "server".to_owned()
    } else if srv + others >= 0.9 {
        "**CPU 0 shared**".to_owned()
    } else if lg >= 0.9 {
        "**loadgen**".to_owned()
    } else if kept_rate {
        "– (paced)".to_owned()
    } else {
        "neither".to_owned()
    }
}

/// Runs ok out of runs; marked when any was not.
pub(super) fn status_cell(c: &Cell) -> String {
    if c.ok == c.runs {
        format!("{}/{}", c.ok, c.runs)
    } else {
        format!("**{}/{}** †", c.ok, c.runs)
    }
}

/// The cells after the implementation's name in a fan-out table row: deliveries/s,
/// published/s, p50, p99, p99.9, lost, server CPU, CPU 0 others, loadgen CPU, bottleneck,
/// runs ok.
pub(super) fn fanout_cells(sc: &Scenario, c: &Cell) -> String {
    let g = |k: &str| c.median.get(k).copied();
    [
        opt(g("deliveries_per_sec"), thousands),
        opt(g("published_per_sec"), thousands),
        opt(g("p50_us"), us),
        opt(g("p99_us"), us),
        opt(g("p999_us"), us),
        opt(g("lost"), thousands) + if c.undrained > 0 { " ‡" } else { "" },
        opt(g("server_cpu"), pct),
        opt(g("cpu0_others"), pct),
        opt(g("loadgen_cpu"), pct),
        if c.measured > 0 {
            bottleneck(sc, &c.median)
        } else {
            "–".to_owned()
        },
        status_cell(c),
    ]
    .join(" | ")
}
