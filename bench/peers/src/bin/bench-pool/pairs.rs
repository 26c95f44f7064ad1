//! The paired ratios of results files: within a file, two implementations' deliveries/s in
//! the same repetition of the same scenario (their runs are back to back, so they share
//! the machine's state), or one implementation's two scenarios in the same repetition.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::bootstrap::Sample;

/// The window matrix's ratios, as in the per-run report: (subject, versus, heading).
pub(crate) const MATRIX_PAIRS: &[(&str, &str, &str)] = &[
    ("ringcast-epoll", "raw-batch", "ringcast-epoll / raw-batch"),
    ("ringcast-uring", "raw-batch", "ringcast-uring / raw-batch"),
    (
        "ringcast-uring",
        "raw-batch-uring",
        "ringcast-uring / raw-batch-uring",
    ),
    ("ringcast-uring", "ringcast-epoll", "uring / epoll"),
    (
        "raw-batch-uring",
        "raw-batch",
        "raw-batch-uring / raw-batch",
    ),
];

/// The envelope cells of `scripts/bench.sh` (10 000 subscribers, 64 in flight) set against
/// each other, one implementation at a time: (subject, versus, heading). The first is the
/// envelope cost; the others take it apart into the envelope's bytes on the wire, what it
/// costs beyond them, and the load client's checks.
pub(crate) const ENVELOPE_PAIRS: &[(&str, &str, &str)] = &[
    ("v1-10k-w64", "win-10k-w64", "v1 ÷ plain"),
    ("wire-10k-w64", "win-10k-w64", "plain 76 B ÷ plain 64 B"),
    ("v1-10k-w64", "wire-10k-w64", "v1 ÷ plain 76 B"),
    ("v1t-10k-w64", "win-10k-w64", "v1 unchecked ÷ plain"),
    ("v1-10k-w64", "v1t-10k-w64", "v1 checked ÷ unchecked"),
];

/// One results file (`bench/results/STAMP.json`), reduced to what pooling needs.
#[derive(Debug)]
pub(crate) struct Results {
    /// `meta.stamp` (or the file name when absent).
    pub(crate) stamp: String,
    /// The engine commit measured, `+` when the work tree was dirty.
    pub(crate) commit: String,
    /// Window-matrix cells: scenario id → (subscribers, in flight).
    pub(crate) cells: BTreeMap<String, (u64, u64)>,
    /// deliveries/s of the runs whose status is `ok`: (scenario, implementation, rep).
    pub(crate) dps: BTreeMap<(String, String, u64), f64>,
}

/// Reads one results file's JSON.
pub(crate) fn results(name: &str, v: &Value) -> Result<Results, String> {
    let meta = &v["meta"];
    let runs = v["runs"]
        .as_array()
        .ok_or_else(|| format!("{name}: no `runs` array (not a bench results file?)"))?;
    let cells = meta["scenarios"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let id = s["id"].as_str()?;
            let m = &s["matrix"];
            Some((
                id.to_owned(),
                (m["subscribers"].as_u64()?, m["window"].as_u64()?),
            ))
        })
        .collect();
    let mut dps = BTreeMap::new();
    for r in runs {
        if r["status"].as_str() != Some("ok") {
            continue;
        }
        let (Some(s), Some(i), Some(rep)) = (
            r["scenario"].as_str(),
            r["impl"].as_str(),
            r["rep"].as_u64(),
        ) else {
            continue;
        };
        if let Some(d) = r["loadgen"]["deliveries_per_sec"]
            .as_f64()
            .filter(|d| *d > 0.0)
        {
            dps.insert((s.to_owned(), i.to_owned(), rep), d);
        }
    }
    let commit = meta["git"]["commit"].as_str().unwrap_or("?").to_owned()
        + if meta["git"]["dirty"].as_bool() == Some(true) {
            "+"
        } else {
            ""
        };
    Ok(Results {
        stamp: meta["stamp"].as_str().unwrap_or(name).to_owned(),
        commit,
        cells,
        dps,
    })
}

/// `ln(a / b)` of every repetition of `files` in which `a` ran `sa` and `b` ran `sb`.
pub(crate) fn paired(
    files: &[Results],
    (a, sa): (&str, &str),
    (b, sb): (&str, &str),
) -> Vec<Sample> {
    let mut out = Vec::new();
    for (run, f) in files.iter().enumerate() {
        for ((s, i, rep), x) in &f.dps {
            if s != sa || i != a {
                continue;
            }
            if let Some(y) = f.dps.get(&(sb.to_owned(), b.to_owned(), *rep)) {
                out.push(Sample {
                    run,
                    log_ratio: (x / y).ln(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn file(stamp: &str, runs: &[(&str, &str, u64, &str, f64)]) -> Value {
        json!({
            "meta": {
                "stamp": stamp,
                "git": {"commit": "abc1234", "dirty": false},
                "scenarios": [
                    {"id": "win-1k-w16", "matrix": {"subscribers": 1000, "window": 16}},
                    {"id": "v1-10k-w64"}
                ]
            },
            "runs": runs.iter().map(|(s, i, rep, status, d)| json!({
                "scenario": s, "impl": i, "rep": rep, "status": status,
                "loadgen": {"deliveries_per_sec": d}
            })).collect::<Vec<_>>()
        })
    }

    #[test]
    fn ratios_pair_by_repetition_within_a_file_and_skip_failed_runs() {
        let a = results(
            "a",
            &file(
                "A",
                &[
                    ("win-1k-w16", "ringcast-epoll", 1, "ok", 110.0),
                    ("win-1k-w16", "raw-batch", 1, "ok", 100.0),
                    ("win-1k-w16", "ringcast-epoll", 2, "ok", 90.0),
                    ("win-1k-w16", "raw-batch", 2, "expectation failed", 100.0),
                    ("win-1k-w16", "ringcast-epoll", 3, "ok", 80.0),
                ],
            ),
        )
        .unwrap();
        let b = results(
            "b",
            &file(
                "B",
                &[
                    ("win-1k-w16", "ringcast-epoll", 1, "ok", 50.0),
                    ("win-1k-w16", "raw-batch", 1, "ok", 100.0),
                ],
            ),
        )
        .unwrap();
        assert_eq!(a.cells["win-1k-w16"], (1000, 16));
        assert!(!a.cells.contains_key("v1-10k-w64"));
        assert_eq!((a.stamp.as_str(), a.commit.as_str()), ("A", "abc1234"));
        let s = paired(
            &[a, b],
            ("ringcast-epoll", "win-1k-w16"),
            ("raw-batch", "win-1k-w16"),
        );
        let got: Vec<(usize, f64)> = s
            .iter()
            .map(|s| (s.run, (s.log_ratio.exp() * 100.0).round() / 100.0))
            .collect();
        // Rep 2's ceiling run failed and rep 3 has none: only rep 1 of each file.
        assert_eq!(got, [(0, 1.1), (1, 0.5)]);
    }

    #[test]
    fn a_file_without_runs_is_refused_by_name() {
        let e = results("x.json", &json!({"meta": {}})).unwrap_err();
        assert!(e.contains("x.json"), "{e}");
    }
}
