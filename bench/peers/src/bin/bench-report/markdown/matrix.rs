//! The window matrix section: ringcast against the `raw-batch` ceiling at each
//! (subscribers, messages in flight) cell.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::row::{bottleneck, fanout_cells};
use crate::format::{opt, thousands};
use crate::model::Scenario;
use crate::ratio::CEILING;
use crate::stats::Cells;

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
    let has = |i: &str| cols.iter().any(|c| *c == i);
    let ratio_cols: Vec<(&str, &str, &str)> = [
        ("ringcast-epoll", CEILING, "ringcast-epoll / raw-batch"),
        ("ringcast-uring", CEILING, "ringcast-uring / raw-batch"),
        ("ringcast-uring", "ringcast-epoll", "uring / epoll"),
    ]
    .into_iter()
    .filter(|(a, b, _)| has(a) && has(b))
    .collect();
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
         (1 = at the ceiling). `raw-writev`, where present, is a secondary reference (one \
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
