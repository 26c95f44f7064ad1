//! The window matrix section: ringcast against the `raw-batch` ceiling at each
//! (subscribers, messages in flight) cell.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::row::{bottleneck, fanout_cells};
use crate::format::{opt, thousands};
use crate::model::{STEAL_LIMIT, Scenario};
use crate::ratio::{CEILING, URING_CEILING};
use crate::stats::{Cell, Cells, median};

/// Fewer calm repetitions than this make no median worth printing.
const MIN_CALM: usize = 3;

/// The window matrix: deliveries/s of each implementation per (subscribers, messages in
/// flight), ringcast's backends as a share of the `raw-batch` ceiling, io_uring against
/// epoll; then the details of every cell (latency, loss, CPU, bottleneck).
pub(super) fn window_matrix(
    md: &mut String,
    scenarios: &[Scenario],
    impls: &[String],
    cells: &Cells,
) {
    let rows: Vec<(&Scenario, u64, u64)> = scenarios
        .iter()
        .filter_map(|s| s.matrix.map(|(n, w)| (s, n, w)))
        .collect();
    let cols: Vec<&String> = impls
        .iter()
        .filter(|i| {
            rows.iter()
                .any(|(s, _, _)| cells.contains_key(&(s.id.clone(), (*i).clone())))
        })
        .collect();
    if cols.is_empty() {
        return;
    }
    let ratio_cols = ratio_columns(|i| cols.iter().any(|c| *c == i));
    let _ = writeln!(
        md,
        "## Window matrix: ringcast against the `raw-batch` ceiling\n"
    );
    let _ = writeln!(
        md,
        "Fan-out throughput (deliveries/s, medians; 64 B, `--rate max`) at 16, 64 and 256 \
         messages in flight (loadgen `--window`). **`raw-batch` is the ceiling**: the best a \
         coalescing server can do on loopback. It appends each publication once to one \
         shared byte log, and gives every subscriber one contiguous `write` of everything \
         it is owed: one syscall per subscriber per pass, no per-message work per \
         subscriber, 256 subscribers per poll turn (what was published meanwhile reaches \
         the rest of the pass too, as in ringcast). A ratio to it is the share of the ceiling reached \
         (1 = at the ceiling). `raw-batch-uring`, where present, is the same server making \
         those writes as io_uring sends (registered files, a poll turn's sends submitted \
         together; the rest on epoll): the io_uring ceiling, and `raw-batch-uring / \
         raw-batch` says how much io_uring itself gains or loses in that cell on this \
         kernel. `raw-writev`, where present, is a secondary reference (one \
         slice per frame). § the server was not the bottleneck (small windows are bound by \
         the round trip; or loadgen, or a shared CPU 0): that server could have done more, so \
         the figure understates it. † a run failed or an \
         expectation did not hold; ‡ the drain timed out. See the details below. A ratio \
         is of the medians; in brackets, the lowest and highest ratio of two runs of the \
         same repetition (run one after the other): the scatter from run to run.\n"
    );
    let mut head = "| subscribers | in flight |".to_owned();
    let mut rule = "|--:|--:|".to_owned();
    for i in &cols {
        if i.as_str() == CEILING {
            let _ = write!(head, " {i} (ceiling) |");
        } else if i.as_str() == URING_CEILING {
            let _ = write!(head, " {i} (io_uring ceiling) |");
        } else {
            let _ = write!(head, " {i} |");
        }
        rule.push_str("--:|");
    }
    for (_, _, name) in &ratio_cols {
        let _ = write!(head, " {name} |");
        rule.push_str("--:|");
    }
    let _ = writeln!(md, "{head}\n{rule}");
    for (s, n, w) in &rows {
        let value = |i: &str| {
            cells
                .get(&(s.id.clone(), i.to_owned()))
                .and_then(|c| c.median.get("deliveries_per_sec").copied())
        };
        let mut line = format!("| {} | {w} |", thousands(*n as f64));
        for i in &cols {
            let cell = match cells.get(&(s.id.clone(), (*i).clone())) {
                None => "–".to_owned(),
                Some(c) => {
                    let mut v = opt(value(i), thousands);
                    if c.measured > 0 && bottleneck(s, &c.median) != "server" {
                        v.push_str(" §");
                    }
                    if c.ok < c.runs {
                        v.push_str(" †");
                    }
                    if c.undrained > 0 {
                        v.push_str(" ‡");
                    }
                    v
                }
            };
            let _ = write!(line, " {cell} |");
        }
        for (a, b, _) in &ratio_cols {
            let mut r = match (value(a), value(b)) {
                (Some(x), Some(y)) if y > 0.0 => format!("{:.2}", x / y),
                _ => "–".to_owned(),
            };
            let cell = |i: &str| cells.get(&(s.id.clone(), i.to_owned()));
            if let (Some(x), Some(y)) = (cell(a), cell(b))
                && let Some((lo, hi)) = paired_range(&x.dps_by_rep, &y.dps_by_rep)
            {
                let _ = write!(r, " ({lo:.2}–{hi:.2})");
            }
            let _ = write!(line, " {r} |");
        }
        let _ = writeln!(md, "{line}");
    }
    calm_ratios(md, &rows, cells, &ratio_cols);
    let _ = writeln!(md, "\nDetails:\n");
    let _ = writeln!(
        md,
        "| subscribers | in flight | implementation | deliveries/s | published/s | p50 µs | p99 µs | p99.9 µs | lost | server CPU | CPU 0 others | loadgen CPU | bottleneck | runs ok |"
    );
    let _ = writeln!(
        md,
        "|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|:-:|"
    );
    for (s, n, w) in &rows {
        for i in &cols {
            if let Some(c) = cells.get(&(s.id.clone(), (*i).clone())) {
                let _ = writeln!(
                    md,
                    "| {} | {w} | {i} | {} |",
                    thousands(*n as f64),
                    fanout_cells(s, c)
                );
            }
        }
    }
    md.push('\n');
}

/// The ratio columns of the matrix, `(subject, versus, heading)`, of the implementations
/// `has` says were measured: each ringcast backend against its ceiling (and io_uring's
/// against the epoll ceiling too), io_uring against epoll, and the two ceilings.
fn ratio_columns(has: impl Fn(&str) -> bool) -> Vec<(&'static str, &'static str, &'static str)> {
    [
        ("ringcast-epoll", CEILING, "ringcast-epoll / raw-batch"),
        ("ringcast-uring", CEILING, "ringcast-uring / raw-batch"),
        (
            "ringcast-uring",
            URING_CEILING,
            "ringcast-uring / raw-batch-uring",
        ),
        ("ringcast-uring", "ringcast-epoll", "uring / epoll"),
        (URING_CEILING, CEILING, "raw-batch-uring / raw-batch"),
    ]
    .into_iter()
    .filter(|(a, b, _)| has(a) && has(b))
    .collect()
}

/// The ratios again over the calm repetitions of each cell only: those in which the
/// hypervisor took at most [`STEAL_LIMIT`] of either CPU from every implementation's run.
fn calm_ratios(
    md: &mut String,
    rows: &[(&Scenario, u64, u64)],
    cells: &Cells,
    ratio_cols: &[(&str, &str, &str)],
) {
    let sampled = rows.iter().any(|(s, _, _)| {
        cells
            .iter()
            .any(|((id, _), c)| *id == s.id && !c.steal_by_rep.is_empty())
    });
    if ratio_cols.is_empty() || !sampled {
        return;
    }
    let _ = writeln!(
        md,
        "\nThe same ratios over the *calm* repetitions only: those in which the hypervisor \
         took at most {:.0} % of either CPU (steal) during every run of the row, medians of \
         their deliveries/s (n: how many; – when fewer than {MIN_CALM}).\n",
        STEAL_LIMIT * 100.0
    );
    let mut head = "| subscribers | in flight |".to_owned();
    let mut rule = "|--:|--:|".to_owned();
    for (_, _, name) in ratio_cols {
        let _ = write!(head, " {name} |");
        rule.push_str("--:|");
    }
    let _ = writeln!(md, "{head} n |\n{rule}--:|");
    for (s, n, w) in rows {
        let row: Vec<&Cell> = cells
            .iter()
            .filter(|((id, _), _)| *id == s.id)
            .map(|(_, c)| c)
            .collect();
        let reps = calm_reps(&row);
        let mut line = format!("| {} | {w} |", thousands(*n as f64));
        for (a, b, _) in ratio_cols {
            let over = |i: &str| {
                let c = cells.get(&(s.id.clone(), i.to_owned()))?;
                median(
                    reps.iter()
                        .filter_map(|r| c.dps_by_rep.get(r).copied())
                        .collect(),
                )
            };
            let r = match (over(a), over(b)) {
                (Some(x), Some(y)) if y > 0.0 && reps.len() >= MIN_CALM => format!("{:.2}", x / y),
                _ => "–".to_owned(),
            };
            let _ = write!(line, " {r} |");
        }
        let _ = writeln!(md, "{line} {} |", reps.len());
    }
}

/// The repetitions every cell of a row measured with steal at most [`STEAL_LIMIT`] (a run
/// without the steal sample is not calm: nothing says it was).
fn calm_reps(row: &[&Cell]) -> BTreeSet<u64> {
    let Some((first, rest)) = row.split_first() else {
        return BTreeSet::new();
    };
    let calm = |c: &Cell| -> BTreeSet<u64> {
        c.dps_by_rep
            .keys()
            .copied()
            .filter(|r| c.steal_by_rep.get(r).is_some_and(|s| *s <= STEAL_LIMIT))
            .collect()
    };
    rest.iter().fold(calm(first), |acc, c| {
        acc.intersection(&calm(c)).copied().collect()
    })
}

/// The lowest and highest ratio `a[rep] / b[rep]` over the repetitions both have, when
/// there are at least two.
fn paired_range(a: &BTreeMap<u64, f64>, b: &BTreeMap<u64, f64>) -> Option<(f64, f64)> {
    let ratios: Vec<f64> = a
        .iter()
        .filter_map(|(rep, x)| b.get(rep).filter(|y| **y > 0.0).map(|y| x / y))
        .collect();
    if ratios.len() < 2 {
        return None;
    }
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(dps: &[(u64, f64)], steal: &[(u64, f64)]) -> Cell {
        Cell {
            dps_by_rep: dps.iter().copied().collect(),
            steal_by_rep: steal.iter().copied().collect(),
            ..Cell::default()
        }
    }

    #[test]
    fn calm_repetitions_are_calm_in_every_run_of_the_row() {
        let a = cell(
            &[(1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0)],
            &[(1, 0.0), (2, 0.3), (3, 0.05), (4, 0.01)],
        );
        // Rep 4 is calm in `a` but robbed in `b`; rep 1 has no steal sample in `b`.
        let b = cell(
            &[(1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0)],
            &[(2, 0.0), (3, 0.0), (4, 0.2)],
        );
        assert_eq!(calm_reps(&[&a, &b]), BTreeSet::from([3]));
        assert_eq!(calm_reps(&[&a]), BTreeSet::from([1, 3, 4]));
        assert!(calm_reps(&[]).is_empty());
    }

    #[test]
    fn the_io_uring_ceiling_gets_its_columns_only_when_measured() {
        let heads = |impls: &[&str]| -> Vec<&str> {
            ratio_columns(|i| impls.contains(&i))
                .into_iter()
                .map(|(_, _, h)| h)
                .collect()
        };
        let three = ["ringcast-epoll", "ringcast-uring", "raw-batch"];
        assert_eq!(
            heads(&three),
            [
                "ringcast-epoll / raw-batch",
                "ringcast-uring / raw-batch",
                "uring / epoll"
            ]
        );
        let four = [three.as_slice(), &["raw-batch-uring"]].concat();
        assert_eq!(
            heads(&four),
            [
                "ringcast-epoll / raw-batch",
                "ringcast-uring / raw-batch",
                "ringcast-uring / raw-batch-uring",
                "uring / epoll",
                "raw-batch-uring / raw-batch"
            ]
        );
        // Without ringcast-uring, the ceilings are still set against each other.
        assert_eq!(
            heads(&["ringcast-epoll", "raw-batch", "raw-batch-uring"]),
            ["ringcast-epoll / raw-batch", "raw-batch-uring / raw-batch"]
        );
    }

    #[test]
    fn paired_range_pairs_by_repetition() {
        let a = BTreeMap::from([(1, 10.0), (2, 12.0), (3, 9.0)]);
        let b = BTreeMap::from([(1, 10.0), (2, 10.0), (4, 1.0)]);
        // Repetitions 1 and 2 are in both: 1.0 and 1.2; 3 and 4 have no partner.
        assert_eq!(paired_range(&a, &b), Some((1.0, 1.2)));
        // One pair is no range; a zero divisor is skipped.
        let c = BTreeMap::from([(1, 5.0), (2, 0.0)]);
        assert_eq!(paired_range(&a, &c), None);
        assert_eq!(paired_range(&a, &BTreeMap::new()), None);
    }
}
