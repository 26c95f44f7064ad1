//! The inputs: the scenarios and implementations `meta.json` names, and the loadgen runs
//! of `runs.jsonl`, each with the status and metrics derived from its raw line.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::Res;
use crate::stats::cpu_share;

/// A scenario as `scripts/bench.sh` describes it.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    /// The key of its runs and cells (`tput-1k`).
    pub(crate) id: String,
    /// The heading of its table.
    pub(crate) label: String,
    /// `fanout` or `connect`.
    pub(crate) kind: String,
    /// Target messages per second; `None` for `--rate max`.
    pub(crate) rate: Option<f64>,
    /// A cell of the window matrix: (subscribers, loadgen `--window`).
    pub(crate) matrix: Option<(u64, u64)>,
}

/// One loadgen run, with what is derived from it.
#[derive(Debug)]
pub(crate) struct Run {
    /// Implementation name.
    pub(crate) imp: String,
    /// Scenario id.
    pub(crate) scenario: String,
    /// Repetition, from 1.
    pub(crate) rep: u64,
    /// `ok`, or why not.
    pub(crate) status: String,
    /// Numbers usable for medians (empty when loadgen produced no report).
    pub(crate) metrics: BTreeMap<String, f64>,
    /// loadgen stopped waiting for the last messages: what was still in flight counts
    /// as lost.
    pub(crate) undrained: bool,
    /// The line as `scripts/bench.sh` wrote it.
    pub(crate) raw: Value,
}

/// The scenarios of `meta.json`, in its order.
pub(crate) fn scenarios(meta: &Value) -> Res<Vec<Scenario>> {
    let list = meta["scenarios"]
        .as_array()
        .ok_or("meta.scenarios is missing")?;
    Ok(list
        .iter()
        .map(|s| Scenario {
            id: s["id"].as_str().unwrap_or("?").to_owned(),
            label: s["label"].as_str().unwrap_or("?").to_owned(),
            kind: s["kind"].as_str().unwrap_or("fanout").to_owned(),
            rate: s["rate"].as_f64(),
            matrix: s["matrix"]["subscribers"]
                .as_u64()
                .zip(s["matrix"]["window"].as_u64()),
        })
        .collect())
}

/// The implementation names of `meta.json`, in its order (the order of tables and bars).
pub(crate) fn impls(meta: &Value) -> Res<Vec<String>> {
    Ok(meta["impls"]
        .as_array()
        .ok_or("meta.impls is missing")?
        .iter()
        .filter_map(|i| i["name"].as_str().map(str::to_owned))
        .collect())
}

/// The runs of `runs.jsonl` (one JSON object per non-blank line), derived.
pub(crate) fn runs(text: &str) -> Res<Vec<Run>> {
    let mut runs = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let raw: Value =
            serde_json::from_str(line).map_err(|e| format!("runs line {}: {e}", n + 1))?;
        runs.push(derive(raw));
    }
    Ok(runs)
}

/// Hypervisor steal above this share of a CPU during a run marks it as measuring the VM as
/// much as the server: such runs are listed under *Problems*, and the window matrix leaves
/// their repetitions out of its calm ratios.
pub(crate) const STEAL_LIMIT: f64 = 0.05;

/// Status and metrics of one raw run.
fn derive(raw: Value) -> Run {
    let imp = raw["impl"].as_str().unwrap_or("?").to_owned();
    let scenario = raw["scenario"].as_str().unwrap_or("?").to_owned();
    let rep = raw["rep"].as_u64().unwrap_or(0);
    let exit = raw["exit_code"].as_i64().unwrap_or(-1);
    let lg = &raw["loadgen"];
    let mut m = BTreeMap::new();
    let status = if let Some(s) = raw["status"].as_str().filter(|s| *s != "ran") {
        // Set by the script: the server did not start, loadgen timed out, ...
        let detail = raw["error"].as_str().unwrap_or("");
        format!("{s}{}{detail}", if detail.is_empty() { "" } else { ": " })
    } else if !lg.is_object() {
        format!(
            "failed (exit {exit}, no report): {}",
            raw["error"].as_str().unwrap_or("")
        )
    } else if let Some(e) = lg["error"].as_str() {
        format!("failed (exit {exit}): {e}")
    } else {
        match exit {
            // `connect` has no --expect-all: idle connections must all open and stay open.
            0 if lg["scenario"] == "connect" => {
                let n = |k: &str| lg[k].as_u64().unwrap_or(0);
                let mut f = Vec::new();
                if n("connect_errors") > 0 {
                    f.push(format!("{} connections failed", n("connect_errors")));
                }
                if n("closed_by_server") > 0 {
                    f.push(format!("the server closed {}", n("closed_by_server")));
                }
                if n("open_after_hold") < n("connected") {
                    f.push(format!(
                        "{} of {} open after the hold",
                        n("open_after_hold"),
                        n("connected")
                    ));
                }
                if f.is_empty() {
                    "ok".to_owned()
                } else {
                    format!("expectation failed: {}", f.join("; "))
                }
            }
            0 => "ok".to_owned(),
            3 => {
                let f: Vec<&str> = lg["failures"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                format!("expectation failed: {}", f.join("; "))
            }
            _ => format!("failed (exit {exit})"),
        }
    };
    if lg.is_object() && lg.get("error").is_none() {
        let mut put = |k: &str, v: Option<f64>| {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                m.insert(k.to_owned(), v);
            }
        };
        for k in [
            "deliveries_per_sec",
            "published_per_sec",
            "lost",
            "out_of_order",
            "duplicates",
            "closed_by_server",
            "conn_per_sec",
            "connected",
            "connect_errors",
        ] {
            put(k, lg[k].as_f64());
        }
        put("bytes_per_conn", lg["server_bytes_per_conn"].as_f64());
        if lg["lat_samples"].as_u64().unwrap_or(0) > 0 {
            for (k, j) in [
                ("p50_us", "p50"),
                ("p90_us", "p90"),
                ("p99_us", "p99"),
                ("p999_us", "p999"),
                ("max_us", "max"),
            ] {
                put(k, lg["lat_us"][j].as_f64());
            }
        }
        put("server_hwm_kib", raw["server_hwm_kib"].as_f64());
        // The measured window: after connect (+20 ms start delay) and warm-up for the
        // run's duration; for connect runs, the set-up phase.
        let t0 = raw["t_start"].as_f64().unwrap_or(0.0);
        let connect_s = lg["connect_s"].as_f64().unwrap_or(0.0);
        let (from, to) = if lg["scenario"] == "connect" {
            (t0, t0 + connect_s)
        } else {
            let start = t0 + connect_s + 0.02 + lg["warmup_s"].as_f64().unwrap_or(0.0);
            (start, start + lg["duration_s"].as_f64().unwrap_or(0.0))
        };
        let tck = raw["clk_tck"].as_f64().unwrap_or(100.0);
        if let Some(samples) = raw["samples"].as_array() {
            let pts = |col: usize| -> Vec<(f64, f64)> {
                samples
                    .iter()
                    .filter_map(|s| {
                        let t = s.get(0)?.as_f64()?;
                        let v = s.get(col)?.as_f64()?;
                        (v >= 0.0).then_some((t, v / tck))
                    })
                    .collect()
            };
            // The server's process, plus CPU 0's softirq thread: the network work of the
            // server's own sends that the kernel deferred to it (nothing else sends on
            // CPU 0; io_uring runs leave it more than syscall runs do).
            let softirq = cpu_share(&pts(7), from, to);
            let srv = cpu_share(&pts(1), from, to).map(|s| s + softirq.unwrap_or(0.0));
            let lgc = cpu_share(&pts(2), from, to);
            put("server_cpu", srv);
            put("server_softirq", softirq);
            put("loadgen_cpu", lgc);
            // What else ran on the two CPUs: their busy time beyond the server's (CPU 0)
            // or loadgen's (CPU 1), plus time the hypervisor stole.
            let others = |own: Option<f64>, busy: usize, steal: usize| {
                let b = cpu_share(&pts(busy), from, to)?;
                let st = cpu_share(&pts(steal), from, to).unwrap_or(0.0);
                Some((b - own?).max(0.0) + st)
            };
            put("cpu0_others", others(srv, 3, 4));
            put("cpu1_others", others(lgc, 5, 6));
            // The hypervisor's share of the more robbed of the two CPUs: a run it took
            // much from measured the VM, not the servers.
            let steal = match [4, 6].map(|col| cpu_share(&pts(col), from, to)) {
                [Some(a), Some(b)] => Some(a.max(b)),
                [a, b] => a.or(b),
            };
            put("steal", steal);
        }
    }
    Run {
        imp,
        scenario,
        rep,
        status,
        metrics: m,
        undrained: lg["drained"] == false,
        raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fan-out run sampled at t = 0 and t = 10 s (100 ticks/s): the server's process
    /// used 800 ticks, CPU 0 was busy 990, and CPU 0's softirq thread used `k` (a
    /// sample without that column when `None`).
    fn run(k: Option<f64>) -> Run {
        let sample = |t: f64, srv: f64, busy: f64, k: Option<f64>| {
            // CPU 1 had 30 ticks stolen over the run, CPU 0 none.
            let mut s = vec![t, srv, 0.0, busy, 0.0, 0.0, 3.0 * t];
            s.extend(k);
            s
        };
        let raw = serde_json::json!({
            "impl": "ringcast-uring", "scenario": "s", "rep": 1, "exit_code": 0,
            "t_start": 0.0, "clk_tck": 100.0,
            "samples": [sample(0.0, 0.0, 0.0, k.map(|_| 0.0)), sample(10.0, 800.0, 990.0, k)],
            "loadgen": {"scenario": "fanout", "connect_s": 0.0, "warmup_s": 0.0,
                        "duration_s": 10.0, "deliveries_per_sec": 1.0},
        });
        derive(raw)
    }

    #[test]
    fn the_softirq_thread_of_cpu_0_counts_as_the_servers() {
        let with = run(Some(150.0));
        let m = |r: &Run, k: &str| r.metrics.get(k).copied().unwrap();
        // 80 % in the process and 15 % in ksoftirqd/0: 95 % the server's, 4 % others.
        assert!((m(&with, "server_cpu") - 0.95).abs() < 0.01);
        assert!((m(&with, "server_softirq") - 0.15).abs() < 0.01);
        assert!((m(&with, "cpu0_others") - 0.04).abs() < 0.01);
        // Runs sampled before the column existed: the process alone.
        let without = run(None);
        assert!((m(&without, "server_cpu") - 0.8).abs() < 0.01);
        assert!(!without.metrics.contains_key("server_softirq"));
        assert!((m(&without, "cpu0_others") - 0.19).abs() < 0.01);
    }

    #[test]
    fn steal_is_the_share_of_the_more_robbed_cpu() {
        let mut r = run(Some(150.0));
        assert!((r.metrics["steal"] - 0.03).abs() < 0.001);
        // CPU 1's steal counts as what others took of loadgen's CPU too.
        assert!((r.metrics["cpu1_others"] - 0.03).abs() < 0.001);
        // CPU 0 robbed of 80 ticks in 10 s: the larger of the two.
        r.raw["samples"][1][4] = serde_json::json!(80.0);
        let again = derive(r.raw);
        assert!((again.metrics["steal"] - 0.08).abs() < 0.001);
    }
}
