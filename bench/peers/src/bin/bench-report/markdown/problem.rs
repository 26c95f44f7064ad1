//! The problems section: runs that failed or missed an expectation, then the footnotes on
//! runs whose drain timed out, on runs the hypervisor took much CPU from, and on peers
//! that dropped messages for lagging subscribers.

use std::fmt::Write as _;

use crate::model::{Run, STEAL_LIMIT, Scenario};

/// Every run that was not ok, the undrained runs, the robbed runs and the lagged peers, in
/// that order.
pub(super) fn problems(md: &mut String, scenarios: &[Scenario], runs: &[Run]) {
    let problems: Vec<&Run> = runs.iter().filter(|r| r.status != "ok").collect();
    let _ = writeln!(md, "## Problems\n");
    if problems.is_empty() {
        let _ = writeln!(md, "None: every run exited 0 and met its expectations.\n");
    } else {
        for r in problems {
            let label = scenarios
                .iter()
                .find(|s| s.id == r.scenario)
                .map_or(r.scenario.as_str(), |s| s.label.as_str());
            let _ = writeln!(
                md,
                "- † {} · {} · rep {}: {}",
                r.imp,
                label,
                r.rep,
                r.status.replace('\n', " ")
            );
        }
        md.push('\n');
    }
    let undrained: Vec<&Run> = runs.iter().filter(|r| r.undrained).collect();
    if !undrained.is_empty() {
        let _ = writeln!(
            md,
            "‡ loadgen's drain timed out (messages were still arriving when it gave up), so \
             the late tail counts as lost in:\n"
        );
        for r in undrained {
            let _ = writeln!(md, "- {} · {} · rep {}", r.imp, r.scenario, r.rep);
        }
        md.push('\n');
    }
    robbed(md, runs);
    let lagged: Vec<String> = runs
        .iter()
        .filter_map(|r| {
            let t = r.raw["server_log_tail"].as_str()?;
            let line = t.lines().rev().find(|l| l.contains("lagged"))?;
            // "... subscribers skipped N lagged messages": only N > 0 is news.
            let n: u64 = line
                .split_whitespace()
                .skip_while(|w| *w != "skipped")
                .nth(1)?
                .parse()
                .ok()?;
            (n > 0).then(|| {
                format!(
                    "- {} · {} · rep {}: `{}`",
                    r.imp,
                    r.scenario,
                    r.rep,
                    line.trim()
                )
            })
        })
        .collect();
    if !lagged.is_empty() {
        let _ = writeln!(
            md,
            "Tokio peers drop messages for lagging subscribers by design (broadcast channel \
             of 1024); they run without `--expect-all`, and their loss is in the *lost* \
             column. Their exit lines:\n"
        );
        for l in lagged {
            let _ = writeln!(md, "{l}");
        }
        md.push('\n');
    }
}

/// The runs during which the hypervisor took more than [`STEAL_LIMIT`] of CPU 0 or 1.
fn robbed(md: &mut String, runs: &[Run]) {
    let robbed: Vec<(&Run, f64)> = runs
        .iter()
        .filter_map(|r| Some((r, *r.metrics.get("steal")?)))
        .filter(|&(_, st)| st > STEAL_LIMIT)
        .collect();
    if robbed.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "The hypervisor took more than {:.0} % of CPU 0 or CPU 1 (steal, `/proc/stat`) \
         during these runs: they measured the VM as much as the server, and so do the \
         ratios of their repetitions.\n",
        STEAL_LIMIT * 100.0
    );
    for (r, st) in robbed {
        let _ = writeln!(
            md,
            "- {} · {} · rep {}: {:.0} %",
            r.imp,
            r.scenario,
            r.rep,
            st * 100.0
        );
    }
    md.push('\n');
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn run(rep: u64, steal: Option<f64>) -> Run {
        Run {
            imp: "raw-batch".to_owned(),
            scenario: "win-10k-w16".to_owned(),
            rep,
            status: "ok".to_owned(),
            metrics: steal
                .map(|s| ("steal".to_owned(), s))
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
            undrained: false,
            raw: serde_json::Value::Null,
        }
    }

    #[test]
    fn runs_with_steal_above_five_per_cent_are_listed() {
        let runs = [run(1, Some(0.02)), run(2, Some(0.25)), run(3, None)];
        let mut md = String::new();
        problems(&mut md, &[], &runs);
        assert!(
            md.contains("- raw-batch · win-10k-w16 · rep 2: 25 %"),
            "{md}"
        );
        assert!(!md.contains("rep 1:") && !md.contains("rep 3:"), "{md}");
        let mut calm = String::new();
        problems(&mut calm, &[], &runs[..1]);
        assert!(!calm.contains("hypervisor"), "{calm}");
    }
}
