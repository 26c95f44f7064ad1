//! The commands section: how to rebuild and rerun everything, with each run's port and
//! server pid as placeholders.

use std::fmt::Write as _;

use serde_json::Value;

use super::text;
use crate::model::{Run, Scenario};

/// The build commands, the server command templates, then per scenario the commands of
/// its first run (the server's only when it is not one of the templates).
pub(super) fn commands(md: &mut String, meta: &Value, scenarios: &[Scenario], runs: &[Run]) {
    let _ = writeln!(md, "## Commands\n\n```sh");
    if let Some(b) = meta["build"].as_array() {
        for c in b.iter().filter_map(Value::as_str) {
            let _ = writeln!(md, "{c}");
        }
    }
    let _ = writeln!(md, "# servers (PORT: a free port; a fresh server per run)");
    if let Some(list) = meta["impls"].as_array() {
        for i in list {
            let _ = writeln!(md, "{}", text(&i["cmd"]));
        }
    }
    let templates: Vec<&str> = meta["impls"]
        .as_array()
        .map(|l| l.iter().filter_map(|i| i["cmd"].as_str()).collect())
        .unwrap_or_default();
    let mut seen = Vec::new();
    for r in runs {
        if seen.contains(&r.scenario) {
            continue;
        }
        seen.push(r.scenario.clone());
        // The run's own port and server pid, as placeholders.
        let generic = |key: &str| -> Option<String> {
            let mut c = r.raw[key].as_str()?.to_owned();
            if let Some(p) = r.raw["port"].as_u64() {
                c = c.replace(&format!("127.0.0.1:{p}"), "127.0.0.1:PORT");
            }
            if let Some(p) = r.raw["server_pid"].as_u64() {
                c = c.replace(&format!("--server-pid {p}"), "--server-pid PID");
            }
            Some(c)
        };
        let label = scenarios
            .iter()
            .find(|s| s.id == r.scenario)
            .map_or(r.scenario.as_str(), |s| s.label.as_str());
        let _ = writeln!(md, "# {label}");
        if let Some(c) = generic("server_cmd").filter(|c| !templates.contains(&c.as_str())) {
            let _ = writeln!(md, "{c}");
        }
        if let Some(c) = generic("loadgen_cmd") {
            let _ = writeln!(md, "{c}");
        }
    }
    let _ = writeln!(md, "```");
}
