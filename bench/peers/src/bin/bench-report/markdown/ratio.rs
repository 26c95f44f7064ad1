//! The ratios section: each implementation pair on the headline metrics of the scenarios
//! outside the window matrix (which has its own ratio columns).

use std::fmt::Write as _;

use crate::model::Scenario;
use crate::ratio::{Ratio, headline};

/// The table of ratios, one row per scenario and headline metric, one column per pair;
/// nothing when no ratio applies.
pub(super) fn ratio_table(md: &mut String, scenarios: &[Scenario], ratios: &[Ratio]) {
    // The window matrix has its own ratio columns (above).
    let ratios: Vec<&Ratio> = ratios
        .iter()
        .filter(|r| {
            scenarios
                .iter()
                .any(|s| s.id == r.scenario && s.matrix.is_none())
        })
        .collect();
    if !ratios.is_empty() {
        let cols: Vec<(String, String)> = {
            let mut v: Vec<(String, String)> = Vec::new();
            for r in &ratios {
                let k = (r.subject.clone(), r.versus.clone());
                if !v.contains(&k) {
                    v.push(k);
                }
            }
            v
        };
        let _ = writeln!(md, "## Ratios\n");
        let _ = writeln!(
            md,
            "Medians; every ratio is oriented so that **> 1 means the first-named is better** \
             (more deliveries or connections per second; lower latency or memory).\n"
        );
        let mut head = "| scenario | metric |".to_owned();
        let mut rule = "|---|---|".to_owned();
        for (a, b) in &cols {
            let _ = write!(head, " {a} vs {b} |");
            rule.push_str("--:|");
        }
        let _ = writeln!(md, "{head}\n{rule}");
        for sc in scenarios.iter().filter(|s| s.matrix.is_none()) {
            for metric in headline(sc) {
                let row: Vec<String> = cols
                    .iter()
                    .map(|(a, b)| {
                        ratios
                            .iter()
                            .find(|r| {
                                r.scenario == sc.id
                                    && r.metric == metric
                                    && &r.subject == a
                                    && &r.versus == b
                            })
                            .map_or_else(|| "–".to_owned(), |r| format!("{:.2}×", r.value))
                    })
                    .collect();
                if row.iter().all(|c| c == "–") {
                    continue;
                }
                let _ = writeln!(
                    md,
                    "| {} | {} | {} |",
                    sc.label,
                    metric_name(metric),
                    row.join(" | ")
                );
            }
        }
        md.push('\n');
    }
}

/// The name of a headline metric in the table.
fn metric_name(m: &str) -> &'static str {
    match m {
        "deliveries_per_sec" => "deliveries/s",
        "p50_us" => "p50 latency",
        "p99_us" => "p99 latency",
        "conn_per_sec" => "connections/s",
        "bytes_per_conn" => "bytes/connection",
        _ => "?",
    }
}
