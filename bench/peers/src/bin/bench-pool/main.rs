//! `bench-pool`: the window matrix's ratios pooled over several runs of `scripts/bench.sh`,
//! each with a confidence interval.
//!
//! One run's ratio of medians moves by ±10 % from run to run on a shared 2-core machine
//! (the saturated closed loop settles differently each time), so a single run cannot
//! tell a gap of a few per cent from scatter. This pools the paired ratios of many runs
//! (`bench/results/*.json`): per cell and pair, the geometric mean of the per-repetition
//! ratios, the 95 % interval of a cluster bootstrap over runs and their repetitions
//! ([`bootstrap`]), and how many ratios were below 1. An interval entirely below 1 is a
//! gap the scatter does not explain; one that spans 1 is not told apart from the
//! ceiling. Also the envelope cost (`v1-10k-w64` ÷ `win-10k-w64`) of each backend, and
//! its parts where the runs measured them ([`ENVELOPE_PAIRS`]).
//!
//! Markdown on stdout; the files pooled, their commits and repetitions head it.

mod bootstrap;
mod pairs;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Parser;

use self::bootstrap::{Estimate, estimate};
use self::pairs::{ENVELOPE_PAIRS, MATRIX_PAIRS, Results, paired, results};

/// Window-matrix ratios pooled over several bench results files, with bootstrap intervals.
#[derive(Debug, Parser)]
#[command(name = "bench-pool")]
struct Cli {
    /// Results files of `scripts/bench.sh` (bench/results/STAMP.json); pool only runs of
    /// the same engine code to measure that code.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Bootstrap resamples.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(100..=1_000_000))]
    resamples: u32,
    /// Seed of the resampling (the same files and seed give the same intervals).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Interval level.
const LEVEL: f64 = 0.95;

fn main() {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(md) => print!("{md}"),
        Err(e) => {
            eprintln!("bench-pool: {e}");
            std::process::exit(1);
        }
    }
}

fn run(cli: &Cli) -> Result<String, String> {
    let mut files = Vec::new();
    for p in &cli.files {
        let name = p.display().to_string();
        let text = std::fs::read_to_string(p).map_err(|e| format!("{name}: {e}"))?;
        let v = serde_json::from_str(&text).map_err(|e| format!("{name}: {e}"))?;
        files.push(results(&name, &v)?);
    }
    Ok(report(&files, cli.resamples as usize, cli.seed))
}

/// The markdown report of `files`.
fn report(files: &[Results], resamples: usize, seed: u64) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Pooled ratios: {} runs\n\nEach cell: the geometric mean of the paired ratios \
         (the two runs of one repetition, back to back), in brackets the {:.0} % interval of \
         a bootstrap that resamples the runs and then their repetitions ({resamples} \
         resamples, seed {seed}), then how many paired ratios were below 1. An interval \
         entirely below 1 is a gap the run-to-run scatter does not explain.\n",
        files.len(),
        LEVEL * 100.0
    );
    let _ = writeln!(
        md,
        "| run | commit | window-matrix cells | repetitions |\n|---|---|--:|--:|"
    );
    for f in files {
        let measured = |(s, _, _): &&(String, String, u64)| f.cells.contains_key(s);
        let cells: BTreeSet<_> = f.dps.keys().filter(measured).map(|k| &k.0).collect();
        let reps: BTreeSet<_> = f.dps.keys().filter(measured).map(|k| k.2).collect();
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {} |",
            f.stamp,
            f.commit,
            cells.len(),
            reps.len()
        );
    }
    let mut cells: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for f in files {
        for (id, at) in &f.cells {
            cells.entry(*at).or_insert_with(|| id.clone());
        }
    }
    let pairs: Vec<_> = MATRIX_PAIRS
        .iter()
        .filter(|(a, b, _)| {
            cells
                .values()
                .any(|id| !paired(files, (a, id), (b, id)).is_empty())
        })
        .collect();
    if !cells.is_empty() && !pairs.is_empty() {
        let _ = write!(md, "\n| subscribers | in flight |");
        for (_, _, head) in &pairs {
            let _ = write!(md, " {head} |");
        }
        let _ = writeln!(md, "\n|--:|--:|{}", "--:|".repeat(pairs.len()));
        for ((n, w), id) in &cells {
            let _ = write!(md, "| {} | {w} |", thousands(*n));
            for (a, b, _) in &pairs {
                let e = estimate(&paired(files, (a, id), (b, id)), resamples, LEVEL, seed);
                let _ = write!(md, " {} |", cell(e.as_ref()));
            }
            let _ = writeln!(md);
        }
    }
    let impls = ["ringcast-epoll", "ringcast-uring"];
    let columns: Vec<_> = ENVELOPE_PAIRS
        .iter()
        .filter(|(a, b, _)| {
            impls
                .iter()
                .any(|i| !paired(files, (i, a), (i, b)).is_empty())
        })
        .collect();
    if !columns.is_empty() {
        let _ = write!(
            md,
            "\nEnvelope cost: ringcast.v1 subscribers against plain ones at 10,000 × 64 in \
             flight, one implementation's two cells in the same repetition (`v1-10k-w64` ÷ \
             `win-10k-w64`), and its parts where measured: plain frames of the v1 size \
             (`wire-10k-w64`, 76 B payloads) and v1 with the load client's envelope checks \
             off (`v1t-10k-w64`).\n\n| implementation |"
        );
        for (_, _, head) in &columns {
            let _ = write!(md, " {head} |");
        }
        let _ = writeln!(md, "\n|---|{}", "--:|".repeat(columns.len()));
        for i in impls {
            let row: Vec<_> = columns
                .iter()
                .map(|(a, b, _)| estimate(&paired(files, (i, a), (i, b)), resamples, LEVEL, seed))
                .collect();
            if row.iter().all(Option::is_none) {
                continue;
            }
            let _ = write!(md, "| {i} |");
            for e in &row {
                let _ = write!(md, " {} |", cell(e.as_ref()));
            }
            let _ = writeln!(md);
        }
    }
    md
}

/// `1.02 [0.97–1.08] 3/15 < 1`, or `–`.
fn cell(e: Option<&Estimate>) -> String {
    e.map_or_else(
        || "–".to_owned(),
        |e| {
            format!(
                "{:.3} [{:.3}–{:.3}] {}/{} < 1",
                e.mean, e.low, e.high, e.below, e.n
            )
        },
    )
}

/// `10000` → `10,000`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A results file in which ringcast-epoll runs at `ratio` × raw-batch in each of
    /// `reps` repetitions of one cell, and ringcast.v1 at `v1` × plain.
    fn file(stamp: &str, ratio: &[f64], v1: f64) -> Results {
        let mut runs = Vec::new();
        for (k, r) in ratio.iter().enumerate() {
            let rep = k as u64 + 1;
            let run = |s: &str, i: &str, d: f64| {
                json!({"scenario": s, "impl": i, "rep": rep, "status": "ok",
                       "loadgen": {"deliveries_per_sec": d}})
            };
            runs.push(run("win-10k-w64", "raw-batch", 1e6));
            runs.push(run("win-10k-w64", "ringcast-epoll", 1e6 * r));
            runs.push(run("v1-10k-w64", "ringcast-epoll", 1e6 * r * v1));
        }
        let v = json!({
            "meta": {
                "stamp": stamp,
                "git": {"commit": "abc1234", "dirty": true},
                "scenarios": [{"id": "win-10k-w64", "matrix": {"subscribers": 10000, "window": 64}}]
            },
            "runs": runs
        });
        results(stamp, &v).unwrap()
    }

    #[test]
    fn the_report_pools_every_file_and_names_them() {
        let files = [
            file("A", &[0.9, 0.92, 0.91], 0.95),
            file("B", &[0.93, 0.9, 0.92], 0.95),
        ];
        let md = report(&files, 1000, 1);
        assert!(md.contains("## Pooled ratios: 2 runs"), "{md}");
        assert!(md.contains("| A | `abc1234+` | 1 | 3 |"), "{md}");
        // Only the pair that was measured gets a column.
        assert!(md.contains("| subscribers | in flight | ringcast-epoll / raw-batch |\n"));
        let row = md
            .lines()
            .find(|l| l.starts_with("| 10,000 | 64 |"))
            .unwrap();
        assert!(row.contains("0.913 ["), "{row}");
        assert!(row.ends_with(" 6/6 < 1 |"), "{row}");
        let v1 = md
            .lines()
            .find(|l| l.starts_with("| ringcast-epoll |"))
            .unwrap();
        assert!(v1.contains("0.950 [0.950–0.950] 6/6 < 1"), "{v1}");
        assert!(!md.contains("| ringcast-uring |"));
    }

    #[test]
    fn envelope_parts_get_a_column_when_measured() {
        let run = |s: &str, rep: u64, d: f64| {
            json!({"scenario": s, "impl": "ringcast-uring", "rep": rep, "status": "ok",
                   "loadgen": {"deliveries_per_sec": d}})
        };
        let runs: Vec<_> = (1..=4)
            .flat_map(|rep| {
                [
                    run("win-10k-w64", rep, 1e6),
                    run("wire-10k-w64", rep, 0.96e6),
                    run("v1-10k-w64", rep, 0.912e6),
                ]
            })
            .collect();
        let v = json!({"meta": {"stamp": "C", "git": {"commit": "abc1234"}}, "runs": runs});
        let md = report(&[results("C", &v).unwrap()], 1000, 1);
        assert!(
            md.contains(
                "| implementation | v1 ÷ plain | plain 76 B ÷ plain 64 B | v1 ÷ plain 76 B |\n"
            ),
            "{md}"
        );
        let row = md
            .lines()
            .find(|l| l.starts_with("| ringcast-uring |"))
            .unwrap();
        assert_eq!(
            row,
            "| ringcast-uring | 0.912 [0.912–0.912] 4/4 < 1 | 0.960 [0.960–0.960] 4/4 < 1 \
             | 0.950 [0.950–0.950] 4/4 < 1 |"
        );
        assert!(!md.contains("| ringcast-epoll |"), "{md}");
    }

    #[test]
    fn numbers_get_thousands_separators() {
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(10000), "10,000");
        assert_eq!(thousands(999), "999");
    }
}
