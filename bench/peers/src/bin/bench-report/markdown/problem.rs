//! The problems section: runs that failed or missed an expectation, then the footnotes on
//! runs whose drain timed out and on peers that dropped messages for lagging subscribers.

use std::fmt::Write as _;

use crate::model::{Run, Scenario};

/// Every run that was not ok, the undrained runs and the lagged peers, in that order.
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
